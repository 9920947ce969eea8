//! Command line and environment (docs/design.md, "Command line").

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The untrusted public API of the KMS: validates, stores ciphertext, and
/// relays to the secure environment. It holds no key material.
#[derive(Debug, Parser)]
#[command(name = "kms-api", version, about, long_about = None)]
pub struct Cli {
    /// Address to listen on; port 0 picks a free port. Put a TLS-terminating
    /// reverse proxy in front of it for anything but loopback.
    #[arg(long, env = "KMS_API_LISTEN", default_value = "127.0.0.1:3002")]
    pub listen: SocketAddr,

    /// Base URL of the secure environment: plain http on a local address,
    /// or unix:/path/to/socket for its Unix socket.
    #[arg(
        long,
        env = "KMS_SECURE_ENV_URL",
        default_value = "http://127.0.0.1:3000"
    )]
    pub secure_env_url: String,

    /// Directory for kms-api's own data (the SQLite file by default). Created 0700.
    #[arg(long, env = "KMS_API_DATA_DIR", default_value = "data/kms-api")]
    pub data_dir: PathBuf,

    /// Database URL: sqlite://PATH. Default: kms.sqlite in the data dir.
    /// postgres:// is refused until its store exists.
    #[arg(long, env = "KMS_DATABASE_URL")]
    pub database_url: Option<String>,

    /// How often to copy audit records this store missed from the secure
    /// environment, in seconds.
    #[arg(long, env = "KMS_AUDIT_SYNC_INTERVAL", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub audit_sync_interval: u64,

    /// Serve the admin API (key rotation, re-wrap, retirement) on this
    /// address. Off unless given; must be loopback unless
    /// --admin-allow-remote.
    #[arg(long, env = "KMS_API_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Allow the admin API on a non-loopback address (then give it
    /// --admin-token-file too).
    #[arg(long, env = "KMS_API_ADMIN_ALLOW_REMOTE")]
    pub admin_allow_remote: bool,

    /// File holding a bearer token every admin request must carry
    /// (`Authorization: Bearer TOKEN`). Required with --admin-allow-remote.
    #[arg(long, env = "KMS_API_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Serve the secure environments' callbacks (the key provider's store
    /// of sealed keys and audit copies, docs/bitgo.md) on this address.
    /// Off unless given. Bind it to a private address the secure
    /// environments reach and the public does not (never --listen's).
    #[arg(long, env = "KMS_API_INTERNAL_LISTEN")]
    pub internal_listen: Option<SocketAddr>,

    /// Relay TCP connections on this address to the secure environment's
    /// key-provider listener (--bitgo-upstream): the address BitGo's
    /// wallet manager is given as KEY_PROVIDER_URL (https://). The TLS
    /// session passes through unopened.
    #[arg(long, env = "KMS_API_BITGO_LISTEN", requires = "bitgo_upstream")]
    pub bitgo_listen: Option<SocketAddr>,

    /// HOST:PORT of the secure environment's `--bitgo-listen`.
    #[arg(long, env = "KMS_API_BITGO_UPSTREAM", requires = "bitgo_listen")]
    pub bitgo_upstream: Option<String>,

    #[command(flatten)]
    pub limits: kms_serve::Limits,
}
