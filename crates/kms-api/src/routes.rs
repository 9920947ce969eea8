//! The public routes of PROTOCOL.md §§0–5 and the middleware around them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kms_protocol::api::{
    Attestation, CompleteImport, ExportBundle, ExportWallet, Health, ImportEnvelope, ImportReceipt,
    StartImportSession, WalletMetadata, WalletPage,
};
use kms_protocol::internal::{
    self, Export, Identity, Import, Imported, SessionStarted, StartSession,
};
use kms_protocol::{ErrorCode, MAX_BODY_BYTES};
use kms_store::SessionRecord;

use crate::error::error_response;
use crate::extract::{JsonBody, ListQuery, PathId};
use crate::{ApiError, AppState};

/// Budget for a whole client request (DESIGN.md, "timeouts").
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// kms-api's router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/attestation", get(attestation))
        .route("/v1/import-sessions", post(start_import_session))
        .route(
            "/v1/import-sessions/{session_id}/complete",
            post(complete_import),
        )
        .route("/v1/wallets", get(list_wallets))
        .route("/v1/wallets/{wallet_id}", get(wallet))
        .route("/v1/wallets/{wallet_id}/export", post(export_wallet))
        .fallback(|| async { error_response(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            error_response(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn(limit_declared_length))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// 413 from the declared length alone, before routing or reading.
async fn limit_declared_length(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return error_response(ErrorCode::PayloadTooLarge, "request body over 64 KiB");
    }
    next.run(req).await
}

/// A request id, a log line per request (ids and outcomes, never bodies),
/// and the 30 s budget.
async fn request_context(req: Request, next: Next) -> Response {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = id, %method, %path);
    let started = Instant::now();
    let work = crate::relay::REQUEST_ID.scope(
        id,
        tracing::Instrument::instrument(next.run(req), span.clone()),
    );
    let mut resp = match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => span.in_scope(|| {
            ApiError::Unavailable("request took longer than 30 s".to_owned()).into_response()
        }),
    };
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "done"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn health(State(s): State<AppState>) -> Result<Json<Health>, ApiError> {
    s.store.ping().await?;
    s.env
        .get::<serde_json::Value>(internal::PATH_HEALTH)
        .await?;
    Ok(Json(Health {
        status: "ok".to_owned(),
    }))
}

async fn attestation(State(s): State<AppState>) -> Result<Json<Attestation>, ApiError> {
    let id: Identity = s.env.get(internal::PATH_IDENTITY).await?;
    Ok(Json(Attestation {
        provider: id.provider,
        identity_public_key: id.identity_public_key,
        measurement: id.measurement,
        document: None,
    }))
}

async fn start_import_session(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<StartImportSession>,
) -> Result<(StatusCode, Json<ImportEnvelope>), ApiError> {
    let started: SessionStarted = s
        .env
        .post(
            internal::PATH_SESSIONS,
            &StartSession {
                client_nonce: req.client_nonce,
            },
        )
        .await?;
    let e = started.envelope;
    s.store
        .insert_session(&SessionRecord {
            session_id: e.session_id,
            sealed_state: started.sealed_state.0,
            expires_at: e.expires_at,
            created_at: s.now(),
            completed_at: None,
        })
        .await?;
    tracing::info!(session_id = %e.session_id, expires_at = e.expires_at, "import session started");
    Ok((StatusCode::CREATED, Json(e)))
}

async fn complete_import(
    State(s): State<AppState>,
    PathId(session_id): PathId,
    JsonBody(req): JsonBody<CompleteImport>,
) -> Result<(StatusCode, Json<ImportReceipt>), ApiError> {
    let session = s
        .store
        .session(&session_id)
        .await?
        .ok_or_else(|| ApiError::client(ErrorCode::NotFound, "no such import session"))?;
    if session.completed_at.is_some() {
        return Err(ApiError::client(
            ErrorCode::SessionUsed,
            "import session already completed",
        ));
    }
    if s.now() >= session.expires_at {
        return Err(ApiError::client(
            ErrorCode::SessionExpired,
            "import session expired",
        ));
    }
    let imported: Imported = s
        .env
        .post(
            internal::PATH_IMPORT,
            &Import {
                session_id,
                expires_at: session.expires_at,
                sealed_state: kms_protocol::Bytes(session.sealed_state),
                encrypted_key: req.encrypted_key,
            },
        )
        .await?;
    if imported.record.wallet_id != imported.receipt.wallet_id {
        return Err(ApiError::Internal(
            "secure environment returned mismatched wallet ids".to_owned(),
        ));
    }
    s.store
        .complete_session(&session_id, s.now(), &imported.record)
        .await?;
    tracing::info!(%session_id, wallet_id = %imported.receipt.wallet_id, key_type = %imported.receipt.key_type, "wallet imported");
    Ok((StatusCode::CREATED, Json(imported.receipt)))
}

async fn wallet(
    State(s): State<AppState>,
    PathId(wallet_id): PathId,
) -> Result<Json<WalletMetadata>, ApiError> {
    let w = s
        .store
        .wallet(&wallet_id)
        .await?
        .ok_or_else(|| ApiError::client(ErrorCode::NotFound, "no such wallet"))?;
    Ok(Json(WalletMetadata {
        wallet_id: w.wallet_id,
        key_type: w.key_type,
        public_key: w.public_key,
        owner_public_key: w.owner_public_key,
        created_at: w.created_at,
    }))
}

async fn list_wallets(
    State(s): State<AppState>,
    q: ListQuery,
) -> Result<Json<WalletPage>, ApiError> {
    let mut wallets = s.store.list_wallets(q.after.as_ref(), q.limit + 1).await?;
    let more = wallets.len() > q.limit as usize;
    wallets.truncate(q.limit as usize);
    let next = if more {
        wallets.last().map(|w| w.wallet_id)
    } else {
        None
    };
    Ok(Json(WalletPage { wallets, next }))
}

async fn export_wallet(
    State(s): State<AppState>,
    PathId(wallet_id): PathId,
    JsonBody(req): JsonBody<ExportWallet>,
) -> Result<Json<ExportBundle>, ApiError> {
    let record = s
        .store
        .wallet(&wallet_id)
        .await?
        .ok_or_else(|| ApiError::client(ErrorCode::NotFound, "no such wallet"))?;
    let bundle: ExportBundle = s
        .env
        .post(
            internal::PATH_EXPORT,
            &Export {
                record,
                recipient_public_key: req.recipient_public_key,
                authorization: req.authorization,
            },
        )
        .await?;
    if bundle.wallet_id != wallet_id || bundle.recipient_public_key != req.recipient_public_key {
        return Err(ApiError::Internal(
            "secure environment returned a bundle for another request".to_owned(),
        ));
    }
    tracing::info!(%wallet_id, "wallet exported");
    Ok(Json(bundle))
}
