#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kms_protocol::{ErrorBody, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;

/// Where a server listens: a TCP address (`127.0.0.1:3000`, port 0 for a
/// free one) or a Unix socket (`unix:/run/kms/se.sock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!(
                    "a Unix socket path must be absolute (unix:/path/to/socket), got {s:?}"
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse().map(Self::Tcp).map_err(|e| {
            format!("expected HOST:PORT (an IP address) or unix:/path/to/socket, got {s:?}: {e}")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A bound listener, TCP or Unix socket.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Self::Tcp(l)
    }
}

impl Listener {
    /// Binds `addr`. A Unix socket is made readable and writable by this
    /// process's user only (mode 0600, set just after the bind; put it in a
    /// directory only that user can enter, which also closes the moment
    /// between the two). A socket file left by an earlier process is
    /// replaced; any other file at the path is an error.
    pub async fn bind(addr: &ListenAddr) -> std::io::Result<Self> {
        match addr {
            ListenAddr::Tcp(a) => TcpListener::bind(a).await.map(Self::Tcp),
            ListenAddr::Unix(path) => bind_unix(path).map(Self::Unix),
        }
    }

    /// The address bound (with the port picked for port 0).
    pub fn local_addr(&self) -> std::io::Result<ListenAddr> {
        match self {
            Self::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Self::Unix(l) => l
                .local_addr()?
                .as_pathname()
                .map(|p| ListenAddr::Unix(p.to_path_buf()))
                .ok_or_else(|| std::io::Error::other("unnamed Unix socket")),
        }
    }
}

fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Admission limits (the same flags and environment variables for both servers).
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Most open connections in all.
    #[arg(long, env = "KMS_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Most open connections from one client address.
    #[arg(long, env = "KMS_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 64)]
    pub max_connections_per_client: usize,
    /// Most requests being served at once in all; more get 503.
    #[arg(long, env = "KMS_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// Most requests being served at once for one client address; more get 503.
    #[arg(long, env = "KMS_MAX_IN_FLIGHT_PER_CLIENT", default_value_t = 32)]
    pub max_in_flight_per_client: usize,
    /// Seconds a client has to send a request's head (slowloris defence).
    #[arg(long, env = "KMS_HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_client: 64,
            max_in_flight: 256,
            max_in_flight_per_client: 32,
            header_read_timeout: 10,
        }
    }
}

/// Who a connection counts against: its IP address, or for a Unix socket
/// the one local client (only processes allowed to open the socket reach
/// it, and they share its caps as a reverse proxy's clients do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Peer {
    Ip(IpAddr),
    Local,
}

/// Counts per client, with a guard that gives the slot back.
#[derive(Debug, Default, Clone)]
struct PerClient(Arc<Mutex<HashMap<Peer, usize>>>);

struct Slot {
    map: PerClient,
    peer: Peer,
}

impl PerClient {
    fn take(&self, peer: Peer, max: usize) -> Option<Slot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(peer).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            map: self.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}

fn overloaded(message: &str) -> Response {
    let mut resp = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ErrorBody::new(ErrorCode::Unavailable, message)),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// Serves `app` on `listener` (TCP or a Unix socket) under `limits` until
/// `shutdown` resolves.
pub async fn serve(
    listener: impl Into<Listener>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = listener.into();
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let in_flight_per_client = PerClient::default();
    let max_per_client = limits.max_in_flight_per_client;
    let app = app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let in_flight = in_flight.clone();
            let per_client = in_flight_per_client.clone();
            async move {
                let peer = req.extensions().get::<Peer>().copied();
                let Ok(_global) = in_flight.try_acquire() else {
                    return overloaded(
                        "the server is at its limit of requests in flight; retry shortly",
                    );
                };
                let _slot = match peer {
                    Some(peer) => match per_client.take(peer, max_per_client) {
                        Some(slot) => Some(slot),
                        None => {
                            return overloaded(
                                "too many requests in flight from this client; retry shortly",
                            )
                        }
                    },
                    None => None,
                };
                next.run(req).await
            }
        },
    ));

    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let connections_per_client = PerClient::default();
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(limits.header_read_timeout))
        .keep_alive(true);
    let conns = Conns {
        app,
        builder,
        graceful,
    };
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(conn_permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(?peer, "connection limit reached; closing a new connection");
            continue;
        };
        let key = match peer {
            Some(addr) => Peer::Ip(addr.ip()),
            None => Peer::Local,
        };
        let Some(client_slot) = connections_per_client.take(key, limits.max_connections_per_client)
        else {
            tracing::warn!(
                ?peer,
                "per-client connection limit reached; closing a new connection"
            );
            continue;
        };
        let permits = (conn_permit, client_slot);
        match stream {
            Stream::Tcp(s) => {
                let _ = s.set_nodelay(true);
                conns.spawn(s, key, peer, permits);
            }
            Stream::Unix(s) => conns.spawn(s, key, peer, permits),
        }
    }
    drop(listener);
    tokio::select! {
        () = conns.graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("requests still in flight after 10 s; stopping anyway");
        }
    }
    Ok(())
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// The next connection, with its peer's address if it came over TCP.
async fn accept(listener: &Listener) -> std::io::Result<(Stream, Option<SocketAddr>)> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| (Stream::Tcp(s), Some(a))),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| (Stream::Unix(s), None)),
    }
}

/// What serving one connection needs.
struct Conns {
    app: Router,
    builder: hyper::server::conn::http1::Builder,
    graceful: GracefulShutdown,
}

impl Conns {
    /// Serves `stream` on its own task; `permits` are given back when it ends.
    fn spawn<S>(&self, stream: S, key: Peer, peer: Option<SocketAddr>, permits: impl Send + 'static)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let svc = tower::ServiceExt::map_request(
            self.app.clone(),
            move |mut req: Request<hyper::body::Incoming>| {
                // What the in-flight limits count the request against.
                req.extensions_mut().insert(key);
                req.map(axum::body::Body::new)
            },
        );
        let conn = self
            .builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = self.graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(?peer, error = %e, "connection ended with an error");
            }
            drop(permits);
        });
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_and_print_back() {
        for s in ["127.0.0.1:3000", "[::1]:0", "unix:/run/kms/se.sock"] {
            let a: ListenAddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        assert_eq!(
            "unix:/tmp/s".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix(PathBuf::from("/tmp/s"))
        );
        for bad in ["unix:relative.sock", "unix:", "localhost:3000", "3000", ""] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_unix_socket_is_private_and_replaces_a_stale_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kms-serve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let addr = ListenAddr::Unix(path.clone());
        let first = Listener::bind(&addr).await.unwrap();
        assert_eq!(first.local_addr().unwrap(), addr);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Left behind as after a crash: the next bind takes the path back.
        drop(first);
        let second = Listener::bind(&addr).await.unwrap();
        let Listener::Unix(l) = &second else {
            panic!("not a Unix listener")
        };
        let (connected, accepted) =
            tokio::join!(tokio::net::UnixStream::connect(&path), l.accept());
        connected.unwrap();
        accepted.unwrap();
        drop(second);
        // Anything else at the path is left alone.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"data").unwrap();
        let err = Listener::bind(&addr).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
