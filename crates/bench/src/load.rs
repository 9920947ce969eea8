//! Load against a running kms-api: `concurrency` tasks each send one
//! request after another (keep-alive, pooled) for `seconds`, after a
//! warm-up that is not counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use kms_crypto::hpke::{self, HpkeSecretKey};
use kms_crypto::labels;
use kms_protocol::api::ImportEnvelope;
use kms_protocol::{b64, KeyType};

use crate::Spread;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    /// `POST /v1/wallets/{id}/export` to a fixed recipient.
    Export,
    /// `POST /v1/import-sessions` then `…/complete` (HPKE seal in the client).
    Import,
    /// `POST /v1/data-keys/decrypt` of one wrapped key.
    DataKeyDecrypt,
    /// `POST /v1/wallets/{id}/sign`, ecdsa-secp256k1 of a 32-byte digest,
    /// by generated single-key wallets.
    SignEcdsaSecp256k1,
    /// `POST /v1/wallets/{id}/sign`, ed25519 of a 32-byte message.
    SignEd25519,
    /// `POST /v1/wallets/{id}/sign`, ecdsa-p256 of a 32-byte digest (the
    /// algorithm OpenBao's Transit signs too).
    SignEcdsaP256,
    /// `POST /floor` with an export-sized body to a `kms-bench
    /// floor-server` (the architecture with nothing in it but, with
    /// `--crypto`, one operation's cryptography).
    Floor,
    /// `POST /floor/start` then `POST /floor/complete` to a `kms-bench
    /// floor-server` (an import's two requests).
    FloorImport,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value = "http://127.0.0.1:3002")]
    api_url: String,
    #[arg(long, value_enum)]
    op: Op,
    #[command(flatten)]
    levels: Levels,
    /// Wallets to export from (imported first).
    #[arg(long, default_value_t = 64)]
    wallets: usize,
    /// Open loop: send this many requests per second in all, on a fixed
    /// schedule, each sent by whichever of the `concurrency` tasks is free,
    /// and measure each latency from the moment its request was due (so a
    /// stalled server is not hidden by requests that were never sent).
    /// Without it, closed loop: each task sends its next request when the
    /// last one answered.
    #[arg(long)]
    rate: Option<f64>,
    /// A name for this run in the JSON results (which floor-server setup).
    #[arg(long)]
    label: Option<String>,
    /// Worker threads of the load generator itself.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
}

/// The levels a run measures, what it watches and where its results go
/// (shared by `load` and `openbao`).
#[derive(Debug, clap::Args)]
pub(crate) struct Levels {
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub concurrency: Vec<usize>,
    /// Seconds measured per level.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Warm-up seconds per level, not counted.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Repeats of each level (the spread is over these).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Server processes to watch, as NAME=PID (CPU and RSS from /proc).
    #[arg(long = "pid", value_parser = parse_pid)]
    pub pids: Vec<(String, u32)>,
    /// Also append the results as JSON lines to this file.
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
}

impl Levels {
    /// How level `concurrency` is driven.
    pub(crate) fn drive(&self, concurrency: usize, rate: Option<f64>) -> Drive<'_> {
        Drive {
            concurrency,
            warmup: self.warmup,
            seconds: self.seconds,
            rate,
            pids: &self.pids,
        }
    }
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (n, p) = s.split_once('=').ok_or("NAME=PID")?;
    Ok((n.to_owned(), p.parse().map_err(|_| "PID is a number")?))
}

/// The load generator's HTTP client: keep-alive for every task, no Nagle.
pub(crate) fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
}

/// An SDK client for kms-api at `base`, pinned to the identity key its
/// attestation reports (a benchmark trusts the server it just started).
pub(crate) async fn sdk_client(
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<kms_client::KmsClient> {
    let attestation: serde_json::Value = http
        .get(format!("{base}/v1/attestation"))
        .send()
        .await?
        .json()
        .await?;
    let identity = kms_client::parse_identity_public_key(
        attestation["identity_public_key"]
            .as_str()
            .unwrap_or_default(),
    )?;
    Ok(kms_client::KmsClient::new(base, identity)?)
}

/// utime + stime in clock ticks, and VmRSS / VmHWM in KiB.
pub(crate) fn proc_sample(pid: u32) -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some((ticks, kib("VmRSS:"), kib("VmHWM:")))
}

pub(crate) fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

struct Fixture {
    http: reqwest::Client,
    base: String,
    export_urls: Vec<String>,
    export_body: Vec<u8>,
    sign_urls: Vec<String>,
    sign_body: Vec<u8>,
    decrypt_body: Vec<u8>,
    import_plaintext: Vec<u8>,
}

async fn fixture(a: &Args) -> anyhow::Result<Fixture> {
    let base = a.api_url.trim_end_matches('/').to_owned();
    let http = http_client()?;
    let material = kms_client::generate_key_material(KeyType::Secp256k1)?;
    let mut export_urls = Vec::new();
    if a.op == Op::Export {
        let client = sdk_client(&http, &base).await?;
        for _ in 0..a.wallets {
            let r = client.import(&material).await?;
            export_urls.push(format!("{base}/v1/wallets/{}/export", r.wallet_id));
        }
    }
    let mut sign_urls = Vec::new();
    let mut sign_body = Vec::new();
    let signer = match a.op {
        Op::SignEcdsaSecp256k1 => Some((KeyType::Secp256k1, "ecdsa-secp256k1")),
        Op::SignEd25519 => Some((KeyType::Ed25519, "ed25519")),
        Op::SignEcdsaP256 => Some((KeyType::P256, "ecdsa-p256")),
        _ => None,
    };
    if let Some((key_type, algorithm)) = signer {
        let client = sdk_client(&http, &base).await?;
        for _ in 0..a.wallets {
            let r = client.generate(key_type, None).await?;
            sign_urls.push(format!("{base}/v1/wallets/{}/sign", r.wallet_id));
        }
        sign_body = serde_json::to_vec(&serde_json::json!({
            "algorithm": algorithm,
            "payload": b64::encode(kms_crypto::sha256(b"a transaction to sign")),
        }))?;
    }
    let recipient = HpkeSecretKey::generate()?;
    let rk = b64::encode(recipient.public_key().as_bytes());
    let export_body = serde_json::to_vec(&serde_json::json!({"recipient_public_key": rk}))?;
    let mut decrypt_body = Vec::new();
    if a.op == Op::DataKeyDecrypt {
        let g: serde_json::Value = http
            .post(format!("{base}/v1/data-keys"))
            .body(serde_json::to_vec(&serde_json::json!({
                "encryption_context": {"tenant": "bench"}, "recipient_public_key": rk}))?)
            .send()
            .await?
            .json()
            .await?;
        decrypt_body = serde_json::to_vec(&serde_json::json!({
            "wrapped_key": g["wrapped_key"],
            "encryption_context": {"tenant": "bench"},
            "recipient_public_key": rk}))?;
    }
    Ok(Fixture {
        http,
        base,
        export_urls,
        export_body,
        sign_urls,
        sign_body,
        decrypt_body,
        import_plaintext: material.to_import_plaintext().expose().to_vec(),
    })
}

/// One operation; Ok when every response was the expected success.
async fn one(f: &Fixture, op: Op, i: usize) -> anyhow::Result<()> {
    match op {
        Op::Export => {
            let url = &f.export_urls[i % f.export_urls.len()];
            expect(f, url, f.export_body.clone(), 200, "export").await?;
        }
        Op::SignEcdsaSecp256k1 | Op::SignEd25519 | Op::SignEcdsaP256 => {
            let url = &f.sign_urls[i % f.sign_urls.len()];
            expect(f, url, f.sign_body.clone(), 200, "sign").await?;
        }
        Op::Floor => floor(f, "/floor").await?,
        Op::FloorImport => {
            floor(f, "/floor/start").await?;
            floor(f, "/floor/complete").await?;
        }
        Op::DataKeyDecrypt => {
            let url = format!("{}/v1/data-keys/decrypt", f.base);
            expect(f, &url, f.decrypt_body.clone(), 200, "decrypt").await?;
        }
        Op::Import => {
            let r = f
                .http
                .post(format!("{}/v1/import-sessions", f.base))
                .body("{}")
                .send()
                .await?;
            anyhow::ensure!(r.status() == 201, "start: {}", r.status());
            let s: ImportEnvelope = r.json().await?;
            let ct = hpke::seal(
                &s.session_public_key,
                &hpke::info(labels::IMPORT, &s.session_id),
                &f.import_plaintext,
            )?;
            let body = format!(r#"{{"encrypted_key":"{}"}}"#, b64::encode(ct.as_bytes()));
            let url = format!("{}/v1/import-sessions/{}/complete", f.base, s.session_id);
            expect(f, &url, body.into_bytes(), 201, "complete").await?;
        }
    }
    Ok(())
}

/// POSTs `body` to `url` and reads the whole answer; Ok only with `status`.
async fn expect(
    f: &Fixture,
    url: &str,
    body: Vec<u8>,
    status: u16,
    what: &str,
) -> anyhow::Result<()> {
    let r = f.http.post(url).body(body).send().await?;
    anyhow::ensure!(r.status() == status, "{what}: {}", r.status());
    r.bytes().await?;
    Ok(())
}

/// One request to a `kms-bench floor-server`.
async fn floor(f: &Fixture, path: &str) -> anyhow::Result<()> {
    let url = format!("{}{path}", f.base);
    expect(f, &url, f.export_body.clone(), 200, path).await
}

/// The open loop's schedule: request `n` (with the time it is due) goes
/// into `due` at `n * every` after the start, until `stop`.
fn pace(every: Duration, stop: &AtomicBool, due: &mpsc::UnboundedSender<(usize, Instant)>) {
    let start = Instant::now();
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        loop {
            let at = start + every.mul_f64(n as f64);
            if at > now {
                // Bounded, so a slow schedule still sees `stop`.
                std::thread::sleep((at - now).min(Duration::from_millis(100)));
                break;
            }
            if due.send((n, at)).is_err() {
                return;
            }
            n += 1;
        }
    }
}

/// One level's measurement.
pub(crate) struct Level {
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub errors: u64,
    /// Cores used by each watched process, the load generator's last.
    pub cpu: Vec<(String, f64)>,
    /// RSS now and at peak, KiB, in the same order.
    pub rss_kib: Vec<(String, u64, u64)>,
}

/// How one level is driven.
pub(crate) struct Drive<'a> {
    pub concurrency: usize,
    /// Seconds not counted, first.
    pub warmup: f64,
    /// Seconds measured.
    pub seconds: f64,
    /// Open loop: requests due on a fixed schedule at this many per second
    /// in all, each sent by whichever task is free, each latency counted
    /// from when it was due. `None`: closed loop, each task sends its next
    /// request when its last one answered.
    pub rate: Option<f64>,
    /// Processes whose CPU and RSS are reported, besides the load
    /// generator's own (it shares the machine).
    pub pids: &'a [(String, u32)],
}

/// Runs `op(i)` from `concurrency` tasks, where `i` numbers the requests
/// (closed loop: task `t`'s `k`-th request has `i = t + k * concurrency`;
/// open loop: `i` is the request's place in the schedule), and measures the
/// level: throughput of successes, latency percentiles, failures, CPU and
/// RSS.
pub(crate) async fn drive<F, Fut>(d: &Drive<'_>, op: F) -> Level
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let reported = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let concurrency = d.concurrency.max(1);
    // Open loop: a pacer thread releases request `n` at `start + n / rate`
    // into a queue the tasks take from. A thread's sleep wakes within tens
    // of microseconds of the due time; tokio's timer rounds up to the next
    // millisecond, which would add up to 1 ms of the generator's own delay
    // to every latency counted from the due time.
    let queue = d.rate.map(|rate| {
        let (due, queue) = mpsc::unbounded_channel::<(usize, Instant)>();
        let stop = stop.clone();
        let every = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        std::thread::Builder::new()
            .name("pacer".to_owned())
            .spawn(move || pace(every, &stop, &due))
            .expect("starting the pacer thread");
        Arc::new(tokio::sync::Mutex::new(queue))
    });
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (op, stop, counting, queue, reported) = (
            op.clone(),
            stop.clone(),
            counting.clone(),
            queue.clone(),
            reported.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut k = t;
            while !stop.load(Ordering::Relaxed) {
                let (i, start) = match &queue {
                    Some(q) => match q.lock().await.recv().await {
                        Some(next) => next,
                        None => break,
                    },
                    None => {
                        k += concurrency;
                        (k - concurrency, Instant::now())
                    }
                };
                let r = op(i).await;
                if let Err(e) = &r {
                    // The first few failures, so an error count has a cause.
                    if reported.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("request {i} failed: {e:#}");
                    }
                }
                let ok = r.is_ok();
                if counting.load(Ordering::Relaxed) {
                    if ok {
                        lat.push(start.elapsed().as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(d.warmup)).await;
    let pids: Vec<(String, u32)> = d
        .pids
        .iter()
        .cloned()
        .chain([("load-generator".to_owned(), std::process::id())])
        .collect();
    let before: Vec<_> = pids.iter().map(|(_, p)| proc_sample(*p)).collect();
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(d.seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let after: Vec<_> = pids.iter().map(|(_, p)| proc_sample(*p)).collect();
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            lat.extend(l);
            errors += e;
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |us| f64::from(*us) / 1000.0)
    };
    let hz = clock_ticks() as f64;
    let mut cpu = Vec::new();
    let mut rss_kib = Vec::new();
    for (((name, _), b), af) in pids.iter().zip(&before).zip(&after) {
        if let (Some(b), Some(af)) = (b, af) {
            cpu.push((name.clone(), (af.0 - b.0) as f64 / hz / elapsed));
            rss_kib.push((name.clone(), af.1, af.2));
        }
    }
    Level {
        ops_per_s: lat.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        p999_ms: pct(0.999),
        errors,
        cpu,
        rss_kib,
    }
}

/// Each figure of a level over its runs.
pub(crate) struct Spreads {
    pub ops: Spread,
    pub p50: Spread,
    pub p99: Spread,
    pub p999: Spread,
    /// Failures, summed over the runs.
    pub errors: u64,
}

impl Spreads {
    pub(crate) fn of(runs: &[Level]) -> Self {
        let spread = |g: &dyn Fn(&Level) -> f64| Spread::of(runs.iter().map(g).collect());
        Self {
            ops: spread(&|l| l.ops_per_s),
            p50: spread(&|l| l.p50_ms),
            p99: spread(&|l| l.p99_ms),
            p999: spread(&|l| l.p999_ms),
            errors: runs.iter().map(|l| l.errors).sum(),
        }
    }
}

/// Records one level's runs as a JSON line (`record` plus the figures) and
/// prints its table row (`prefix` first).
pub(crate) fn report(
    json_out: Option<&std::path::Path>,
    mut record: serde_json::Value,
    prefix: &str,
    c: usize,
    runs: &[Level],
) -> anyhow::Result<()> {
    let Spreads {
        ops,
        p50,
        p99,
        p999,
        errors,
    } = Spreads::of(runs);
    let last = runs.last();
    let cpu = last.map(|l| l.cpu.clone()).unwrap_or_default();
    let rss = last.map(|l| l.rss_kib.clone()).unwrap_or_default();
    if let Some(fields) = record.as_object_mut() {
        for (k, v) in [
            ("concurrency", serde_json::json!(c)),
            ("ops_per_s", serde_json::json!(ops)),
            ("p50_ms", serde_json::json!(p50)),
            ("p99_ms", serde_json::json!(p99)),
            ("p999_ms", serde_json::json!(p999)),
            ("errors", serde_json::json!(errors)),
            ("cpu_cores", serde_json::json!(cpu)),
            ("rss_kib_now_peak", serde_json::json!(rss)),
        ] {
            fields.insert(k.to_owned(), v);
        }
    }
    crate::append_json(json_out, &record)?;
    let cpu: Vec<String> = cpu
        .iter()
        .map(|(n, c)| format!("{n} {c:.2} cores"))
        .collect();
    let rss: Vec<String> = rss
        .iter()
        .map(|(n, now, peak)| format!("{n} {} MiB (peak {})", now / 1024, peak / 1024))
        .collect();
    println!(
        "{prefix}c={c:<3} {:>8.0} ops/s [{:.0}–{:.0}]  p50 {:.2} ms  p99 {:.2} ms [{:.2}–{:.2}]  p99.9 {:.2} ms  errors {errors}  cpu: {}  rss: {}",
        ops.median, ops.min, ops.max, p50.median, p99.median, p99.min, p99.max, p999.median,
        cpu.join(", "), rss.join(", ")
    );
    Ok(())
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let f = Arc::new(fixture(&a).await?);
    println!(
        "{:?}: {} runs of {} s per level (median [min–max])",
        a.op, a.levels.runs, a.levels.seconds
    );
    for &c in &a.levels.concurrency {
        let d = a.levels.drive(c, a.rate);
        let mut runs = Vec::new();
        for _ in 0..a.levels.runs {
            let (f, op) = (f.clone(), a.op);
            runs.push(
                drive(&d, move |i| {
                    let f = f.clone();
                    async move { one(&f, op, i).await }
                })
                .await,
            );
        }
        let prefix = a.rate.map_or(String::new(), |r| format!("at {r:.0}/s "));
        report(
            a.levels.json_out.as_deref(),
            serde_json::json!({"bench": "load", "op": format!("{:?}", a.op), "rate": a.rate, "label": a.label}),
            &prefix,
            c,
            &runs,
        )?;
    }
    Ok(())
}
