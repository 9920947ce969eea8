//! The key provider's way to the store: kms-api's internal listener
//! (`kms-api --internal-listen`). Only sealed rows and audit records cross
//! it, and everything that comes back is checked before use: a row must
//! be the one asked for, and it opens only if its columns are the ones it
//! was sealed with.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kms_protocol::audit::AuditRecord;
use kms_protocol::provider::{
    InsertProviderKey, KeySource, LookupProviderKey, ProviderKeyRow, PATH_INTERNAL_AUDIT,
    PATH_INTERNAL_KEYS, PATH_INTERNAL_KEYS_LOOKUP,
};

/// Budget for one call to kms-api.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Why a call to the store did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreCallError {
    /// A key under this `(pub, source)` is already stored.
    #[error("a key with this pub and source is already stored")]
    Exists,
    /// kms-api did not answer, or answered something else than it should.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

/// A pooled client for kms-api's internal listener.
#[derive(Clone, Debug)]
pub struct StoreClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl StoreClient {
    /// A client for `http://HOST:PORT` (the internal link carries no
    /// secret: sealed rows and signed audit records).
    pub fn new(base_url: &str) -> Result<Self, String> {
        let base = base_url.trim_end_matches('/').to_owned();
        let uri: http::Uri = base
            .parse()
            .map_err(|e| format!("invalid --kms-api-url {base_url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "--kms-api-url must be http://HOST:PORT (kms-api's --internal-listen), got {base_url:?}"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Self { base, client })
    }

    async fn call(&self, path: &str, body: Vec<u8>) -> Result<(StatusCode, Bytes), StoreCallError> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}{path}", self.base))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| StoreCallError::Unavailable(format!("building request: {e}")))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| StoreCallError::Unavailable(e.to_string()))?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| StoreCallError::Unavailable(format!("reading answer: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| StoreCallError::Unavailable("no answer within 10 s".to_owned()))?
    }

    fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreCallError> {
        serde_json::to_vec(value).map_err(|e| StoreCallError::Unavailable(e.to_string()))
    }

    /// Stores a sealed key with the audit record of its storing.
    pub async fn insert(
        &self,
        row: &ProviderKeyRow,
        audit: &AuditRecord,
    ) -> Result<(), StoreCallError> {
        let body = Self::encode(&InsertProviderKey {
            row: row.clone(),
            audit: audit.clone(),
        })?;
        match self.call(PATH_INTERNAL_KEYS, body).await? {
            (StatusCode::CREATED, _) => Ok(()),
            (StatusCode::CONFLICT, _) => Err(StoreCallError::Exists),
            (status, _) => Err(StoreCallError::Unavailable(format!(
                "storing a key: kms-api answered {status}"
            ))),
        }
    }

    /// The row stored under `(pub, source)`, checked to be that row.
    pub async fn lookup(
        &self,
        public: &str,
        source: KeySource,
    ) -> Result<Option<ProviderKeyRow>, StoreCallError> {
        let body = Self::encode(&LookupProviderKey {
            public: public.to_owned(),
            source,
        })?;
        match self.call(PATH_INTERNAL_KEYS_LOOKUP, body).await? {
            (StatusCode::OK, body) => {
                let row: ProviderKeyRow = serde_json::from_slice(&body).map_err(|e| {
                    StoreCallError::Unavailable(format!(
                        "kms-api answered a row that does not parse: {e}"
                    ))
                })?;
                if row.public != public || row.source != source {
                    tracing::error!("kms-api answered another key's row for a lookup");
                    return Err(StoreCallError::Unavailable(
                        "the store answered another key's row".to_owned(),
                    ));
                }
                Ok(Some(row))
            }
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (status, _) => Err(StoreCallError::Unavailable(format!(
                "finding a key: kms-api answered {status}"
            ))),
        }
    }

    /// Stores the copy of an audit record.
    pub async fn audit(&self, record: &AuditRecord) -> Result<(), StoreCallError> {
        match self
            .call(PATH_INTERNAL_AUDIT, Self::encode(record)?)
            .await?
        {
            (status, _) if status.is_success() => Ok(()),
            (status, _) => Err(StoreCallError::Unavailable(format!(
                "storing an audit record: kms-api answered {status}"
            ))),
        }
    }
}
