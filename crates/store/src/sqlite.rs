//! The SQLite engine: WAL, `synchronous = FULL`, migrations at open.
//!
//! The hot point reads (a wallet by id, a session by id) run inline on the
//! caller's thread on a small set of rusqlite connections: a primary-key
//! lookup in a warm page cache costs microseconds, less than handing it to
//! another thread and back. Other reads go through an sqlx pool.
//!
//! Writes go through one writer thread with its own connection (rusqlite:
//! no thread hop per statement), which commits them in groups: it takes
//! every write queued while the previous commit ran (up to [`MAX_BATCH`]),
//! runs each in its own savepoint inside one transaction, commits once (one
//! WAL fsync for the group), and only then answers each caller. A write
//! that fails rolls back to its savepoint and fails alone; a commit that
//! fails fails the whole group, and nothing of it is stored. A group made
//! only of audit copies is committed without an fsync of its own (see
//! [`Store::insert_audit`]); so, when the write connection is free, an
//! audit copy is committed on the caller's thread instead, sparing two
//! thread wake-ups.
//!
//! The writer does not checkpoint the WAL itself (SQLite's default has the
//! committing connection copy the WAL into the database every 1 000 pages,
//! stalling every queued write for the copy and its fsync). A
//! `store-checkpoint` thread with its own connection runs passive
//! checkpoints instead, which do not block the writer. The writer keeps a
//! high automatic threshold ([`WRITER_AUTOCHECKPOINT_PAGES`]) only as a
//! bound on the WAL should that thread fall behind.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kms_protocol::api::WalletMetadata;
use kms_protocol::audit::AuditRecord;
use kms_protocol::internal::{WalletRecord, WrappedWalletKey};
use kms_protocol::provider::{KeySource, ProviderKeyRow, ProviderKeyType};
use kms_protocol::{Bytes, Id, KeyType, P256PublicKey};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::{SessionRecord, Store, StoreError};

/// The migrations, in order; each runs once, in its own transaction.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "audit",
        include_str!("../migrations/sqlite/0002_audit.sql"),
    ),
    (
        3,
        "provider_keys",
        include_str!("../migrations/sqlite/0003_provider_keys.sql"),
    ),
];

/// How long a connection waits for another's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most writes one commit carries.
const MAX_BATCH: usize = 256;

/// The writer's own automatic checkpoint threshold, in WAL pages (64 MiB
/// at 4 KiB pages): a bound, never reached while the checkpoint thread
/// keeps up.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// The checkpoint thread's pause between checkpoints while writes arrive.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// A [`Store`] in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    readers: Arc<Readers>,
    writer: mpsc::Sender<Job>,
    /// The write connection: the writer thread takes it for each group; a
    /// caller storing an audit copy takes it when it is free.
    conn: Arc<Mutex<rusqlite::Connection>>,
    /// Tells the checkpoint thread a commit happened.
    committed: std::sync::mpsc::SyncSender<()>,
}

/// Idle read connections for the inline point reads; one is opened when
/// none is idle, and at most [`MAX_IDLE_READERS`] are kept.
struct Readers {
    path: String,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

const MAX_IDLE_READERS: usize = 8;

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Readers {
    fn with<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => {
                let c = rusqlite::Connection::open(&self.path)?;
                c.busy_timeout(BUSY_TIMEOUT)?;
                c.pragma_update(None, "query_only", "ON")?;
                c
            }
        };
        let r = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        r
    }
}

/// A write, with what it needs, owned: it outlives a caller that gives up.
#[derive(Debug)]
enum Write {
    Session(SessionRecord, AuditRecord),
    Complete {
        id: Id,
        completed_at: u64,
        wallet: WalletRecord,
        audit: AuditRecord,
    },
    Wallet(WalletRecord, AuditRecord),
    ProviderKey(ProviderKeyRow, AuditRecord),
    Audit(AuditRecord),
    Rewrap(Vec<(WrappedWalletKey, WrappedWalletKey)>),
    Purge(u64),
}

#[derive(Debug)]
struct Job {
    write: Write,
    /// Rows changed, once the group is committed.
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and applies
    /// pending migrations.
    pub async fn open(path: &str) -> Result<Self, StoreError> {
        create_private(path)?;
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        let conn = Arc::new(Mutex::new(open_writer(path)?));
        let checkpointer = open_checkpointer(path)?;
        let (committed, commits) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("store-checkpoint".to_owned())
            .spawn(move || run_checkpointer(checkpointer, commits))
            .map_err(|e| StoreError::Engine(format!("starting the checkpoint thread: {e}")))?;
        let (writer, jobs) = mpsc::channel(4 * MAX_BATCH);
        {
            let (conn, committed) = (Arc::clone(&conn), committed.clone());
            std::thread::Builder::new()
                .name("store-writer".to_owned())
                .spawn(move || run_writer(&conn, jobs, &committed))
                .map_err(|e| StoreError::Engine(format!("starting the writer thread: {e}")))?;
        }
        let readers = Arc::new(Readers {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        });
        Ok(Self {
            pool,
            readers,
            writer,
            conn,
            committed,
        })
    }

    /// Runs an audit copy on the caller's thread if the write connection is
    /// free: it is committed without an fsync (see [`Store::insert_audit`]),
    /// so this costs tens of microseconds, less than waking the writer
    /// thread and being woken by it. `None` if the connection is busy: the
    /// write is for the next group commit.
    fn try_audit_inline(&self, audit: &AuditRecord) -> Option<Result<u64, StoreError>> {
        let mut conn = match self.conn.try_lock() {
            Ok(c) => c,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        // Never wait on an executor thread for another connection's lock
        // (a second kms-api on the same file): if it is taken, the writer
        // thread waits instead.
        let _ = conn.busy_timeout(Duration::ZERO);
        let begun = begin(&conn, false);
        let _ = conn.busy_timeout(BUSY_TIMEOUT);
        if begun.is_err() {
            return None;
        }
        let (reply, mut answer) = oneshot::channel();
        commit_begun(
            &mut conn,
            vec![Job {
                write: Write::Audit(audit.clone()),
                reply,
            }],
            true,
        );
        drop(conn);
        let _ = self.committed.try_send(());
        Some(answer.try_recv().unwrap_or_else(|_| {
            Err(StoreError::Engine(
                "the audit copy's commit did not answer".to_owned(),
            ))
        }))
    }

    /// Queues a write for the next group commit and waits for it.
    async fn write(&self, write: Write) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Engine("the store's writer thread has stopped".to_owned());
        self.writer
            .send(Job { write, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The pool, for tests that play an attacker with full database access.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Applies pending migrations, each once, in its own transaction.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS kms_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    for &(version, name, sql) in MIGRATIONS {
        let mut tx = pool.begin().await?;
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM kms_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if applied.is_none() {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO kms_migrations (version, name, applied_at) VALUES (?, ?, unixepoch())",
            )
            .bind(version)
            .bind(name)
            .execute(&mut *tx)
            .await?;
            tracing::info!(version, name, "applied migration");
        }
        tx.commit().await?;
    }
    Ok(())
}

/// How many rows of `table` (a constant table name) are sealed under each
/// master-key version, ascending.
async fn counts_per_version(
    pool: &SqlitePool,
    table: &'static str,
) -> Result<Vec<(u32, u64)>, StoreError> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT master_key_version, COUNT(*) FROM {table}
         GROUP BY master_key_version ORDER BY master_key_version"
    ))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(v, n)| {
            Ok((
                u32::try_from(v).map_err(|_| StoreError::Corrupt("master key version"))?,
                to_u64(n)?,
            ))
        })
        .collect()
}

/// Creates the database file 0600 if it does not exist yet; SQLite gives its
/// WAL and shared-memory files the same mode as the database file.
fn create_private(path: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.is_empty()
        || path.starts_with(':')
        || path.contains('?')
        || std::path::Path::new(path).exists()
    {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt("integer out of range"))
}

fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt("negative integer"))
}

fn id_of(bytes: Vec<u8>) -> Result<Id, StoreError> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("id is not 16 bytes"))?;
    Ok(Id::from_bytes(arr))
}

fn metadata_of(row: &SqliteRow) -> Result<WalletMetadata, StoreError> {
    let key_type: String = row.try_get("key_type")?;
    let owner: Option<Vec<u8>> = row.try_get("owner_public_key")?;
    Ok(WalletMetadata {
        wallet_id: id_of(row.try_get("wallet_id")?)?,
        key_type: KeyType::parse(&key_type).ok_or(StoreError::Corrupt("unknown key_type"))?,
        public_key: row.try_get::<Option<Vec<u8>>, _>("public_key")?.map(Bytes),
        owner_public_key: owner
            .map(|o| {
                P256PublicKey::from_bytes(&o).map_err(|_| StoreError::Corrupt("owner_public_key"))
            })
            .transpose()?,
        created_at: to_u64(row.try_get("created_at")?)?,
    })
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Engine(e.to_string())
    }
}

/// The writer's connection, with the pool's settings.
fn open_writer(path: &str) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)?;
    Ok(conn)
}

/// The checkpoint thread's connection.
fn open_checkpointer(path: &str) -> Result<rusqlite::Connection, StoreError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// The checkpoint thread: after the writer has committed, a passive
/// checkpoint (it copies what no reader still needs and never blocks the
/// writer), then a pause, so a busy store is checkpointed every
/// [`CHECKPOINT_EVERY`] and an idle one not at all. Ends, after a last
/// checkpoint, when the writer thread does.
fn run_checkpointer(conn: rusqlite::Connection, commits: std::sync::mpsc::Receiver<()>) {
    let checkpoint = || {
        let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match r {
            Ok((wal_pages, copied)) => {
                tracing::trace!(wal_pages, copied, "checkpointed the WAL");
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying after the next commit")
            }
        }
    };
    while commits.recv().is_ok() {
        checkpoint();
        std::thread::sleep(CHECKPOINT_EVERY);
    }
    checkpoint();
}

/// Inserts an audit record; the same record twice is a no-op, a different
/// one under the same seq is refused.
fn insert_audit_in(conn: &rusqlite::Connection, audit: &AuditRecord) -> Result<(), StoreError> {
    let json = serde_json::to_string(audit).map_err(|_| StoreError::Corrupt("audit record"))?;
    let seq = to_i64(audit.seq)?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO audit_records (seq, record) VALUES (?1, ?2) ON CONFLICT (seq) DO NOTHING",
        )?
        .execute(rusqlite::params![seq, json])?;
    if inserted == 0 {
        let existing: String = conn
            .prepare_cached("SELECT record FROM audit_records WHERE seq = ?1")?
            .query_row([seq], |r| r.get(0))?;
        if existing != json {
            return Err(StoreError::Corrupt(
                "a different audit record is stored under this seq",
            ));
        }
    }
    Ok(())
}

/// The writer thread: one group commit per turn, until every sender is gone.
fn run_writer(
    conn: &Mutex<rusqlite::Connection>,
    mut jobs: mpsc::Receiver<Job>,
    committed: &std::sync::mpsc::SyncSender<()>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
        commit_group(&mut c, std::mem::take(&mut batch));
        drop(c);
        // Full means a checkpoint is already due.
        let _ = committed.try_send(());
    }
}

type Answer = (
    oneshot::Sender<Result<u64, StoreError>>,
    Result<u64, StoreError>,
);

/// Runs `jobs` in one transaction, each in its own savepoint, commits once,
/// then answers each.
fn commit_group(conn: &mut rusqlite::Connection, jobs: Vec<Job>) {
    commit_begun(conn, jobs, false);
}

/// [`commit_group`], inside the transaction [`begin`] opened if `begun`.
fn commit_begun(conn: &mut rusqlite::Connection, jobs: Vec<Job>, begun: bool) {
    let mut answers: Vec<Answer> = Vec::with_capacity(jobs.len());
    if let Err(e) = run_group(conn, jobs, &mut answers, begun) {
        tracing::error!(error = %e, writes = answers.len(), "group commit failed; none of its writes is stored");
        // Leave no transaction open for the next group; `e` is the error
        // that matters.
        let _ = conn.execute_batch("ROLLBACK");
        for (reply, r) in answers {
            let failed = match r {
                Ok(_) => Err(StoreError::Engine(format!("group commit failed: {e}"))),
                refused => refused,
            };
            let _ = reply.send(failed);
        }
        return;
    }
    for (reply, r) in answers {
        // A caller that gave up no longer listens; its write stands.
        let _ = reply.send(r);
    }
}

/// The group's transaction. On an error, jobs not yet run are dropped, and
/// their callers see the writer gone (503).
fn run_group(
    conn: &rusqlite::Connection,
    jobs: Vec<Job>,
    answers: &mut Vec<Answer>,
    begun: bool,
) -> rusqlite::Result<()> {
    if !begun {
        begin(conn, needs_fsync(&jobs))?;
    }
    for job in jobs {
        conn.execute_batch("SAVEPOINT w")?;
        let r = apply(conn, &job.write);
        if r.is_err() {
            conn.execute_batch("ROLLBACK TO w")?;
        }
        conn.execute_batch("RELEASE w")?;
        answers.push((job.reply, r));
    }
    conn.execute_batch("COMMIT")
}

/// Whether a group's commit must be fsynced before it is answered. A group
/// of audit copies alone is not: the secure environment's log, fsynced
/// before the record was handed over, is the authoritative copy, the next
/// durable commit or checkpoint makes these durable too, and after a power
/// cut the backfill copies back any record the replica lost. Everything
/// else (sessions, wallets, rewraps, purges) is.
fn needs_fsync(jobs: &[Job]) -> bool {
    jobs.iter().any(|j| !matches!(j.write, Write::Audit(_)))
}

/// Opens a group's transaction, committed with an fsync if `durable`.
fn begin(conn: &rusqlite::Connection, durable: bool) -> rusqlite::Result<()> {
    let synchronous = if durable { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.execute_batch("BEGIN IMMEDIATE")
}

/// One write, inside the group's transaction.
fn apply(conn: &rusqlite::Connection, write: &Write) -> Result<u64, StoreError> {
    use rusqlite::params;
    match write {
        Write::Session(s, audit) => {
            conn.prepare_cached(
                "INSERT INTO import_sessions (session_id, sealed_state, expires_at, created_at, completed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                &s.session_id.as_bytes()[..],
                &s.sealed_state,
                to_i64(s.expires_at)?,
                to_i64(s.created_at)?,
                s.completed_at.map(to_i64).transpose()?,
            ])?;
            insert_audit_in(conn, audit)?;
            Ok(1)
        }
        Write::Complete {
            id,
            completed_at,
            wallet: w,
            audit,
        } => {
            let updated = conn
                .prepare_cached(
                    "UPDATE import_sessions SET completed_at = ?1, wallet_id = ?2
                     WHERE session_id = ?3 AND completed_at IS NULL",
                )?
                .execute(params![
                    to_i64(*completed_at)?,
                    &w.wallet_id.as_bytes()[..],
                    &id.as_bytes()[..],
                ])?;
            if updated == 0 {
                let exists = conn
                    .prepare_cached("SELECT 1 FROM import_sessions WHERE session_id = ?1")?
                    .exists([&id.as_bytes()[..]])?;
                return Err(if exists {
                    StoreError::SessionAlreadyCompleted
                } else {
                    StoreError::SessionNotFound
                });
            }
            insert_wallet_in(conn, w)?;
            insert_audit_in(conn, audit)?;
            Ok(1)
        }
        Write::Wallet(w, audit) => {
            insert_wallet_in(conn, w)?;
            insert_audit_in(conn, audit)?;
            Ok(1)
        }
        Write::ProviderKey(row, audit) => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO provider_keys (pub, source, key_type, coin, master_key_version, sealed, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (pub, source) DO NOTHING",
                )?
                .execute(params![
                    row.public,
                    row.source.as_str(),
                    row.key_type.as_str(),
                    row.coin,
                    i64::from(row.master_key_version),
                    row.sealed.as_bytes(),
                    to_i64(row.created_at)?,
                ])?;
            if inserted == 0 {
                return Err(StoreError::ProviderKeyExists);
            }
            insert_audit_in(conn, audit)?;
            Ok(1)
        }
        Write::Audit(audit) => {
            insert_audit_in(conn, audit)?;
            Ok(1)
        }
        Write::Rewrap(batch) => {
            let mut update = conn.prepare_cached(
                "UPDATE wallets SET master_key_version = ?1, wrapped_key = ?2
                 WHERE wallet_id = ?3 AND master_key_version = ?4 AND wrapped_key = ?5",
            )?;
            let mut changed = 0u64;
            for (old, new) in batch {
                changed += update.execute(params![
                    i64::from(new.master_key_version),
                    new.wrapped_key.as_bytes(),
                    &old.wallet_id.as_bytes()[..],
                    i64::from(old.master_key_version),
                    old.wrapped_key.as_bytes(),
                ])? as u64;
            }
            Ok(changed)
        }
        Write::Purge(expired_before) => Ok(conn
            .prepare_cached("DELETE FROM import_sessions WHERE expires_at < ?1")?
            .execute([to_i64(*expired_before)?])?
            as u64),
    }
}

fn insert_wallet_in(conn: &rusqlite::Connection, w: &WalletRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO wallets (wallet_id, key_type, public_key, owner_public_key, created_at,
                              master_key_version, wrapped_key, ciphertext)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        &w.wallet_id.as_bytes()[..],
        w.key_type.as_str(),
        w.public_key.as_ref().map(Bytes::as_bytes),
        w.owner_public_key.as_ref().map(|k| &k.as_bytes()[..]),
        to_i64(w.created_at)?,
        i64::from(w.master_key_version),
        w.wrapped_key.as_bytes(),
        w.ciphertext.as_bytes(),
    ])?;
    Ok(())
}

const WALLET_COLUMNS: &str = "wallet_id, key_type, public_key, owner_public_key, created_at";

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_session(
        &self,
        s: &SessionRecord,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.write(Write::Session(s.clone(), audit.clone()))
            .await
            .map(drop)
    }

    async fn session(&self, id: &Id) -> Result<Option<SessionRecord>, StoreError> {
        self.readers.with(|conn| {
            let mut q = conn.prepare_cached(
                "SELECT session_id, sealed_state, expires_at, created_at, completed_at
                 FROM import_sessions WHERE session_id = ?1",
            )?;
            let mut rows = q.query([&id.as_bytes()[..]])?;
            let Some(r) = rows.next()? else {
                return Ok(None);
            };
            Ok(Some(SessionRecord {
                session_id: id_of(r.get(0)?)?,
                sealed_state: r.get(1)?,
                expires_at: to_u64(r.get(2)?)?,
                created_at: to_u64(r.get(3)?)?,
                completed_at: r.get::<_, Option<i64>>(4)?.map(to_u64).transpose()?,
            }))
        })
    }

    async fn complete_session(
        &self,
        id: &Id,
        completed_at: u64,
        w: &WalletRecord,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.write(Write::Complete {
            id: *id,
            completed_at,
            wallet: w.clone(),
            audit: audit.clone(),
        })
        .await
        .map(drop)
    }

    async fn insert_wallet(&self, w: &WalletRecord, audit: &AuditRecord) -> Result<(), StoreError> {
        self.write(Write::Wallet(w.clone(), audit.clone()))
            .await
            .map(drop)
    }

    async fn insert_provider_key(
        &self,
        row: &ProviderKeyRow,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        self.write(Write::ProviderKey(row.clone(), audit.clone()))
            .await
            .map(drop)
    }

    async fn provider_key(
        &self,
        public: &str,
        source: KeySource,
    ) -> Result<Option<ProviderKeyRow>, StoreError> {
        self.readers.with(|conn| {
            let mut q = conn.prepare_cached(
                "SELECT key_type, coin, master_key_version, sealed, created_at
                 FROM provider_keys WHERE pub = ?1 AND source = ?2",
            )?;
            let mut rows = q.query(rusqlite::params![public, source.as_str()])?;
            let Some(r) = rows.next()? else {
                return Ok(None);
            };
            let key_type: String = r.get(0)?;
            Ok(Some(ProviderKeyRow {
                public: public.to_owned(),
                source,
                key_type: ProviderKeyType::parse(&key_type)
                    .ok_or(StoreError::Corrupt("provider key type"))?,
                coin: r.get(1)?,
                master_key_version: u32::try_from(r.get::<_, i64>(2)?)
                    .map_err(|_| StoreError::Corrupt("master_key_version"))?,
                sealed: Bytes(r.get(3)?),
                created_at: to_u64(r.get(4)?)?,
            }))
        })
    }

    async fn provider_keys_per_version(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        counts_per_version(&self.pool, "provider_keys").await
    }

    async fn insert_audit(&self, audit: &AuditRecord) -> Result<(), StoreError> {
        match self.try_audit_inline(audit) {
            Some(done) => done.map(drop),
            None => self.write(Write::Audit(audit.clone())).await.map(drop),
        }
    }

    async fn audit_page(&self, after: u64, limit: u32) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT record FROM audit_records WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| serde_json::from_str(r).map_err(|_| StoreError::Corrupt("audit record")))
            .collect()
    }

    async fn audit_contiguous_from(&self, from: u64) -> Result<u64, StoreError> {
        // No stored seq exceeds i64::MAX, so nothing follows such a `from`.
        let Some(next) = from.checked_add(1).and_then(|n| i64::try_from(n).ok()) else {
            return Ok(from);
        };
        let next: Option<i64> = sqlx::query_scalar("SELECT seq FROM audit_records WHERE seq = ?")
            .bind(next)
            .fetch_optional(&self.pool)
            .await?;
        if next.is_none() {
            return Ok(from);
        }
        let last: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(a.seq) FROM audit_records a WHERE a.seq > ?
               AND NOT EXISTS (SELECT 1 FROM audit_records b WHERE b.seq = a.seq + 1)",
        )
        .bind(to_i64(from)?)
        .fetch_one(&self.pool)
        .await?;
        last.map(to_u64).transpose().map(|l| l.unwrap_or(from))
    }

    async fn wallet(&self, id: &Id) -> Result<Option<WalletRecord>, StoreError> {
        self.readers.with(|conn| {
            let mut q = conn.prepare_cached(&format!(
                "SELECT {WALLET_COLUMNS}, master_key_version, wrapped_key, ciphertext
                 FROM wallets WHERE wallet_id = ?1"
            ))?;
            let mut rows = q.query([&id.as_bytes()[..]])?;
            let Some(r) = rows.next()? else {
                return Ok(None);
            };
            let key_type: String = r.get(1)?;
            let owner: Option<Vec<u8>> = r.get(3)?;
            Ok(Some(WalletRecord {
                wallet_id: id_of(r.get(0)?)?,
                key_type: KeyType::parse(&key_type)
                    .ok_or(StoreError::Corrupt("unknown key_type"))?,
                public_key: r.get::<_, Option<Vec<u8>>>(2)?.map(Bytes),
                owner_public_key: owner
                    .map(|o| {
                        P256PublicKey::from_bytes(&o)
                            .map_err(|_| StoreError::Corrupt("owner_public_key"))
                    })
                    .transpose()?,
                created_at: to_u64(r.get(4)?)?,
                master_key_version: u32::try_from(r.get::<_, i64>(5)?)
                    .map_err(|_| StoreError::Corrupt("master_key_version"))?,
                wrapped_key: Bytes(r.get(6)?),
                ciphertext: Bytes(r.get(7)?),
            }))
        })
    }

    async fn list_wallets(
        &self,
        after: Option<&Id>,
        limit: u32,
    ) -> Result<Vec<WalletMetadata>, StoreError> {
        let after = after.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
        let rows = sqlx::query(&format!(
            "SELECT {WALLET_COLUMNS} FROM wallets WHERE wallet_id > ? ORDER BY wallet_id LIMIT ?"
        ))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(metadata_of).collect()
    }

    async fn purge_sessions(&self, expired_before: u64) -> Result<u64, StoreError> {
        self.write(Write::Purge(expired_before)).await
    }

    async fn wallets_per_version(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        counts_per_version(&self.pool, "wallets").await
    }

    async fn wallets_to_rewrap(
        &self,
        current: u32,
        after: Option<&Id>,
        limit: u32,
    ) -> Result<Vec<WrappedWalletKey>, StoreError> {
        let after = after.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT wallet_id, master_key_version, wrapped_key FROM wallets
             WHERE wallet_id > ? AND master_key_version <> ?
             ORDER BY wallet_id LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(current))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WrappedWalletKey {
                    wallet_id: id_of(r.try_get("wallet_id")?)?,
                    master_key_version: u32::try_from(r.try_get::<i64, _>("master_key_version")?)
                        .map_err(|_| StoreError::Corrupt("master key version"))?,
                    wrapped_key: Bytes(r.try_get("wrapped_key")?),
                })
            })
            .collect()
    }

    async fn apply_rewrap(
        &self,
        batch: &[(WrappedWalletKey, WrappedWalletKey)],
    ) -> Result<u64, StoreError> {
        if batch
            .iter()
            .any(|(old, new)| old.wallet_id != new.wallet_id)
        {
            return Err(StoreError::Corrupt("a re-wrap pairs two wallets"));
        }
        self.write(Write::Rewrap(batch.to_vec())).await
    }

    async fn open_sessions_under(&self, version: u32, now: u64) -> Result<u64, StoreError> {
        // Sealed session state starts `u8(1) ‖ u32be(version)` (kms-crypto's
        // envelope module); kms-api reads that header, never the rest.
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM import_sessions
             WHERE completed_at IS NULL AND expires_at > ? AND substr(sealed_state, 2, 4) = ?",
        )
        .bind(to_i64(now)?)
        .bind(&version.to_be_bytes()[..])
        .fetch_one(&self.pool)
        .await?;
        to_u64(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(seq: u64) -> AuditRecord {
        serde_json::from_value(serde_json::json!({
            "seq": seq, "time": 1, "event": "import", "outcome": "ok",
            "session_id": null, "wallet_id": null, "key_type": null,
            "recipient_fingerprint": null, "owner_fingerprint": null,
            "data_key_id": null, "master_key_version": null,
            "prev_hash": "00".repeat(32), "signature": "A".repeat(86),
        }))
        .unwrap()
    }

    /// The `synchronous` setting the writer committed `writes` under.
    fn committed_under(conn: &mut rusqlite::Connection, writes: Vec<Write>) -> i64 {
        let jobs = writes
            .into_iter()
            .map(|write| Job {
                write,
                reply: oneshot::channel().0,
            })
            .collect();
        commit_group(conn, jobs);
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    /// With the write connection taken, an audit copy does not wait on the
    /// caller's thread: it goes to the writer thread, which stores it once
    /// the connection is free.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[allow(clippy::await_holding_lock)]
    async fn audit_copy_falls_back_to_the_writer_when_the_connection_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        let held = store.conn.lock().unwrap();
        let queued = {
            let store = store.clone();
            tokio::spawn(async move { store.insert_audit(&audit(1)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !queued.is_finished(),
            "stored while the connection was taken"
        );
        drop(held);
        queued.await.unwrap().unwrap();
        // Free connection: stored inline, then both are there.
        store.insert_audit(&audit(2)).await.unwrap();
        let seqs: Vec<u64> = store
            .audit_page(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2]);
    }

    /// Only a group of audit copies alone skips its fsync; a group with
    /// anything else in it is committed with `synchronous = FULL`.
    #[test]
    fn only_audit_copies_alone_skip_the_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let mut conn = open_writer(path.to_str().unwrap()).unwrap();
        for (_, _, sql) in MIGRATIONS {
            conn.execute_batch(sql).unwrap();
        }
        const NORMAL: i64 = 1;
        const FULL: i64 = 2;
        let audits = vec![Write::Audit(audit(1)), Write::Audit(audit(2))];
        assert_eq!(committed_under(&mut conn, audits), NORMAL);
        let mixed = vec![Write::Audit(audit(3)), Write::Purge(0)];
        assert_eq!(committed_under(&mut conn, mixed), FULL);
        assert_eq!(committed_under(&mut conn, vec![Write::Purge(0)]), FULL);
        let stored: i64 = conn
            .query_row("SELECT count(*) FROM audit_records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, 3);
    }
}
