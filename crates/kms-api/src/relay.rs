//! The relay to the secure environment: plain HTTP over a local address
//! or a Unix socket, through a pooled hyper-util client (no TLS stack in
//! this process), with docs/design.md's 10 s budget per call.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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

/// Budget for one call to the secure environment (docs/design.md, "timeouts").
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
    /// What the request URIs start with: the URL given, or for a Unix
    /// socket `http://localhost` (the socket path is the connector's).
    base: String,
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Tcp(Client<HttpConnector, Full<Bytes>>),
    Unix(Client<UnixConnector, Full<Bytes>>, Arc<PathBuf>),
}

/// Connects every request to one Unix socket, whatever its URI says.
#[derive(Clone)]
struct UnixConnector(Arc<PathBuf>);

impl tower::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            let connect = tokio::net::UnixStream::connect(path.as_path());
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(stream) => stream.map(TokioIo::new),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the secure environment's socket timed out",
                )),
            }
        })
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long an idle connection to the secure environment is kept for
/// reuse. It must stay below the secure environment's header-read timeout
/// (`KMS_HEADER_READ_TIMEOUT`, 10 s by default), which also closes
/// connections idle that long: a call sent on a connection just as the
/// other side closes it fails (a 503 for the client), and a call cannot be
/// retried blindly, as the secure environment may have acted on it. With
/// the earlier 30 s here the load benchmark saw rare 503s that fit this race
/// (two in all of issue 5's runs, about one in 10⁵ calls).
const POOL_IDLE: Duration = Duration::from_secs(5);

impl std::fmt::Debug for SecureEnvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("SecureEnvClient");
        match &self.transport {
            Transport::Tcp(_) => d.field("base", &self.base),
            Transport::Unix(..) => d.field("socket", &self.socket()),
        };
        d.finish()
    }
}

impl SecureEnvClient {
    /// A client for `base_url`: `http://HOST:PORT`, or `unix:/path` for
    /// the secure environment's Unix socket (https is refused: this hop is
    /// local and this process has no TLS).
    pub fn new(base_url: &str) -> Result<Self, String> {
        Self::with_pool_idle(base_url, POOL_IDLE)
    }

    fn with_pool_idle(base_url: &str, pool_idle: Duration) -> Result<Self, String> {
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(pool_idle)
                .pool_timer(TokioTimer::new())
                // Keep every connection a burst opened: with fewer idle
                // slots than concurrent calls, each call past them paid a
                // fresh connect (and the secure environment a new
                // connection task).
                .pool_max_idle_per_host(1024);
            b
        };
        if let Some(path) = base_url.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "secure environment socket must be an absolute path (unix:/path/to/socket), got {base_url:?}"
                ));
            }
            let path = Arc::new(PathBuf::from(path));
            let client = builder().build(UnixConnector(path.clone()));
            return Ok(Self {
                base: "http://localhost".to_owned(),
                transport: Transport::Unix(client, path),
            });
        }
        let base = base_url.trim_end_matches('/').to_owned();
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("invalid secure environment URL {base_url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "secure environment URL must be http://HOST:PORT or unix:/path/to/socket (a local link without TLS), got {base_url:?}"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Ok(Self {
            base,
            transport: Transport::Tcp(builder().build(connector)),
        })
    }

    /// The Unix socket this client connects to, if it uses one.
    pub fn socket(&self) -> Option<&std::path::Path> {
        match &self.transport {
            Transport::Tcp(_) => None,
            Transport::Unix(_, path) => Some(path.as_path()),
        }
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
            let resp = match &self.transport {
                Transport::Tcp(c) => c.request(req).await,
                Transport::Unix(c, _) => c.request(req).await,
            }
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

/// Calls the secure environment. A refusal it recorded in the audit log is
/// stored here before it is answered; if that fails, the answer is 503
/// (fail closed: nothing leaves without its record stored).
pub async fn relay<Q: serde::Serialize, R: serde::de::DeserializeOwned>(
    s: &crate::AppState,
    path: &str,
    body: &Q,
) -> Result<R, crate::ApiError> {
    match s.env.post(path, body).await {
        Ok(r) => Ok(r),
        Err(RelayError::Refused {
            code,
            message,
            audit: Some(audit),
        }) => {
            s.store.insert_audit(&audit).await?;
            Err(RelayError::Refused {
                code,
                message,
                audit: None,
            }
            .into())
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_environment_urls() {
        let tcp = SecureEnvClient::new("http://127.0.0.1:3000/").unwrap();
        assert_eq!(tcp.base, "http://127.0.0.1:3000");
        assert_eq!(tcp.socket(), None);
        let unix = SecureEnvClient::new("unix:/run/kms/se.sock").unwrap();
        assert_eq!(
            unix.socket(),
            Some(std::path::Path::new("/run/kms/se.sock"))
        );
        for bad in [
            "https://127.0.0.1:3000",
            "127.0.0.1:3000",
            "unix:se.sock",
            "unix:",
            "http://",
        ] {
            assert!(SecureEnvClient::new(bad).is_err(), "{bad:?}");
        }
    }

    /// The pool gives up an idle connection before the secure environment
    /// would close it.
    #[test]
    fn idle_connections_are_dropped_before_the_server_drops_them() {
        let server_idle = Duration::from_secs(kms_serve::Limits::default().header_read_timeout);
        assert!(
            POOL_IDLE * 3 / 2 <= server_idle,
            "{POOL_IDLE:?} vs {server_idle:?}"
        );
    }

    /// A connection idle past the pool's timeout is not reused; one used
    /// again within it is.
    #[tokio::test]
    async fn the_pool_reconnects_after_its_idle_timeout() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let accepted = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"{}"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let client =
            SecureEnvClient::with_pool_idle(&format!("http://{addr}"), Duration::from_millis(300))
                .unwrap();
        let call = || client.get::<serde_json::Value>("/x");
        call().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        call().await.unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "reused within the timeout"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        call().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "reconnected after it");
    }

    /// Nothing listening on the socket is "unavailable" (503), like a
    /// refused TCP connection.
    #[tokio::test]
    async fn a_socket_nobody_listens_on_is_unavailable() {
        let path = std::env::temp_dir().join(format!("kms-relay-test-{}.sock", std::process::id()));
        let client = SecureEnvClient::new(&format!("unix:{}", path.display())).unwrap();
        let err = client
            .get::<serde_json::Value>("/internal/v1/health")
            .await
            .unwrap_err();
        assert!(matches!(err, RelayError::Unavailable(_)), "{err:?}");
    }
}
