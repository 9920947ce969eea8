//! The internal listener (`--internal-listen`): what the secure
//! environments call back, never the public. Today that is the key
//! provider for BitGo's wallet manager (docs/bitgo.md) keeping its sealed
//! keys and audit copies in this process's store: kms-api stores and
//! finds rows it cannot open, as it does for wallets.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use kms_protocol::audit::AuditRecord;
use kms_protocol::provider::{
    InsertProviderKey, LookupProviderKey, ProviderKeyRow, MAX_PROVIDER_BODY_BYTES,
    PATH_INTERNAL_AUDIT, PATH_INTERNAL_KEYS, PATH_INTERNAL_KEYS_LOOKUP,
};
use kms_protocol::ErrorCode;
use kms_store::StoreError;
use serde::de::DeserializeOwned;

use crate::{ApiError, AppState};

/// A sealed row is larger than the key it holds (base64 of it, in JSON,
/// with its audit record).
const MAX_INTERNAL_BODY: usize = 2 * MAX_PROVIDER_BODY_BYTES;

/// The internal listener's router.
pub fn internal_app(state: AppState) -> Router {
    Router::new()
        .route(PATH_INTERNAL_KEYS, post(insert_key))
        .route(PATH_INTERNAL_KEYS_LOOKUP, post(lookup_key))
        .route(PATH_INTERNAL_AUDIT, post(insert_audit))
        .fallback(|| async { ApiError::client(ErrorCode::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(MAX_INTERNAL_BODY))
        .with_state(state)
}

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::client(ErrorCode::InvalidRequest, e.to_string()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::client(ErrorCode::InvalidRequest, format!("invalid request: {e}")))
}

/// 201, or 409 when `(pub, source)` is taken (then nothing is stored).
async fn insert_key(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: InsertProviderKey = parse(body)?;
    match s.store.insert_provider_key(&req.row, &req.audit).await {
        Ok(()) => Ok(StatusCode::CREATED.into_response()),
        // Not one of the public API's codes: only the secure environment
        // reads this answer, by its status.
        Err(StoreError::ProviderKeyExists) => Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({"error": {
                "code": "conflict",
                "message": "a key with this pub and source is already stored",
            }})),
        )
            .into_response()),
        Err(e) => Err(e.into()),
    }
}

async fn lookup_key(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ProviderKeyRow>, ApiError> {
    let req: LookupProviderKey = parse(body)?;
    s.store
        .provider_key(&req.public, req.source)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::client(ErrorCode::NotFound, "no key with this pub and source"))
}

async fn insert_audit(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let record: AuditRecord = parse(body)?;
    s.store.insert_audit(&record).await?;
    Ok(StatusCode::NO_CONTENT)
}
