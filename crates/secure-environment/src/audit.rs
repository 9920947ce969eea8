//! The secure environment's own copy of the audit chain: `audit.log` in its
//! data dir, one JSON record per line, each appended and fsynced before the
//! operation it records returns anything (fail closed). kms-api keeps a
//! replica in its store and serves it; when it misses a record it copies it
//! from here, so no record is dropped.
//!
//! At open the log is checked: every hash link, and the signature of the
//! last record (which commits to all before it). A torn last line (a crash
//! mid-write) is cut off; any other damage stops the server. The file is
//! locked exclusively for the life of the process.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kms_crypto::audit::{record_hash, verify_chain};
use kms_crypto::sign;
use kms_protocol::audit::{AuditRecord, Digest32};
use kms_protocol::P256PublicKey;

pub const AUDIT_FILE: &str = "audit.log";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditLogError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("audit log {0} is locked by another process (a second secure-environment on this data dir?)")]
    Locked(PathBuf),
    #[error("audit log {0} is missing but the key set exists; refusing to start (a deleted log would hide history). Restore it from a backup")]
    Missing(PathBuf),
    #[error("audit log {path} is damaged at line {line}: {reason}; refusing to start")]
    Damaged {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("could not sign an audit record: {0}")]
    Sign(#[from] kms_crypto::CryptoError),
}

struct State {
    file: File,
    /// Byte offset of each record's line; record seq `i + 1` is at `offsets[i]`.
    offsets: Vec<u64>,
    end: u64,
    head: Option<(u64, Digest32)>,
}

/// The append-only, hash-chained audit log.
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log at `path`, creating it when `create` (a new key set) and
    /// refusing a missing one otherwise. `identity` checks the last record.
    pub fn open(
        path: &Path,
        identity: &P256PublicKey,
        create: bool,
    ) -> Result<Self, AuditLogError> {
        let io_err = |source| AuditLogError::Io {
            path: path.to_path_buf(),
            source,
        };
        if !create && !path.exists() {
            return Err(AuditLogError::Missing(path.to_path_buf()));
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(create)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(AuditLogError::Locked(path.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }

        let damaged = |line: usize, reason: String| AuditLogError::Damaged {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut records = Vec::new();
        let mut offsets = Vec::new();
        let mut end = 0u64;
        let mut reader = BufReader::new(&file);
        reader.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(io_err)?;
            if n == 0 {
                break;
            }
            if !line.ends_with('\n') {
                // A torn write at the tail: cut it off below.
                tracing::warn!(path = %path.display(), bytes = n, "cutting a torn last line off the audit log");
                break;
            }
            let record: AuditRecord = serde_json::from_str(line.trim_end())
                .map_err(|e| damaged(records.len() + 1, format!("not an audit record: {e}")))?;
            offsets.push(end);
            end += n as u64;
            records.push(record);
        }
        file.set_len(end).map_err(io_err)?;
        let head = verify_chain(&records, identity, None, false)
            .map_err(|e| damaged(e.position, e.reason.to_owned()))?;
        if let Some(last) = records.last() {
            sign::verify(identity, &last.signed_body(), &last.signature).map_err(|_| {
                damaged(
                    records.len(),
                    "the last record's signature does not verify".to_owned(),
                )
            })?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                file,
                offsets,
                end,
                head,
            }),
        })
    }

    /// Appends the record `seal(seq, prev_hash)` makes, fsynced, and returns
    /// it. On any failure nothing is appended and the caller must not
    /// return the result the record was about.
    pub fn append(
        &self,
        seal: impl FnOnce(u64, Digest32) -> Result<AuditRecord, kms_crypto::CryptoError>,
    ) -> Result<AuditRecord, AuditLogError> {
        let io_err = |source| AuditLogError::Io {
            path: self.path.clone(),
            source,
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, prev) = match st.head {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, Digest32::default()),
        };
        let record = seal(seq, prev)?;
        let mut line = serde_json::to_vec(&record).map_err(|e| io_err(io::Error::other(e)))?;
        line.push(b'\n');
        let written = (&st.file)
            .write_all(&line)
            .and_then(|()| st.file.sync_data());
        if let Err(e) = written {
            // Leave no partial line behind.
            let end = st.end;
            let _ = st.file.set_len(end);
            return Err(io_err(e));
        }
        let at = st.end;
        st.offsets.push(at);
        st.end += line.len() as u64;
        st.head = Some((seq, record_hash(&record)));
        Ok(record)
    }

    /// Up to `limit` records after `after`, in order.
    pub fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, AuditLogError> {
        let io_err = |source| AuditLogError::Io {
            path: self.path.clone(),
            source,
        };
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(st.offsets.len());
        let stop = start.saturating_add(limit).min(st.offsets.len());
        let mut out = Vec::with_capacity(stop - start);
        for i in start..stop {
            let from = st.offsets[i];
            let to = st.offsets.get(i + 1).copied().unwrap_or(st.end);
            let mut buf =
                vec![0u8; usize::try_from(to - from).map_err(|e| io_err(io::Error::other(e)))?];
            st.file.read_exact_at(&mut buf, from).map_err(io_err)?;
            out.push(serde_json::from_slice(&buf).map_err(|e| io_err(io::Error::other(e)))?);
        }
        Ok(out)
    }

    /// The seq of the last record, 0 when empty.
    pub fn last_seq(&self) -> u64 {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.head.map(|(s, _)| s).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use kms_crypto::audit::seal_record;
    use kms_crypto::sign::SigningKey;
    use kms_protocol::audit::{AuditEntry, AuditEvent};

    use super::*;

    fn append(log: &AuditLog, key: &SigningKey, outcome: &str) -> AuditRecord {
        log.append(|seq, prev| {
            seal_record(
                key,
                seq,
                5,
                prev,
                AuditEntry::new(AuditEvent::Export, outcome),
            )
        })
        .unwrap()
    }

    #[test]
    fn appends_reads_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let key = SigningKey::generate().unwrap();
        assert!(matches!(
            AuditLog::open(&path, key.public_key(), false),
            Err(AuditLogError::Missing(_))
        ));
        let log = AuditLog::open(&path, key.public_key(), true).unwrap();
        // One process at a time.
        assert!(matches!(
            AuditLog::open(&path, key.public_key(), false),
            Err(AuditLogError::Locked(_))
        ));
        let a = append(&log, &key, "ok");
        let b = append(&log, &key, "authorization_failed");
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(b.prev_hash, record_hash(&a));
        assert_eq!(log.read(0, 10).unwrap(), vec![a.clone(), b.clone()]);
        assert_eq!(log.read(1, 10).unwrap(), vec![b.clone()]);
        assert!(log.read(2, 10).unwrap().is_empty());
        drop(log);
        let log = AuditLog::open(&path, key.public_key(), false).unwrap();
        assert_eq!(log.last_seq(), 2);
        assert_eq!(append(&log, &key, "ok").prev_hash, record_hash(&b));
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let key = SigningKey::generate().unwrap();
        let log = AuditLog::open(&path, key.public_key(), true).unwrap();
        for _ in 0..3 {
            append(&log, &key, "ok");
        }
        drop(log);
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{good}{{\"seq\":4,\"ti")).unwrap();
        let log = AuditLog::open(&path, key.public_key(), false).unwrap();
        assert_eq!(log.last_seq(), 3);
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), good);

        // A changed middle record, a deleted one, a forged last one: refused.
        let lines: Vec<&str> = good.lines().collect();
        let changed = good.replacen("\"outcome\":\"ok\"", "\"outcome\":\"no\"", 1);
        let deleted = format!("{}\n{}\n", lines[0], lines[2]);
        let other = SigningKey::generate().unwrap();
        for bad in [changed, deleted] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(
                AuditLog::open(&path, key.public_key(), false),
                Err(AuditLogError::Damaged { .. })
            ));
        }
        std::fs::write(&path, &good).unwrap();
        assert!(matches!(
            AuditLog::open(&path, other.public_key(), false),
            Err(AuditLogError::Damaged { .. })
        ));
    }
}
