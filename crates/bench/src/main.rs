//! `kms-bench`: how close the KMS runs to the cost of its cryptography.
//!
//! - `limit`: each operation's secure-environment work, in process and on
//!   one thread, through the very `SecureRuntime` calls the server makes
//!   (crypto, and the audit record's signature; the audit log sits on a
//!   tmpfs so its fsync costs nothing). Reported as ops/s per core.
//! - `load`: the real binaries over loopback, at fixed concurrency levels:
//!   throughput, latency percentiles, errors, and CPU and RSS of the server
//!   processes named with `--pid`.
//! - `floor-server`: the same two-process, two-hop shape with no storage
//!   and no JSON, and either nothing in it or one operation's
//!   cryptography: what the architecture alone costs on this machine, and
//!   the most it can reach for each operation (the ceiling).
//!
//! A benchmark, not a test: nothing in `cargo test` depends on its numbers.
//! `scripts/bench.sh` runs them against release builds and writes the
//! figures `docs/performance.md` reports.

mod bitgo;
mod floor;
mod limit;
mod load;
mod openbao;
mod scale;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "kms-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Crypto-only cost of each operation, single-threaded, in process.
    Limit(limit::Args),
    /// Load against a running kms-api.
    Load(load::Args),
    /// The same load against OpenBao's Transit engine (the peer).
    Openbao(openbao::Args),
    /// Export latency with few and with many wallets stored; bytes per wallet.
    Scale(scale::Args),
    /// An empty server or relay standing in for the secure environment or
    /// kms-api: the architecture's own cost, or with `--crypto` an
    /// operation's ceiling (`load --op floor` drives it).
    FloorServer(floor::Args),
    /// Certificates for the BitGo key-provider benchmark.
    BitgoCerts(bitgo::CertArgs),
    /// Load against the BitGo key provider over mTLS.
    Bitgo(bitgo::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Limit(a) => limit::run(&a),
        Command::Load(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(a.client_threads)
                .enable_all()
                .build()?;
            rt.block_on(load::run(a))
        }
        Command::Openbao(a) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(openbao::run(a)),
        Command::Scale(a) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(scale::run(a)),
        Command::BitgoCerts(a) => bitgo::certs(&a),
        Command::Bitgo(a) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(bitgo::run(a)),
        Command::FloorServer(a) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(floor::run(a)),
    }
}

/// Median and spread (min, max) of repeated measurements.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(mut xs: Vec<f64>) -> Self {
        xs.sort_by(f64::total_cmp);
        let median = if xs.is_empty() { 0.0 } else { xs[xs.len() / 2] };
        Self {
            median,
            min: xs.first().copied().unwrap_or(0.0),
            max: xs.last().copied().unwrap_or(0.0),
        }
    }
}

/// Appends one JSON line to `path`, if given.
pub fn append_json(path: Option<&std::path::Path>, v: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(path) = path {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{v}")?;
    }
    Ok(())
}
