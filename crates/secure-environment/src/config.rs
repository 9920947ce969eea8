//! Command line and environment (docs/design.md, "Command line").

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use kms_crypto::kdf::Argon2Params;

use secure_runtime::root::{
    AwsKmsSettings, LocalSettings, Pkcs11Settings, RootKeyKind, RootKeySpec, NEW_PASSPHRASE_ENV,
    NEW_PIN_ENV, PASSPHRASE_ENV, PIN_ENV,
};

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

    #[command(flatten)]
    pub root: RootKeyArgs,

    /// Address to listen on: HOST:PORT (port 0 picks a free port) or
    /// unix:/path/to/socket. Keep it local: only kms-api should reach it. A
    /// Unix socket (created mode 0600, in a directory only this user can
    /// enter) restricts that to one user and skips the TCP stack.
    #[arg(long, env = "SECURE_ENV_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: kms_serve::ListenAddr,

    /// Lifetime of an import session in seconds.
    #[arg(long, env = "SECURE_ENV_SESSION_TTL", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub session_ttl: u64,

    /// How many HD nodes (each wallet's root per curve, and the paths asked
    /// for) to keep in memory, so a `bip39` wallet's 2048-round seed and a
    /// path's derivation are computed once, not on every derive and sign.
    /// 0 keeps none.
    #[arg(long, env = "SECURE_ENV_HD_NODE_CACHE_ENTRIES",
          default_value_t = secure_runtime::runtime::DEFAULT_HD_NODE_CACHE_ENTRIES)]
    pub hd_node_cache_entries: usize,

    #[command(flatten)]
    pub bitgo: BitgoArgs,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub limits: kms_serve::Limits,
}

/// The key provider for BitGo's Advanced Wallet Manager (docs/bitgo.md):
/// an HTTPS listener whose TLS ends here, reached through kms-api's TCP
/// relay (`kms-api --bitgo-listen … --bitgo-upstream …`). Off unless
/// `--bitgo-listen` is given.
#[derive(Debug, Clone, Args)]
pub struct BitgoArgs {
    /// Address of the key provider's TLS listener (HOST:PORT; port 0 picks
    /// a free port). kms-api relays the manager's connections to it.
    #[arg(long, env = "SECURE_ENV_BITGO_LISTEN")]
    pub bitgo_listen: Option<std::net::SocketAddr>,

    /// The listener's certificate chain (PEM, leaf first), signed by the
    /// CA the wallet manager trusts (`KEY_PROVIDER_SERVER_CA_CERT_PATH`).
    #[arg(long, env = "SECURE_ENV_BITGO_TLS_CERT", requires = "bitgo_listen")]
    pub bitgo_tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM, PKCS#8, SEC1 or PKCS#1), for
    /// development. Without it the listener uses the key set's own TLS key,
    /// which never leaves the secure environment: `bitgo-csr` prints a CSR
    /// for it, for the operator's CA to sign into --bitgo-tls-cert.
    #[arg(long, env = "SECURE_ENV_BITGO_TLS_KEY", requires = "bitgo_listen")]
    pub bitgo_tls_key: Option<PathBuf>,

    /// The CA (PEM, one or more certificates) whose client certificates
    /// may connect: the wallet manager's `KEY_PROVIDER_CLIENT_TLS_CERT`.
    /// A connection without one, or with one from another CA, fails its
    /// handshake.
    #[arg(long, env = "SECURE_ENV_BITGO_CLIENT_CA", requires = "bitgo_listen")]
    pub bitgo_client_ca: Option<PathBuf>,

    /// Development only: accept connections without a client certificate.
    #[arg(long, env = "SECURE_ENV_BITGO_INSECURE_NO_CLIENT_AUTH")]
    pub bitgo_insecure_no_client_auth: bool,

    /// kms-api's internal listener (`kms-api --internal-listen`), through
    /// which the key provider stores and finds its sealed keys and stores
    /// its audit records: http://HOST:PORT.
    #[arg(long, env = "SECURE_ENV_KMS_API_URL", requires = "bitgo_listen")]
    pub kms_api_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the identity public key (base64url and a newline) so an
    /// operator can pin it, creating the key set if there is none.
    Identity,
    /// Re-seal the key set under a new root key or another provider (e.g.
    /// local → pkcs11). The current provider is given by the usual
    /// `--root-key…` settings, the new one by `--to…`; settings not given
    /// for the new one are taken from the current one. Master keys and the
    /// identity key are kept, so wallets and clients' pins survive. Run it
    /// with the server stopped; it is recorded in the audit log.
    Reseal(ResealArgs),
    /// Print a certificate signing request (PEM) for the key provider's
    /// TLS key, which is derived from the key set and never leaves the
    /// secure environment (docs/bitgo.md), creating the key set if there
    /// is none. Have the CA that BitGo's wallet manager trusts sign it,
    /// and give the certificate as --bitgo-tls-cert without
    /// --bitgo-tls-key.
    BitgoCsr(BitgoCsrArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BitgoCsrArgs {
    /// A DNS name or IP address the wallet manager reaches the provider
    /// by (KEY_PROVIDER_URL's host); repeat for more. The first is also
    /// the common name.
    #[arg(long = "bitgo-server-name", required = true)]
    pub names: Vec<String>,
}

/// Where the root key is held (`--root-key`), and each provider's settings.
#[derive(Debug, Clone, Args)]
pub struct RootKeyArgs {
    /// The root-key provider.
    #[arg(
        long = "root-key",
        env = "SECURE_ENV_ROOT_KEY",
        value_enum,
        default_value = "local",
        global = true
    )]
    pub kind: RootKeyArg,

    /// local: file holding the 32-byte root key (default: root.key in the
    /// data dir — development only: a root key beside the blob it seals
    /// protects nothing against whoever holds the directory). Created when
    /// a new key set is created.
    #[arg(long, env = "SECURE_ENV_ROOT_KEY_FILE", global = true)]
    pub root_key_file: Option<PathBuf>,

    /// local: derive the root key from the passphrase in this file with
    /// Argon2id instead of reading a key file. The passphrase may also come
    /// from the environment variable SECURE_ENV_ROOT_PASSPHRASE, never a flag.
    #[arg(long, env = "SECURE_ENV_ROOT_PASSPHRASE_FILE", global = true)]
    pub root_passphrase_file: Option<PathBuf>,

    /// local passphrase: Argon2id memory in KiB for new seals (opening
    /// reads the parameters stored with the sealed key set).
    #[arg(long, env = "SECURE_ENV_ARGON2_MEMORY_KIB", default_value_t = Argon2Params::DEFAULT.memory_kib,
          value_parser = clap::value_parser!(u32).range(64..=i64::from(Argon2Params::MAX_MEMORY_KIB)), global = true)]
    pub argon2_memory_kib: u32,

    /// local passphrase: Argon2id passes for new seals.
    #[arg(long, env = "SECURE_ENV_ARGON2_ITERATIONS", default_value_t = Argon2Params::DEFAULT.iterations,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(Argon2Params::MAX_ITERATIONS)), global = true)]
    pub argon2_iterations: u32,

    /// local passphrase: Argon2id lanes for new seals.
    #[arg(long, env = "SECURE_ENV_ARGON2_PARALLELISM", default_value_t = Argon2Params::DEFAULT.parallelism,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(Argon2Params::MAX_PARALLELISM)), global = true)]
    pub argon2_parallelism: u32,

    /// pkcs11: the PKCS#11 module (e.g. /usr/lib/softhsm/libsofthsm2.so).
    #[arg(long, env = "SECURE_ENV_PKCS11_MODULE", global = true)]
    pub pkcs11_module: Option<PathBuf>,

    /// pkcs11: the token's label (default: the first token present).
    #[arg(long, env = "SECURE_ENV_PKCS11_TOKEN_LABEL", global = true)]
    pub pkcs11_token_label: Option<String>,

    /// pkcs11: the label of the non-extractable AES-256 root key; created
    /// in the token when a new key set is created and none exists.
    #[arg(
        long,
        env = "SECURE_ENV_PKCS11_KEY_LABEL",
        default_value = "kms-root-key",
        global = true
    )]
    pub pkcs11_key_label: String,

    /// pkcs11: file holding the user PIN. The PIN may also come from the
    /// environment variable SECURE_ENV_PKCS11_PIN, never a flag.
    #[arg(long, env = "SECURE_ENV_PKCS11_PIN_FILE", global = true)]
    pub pkcs11_pin_file: Option<PathBuf>,

    /// aws-kms: key id, ARN or alias of the AWS KMS key.
    #[arg(long, env = "SECURE_ENV_AWS_KMS_KEY_ID", global = true)]
    pub aws_kms_key_id: Option<String>,

    /// aws-kms: endpoint URL (an emulator or a VPC endpoint); default AWS's.
    #[arg(long, env = "SECURE_ENV_AWS_KMS_ENDPOINT", global = true)]
    pub aws_kms_endpoint: Option<String>,

    /// aws-kms: region (default: AWS_REGION or the profile's).
    #[arg(long, env = "SECURE_ENV_AWS_REGION", global = true)]
    pub aws_region: Option<String>,

    /// aws-kms: this deployment's name, bound into the encryption context.
    #[arg(
        long,
        env = "SECURE_ENV_DEPLOYMENT",
        default_value = "kms",
        global = true
    )]
    pub deployment: String,
}

/// The new provider of `secure-environment reseal`.
#[derive(Debug, Clone, Args)]
pub struct ResealArgs {
    /// The new root-key provider.
    #[arg(id = "to", long = "to", value_enum)]
    pub kind: RootKeyArg,
    /// local: the new root key file (created if absent).
    #[arg(id = "to_root_key_file", long = "to-root-key-file")]
    pub root_key_file: Option<PathBuf>,
    /// local: the new passphrase file (or SECURE_ENV_NEW_ROOT_PASSPHRASE).
    #[arg(id = "to_root_passphrase_file", long = "to-root-passphrase-file")]
    pub root_passphrase_file: Option<PathBuf>,
    /// pkcs11: the new module.
    #[arg(id = "to_pkcs11_module", long = "to-pkcs11-module")]
    pub pkcs11_module: Option<PathBuf>,
    /// pkcs11: the new token label.
    #[arg(id = "to_pkcs11_token_label", long = "to-pkcs11-token-label")]
    pub pkcs11_token_label: Option<String>,
    /// pkcs11: the new key label.
    #[arg(id = "to_pkcs11_key_label", long = "to-pkcs11-key-label")]
    pub pkcs11_key_label: Option<String>,
    /// pkcs11: the new PIN file (or SECURE_ENV_NEW_PKCS11_PIN).
    #[arg(id = "to_pkcs11_pin_file", long = "to-pkcs11-pin-file")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// aws-kms: the new key id.
    #[arg(id = "to_aws_kms_key_id", long = "to-aws-kms-key-id")]
    pub aws_kms_key_id: Option<String>,
    /// aws-kms: the new endpoint.
    #[arg(id = "to_aws_kms_endpoint", long = "to-aws-kms-endpoint")]
    pub aws_kms_endpoint: Option<String>,
}

/// The `--root-key` / `--to` values (clap's view of [`RootKeyKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RootKeyArg {
    /// A key file or a passphrase (Argon2id) on this machine.
    Local,
    /// A non-extractable AES-256 key in a PKCS#11 token.
    Pkcs11,
    /// An AWS KMS key.
    #[value(name = "aws-kms")]
    AwsKms,
}

impl From<RootKeyArg> for RootKeyKind {
    fn from(a: RootKeyArg) -> Self {
        match a {
            RootKeyArg::Local => Self::Local,
            RootKeyArg::Pkcs11 => Self::Pkcs11,
            RootKeyArg::AwsKms => Self::AwsKms,
        }
    }
}

impl RootKeyArgs {
    /// The provider's settings; the key file defaults into `data_dir`.
    pub fn spec(&self, data_dir: &std::path::Path) -> anyhow::Result<RootKeySpec> {
        self.spec_with(data_dir, PASSPHRASE_ENV, PIN_ENV)
    }

    fn spec_with(
        &self,
        data_dir: &std::path::Path,
        passphrase_env: &'static str,
        pin_env: &'static str,
    ) -> anyhow::Result<RootKeySpec> {
        Ok(match RootKeyKind::from(self.kind) {
            RootKeyKind::Local => RootKeySpec::Local(LocalSettings {
                key_file: self
                    .root_key_file
                    .clone()
                    .unwrap_or_else(|| data_dir.join(secure_runtime::keystore::ROOT_KEY_FILE)),
                passphrase_file: self.root_passphrase_file.clone(),
                passphrase_env,
                argon2: Argon2Params {
                    memory_kib: self.argon2_memory_kib,
                    iterations: self.argon2_iterations,
                    parallelism: self.argon2_parallelism,
                },
            }),
            RootKeyKind::Pkcs11 => RootKeySpec::Pkcs11(Pkcs11Settings {
                module: self.pkcs11_module.clone().ok_or_else(|| {
                    anyhow::anyhow!(
                        "--root-key pkcs11 needs --pkcs11-module (SECURE_ENV_PKCS11_MODULE)"
                    )
                })?,
                token_label: self.pkcs11_token_label.clone(),
                key_label: self.pkcs11_key_label.clone(),
                pin_file: self.pkcs11_pin_file.clone(),
                pin_env,
            }),
            RootKeyKind::AwsKms => RootKeySpec::AwsKms(AwsKmsSettings {
                key_id: self.aws_kms_key_id.clone().ok_or_else(|| {
                    anyhow::anyhow!(
                        "--root-key aws-kms needs --aws-kms-key-id (SECURE_ENV_AWS_KMS_KEY_ID)"
                    )
                })?,
                endpoint: self.aws_kms_endpoint.clone(),
                region: self.aws_region.clone(),
                deployment: self.deployment.clone(),
            }),
        })
    }
}

impl ResealArgs {
    /// The new provider's settings: the current ones, overridden by `--to…`.
    pub fn spec(
        &self,
        current: &RootKeyArgs,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<RootKeySpec> {
        let mut next = current.clone();
        next.kind = self.kind;
        // A new local root key needs its own file or passphrase: reusing
        // the current one would re-seal under the same root key.
        next.root_key_file = self.root_key_file.clone().or(match current.kind {
            RootKeyArg::Local => None,
            _ => current.root_key_file.clone(),
        });
        next.root_passphrase_file = self.root_passphrase_file.clone();
        if let Some(m) = &self.pkcs11_module {
            next.pkcs11_module = Some(m.clone());
        }
        if let Some(t) = &self.pkcs11_token_label {
            next.pkcs11_token_label = Some(t.clone());
        }
        if let Some(l) = &self.pkcs11_key_label {
            next.pkcs11_key_label = l.clone();
        }
        if let Some(p) = &self.pkcs11_pin_file {
            next.pkcs11_pin_file = Some(p.clone());
        }
        if let Some(k) = &self.aws_kms_key_id {
            next.aws_kms_key_id = Some(k.clone());
        }
        if let Some(e) = &self.aws_kms_endpoint {
            next.aws_kms_endpoint = Some(e.clone());
        }
        let pin_env = if self.pkcs11_pin_file.is_some() || std::env::var_os(NEW_PIN_ENV).is_some() {
            NEW_PIN_ENV
        } else {
            PIN_ENV
        };
        next.spec_with(data_dir, NEW_PASSPHRASE_ENV, pin_env)
    }
}
