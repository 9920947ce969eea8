//! Command line and environment (DESIGN.md, "Command line").

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The trusted side of the KMS: holds the key set, runs every cryptographic
/// operation, and serves an internal API to kms-api on a local address.
#[derive(Debug, Parser)]
#[command(name = "secure-environment", version, about, long_about = None)]
pub struct Cli {
    /// Directory holding the sealed key set, identity.pub and (for the
    /// development root key) root.key. Created 0700.
    #[arg(
        long,
        env = "SECURE_ENV_DATA_DIR",
        default_value = "data/secure-environment",
        global = true
    )]
    pub data_dir: PathBuf,

    /// File holding the 32-byte local root key that seals the key set
    /// (default: root.key in the data dir — development only: a root key
    /// beside the blob it seals protects nothing against whoever holds the
    /// directory).
    #[arg(long, env = "SECURE_ENV_ROOT_KEY_FILE", global = true)]
    pub root_key_file: Option<PathBuf>,

    /// Address to listen on; port 0 picks a free port. Keep it local
    /// (loopback, a Unix-socket proxy, vsock): only kms-api should reach it.
    #[arg(long, env = "SECURE_ENV_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,

    /// Lifetime of an import session in seconds.
    #[arg(long, env = "SECURE_ENV_SESSION_TTL", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub session_ttl: u64,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub limits: kms_serve::Limits,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the identity public key (base64url and a newline) so an
    /// operator can pin it, creating the key set if there is none.
    Identity,
}
