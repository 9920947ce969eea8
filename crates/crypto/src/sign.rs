//! ECDSA P-256 with SHA-256, IEEE P1363 signatures (`r ‖ s`, 64 bytes).
//!
//! Signing is aws-lc's ECDSA, whose nonces are hedged: drawn from its DRBG
//! with the private key and digest mixed in, so a weak RNG alone does not
//! leak the key (docs/protocol.md, "Encodings").

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair};
use kms_protocol::{P256PublicKey, Signature};

pub use crate::p256::check_point;
use crate::p256::{p256_public_key, random_p256_scalar, scalar_in_range, P256_N};
use crate::rng::{RandomSource, SystemRng};
use crate::{CryptoError, SecretKey};

/// A P-256 signing key (the identity key, or an owner's key in the SDK).
pub struct SigningKey {
    scalar: SecretKey,
    pair: EcdsaKeyPair,
    public: P256PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn generate() -> Result<Self, CryptoError> {
        Self::generate_with_rng(&mut SystemRng)
    }

    pub fn generate_with_rng(rng: &mut impl RandomSource) -> Result<Self, CryptoError> {
        Self::from_scalar(random_p256_scalar(rng)?)
    }

    /// The key of a scalar in [1, n−1].
    pub fn from_scalar(scalar: SecretKey) -> Result<Self, CryptoError> {
        if !scalar_in_range(scalar.expose(), &P256_N) {
            return Err(CryptoError::Unsupported("P-256 scalar out of range"));
        }
        let public = p256_public_key(&scalar)?;
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            scalar.expose(),
            public.as_bytes(),
        )
        .map_err(|_| CryptoError::Backend("p256 signing key"))?;
        Ok(Self {
            scalar,
            pair,
            public,
        })
    }

    pub fn scalar(&self) -> &SecretKey {
        &self.scalar
    }

    pub fn public_key(&self) -> &P256PublicKey {
        &self.public
    }

    /// Signs `message` (hashed with SHA-256 inside).
    pub fn sign(&self, message: &[u8]) -> Result<Signature, CryptoError> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), message)
            .map_err(|_| CryptoError::Backend("ecdsa sign"))?;
        Signature::from_bytes(sig.as_ref())
            .map_err(|_| CryptoError::Backend("ecdsa signature shape"))
    }
}

/// Verifies a P1363 signature; r or s out of [1, n−1] fails. High and low S
/// both verify (docs/protocol.md, "Encodings").
pub fn verify(public: &P256PublicKey, message: &[u8], sig: &Signature) -> Result<(), CryptoError> {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public.as_bytes())
        .verify(message, sig.as_bytes())
        .map_err(|_| CryptoError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let k = SigningKey::generate().unwrap();
        let sig = k.sign(b"message").unwrap();
        verify(k.public_key(), b"message", &sig).unwrap();
        assert!(verify(k.public_key(), b"messagf", &sig).is_err());
        let mut bad = *sig.as_bytes();
        bad[10] ^= 1;
        assert!(verify(k.public_key(), b"message", &Signature::from_array(bad)).is_err());
        let other = SigningKey::generate().unwrap();
        assert!(verify(other.public_key(), b"message", &sig).is_err());
    }

    #[test]
    fn points_off_the_curve_are_refused() {
        let k = SigningKey::generate().unwrap();
        check_point(k.public_key()).unwrap();
        let mut bytes = *k.public_key().as_bytes();
        bytes[64] ^= 1;
        let off = P256PublicKey::from_bytes(&bytes).unwrap();
        assert_eq!(check_point(&off), Err(CryptoError::InvalidPublicKey));
        assert!(crate::hpke::seal(&off, b"i", b"p").is_err());
    }
    #[test]
    fn out_of_range_scalars_are_refused() {
        assert!(SigningKey::from_scalar(SecretKey::from_array(P256_N)).is_err());
        assert!(SigningKey::from_scalar(SecretKey::from_array([0; 32])).is_err());
    }
}
