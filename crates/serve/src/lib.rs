#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kms_protocol::{ErrorBody, ErrorCode};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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

/// Counts per client address, with a guard that gives the slot back.
#[derive(Debug, Default, Clone)]
struct PerClient(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct Slot {
    map: PerClient,
    ip: IpAddr,
}

impl PerClient {
    fn take(&self, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            map: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
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

/// Serves `app` on `listener` under `limits` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let in_flight = Arc::new(Semaphore::new(limits.max_in_flight));
    let in_flight_per_client = PerClient::default();
    let max_per_client = limits.max_in_flight_per_client;
    let app = app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let in_flight = in_flight.clone();
            let per_client = in_flight_per_client.clone();
            async move {
                let ip = req
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip());
                let Ok(_global) = in_flight.try_acquire() else {
                    return overloaded(
                        "the server is at its limit of requests in flight; retry shortly",
                    );
                };
                let _slot = match ip {
                    Some(ip) => match per_client.take(ip, max_per_client) {
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
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(conn_permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "connection limit reached; closing a new connection");
            continue;
        };
        let Some(client_slot) =
            connections_per_client.take(peer.ip(), limits.max_connections_per_client)
        else {
            tracing::warn!(%peer, "per-client connection limit reached; closing a new connection");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(axum::body::Body::new)
            },
        );
        let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop((conn_permit, client_slot));
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("requests still in flight after 10 s; stopping anyway");
        }
    }
    Ok(())
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
