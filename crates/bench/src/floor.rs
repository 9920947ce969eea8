//! `floor-server`: the deployment's shape with nothing in it but, at most,
//! one operation's cryptography: what the architecture costs before any
//! storage or JSON, and the most it can reach for that operation.
//!
//! Two of these stand where the two servers stand: the inner one (no
//! `--upstream`) answers every request with a fixed JSON body the size of
//! an export's internal answer; the outer one relays every request body to
//! the inner one through a pooled hyper-util client configured as kms-api's
//! relay is, and answers with what came back. `kms-bench load --op floor`
//! drives the outer one (two hops) or the inner one alone (one hop), with
//! the same load generator and on the same cores as the real benchmark.
//!
//! With `--crypto export` (or `data-key-decrypt`, or `import`) the inner
//! server also runs that operation's secure-environment work on each
//! request, through the calls `kms-bench limit` measures (the audit log on
//! a tmpfs), and still answers with the fixed body: the operation's
//! cryptography behind two empty hops, the ceiling of this architecture
//! for it. For import, `…/start` also seals a key to the new session as
//! the client would (the load generator's work in the real benchmark, on
//! the same two cores), and `…/complete` completes one sealed earlier.
//! With `--scratch` on a disk, each answer also waits for its audit
//! record's fsync, as the secure environment's answers do: what the
//! architecture reaches with the durability the KMS promises. That is a
//! reference, not a bound (group commit shares fsyncs differently under
//! different loads).
//!
//! - Default: served by `kms_serve::serve` (the servers' own HTTP stack:
//!   axum, admission limits, header-read timeout).
//! - `--bare`: plain hyper, one `service_fn`, nothing else: the least any
//!   design on this HTTP stack pays per hop.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kms_serve::{ListenAddr, Listener};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HOST:PORT or unix:/path; prints `listening on ADDR` once bound.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: ListenAddr,
    /// Relay every request to this server (http://HOST:PORT) instead of
    /// answering it.
    #[arg(long)]
    upstream: Option<String>,
    /// Size of the fixed JSON answer when not relaying (an export's
    /// internal answer, bundle and audit record, is about this size).
    #[arg(long, default_value_t = 1800)]
    reply_bytes: usize,
    /// Plain hyper: no router, no admission limits.
    #[arg(long)]
    bare: bool,
    /// Run this operation's secure-environment work on each request (not
    /// with `--upstream`).
    #[arg(long, value_enum)]
    crypto: Option<Crypto>,
    /// Directory for `--crypto`'s throw-away audit log. Default: /dev/shm
    /// (a tmpfs keeps its fsync free, as in `kms-bench limit`), or the
    /// system's temporary directory where there is none. On a disk, each
    /// answer waits for its record's fsync, as the secure environment's
    /// do.
    #[arg(long)]
    scratch: Option<std::path::PathBuf>,
    #[command(flatten)]
    limits: kms_serve::Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Crypto {
    Export,
    DataKeyDecrypt,
    /// `…/start` starts a session and seals a key to it as the client
    /// would (the load generator's share in the real benchmark);
    /// `…/complete` completes one such session (`load --op floor-import`).
    Import,
    /// ecdsa-secp256k1 by a single-key wallet (RFC 6979, recovery id).
    SignEcdsaSecp256k1,
    /// ed25519 by a single-key wallet.
    SignEd25519,
    /// ecdsa-p256 by a single-key wallet (the OpenBao Transit peer's
    /// algorithm).
    SignEcdsaP256,
}

type Upstream = Client<HttpConnector, Full<Bytes>>;

/// What every request gets: a fixed answer, or the upstream's.
#[derive(Clone)]
struct Answer {
    reply: Bytes,
    upstream: Option<(Arc<str>, Upstream)>,
    work: Option<(Crypto, Arc<Work>)>,
}

/// `--crypto`'s secure runtime, and the imports sealed by `…/start`
/// waiting for a `…/complete`.
struct Work {
    f: crate::limit::Fixture,
    sealed: std::sync::Mutex<Vec<kms_protocol::internal::Import>>,
}

impl Work {
    /// Runs `op`'s secure-environment work for a request to `path`.
    async fn run(&self, op: Crypto, path: &str) -> anyhow::Result<()> {
        let rt = &self.f.rt;
        let failed = |e: secure_runtime::runtime::Refused| anyhow::anyhow!("{:?}", e.error);
        match op {
            Crypto::Export => rt
                .trusted_env_exec_async(|env| env.export(&self.f.export).map(drop))
                .await?
                .map_err(failed),
            Crypto::DataKeyDecrypt => rt
                .trusted_env_exec_async(|env| env.decrypt_data_key(&self.f.decrypt).map(drop))
                .await?
                .map_err(failed),
            Crypto::SignEcdsaSecp256k1 => rt
                .trusted_env_exec_async(|env| env.sign(&self.f.sign_secp256k1).map(drop))
                .await?
                .map_err(failed),
            Crypto::SignEd25519 => rt
                .trusted_env_exec_async(|env| env.sign(&self.f.sign_ed25519).map(drop))
                .await?
                .map_err(failed),
            Crypto::SignEcdsaP256 => rt
                .trusted_env_exec_async(|env| env.sign(&self.f.sign_ecdsa_p256).map(drop))
                .await?
                .map_err(failed),
            Crypto::Import if path.ends_with("/start") => {
                let started = rt
                    .trusted_env_exec_async(|env| env.start_session(None))
                    .await?
                    .map_err(failed)?;
                // The client's seal, on this process's CPU instead of the
                // load generator's: the same two cores pay for it.
                let import = crate::limit::seal_import(started, &self.f.material)?;
                self.sealed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(import);
                Ok(())
            }
            Crypto::Import => {
                let queued = self.sealed.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let import = match queued {
                    Some(i) => i,
                    None => crate::limit::import_one(rt, &self.f.material)?,
                };
                rt.trusted_env_exec_async(|env| env.import(&import).map(drop))
                    .await?
                    .map_err(failed)
            }
        }
    }
}

impl Answer {
    /// A fixed JSON answer of `reply_bytes`, or the upstream's answer.
    fn new(reply_bytes: usize, upstream: Option<&str>, work: Option<(Crypto, Arc<Work>)>) -> Self {
        let pad = reply_bytes.saturating_sub(r#"{"pad":""}"#.len());
        Self {
            reply: Bytes::from(format!(r#"{{"pad":"{}"}}"#, "a".repeat(pad))),
            upstream: upstream.map(|u| (Arc::from(u.trim_end_matches('/')), upstream_client())),
            work,
        }
    }

    async fn answer(&self, path: &str, body: Bytes) -> Response<Full<Bytes>> {
        if let Some((op, work)) = &self.work {
            if let Err(e) = work.run(*op, path).await {
                let mut resp = Response::new(Full::new(Bytes::from(e.to_string())));
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return resp;
            }
        }
        let (status, body) = match &self.upstream {
            None => (StatusCode::OK, self.reply.clone()),
            Some((base, client)) => match relay(client, &format!("{base}{path}"), body).await {
                Ok(r) => r,
                Err(e) => (StatusCode::BAD_GATEWAY, Bytes::from(e)),
            },
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

async fn relay(client: &Upstream, url: &str, body: Bytes) -> Result<(StatusCode, Bytes), String> {
    let req = Request::post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = client.request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// The relay's client, with kms-api's pool settings.
fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.crypto.is_none() || a.upstream.is_none(),
        "--crypto is for the inner server (no --upstream)"
    );
    let scratch = match a.crypto {
        Some(_) => Some(match &a.scratch {
            Some(dir) => tempfile::tempdir_in(dir)
                .map_err(|e| anyhow::anyhow!("--scratch {}: {e}", dir.display()))?,
            None => tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir())?,
        }),
        None => None,
    };
    if let Some(dir) = &scratch {
        eprintln!("audit log in {}", dir.path().display());
    }
    let work = match (a.crypto, &scratch) {
        (Some(op), Some(dir)) => Some((
            op,
            Arc::new(Work {
                f: crate::limit::fixture(dir.path())?,
                sealed: std::sync::Mutex::default(),
            }),
        )),
        _ => None,
    };
    let answer = Answer::new(a.reply_bytes, a.upstream.as_deref(), work);
    let listener = Listener::bind(&a.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    if a.bare {
        let Listener::Tcp(listener) = listener else {
            anyhow::bail!("--bare serves TCP only");
        };
        return serve_bare(listener, answer, kms_serve::shutdown_signal()).await;
    }
    kms_serve::serve(
        listener,
        router(answer),
        a.limits,
        kms_serve::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// Every request, whatever its method and path, to `answer`.
fn router(answer: Answer) -> Router {
    Router::new().fallback(move |uri: axum::http::Uri, body: Bytes| {
        let answer = answer.clone();
        async move { answer.answer(uri.path(), body).await }
    })
}

/// One task per connection, one `service_fn`, nothing else.
async fn serve_bare(
    listener: tokio::net::TcpListener,
    answer: Answer,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        stream.set_nodelay(true)?;
        let answer = answer.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = answer.clone();
                async move {
                    let path = req.uri().path().to_owned();
                    let body = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(_) => Bytes::new(),
                    };
                    Ok::<_, Infallible>(answer.answer(&path, body).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(dir: &std::path::Path) -> Arc<Work> {
        Arc::new(Work {
            f: crate::limit::fixture(dir).unwrap(),
            sealed: std::sync::Mutex::default(),
        })
    }

    /// A `--scratch` that cannot be used stops the server: a silent move
    /// to another directory could put a "durable" ceiling's log on a tmpfs.
    #[tokio::test]
    async fn a_scratch_dir_that_cannot_be_used_is_an_error() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: Args,
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let cli = <Cli as clap::Parser>::try_parse_from([
            "floor-server".as_ref(),
            "--crypto".as_ref(),
            "export".as_ref(),
            "--scratch".as_ref(),
            missing.as_os_str(),
        ])
        .unwrap();
        // A server that went on would serve until stopped.
        let e = tokio::time::timeout(Duration::from_secs(10), run(cli.a))
            .await
            .expect("the server started")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--scratch ") && e.contains("missing"), "{e}");
    }

    fn audit_records(w: &Work) -> usize {
        w.f.rt
            .trusted_env_exec(|env| env.audit_records(0, 1000))
            .unwrap()
            .len()
    }

    /// The ceiling is only a ceiling if each request really runs the
    /// operation: each one leaves its audit record.
    #[tokio::test]
    async fn each_crypto_request_runs_its_operation() {
        let dir = tempfile::tempdir().unwrap();
        let w = work(dir.path());
        let before = audit_records(&w);
        w.run(Crypto::Export, "/floor").await.unwrap();
        w.run(Crypto::DataKeyDecrypt, "/floor").await.unwrap();
        assert_eq!(audit_records(&w), before + 2);
        w.run(Crypto::Import, "/floor/start").await.unwrap();
        assert_eq!(w.sealed.lock().unwrap().len(), 1);
        assert_eq!(audit_records(&w), before + 3, "a session start");
        w.run(Crypto::Import, "/floor/complete").await.unwrap();
        assert_eq!(w.sealed.lock().unwrap().len(), 0);
        assert_eq!(audit_records(&w), before + 4, "an import");
    }

    /// Serves `answer` on a free port, bare or on the servers' stack.
    async fn spawn(answer: Answer, bare: bool) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        if bare {
            tokio::spawn(serve_bare(l, answer, std::future::pending()));
        } else {
            tokio::spawn(kms_serve::serve(
                l,
                router(answer),
                kms_serve::Limits::default(),
                std::future::pending(),
            ));
        }
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn the_outer_server_relays_path_and_answer() {
        let dir = tempfile::tempdir().unwrap();
        let w = work(dir.path());
        let inner = Answer::new(700, None, Some((Crypto::Import, w.clone())));
        let inner = spawn(inner, false).await;
        let outer = spawn(Answer::new(0, Some(&inner), None), true).await;
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{outer}/floor/start"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().len(), 700);
        assert_eq!(
            w.sealed.lock().unwrap().len(),
            1,
            "the inner server saw /start"
        );
        let r = http
            .post(format!("{outer}/floor/complete"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(w.sealed.lock().unwrap().len(), 0, "and then /complete");
    }
}
