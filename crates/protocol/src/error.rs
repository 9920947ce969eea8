//! The error JSON of docs/protocol.md, "Errors": `{"error": {"code", "message"}}`.

use serde::{Deserialize, Serialize};

/// A stable error code with its HTTP status (docs/protocol.md's error table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    PayloadTooLarge,
    InvalidRequest,
    NotFound,
    MethodNotAllowed,
    AuthorizationRequired,
    AuthorizationFailed,
    SessionUsed,
    SessionExpired,
    DecryptionFailed,
    InvalidKeyMaterial,
    UnsupportedOperation,
    InternalError,
    Unavailable,
}

impl ErrorCode {
    pub const fn status(self) -> u16 {
        match self {
            Self::PayloadTooLarge => 413,
            Self::InvalidRequest => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::AuthorizationRequired => 401,
            Self::AuthorizationFailed => 403,
            Self::SessionUsed => 409,
            Self::SessionExpired => 410,
            Self::DecryptionFailed | Self::InvalidKeyMaterial | Self::UnsupportedOperation => 422,
            Self::InternalError => 500,
            Self::Unavailable => 503,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PayloadTooLarge => "payload_too_large",
            Self::InvalidRequest => "invalid_request",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::AuthorizationRequired => "authorization_required",
            Self::AuthorizationFailed => "authorization_failed",
            Self::SessionUsed => "session_used",
            Self::SessionExpired => "session_expired",
            Self::DecryptionFailed => "decryption_failed",
            Self::InvalidKeyMaterial => "invalid_key_material",
            Self::UnsupportedOperation => "unsupported_operation",
            Self::InternalError => "internal_error",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_protocol_md_says() {
        let body = ErrorBody::new(ErrorCode::SessionUsed, "used");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"code":"session_used","message":"used"}}"#
        );
        assert_eq!(ErrorCode::SessionUsed.as_str(), "session_used");
        assert_eq!(
            serde_json::to_value(ErrorCode::InvalidKeyMaterial).unwrap(),
            serde_json::json!(ErrorCode::InvalidKeyMaterial.as_str())
        );
    }
}
