//! The one mapping from errors to docs/protocol.md's JSON at the HTTP edge.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kms_protocol::{ErrorBody, ErrorCode};
use kms_store::StoreError;

use crate::relay::RelayError;

/// A request's failure: a client error with its code and message, or an
/// internal one whose detail goes to the log only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{code:?}: {message}")]
    Client { code: ErrorCode, message: String },
    #[error("secure environment or store unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn client(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Client {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::client(ErrorCode::InvalidRequest, message)
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Client { code, .. } => *code,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::InternalError,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(_) | StoreError::Engine(_) => Self::Unavailable(e.to_string()),
            StoreError::SessionAlreadyCompleted => {
                Self::client(ErrorCode::SessionUsed, "import session already completed")
            }
            StoreError::SessionNotFound => {
                Self::client(ErrorCode::NotFound, "no such import session")
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> Self {
        match e {
            RelayError::Unavailable(m) => Self::Unavailable(m),
            RelayError::Refused { code, message, .. } if code.status() < 500 => {
                Self::Client { code, message }
            }
            RelayError::Refused {
                code: ErrorCode::Unavailable,
                message,
                ..
            } => Self::Unavailable(message),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let message = match &self {
            Self::Client { message, .. } => message.as_str(),
            Self::Unavailable(detail) => {
                tracing::warn!(%detail, "unavailable");
                "the secure environment or the store is unavailable; retry shortly"
            }
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error"
            }
        };
        error_response(code, message)
    }
}

/// docs/protocol.md's error JSON with the code's status (and `Retry-After: 1` for 503).
pub fn error_response(code: ErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, Json(ErrorBody::new(code, message))).into_response();
    if code == ErrorCode::Unavailable {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}
