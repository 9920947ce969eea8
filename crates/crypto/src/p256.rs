//! NIST P-256 (secp256r1): scalars, points, and ECDSA over a digest for
//! wallet keys (docs/protocol.md §9 `ecdsa-p256`). The service's own P1363
//! signatures over messages (the identity key) are in [`crate::sign`];
//! HPKE's P-256 keys in [`crate::hpke`]. All of them share the helpers
//! here, on aws-lc-rs.

use aws_lc_rs::agreement;
use aws_lc_rs::digest::{Digest, SHA256};
use aws_lc_rs::signature::{self, EcdsaKeyPair};
use kms_protocol::P256PublicKey;

use crate::rng::RandomSource;
use crate::{CryptoError, SecretKey};

/// Order n of the P-256 group (SEC 2 §2.4.2), big-endian.
pub const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// Whether a 32-byte big-endian scalar lies in [1, n−1].
pub fn scalar_in_range(scalar: &[u8; 32], n: &[u8; 32]) -> bool {
    scalar.iter().any(|&b| b != 0) && scalar < n
}

/// A P-256 scalar in [1, n−1], rejection-sampled from `rng`.
pub(crate) fn random_p256_scalar(rng: &mut impl RandomSource) -> Result<SecretKey, CryptoError> {
    for _ in 0..64 {
        let mut k = SecretKey::from_array([0; 32]);
        rng.fill(k.expose_mut())?;
        if scalar_in_range(k.expose(), &P256_N) {
            return Ok(k);
        }
    }
    Err(CryptoError::Backend(
        "random source produced no valid scalar",
    ))
}

/// The uncompressed public key of a P-256 scalar in [1, n−1].
pub(crate) fn p256_public_key(scalar: &SecretKey) -> Result<P256PublicKey, CryptoError> {
    let sk = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, scalar.expose())
        .map_err(|_| CryptoError::InvalidPublicKey)?;
    let pk = sk
        .compute_public_key()
        .map_err(|_| CryptoError::Backend("p256 public key"))?;
    P256PublicKey::from_bytes(pk.as_ref()).map_err(|_| CryptoError::Backend("p256 public key"))
}

/// Checks that a key of the right shape is a point on P-256 (the check
/// docs/protocol.md leaves to the secure environment).
pub fn check_point(public: &P256PublicKey) -> Result<(), CryptoError> {
    let unparsed = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, public.as_bytes());
    agreement::ParsedPublicKey::try_from(&unparsed)
        .map(|_| ())
        .map_err(|_| CryptoError::InvalidPublicKey)
}

/// SEC1 compressed form of an uncompressed point: `0x02|0x03 (Y parity) ‖ X`.
pub fn compress(uncompressed: &P256PublicKey) -> [u8; 33] {
    let u = uncompressed.as_bytes();
    let mut out = [0u8; 33];
    out[0] = 0x02 | (u[64] & 1);
    out[1..].copy_from_slice(&u[1..33]);
    out
}

/// A P-256 wallet key: a scalar in [1, n−1] and its public point.
pub struct PrivateKey {
    scalar: SecretKey,
    public: P256PublicKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("p256::PrivateKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// The key of a 32-byte big-endian scalar; `None` outside [1, n−1].
    pub fn from_scalar(scalar: SecretKey) -> Option<Self> {
        if !scalar_in_range(scalar.expose(), &P256_N) {
            return None;
        }
        let public = p256_public_key(&scalar).ok()?;
        Some(Self { scalar, public })
    }

    /// A fresh key from `rng`.
    pub fn generate_with_rng(rng: &mut impl RandomSource) -> Result<Self, CryptoError> {
        let scalar = random_p256_scalar(rng)?;
        Self::from_scalar(scalar).ok_or(CryptoError::Backend("p256 key generation"))
    }

    pub fn scalar(&self) -> &SecretKey {
        &self.scalar
    }

    /// SEC1 uncompressed, 65 bytes.
    pub fn public_key(&self) -> &P256PublicKey {
        &self.public
    }

    /// SEC1 compressed, 33 bytes (what the service reports).
    pub fn public_key_compressed(&self) -> [u8; 33] {
        compress(&self.public)
    }

    /// The key as PKCS#8 v1 DER (for a TLS stack), wiped when dropped.
    pub fn to_pkcs8_der(&self) -> Result<crate::SecretBytes, CryptoError> {
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            self.scalar.expose(),
            self.public.as_bytes(),
        )
        .map_err(|_| CryptoError::Backend("p256 signing key"))?;
        let doc = pair
            .to_pkcs8v1()
            .map_err(|_| CryptoError::Backend("p256 pkcs8"))?;
        Ok(crate::SecretBytes::new(doc.as_ref().to_vec()))
    }

    /// ECDSA over a 32-byte SHA-256 digest the caller computed, `r ‖ s`
    /// (IEEE P1363). aws-lc's nonce is hedged: drawn from its DRBG with
    /// the key and digest mixed in (docs/protocol.md, "Encodings").
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<[u8; 64], CryptoError> {
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            self.scalar.expose(),
            self.public.as_bytes(),
        )
        .map_err(|_| CryptoError::Backend("p256 signing key"))?;
        let digest = Digest::import_less_safe(digest, &SHA256)
            .map_err(|_| CryptoError::Backend("p256 digest"))?;
        let sig = pair
            .sign_digest(&digest)
            .map_err(|_| CryptoError::Backend("p256 sign"))?;
        sig.as_ref()
            .try_into()
            .map_err(|_| CryptoError::Backend("p256 signature shape"))
    }
}

/// Verifies a P1363 signature over a 32-byte digest with a SEC1 public key,
/// compressed (33 bytes) or uncompressed (65); high and low S both verify.
pub fn verify_digest(public: &[u8], digest: &[u8; 32], sig: &[u8; 64]) -> Result<(), CryptoError> {
    if !matches!(
        (public.len(), public.first()),
        (33, Some(2 | 3)) | (65, Some(4))
    ) {
        return Err(CryptoError::InvalidPublicKey);
    }
    let digest = Digest::import_less_safe(digest, &SHA256)
        .map_err(|_| CryptoError::Backend("p256 digest"))?;
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public)
        .verify_digest(&digest, sig)
        .map_err(|_| CryptoError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_range() {
        assert!(!scalar_in_range(&[0; 32], &P256_N));
        assert!(!scalar_in_range(&P256_N, &P256_N));
        let mut below = P256_N;
        below[31] -= 1;
        assert!(scalar_in_range(&below, &P256_N));
        assert!(PrivateKey::from_scalar(SecretKey::from_array(P256_N)).is_none());
        assert!(PrivateKey::from_scalar(SecretKey::from_array(below)).is_some());
    }

    #[test]
    fn digest_signatures_verify_and_tamper() {
        let k = PrivateKey::generate_with_rng(&mut crate::rng::SystemRng).unwrap();
        let digest = crate::sha256(b"a message");
        let sig = k.sign_digest(&digest).unwrap();
        // The same as ECDSA-SHA256 over the message itself.
        crate::sign::verify(
            k.public_key(),
            b"a message",
            &kms_protocol::Signature::from_array(sig),
        )
        .unwrap();
        verify_digest(&k.public_key_compressed(), &digest, &sig).unwrap();
        verify_digest(k.public_key().as_bytes(), &digest, &sig).unwrap();
        let mut other = digest;
        other[0] ^= 1;
        assert!(verify_digest(&k.public_key_compressed(), &other, &sig).is_err());
        let mut bad = sig;
        bad[40] ^= 1;
        assert!(verify_digest(&k.public_key_compressed(), &digest, &bad).is_err());
        // A compressed key of the other parity is another point.
        let mut flipped = k.public_key_compressed();
        flipped[0] ^= 1;
        assert!(verify_digest(&flipped, &digest, &sig).is_err());
    }
}
