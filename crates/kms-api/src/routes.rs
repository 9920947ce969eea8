//! The public routes of docs/protocol.md §§0–5 and the middleware around them.

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
use kms_protocol::audit::AuditPage;
use kms_protocol::data_key::{DataKey, DecryptDataKey, GenerateDataKey};
use kms_protocol::internal::{
    self, DataKeyIssued, Export, Exported, Identity, Import, Imported, SessionStarted, StartSession,
};
use kms_protocol::{ErrorCode, MAX_BODY_BYTES};
use kms_store::SessionRecord;

use crate::error::error_response;
use crate::extract::{AuditQuery, JsonBody, ListQuery, PathId};
use crate::relay::relay;
use crate::{ApiError, AppState};

/// Budget for a whole client request (docs/design.md, "timeouts").
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The public routes of §§0–6 and the middleware around every route; the
/// crate root adds the wallet-key routes and the OpenAPI document
/// ([`crate::app`]), so this module depends on neither.
pub(crate) fn with_middleware(routes: Router<AppState>, state: AppState) -> Router {
    routes
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

/// The routes of §§0–6.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/attestation", get(attestation))
        .route("/v1/import-sessions", post(start_import_session))
        .route(
            "/v1/import-sessions/{session_id}/complete",
            post(complete_import),
        )
        .route(
            "/v1/wallets",
            get(list_wallets).post(crate::wallet_keys::generate),
        )
        .route("/v1/wallets/{wallet_id}", get(wallet))
        .route("/v1/wallets/{wallet_id}/export", post(export_wallet))
        .route("/v1/data-keys", post(generate_data_key))
        .route("/v1/data-keys/decrypt", post(decrypt_data_key))
        .route("/v1/audit", get(audit))
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

#[utoipa::path(get, path = "/v1/health", tag = "health",
    responses(
        (status = 200, description = "kms-api reaches the secure environment and its store", body = Health),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
async fn health(State(s): State<AppState>) -> Result<Json<Health>, ApiError> {
    s.store.ping().await?;
    s.env
        .get::<serde_json::Value>(internal::PATH_HEALTH)
        .await?;
    Ok(Json(Health {
        status: "ok".to_owned(),
    }))
}

#[utoipa::path(get, path = "/v1/attestation", tag = "identity",
    responses(
        (status = 200, description = "identity key and measurement (docs/protocol.md §1)", body = Attestation),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
async fn attestation(State(s): State<AppState>) -> Result<Json<Attestation>, ApiError> {
    let id: Identity = s.env.get(internal::PATH_IDENTITY).await?;
    Ok(Json(Attestation {
        provider: id.provider,
        identity_public_key: id.identity_public_key,
        measurement: id.measurement,
        document: None,
    }))
}

#[utoipa::path(post, path = "/v1/import-sessions", tag = "import",
    request_body(content = Option<StartImportSession>, description = "empty, {}, or a client nonce"),
    responses(
        (status = 201, description = "a new import session (docs/protocol.md §2)", body = ImportEnvelope),
        (status = 400, description = "malformed request", body = kms_protocol::ErrorBody),
        (status = 413, description = "body over 64 KiB", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
async fn start_import_session(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<StartImportSession>,
) -> Result<(StatusCode, Json<ImportEnvelope>), ApiError> {
    let start = StartSession {
        client_nonce: req.client_nonce,
    };
    let started: SessionStarted = relay(&s, internal::PATH_SESSIONS, &start).await?;
    let e = started.envelope;
    let session = SessionRecord {
        session_id: e.session_id,
        sealed_state: started.sealed_state.0,
        expires_at: e.expires_at,
        created_at: s.now(),
        completed_at: None,
    };
    s.store.insert_session(&session, &started.audit).await?;
    tracing::info!(session_id = %e.session_id, expires_at = e.expires_at, "import session started");
    Ok((StatusCode::CREATED, Json(e)))
}

#[utoipa::path(post, path = "/v1/import-sessions/{session_id}/complete", tag = "import",
    params(("session_id" = kms_protocol::Id, Path, description = "session id, hyphenated UUID")),
    request_body = CompleteImport,
    responses(
        (status = 201, description = "the wallet and its signed receipt (docs/protocol.md §3)", body = ImportReceipt),
        (status = 400, description = "malformed request or id", body = kms_protocol::ErrorBody),
        (status = 404, description = "unknown session", body = kms_protocol::ErrorBody),
        (status = 409, description = "session already completed", body = kms_protocol::ErrorBody),
        (status = 410, description = "session expired", body = kms_protocol::ErrorBody),
        (status = 413, description = "body over 64 KiB", body = kms_protocol::ErrorBody),
        (status = 422, description = "decryption_failed or invalid_key_material", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
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
    let import = Import {
        session_id,
        expires_at: session.expires_at,
        sealed_state: kms_protocol::Bytes(session.sealed_state),
        encrypted_key: req.encrypted_key,
    };
    let imported: Imported = relay(&s, internal::PATH_IMPORT, &import).await?;
    if imported.record.wallet_id != imported.receipt.wallet_id {
        return Err(ApiError::Internal(
            "secure environment returned mismatched wallet ids".to_owned(),
        ));
    }
    let stored = s
        .store
        .complete_session(&session_id, s.now(), &imported.record, &imported.audit)
        .await;
    if let Err(kms_store::StoreError::SessionAlreadyCompleted) = &stored {
        // Another kms-api instance completed it first; the secure
        // environment's record of this import still belongs in the log.
        s.store.insert_audit(&imported.audit).await?;
    }
    stored?;
    tracing::info!(%session_id, wallet_id = %imported.receipt.wallet_id, key_type = %imported.receipt.key_type, "wallet imported");
    Ok((StatusCode::CREATED, Json(imported.receipt)))
}

#[utoipa::path(get, path = "/v1/wallets/{wallet_id}", tag = "wallets",
    params(("wallet_id" = kms_protocol::Id, Path, description = "wallet id, hyphenated UUID")),
    responses(
        (status = 200, description = "wallet metadata (docs/protocol.md §5)", body = WalletMetadata),
        (status = 400, description = "malformed id", body = kms_protocol::ErrorBody),
        (status = 404, description = "unknown wallet", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/v1/wallets", tag = "wallets",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "page size, default 100"),
        ("after" = Option<kms_protocol::Id>, Query, description = "list ids greater than this one"),
    ),
    responses(
        (status = 200, description = "a page of wallets in ascending id order (docs/protocol.md §5)", body = WalletPage),
        (status = 400, description = "limit or after out of range", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
async fn list_wallets(
    State(s): State<AppState>,
    q: ListQuery,
) -> Result<Json<WalletPage>, ApiError> {
    let fetched = s.store.list_wallets(q.after.as_ref(), q.limit + 1).await?;
    let (wallets, next) = page(fetched, q.limit, |w| w.wallet_id);
    Ok(Json(WalletPage { wallets, next }))
}

#[utoipa::path(post, path = "/v1/wallets/{wallet_id}/export", tag = "wallets",
    params(("wallet_id" = kms_protocol::Id, Path, description = "wallet id, hyphenated UUID")),
    request_body = ExportWallet,
    responses(
        (status = 200, description = "the wallet sealed to the recipient, signed (docs/protocol.md §4)", body = ExportBundle),
        (status = 400, description = "malformed request, or a recipient key off the curve", body = kms_protocol::ErrorBody),
        (status = 401, description = "owner-bound wallet without authorization", body = kms_protocol::ErrorBody),
        (status = 403, description = "authorization does not verify or is out of its window", body = kms_protocol::ErrorBody),
        (status = 404, description = "unknown wallet", body = kms_protocol::ErrorBody),
        (status = 413, description = "body over 64 KiB", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
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
    let export = Export {
        record,
        recipient_public_key: req.recipient_public_key,
        authorization: req.authorization,
    };
    let exported: Exported = relay(&s, internal::PATH_EXPORT, &export).await?;
    let bundle = exported.bundle;
    if bundle.wallet_id != wallet_id || bundle.recipient_public_key != req.recipient_public_key {
        return Err(ApiError::Internal(
            "secure environment returned a bundle for another request".to_owned(),
        ));
    }
    // Fail closed: the ciphertext leaves only once its record is stored.
    s.store.insert_audit(&exported.audit).await?;
    tracing::info!(%wallet_id, "wallet exported");
    Ok(Json(bundle))
}

#[utoipa::path(post, path = "/v1/data-keys", tag = "data-keys",
    request_body = GenerateDataKey,
    responses(
        (status = 200, description = "a new AES-256 data key: wrapped (keep it) and sealed to the recipient, signed (docs/data-keys.md)", body = DataKey),
        (status = 400, description = "malformed request, a bad encryption context, or a recipient key off the curve", body = kms_protocol::ErrorBody),
        (status = 413, description = "body over 64 KiB", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
async fn generate_data_key(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<GenerateDataKey>,
) -> Result<Json<DataKey>, ApiError> {
    let issued: DataKeyIssued = relay(&s, internal::PATH_DATA_KEYS, &req).await?;
    data_key_reply(&s, issued, &req.recipient_public_key, None).await
}

#[utoipa::path(post, path = "/v1/data-keys/decrypt", tag = "data-keys",
    request_body = DecryptDataKey,
    responses(
        (status = 200, description = "the data key sealed to the recipient, signed (docs/data-keys.md)", body = DataKey),
        (status = 400, description = "malformed request, a wrapped key this service did not write, or a recipient key off the curve", body = kms_protocol::ErrorBody),
        (status = 413, description = "body over 64 KiB", body = kms_protocol::ErrorBody),
        (status = 422, description = "decryption_failed: another encryption context, a tampered key, or a retired master key version", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
async fn decrypt_data_key(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<DecryptDataKey>,
) -> Result<Json<DataKey>, ApiError> {
    let issued: DataKeyIssued = relay(&s, internal::PATH_DATA_KEYS_DECRYPT, &req).await?;
    data_key_reply(
        &s,
        issued,
        &req.recipient_public_key,
        Some(&req.wrapped_key),
    )
    .await
}

/// Checks the secure environment answered this request, stores the audit
/// record, then answers (fail closed).
async fn data_key_reply(
    s: &AppState,
    issued: DataKeyIssued,
    recipient: &kms_protocol::P256PublicKey,
    wrapped: Option<&kms_protocol::Bytes>,
) -> Result<Json<DataKey>, ApiError> {
    let dk = issued.data_key;
    if &dk.recipient_public_key != recipient || wrapped.is_some_and(|w| w != &dk.wrapped_key) {
        return Err(ApiError::Internal(
            "secure environment returned a data key for another request".to_owned(),
        ));
    }
    s.store.insert_audit(&issued.audit).await?;
    tracing::info!(data_key_id = %dk.data_key_id, version = dk.master_key_version, "data key sealed");
    Ok(Json(dk))
}

/// `GET /v1/audit?after=SEQ&limit=N`: the signed audit chain, in seq order.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(
        ("after" = Option<u64>, Query, description = "list records with a greater seq, default 0"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "page size, default 100"),
    ),
    responses(
        (status = 200, description = "signed, hash-chained audit records (docs/audit-log.md)", body = AuditPage),
        (status = 400, description = "after or limit out of range", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
async fn audit(State(s): State<AppState>, q: AuditQuery) -> Result<Json<AuditPage>, ApiError> {
    let fetched = s.store.audit_page(q.after, q.limit + 1).await?;
    let (records, next) = page(fetched, q.limit, |r| r.seq);
    Ok(Json(AuditPage { records, next }))
}

/// Cuts `limit + 1` fetched items to a page of `limit`; `next` is the last
/// key of the page when more follow (docs/protocol.md §5).
fn page<T, K>(mut items: Vec<T>, limit: u32, key: impl Fn(&T) -> K) -> (Vec<T>, Option<K>) {
    let limit = limit as usize;
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more { items.last().map(key) } else { None };
    (items, next)
}

/// Copies audit records kms-api missed (a crash between the secure
/// environment writing a record and kms-api storing it) from the secure
/// environment, from the first gap on. Returns how many were copied.
pub async fn sync_audit(
    s: &AppState,
    watermark: &std::sync::atomic::AtomicU64,
) -> Result<u64, ApiError> {
    let mut copied = 0;
    loop {
        let from = s
            .store
            .audit_contiguous_from(watermark.load(Ordering::Relaxed))
            .await?;
        watermark.store(from, Ordering::Relaxed);
        let page: AuditPage = s
            .env
            .get(&format!("{}?after={from}&limit=1000", internal::PATH_AUDIT))
            .await?;
        let fetched = page.records.len();
        for r in &page.records {
            s.store.insert_audit(r).await?;
        }
        copied += fetched as u64;
        if page.next.is_none() || fetched == 0 {
            return Ok(copied);
        }
    }
}
