//! The OpenAPI 3.1 document of the public API, generated from the handlers
//! and the wire types (utoipa), served at `GET /v1/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "KMS public API",
        version = "1",
        description = "docs/protocol.md, client protocol version 1. Every error is {\"error\": {\"code\", \"message\"}}."
    ),
    paths(
        crate::routes::health,
        crate::routes::attestation,
        crate::routes::start_import_session,
        crate::routes::complete_import,
        crate::routes::list_wallets,
        crate::routes::wallet,
        crate::routes::export_wallet,
        crate::wallet_keys::generate,
        crate::wallet_keys::derive,
        crate::wallet_keys::sign,
        crate::routes::generate_data_key,
        crate::routes::decrypt_data_key,
        crate::routes::audit,
        openapi_json,
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "this document", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(document())
}
