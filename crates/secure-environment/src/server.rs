//! The internal HTTP API kms-api calls (`kms_protocol::internal`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kms_protocol::audit::AuditPage;
use kms_protocol::data_key::{DecryptDataKey, GenerateDataKey};
use kms_protocol::error::ErrorDetail;
use kms_protocol::internal::{self, Export, Import, Refusal, RetireKey, Rewrap, StartSession};
use kms_protocol::{ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::runtime::Refused;
use crate::{EnvError, SecureRuntime};

/// Largest internal request: a public request (64 KiB) re-encoded with the
/// stored record it refers to.
const MAX_INTERNAL_BODY: usize = 1024 * 1024;

/// The secure environment's router.
pub fn app(runtime: SecureRuntime) -> Router {
    Router::new()
        .route(internal::PATH_HEALTH, get(health))
        .route(internal::PATH_IDENTITY, get(identity))
        .route(internal::PATH_SESSIONS, post(start_session))
        .route(internal::PATH_IMPORT, post(import))
        .route(internal::PATH_EXPORT, post(export))
        .route(internal::PATH_AUDIT, get(audit))
        .route(internal::PATH_DATA_KEYS, post(generate_data_key))
        .route(internal::PATH_DATA_KEYS_DECRYPT, post(decrypt_data_key))
        .route(internal::PATH_KEYS, get(keys_status))
        .route(internal::PATH_KEYS_ROTATE, post(rotate))
        .route(internal::PATH_KEYS_RETIRE, post(retire))
        .route(internal::PATH_REWRAP, post(rewrap))
        .fallback(|| async { error(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_INTERNAL_BODY))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(runtime)
}

/// Logs each call under kms-api's request id (`x-request-id`), so one
/// client request can be followed through both processes' logs.
async fn request_span(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let span = tracing::info_span!("call", request_id, path = %req.uri().path());
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "done"));
    resp
}

fn error(code: ErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(ErrorBody::new(code, message))).into_response()
}

impl IntoResponse for EnvError {
    fn into_response(self) -> Response {
        match self.code() {
            ErrorCode::InternalError => tracing::error!(error = %self, "operation failed"),
            code => tracing::info!(code = code.as_str(), reason = %self, "request refused"),
        }
        error(self.code(), self.public_message())
    }
}

/// A request body that did not parse: its code and message.
struct Rejected(ErrorCode, String);

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Rejected> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Rejected(
                ErrorCode::PayloadTooLarge,
                "request body too large".to_owned(),
            )
        } else {
            Rejected(
                ErrorCode::InvalidRequest,
                "could not read request body".to_owned(),
            )
        }
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| Rejected(ErrorCode::InvalidRequest, format!("invalid request: {e}")))
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let code = self.error.code();
        match code {
            ErrorCode::InternalError | ErrorCode::Unavailable => {
                tracing::error!(error = %self.error, "operation failed")
            }
            _ => tracing::info!(code = code.as_str(), reason = %self.error, "request refused"),
        }
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = Refusal {
            error: ErrorDetail {
                code,
                message: self.error.public_message().to_owned(),
            },
            audit: self.audit.map(|a| *a),
        };
        (status, Json(body)).into_response()
    }
}

fn reply<T: Serialize>(status: StatusCode, r: Result<T, Refused>) -> Response {
    match r {
        Ok(v) => (status, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /internal/v1/audit?after=SEQ&limit=N`: kms-api copies records it
/// missed from here.
async fn audit(
    State(rt): State<SecureRuntime>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let after = q
        .get("after")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let limit = q
        .get("limit")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1000)
        .clamp(1, 1000);
    match rt.trusted_env_exec(|env| env.audit_records(after, limit)) {
        Ok(records) => {
            let next = (records.len() == limit)
                .then(|| records.last().map(|r| r.seq))
                .flatten();
            Json(AuditPage { records, next }).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn health() -> Response {
    (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
}

async fn identity(State(rt): State<SecureRuntime>) -> Response {
    Json(rt.trusted_env_exec(|env| env.identity())).into_response()
}

async fn start_session(
    State(rt): State<SecureRuntime>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: StartSession = match parse(body) {
        Ok(r) => r,
        Err(rejected) => return rejected.into_response(),
    };
    let r = match rt
        .trusted_env_exec_async(|env| env.start_session(req.client_nonce.as_ref()))
        .await
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Ok(s) = &r {
        tracing::info!(session_id = %s.envelope.session_id, expires_at = s.envelope.expires_at, "import session started");
    }
    reply(StatusCode::CREATED, r)
}

async fn import(State(rt): State<SecureRuntime>, body: Result<Bytes, BytesRejection>) -> Response {
    let req: Import = match parse(body) {
        Ok(r) => r,
        Err(rejected) => return rejected.into_response(),
    };
    let r = match rt.trusted_env_exec_async(|env| env.import(&req)).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Ok(i) = &r {
        tracing::info!(session_id = %req.session_id, wallet_id = %i.receipt.wallet_id, key_type = %i.receipt.key_type, "import completed");
    }
    reply(StatusCode::CREATED, r)
}

async fn export(State(rt): State<SecureRuntime>, body: Result<Bytes, BytesRejection>) -> Response {
    let req: Export = match parse(body) {
        Ok(r) => r,
        Err(rejected) => return rejected.into_response(),
    };
    let r = match rt.trusted_env_exec_async(|env| env.export(&req)).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if r.is_ok() {
        tracing::info!(
            wallet_id = %req.record.wallet_id,
            recipient = %kms_crypto::hex(&kms_crypto::sha256(req.recipient_public_key.as_bytes())[..8]),
            "export sealed"
        );
    }
    reply(StatusCode::OK, r)
}

async fn generate_data_key(
    State(rt): State<SecureRuntime>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: GenerateDataKey = match parse(body) {
        Ok(r) => r,
        Err(rejected) => return rejected.into_response(),
    };
    let r = match rt
        .trusted_env_exec_async(|env| env.generate_data_key(&req))
        .await
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Ok(d) = &r {
        tracing::info!(data_key_id = %d.data_key.data_key_id, version = d.data_key.master_key_version, "data key generated");
    }
    reply(StatusCode::OK, r)
}

async fn decrypt_data_key(
    State(rt): State<SecureRuntime>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req: DecryptDataKey = match parse(body) {
        Ok(r) => r,
        Err(rejected) => return rejected.into_response(),
    };
    let r = match rt
        .trusted_env_exec_async(|env| env.decrypt_data_key(&req))
        .await
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if let Ok(d) = &r {
        tracing::info!(data_key_id = %d.data_key.data_key_id, version = d.data_key.master_key_version, "data key decrypted");
    }
    reply(StatusCode::OK, r)
}

async fn keys_status(State(rt): State<SecureRuntime>) -> Response {
    Json(rt.trusted_env_exec(|env| env.keys_status())).into_response()
}

/// Key-set changes call the root-key provider (an HSM, a network service)
/// and re-wraps open many records: they run on a blocking thread, never on
/// the executor.
async fn blocking<T: Serialize + Send + 'static>(
    rt: SecureRuntime,
    op: impl FnOnce(&crate::TrustedEnv<'_>) -> Result<T, EnvError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(move || rt.trusted_env_exec(op)).await {
        Ok(Ok(done)) => Json(done).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "blocking task failed");
            error(ErrorCode::InternalError, "internal error")
        }
    }
}

async fn rotate(State(rt): State<SecureRuntime>) -> Response {
    blocking(rt, |env| env.rotate_master_key()).await
}

async fn retire(State(rt): State<SecureRuntime>, body: Result<Bytes, BytesRejection>) -> Response {
    let req: RetireKey = match parse(body) {
        Ok(r) => r,
        Err(rejected) => return rejected.into_response(),
    };
    blocking(rt, move |env| env.retire_master_key(req.version)).await
}

async fn rewrap(State(rt): State<SecureRuntime>, body: Result<Bytes, BytesRejection>) -> Response {
    let req: Rewrap = match parse(body) {
        Ok(r) => r,
        Err(rejected) => return rejected.into_response(),
    };
    blocking(rt, move |env| env.rewrap(&req)).await
}
