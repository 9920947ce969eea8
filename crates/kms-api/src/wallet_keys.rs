//! The routes that use wallet keys (docs/protocol.md §§7–9): generate,
//! derive and sign. kms-api checks the request's shape and finds the
//! stored record; every decision about the key — the owner's
//! authorization, whether the wallet can do what is asked — is the secure
//! environment's, and its answer leaves only after its audit record is
//! stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use kms_protocol::api::{
    DeriveKey, DerivedKey, GenerateReceipt, GenerateWallet, SignRequest, SignResponse,
};
use kms_protocol::internal::{self, Derive, Derived, Generated, Sign, Signed, WalletRecord};
use kms_protocol::{ErrorCode, Id};

use crate::extract::{JsonBody, PathId};
use crate::relay::relay;
use crate::{ApiError, AppState};

/// The derive and sign routes (generate shares `/v1/wallets` with the
/// listing, in [`crate::routes`]).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/wallets/{wallet_id}/derive", post(derive))
        .route("/v1/wallets/{wallet_id}/sign", post(sign))
}

async fn stored_wallet(s: &AppState, wallet_id: &Id) -> Result<WalletRecord, ApiError> {
    s.store
        .wallet(wallet_id)
        .await?
        .ok_or_else(|| ApiError::client(ErrorCode::NotFound, "no such wallet"))
}

#[utoipa::path(post, path = "/v1/wallets", tag = "wallets",
    request_body = GenerateWallet,
    responses(
        (status = 201, description = "a wallet made inside the secure environment, with its signed receipt (docs/protocol.md §7)", body = GenerateReceipt),
        (status = 400, description = "malformed request, raw or unknown key_type, or an owner key off the curve", body = kms_protocol::ErrorBody),
        (status = 413, description = "body over 64 KiB", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
pub(crate) async fn generate(
    State(s): State<AppState>,
    JsonBody(req): JsonBody<GenerateWallet>,
) -> Result<(StatusCode, Json<GenerateReceipt>), ApiError> {
    let generated: Generated = relay(&s, internal::PATH_GENERATE, &req).await?;
    let receipt = generated.receipt;
    let record = &generated.record;
    if record.wallet_id != receipt.wallet_id
        || record.key_type != req.key_type
        || record.owner_public_key != req.owner_public_key
    {
        return Err(ApiError::Internal(
            "secure environment returned a wallet for another request".to_owned(),
        ));
    }
    // Acknowledged only once the wallet and its record are durable, as an
    // import is.
    s.store.insert_wallet(record, &generated.audit).await?;
    tracing::info!(wallet_id = %receipt.wallet_id, key_type = %receipt.key_type, "wallet generated");
    Ok((StatusCode::CREATED, Json(receipt)))
}

#[utoipa::path(post, path = "/v1/wallets/{wallet_id}/derive", tag = "wallets",
    params(("wallet_id" = kms_protocol::Id, Path, description = "wallet id, hyphenated UUID")),
    request_body = DeriveKey,
    responses(
        (status = 200, description = "the public key and chain code at the path, signed (docs/protocol.md §8)", body = DerivedKey),
        (status = 400, description = "malformed request, a bad path or an unknown curve", body = kms_protocol::ErrorBody),
        (status = 404, description = "unknown wallet", body = kms_protocol::ErrorBody),
        (status = 413, description = "body over 64 KiB", body = kms_protocol::ErrorBody),
        (status = 422, description = "unsupported_operation: a single-key wallet, a curve the wallet lacks, a normal step on ed25519", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
pub(crate) async fn derive(
    State(s): State<AppState>,
    PathId(wallet_id): PathId,
    JsonBody(req): JsonBody<DeriveKey>,
) -> Result<Json<DerivedKey>, ApiError> {
    let record = stored_wallet(&s, &wallet_id).await?;
    let derive = Derive {
        record,
        curve: req.curve,
        path: req.path,
    };
    let derived: Derived = relay(&s, internal::PATH_DERIVE, &derive).await?;
    let key = derived.key;
    if key.wallet_id != wallet_id || key.curve != req.curve || key.path != req.path {
        return Err(ApiError::Internal(
            "secure environment returned a key for another request".to_owned(),
        ));
    }
    s.store.insert_audit(&derived.audit).await?;
    Ok(Json(key))
}

#[utoipa::path(post, path = "/v1/wallets/{wallet_id}/sign", tag = "wallets",
    params(("wallet_id" = kms_protocol::Id, Path, description = "wallet id, hyphenated UUID")),
    request_body = SignRequest,
    responses(
        (status = 200, description = "the signature by the wallet's key (docs/protocol.md §9)", body = SignResponse),
        (status = 400, description = "malformed request, an unknown algorithm, a payload or merkle_root of the wrong length", body = kms_protocol::ErrorBody),
        (status = 401, description = "owner-bound wallet without authorization", body = kms_protocol::ErrorBody),
        (status = 403, description = "authorization does not verify or is out of its window", body = kms_protocol::ErrorBody),
        (status = 404, description = "unknown wallet", body = kms_protocol::ErrorBody),
        (status = 413, description = "body over 64 KiB", body = kms_protocol::ErrorBody),
        (status = 422, description = "unsupported_operation: a raw wallet, an algorithm of another curve, a path where none may be or none where one must be", body = kms_protocol::ErrorBody),
        (status = 503, description = "the secure environment or the store is unreachable (Retry-After: 1)", body = kms_protocol::ErrorBody),
    ))]
pub(crate) async fn sign(
    State(s): State<AppState>,
    PathId(wallet_id): PathId,
    JsonBody(req): JsonBody<SignRequest>,
) -> Result<Json<SignResponse>, ApiError> {
    let record = stored_wallet(&s, &wallet_id).await?;
    let (algorithm, path) = (req.algorithm, req.path);
    let sign = Sign {
        record,
        request: req,
    };
    let signed: Signed = relay(&s, internal::PATH_SIGN, &sign).await?;
    let response = signed.response;
    if response.wallet_id != wallet_id || response.algorithm != algorithm || response.path != path {
        return Err(ApiError::Internal(
            "secure environment returned a signature for another request".to_owned(),
        ));
    }
    // Fail closed: the signature leaves only once its record is stored.
    s.store.insert_audit(&signed.audit).await?;
    Ok(Json(response))
}
