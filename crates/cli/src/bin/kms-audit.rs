//! `kms-audit`: export the audit chain from kms-api, verify it offline.

use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kms_cli::{fetch_all, read_records, verify, Verdict};

/// Exports and verifies the KMS audit chain (docs/audit-log.md).
#[derive(Debug, Parser)]
#[command(name = "kms-audit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every audit record from kms-api as JSON lines.
    Export {
        /// Base URL of kms-api.
        #[arg(long, env = "KMS_API_URL", default_value = "http://127.0.0.1:3002")]
        api_url: String,
    },
    /// Verify a full export: seq from 1 without gaps, every hash link, every
    /// signature under the pinned identity key. Names the first bad record.
    Verify {
        /// The identity public key (base64url), pinned out of band.
        #[arg(
            long,
            env = "KMS_IDENTITY_PUBLIC_KEY",
            conflicts_with = "identity_file"
        )]
        identity: Option<String>,
        /// A file holding the identity public key (e.g. identity.pub).
        #[arg(long)]
        identity_file: Option<PathBuf>,
        /// Fetch the chain from this kms-api instead of reading a file.
        #[arg(long, conflicts_with = "file")]
        api_url: Option<String>,
        /// An export (JSON lines); `-` or nothing for standard input.
        file: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kms-audit: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Export { api_url } => {
            let records = fetch_all(&api_url).await?;
            let mut out = io::stdout().lock();
            for r in &records {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
            out.flush()?;
            eprintln!("exported {} records", records.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            identity,
            identity_file,
            api_url,
            file,
        } => {
            let text = match (identity, identity_file) {
                (Some(k), _) => k,
                (None, Some(path)) => std::fs::read_to_string(path)?,
                (None, None) => anyhow::bail!("give --identity KEY or --identity-file PATH"),
            };
            let identity = kms_client::parse_identity_public_key(&text)?;
            let (records, unparsable) = match (api_url, file) {
                (Some(url), _) => (fetch_all(&url).await?, None),
                (None, Some(path)) if path.as_os_str() != "-" => {
                    read_records(BufReader::new(File::open(path)?))
                }
                _ => read_records(io::stdin().lock()),
            };
            match verify(&records, unparsable, &identity) {
                Verdict::Ok {
                    records,
                    last_seq,
                    head,
                } => {
                    let head = head.map(|h| h.to_string()).unwrap_or_else(|| "none".into());
                    println!("ok: {records} records, seq 1..{last_seq}, head {head}");
                    Ok(ExitCode::SUCCESS)
                }
                Verdict::Bad(e) => {
                    println!(
                        "FAILED: first bad record is #{} (seq {}): {}",
                        e.position, e.seq, e.reason
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
