//! The admin API (`--admin-listen`, off by default, loopback unless
//! `--admin-allow-remote`): master-key rotation, the re-wrap job that moves
//! every wallet's data key to the current version, and retirement of
//! versions nothing references (`docs/key-lifecycle.md`).
//!
//! The re-wrap job keeps no state of its own: the store is the state (which
//! wallets are still under an old version), so a job stopped by a crash of
//! either process resumes from where it stopped when it is started again.
//! Each batch is read in id order, re-wrapped by the secure environment,
//! and written in one transaction with compare-and-set per wallet, so
//! imports and exports go on throughout and two jobs never clobber each
//! other.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use kms_protocol::admin::{
    KeyVersion, KeysOverview, RewrapState, RewrapStatus, StartRewrap, PATH_KEYS, PATH_REWRAP,
    PATH_ROTATE,
};
use kms_protocol::internal::{self, KeysChanged, KeysStatus, RetireKey, Rewrap, Rewrapped};
use kms_protocol::{ErrorCode, Id};

use crate::error::error_response;
use crate::extract::JsonBody;
use crate::relay::RelayError;
use crate::{ApiError, AppState};

/// Default and largest re-wrap batch.
pub const DEFAULT_BATCH: u32 = 500;
const MAX_BATCH: u32 = internal::REWRAP_BATCH_MAX as u32;

/// The admin API's state: the public API's, a bearer token if configured,
/// and the re-wrap job's progress.
#[derive(Clone)]
pub struct Admin {
    pub state: AppState,
    token: Option<Arc<Vec<u8>>>,
    job: Arc<Mutex<RewrapStatus>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// `token`: when set, every admin request needs `Authorization: Bearer TOKEN`.
    pub fn new(state: AppState, token: Option<Vec<u8>>) -> Self {
        Self {
            state,
            token: token.map(Arc::new),
            job: Arc::new(Mutex::new(RewrapStatus::idle())),
        }
    }

    fn status(&self) -> RewrapStatus {
        self.job.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut RewrapStatus)) {
        f(&mut self.job.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The admin router.
pub fn admin_app(admin: Admin) -> Router {
    Router::new()
        .route(PATH_KEYS, get(keys))
        .route(PATH_ROTATE, post(rotate))
        .route("/admin/v1/keys/{version}/retire", post(retire))
        .route(PATH_REWRAP, get(rewrap_status).post(start_rewrap))
        .fallback(|| async { error_response(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            error_response(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(admin.clone(), require_token))
        .with_state(admin)
}

/// Equal-time comparison (this process links no crypto crate).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(a): State<Admin>, req: Request, next: Next) -> Response {
    if let Some(token) = &a.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !given.is_some_and(|g| same(g, token)) {
            return error_response(
                ErrorCode::AuthorizationRequired,
                "the admin API needs Authorization: Bearer <admin token>",
            );
        }
    }
    next.run(req).await
}

async fn overview(s: &AppState, status: KeysStatus) -> Result<KeysOverview, ApiError> {
    let counts = s.store.wallets_per_version().await?;
    let now = s.now();
    let mut versions = Vec::with_capacity(status.versions.len());
    for &version in &status.versions {
        versions.push(KeyVersion {
            version,
            current: version == status.current_version,
            wallets: count_under(&counts, version),
            open_sessions: s.store.open_sessions_under(version, now).await?,
        });
    }
    Ok(KeysOverview {
        provider: status.provider,
        current_version: status.current_version,
        versions,
        retired: status.retired,
    })
}

async fn keys(State(a): State<Admin>) -> Result<Json<KeysOverview>, ApiError> {
    let status: KeysStatus = a.state.env.get(internal::PATH_KEYS).await?;
    Ok(Json(overview(&a.state, status).await?))
}

async fn rotate(State(a): State<Admin>) -> Result<Json<KeysOverview>, ApiError> {
    let changed: KeysChanged = a.state.env.post(internal::PATH_KEYS_ROTATE, &()).await?;
    a.state.store.insert_audit(&changed.audit).await?;
    tracing::info!(
        current = changed.status.current_version,
        "master key rotated"
    );
    Ok(Json(overview(&a.state, changed.status).await?))
}

/// The count for `version` in a per-version list (0 if absent).
fn count_under(counts: &[(u32, u64)], version: u32) -> u64 {
    counts
        .iter()
        .find(|(v, _)| *v == version)
        .map_or(0, |(_, n)| *n)
}

async fn retire(
    State(a): State<Admin>,
    Path(version): Path<String>,
) -> Result<Json<KeysOverview>, ApiError> {
    let version: u32 = version
        .parse()
        .map_err(|_| ApiError::bad_request("the version is a decimal number"))?;
    let s = &a.state;
    // Retiring a retired version again is a no-op (idempotent re-runs).
    let status: KeysStatus = s.env.get(internal::PATH_KEYS).await?;
    if status.retired.contains(&version) {
        return Ok(Json(overview(s, status).await?));
    }
    let wallets = count_under(&s.store.wallets_per_version().await?, version);
    if wallets > 0 {
        return Err(ApiError::bad_request(format!(
            "{wallets} wallets are still under master key version {version}; run the re-wrap first"
        )));
    }
    let provider_keys = count_under(&s.store.provider_keys_per_version().await?, version);
    if provider_keys > 0 {
        return Err(ApiError::bad_request(format!(
            "{provider_keys} keys stored for BitGo's wallet manager are sealed under master key version {version}, \
             and the re-wrap does not move them yet: this version cannot be retired"
        )));
    }
    let sessions = s.store.open_sessions_under(version, s.now()).await?;
    if sessions > 0 {
        return Err(ApiError::bad_request(format!(
            "{sessions} open import sessions are sealed under master key version {version}; retire it once they expire"
        )));
    }
    let changed: KeysChanged = s
        .env
        .post(internal::PATH_KEYS_RETIRE, &RetireKey { version })
        .await?;
    s.store.insert_audit(&changed.audit).await?;
    tracing::info!(version, "master key version retired");
    Ok(Json(overview(s, changed.status).await?))
}

async fn rewrap_status(State(a): State<Admin>) -> Json<RewrapStatus> {
    Json(a.status())
}

/// Starts a re-wrap job, or joins the one running (idempotent): 202 when
/// this call started it, 200 when one was already running.
async fn start_rewrap(
    State(a): State<Admin>,
    JsonBody(body): JsonBody<StartRewrap>,
) -> Result<(StatusCode, Json<RewrapStatus>), ApiError> {
    let batch = body.batch_size.unwrap_or(DEFAULT_BATCH);
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(ApiError::bad_request("batch_size is 1 to 1000"));
    }
    {
        let mut job = a.job.lock().unwrap_or_else(|p| p.into_inner());
        if job.state == RewrapState::Running {
            return Ok((StatusCode::OK, Json(job.clone())));
        }
        *job = RewrapStatus {
            state: RewrapState::Running,
            started_at: Some(a.state.now()),
            message: Some("starting".into()),
            ..RewrapStatus::idle()
        };
    }
    let runner = a.clone();
    tokio::spawn(async move {
        let outcome = run_job(&runner, batch).await;
        runner.update(|j| {
            j.finished_at = Some(runner.state.now());
            j.eta_seconds = None;
            match outcome {
                Ok(()) => {
                    j.state = RewrapState::Done;
                    j.message = None;
                }
                Err(e) => {
                    tracing::error!(error = %e, "re-wrap job failed");
                    j.state = RewrapState::Failed;
                    j.message = Some(e.to_string());
                }
            }
        });
    });
    Ok((StatusCode::ACCEPTED, Json(a.status())))
}

/// Retries `op` while the secure environment or the store is unavailable
/// (a restart, a crash), with a growing pause; other errors end the job.
async fn retrying<T, F, Fut>(a: &Admin, what: &str, mut op: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(ApiError::Unavailable(e)) => {
                tracing::warn!(error = %e, "re-wrap waiting: {what}");
                a.update(|j| j.message = Some(format!("waiting: {what}: {e}")));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

async fn remaining(a: &Admin, target: u32) -> Result<u64, ApiError> {
    let counts = retrying(a, "counting wallets", || async {
        Ok(a.state.store.wallets_per_version().await?)
    })
    .await?;
    Ok(counts
        .iter()
        .filter(|(v, _)| *v != target)
        .map(|(_, n)| n)
        .sum())
}

async fn run_job(a: &Admin, batch: u32) -> Result<(), ApiError> {
    let s = &a.state;
    let status: KeysStatus = retrying(a, "reading the key set status", || async {
        Ok(s.env.get(internal::PATH_KEYS).await?)
    })
    .await?;
    let mut target = status.current_version;
    let started = Instant::now();
    let mut left = remaining(a, target).await?;
    a.update(|j| {
        j.target_version = Some(target);
        j.remaining = left;
        j.message = None;
    });
    tracing::info!(target, wallets = left, "re-wrap job started");
    let mut cursor: Option<Id> = None;
    let mut moved_this_pass = 0u64;
    loop {
        let rows = retrying(a, "reading a batch", || async {
            Ok(s.store
                .wallets_to_rewrap(target, cursor.as_ref(), batch)
                .await?)
        })
        .await?;
        if rows.is_empty() {
            left = remaining(a, target).await?;
            let failed = a.status().failed;
            a.update(|j| j.remaining = left);
            // A pass that moved nothing leaves only wallets that cannot
            // move (damaged rows); otherwise sweep again for stragglers.
            if left == 0 || moved_this_pass == 0 || left <= failed {
                tracing::info!(target, left, failed, "re-wrap job finished");
                return Ok(());
            }
            cursor = None;
            moved_this_pass = 0;
            continue;
        }
        let request = Rewrap { wallets: rows };
        let done: Rewrapped = retrying(a, "the secure environment", || async {
            s.env
                .post(internal::PATH_REWRAP, &request)
                .await
                .map_err(|e| match e {
                    RelayError::Unavailable(m) => ApiError::Unavailable(m),
                    other => other.into(),
                })
        })
        .await?;
        if done.current_version != target {
            // Rotated again meanwhile: aim at the new version from the start.
            target = done.current_version;
            cursor = None;
            left = remaining(a, target).await?;
            a.update(|j| {
                j.target_version = Some(target);
                j.remaining = left;
            });
            tracing::info!(
                target,
                "master key rotated during the re-wrap; following it"
            );
            continue;
        }
        let pairs: Vec<_> = done
            .wallets
            .iter()
            .filter(|w| w.master_key_version == target)
            .filter_map(|new| {
                request
                    .wallets
                    .iter()
                    .find(|old| old.wallet_id == new.wallet_id)
                    .filter(|old| old.master_key_version != target)
                    .map(|old| (old.clone(), new.clone()))
            })
            .collect();
        let changed = retrying(a, "writing a batch", || async {
            Ok(s.store.apply_rewrap(&pairs).await?)
        })
        .await?;
        moved_this_pass += changed;
        left = left.saturating_sub(changed);
        cursor = request.wallets.last().map(|w| w.wallet_id);
        let elapsed = started.elapsed().as_secs_f64().max(0.001);
        a.update(|j| {
            j.rewrapped += changed;
            j.failed += done.failed.len() as u64;
            j.batches += 1;
            j.remaining = left;
            j.per_second = (j.rewrapped as f64 / elapsed) as u64;
            j.eta_seconds = (j.per_second > 0).then(|| left / j.per_second.max(1));
            j.message = None;
        });
    }
}
