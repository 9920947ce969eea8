//! Scale: export latency with few and with many wallets stored, and the
//! bytes each wallet costs on disk.
//!
//! 1. Imports `--small` real wallets through the API (the SDK).
//! 2. Bytes on disk: a `wal_checkpoint(TRUNCATE)` through our own
//!    connection, then the file size, and per table / index from `dbstat`.
//! 3. Export latency over those wallets, each request to one drawn uniformly
//!    at random, at each concurrency level.
//! 4. Grows the `wallets` table to `--large` rows with filler written
//!    straight into SQLite (no load runs meanwhile): random 16-byte ids,
//!    every other column a byte-for-byte copy of a real row. Nothing exports
//!    them (their ciphertext is bound to another id). No filler audit
//!    records or sessions: the audit table must stay the secure
//!    environment's chain.
//! 5. Bytes on disk again, then the same export measurement over the same
//!    real wallets, now among `--large` rows.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_crypto::hpke::HpkeSecretKey;
use kms_protocol::{b64, KeyType};

use crate::load::{drive, http_client, sdk_client, Drive, Level, Spreads};
use crate::Spread;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value = "http://127.0.0.1:3002")]
    api_url: String,
    /// The kms-api SQLite file (`kms.sqlite` in its data dir).
    #[arg(long)]
    db: PathBuf,
    /// A second, identical stack (its own secure environment and kms-api)
    /// to hold the large store. With it, the two stores are measured in
    /// alternation, so a busy machine weighs on both alike; without it, the
    /// one store is measured before and after the fill.
    #[arg(long, requires = "large_db")]
    large_api_url: Option<String>,
    /// That stack's SQLite file.
    #[arg(long, requires = "large_api_url")]
    large_db: Option<PathBuf>,
    /// Real wallets imported through the API (the export set).
    #[arg(long, default_value_t = 1000)]
    small: usize,
    /// Wallets stored for the second measurement (real + filler).
    #[arg(long, default_value_t = 1_000_000)]
    large: usize,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    concurrency: Vec<usize>,
    /// Seconds measured per level and run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up seconds per level and run, not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Repeats of each level (the spread is over these).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Filler rows per transaction (halved while one takes over 1 s: the
    /// server's writer waits at most 5 s for the lock).
    #[arg(long, default_value_t = 50_000)]
    batch: usize,
    /// Also append the results as JSON lines to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// splitmix64: enough randomness for picking wallets and filler ids.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let mut b = [0u8; 8];
        let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
        if from_os.is_err() {
            b = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64))
            .to_le_bytes();
        }
        Self(u64::from_le_bytes(b))
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Fixture {
    http: reqwest::Client,
    export_urls: Vec<String>,
    export_body: Vec<u8>,
}

async fn fixture(a: &Args, api_url: &str) -> anyhow::Result<Fixture> {
    let base = api_url.trim_end_matches('/').to_owned();
    let http = http_client()?;
    let client = sdk_client(&http, &base).await?;
    let start = Instant::now();
    let mut export_urls = Vec::with_capacity(a.small);
    for _ in 0..a.small {
        // A fresh key each: real wallets, not one key imported many times.
        let material = kms_client::generate_key_material(KeyType::Secp256k1)?;
        let r = client.import(&material).await?;
        export_urls.push(format!("{base}/v1/wallets/{}/export", r.wallet_id));
    }
    println!(
        "imported {} wallets through {base} in {:.1} s",
        a.small,
        start.elapsed().as_secs_f64()
    );
    let recipient = HpkeSecretKey::generate()?;
    let rk = b64::encode(recipient.public_key().as_bytes());
    let export_body = serde_json::to_vec(&serde_json::json!({"recipient_public_key": rk}))?;
    Ok(Fixture {
        http,
        export_urls,
        export_body,
    })
}

async fn export(f: &Fixture, i: usize) -> anyhow::Result<()> {
    let r = f
        .http
        .post(&f.export_urls[i])
        .body(f.export_body.clone())
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "export: {}", r.status());
    r.bytes().await?;
    Ok(())
}

/// Exports, each to one of the fixture's wallets drawn uniformly at random.
async fn level(f: &Arc<Fixture>, a: &Args, concurrency: usize) -> Level {
    let seed = Rng::seeded().next();
    let d = Drive {
        concurrency,
        warmup: a.warmup,
        seconds: a.seconds,
        rate: None,
        pids: &[],
    };
    let f = f.clone();
    drive(&d, move |i| {
        let f = f.clone();
        async move {
            let pick = Rng(seed ^ i as u64).below(f.export_urls.len());
            export(&f, pick).await
        }
    })
    .await
}

/// Per concurrency level: (ops/s, p50, p99, p99.9), each over the runs.
type Measured = Vec<(usize, Spread, Spread, Spread, Spread)>;

/// Summarises, prints and records the runs of each level of one stack.
fn summarise(
    a: &Args,
    real: usize,
    disk: &Disk,
    levels: &[(usize, Vec<Level>)],
) -> anyhow::Result<Measured> {
    let wallets = disk.wallets as usize;
    println!(
        "export over {real} real wallets among {wallets} stored: {} runs of {} s per level (median [min–max])",
        a.runs, a.seconds
    );
    let mut out = Vec::new();
    for (c, runs) in levels {
        let c = *c;
        let Spreads {
            ops,
            p50,
            p99,
            p999,
            errors,
        } = Spreads::of(runs);
        anyhow::ensure!(ops.median > 0.0, "every export failed");
        crate::append_json(
            a.json_out.as_deref(),
            &serde_json::json!({"bench": "scale", "wallets": wallets, "real_wallets": real,
                "concurrency": c, "ops_per_s": ops, "p50_ms": p50, "p99_ms": p99, "p999_ms": p999,
                "errors": errors, "bytes_per_wallet": disk.per_wallet_steady(),
                "row_and_index_bytes_per_wallet": disk.wallet_bytes(),
                "file_bytes_per_wallet": disk.file_bytes as f64 / wallets as f64,
                "db_bytes": disk.file_bytes}),
        )?;
        println!(
            "  c={c:<3} {:>7.0} ops/s [{:.0}–{:.0}]  p50 {:.2} ms [{:.2}–{:.2}]  p99 {:.2} ms [{:.2}–{:.2}]  p99.9 {:.2} ms  errors {errors}",
            ops.median, ops.min, ops.max, p50.median, p50.min, p50.max, p99.median, p99.min,
            p99.max, p999.median
        );
        out.push((c, ops, p50, p99, p999));
    }
    Ok(out)
}

fn open_db(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // Only this connection's cache (256 MiB): the random-order filler
    // inserts touch pages all over the b-tree.
    conn.pragma_update(None, "cache_size", -262_144)?;
    Ok(conn)
}

/// What the database file holds, after a checkpoint.
#[derive(Debug, Clone)]
struct Disk {
    wallets: u64,
    file_bytes: u64,
    wal_bytes: u64,
    page_size: u64,
    free_pages: u64,
    /// (b-tree name, rows, bytes of pages, payload bytes)
    btrees: Vec<(String, u64, u64, u64)>,
    /// Audit bytes (table pages) per real import, from the small phase.
    audit_per_import: f64,
}

impl Disk {
    fn pages_of(&self, name: &str) -> u64 {
        self.btrees
            .iter()
            .filter(|b| b.0 == name)
            .map(|b| b.2)
            .sum()
    }
    /// The wallet row and its index entry.
    fn wallet_bytes(&self) -> f64 {
        (self.pages_of("wallets") + self.pages_of("wallets_by_master_key_version")) as f64
            / self.wallets as f64
    }
    /// Steady state per wallet: its row, its index entry, and the audit
    /// records of its import (sessions are purged after expiry).
    fn per_wallet_steady(&self) -> f64 {
        self.wallet_bytes() + self.audit_per_import
    }
}

fn disk(path: &Path, audit_per_import: Option<f64>) -> anyhow::Result<Disk> {
    let conn = open_db(path)?;
    // kms-api's own checkpoint thread may be mid-checkpoint: retry a while.
    let mut busy = 1;
    for _ in 0..50 {
        busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        })?;
        if busy == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if busy != 0 {
        println!("  (checkpoint was blocked by a reader; the WAL is counted too)");
    }
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_bytes = size(Path::new(&wal));
    let file_bytes = size(path) + wal_bytes;
    let wallets: i64 = conn.query_row("SELECT count(*) FROM wallets", [], |r| r.get(0))?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let free_pages: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let mut btrees = Vec::new();
    let mut st = conn.prepare(
        "SELECT name, sum(ncell) FILTER (WHERE pagetype = 'leaf'), sum(pgsize), sum(payload)
           FROM dbstat GROUP BY name ORDER BY sum(pgsize) DESC",
    )?;
    let mut rows = st.query([])?;
    while let Some(r) = rows.next()? {
        let n: Option<i64> = r.get(1)?;
        let g = |i| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0) as u64);
        btrees.push((r.get::<_, String>(0)?, n.unwrap_or(0) as u64, g(2)?, g(3)?));
    }
    let audit_per_import = match audit_per_import {
        Some(v) => v,
        None => {
            let b = btrees.iter().find(|b| b.0 == "audit_records");
            b.map_or(0.0, |b| b.2 as f64) / wallets.max(1) as f64
        }
    };
    Ok(Disk {
        wallets: wallets as u64,
        file_bytes,
        wal_bytes,
        page_size: page_size as u64,
        free_pages: free_pages as u64,
        btrees,
        audit_per_import,
    })
}

fn print_disk(d: &Disk) {
    println!(
        "disk: {} wallets, file {:.1} MiB (WAL {} B after checkpoint, {} free pages of {} B)  = {:.0} B per wallet (whole file)",
        d.wallets,
        d.file_bytes as f64 / 1048576.0,
        d.wal_bytes,
        d.free_pages,
        d.page_size,
        d.file_bytes as f64 / d.wallets as f64
    );
    println!(
        "  {:<32} {:>9} {:>12} {:>12} {:>14} {:>10}",
        "b-tree", "rows", "page bytes", "payload B", "payload B/row", "B/wallet"
    );
    for (name, rows, pages, payload) in &d.btrees {
        println!(
            "  {:<32} {:>9} {:>12} {:>12} {:>14.0} {:>10.1}",
            name,
            rows,
            pages,
            payload,
            *payload as f64 / (*rows).max(1) as f64,
            *pages as f64 / d.wallets as f64
        );
    }
    println!(
        "  per wallet: row + index {:.0} B, + its import's audit records {:.0} B = {:.0} B steady state",
        d.wallet_bytes(),
        d.audit_per_import,
        d.per_wallet_steady()
    );
}

/// Grows `wallets` to `target` rows with filler copied from a real row.
fn fill(path: &Path, target: usize, batch: usize) -> anyhow::Result<()> {
    let mut conn = open_db(path)?;
    // Filler, not wallets: its durability does not matter.
    conn.pragma_update(None, "synchronous", "OFF")?;
    let have: i64 = conn.query_row("SELECT count(*) FROM wallets", [], |r| r.get(0))?;
    let template: Vec<u8> = conn.query_row(
        "SELECT wallet_id FROM wallets ORDER BY created_at LIMIT 1",
        [],
        |r| r.get(0),
    )?;
    let mut left = target.saturating_sub(have as usize);
    let mut rng = Rng::seeded();
    let mut batch = batch.max(1);
    let start = Instant::now();
    let mut longest = 0.0f64;
    let mut done = 0usize;
    let mut next_report = Instant::now() + Duration::from_secs(10);
    while left > 0 {
        let n = batch.min(left);
        let t = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO wallets (wallet_id, key_type, public_key, owner_public_key, created_at,
                                      master_key_version, wrapped_key, ciphertext)
                 SELECT ?1, key_type, public_key, owner_public_key, created_at,
                        master_key_version, wrapped_key, ciphertext
                   FROM wallets WHERE wallet_id = ?2",
            )?;
            for _ in 0..n {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&rng.next().to_le_bytes());
                id[8..].copy_from_slice(&rng.next().to_le_bytes());
                anyhow::ensure!(
                    st.execute(rusqlite::params![&id[..], &template])? == 1,
                    "filler insert"
                );
            }
        }
        tx.commit()?;
        let took = t.elapsed().as_secs_f64();
        longest = longest.max(took);
        if took > 1.0 && batch > 1000 {
            batch /= 2;
        }
        left -= n;
        done += n;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            println!(
                "  … {done} filler rows, {:.0} rows/s, batch {batch}",
                done as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "filled {done} rows in {secs:.1} s ({:.0} rows/s; longest transaction {longest:.2} s)",
        done as f64 / secs.max(1e-9)
    );
    Ok(())
}

async fn checkpointed(path: &Path, audit_per_import: Option<f64>) -> anyhow::Result<Disk> {
    let path = path.to_owned();
    let d = tokio::task::spawn_blocking(move || disk(&path, audit_per_import)).await??;
    print_disk(&d);
    Ok(d)
}

/// Runs every level `runs` times on each stack, alternating which goes
/// first; the levels of stack `i` are `out[i]`.
async fn alternate(a: &Args, fixtures: &[Arc<Fixture>]) -> Vec<Vec<(usize, Vec<Level>)>> {
    let mut out: Vec<Vec<(usize, Vec<Level>)>> = fixtures.iter().map(|_| Vec::new()).collect();
    for &c in &a.concurrency {
        for o in &mut out {
            o.push((c, Vec::new()));
        }
        for r in 0..a.runs {
            for k in 0..fixtures.len() {
                let i = if r % 2 == 0 {
                    k
                } else {
                    fixtures.len() - 1 - k
                };
                let l = level(&fixtures[i], a, c).await;
                if let Some(slot) = out[i].last_mut() {
                    slot.1.push(l);
                }
            }
        }
    }
    out
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.small > 0 && a.large >= a.small,
        "--large must be ≥ --small > 0"
    );
    let small_f = Arc::new(fixture(&a, &a.api_url).await?);
    // Bytes before any export: exports add audit records of their own.
    let small_disk = checkpointed(&a.db, None).await?;
    let audit = Some(small_disk.audit_per_import);
    let two = a.large_api_url.as_deref().zip(a.large_db.as_deref());
    let (small_m, large_f, large_db) = match two {
        Some((url, db)) => {
            let f = Arc::new(fixture(&a, url).await?);
            (None, f, db.to_owned())
        }
        None => {
            let levels = alternate(&a, std::slice::from_ref(&small_f)).await;
            let m = summarise(&a, a.small, &small_disk, &levels[0])?;
            (Some(m), small_f.clone(), a.db.clone())
        }
    };

    let (db, large, batch) = (large_db.clone(), a.large, a.batch);
    let t = Instant::now();
    tokio::task::spawn_blocking(move || fill(&db, large, batch)).await??;
    let fill_secs = t.elapsed().as_secs_f64();
    let large_disk = checkpointed(&large_db, audit).await?;
    println!(
        "  (the whole-file figure counts no audit records for the filler rows, but does count the\n   audit records of any exports measured so far; the steady-state figure counts neither)"
    );
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!(
        "  db {:.0} MiB vs RAM {:.0} MiB: the file, freshly written, sits in the OS page cache",
        large_disk.file_bytes as f64 / 1048576.0,
        mem_kib as f64 / 1024.0
    );
    let (small_m, large_m) = match small_m {
        Some(s) => {
            let levels = alternate(&a, std::slice::from_ref(&large_f)).await;
            (s, summarise(&a, a.small, &large_disk, &levels[0])?)
        }
        None => {
            println!("measuring the two stores in alternation");
            let levels = alternate(&a, &[small_f.clone(), large_f.clone()]).await;
            (
                summarise(&a, a.small, &small_disk, &levels[0])?,
                summarise(&a, a.small, &large_disk, &levels[1])?,
            )
        }
    };

    println!(
        "== scale: {} vs {} wallets (fill {fill_secs:.0} s)",
        a.small, large_disk.wallets
    );
    let mut all_within = true;
    for ((c, so, s50, s99, _), (_, lo, l50, l99, _)) in small_m.iter().zip(&large_m) {
        let r50 = l50.median / s50.median;
        let r99 = l99.median / s99.median;
        all_within &= r50 <= 1.2;
        println!(
            "  c={c:<3} ops/s {:.0} → {:.0}  p50 {:.2} → {:.2} ms (×{r50:.2})  p99 {:.2} → {:.2} ms (×{r99:.2})",
            so.median, lo.median, s50.median, l50.median, s99.median, l99.median
        );
        crate::append_json(
            a.json_out.as_deref(),
            &serde_json::json!({"bench": "scale-ratio", "small": a.small, "large": large_disk.wallets,
                "concurrency": c, "p50_ratio": r50, "p99_ratio": r99,
                "ops_ratio": lo.median / so.median, "fill_seconds": fill_secs,
                "alternated": two.is_some()}),
        )?;
    }
    let bpw = large_disk.per_wallet_steady();
    println!(
        "  target: p50 at {} within 20 % of {}: {}; ≤ 400 B per wallet: {:.0} B steady state (row + index {:.0} B + import audit {:.0} B) → {}",
        large_disk.wallets,
        a.small,
        if all_within { "met" } else { "NOT met" },
        bpw,
        large_disk.wallet_bytes(),
        large_disk.audit_per_import,
        if bpw <= 400.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
