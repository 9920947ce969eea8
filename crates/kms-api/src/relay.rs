//! The relay to the secure environment: plain HTTP over a local address
//! through a pooled hyper-util client (no TLS stack in this process), with
//! DESIGN.md's 10 s budget per call.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kms_protocol::audit::AuditRecord;
use kms_protocol::internal::Refusal;
use kms_protocol::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

tokio::task_local! {
    /// The id of the public request being served, passed on to the secure
    /// environment as `x-request-id` so both logs can be joined.
    pub static REQUEST_ID: u64;
}

/// Budget for one call to the secure environment (DESIGN.md, "timeouts").
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Could not connect, or no answer in time.
    #[error("secure environment unreachable: {0}")]
    Unavailable(String),
    /// The secure environment answered with an error, with the audit record
    /// of the refusal when it wrote one.
    #[error("secure environment refused: {code:?}: {message}")]
    Refused {
        code: ErrorCode,
        message: String,
        audit: Option<Box<AuditRecord>>,
    },
    /// An answer that is not what the internal API promises.
    #[error("bad answer from the secure environment: {0}")]
    BadResponse(String),
}

/// A pooled client for the secure environment's internal API.
#[derive(Clone)]
pub struct SecureEnvClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for SecureEnvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureEnvClient")
            .field("base", &self.base)
            .finish()
    }
}

impl SecureEnvClient {
    /// A client for `base_url` (`http://HOST:PORT`; https is refused: this
    /// hop is local and this process has no TLS).
    pub fn new(base_url: &str) -> Result<Self, String> {
        let base = base_url.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("invalid secure environment URL {base_url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "secure environment URL must be http://HOST:PORT (a local link without TLS), got {base_url:?}"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            // Keep every connection a burst opened: with fewer idle slots
            // than concurrent calls, each call past them paid a fresh TCP
            // connect (and the secure environment a new connection task).
            .pool_max_idle_per_host(1024)
            .build(connector);
        Ok(Self { base, client })
    }

    pub async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, RelayError> {
        self.call(Method::GET, path, Bytes::new()).await
    }

    pub async fn post<Q: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<R, RelayError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| RelayError::BadResponse(format!("encoding request: {e}")))?;
        self.call(Method::POST, path, Bytes::from(body)).await
    }

    async fn call<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<R, RelayError> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", REQUEST_ID.try_with(|id| *id).unwrap_or(0))
            .body(Full::new(body))
            .map_err(|e| RelayError::BadResponse(format!("building request: {e}")))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| RelayError::Unavailable(e.to_string()))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| RelayError::Unavailable(format!("reading answer: {e}")))?
                .to_bytes();
            Ok::<_, RelayError>((status, body))
        };
        let (status, body) = tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| RelayError::Unavailable("no answer within 10 s".to_owned()))??;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| RelayError::BadResponse(e.to_string()));
        }
        match serde_json::from_slice::<Refusal>(&body) {
            Ok(e) => Err(RelayError::Refused {
                code: e.error.code,
                message: e.error.message,
                audit: e.audit.map(Box::new),
            }),
            Err(_) => Err(RelayError::BadResponse(format!(
                "status {status} without an error body"
            ))),
        }
    }
}
