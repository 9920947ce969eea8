//! Known-answer tests for `kms_crypto::hpke` against the CFRG HPKE test
//! vectors (RFC 9180) of the one suite kms-crypto uses: mode 0 (base),
//! DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM. Provenance of the data
//! file: `tests/data/README.md`.
//!
//! Every encryption in the vectors carries a non-empty AAD (`"Count-<i>"`),
//! and kms-crypto seals and opens with empty AAD only, so:
//! - the vector ciphertexts are opened through rustls's HPKE directly (the
//!   backend behind `kms_crypto::hpke`), all 257 of them in sequence with a
//!   stateful opener, and encryption 0 with the single-shot `open` that
//!   kms-crypto calls;
//! - kms-crypto's own `HpkeSecretKey::open` is checked through the vector's
//!   published key schedule: the vector's `key` and `base_nonce` seal the
//!   vector's first plaintext with empty AAD (sequence number 0), and
//!   `enc ‖ that` must open under `skRm` and `info`. That passes only if the
//!   KEM and key schedule inside kms-crypto derive exactly the published
//!   `key` and `base_nonce` from `skRm`, `enc` and `info`.

#![allow(clippy::unwrap_used)]

use kms_crypto::hpke::{self, HpkeSecretKey};
use kms_crypto::rng::RandomSource;
use kms_crypto::{aead, sign, CryptoError, SecretKey};
use kms_protocol::{HpkeCiphertext, P256PublicKey};
use rustls::crypto::aws_lc_rs::hpke::DH_KEM_P256_HKDF_SHA256_AES_256 as SUITE;
use rustls::crypto::hpke::{EncapsulatedSecret, Hpke, HpkePrivateKey, HpkePublicKey};
use serde::Deserialize;

const VECTORS: &str = include_str!("data/hpke-p256-sha256-aes256gcm-base.json");

/// The data file holds one vector of this suite with 257 encryptions; fewer
/// means the file or the parsing went wrong, and the tests would pass on less
/// than they claim.
const MIN_VECTORS: usize = 1;
const MIN_ENCRYPTIONS: usize = 257;

#[derive(Debug, Deserialize)]
struct Vector {
    mode: u8,
    kem_id: u16,
    kdf_id: u16,
    aead_id: u16,
    #[serde(deserialize_with = "hex")]
    info: Vec<u8>,
    #[serde(rename = "skRm", deserialize_with = "hex")]
    sk_rm: Vec<u8>,
    #[serde(rename = "pkRm", deserialize_with = "hex")]
    pk_rm: Vec<u8>,
    #[serde(rename = "skEm", deserialize_with = "hex")]
    sk_em: Vec<u8>,
    #[serde(rename = "pkEm", deserialize_with = "hex")]
    pk_em: Vec<u8>,
    #[serde(deserialize_with = "hex")]
    enc: Vec<u8>,
    #[serde(deserialize_with = "hex")]
    key: Vec<u8>,
    #[serde(deserialize_with = "hex")]
    base_nonce: Vec<u8>,
    encryptions: Vec<Encryption>,
}

#[derive(Debug, Deserialize)]
struct Encryption {
    #[serde(deserialize_with = "hex")]
    aad: Vec<u8>,
    #[serde(deserialize_with = "hex")]
    ct: Vec<u8>,
    #[serde(deserialize_with = "hex")]
    nonce: Vec<u8>,
    #[serde(deserialize_with = "hex")]
    pt: Vec<u8>,
}

fn hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    if s.len() % 2 != 0 {
        return Err(serde::de::Error::custom("odd-length hex"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(serde::de::Error::custom))
        .collect()
}

/// The vectors of the file, each checked to be of our suite, at least
/// [`MIN_VECTORS`] of them.
fn vectors() -> Vec<Vector> {
    let vs: Vec<Vector> = serde_json::from_str(VECTORS).unwrap();
    assert!(vs.len() >= MIN_VECTORS, "only {} vectors", vs.len());
    for v in &vs {
        assert_eq!(
            (v.mode, v.kem_id, v.kdf_id, v.aead_id),
            (0, 16, 1, 2),
            "a vector of another suite in the data file"
        );
        assert_eq!(v.enc.len(), HpkeCiphertext::ENC_LEN);
        assert_eq!(v.key.len(), 32);
        assert_eq!(v.base_nonce.len(), aead::NONCE_BYTES);
        assert!(!v.encryptions.is_empty());
    }
    vs
}

fn secret_key(bytes: &[u8]) -> HpkeSecretKey {
    HpkeSecretKey::from_scalar(SecretKey::from_slice(bytes).unwrap()).unwrap()
}

fn ciphertext(enc: &[u8], ct: &[u8]) -> HpkeCiphertext {
    let mut bytes = enc.to_vec();
    bytes.extend_from_slice(ct);
    HpkeCiphertext::from_bytes(bytes).unwrap()
}

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

/// AES-256-GCM through `kms_crypto::aead` with a chosen nonce: `nonce ‖ ct ‖ tag`.
fn aes_gcm(key: &[u8], nonce: &[u8], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    aead::encrypt_with_rng(
        &SecretKey::from_slice(key).unwrap(),
        aad,
        pt,
        &mut out,
        &mut FixedNonce(Some(nonce.to_vec())),
    )
    .unwrap();
    out
}

#[test]
fn backend_suite_is_the_vectors_suite() {
    let suite = SUITE.suite();
    assert_eq!(u16::from(suite.kem), 16);
    assert_eq!(u16::from(suite.sym.kdf_id), 1);
    assert_eq!(u16::from(suite.sym.aead_id), 2);
}

#[test]
fn public_keys_match_the_vectors() {
    let mut checked = 0;
    for v in vectors() {
        let sk_r = secret_key(&v.sk_rm);
        assert_eq!(sk_r.public_key().as_bytes().as_slice(), v.pk_rm.as_slice());
        let pk_r = P256PublicKey::from_bytes(&v.pk_rm).unwrap();
        sign::check_point(&pk_r).unwrap();

        // The sender's ephemeral key: enc = SerializePublicKey(pkE).
        let sk_e = secret_key(&v.sk_em);
        assert_eq!(sk_e.public_key().as_bytes().as_slice(), v.pk_em.as_slice());
        assert_eq!(v.enc, v.pk_em);
        checked += 1;
    }
    assert!(checked >= MIN_VECTORS);
}

/// All encryptions of each vector, in order, through one rustls opener
/// context (sequence numbers 0, 1, 2, …), and the first through the
/// single-shot `open` that kms-crypto uses.
#[test]
fn backend_opens_every_vector_ciphertext() {
    let mut vectors_checked = 0;
    let mut encryptions_checked = 0;
    for v in vectors() {
        let enc = EncapsulatedSecret(v.enc.clone());
        let sk = HpkePrivateKey::from(v.sk_rm.clone());

        let mut opener = SUITE.setup_opener(&enc, &v.info, &sk).unwrap();
        for (i, e) in v.encryptions.iter().enumerate() {
            let pt = opener.open(&e.aad, &e.ct).unwrap_or_else(|err| {
                panic!("encryption {i}: {err:?}");
            });
            assert_eq!(pt, e.pt, "encryption {i}");
            encryptions_checked += 1;
        }

        let first = &v.encryptions[0];
        let pt = SUITE
            .open(&enc, &v.info, &first.aad, &first.ct, &sk)
            .unwrap();
        assert_eq!(pt, first.pt);

        // Tampered twins of the first: a flipped byte of ct, a wrong AAD, a
        // wrong info, a flipped byte of enc.
        for i in 0..first.ct.len() {
            let mut bad = first.ct.clone();
            bad[i] ^= 0x01;
            assert!(
                SUITE.open(&enc, &v.info, &first.aad, &bad, &sk).is_err(),
                "ct byte {i}"
            );
        }
        assert!(SUITE
            .open(&enc, &v.info, b"Count-1", &first.ct, &sk)
            .is_err());
        assert!(SUITE
            .open(&enc, b"other info", &first.aad, &first.ct, &sk)
            .is_err());
        let mut bad_enc = v.enc.clone();
        bad_enc[40] ^= 0x01;
        let bad_enc = EncapsulatedSecret(bad_enc);
        assert!(SUITE
            .open(&bad_enc, &v.info, &first.aad, &first.ct, &sk)
            .is_err());

        // The second ciphertext is sealed at sequence number 1, so the
        // single-shot open (sequence number 0) must refuse it.
        if let Some(second) = v.encryptions.get(1) {
            assert!(SUITE
                .open(&enc, &v.info, &second.aad, &second.ct, &sk)
                .is_err());
        }
        vectors_checked += 1;
    }
    assert!(vectors_checked >= MIN_VECTORS);
    assert!(
        encryptions_checked >= MIN_ENCRYPTIONS,
        "only {encryptions_checked} encryptions checked"
    );
}

/// The AEAD layer, `kms_crypto::aead` with the vector's `key`, reproduces
/// every vector ciphertext from its nonce `base_nonce XOR seq`.
#[test]
fn aead_reproduces_the_vector_ciphertexts() {
    let mut checked = 0;
    for v in vectors() {
        for (seq, e) in v.encryptions.iter().enumerate() {
            // ComputeNonce(seq) = base_nonce XOR I2OSP(seq, Nn) (RFC 9180 §5.2).
            let mut nonce = v.base_nonce.clone();
            let seq_bytes = u64::try_from(seq).unwrap().to_be_bytes();
            for (n, s) in nonce[aead::NONCE_BYTES - 8..].iter_mut().zip(seq_bytes) {
                *n ^= s;
            }
            assert_eq!(nonce, e.nonce, "nonce of encryption {seq}");

            let sealed = aes_gcm(&v.key, &e.nonce, &e.aad, &e.pt);
            assert_eq!(&sealed[..aead::NONCE_BYTES], e.nonce.as_slice());
            assert_eq!(
                &sealed[aead::NONCE_BYTES..],
                e.ct.as_slice(),
                "encryption {seq}"
            );

            let key = SecretKey::from_slice(&v.key).unwrap();
            let opened = aead::decrypt(&key, &e.aad, &sealed).unwrap();
            assert_eq!(opened.expose(), e.pt.as_slice());
            checked += 1;
        }
    }
    assert!(
        checked >= MIN_ENCRYPTIONS,
        "only {checked} encryptions checked"
    );
}

/// kms-crypto's own `open` (empty AAD) on a ciphertext made from the
/// vector's published key schedule at sequence number 0.
#[test]
fn kms_open_follows_the_vector_key_schedule() {
    let mut checked = 0;
    for v in vectors() {
        let sk = secret_key(&v.sk_rm);
        let first = &v.encryptions[0];

        let sealed = aes_gcm(&v.key, &v.base_nonce, &[], &first.pt);
        let ct = ciphertext(&v.enc, &sealed[aead::NONCE_BYTES..]);
        let opened = sk.open(&v.info, &ct).unwrap();
        assert_eq!(opened.expose(), first.pt.as_slice());

        // The backend agrees on the same bytes.
        let backend = SUITE
            .open(
                &EncapsulatedSecret(v.enc.clone()),
                &v.info,
                &[],
                ct.ct(),
                &HpkePrivateKey::from(v.sk_rm.clone()),
            )
            .unwrap();
        assert_eq!(backend, first.pt);

        // Tampered twins: every byte of enc ‖ ct flipped in turn, a wrong
        // info, another recipient.
        for i in 0..ct.as_bytes().len() {
            let mut bad = ct.as_bytes().to_vec();
            bad[i] ^= 0x01;
            let bad = HpkeCiphertext::from_bytes(bad).unwrap();
            assert!(sk.open(&v.info, &bad).is_err(), "byte {i}");
        }
        assert!(sk.open(b"other info", &ct).is_err());
        assert!(secret_key(&v.sk_em).open(&v.info, &ct).is_err());

        // The published ciphertext itself is bound to AAD "Count-0", so the
        // empty-AAD open must refuse it.
        assert!(!first.aad.is_empty());
        assert!(sk.open(&v.info, &ciphertext(&v.enc, &first.ct)).is_err());
        checked += 1;
    }
    assert!(checked >= MIN_VECTORS);
}

/// `hpke::seal` to the vector's `pkRm` with its `info` opens under `skRm`,
/// through kms-crypto and through the backend.
#[test]
fn seal_to_vector_key_round_trips() {
    let mut checked = 0;
    for v in vectors() {
        let sk = secret_key(&v.sk_rm);
        let pk = P256PublicKey::from_bytes(&v.pk_rm).unwrap();
        for e in v.encryptions.iter().take(4) {
            let ct = hpke::seal(&pk, &v.info, &e.pt).unwrap();
            assert_eq!(
                ct.as_bytes().len(),
                HpkeCiphertext::ENC_LEN + e.pt.len() + aead::TAG_BYTES
            );
            assert_eq!(sk.open(&v.info, &ct).unwrap().expose(), e.pt.as_slice());
            let backend = SUITE
                .open(
                    &EncapsulatedSecret(ct.enc().to_vec()),
                    &v.info,
                    &[],
                    ct.ct(),
                    &HpkePrivateKey::from(v.sk_rm.clone()),
                )
                .unwrap();
            assert_eq!(backend, e.pt);

            // A fresh ephemeral key each time.
            let again = hpke::seal(&pk, &v.info, &e.pt).unwrap();
            assert_ne!(ct.enc(), again.enc());

            assert!(sk.open(b"other info", &ct).is_err());
            let mut bad = ct.as_bytes().to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 0x01;
            let bad = HpkeCiphertext::from_bytes(bad).unwrap();
            assert!(sk.open(&v.info, &bad).is_err());
            checked += 1;
        }

        // The backend's seal to the same key, opened by kms-crypto.
        let pk_r = HpkePublicKey(v.pk_rm.clone());
        let (enc, sealed) = SUITE.seal(&v.info, &[], b"interop", &pk_r).unwrap();
        let ct = ciphertext(&enc.0, &sealed);
        assert_eq!(sk.open(&v.info, &ct).unwrap().expose(), b"interop");
    }
    assert!(checked >= 4 * MIN_VECTORS);
}
