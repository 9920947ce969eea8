//! Errors of the secure environment, mapped to PROTOCOL.md's codes at the HTTP edge.

use kms_crypto::envelope::EnvelopeError;
use kms_crypto::CryptoError;
use kms_protocol::ErrorCode;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// A public key of the right shape that is not on P-256 (400).
    #[error("public key is not a point on P-256")]
    InvalidPublicKey,
    /// An owner-bound wallet exported without `authorization` (401).
    #[error("this wallet needs its owner's authorization")]
    AuthorizationRequired,
    /// An authorization that does not verify, is expired or too far ahead (403).
    #[error("authorization does not verify, is expired, or expires too far ahead")]
    AuthorizationFailed,
    /// The session already completed (409).
    #[error("import session already completed")]
    SessionUsed,
    /// The session is past its `expires_at` (410).
    #[error("import session expired")]
    SessionExpired,
    /// An HPKE ciphertext that does not open (422).
    #[error("ciphertext does not open")]
    DecryptionFailed,
    /// A plaintext that opened but is not valid key material (422).
    #[error("invalid key material: {0}")]
    InvalidKeyMaterial(&'static str),
    /// A stored blob (sealed session state, wallet envelope) that does not
    /// open: the store returned something this key set did not write (500).
    #[error("stored record does not open: {0}")]
    StoredRecord(#[from] EnvelopeError),
    /// The crypto backend failed on valid input (500).
    #[error("crypto failure: {0}")]
    Crypto(#[from] CryptoError),
    /// The audit record could not be written, so the result is withheld (503).
    #[error("audit log unavailable: {0}")]
    AuditUnavailable(#[from] crate::audit::AuditLogError),
}

impl EnvError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidPublicKey => ErrorCode::InvalidRequest,
            Self::AuthorizationRequired => ErrorCode::AuthorizationRequired,
            Self::AuthorizationFailed => ErrorCode::AuthorizationFailed,
            Self::SessionUsed => ErrorCode::SessionUsed,
            Self::SessionExpired => ErrorCode::SessionExpired,
            Self::DecryptionFailed => ErrorCode::DecryptionFailed,
            Self::InvalidKeyMaterial(_) => ErrorCode::InvalidKeyMaterial,
            Self::StoredRecord(_) | Self::Crypto(_) => ErrorCode::InternalError,
            Self::AuditUnavailable(_) => ErrorCode::Unavailable,
        }
    }

    /// The message a client may see: fixed per code, never a detail of
    /// which check failed inside a decryption or a stored record.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::InvalidPublicKey => "public key is not a point on P-256",
            Self::AuthorizationRequired => {
                "this wallet is owner-bound: the export needs the owner's authorization"
            }
            Self::AuthorizationFailed => {
                "authorization does not verify, is expired, or expires more than 300 s ahead"
            }
            Self::SessionUsed => "import session already completed",
            Self::SessionExpired => "import session expired",
            Self::DecryptionFailed => "encrypted_key does not open",
            Self::InvalidKeyMaterial(_) => "the plaintext is not valid key material",
            Self::StoredRecord(_) | Self::Crypto(_) => "internal error",
            Self::AuditUnavailable(_) => "the audit log cannot be written; retry shortly",
        }
    }
}
