//! The data dir: the sealed key set, the local root key, `identity.pub`.
//!
//! A key set is created only where none exists, under an exclusive file lock
//! so two processes starting together never create two. One that exists but
//! fails to open stops the caller with a clear error — it is never
//! regenerated. Files are 0600, the directory 0700, and every write is
//! atomic (temp file, fsync, rename, fsync of the directory).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kms_crypto::keyset::{KeySet, KeySetError};
use kms_crypto::SecretKey;
use kms_protocol::b64;

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
    #[error("the key set {keyset} exists but its root key file {root} does not; refusing to start (a key set is never regenerated)")]
    RootKeyMissing { keyset: PathBuf, root: PathBuf },
    #[error("root key file {0} must hold exactly 32 bytes")]
    RootKeyLength(PathBuf),
    #[error("the key set {path} does not open: {source}; refusing to start (a key set is never regenerated)")]
    KeySet {
        path: PathBuf,
        #[source]
        source: KeySetError,
    },
    #[error("the key set {keyset} is missing but the audit log {audit} exists; refusing to create a new key set (restore the key set from a backup)")]
    KeySetMissing { keyset: PathBuf, audit: PathBuf },
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

/// What [`load_or_create`] found.
#[derive(Debug)]
pub struct Loaded {
    pub keys: KeySet,
    /// Whether this call created the key set.
    pub created: bool,
    /// Whether the root key file sits in the data dir (development only).
    pub root_key_in_data_dir: bool,
    /// The data dir's creation lock, held until this value is dropped, so
    /// whoever created the key set also writes its first audit record
    /// before anyone else opens it.
    pub lock: File,
}

/// Opens the key set in `data_dir`, creating it (and a root key file, if
/// there is none) when no key set exists.
pub fn load_or_create(
    data_dir: &Path,
    root_key_file: Option<&Path>,
) -> Result<Loaded, KeystoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(io_err("creating data dir", data_dir))?;
    let lock_path = data_dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err("opening lock file", &lock_path))?;
    lock.lock().map_err(io_err("locking", &lock_path))?;

    let keyset_path = data_dir.join(KEYSET_FILE);
    let root_path = root_key_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join(ROOT_KEY_FILE));
    let root_key_in_data_dir = same_dir(&root_path, data_dir);

    let (keys, created) = if keyset_path.exists() {
        if !root_path.exists() {
            return Err(KeystoreError::RootKeyMissing {
                keyset: keyset_path,
                root: root_path,
            });
        }
        let root = read_root_key(&root_path)?;
        let sealed = fs::read(&keyset_path).map_err(io_err("reading", &keyset_path))?;
        let keys = KeySet::open(&root, &sealed).map_err(|source| KeystoreError::KeySet {
            path: keyset_path.clone(),
            source,
        })?;
        (keys, false)
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
        let root = if root_path.exists() {
            read_root_key(&root_path)?
        } else {
            let mut root = SecretKey::from_array([0; 32]);
            kms_crypto::rng::RandomSource::fill(
                &mut kms_crypto::rng::SystemRng,
                root.expose_mut(),
            )?;
            write_atomic(&root_path, root.expose())?;
            root
        };
        let keys = KeySet::generate()?;
        write_atomic(&keyset_path, &keys.seal(&root)?)?;
        (keys, true)
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
        lock,
    })
}

fn same_dir(file: &Path, dir: &Path) -> bool {
    let parent = file.parent().unwrap_or(Path::new("."));
    match (fs::canonicalize(parent), fs::canonicalize(dir)) {
        (Ok(a), Ok(b)) => a == b,
        _ => parent == dir,
    }
}

fn read_root_key(path: &Path) -> Result<SecretKey, KeystoreError> {
    let mut f = File::open(path).map_err(io_err("opening root key", path))?;
    let mode = f
        .metadata()
        .map_err(io_err("reading metadata of", path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "root key file is readable by group or others; it should be 0600");
    }
    let mut key = SecretKey::from_array([0; 32]);
    f.read_exact(key.expose_mut())
        .map_err(|_| KeystoreError::RootKeyLength(path.to_path_buf()))?;
    let mut extra = [0u8; 1];
    if f.read(&mut extra)
        .map_err(io_err("reading root key", path))?
        != 0
    {
        return Err(KeystoreError::RootKeyLength(path.to_path_buf()));
    }
    Ok(key)
}

/// Writes `bytes` to `path` atomically with mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("creating directory", dir))?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            d.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err("writing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reopens_the_same_key_set() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("se");
        let first = load_or_create(&data, None).unwrap();
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
        let second = load_or_create(&data, None).unwrap();
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
        load_or_create(&data, None).unwrap();
        let before = fs::read(data.join(KEYSET_FILE)).unwrap();
        // Wrong root key.
        fs::write(data.join(ROOT_KEY_FILE), [9u8; 32]).unwrap();
        assert!(matches!(
            load_or_create(&data, None),
            Err(KeystoreError::KeySet { .. })
        ));
        // Root key gone.
        fs::remove_file(data.join(ROOT_KEY_FILE)).unwrap();
        assert!(matches!(
            load_or_create(&data, None),
            Err(KeystoreError::RootKeyMissing { .. })
        ));
        assert_eq!(fs::read(data.join(KEYSET_FILE)).unwrap(), before);
    }

    #[test]
    fn a_lost_key_set_is_not_replaced_where_history_exists() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("se");
        drop(load_or_create(&data, None).unwrap());
        let pinned = fs::read(data.join(IDENTITY_FILE)).unwrap();
        fs::write(data.join(crate::audit::AUDIT_FILE), b"").unwrap();
        fs::remove_file(data.join(KEYSET_FILE)).unwrap();
        assert!(matches!(
            load_or_create(&data, None),
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
        let loaded = load_or_create(&data, Some(&root)).unwrap();
        assert!(!loaded.root_key_in_data_dir);
        assert!(root.exists());
        assert!(!data.join(ROOT_KEY_FILE).exists());
        drop(loaded);
        fs::write(&root, [1u8; 31]).unwrap();
        assert!(matches!(
            load_or_create(&data, Some(&root)),
            Err(KeystoreError::RootKeyLength(_))
        ));
    }
}
