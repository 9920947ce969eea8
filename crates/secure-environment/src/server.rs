//! The internal HTTP API kms-api calls (`kms_protocol::internal`).
//!
//! Every operation takes one path through here ([`handle`]): its body is
//! parsed into the request type, the request runs inside the secure
//! runtime ([`Operation::run`]), and the reply (or the refusal, with the
//! audit record of it) is answered once its audit records are durable.
//! What differs between operations is only what [`Operation`] says: the
//! status of a success, whether it must leave the executor, and what it
//! logs.

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
use kms_protocol::internal::{
    self, DataKeyIssued, Derive, Derived, Export, Exported, Generate, Generated, Import, Imported,
    KeysChanged, Refusal, RetireKey, Rewrap, Rewrapped, SessionStarted, Sign, Signed, StartSession,
};
use kms_protocol::{ErrorBody, ErrorCode};
use secure_runtime::runtime::Refused;
use secure_runtime::{EnvError, SecureRuntime, TrustedEnv};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest internal request: a public request (64 KiB) re-encoded with the
/// stored record it refers to.
const MAX_INTERNAL_BODY: usize = 1024 * 1024;

/// The secure environment's router.
pub fn app(runtime: SecureRuntime) -> Router {
    Router::new()
        .route(internal::PATH_HEALTH, get(health))
        .route(internal::PATH_IDENTITY, get(identity))
        .route(internal::PATH_AUDIT, get(audit))
        .route(internal::PATH_KEYS, get(keys_status))
        .route(internal::PATH_SESSIONS, post(handle::<StartSession>))
        .route(internal::PATH_IMPORT, post(handle::<Import>))
        .route(internal::PATH_EXPORT, post(handle::<Export>))
        .route(internal::PATH_GENERATE, post(handle::<Generate>))
        .route(internal::PATH_DERIVE, post(handle::<Derive>))
        .route(internal::PATH_SIGN, post(handle::<Sign>))
        .route(internal::PATH_DATA_KEYS, post(handle::<GenerateDataKey>))
        .route(
            internal::PATH_DATA_KEYS_DECRYPT,
            post(handle::<DecryptDataKey>),
        )
        .route(internal::PATH_KEYS_ROTATE, post(handle::<Rotate>))
        .route(internal::PATH_KEYS_RETIRE, post(handle::<RetireKey>))
        .route(internal::PATH_REWRAP, post(handle::<Rewrap>))
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

/// One operation of the internal API.
trait Operation: Sized + Send + 'static {
    type Reply: Serialize + Send + 'static;
    /// The status of a success: 201 for what creates a resource.
    const STATUS: StatusCode = StatusCode::OK;
    /// Key-set changes call the root-key provider (an HSM, a network
    /// service) and re-wraps open many records: they run on a blocking
    /// thread, never on the executor, each audit record durable as it is
    /// written.
    const BLOCKING: bool = false;

    /// The request from its body (JSON, the internal API's types).
    fn parse(body: &[u8]) -> Result<Self, Rejected>;
    /// The operation itself, inside the trusted environment.
    fn run(&self, env: &TrustedEnv<'_>) -> Result<Self::Reply, Refused>;
    /// The log line of a success (ids and outcomes, never a secret).
    fn log(&self, _reply: &Self::Reply) {}
}

/// Parses a JSON body into `T`.
fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Rejected> {
    serde_json::from_slice(body)
        .map_err(|e| Rejected(ErrorCode::InvalidRequest, format!("invalid request: {e}")))
}

/// A refusal of an operation that writes no audit record of its refusals.
fn unrecorded(error: EnvError) -> Refused {
    Refused { error, audit: None }
}

async fn handle<Op: Operation>(
    State(rt): State<SecureRuntime>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let req = match read(body).and_then(|b| Op::parse(&b)) {
        Ok(r) => r,
        Err(rejected) => return rejected.into_response(),
    };
    let result = if Op::BLOCKING {
        tokio::task::spawn_blocking(move || {
            let r = rt.trusted_env_exec(|env| req.run(env));
            (req, r)
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "blocking task failed");
        })
    } else {
        let r = rt.trusted_env_exec_async(|env| req.run(env)).await;
        Ok((req, r.unwrap_or_else(|e| Err(unrecorded(e)))))
    };
    match result {
        Ok((req, Ok(reply))) => {
            req.log(&reply);
            (Op::STATUS, Json(reply)).into_response()
        }
        Ok((_, Err(refused))) => refusal(refused),
        Err(()) => error(ErrorCode::InternalError, "internal error"),
    }
}

impl Operation for StartSession {
    type Reply = SessionStarted;
    const STATUS: StatusCode = StatusCode::CREATED;
    fn parse(body: &[u8]) -> Result<Self, Rejected> {
        json(body)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<SessionStarted, Refused> {
        env.start_session(self.client_nonce.as_ref())
    }
    fn log(&self, s: &SessionStarted) {
        tracing::info!(session_id = %s.envelope.session_id, expires_at = s.envelope.expires_at, "import session started");
    }
}

impl Operation for Import {
    type Reply = Imported;
    const STATUS: StatusCode = StatusCode::CREATED;
    fn parse(body: &[u8]) -> Result<Self, Rejected> {
        json(body)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<Imported, Refused> {
        env.import(self)
    }
    fn log(&self, i: &Imported) {
        tracing::info!(session_id = %self.session_id, wallet_id = %i.receipt.wallet_id, key_type = %i.receipt.key_type, "import completed");
    }
}

impl Operation for Export {
    type Reply = Exported;
    fn parse(body: &[u8]) -> Result<Self, Rejected> {
        json(body)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<Exported, Refused> {
        env.export(self)
    }
    fn log(&self, _: &Exported) {
        tracing::info!(
            wallet_id = %self.record.wallet_id,
            recipient = %kms_crypto::hex(&kms_crypto::sha256(self.recipient_public_key.as_bytes())[..8]),
            "export sealed"
        );
    }
}

impl Operation for Generate {
    type Reply = Generated;
    const STATUS: StatusCode = StatusCode::CREATED;
    fn parse(body: &[u8]) -> Result<Self, Rejected> {
        json(body)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<Generated, Refused> {
        env.generate(self)
    }
    fn log(&self, g: &Generated) {
        tracing::info!(wallet_id = %g.receipt.wallet_id, key_type = %g.receipt.key_type, "wallet generated");
    }
}

impl Operation for Derive {
    type Reply = Derived;
    fn parse(body: &[u8]) -> Result<Self, Rejected> {
        json(body)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<Derived, Refused> {
        env.derive(self)
    }
    fn log(&self, _: &Derived) {
        tracing::debug!(wallet_id = %self.record.wallet_id, curve = %self.curve, path = %self.path, "key derived");
    }
}

impl Operation for Sign {
    type Reply = Signed;
    fn parse(body: &[u8]) -> Result<Self, Rejected> {
        json(body)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<Signed, Refused> {
        env.sign(self)
    }
    fn log(&self, _: &Signed) {
        tracing::debug!(wallet_id = %self.record.wallet_id, algorithm = %self.request.algorithm.as_str(), "signed");
    }
}

impl Operation for GenerateDataKey {
    type Reply = DataKeyIssued;
    fn parse(body: &[u8]) -> Result<Self, Rejected> {
        json(body)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<DataKeyIssued, Refused> {
        env.generate_data_key(self)
    }
    fn log(&self, d: &DataKeyIssued) {
        tracing::info!(data_key_id = %d.data_key.data_key_id, version = d.data_key.master_key_version, "data key generated");
    }
}

impl Operation for DecryptDataKey {
    type Reply = DataKeyIssued;
    fn parse(body: &[u8]) -> Result<Self, Rejected> {
        json(body)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<DataKeyIssued, Refused> {
        env.decrypt_data_key(self)
    }
    fn log(&self, d: &DataKeyIssued) {
        tracing::info!(data_key_id = %d.data_key.data_key_id, version = d.data_key.master_key_version, "data key decrypted");
    }
}

/// `POST /internal/v1/keys/rotate`: no body (whatever is sent is ignored).
struct Rotate;

impl Operation for Rotate {
    type Reply = KeysChanged;
    const BLOCKING: bool = true;
    fn parse(_: &[u8]) -> Result<Self, Rejected> {
        Ok(Rotate)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<KeysChanged, Refused> {
        env.rotate_master_key().map_err(unrecorded)
    }
}

impl Operation for RetireKey {
    type Reply = KeysChanged;
    const BLOCKING: bool = true;
    fn parse(body: &[u8]) -> Result<Self, Rejected> {
        json(body)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<KeysChanged, Refused> {
        env.retire_master_key(self.version).map_err(unrecorded)
    }
}

impl Operation for Rewrap {
    type Reply = Rewrapped;
    const BLOCKING: bool = true;
    fn parse(body: &[u8]) -> Result<Self, Rejected> {
        json(body)
    }
    fn run(&self, env: &TrustedEnv<'_>) -> Result<Rewrapped, Refused> {
        env.rewrap(self).map_err(unrecorded)
    }
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

/// A request body that did not parse: its code and message.
struct Rejected(ErrorCode, String);

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        error(self.0, &self.1)
    }
}

fn read(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Rejected> {
    body.map_err(|r| {
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
    })
}

/// A refusal in the internal error format: docs/protocol.md's error object and
/// the audit record of the refusal, which kms-api stores before it answers.
fn refusal(r: Refused) -> Response {
    let code = r.error.code();
    match code {
        ErrorCode::InternalError | ErrorCode::Unavailable => {
            tracing::error!(error = %r.error, "operation failed")
        }
        _ => tracing::info!(code = code.as_str(), reason = %r.error, "request refused"),
    }
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = Refusal {
        error: ErrorDetail {
            code,
            message: r.error.public_message().to_owned(),
        },
        audit: r.audit.map(|a| *a),
    };
    (status, Json(body)).into_response()
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
        Err(e) => refusal(unrecorded(e)),
    }
}

async fn health() -> Response {
    (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
}

async fn identity(State(rt): State<SecureRuntime>) -> Response {
    Json(rt.trusted_env_exec(|env| env.identity())).into_response()
}

async fn keys_status(State(rt): State<SecureRuntime>) -> Response {
    Json(rt.trusted_env_exec(|env| env.keys_status())).into_response()
}
