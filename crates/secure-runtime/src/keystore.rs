//! The data dir: the sealed key set, the local root key, `identity.pub`.
//!
//! A key set is created only where none exists, under an exclusive file lock
//! so two processes starting together never create two. One that exists but
//! fails to open stops the caller with a clear error — it is never
//! regenerated. Files are 0600, the directory 0700, and every write is
//! atomic (temp file, fsync, rename, fsync of the directory).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use kms_crypto::keyset::{KeySet, KeySetError, SealedHeader};
use kms_crypto::rng::{RandomSource, SystemRng};
use kms_crypto::SecretKey;
use kms_protocol::b64;

use crate::files;
use crate::root::{local::LocalProvider, RootKeyError, RootKeyProvider, RootKeySpec};

pub const KEYSET_FILE: &str = "keyset.sealed";
pub const ROOT_KEY_FILE: &str = "root.key";
pub const IDENTITY_FILE: &str = "identity.pub";
const LOCK_FILE: &str = "keyset.lock";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the key set {path} does not open; refusing to start (a key set is never regenerated)"
    )]
    KeySet {
        path: PathBuf,
        #[source]
        source: KeySetError,
    },
    #[error(
        "the key set {path} cannot be opened; refusing to start (a key set is never regenerated)"
    )]
    Provider {
        path: PathBuf,
        #[source]
        source: RootKeyError,
    },
    #[error("the key set {path} is sealed by the {sealed_by} root-key provider but {configured} is configured; \
             give the settings it was sealed with, or move it with `secure-environment reseal`")]
    ProviderMismatch {
        path: PathBuf,
        sealed_by: String,
        configured: &'static str,
    },
    #[error("the key set {keyset} is missing but the audit log {audit} exists; refusing to create a new key set (restore the key set from a backup)")]
    KeySetMissing { keyset: PathBuf, audit: PathBuf },
    #[error("there is no key set in {0} to re-seal")]
    NothingToReseal(PathBuf),
    #[error("re-sealing: {0}")]
    Reseal(String),
    #[error("could not generate the key set: {0}")]
    Generate(#[from] kms_crypto::CryptoError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> KeystoreError + 'a {
    move |source| KeystoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The sealed key set on disk and the provider that seals it: writes a new
/// seal (fresh key-set key, wrapped by the provider) after every change.
#[derive(Debug)]
pub struct KeySetFile {
    path: PathBuf,
    provider: Box<dyn RootKeyProvider>,
}

impl KeySetFile {
    /// The provider's name (`local`, `pkcs11`, `aws-kms`).
    pub fn provider(&self) -> &'static str {
        self.provider.name()
    }

    /// Seals `keys` and replaces the file atomically. Until this returns
    /// Ok the file on disk still holds the previous key set.
    pub fn persist(&self, keys: &KeySet) -> Result<(), KeystoreError> {
        let provider_err = |source| KeystoreError::Provider {
            path: self.path.clone(),
            source,
        };
        let mut key = SecretKey::from_array([0; 32]);
        SystemRng.fill(key.expose_mut())?;
        let wrapped = self.provider.wrap(&key).map_err(provider_err)?;
        // Check the provider gives the key back before trusting the blob.
        let back = self.provider.unwrap(&wrapped).map_err(provider_err)?;
        if !back.ct_eq(&key) {
            return Err(provider_err(RootKeyError::Malformed(self.provider.name())));
        }
        let sealed = keys.seal(self.provider.name(), &key, &wrapped)?;
        write_atomic(&self.path, &sealed)
    }
}

/// What [`load_or_create`] found.
#[derive(Debug)]
pub struct Loaded {
    pub keys: KeySet,
    /// Whether this call created the key set.
    pub created: bool,
    /// Whether the root key file sits in the data dir (development only).
    pub root_key_in_data_dir: bool,
    /// Where the key set lives and who seals it.
    pub file: KeySetFile,
    /// The data dir's creation lock, held until this value is dropped, so
    /// whoever created the key set also writes its first audit record
    /// before anyone else opens it.
    pub lock: File,
}

fn lock_data_dir(data_dir: &Path) -> Result<File, KeystoreError> {
    files::create_private_dir(data_dir).map_err(io_err("creating data dir", data_dir))?;
    let lock_path = data_dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err("opening lock file", &lock_path))?;
    lock.lock().map_err(io_err("locking", &lock_path))?;
    Ok(lock)
}

fn root_key_in(spec: &RootKeySpec, dir: &Path, passphrase_env: &str) -> bool {
    match spec {
        RootKeySpec::Local(s) => {
            s.passphrase_file.is_none()
                && std::env::var_os(passphrase_env).is_none()
                && files::same_dir(&s.key_file, dir)
        }
        _ => false,
    }
}

/// Opens the sealed key set at `path` with `spec`'s provider. A format-1
/// key set (earlier builds) is opened with the local key file and
/// re-sealed in format 2 at once.
fn open_existing(path: &Path, spec: &RootKeySpec) -> Result<(KeySet, KeySetFile), KeystoreError> {
    let sealed = fs::read(path).map_err(io_err("reading", path))?;
    let provider_err = |source| KeystoreError::Provider {
        path: path.to_path_buf(),
        source,
    };
    let keyset_err = |source| KeystoreError::KeySet {
        path: path.to_path_buf(),
        source,
    };
    match kms_crypto::keyset::sealed_header(&sealed).map_err(keyset_err)? {
        SealedHeader::Legacy => {
            let RootKeySpec::Local(settings) = spec else {
                return Err(KeystoreError::ProviderMismatch {
                    path: path.to_path_buf(),
                    sealed_by: "local (format 1)".into(),
                    configured: spec.kind().as_str(),
                });
            };
            let local = LocalProvider::new(settings, false).map_err(provider_err)?;
            let root = local.legacy_root_key().ok_or_else(|| {
                provider_err(RootKeyError::Config(
                    "a format-1 key set opens only with its root key file, not a passphrase".into(),
                ))
            })?;
            let keys = KeySet::open_legacy(root, &sealed).map_err(keyset_err)?;
            let file = KeySetFile {
                path: path.to_path_buf(),
                provider: Box::new(local),
            };
            file.persist(&keys)?;
            tracing::info!(path = %path.display(), "re-sealed a format-1 key set in format 2");
            Ok((keys, file))
        }
        SealedHeader::Wrapped {
            provider,
            wrapped_key,
        } => {
            if provider != spec.kind().as_str() {
                return Err(KeystoreError::ProviderMismatch {
                    path: path.to_path_buf(),
                    sealed_by: provider.to_owned(),
                    configured: spec.kind().as_str(),
                });
            }
            if let RootKeySpec::Local(s) = spec {
                if let Some(why) = crate::root::local::mode_mismatch(s, wrapped_key) {
                    return Err(provider_err(RootKeyError::Config(why.into())));
                }
            }
            let p = spec.connect(false).map_err(provider_err)?;
            let key = p.unwrap(wrapped_key).map_err(provider_err)?;
            let keys = KeySet::open_wrapped(&sealed, &key).map_err(keyset_err)?;
            Ok((
                keys,
                KeySetFile {
                    path: path.to_path_buf(),
                    provider: p,
                },
            ))
        }
    }
}

/// Opens the key set in `data_dir` with the provider `spec` names,
/// creating it (and, where the provider can, its root key) when no key set
/// exists.
pub fn load_or_create(data_dir: &Path, spec: &RootKeySpec) -> Result<Loaded, KeystoreError> {
    let lock = lock_data_dir(data_dir)?;
    let keyset_path = data_dir.join(KEYSET_FILE);
    let root_key_in_data_dir = root_key_in(spec, data_dir, crate::root::PASSPHRASE_ENV);

    let (keys, file, created) = if keyset_path.exists() {
        let (keys, file) = open_existing(&keyset_path, spec)?;
        (keys, file, false)
    } else {
        // A data dir with history but no key set has lost it (or had it
        // removed): creating a new one would orphan the wallets and the
        // pinned identity, and overwrite identity.pub.
        let audit_path = data_dir.join(crate::audit::AUDIT_FILE);
        if audit_path.exists() {
            return Err(KeystoreError::KeySetMissing {
                keyset: keyset_path,
                audit: audit_path,
            });
        }
        let provider = spec
            .connect(true)
            .map_err(|source| KeystoreError::Provider {
                path: keyset_path.clone(),
                source,
            })?;
        let file = KeySetFile {
            path: keyset_path,
            provider,
        };
        let keys = KeySet::generate()?;
        file.persist(&keys)?;
        (keys, file, true)
    };

    // identity.pub is public and derived; rewrite it if it is missing or stale.
    let identity_path = data_dir.join(IDENTITY_FILE);
    let line = format!("{}\n", b64::encode(keys.identity().public_key().as_bytes()));
    if fs::read_to_string(&identity_path).ok().as_deref() != Some(line.as_str()) {
        write_atomic(&identity_path, line.as_bytes())?;
    }
    Ok(Loaded {
        keys,
        created,
        root_key_in_data_dir,
        file,
        lock,
    })
}

/// Re-seals the key set in `data_dir`, opened with `from`, under `to`
/// (docs/design.md, "Key hierarchy": rotating the root key re-wraps the master
/// keys only). The previous sealed file is kept beside it as
/// `keyset.sealed.<unix time>.bak` until the operator removes it.
/// `prepare` runs on the opened key set before anything is written (to
/// take the audit log, say); its error stops the re-seal.
pub fn reseal<T>(
    data_dir: &Path,
    from: &RootKeySpec,
    to: &RootKeySpec,
    prepare: impl FnOnce(&KeySet) -> Result<T, String>,
) -> Result<(Loaded, T), KeystoreError> {
    let lock = lock_data_dir(data_dir)?;
    let keyset_path = data_dir.join(KEYSET_FILE);
    if !keyset_path.exists() {
        return Err(KeystoreError::NothingToReseal(data_dir.to_path_buf()));
    }
    if let (RootKeySpec::Local(a), RootKeySpec::Local(b)) = (from, to) {
        let a_pass = a.passphrase_file.is_some() || std::env::var_os(a.passphrase_env).is_some();
        let b_pass = b.passphrase_file.is_some() || std::env::var_os(b.passphrase_env).is_some();
        if !a_pass && !b_pass && a.key_file == b.key_file {
            return Err(KeystoreError::Reseal(format!(
                "the new root key file is the current one ({}); give --to-root-key-file a new path",
                b.key_file.display()
            )));
        }
    }
    let (keys, _old) = open_existing(&keyset_path, from)?;
    let prepared = prepare(&keys).map_err(KeystoreError::Reseal)?;
    let provider = to.connect(true).map_err(|source| KeystoreError::Provider {
        path: keyset_path.clone(),
        source,
    })?;
    let file = KeySetFile {
        path: keyset_path.clone(),
        provider,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let backup = data_dir.join(format!("{KEYSET_FILE}.{now}.bak"));
    let old = fs::read(&keyset_path).map_err(io_err("reading", &keyset_path))?;
    write_atomic(&backup, &old)?;
    file.persist(&keys)?;
    // Prove the new file opens with the new settings before returning.
    let (reopened, file) = open_existing(&keyset_path, to)?;
    if reopened.identity().public_key() != keys.identity().public_key() {
        return Err(KeystoreError::Reseal(
            "the re-sealed key set differs".into(),
        ));
    }
    Ok((
        Loaded {
            keys: reopened,
            created: false,
            root_key_in_data_dir: root_key_in(to, data_dir, crate::root::NEW_PASSPHRASE_ENV),
            file,
            lock,
        },
        prepared,
    ))
}

/// [`files::write_atomic`], its error naming the path.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    files::write_atomic(path, bytes).map_err(io_err("writing", path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::root::LocalSettings;

    fn local(data: &Path, key_file: Option<PathBuf>) -> RootKeySpec {
        RootKeySpec::Local(LocalSettings {
            key_file: key_file.unwrap_or_else(|| data.join(ROOT_KEY_FILE)),
            passphrase_file: None,
            passphrase_env: "KMS_TEST_UNSET_PASSPHRASE_VARIABLE",
            argon2: kms_crypto::kdf::Argon2Params {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
        })
    }

    #[test]
    fn creates_then_reopens_the_same_key_set() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("se");
        let spec = local(&data, None);
        let first = load_or_create(&data, &spec).unwrap();
        assert!(first.created);
        assert!(first.root_key_in_data_dir);
        for f in [KEYSET_FILE, ROOT_KEY_FILE, IDENTITY_FILE] {
            let mode = fs::metadata(data.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let identity = *first.keys.identity().public_key();
        // The creation lock is held while a `Loaded` lives.
        drop(first);
        let second = load_or_create(&data, &spec).unwrap();
        assert!(!second.created);
        assert_eq!(&identity, second.keys.identity().public_key());
        let pinned = fs::read_to_string(data.join(IDENTITY_FILE)).unwrap();
        assert_eq!(
            pinned,
            format!(
                "{}\n",
                b64::encode(second.keys.identity().public_key().as_bytes())
            )
        );
    }

    #[test]
    fn never_regenerates_a_key_set_that_fails_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("se");
        let spec = local(&data, None);
        drop(load_or_create(&data, &spec).unwrap());
        let before = fs::read(data.join(KEYSET_FILE)).unwrap();
        // Wrong root key.
        fs::write(data.join(ROOT_KEY_FILE), [9u8; 32]).unwrap();
        assert!(matches!(
            load_or_create(&data, &spec),
            Err(KeystoreError::Provider {
                source: RootKeyError::Refused { .. },
                ..
            })
        ));
        // Root key gone.
        fs::remove_file(data.join(ROOT_KEY_FILE)).unwrap();
        assert!(matches!(
            load_or_create(&data, &spec),
            Err(KeystoreError::Provider {
                source: RootKeyError::Unavailable { .. },
                ..
            })
        ));
        assert!(!data.join(ROOT_KEY_FILE).exists());
        assert_eq!(fs::read(data.join(KEYSET_FILE)).unwrap(), before);
    }

    #[test]
    fn a_lost_key_set_is_not_replaced_where_history_exists() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("se");
        let spec = local(&data, None);
        drop(load_or_create(&data, &spec).unwrap());
        let pinned = fs::read(data.join(IDENTITY_FILE)).unwrap();
        fs::write(data.join(crate::audit::AUDIT_FILE), b"").unwrap();
        fs::remove_file(data.join(KEYSET_FILE)).unwrap();
        assert!(matches!(
            load_or_create(&data, &spec),
            Err(KeystoreError::KeySetMissing { .. })
        ));
        assert!(!data.join(KEYSET_FILE).exists());
        assert_eq!(fs::read(data.join(IDENTITY_FILE)).unwrap(), pinned);
    }

    #[test]
    fn root_key_file_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("se");
        let root = dir.path().join("secrets").join("root.key");
        let spec = local(&data, Some(root.clone()));
        let loaded = load_or_create(&data, &spec).unwrap();
        assert!(!loaded.root_key_in_data_dir);
        assert!(root.exists());
        assert!(!data.join(ROOT_KEY_FILE).exists());
        drop(loaded);
        fs::write(&root, [1u8; 31]).unwrap();
        assert!(matches!(
            load_or_create(&data, &spec),
            Err(KeystoreError::Provider {
                source: RootKeyError::Config(_),
                ..
            })
        ));
    }

    #[test]
    fn a_format_1_key_set_opens_and_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("se");
        fs::create_dir_all(&data).unwrap();
        let root = SecretKey::from_array([7; 32]);
        fs::write(data.join(ROOT_KEY_FILE), root.expose()).unwrap();
        let keys = KeySet::generate().unwrap();
        fs::write(data.join(KEYSET_FILE), keys.seal_legacy(&root).unwrap()).unwrap();
        let loaded = load_or_create(&data, &local(&data, None)).unwrap();
        assert!(!loaded.created);
        assert_eq!(
            loaded.keys.identity().public_key(),
            keys.identity().public_key()
        );
        let sealed = fs::read(data.join(KEYSET_FILE)).unwrap();
        assert!(matches!(
            kms_crypto::keyset::sealed_header(&sealed).unwrap(),
            SealedHeader::Wrapped {
                provider: "local",
                ..
            }
        ));
        drop(loaded);
        let again = load_or_create(&data, &local(&data, None)).unwrap();
        assert_eq!(
            again.keys.identity().public_key(),
            keys.identity().public_key()
        );
    }

    #[test]
    fn reseal_moves_to_a_new_root_key_and_keeps_identity() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("se");
        let old = local(&data, None);
        let first = load_or_create(&data, &old).unwrap();
        let identity = *first.keys.identity().public_key();
        let rotated = first.keys.rotated().unwrap();
        first.file.persist(&rotated).unwrap();
        drop(first);
        assert!(matches!(
            reseal(&data, &old, &old, |_| Ok(())),
            Err(KeystoreError::Reseal(_))
        ));
        let new = local(&data, Some(dir.path().join("new.key")));
        assert!(matches!(
            reseal(&data, &old, &new, |_| Err::<(), _>("stop".to_owned())),
            Err(KeystoreError::Reseal(_))
        ));
        assert!(!dir.path().join("new.key").exists());
        let (moved, ()) = reseal(&data, &old, &new, |_| Ok(())).unwrap();
        assert_eq!(moved.keys.identity().public_key(), &identity);
        assert_eq!(moved.keys.versions(), vec![1, 2]);
        drop(moved);
        // The old root key no longer opens it; the new one does.
        assert!(load_or_create(&data, &old).is_err());
        let reopened = load_or_create(&data, &new).unwrap();
        assert_eq!(reopened.keys.identity().public_key(), &identity);
        assert_eq!(reopened.keys.current_version(), 2);
        let backups = fs::read_dir(&data)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".bak")
            })
            .count();
        assert_eq!(backups, 1);
    }

    #[test]
    fn a_provider_mismatch_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("se");
        drop(load_or_create(&data, &local(&data, None)).unwrap());
        let pkcs = RootKeySpec::Pkcs11(crate::root::Pkcs11Settings {
            module: "/nonexistent.so".into(),
            token_label: None,
            key_label: "k".into(),
            pin_file: None,
            pin_env: "X",
        });
        let err = load_or_create(&data, &pkcs).unwrap_err();
        assert!(
            matches!(err, KeystoreError::ProviderMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("reseal"));
    }
}
