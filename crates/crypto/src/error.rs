//! Errors of the crypto crate.

/// Any failure to open a ciphertext: a wrong key, a flipped bit, a wrong
/// label or AAD, a truncated blob, an `enc` off the curve. One opaque value,
/// so no caller can learn which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed")]
pub struct OpenError;

/// Errors other than a failure to open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A public key that is not a valid P-256 point.
    #[error("public key is not a valid P-256 point")]
    InvalidPublicKey,
    /// A signature that does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// A key or blob in a format or version this build does not know.
    #[error("unsupported format: {0}")]
    Unsupported(&'static str),
    /// The backend failed on valid input (out of randomness, say).
    #[error("crypto backend failure: {0}")]
    Backend(&'static str),
}
