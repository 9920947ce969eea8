//! The admin API of kms-api (`--admin-listen`, off by default): master-key
//! rotation, re-wrapping wallets to the current version, retiring old
//! versions (`docs/key-lifecycle.md`). Used by the `kms-admin` CLI.

use serde::{Deserialize, Serialize};

/// `GET /admin/v1/keys`.
pub const PATH_KEYS: &str = "/admin/v1/keys";
/// `POST /admin/v1/keys/rotate`.
pub const PATH_ROTATE: &str = "/admin/v1/keys/rotate";
/// `POST /admin/v1/keys/{version}/retire`.
pub const PATH_RETIRE_PREFIX: &str = "/admin/v1/keys/";
/// `GET` (progress) and `POST` (start or join) `/admin/v1/rewrap`.
pub const PATH_REWRAP: &str = "/admin/v1/rewrap";

/// One master key version as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    pub version: u32,
    pub current: bool,
    /// Wallets whose data key is wrapped under this version.
    pub wallets: u64,
    /// Import sessions, still open, sealed under this version.
    pub open_sessions: u64,
}

/// `GET /admin/v1/keys`, and the answer to a rotation or retirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysOverview {
    /// The root-key provider sealing the key set.
    pub provider: String,
    pub current_version: u32,
    pub versions: Vec<KeyVersion>,
    pub retired: Vec<u32>,
}

/// `POST /admin/v1/rewrap` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRewrap {
    /// Wallets per batch (1–1000, default 500); each batch is one transaction.
    pub batch_size: Option<u32>,
}

/// Where a re-wrap job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewrapState {
    /// No job has run since kms-api started.
    Idle,
    Running,
    /// Finished: every wallet is under `target_version`, except `failed`.
    Done,
    /// Stopped on an error it cannot retry (see `message`); re-run to resume.
    Failed,
}

/// `GET /admin/v1/rewrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrapStatus {
    pub state: RewrapState,
    pub target_version: Option<u32>,
    /// Wallets moved to `target_version` by this job.
    pub rewrapped: u64,
    /// Wallets still under another version (an estimate while running).
    pub remaining: u64,
    /// Wallets whose stored key did not open (damaged rows), left as they are.
    pub failed: u64,
    /// Batches committed by this job.
    pub batches: u64,
    /// Wallets per second since the job started.
    pub per_second: u64,
    pub eta_seconds: Option<u64>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// What the job is waiting for, or why it failed.
    pub message: Option<String>,
}

impl RewrapStatus {
    pub fn idle() -> Self {
        Self {
            state: RewrapState::Idle,
            target_version: None,
            rewrapped: 0,
            remaining: 0,
            failed: 0,
            batches: 0,
            per_second: 0,
            eta_seconds: None,
            started_at: None,
            finished_at: None,
            message: None,
        }
    }
}
