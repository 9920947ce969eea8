//! The `local` root-key provider: a 32-byte key file (the zero-setup
//! default, for development) or a passphrase stretched with Argon2id.
//!
//! Wrapped key-set key layouts:
//! ```text
//! key file:   u8(1) ‖ nonce[12] ‖ AES-256-GCM(file_key, keyset_key, aad)
//!   aad = "kms/keyset-key/v1" ‖ 0x00 ‖ "local" ‖ u8(1)
//! passphrase: u8(2) ‖ u32be(memory_kib) ‖ u32be(iterations) ‖ u32be(parallelism) ‖ salt[16]
//!             ‖ nonce[12] ‖ AES-256-GCM(Argon2id(passphrase, salt), keyset_key, aad)
//!   aad = "kms/keyset-key/v1" ‖ 0x00 ‖ "local" ‖ (the 29 bytes before the nonce)
//! ```

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kms_crypto::kdf::{self, Argon2Params};
use kms_crypto::rng::{self, RandomSource, SystemRng};
use kms_crypto::{aead, labels, SecretBytes, SecretKey};

use super::{read_secret, LocalSettings, RootKeyError, RootKeyProvider};

const NAME: &str = "local";
const KEY_FILE: u8 = 1;
const PASSPHRASE: u8 = 2;
const SALT: usize = 16;
const PASS_HEADER: usize = 1 + 12 + SALT;

enum Source {
    KeyFile {
        path: PathBuf,
        key: SecretKey,
    },
    Passphrase {
        pass: SecretBytes,
        argon2: Argon2Params,
    },
}

/// The `local` provider.
pub struct LocalProvider {
    source: Source,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::KeyFile { path, .. } => f
                .debug_struct("LocalProvider")
                .field("key_file", path)
                .finish_non_exhaustive(),
            Source::Passphrase { argon2, .. } => f
                .debug_struct("LocalProvider")
                .field("passphrase", &"<redacted>")
                .field("argon2", argon2)
                .finish(),
        }
    }
}

fn aad(header: &[u8]) -> Vec<u8> {
    let mut a = labels::KEYSET_KEY_WRAP.to_vec();
    a.push(0);
    a.extend_from_slice(NAME.as_bytes());
    a.extend_from_slice(header);
    a
}

fn unavailable(detail: impl std::fmt::Display) -> RootKeyError {
    RootKeyError::Unavailable {
        provider: NAME,
        detail: detail.to_string(),
    }
}

impl LocalProvider {
    /// A passphrase when one is configured (file or environment), else the
    /// key file — created (32 random bytes, 0600) only when `create` allows.
    pub fn new(s: &LocalSettings, create: bool) -> Result<Self, RootKeyError> {
        if s.passphrase_file.is_some() || std::env::var_os(s.passphrase_env).is_some() {
            let pass = read_secret(s.passphrase_file.as_deref(), s.passphrase_env, "passphrase")?;
            if !s.argon2.within_bounds() {
                return Err(RootKeyError::Config(
                    "Argon2id parameters out of bounds".into(),
                ));
            }
            return Ok(Self {
                source: Source::Passphrase {
                    pass,
                    argon2: s.argon2,
                },
            });
        }
        let key = if s.key_file.exists() {
            read_key_file(&s.key_file)?
        } else if create {
            let mut key = SecretKey::from_array([0; 32]);
            SystemRng.fill(key.expose_mut()).map_err(unavailable)?;
            crate::files::write_atomic(&s.key_file, key.expose())
                .map_err(|e| unavailable(format!("writing {}: {e}", s.key_file.display())))?;
            tracing::info!(path = %s.key_file.display(), "created a new root key file");
            key
        } else {
            return Err(unavailable(format!(
                "the root key file {} does not exist",
                s.key_file.display()
            )));
        };
        Ok(Self {
            source: Source::KeyFile {
                path: s.key_file.clone(),
                key,
            },
        })
    }

    /// The raw key file key, for opening format-1 key sets.
    pub fn legacy_root_key(&self) -> Option<&SecretKey> {
        match &self.source {
            Source::KeyFile { key, .. } => Some(key),
            Source::Passphrase { .. } => None,
        }
    }

    /// Whether this provider reads a key file at `dir` (a development setup).
    pub fn key_file_in(&self, dir: &Path) -> bool {
        match &self.source {
            Source::KeyFile { path, .. } => crate::files::same_dir(path, dir),
            Source::Passphrase { .. } => false,
        }
    }
}

/// Why `s` cannot open a key-set key wrapped as `wrapped`, when the
/// configuration names the other local mode (told before any file is read).
pub fn mode_mismatch(s: &LocalSettings, wrapped: &[u8]) -> Option<&'static str> {
    let passphrase = s.passphrase_file.is_some() || std::env::var_os(s.passphrase_env).is_some();
    match (wrapped.first(), passphrase) {
        (Some(&PASSPHRASE), false) => Some(
            "the key set was sealed under a passphrase; give it (--root-passphrase-file or SECURE_ENV_ROOT_PASSPHRASE)",
        ),
        (Some(&KEY_FILE), true) => Some(
            "the key set was sealed under a root key file, but a passphrase is configured",
        ),
        _ => None,
    }
}

fn read_key_file(path: &Path) -> Result<SecretKey, RootKeyError> {
    let mut f = File::open(path)
        .map_err(|e| unavailable(format!("opening the root key file {}: {e}", path.display())))?;
    let mode = f
        .metadata()
        .map_err(|e| unavailable(format!("{}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777),
            "root key file is readable by group or others; it should be 0600");
    }
    let mut bytes = Vec::with_capacity(33);
    f.by_ref()
        .take(33)
        .read_to_end(&mut bytes)
        .map_err(|e| unavailable(format!("reading {}: {e}", path.display())))?;
    let bytes = SecretBytes::new(bytes);
    SecretKey::from_slice(bytes.expose()).ok_or_else(|| {
        RootKeyError::Config(format!(
            "root key file {} must hold exactly 32 bytes",
            path.display()
        ))
    })
}

impl RootKeyProvider for LocalProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn wrap(&self, key: &SecretKey) -> Result<Vec<u8>, RootKeyError> {
        match &self.source {
            Source::KeyFile { key: file_key, .. } => {
                let mut out = vec![KEY_FILE];
                aead::encrypt(file_key, &aad(&[KEY_FILE]), key.expose(), &mut out)
                    .map_err(unavailable)?;
                Ok(out)
            }
            Source::Passphrase { pass, argon2 } => {
                let salt: [u8; SALT] = rng::array(&mut SystemRng).map_err(unavailable)?;
                let mut out = Vec::with_capacity(PASS_HEADER + 12 + 32 + 16);
                out.push(PASSPHRASE);
                out.extend_from_slice(&argon2.memory_kib.to_be_bytes());
                out.extend_from_slice(&argon2.iterations.to_be_bytes());
                out.extend_from_slice(&argon2.parallelism.to_be_bytes());
                out.extend_from_slice(&salt);
                let k = kdf::argon2id(pass.expose(), &salt, *argon2).map_err(unavailable)?;
                let aad = aad(&out);
                aead::encrypt(&k, &aad, key.expose(), &mut out).map_err(unavailable)?;
                Ok(out)
            }
        }
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<SecretKey, RootKeyError> {
        let refused = |detail: &str| RootKeyError::Refused {
            provider: NAME,
            detail: detail.to_owned(),
        };
        let (k, header_len) = match (&self.source, wrapped.first()) {
            (Source::KeyFile { key, .. }, Some(&KEY_FILE)) => (SecretKey::from_array(*key.expose()), 1),
            (Source::Passphrase { pass, .. }, Some(&PASSPHRASE)) => {
                let header = wrapped.get(..PASS_HEADER).ok_or(RootKeyError::Malformed(NAME))?;
                let word = |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
                let params = Argon2Params {
                    memory_kib: word(1),
                    iterations: word(5),
                    parallelism: word(9),
                };
                if !params.within_bounds() {
                    return Err(RootKeyError::Malformed(NAME));
                }
                let k = kdf::argon2id(pass.expose(), &header[13..], params).map_err(unavailable)?;
                (k, PASS_HEADER)
            }
            (Source::KeyFile { .. }, Some(&PASSPHRASE)) => {
                return Err(RootKeyError::Config(
                    "the key set was sealed under a passphrase; give it (--root-passphrase-file or SECURE_ENV_ROOT_PASSPHRASE)".into(),
                ))
            }
            (Source::Passphrase { .. }, Some(&KEY_FILE)) => {
                return Err(RootKeyError::Config(
                    "the key set was sealed under a root key file, but a passphrase is configured".into(),
                ))
            }
            _ => return Err(RootKeyError::Malformed(NAME)),
        };
        let plain = aead::decrypt(&k, &aad(&wrapped[..header_len]), &wrapped[header_len..])
            .map_err(|_| refused("wrong root key or passphrase, or a tampered key set"))?;
        SecretKey::from_slice(plain.expose()).ok_or(RootKeyError::Malformed(NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> LocalSettings {
        LocalSettings {
            key_file: dir.join("root.key"),
            passphrase_file: None,
            passphrase_env: "KMS_TEST_UNSET_PASSPHRASE_VARIABLE",
            argon2: Argon2Params {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
        }
    }

    #[test]
    fn key_file_created_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        assert!(matches!(
            LocalProvider::new(&s, false),
            Err(RootKeyError::Unavailable { .. })
        ));
        let p = LocalProvider::new(&s, true).unwrap();
        let mode = std::fs::metadata(&s.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let k = SecretKey::from_array([5; 32]);
        let w = p.wrap(&k).unwrap();
        let again = LocalProvider::new(&s, false).unwrap();
        assert!(again.unwrap(&w).unwrap().ct_eq(&k));
        std::fs::write(&s.key_file, [1u8; 33]).unwrap();
        assert!(matches!(
            LocalProvider::new(&s, false),
            Err(RootKeyError::Config(_))
        ));
    }

    #[test]
    fn passphrase_round_trip_and_wrong_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        let pf = dir.path().join("pass");
        std::fs::write(&pf, "correct horse\n").unwrap();
        s.passphrase_file = Some(pf.clone());
        let p = LocalProvider::new(&s, false).unwrap();
        assert!(!s.key_file.exists());
        let k = SecretKey::from_array([6; 32]);
        let w = p.wrap(&k).unwrap();
        assert_eq!(w.len(), PASS_HEADER + 12 + 32 + 16);
        assert!(p.unwrap(&w).unwrap().ct_eq(&k));
        for i in 0..w.len() {
            let mut bad = w.clone();
            bad[i] ^= 1;
            assert!(p.unwrap(&bad).is_err(), "byte {i}");
        }
        std::fs::write(&pf, "wrong horse\n").unwrap();
        let wrong = LocalProvider::new(&s, false).unwrap();
        assert!(matches!(
            wrong.unwrap(&w),
            Err(RootKeyError::Refused { .. })
        ));
        // Mode mismatch is a configuration error, not a refusal.
        let file = LocalProvider::new(&settings(dir.path()), true).unwrap();
        assert!(matches!(file.unwrap(&w), Err(RootKeyError::Config(_))));
    }
}
