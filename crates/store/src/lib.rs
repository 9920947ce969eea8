#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod sqlite;

use std::sync::Arc;

use kms_protocol::api::WalletMetadata;
use kms_protocol::audit::AuditRecord;
use kms_protocol::internal::{WalletRecord, WrappedWalletKey};
use kms_protocol::provider::{KeySource, ProviderKeyRow};
use kms_protocol::Id;

pub use sqlite::SqliteStore;

/// An import session as kms-api keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: Id,
    /// The session's private key, sealed by the secure environment.
    pub sealed_state: Vec<u8>,
    pub expires_at: u64,
    pub created_at: u64,
    /// When the session completed; `None` while it is still open.
    pub completed_at: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or failed (kms-api answers 503).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database failed a read or a write, or the commit of a write's
    /// group (kms-api answers 503).
    #[error("database error: {0}")]
    Engine(String),
    /// `complete_session` found the session already completed (409).
    #[error("import session already completed")]
    SessionAlreadyCompleted,
    /// `complete_session` found no such session.
    #[error("no such import session")]
    SessionNotFound,
    /// A row that this store did not write in this shape (500).
    /// A key-provider key with this `(pub, source)` is already stored.
    #[error("a key with this pub and source is already stored")]
    ProviderKeyExists,
    #[error("stored row is corrupt: {0}")]
    Corrupt(&'static str),
    /// A database URL this build cannot use.
    #[error("{0}")]
    Unsupported(String),
}

/// What kms-api needs from its storage. Every engine implements it and
/// passes the same test suite (`tests/store_suite.rs`).
///
/// Single use of import sessions rests on [`Store::complete_session`]: it
/// marks the session completed and inserts the wallet in one transaction,
/// and fails if the session had already completed, so two racing
/// completions (even on two kms-api instances) never both succeed.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Records a new import session and the audit record of its start, in
    /// one transaction.
    async fn insert_session(
        &self,
        session: &SessionRecord,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;

    /// The session with this id, if any.
    async fn session(&self, id: &Id) -> Result<Option<SessionRecord>, StoreError>;

    /// Atomically marks the session completed at `completed_at`, stores its
    /// wallet and the import's audit record. Fails with
    /// [`StoreError::SessionAlreadyCompleted`] (and stores nothing) if it had
    /// completed already.
    async fn complete_session(
        &self,
        id: &Id,
        completed_at: u64,
        wallet: &WalletRecord,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;

    /// Stores a wallet the secure environment generated and the audit
    /// record of its making, in one durable transaction (as durable as
    /// [`Store::complete_session`]: a generate is acknowledged only after).
    async fn insert_wallet(
        &self,
        wallet: &WalletRecord,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;

    /// The wallet with this id, with its sealed blobs.
    async fn wallet(&self, id: &Id) -> Result<Option<WalletRecord>, StoreError>;

    /// Up to `limit` wallets' metadata with ids greater than `after`, in
    /// ascending id order (docs/protocol.md §5).
    async fn list_wallets(
        &self,
        after: Option<&Id>,
        limit: u32,
    ) -> Result<Vec<WalletMetadata>, StoreError>;

    /// Stores an audit record. Storing one that is already there is a no-op;
    /// a different record under the same seq is [`StoreError::Corrupt`].
    ///
    /// Once this returns, readers see the record and it survives a crash of
    /// kms-api, but an engine may leave it to its next durable write to
    /// survive a power cut (SQLite does: an fsync per export would double
    /// the fsyncs on its path). The record came from the secure
    /// environment's log, which made it durable first, and the backfill
    /// copies back whatever this replica loses. Sessions, wallets and
    /// rewraps are durable when their call returns.
    /// Stores a key-provider key and the audit record of its storing in
    /// one commit; [`StoreError::ProviderKeyExists`] (and nothing stored)
    /// when its `(pub, source)` is taken.
    async fn insert_provider_key(
        &self,
        row: &ProviderKeyRow,
        audit: &AuditRecord,
    ) -> Result<(), StoreError>;

    /// The key-provider key stored under `(pub, source)`.
    async fn provider_key(
        &self,
        public: &str,
        source: KeySource,
    ) -> Result<Option<ProviderKeyRow>, StoreError>;

    /// How many key-provider keys are sealed under each master-key version.
    async fn provider_keys_per_version(&self) -> Result<Vec<(u32, u64)>, StoreError>;

    async fn insert_audit(&self, audit: &AuditRecord) -> Result<(), StoreError>;

    /// Up to `limit` audit records with seq greater than `after`, in order.
    async fn audit_page(&self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;

    /// The largest seq `s >= from` such that every record in `from+1..=s` is
    /// stored (`from` itself when `from+1` is missing): where copying missed
    /// records from the secure environment must resume.
    async fn audit_contiguous_from(&self, from: u64) -> Result<u64, StoreError>;

    /// Deletes sessions that expired before `expired_before`, completed or
    /// not; returns how many.
    async fn purge_sessions(&self, expired_before: u64) -> Result<u64, StoreError>;

    /// How many wallets each master key version holds, ascending by version.
    async fn wallets_per_version(&self) -> Result<Vec<(u32, u64)>, StoreError>;

    /// Up to `limit` wallets whose data key is not under `current`, with
    /// ids greater than `after`, in ascending id order: the next batch of a
    /// re-wrap job.
    async fn wallets_to_rewrap(
        &self,
        current: u32,
        after: Option<&Id>,
        limit: u32,
    ) -> Result<Vec<WrappedWalletKey>, StoreError>;

    /// Replaces wallets' wrapped data keys in one transaction. Each pair is
    /// `(as read, re-wrapped)`; a wallet whose stored key no longer equals
    /// the one read (changed meanwhile) is left alone. Returns how many
    /// wallets changed.
    async fn apply_rewrap(
        &self,
        batch: &[(WrappedWalletKey, WrappedWalletKey)],
    ) -> Result<u64, StoreError>;

    /// How many import sessions still open at `now` (not completed, not
    /// expired) hold state sealed under master key `version`.
    async fn open_sessions_under(&self, version: u32, now: u64) -> Result<u64, StoreError>;
}

/// Opens the store a database URL names: `sqlite://PATH` (created if
/// missing). `postgres://` is refused until its store exists.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return Ok(Arc::new(SqliteStore::open(path).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(StoreError::Unsupported(
            "PostgreSQL is not supported by this build yet; use sqlite://PATH (the default)"
                .to_owned(),
        ));
    }
    Err(StoreError::Unsupported(format!(
        "unsupported database URL scheme in {:?}; use sqlite://PATH",
        url.split("://").next().unwrap_or(url)
    )))
}
