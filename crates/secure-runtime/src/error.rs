//! Errors of the secure environment, mapped to docs/protocol.md's codes at the HTTP edge.

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
    /// A well-formed request this wallet's key type cannot do (422,
    /// docs/protocol.md §§8–9): the reason is safe to show.
    #[error("unsupported operation: {0}")]
    UnsupportedOperation(&'static str),
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
    /// A wrapped data key that is not one this service writes (400).
    #[error("wrapped_key is not a data key of this service")]
    MalformedDataKey,
    /// A wrapped data key that does not open under the given encryption
    /// context (another context, or tampered) (422).
    #[error("wrapped data key does not open")]
    DataKeyDoesNotOpen,
    /// A wrapped data key under a retired master key version (422).
    #[error("master key version {0} is retired")]
    RetiredVersion(u32),
    /// A wrapped data key under a version this key set never held (422).
    #[error("master key version {0} is unknown to this key set")]
    UnknownVersion(u32),
    /// An administrative key-set change that cannot be made (400).
    #[error("{0}")]
    KeyChange(#[from] kms_crypto::keyset::ChangeError),
    /// The key set could not be re-sealed (provider or disk); nothing
    /// changed (503).
    #[error("the key set could not be saved: {0}")]
    KeySetStore(String),
    /// A request the secure environment will not serve as sent (400).
    #[error("{0}")]
    BadRequest(&'static str),
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
            Self::UnsupportedOperation(_) => ErrorCode::UnsupportedOperation,
            Self::StoredRecord(_) | Self::Crypto(_) => ErrorCode::InternalError,
            Self::AuditUnavailable(_) | Self::KeySetStore(_) => ErrorCode::Unavailable,
            Self::MalformedDataKey | Self::BadRequest(_) => ErrorCode::InvalidRequest,
            Self::RetiredVersion(_) | Self::UnknownVersion(_) | Self::DataKeyDoesNotOpen => {
                ErrorCode::DecryptionFailed
            }
            Self::KeyChange(kms_crypto::keyset::ChangeError::UnknownVersion(_)) => {
                ErrorCode::NotFound
            }
            Self::KeyChange(_) => ErrorCode::InvalidRequest,
        }
    }

    /// The message a client may see: fixed per code, never a detail of
    /// which check failed inside a decryption or a stored record.
    pub fn public_message(&self) -> &'static str {
        match self {
            Self::InvalidPublicKey => "public key is not a point on P-256",
            Self::AuthorizationRequired => {
                "this wallet is owner-bound: the request needs the owner's authorization"
            }
            Self::AuthorizationFailed => {
                "authorization does not verify, is expired, or expires more than 300 s ahead"
            }
            Self::SessionUsed => "import session already completed",
            Self::SessionExpired => "import session expired",
            Self::DecryptionFailed => "encrypted_key does not open",
            // A keycard's refusal is about the importer's own box and
            // passphrase, not about the sealed plaintext: it is shown.
            Self::InvalidKeyMaterial(m) if m.starts_with("bitgo_keycard:") => m,
            Self::InvalidKeyMaterial(_) => "the plaintext is not valid key material",
            Self::UnsupportedOperation(m) => m,
            Self::StoredRecord(_) | Self::Crypto(_) => "internal error",
            Self::AuditUnavailable(_) => "the audit log cannot be written; retry shortly",
            Self::MalformedDataKey => "wrapped_key is not a data key of this service",
            Self::DataKeyDoesNotOpen => "wrapped_key does not open under this encryption_context",
            Self::RetiredVersion(_) => {
                "wrapped_key is under a retired master key version and can no longer be decrypted"
            }
            Self::UnknownVersion(_) => {
                "wrapped_key is under a master key version this service does not hold"
            }
            Self::KeyChange(kms_crypto::keyset::ChangeError::UnknownVersion(_)) => {
                "no such master key version"
            }
            Self::KeyChange(kms_crypto::keyset::ChangeError::RetireCurrent(_)) => {
                "the current master key version cannot be retired; rotate first"
            }
            Self::KeyChange(kms_crypto::keyset::ChangeError::AlreadyRetired(_)) => {
                "that master key version is already retired"
            }
            Self::KeyChange(_) => "the key set cannot be changed as asked",
            Self::KeySetStore(_) => "the key set cannot be saved right now; nothing changed",
            Self::BadRequest(m) => m,
        }
    }
}
