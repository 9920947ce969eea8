//! The OpenAPI 3.1 document of the public API, generated from the handlers
//! and the wire types (utoipa), served at `GET /v1/openapi.json`.

use utoipa::OpenApi;

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "KMS public API",
        version = "1",
        description = "PROTOCOL.md, client protocol version 1. Every error is {\"error\": {\"code\", \"message\"}}."
    ),
    paths(
        crate::routes::health,
        crate::routes::attestation,
        crate::routes::start_import_session,
        crate::routes::complete_import,
        crate::routes::list_wallets,
        crate::routes::wallet,
        crate::routes::export_wallet,
        crate::routes::generate_data_key,
        crate::routes::decrypt_data_key,
        crate::routes::audit,
        crate::routes::openapi_json,
    )
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
