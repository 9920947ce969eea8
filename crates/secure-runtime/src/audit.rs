//! The secure environment's own copy of the audit chain: `audit.log` in its
//! data dir, one JSON record per line, each durable (fsynced) before the
//! operation it records returns anything (fail closed). kms-api keeps a
//! replica in its store and serves it; when it misses a record it copies it
//! from here, so no record is dropped.
//!
//! Group commit: records are written in order under one lock, and one
//! fsync covers whatever has been written before it began, so concurrent
//! operations share an fsync instead of queueing for one each. The caller
//! that finds no fsync in flight runs it itself (the leader); the others
//! wait until an fsync that covers their record has returned, and one of
//! them leads the next if theirs is not covered yet. A caller waits blocking
//! ([`AuditLog::append`]) or without holding an executor thread while
//! another leads ([`AuditLog::append_deferred`] then
//! [`AuditLog::durable`]). A background thread makes durable what nobody
//! waits for (a caller that gave up), every [`BACKSTOP`]. Readers see
//! durable records only, so kms-api never copies a record a crash could
//! still take back. A failed fsync poisons the log: every waiter and every
//! later append fails until a restart re-reads the file (the kernel may have
//! dropped the unwritten pages, and a second fsync could falsely succeed).
//!
//! At open the log is checked: every hash link, and the signature of the
//! last record (which commits to all before it). A torn last line (a crash
//! mid-write) is cut off; any other damage stops the server. The file is
//! locked exclusively for the life of the process.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use kms_crypto::audit::{record_hash, verify_chain};
use kms_crypto::sign;
use kms_protocol::audit::{AuditRecord, Digest32};
use kms_protocol::P256PublicKey;
use tokio::sync::watch;

pub const AUDIT_FILE: &str = "audit.log";

/// How often the background thread checks for written records nobody
/// waits for (their caller gave up); such a record is durable within about
/// twice this, plus an fsync.
pub const BACKSTOP: Duration = Duration::from_millis(10);

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
    #[error("audit log {0}: an earlier record could not be made durable; no record is written until a restart")]
    Poisoned(PathBuf),
}

struct State {
    file: File,
    /// Byte offset of each record's line; record seq `i + 1` is at `offsets[i]`.
    offsets: Vec<u64>,
    end: u64,
    head: Option<(u64, Digest32)>,
}

/// How far the file is written and how far it is durable (byte offsets,
/// always at a line boundary).
#[derive(Debug, Clone, Copy)]
struct Progress {
    written: u64,
    synced: u64,
    /// An fsync is in flight; whoever runs it updates `synced` after.
    syncing: bool,
    failed: bool,
    stop: bool,
    /// The background thread sleeps without a timeout: only then does an
    /// append wake it (a futex wake is a system call even when nobody waits).
    idle: bool,
    /// Callers blocked in [`AuditLog::append`]: only then does an fsync
    /// wake them through the condvar.
    blocked: usize,
}

/// What the writers, the waiters and the background thread share.
struct Syncer {
    /// A handle on the log for fsyncs, outside the writers' lock.
    file: File,
    path: PathBuf,
    progress: Mutex<Progress>,
    /// Wakes the background thread: something is written, or stop.
    work: Condvar,
    /// Wakes blocking waiters after each fsync.
    done: Condvar,
    /// `(synced, failed)` for waiters on an async executor.
    watch: watch::Sender<(u64, bool)>,
}

/// What a waiter for offset `end` does next.
enum Step {
    Durable,
    Failed,
    /// Run the fsync up to this offset (this caller leads).
    Lead(u64),
    Wait,
}

impl Syncer {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides, under the lock, what a waiter for `end` does: it leads an
    /// fsync when none is in flight, so a record is never left waiting for
    /// an fsync nobody runs.
    fn step(p: &mut Progress, end: u64) -> Step {
        if p.synced >= end {
            Step::Durable
        } else if p.failed {
            Step::Failed
        } else if p.syncing {
            Step::Wait
        } else {
            p.syncing = true;
            Step::Lead(p.written)
        }
    }

    /// Runs the fsync a caller leads: it covers every line written before
    /// `target` was read. Then wakes whoever waits.
    fn sync(&self, target: u64) {
        let r = self.file.sync_data();
        let mut p = self.lock();
        p.syncing = false;
        match r {
            Ok(()) => {
                p.synced = p.synced.max(target);
                self.wake(&p);
            }
            Err(e) => {
                self.fail(p);
                tracing::error!(path = %self.path.display(), error = %e, "audit log fsync failed; refusing further records until restart");
            }
        }
    }

    /// Tells every waiter where `synced` and `failed` stand now.
    fn wake(&self, p: &Progress) {
        self.watch.send_replace((p.synced, p.failed));
        if p.blocked > 0 {
            self.done.notify_all();
        }
    }

    /// Poisons the log: no record is confirmed or written after this, and
    /// no fsync runs (a second one could falsely succeed).
    fn fail(&self, mut p: MutexGuard<'_, Progress>) {
        p.failed = true;
        self.wake(&p);
    }

    /// The background thread: sleeps while everything written is durable;
    /// otherwise checks every [`BACKSTOP`] and runs the fsync itself when
    /// what it saw written then is still not durable and no fsync is in
    /// flight (a caller that gave up leaves its record to it).
    fn run(&self) {
        let mut p = self.lock();
        loop {
            if p.failed {
                return;
            }
            if p.written == p.synced {
                if p.stop {
                    return;
                }
                p.idle = true;
                p = self.work.wait(p).unwrap_or_else(|e| e.into_inner());
                p.idle = false;
                continue;
            }
            if !p.stop {
                let written = p.written;
                p = self
                    .work
                    .wait_timeout(p, BACKSTOP)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                // Lead only if what was written then is still not durable,
                // no fsync is in flight, and none has failed meanwhile.
                if p.failed || p.synced >= written || p.syncing {
                    continue;
                }
            }
            // On stop no caller is leading (Drop has `&mut self`): lead.
            p.syncing = true;
            let target = p.written;
            drop(p);
            self.sync(target);
            p = self.lock();
        }
    }
}

/// The append-only, hash-chained audit log.
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<State>,
    syncer: Arc<Syncer>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for AuditLog {
    /// Lets the background thread make durable what is written, then joins
    /// it (its share of the syncer holds a handle, and so the file lock).
    fn drop(&mut self) {
        self.syncer.lock().stop = true;
        self.syncer.work.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
        // What an earlier process wrote but did not live to fsync is durable
        // before anyone can read it.
        file.sync_all().map_err(io_err)?;
        let (watch, _) = watch::channel((end, false));
        let syncer = Arc::new(Syncer {
            file: file.try_clone().map_err(io_err)?,
            path: path.to_path_buf(),
            progress: Mutex::new(Progress {
                written: end,
                synced: end,
                syncing: false,
                failed: false,
                stop: false,
                idle: false,
                blocked: 0,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            watch,
        });
        let thread = {
            let syncer = Arc::clone(&syncer);
            std::thread::Builder::new()
                .name("audit-fsync".to_owned())
                .spawn(move || syncer.run())
                .map_err(io_err)?
        };
        Ok(Self {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                file,
                offsets,
                end,
                head,
            }),
            syncer,
            thread: Some(thread),
        })
    }

    /// Appends the record `seal(seq, prev_hash)` makes and returns it once
    /// it is durable, blocking the calling thread meanwhile. On any failure
    /// the caller must not return the result the record was about.
    pub fn append(
        &self,
        seal: impl FnOnce(u64, Digest32) -> Result<AuditRecord, kms_crypto::CryptoError>,
    ) -> Result<AuditRecord, AuditLogError> {
        let (record, end) = self.append_deferred(seal)?;
        let mut p = self.syncer.lock();
        loop {
            match Syncer::step(&mut p, end) {
                Step::Durable => return Ok(record),
                Step::Failed => return Err(AuditLogError::Poisoned(self.path.clone())),
                Step::Lead(target) => {
                    drop(p);
                    self.syncer.sync(target);
                    p = self.syncer.lock();
                }
                Step::Wait => {
                    p.blocked += 1;
                    p = self.syncer.done.wait(p).unwrap_or_else(|e| e.into_inner());
                    p.blocked -= 1;
                }
            }
        }
    }

    /// Writes the record `seal(seq, prev_hash)` makes, not yet durable, and
    /// returns it with the offset [`AuditLog::durable`] must reach before
    /// the caller may return anything the record is about. A write that
    /// fails leaves no partial line behind.
    pub fn append_deferred(
        &self,
        seal: impl FnOnce(u64, Digest32) -> Result<AuditRecord, kms_crypto::CryptoError>,
    ) -> Result<(AuditRecord, u64), AuditLogError> {
        let io_err = |source| AuditLogError::Io {
            path: self.path.clone(),
            source,
        };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.syncer.lock().failed {
            return Err(AuditLogError::Poisoned(self.path.clone()));
        }
        let (seq, prev) = match st.head {
            Some((seq, hash)) => (seq + 1, hash),
            None => (1, Digest32::default()),
        };
        let record = seal(seq, prev)?;
        let mut line = serde_json::to_vec(&record).map_err(|e| io_err(io::Error::other(e)))?;
        line.push(b'\n');
        if let Err(e) = (&st.file).write_all(&line) {
            // Cut the partial line; if even that fails, the file no longer
            // matches `offsets`, so nothing more is written until a restart
            // (whose open cuts the torn tail).
            if st.file.set_len(st.end).is_err() {
                self.syncer.fail(self.syncer.lock());
            }
            return Err(io_err(e));
        }
        let at = st.end;
        st.offsets.push(at);
        st.end += line.len() as u64;
        st.head = Some((seq, record_hash(&record)));
        let end = st.end;
        // Still under the state lock, so `written` only grows.
        let wake = {
            let mut p = self.syncer.lock();
            p.written = end;
            p.idle
        };
        drop(st);
        if wake {
            self.syncer.work.notify_one();
        }
        Ok((record, end))
    }

    /// Makes the log durable up to `end` (an offset
    /// [`AuditLog::append_deferred`] returned): runs the fsync on this
    /// thread when none is in flight (one fsync, about as long as the
    /// operation's own cryptography), else waits for it without blocking.
    /// Only one fsync runs at a time, so at most one executor thread is
    /// ever held by one.
    pub async fn durable(&self, end: u64) -> Result<(), AuditLogError> {
        let mut rx = self.syncer.watch.subscribe();
        loop {
            let step = Syncer::step(&mut self.syncer.lock(), end);
            match step {
                Step::Durable => return Ok(()),
                Step::Failed => return Err(AuditLogError::Poisoned(self.path.clone())),
                Step::Lead(target) => self.syncer.sync(target),
                // Every fsync's end is sent after `progress` changed, so a
                // change since the subscription above is never missed.
                Step::Wait => {
                    if rx.changed().await.is_err() {
                        return Err(AuditLogError::Poisoned(self.path.clone()));
                    }
                }
            }
        }
    }

    /// How many records are durable; seqs `1..=n` of them.
    fn durable_count(&self, st: &State) -> usize {
        let synced = self.syncer.lock().synced;
        st.offsets.partition_point(|&o| o < synced)
    }

    /// Up to `limit` durable records after `after`, in order.
    pub fn read(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, AuditLogError> {
        let io_err = |source| AuditLogError::Io {
            path: self.path.clone(),
            source,
        };
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let durable = self.durable_count(&st);
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(durable);
        let stop = start.saturating_add(limit).min(durable);
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

    /// The seq of the last durable record, 0 when none.
    pub fn last_seq(&self) -> u64 {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.durable_count(&st) as u64
    }
}

#[cfg(test)]
mod tests {
    use kms_crypto::audit::seal_record;
    use kms_crypto::sign::SigningKey;
    use kms_protocol::audit::{AuditEntry, AuditEvent};

    use super::*;

    /// Seals an export record with `outcome` at whatever place the log gives.
    fn seal<'a>(
        key: &'a SigningKey,
        outcome: &'a str,
    ) -> impl Fn(u64, Digest32) -> Result<AuditRecord, kms_crypto::CryptoError> + 'a {
        move |seq, prev| {
            seal_record(
                key,
                seq,
                5,
                prev,
                AuditEntry::new(AuditEvent::Export, outcome),
            )
        }
    }

    fn append(log: &AuditLog, key: &SigningKey, outcome: &str) -> AuditRecord {
        log.append(seal(key, outcome)).unwrap()
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

    #[test]
    fn concurrent_appends_stay_one_chain_and_return_only_once_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let key = SigningKey::generate().unwrap();
        let log = AuditLog::open(&path, key.public_key(), true).unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        let r = append(&log, &key, "ok");
                        // Returned only once durable, so readable.
                        assert!(log.last_seq() >= r.seq);
                    }
                });
            }
        });
        assert_eq!(log.last_seq(), 200);
        let all = log.read(0, 1000).unwrap();
        assert_eq!(all.len(), 200);
        drop(log);
        let log = AuditLog::open(&path, key.public_key(), false).unwrap();
        assert_eq!(log.read(0, 1000).unwrap(), all);
    }

    /// Many tasks on a multi-threaded executor lead and wait in turn: each
    /// returns, and only once its record is durable (a lost wake-up would
    /// hang here until the timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn deferred_waiters_lead_in_turn_and_none_is_left_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let key = Arc::new(SigningKey::generate().unwrap());
        let log = Arc::new(AuditLog::open(&path, key.public_key(), true).unwrap());
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (log, key) = (Arc::clone(&log), Arc::clone(&key));
                tokio::spawn(async move {
                    for _ in 0..20 {
                        let (r, end) = log.append_deferred(seal(&key, "ok")).unwrap();
                        log.durable(end).await.unwrap();
                        assert!(log.last_seq() >= r.seq);
                    }
                })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(60), async {
            for t in tasks {
                t.await.unwrap();
            }
        })
        .await
        .expect("a waiter was left waiting");
        assert_eq!(log.read(0, 1000).unwrap().len(), 320);
        let p = *log.syncer.lock();
        assert!(!p.syncing && p.synced == p.written);
    }

    /// After a failed fsync the background thread runs no other (a second
    /// fsync can falsely succeed and would confirm lost records), even when
    /// the failure comes while it waits to lead.
    #[test]
    fn no_fsync_runs_after_a_failed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let key = SigningKey::generate().unwrap();
        let log = AuditLog::open(&path, key.public_key(), true).unwrap();
        std::thread::sleep(BACKSTOP * 3);
        let synced = {
            let mut p = log.syncer.lock();
            // Something written that nobody waits for: the thread starts
            // its timed wait before leading.
            p.written += 1;
            p.synced
        };
        log.syncer.work.notify_one();
        std::thread::sleep(BACKSTOP / 4);
        log.syncer.fail(log.syncer.lock());
        std::thread::sleep(BACKSTOP * 5);
        assert_eq!(log.syncer.lock().synced, synced);
        assert!(log.thread.as_ref().unwrap().is_finished());
    }

    /// A record whose caller never waits for it (it gave up) is made
    /// durable by the background thread.
    #[test]
    fn a_record_nobody_waits_for_becomes_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let key = SigningKey::generate().unwrap();
        let log = AuditLog::open(&path, key.public_key(), true).unwrap();
        // Let the background thread fall asleep without a timeout first.
        std::thread::sleep(BACKSTOP * 3);
        log.append_deferred(seal(&key, "ok")).unwrap();
        let start = std::time::Instant::now();
        while log.last_seq() < 1 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "nobody made the record durable"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[tokio::test]
    async fn deferred_appends_are_hidden_until_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_FILE);
        let key = SigningKey::generate().unwrap();
        let log = AuditLog::open(&path, key.public_key(), true).unwrap();
        let seal = seal(&key, "ok");
        let (a, end_a) = log.append_deferred(&seal).unwrap();
        let (b, end_b) = log.append_deferred(&seal).unwrap();
        assert!(end_b > end_a);
        log.durable(end_b).await.unwrap();
        assert_eq!(log.read(0, 10).unwrap(), vec![a, b]);

        // Written but held back from readers while the fsync is pending.
        log.syncer.lock().synced = end_a;
        assert_eq!(log.last_seq(), 1);
        assert_eq!(log.read(0, 10).unwrap().len(), 1);
        log.syncer.lock().synced = end_b;

        // After a failed fsync, nothing more is written or confirmed.
        {
            let mut p = log.syncer.lock();
            p.failed = true;
            log.syncer.watch.send_replace((p.synced, true));
        }
        assert!(matches!(
            log.append_deferred(&seal),
            Err(AuditLogError::Poisoned(_))
        ));
        assert!(matches!(
            log.durable(end_b + 1).await,
            Err(AuditLogError::Poisoned(_))
        ));
        assert_eq!(log.last_seq(), 2);
    }
}
