//! The key provider for BitGo's wallet manager (docs/bitgo.md) under load:
//! `GET /key` and `POST /sign` (an Ethereum operation hash) over mTLS
//! through kms-api's relay, each on a new TLS connection per request (as
//! the manager makes them) and on kept-alive connections.
//!
//! `kms-bench bitgo-certs --dir D` writes a test CA, a server certificate
//! for 127.0.0.1/localhost and a client certificate; `kms-bench bitgo
//! --url https://… --dir D` drives the load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::Spread;

#[derive(Debug, clap::Args)]
pub struct CertArgs {
    /// Directory to write ca.pem, server.pem, server.key, client.pem into.
    #[arg(long)]
    dir: std::path::PathBuf,
}

pub fn certs(a: &CertArgs) -> anyhow::Result<()> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    std::fs::create_dir_all(&a.dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, usage| -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(names)?;
        p.extended_key_usages = vec![usage];
        Ok((p.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
    };
    let (cert, key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    std::fs::write(a.dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(a.dir.join("server.pem"), cert)?;
    std::fs::write(a.dir.join("server.key"), key)?;
    let (cert, key) = leaf(vec!["awm".into()], ExtendedKeyUsagePurpose::ClientAuth)?;
    std::fs::write(a.dir.join("client.pem"), format!("{cert}{key}"))?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    /// `GET /key/{pub}?source=user` of a stored key.
    GetKey,
    /// `POST /sign` of a `0x` + 32-byte operation hash.
    SignEth,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// https://HOST:PORT of kms-api's --bitgo-listen.
    #[arg(long)]
    url: String,
    /// Where `bitgo-certs` wrote the certificates.
    #[arg(long)]
    dir: std::path::PathBuf,
    #[arg(long, value_enum)]
    op: Op,
    /// A new TLS connection for every request (the wallet manager's way),
    /// instead of kept-alive ones.
    #[arg(long)]
    new_connections: bool,
    /// Concurrent requests, comma-separated levels.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also append the results as JSON lines to this file.
    #[arg(long)]
    json_out: Option<std::path::PathBuf>,
}

fn client(a: &Args) -> anyhow::Result<reqwest::Client> {
    let ca = std::fs::read(a.dir.join("ca.pem")).context("ca.pem")?;
    let id = std::fs::read(a.dir.join("client.pem")).context("client.pem")?;
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
        .identity(reqwest::Identity::from_pem(&id)?)
        .timeout(Duration::from_secs(30));
    if a.new_connections {
        b = b.pool_max_idle_per_host(0);
    }
    Ok(b.build()?)
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let setup = client(&a)?;
    let made: serde_json::Value = setup
        .post(format!("{}/key/generate", a.url))
        .json(&serde_json::json!({"coin": "hteth", "source": "user", "type": "independent"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let public = made["pub"].as_str().context("no pub")?.to_owned();
    let mode = if a.new_connections {
        "new connection per request"
    } else {
        "kept-alive connections"
    };
    println!(
        "bitgo {:?}, {mode}: {} runs of {} s per level",
        a.op, a.runs, a.seconds
    );
    for &c in &a.concurrency {
        let mut rates = Vec::new();
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        let mut errors = 0;
        for _ in 0..a.runs {
            let (rate, p50, p99, e) = level(&a, &public, c).await?;
            rates.push(rate);
            p50s.push(p50);
            p99s.push(p99);
            errors += e;
        }
        let (r, p50, p99) = (Spread::of(rates), Spread::of(p50s), Spread::of(p99s));
        println!(
            "c={c:<4} {:>7.0} ops/s [{:.0}–{:.0}]  p50 {:.2} ms  p99 {:.2} ms [{:.2}–{:.2}]  errors {errors}",
            r.median, r.min, r.max, p50.median, p99.median, p99.min, p99.max
        );
        crate::append_json(
            a.json_out.as_deref(),
            &serde_json::json!({"bench": "bitgo", "op": format!("{:?}", a.op),
                "new_connections": a.new_connections, "concurrency": c,
                "ops_per_s": r, "p50_ms": p50, "p99_ms": p99, "errors": errors}),
        )?;
    }
    Ok(())
}

/// One closed-loop run at `concurrency`: ops/s, p50 and p99 in ms, errors.
async fn level(a: &Args, public: &str, concurrency: usize) -> anyhow::Result<(f64, f64, f64, u64)> {
    let http = client(a)?;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let payload = format!("0x{}", "5a".repeat(32));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, stop, errors, latencies) = (
            http.clone(),
            stop.clone(),
            errors.clone(),
            latencies.clone(),
        );
        let (url, public, payload, op) = (a.url.clone(), public.to_owned(), payload.clone(), a.op);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let req = match op {
                    Op::GetKey => http.get(format!("{url}/key/{public}?source=user")),
                    Op::SignEth => http.post(format!("{url}/sign")).json(&serde_json::json!({
                        "pub": public, "source": "user", "algorithm": "ecdsa", "signablePayload": payload})),
                };
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        mine.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies.lock().unwrap_or_else(|p| p.into_inner()).extend(mine);
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut l = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    l.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok((
        l.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        errors.load(Ordering::Relaxed),
    ))
}
