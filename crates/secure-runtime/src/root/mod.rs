//! Root-key providers (docs/design.md, "Key hierarchy"): whatever holds the root
//! key wraps and unwraps the 32-byte key that seals the key set, and never
//! hands the root key out.
//!
//! - `local`: a 32-byte key file, or a passphrase stretched with Argon2id;
//! - `pkcs11`: a non-extractable AES-256 key in a PKCS#11 token (feature `pkcs11`);
//! - `aws-kms`: an AWS KMS key, through Encrypt/Decrypt with an encryption
//!   context naming this deployment (feature `aws-kms`).
//!
//! Each provider binds what it wraps to the label `kms/keyset-key/v1` (as
//! AAD, or as AWS's encryption context), and the sealed key set binds the
//! provider's name and its wrapped key as AAD, so a blob moved between
//! providers or deployments does not open.

use std::fmt;
use std::path::PathBuf;

use kms_crypto::kdf::Argon2Params;
use kms_crypto::{SecretBytes, SecretKey};

#[cfg(feature = "aws-kms")]
pub mod aws_kms;
pub mod local;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;

/// Wraps and unwraps the key-set key. Implementations block (an HSM or a
/// network call); the secure environment calls them at start, and from a
/// blocking thread when an administrator rotates.
pub trait RootKeyProvider: Send + Sync + fmt::Debug {
    /// The name recorded in the sealed key set: `local`, `pkcs11`, `aws-kms`.
    fn name(&self) -> &'static str;
    /// Wraps a fresh key-set key. The result is stored in the clear.
    fn wrap(&self, key: &SecretKey) -> Result<Vec<u8>, RootKeyError>;
    /// Unwraps what [`RootKeyProvider::wrap`] returned.
    fn unwrap(&self, wrapped: &[u8]) -> Result<SecretKey, RootKeyError>;
}

/// Why a provider could not wrap or unwrap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootKeyError {
    /// Settings missing or contradictory.
    #[error("root key configuration: {0}")]
    Config(String),
    /// The backend (token, service, file) cannot be reached or used.
    #[error("root key provider {provider} unavailable: {detail}")]
    Unavailable {
        provider: &'static str,
        detail: String,
    },
    /// The backend answered, but the wrapped key does not unwrap under
    /// this root key (wrong key, wrong deployment, or tampered).
    #[error("root key provider {provider} refused to unwrap the key-set key: {detail}")]
    Refused {
        provider: &'static str,
        detail: String,
    },
    /// The wrapped key is not in a format this provider writes.
    #[error("root key provider {0}: the wrapped key-set key is malformed")]
    Malformed(&'static str),
    /// The provider is not compiled into this build.
    #[error("this build has no {0} root-key provider; rebuild with `--features {0}`")]
    NotBuilt(&'static str),
}

/// Environment variables holding secrets (never flags): the local
/// provider's passphrase and the PKCS#11 PIN, and their twins for the new
/// provider of a re-seal.
pub const PASSPHRASE_ENV: &str = "SECURE_ENV_ROOT_PASSPHRASE";
pub const PIN_ENV: &str = "SECURE_ENV_PKCS11_PIN";
pub const NEW_PASSPHRASE_ENV: &str = "SECURE_ENV_NEW_ROOT_PASSPHRASE";
pub const NEW_PIN_ENV: &str = "SECURE_ENV_NEW_PKCS11_PIN";

/// Which provider holds the root key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKeyKind {
    /// A key file or a passphrase (Argon2id) on this machine.
    Local,
    /// A non-extractable AES-256 key in a PKCS#11 token.
    Pkcs11,
    /// An AWS KMS key.
    AwsKms,
}

impl RootKeyKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Pkcs11 => "pkcs11",
            Self::AwsKms => "aws-kms",
        }
    }
}

/// Settings of the `local` provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// The 32-byte key file (used when no passphrase is given).
    pub key_file: PathBuf,
    /// A passphrase file; takes precedence over the key file.
    pub passphrase_file: Option<PathBuf>,
    /// Name of an environment variable holding the passphrase, read when no
    /// passphrase file is given.
    pub passphrase_env: &'static str,
    /// Argon2id cost for new seals (opening reads the stored parameters).
    pub argon2: Argon2Params,
}

/// Settings of the `pkcs11` provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Settings {
    /// The PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token's label; the first token with one is used when absent.
    pub token_label: Option<String>,
    /// The AES-256 key's `CKA_LABEL`.
    pub key_label: String,
    /// A file holding the user PIN; else the environment variable `pin_env`.
    pub pin_file: Option<PathBuf>,
    pub pin_env: &'static str,
}

/// Settings of the `aws-kms` provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKmsSettings {
    /// Key id, ARN or alias (`alias/…`).
    pub key_id: String,
    /// An endpoint URL other than AWS's (an emulator, a VPC endpoint).
    pub endpoint: Option<String>,
    /// Region; else the SDK's usual sources (`AWS_REGION`, profile).
    pub region: Option<String>,
    /// Names this deployment in the encryption context.
    pub deployment: String,
}

/// A provider's full settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootKeySpec {
    Local(LocalSettings),
    Pkcs11(Pkcs11Settings),
    AwsKms(AwsKmsSettings),
}

impl RootKeySpec {
    pub fn kind(&self) -> RootKeyKind {
        match self {
            Self::Local(_) => RootKeyKind::Local,
            Self::Pkcs11(_) => RootKeyKind::Pkcs11,
            Self::AwsKms(_) => RootKeyKind::AwsKms,
        }
    }

    /// Connects to the provider. `create` allows creating the root key
    /// itself where the provider can (a new local key file, a new token
    /// key) — only when a new key set is being created or re-sealed.
    pub fn connect(&self, create: bool) -> Result<Box<dyn RootKeyProvider>, RootKeyError> {
        match self {
            Self::Local(s) => Ok(Box::new(local::LocalProvider::new(s, create)?)),
            #[cfg(feature = "pkcs11")]
            Self::Pkcs11(s) => Ok(Box::new(pkcs11::Pkcs11Provider::new(s, create)?)),
            #[cfg(not(feature = "pkcs11"))]
            Self::Pkcs11(_) => {
                let _ = create;
                Err(RootKeyError::NotBuilt("pkcs11"))
            }
            #[cfg(feature = "aws-kms")]
            Self::AwsKms(s) => Ok(Box::new(aws_kms::AwsKmsProvider::new(s)?)),
            #[cfg(not(feature = "aws-kms"))]
            Self::AwsKms(_) => Err(RootKeyError::NotBuilt("aws-kms")),
        }
    }
}

/// Reads a secret (PIN, passphrase) from a file, else from an environment
/// variable; one trailing newline is dropped. Never from a flag.
pub fn read_secret(
    file: Option<&std::path::Path>,
    env: &str,
    what: &str,
) -> Result<SecretBytes, RootKeyError> {
    let mut bytes = match file {
        Some(path) => std::fs::read(path).map_err(|e| {
            RootKeyError::Config(format!("reading the {what} file {}: {e}", path.display()))
        })?,
        None => match std::env::var_os(env) {
            Some(v) => v.into_encoded_bytes(),
            None => {
                return Err(RootKeyError::Config(format!(
                    "no {what}: give a file or set {env}"
                )))
            }
        },
    };
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    let secret = SecretBytes::new(bytes);
    if secret.is_empty() {
        return Err(RootKeyError::Config(format!("the {what} is empty")));
    }
    Ok(secret)
}
