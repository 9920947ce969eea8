//! HPKE (RFC 9180), base mode, DHKEM(P-256, HKDF-SHA256) / HKDF-SHA256 /
//! AES-256-GCM, single-shot, from rustls's aws-lc-rs provider. A ciphertext
//! is `enc ‖ ct` (docs/protocol.md, "Encodings").

use kms_protocol::{HpkeCiphertext, P256PublicKey};
use rustls::crypto::aws_lc_rs::hpke::DH_KEM_P256_HKDF_SHA256_AES_256 as SUITE;
use rustls::crypto::hpke::{EncapsulatedSecret, Hpke, HpkePrivateKey, HpkePublicKey};

use crate::p256::{p256_public_key, random_p256_scalar};
use crate::rng::{RandomSource, SystemRng};
use crate::{CryptoError, OpenError, SecretBytes, SecretKey};

/// A P-256 HPKE private key (the recipient's `skR`), a scalar in [1, n−1].
#[derive(Debug)]
pub struct HpkeSecretKey {
    scalar: SecretKey,
    public: P256PublicKey,
}

impl HpkeSecretKey {
    /// A fresh key pair from the system CSPRNG.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::generate_with_rng(&mut SystemRng)
    }

    /// A fresh key pair, rejection-sampling the scalar from `rng`.
    pub fn generate_with_rng(rng: &mut impl RandomSource) -> Result<Self, CryptoError> {
        let scalar = random_p256_scalar(rng)?;
        Self::from_scalar(scalar)
    }

    /// The key pair of a scalar in [1, n−1].
    pub fn from_scalar(scalar: SecretKey) -> Result<Self, CryptoError> {
        let public = p256_public_key(&scalar)?;
        Ok(Self { scalar, public })
    }

    pub fn public_key(&self) -> &P256PublicKey {
        &self.public
    }

    pub fn scalar(&self) -> &SecretKey {
        &self.scalar
    }

    /// Opens `enc ‖ ct` sealed to this key with `info` and empty AAD.
    pub fn open(&self, info: &[u8], ciphertext: &HpkeCiphertext) -> Result<SecretBytes, OpenError> {
        let sk = HpkePrivateKey::from(self.scalar.expose().to_vec());
        let enc = EncapsulatedSecret(ciphertext.enc().to_vec());
        SUITE
            .open(&enc, info, &[], ciphertext.ct(), &sk)
            .map(SecretBytes::new)
            .map_err(|_| OpenError)
    }
}

/// Seals `plaintext` to `recipient` with `info` and empty AAD; returns `enc ‖ ct`.
///
/// The recipient key must be on the curve ([`crate::p256::check_point`]); a key
/// that is not fails here too.
pub fn seal(
    recipient: &P256PublicKey,
    info: &[u8],
    plaintext: &[u8],
) -> Result<HpkeCiphertext, CryptoError> {
    let pk = HpkePublicKey(recipient.as_bytes().to_vec());
    let (enc, ct) = SUITE
        .seal(info, &[], plaintext, &pk)
        .map_err(|_| CryptoError::InvalidPublicKey)?;
    let mut out = enc.0;
    out.extend_from_slice(&ct);
    HpkeCiphertext::from_bytes(out).map_err(|_| CryptoError::Backend("hpke output shape"))
}

/// `label ‖ 0x00 ‖ id[16]`: the `info` of imports and exports (docs/protocol.md §3, §4).
pub fn info(label: &[u8], id: &kms_protocol::Id) -> Vec<u8> {
    let mut v = Vec::with_capacity(label.len() + 17);
    v.extend_from_slice(label);
    v.push(0);
    v.extend_from_slice(id.as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let sk = HpkeSecretKey::generate().unwrap();
        let ct = seal(sk.public_key(), b"info", b"hello").unwrap();
        assert_eq!(ct.as_bytes().len(), 65 + 5 + 16);
        assert_eq!(sk.open(b"info", &ct).unwrap().expose(), b"hello");
        assert!(sk.open(b"infx", &ct).is_err());
        for i in 0..ct.as_bytes().len() {
            let mut bad = ct.as_bytes().to_vec();
            bad[i] ^= 0x80;
            let bad = HpkeCiphertext::from_bytes(bad).unwrap();
            assert!(sk.open(b"info", &bad).is_err(), "byte {i}");
        }
        let other = HpkeSecretKey::generate().unwrap();
        assert!(other.open(b"info", &ct).is_err());
    }

    #[test]
    fn deterministic_with_rng() {
        struct Counter(u8);
        impl RandomSource for Counter {
            fn fill(&mut self, d: &mut [u8]) -> Result<(), CryptoError> {
                d.fill(self.0);
                self.0 += 1;
                Ok(())
            }
        }
        let a = HpkeSecretKey::generate_with_rng(&mut Counter(1)).unwrap();
        let b = HpkeSecretKey::generate_with_rng(&mut Counter(1)).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        // 0x00…00 is rejected and the next draw used.
        let c = HpkeSecretKey::generate_with_rng(&mut Counter(0)).unwrap();
        assert_eq!(c.public_key(), a.public_key());
    }
}
