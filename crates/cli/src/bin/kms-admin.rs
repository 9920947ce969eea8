//! `kms-admin`: master-key rotation, the re-wrap job and retirement,
//! through kms-api's admin API (`--admin-listen`; docs/key-lifecycle.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kms_protocol::admin::{
    KeysOverview, RewrapState, RewrapStatus, StartRewrap, PATH_KEYS, PATH_RETIRE_PREFIX,
    PATH_REWRAP, PATH_ROTATE,
};

/// Rotates, re-wraps and retires the KMS's master keys. Every command is
/// safe to run again: rotate makes one more version, rewrap joins or
/// resumes the job, retire refuses a version still in use.
#[derive(Debug, Parser)]
#[command(name = "kms-admin", version, about)]
struct Cli {
    /// Base URL of kms-api's admin API (its --admin-listen address).
    #[arg(
        long,
        env = "KMS_ADMIN_URL",
        default_value = "http://127.0.0.1:3003",
        global = true
    )]
    admin_url: String,
    /// File holding the admin bearer token, if kms-api requires one.
    #[arg(long, env = "KMS_ADMIN_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Master key versions, wallets under each, and the re-wrap job.
    Status,
    /// Make a new master key version current for new wallets at once.
    Rotate,
    /// Move every wallet's data key to the current version (start the job,
    /// or join the one running), showing progress until it is done.
    Rewrap {
        /// Wallets per batch (1–1000); each batch is one transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: u32,
        /// Start (or join) the job and return at once.
        #[arg(long)]
        no_wait: bool,
    },
    /// Retire a master key version no wallet or open session uses. Data
    /// keys callers hold under it stop decrypting.
    Retire { version: u32 },
}

struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.base.trim_end_matches('/')));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        r: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = r
            .send()
            .await
            .with_context(|| format!("reaching the admin API at {}", self.base))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<kms_protocol::ErrorBody>(&body)
                .map(|e| e.error.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("{status}: {message}");
        }
        serde_json::from_slice(&body).context("reading the admin API's answer")
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms-admin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let token = match &cli.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let api = Api {
        base: cli.admin_url.clone(),
        token,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?,
    };
    match cli.command {
        Command::Status => {
            let keys: KeysOverview = api
                .send(api.request(reqwest::Method::GET, PATH_KEYS))
                .await?;
            let job: RewrapStatus = api
                .send(api.request(reqwest::Method::GET, PATH_REWRAP))
                .await?;
            if cli.json {
                println!("{}", serde_json::json!({"keys": keys, "rewrap": job}));
            } else {
                print_keys(&keys);
                print_job(&job);
            }
        }
        Command::Rotate => {
            let keys: KeysOverview = api
                .send(api.request(reqwest::Method::POST, PATH_ROTATE))
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string(&keys)?);
            } else {
                println!("master key version {} is now current", keys.current_version);
                print_keys(&keys);
                let behind: u64 = keys
                    .versions
                    .iter()
                    .filter(|v| !v.current)
                    .map(|v| v.wallets)
                    .sum();
                if behind > 0 {
                    println!("{behind} wallets are under older versions: run `kms-admin rewrap`");
                }
            }
        }
        Command::Retire { version } => {
            let keys: KeysOverview = api
                .send(api.request(
                    reqwest::Method::POST,
                    &format!("{PATH_RETIRE_PREFIX}{version}/retire"),
                ))
                .await?;
            if cli.json {
                println!("{}", serde_json::to_string(&keys)?);
            } else {
                println!("master key version {version} retired");
                print_keys(&keys);
            }
        }
        Command::Rewrap {
            batch_size,
            no_wait,
        } => {
            let started: RewrapStatus = api
                .send(
                    api.request(reqwest::Method::POST, PATH_REWRAP)
                        .json(&StartRewrap {
                            batch_size: Some(batch_size),
                        }),
                )
                .await?;
            if no_wait {
                if cli.json {
                    println!("{}", serde_json::to_string(&started)?);
                } else {
                    print_job(&started);
                }
                return Ok(());
            }
            let done = follow(&api, started, cli.json).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&done)?);
            } else {
                print_job(&done);
            }
            if done.state == RewrapState::Failed {
                anyhow::bail!("the re-wrap job failed; run `kms-admin rewrap` again to resume");
            }
            if done.failed > 0 {
                anyhow::bail!(
                    "{} wallets could not be re-wrapped (damaged rows; see kms-api's log)",
                    done.failed
                );
            }
        }
    }
    Ok(())
}

/// Polls the job, drawing a progress bar (on a terminal), until it ends.
async fn follow(api: &Api, mut job: RewrapStatus, quiet: bool) -> anyhow::Result<RewrapStatus> {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(job.rewrapped + job.remaining)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} wallets ({per_sec}, ETA {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    while job.state == RewrapState::Running {
        tokio::time::sleep(Duration::from_millis(250)).await;
        job = api
            .send(api.request(reqwest::Method::GET, PATH_REWRAP))
            .await?;
        bar.set_length(job.rewrapped + job.remaining);
        bar.set_position(job.rewrapped);
        bar.set_message(job.message.clone().unwrap_or_default());
    }
    bar.finish_and_clear();
    Ok(job)
}

fn print_keys(k: &KeysOverview) {
    println!("root-key provider: {}", k.provider);
    println!(
        "{:>8}  {:>7}  {:>12}  {:>13}",
        "version", "current", "wallets", "open sessions"
    );
    for v in &k.versions {
        println!(
            "{:>8}  {:>7}  {:>12}  {:>13}",
            v.version,
            if v.current { "yes" } else { "" },
            v.wallets,
            v.open_sessions
        );
    }
    if !k.retired.is_empty() {
        let r: Vec<String> = k.retired.iter().map(u32::to_string).collect();
        println!("retired: {}", r.join(", "));
    }
}

fn print_job(j: &RewrapStatus) {
    let state = match j.state {
        RewrapState::Idle => "idle",
        RewrapState::Running => "running",
        RewrapState::Done => "done",
        RewrapState::Failed => "failed",
    };
    print!("re-wrap: {state}");
    if let Some(t) = j.target_version {
        print!(
            ", to version {t}: {} moved, {} remaining, {} failed, {} batches, {}/s",
            j.rewrapped, j.remaining, j.failed, j.batches, j.per_second
        );
    }
    if let Some(eta) = j.eta_seconds {
        print!(", ETA {eta} s");
    }
    if let Some(m) = &j.message {
        print!(" ({m})");
    }
    println!();
}
