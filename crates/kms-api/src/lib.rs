#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod relay;
pub mod routes;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::ApiError;
pub use routes::app;

/// Seconds since the Unix epoch; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// How long a completed session stays 409 after it expires (PROTOCOL.md, "Errors").
pub const COMPLETED_SESSION_RETENTION: u64 = 24 * 60 * 60;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn kms_store::Store>,
    pub env: relay::SecureEnvClient,
    pub clock: Clock,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn now(&self) -> u64 {
        (self.clock)()
    }
}
