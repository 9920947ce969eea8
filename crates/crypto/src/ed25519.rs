//! Ed25519 wallet keys (RFC 8032), on aws-lc-rs: a 32-byte seed is the
//! private key, as docs/protocol.md's key-material table has it.

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::rng::RandomSource;
use crate::{CryptoError, SecretKey};

/// An Ed25519 private key (its seed) and the expanded pair aws-lc signs with.
pub struct PrivateKey {
    seed: SecretKey,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ed25519::PrivateKey([REDACTED])")
    }
}

impl PrivateKey {
    /// The key of an RFC 8032 seed (every 32-byte string is one).
    pub fn from_seed(seed: SecretKey) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.expose())
            .map_err(|_| CryptoError::Backend("ed25519 seed"))?;
        Ok(Self { seed, pair })
    }

    pub fn generate_with_rng(rng: &mut impl RandomSource) -> Result<Self, CryptoError> {
        let mut seed = SecretKey::from_array([0; 32]);
        rng.fill(seed.expose_mut())?;
        Self::from_seed(seed)
    }

    pub fn seed(&self) -> &SecretKey {
        &self.seed
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// RFC 8032 Ed25519 (pure, no pre-hash, no context) over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

/// Verifies an Ed25519 signature under a 32-byte public key.
pub fn verify(public: &[u8], message: &[u8], sig: &[u8; 64]) -> Result<(), CryptoError> {
    if public.len() != 32 {
        return Err(CryptoError::InvalidPublicKey);
    }
    UnparsedPublicKey::new(&signature::ED25519, public)
        .verify(message, sig)
        .map_err(|_| CryptoError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1, test 1 (empty message).
    #[test]
    fn rfc8032_test_1() {
        let seed = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ];
        let k = PrivateKey::from_seed(SecretKey::from_array(seed)).unwrap();
        assert_eq!(
            crate::hex(&k.public_key()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig = k.sign(b"");
        assert_eq!(
            crate::hex(&sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        verify(&k.public_key(), b"", &sig).unwrap();
        assert!(verify(&k.public_key(), b"x", &sig).is_err());
    }
}
