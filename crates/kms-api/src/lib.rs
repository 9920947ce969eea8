#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod error;
pub mod extract;
pub mod internal;
pub mod openapi;
pub mod relay;
pub mod routes;
pub mod tcp_relay;
pub mod wallet_keys;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use error::ApiError;

/// kms-api's router: every public route, the OpenAPI document, and the
/// middleware around them.
pub fn app(state: AppState) -> axum::Router {
    let routes = routes::routes().merge(wallet_keys::routes()).route(
        "/v1/openapi.json",
        axum::routing::get(openapi::openapi_json),
    );
    routes::with_middleware(routes, state)
}

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

/// How long a completed session stays 409 after it expires (docs/protocol.md, "Errors").
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
