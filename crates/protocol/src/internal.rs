//! The internal API between kms-api and the secure environment.
//!
//! This hop is the project's own (docs/design.md, "Decisions"): JSON over local
//! HTTP, errors in the same shape as the public API so kms-api can relay a
//! client error's status and code unchanged. Everything kms-api holds for
//! the secure environment is opaque sealed bytes ([`Bytes`]); their layouts
//! are in `kms-crypto`'s `envelope` module.

use serde::{Deserialize, Serialize};

use crate::api::{
    Authorization, DerivedKey, ExportBundle, GenerateReceipt, GenerateWallet, ImportEnvelope,
    ImportReceipt, SignRequest, SignResponse,
};
use crate::audit::AuditRecord;
use crate::error::ErrorDetail;
use crate::{Bytes, Curve, DerivationPath, HpkeCiphertext, Id, KeyType, Nonce, P256PublicKey};

pub const PATH_HEALTH: &str = "/internal/v1/health";
pub const PATH_IDENTITY: &str = "/internal/v1/identity";
pub const PATH_SESSIONS: &str = "/internal/v1/import-sessions";
pub const PATH_IMPORT: &str = "/internal/v1/import";
pub const PATH_EXPORT: &str = "/internal/v1/export";
/// `GET /internal/v1/audit?after=SEQ&limit=N` → [`crate::audit::AuditPage`].
pub const PATH_AUDIT: &str = "/internal/v1/audit";
/// `POST` [`crate::data_key::GenerateDataKey`] → [`DataKeyIssued`].
pub const PATH_DATA_KEYS: &str = "/internal/v1/data-keys";
/// `POST` [`crate::data_key::DecryptDataKey`] → [`DataKeyIssued`].
pub const PATH_DATA_KEYS_DECRYPT: &str = "/internal/v1/data-keys/decrypt";
/// `GET` → [`KeysStatus`].
pub const PATH_KEYS: &str = "/internal/v1/keys";
/// `POST` (empty body) → [`KeysChanged`]: a new master key version, current at once.
pub const PATH_KEYS_ROTATE: &str = "/internal/v1/keys/rotate";
/// `POST` [`RetireKey`] → [`KeysChanged`].
pub const PATH_KEYS_RETIRE: &str = "/internal/v1/keys/retire";
/// `POST` [`Rewrap`] → [`Rewrapped`].
pub const PATH_REWRAP: &str = "/internal/v1/rewrap";

/// Most wallets in one [`Rewrap`] batch.
pub const REWRAP_BATCH_MAX: usize = 1000;

/// A data key issued or decrypted, and its audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataKeyIssued {
    pub data_key: crate::data_key::DataKey,
    pub audit: AuditRecord,
}

/// The key set's master-key versions (never a key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeysStatus {
    /// The root-key provider sealing the key set.
    pub provider: String,
    pub current_version: u32,
    /// Versions held, ascending.
    pub versions: Vec<u32>,
    /// Versions retired, ascending: never decrypt again, never reused.
    pub retired: Vec<u32>,
}

/// `POST /internal/v1/keys/retire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireKey {
    pub version: u32,
}

/// Reply to a rotation or a retirement: the new status and its audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysChanged {
    pub status: KeysStatus,
    pub audit: AuditRecord,
}

/// A wallet's wrapped data key, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedWalletKey {
    pub wallet_id: Id,
    pub master_key_version: u32,
    pub wrapped_key: Bytes,
}

/// `POST /internal/v1/rewrap`: data keys to move to the current version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrap {
    pub wallets: Vec<WrappedWalletKey>,
}

/// Reply to [`Rewrap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrapped {
    pub current_version: u32,
    /// The wallets that re-wrapped (or were already current), in order.
    pub wallets: Vec<WrappedWalletKey>,
    /// Wallets whose stored key did not open (a damaged record): left as
    /// they are and reported.
    pub failed: Vec<Id>,
}

/// `GET /internal/v1/identity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub provider: String,
    pub identity_public_key: P256PublicKey,
    pub measurement: String,
}

/// `POST /internal/v1/import-sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSession {
    pub client_nonce: Option<Nonce>,
}

/// A new session: what the client sees, and the sealed state kms-api keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStarted {
    pub envelope: ImportEnvelope,
    /// The session's private key sealed under the master key, bound to
    /// `session_id` and `expires_at`.
    pub sealed_state: Bytes,
    /// The audit record of this session's start.
    pub audit: AuditRecord,
}

/// `POST /internal/v1/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Import {
    pub session_id: Id,
    pub expires_at: u64,
    pub sealed_state: Bytes,
    pub encrypted_key: HpkeCiphertext,
}

/// A wallet as stored: public metadata and sealed blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletRecord {
    pub wallet_id: Id,
    pub key_type: KeyType,
    pub public_key: Option<Bytes>,
    pub owner_public_key: Option<P256PublicKey>,
    pub created_at: u64,
    pub master_key_version: u32,
    /// The wallet's data key wrapped under the master key.
    pub wrapped_key: Bytes,
    /// The wallet material encrypted under the data key.
    pub ciphertext: Bytes,
}

/// Reply to [`Import`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    pub receipt: ImportReceipt,
    pub record: WalletRecord,
    pub audit: AuditRecord,
}

/// Reply to [`Export`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    pub bundle: ExportBundle,
    pub audit: AuditRecord,
}

/// An error from the secure environment: docs/protocol.md's error object and,
/// when the refusal was recorded, its audit record, which kms-api must
/// store before it answers (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub error: ErrorDetail,
    #[serde(default)]
    pub audit: Option<AuditRecord>,
}

/// `POST /internal/v1/export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Export {
    pub record: WalletRecord,
    pub recipient_public_key: P256PublicKey,
    pub authorization: Option<Authorization>,
}

/// `POST /internal/v1/wallets`: make a wallet inside the secure environment.
pub const PATH_GENERATE: &str = "/internal/v1/wallets";
/// `POST /internal/v1/derive`: a public key at a path of an HD wallet.
pub const PATH_DERIVE: &str = "/internal/v1/derive";
/// `POST /internal/v1/sign`: a signature by a wallet's key.
pub const PATH_SIGN: &str = "/internal/v1/sign";

/// `POST /internal/v1/wallets`: the client's request as kms-api checked it.
pub type Generate = GenerateWallet;

/// Reply to [`Generate`]: the receipt for the client, the record to store
/// and the audit record, both stored before the client hears of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generated {
    pub receipt: GenerateReceipt,
    pub record: WalletRecord,
    pub audit: AuditRecord,
}

/// `POST /internal/v1/derive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Derive {
    pub record: WalletRecord,
    pub curve: Curve,
    pub path: DerivationPath,
}

/// Reply to [`Derive`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Derived {
    pub key: DerivedKey,
    pub audit: AuditRecord,
}

/// `POST /internal/v1/sign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sign {
    pub record: WalletRecord,
    pub request: SignRequest,
}

/// Reply to [`Sign`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub response: SignResponse,
    pub audit: AuditRecord,
}
