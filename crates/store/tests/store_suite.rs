//! The engine-agnostic test suite every [`Store`] implementation must pass.
//!
//! # Layout
//!
//! * Each behaviour is one `async fn check_*(store: Arc<dyn Store>)` that
//!   knows nothing about the engine behind the trait. It assumes the store it
//!   is handed is fresh and empty.
//! * `engine_suite!(module, constructor)` turns every `check_*` into a
//!   `#[tokio::test]` in `module`, each run against a store made by
//!   `constructor`, an `async fn() -> Fresh`.
//! * Engine-specific checks (file size, reopening a file, migration
//!   bookkeeping) live in their own modules below the suite.
//!
//! # Adding an engine (e.g. PostgreSQL)
//!
//! Write one constructor, `async fn fresh_postgres() -> Fresh`, that returns
//! an empty store of its own (a fresh database or schema per call, since the
//! tests run in parallel) and puts whatever must outlive the test (the
//! database handle that drops it afterwards, say) in `Fresh::guard`. Then add
//! one line:
//!
//! ```text
//! engine_suite!(postgres, fresh_postgres);
//! ```
//!
//! When adding a behaviour, write its `check_*` function and list it once in
//! `engine_suite!`; every engine then runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::any::Any;
use std::sync::Arc;

use kms_protocol::api::WalletMetadata;
use kms_protocol::audit::{AuditEvent, AuditRecord, Digest32};
use kms_protocol::internal::WalletRecord;
use kms_protocol::{Bytes, Id, KeyType, P256PublicKey};
use kms_store::{SessionRecord, SqliteStore, Store, StoreError};

// ---------------------------------------------------------------------------
// Engines
// ---------------------------------------------------------------------------

/// A fresh, empty store and whatever must live as long as it does.
struct Fresh {
    store: Arc<dyn Store>,
    /// Dropped after the test (for SQLite, the temporary directory).
    #[allow(dead_code)]
    guard: Box<dyn Any + Send>,
}

/// A new SQLite file in a temporary directory, opened through the URL
/// kms-api would use.
async fn fresh_sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kms.db").display());
    let store = kms_store::open(&url).await.unwrap();
    Fresh {
        store,
        guard: Box::new(dir),
    }
}

macro_rules! engine_suite {
    ($engine:ident, $fresh:ident) => {
        mod $engine {
            use super::*;

            async fn run<F, Fut>(check: F)
            where
                F: FnOnce(Arc<dyn Store>) -> Fut,
                Fut: std::future::Future<Output = ()>,
            {
                let fresh = $fresh().await;
                check(Arc::clone(&fresh.store)).await;
                drop(fresh);
            }

            #[tokio::test]
            async fn ping_answers() {
                run(check_ping).await;
            }

            #[tokio::test]
            async fn session_round_trip() {
                run(check_session_round_trip).await;
            }

            #[tokio::test]
            async fn session_insert_never_overwrites() {
                run(check_session_insert_never_overwrites).await;
            }

            #[tokio::test]
            async fn complete_session_is_single_use() {
                run(check_complete_session_is_single_use).await;
            }

            #[tokio::test]
            async fn complete_unknown_session_stores_nothing() {
                run(check_complete_unknown_session_stores_nothing).await;
            }

            #[tokio::test]
            async fn complete_session_is_atomic() {
                run(check_complete_session_is_atomic).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_completions_one_wins() {
                run(check_concurrent_completions_one_wins).await;
            }

            #[tokio::test]
            async fn wallet_round_trip() {
                run(check_wallet_round_trip).await;
            }

            #[tokio::test]
            async fn list_wallets_pages_in_byte_order() {
                run(check_list_wallets_pages_in_byte_order).await;
            }

            #[tokio::test]
            async fn purge_sessions_by_expiry() {
                run(check_purge_sessions_by_expiry).await;
            }

            #[tokio::test]
            async fn audit_records_are_write_once() {
                run(check_audit_records_are_write_once).await;
            }

            #[tokio::test]
            async fn audit_pages_and_gaps() {
                run(check_audit_pages_and_gaps).await;
            }

            #[tokio::test]
            async fn audit_record_is_part_of_the_transaction() {
                run(check_audit_record_is_part_of_the_transaction).await;
            }
        }
    };
}

engine_suite!(sqlite, fresh_sqlite);

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A distinct dummy audit record per call (the store does not verify
/// signatures; a reused seq with other content is refused by design).
fn audit() -> AuditRecord {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    audit_at(seq)
}

fn audit_at(seq: u64) -> AuditRecord {
    AuditRecord {
        seq,
        time: 1_800_000_000 + seq,
        event: AuditEvent::Import,
        outcome: "ok".into(),
        session_id: None,
        wallet_id: None,
        key_type: None,
        recipient_fingerprint: None,
        owner_fingerprint: None,
        prev_hash: Digest32([seq as u8; 32]),
        signature: kms_protocol::Signature::from_array([7; 64]),
    }
}

/// A deterministic, well-mixed 64-bit sequence (SplitMix64): no crypto
/// crate is needed to make ids that arrive in no particular order.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `n`th pseudo-random v4 id of the stream seeded by `seed`.
fn random_id(seed: u64, n: u64) -> Id {
    let mut state = seed ^ n.wrapping_mul(0xd1b5_4a32_d192_ed03);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&splitmix64(&mut state).to_be_bytes());
    bytes[8..].copy_from_slice(&splitmix64(&mut state).to_be_bytes());
    Id::new_v4(bytes)
}

fn id(first: u8, fill: u8) -> Id {
    let mut bytes = [fill; 16];
    bytes[0] = first;
    Id::from_bytes(bytes)
}

fn owner_key() -> P256PublicKey {
    let mut bytes = [0x11u8; 65];
    bytes[0] = 0x04;
    P256PublicKey::from_bytes(&bytes).unwrap()
}

fn session(session_id: Id, expires_at: u64) -> SessionRecord {
    SessionRecord {
        session_id,
        sealed_state: vec![0xa5; 61],
        expires_at,
        created_at: expires_at.saturating_sub(600),
        completed_at: None,
    }
}

/// A wallet shaped like a real secp256k1 import: 33-byte compressed public
/// key, 65-byte wrapped data key, 64-byte ciphertext
/// (1 + 12 + 2 + 32 + 1 + 16), master key version 1.
fn secp256k1_wallet(wallet_id: Id, created_at: u64) -> WalletRecord {
    let b = wallet_id.as_bytes()[15];
    let mut public_key = vec![b; 33];
    public_key[0] = 0x02;
    WalletRecord {
        wallet_id,
        key_type: KeyType::Secp256k1,
        public_key: Some(Bytes(public_key)),
        owner_public_key: None,
        created_at,
        master_key_version: 1,
        wrapped_key: Bytes(vec![b ^ 0x5a; 65]),
        ciphertext: Bytes(vec![b ^ 0xc3; 64]),
    }
}

fn metadata(w: &WalletRecord) -> WalletMetadata {
    WalletMetadata {
        wallet_id: w.wallet_id,
        key_type: w.key_type,
        public_key: w.public_key.clone(),
        owner_public_key: w.owner_public_key,
        created_at: w.created_at,
    }
}

/// Stores `wallet` the only way the trait allows: through a session.
async fn import(store: &dyn Store, session_id: Id, wallet: &WalletRecord) {
    store
        .insert_session(&session(session_id, 10_000), &audit())
        .await
        .unwrap();
    store
        .complete_session(&session_id, 9_500, wallet, &audit())
        .await
        .unwrap();
}

async fn all_wallets(store: &dyn Store) -> Vec<WalletMetadata> {
    store.list_wallets(None, 100_000).await.unwrap()
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

async fn check_ping(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

/// Every field of a session comes back as written; an unknown id is `None`.
async fn check_session_round_trip(store: Arc<dyn Store>) {
    let open = SessionRecord {
        session_id: id(0x01, 0x23),
        sealed_state: (0..=255u8).collect(),
        expires_at: 1_700_000_600,
        created_at: 1_700_000_000,
        completed_at: None,
    };
    // The largest values the trait can carry through a signed 64-bit column.
    let completed = SessionRecord {
        session_id: id(0xfe, 0x00),
        sealed_state: vec![0x00, 0xff, 0x00],
        expires_at: i64::MAX as u64,
        created_at: i64::MAX as u64 - 1,
        completed_at: Some(i64::MAX as u64 - 2),
    };
    store.insert_session(&open, &audit()).await.unwrap();
    store.insert_session(&completed, &audit()).await.unwrap();

    assert_eq!(store.session(&open.session_id).await.unwrap(), Some(open));
    assert_eq!(
        store.session(&completed.session_id).await.unwrap(),
        Some(completed)
    );
    assert_eq!(store.session(&id(0x01, 0x24)).await.unwrap(), None);
}

/// Inserting a session id that already exists fails and leaves the stored
/// session as it was; in particular it cannot reopen a completed session.
async fn check_session_insert_never_overwrites(store: Arc<dyn Store>) {
    let sid = id(0x42, 0x42);
    store
        .insert_session(&session(sid, 5_000), &audit())
        .await
        .unwrap();
    store
        .complete_session(
            &sid,
            4_800,
            &secp256k1_wallet(id(0x43, 0x01), 4_800),
            &audit(),
        )
        .await
        .unwrap();
    let before = store.session(&sid).await.unwrap().unwrap();
    assert_eq!(before.completed_at, Some(4_800));

    let mut again = session(sid, 9_000);
    again.sealed_state = vec![0x99; 8];
    assert!(store.insert_session(&again, &audit()).await.is_err());
    assert_eq!(store.session(&sid).await.unwrap(), Some(before));
    let err = store
        .complete_session(
            &sid,
            4_900,
            &secp256k1_wallet(id(0x43, 0x02), 4_900),
            &audit(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SessionAlreadyCompleted),
        "got {err:?}"
    );
}

/// `complete_session` sets `completed_at` and stores the wallet; a second
/// completion fails with `SessionAlreadyCompleted` and stores nothing.
async fn check_complete_session_is_single_use(store: Arc<dyn Store>) {
    let sid = id(0x10, 0x01);
    let first = secp256k1_wallet(id(0x20, 0x01), 1_000);
    let second = secp256k1_wallet(id(0x20, 0x02), 1_001);
    store
        .insert_session(&session(sid, 2_000), &audit())
        .await
        .unwrap();
    assert_eq!(
        store.session(&sid).await.unwrap().unwrap().completed_at,
        None
    );

    store
        .complete_session(&sid, 1_000, &first, &audit())
        .await
        .unwrap();
    let after = store.session(&sid).await.unwrap().unwrap();
    assert_eq!(after.completed_at, Some(1_000));
    assert_eq!(
        after,
        SessionRecord {
            completed_at: Some(1_000),
            ..session(sid, 2_000)
        }
    );
    assert_eq!(
        store.wallet(&first.wallet_id).await.unwrap(),
        Some(first.clone())
    );

    let err = store
        .complete_session(&sid, 1_001, &second, &audit())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SessionAlreadyCompleted),
        "got {err:?}"
    );
    assert_eq!(store.wallet(&second.wallet_id).await.unwrap(), None);
    // The first completion stands untouched.
    assert_eq!(
        store.session(&sid).await.unwrap().unwrap().completed_at,
        Some(1_000)
    );
    assert_eq!(all_wallets(&*store).await, vec![metadata(&first)]);
}

/// Completing a session that does not exist fails with `SessionNotFound`,
/// stores no wallet and creates no session.
async fn check_complete_unknown_session_stores_nothing(store: Arc<dyn Store>) {
    let sid = id(0x11, 0x11);
    let wallet = secp256k1_wallet(id(0x21, 0x21), 1_000);
    let err = store
        .complete_session(&sid, 1_000, &wallet, &audit())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::SessionNotFound), "got {err:?}");
    assert_eq!(store.wallet(&wallet.wallet_id).await.unwrap(), None);
    assert_eq!(store.session(&sid).await.unwrap(), None);
    assert_eq!(all_wallets(&*store).await, vec![]);

    // Another session's existence does not change the answer.
    store
        .insert_session(&session(id(0x11, 0x12), 2_000), &audit())
        .await
        .unwrap();
    let err = store
        .complete_session(&sid, 1_000, &wallet, &audit())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::SessionNotFound), "got {err:?}");
    assert_eq!(all_wallets(&*store).await, vec![]);
}

/// When the wallet cannot be stored (here: its id is taken), the session is
/// not marked completed either, and can still complete afterwards.
async fn check_complete_session_is_atomic(store: Arc<dyn Store>) {
    let taken = secp256k1_wallet(id(0x30, 0x01), 1_000);
    import(&*store, id(0x31, 0x01), &taken).await;

    let sid = id(0x31, 0x02);
    store
        .insert_session(&session(sid, 2_000), &audit())
        .await
        .unwrap();
    let mut clash = secp256k1_wallet(taken.wallet_id, 1_500);
    clash.ciphertext = Bytes(vec![0xee; 64]);
    assert!(store
        .complete_session(&sid, 1_500, &clash, &audit())
        .await
        .is_err());

    assert_eq!(
        store.session(&sid).await.unwrap().unwrap().completed_at,
        None,
        "session marked completed although its wallet was not stored"
    );
    assert_eq!(
        store.wallet(&taken.wallet_id).await.unwrap(),
        Some(taken.clone())
    );

    let fresh = secp256k1_wallet(id(0x30, 0x02), 1_600);
    store
        .complete_session(&sid, 1_600, &fresh, &audit())
        .await
        .unwrap();
    assert_eq!(
        store.session(&sid).await.unwrap().unwrap().completed_at,
        Some(1_600)
    );
    assert_eq!(
        all_wallets(&*store).await,
        vec![metadata(&taken), metadata(&fresh)]
    );
}

/// Many completions of one session racing: exactly one wins, every other
/// gets `SessionAlreadyCompleted`, exactly the winner's wallet is stored.
async fn check_concurrent_completions_one_wins(store: Arc<dyn Store>) {
    const RACERS: u64 = 16;
    let sid = id(0x50, 0x50);
    store
        .insert_session(&session(sid, 100_000), &audit())
        .await
        .unwrap();

    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS as usize));
    let mut tasks = Vec::new();
    for n in 0..RACERS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let wallet = secp256k1_wallet(random_id(0x5eed, n), 50_000 + n);
            barrier.wait().await;
            let result = store
                .complete_session(&sid, 50_000 + n, &wallet, &audit())
                .await;
            (wallet, result)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (wallet, result) = task.await.unwrap();
        match result {
            Ok(()) => winners.push(wallet),
            Err(StoreError::SessionAlreadyCompleted) => {}
            Err(other) => panic!("a losing completion failed with {other:?}"),
        }
    }
    let winner_ids: Vec<Id> = winners.iter().map(|w| w.wallet_id).collect();
    assert_eq!(winners.len(), 1, "winning wallets: {winner_ids:?}");
    let winner = &winners[0];
    assert_eq!(all_wallets(&*store).await, vec![metadata(winner)]);
    assert_eq!(
        store.wallet(&winner.wallet_id).await.unwrap().as_ref(),
        Some(winner)
    );
    assert_eq!(
        store.session(&sid).await.unwrap().unwrap().completed_at,
        Some(winner.created_at)
    );
}

/// Every field of a wallet comes back as written, with and without the
/// optional keys, at the extremes of the integer fields.
async fn check_wallet_round_trip(store: Arc<dyn Store>) {
    let wallets = [
        secp256k1_wallet(id(0x60, 0x01), 1_700_000_000),
        WalletRecord {
            wallet_id: id(0x60, 0x02),
            key_type: KeyType::P256,
            public_key: Some(Bytes((0..65u8).collect())),
            owner_public_key: Some(owner_key()),
            created_at: i64::MAX as u64,
            master_key_version: u32::MAX,
            wrapped_key: Bytes(vec![0x00; 65]),
            ciphertext: Bytes((0..=255u8).rev().collect()),
        },
        WalletRecord {
            wallet_id: id(0x60, 0x03),
            key_type: KeyType::Raw,
            public_key: None,
            owner_public_key: Some(owner_key()),
            created_at: 0,
            master_key_version: 0,
            wrapped_key: Bytes(vec![0xff; 65]),
            ciphertext: Bytes(vec![0x01; 1 + 12 + 2 + 1024 + 1 + 65 + 16]),
        },
        WalletRecord {
            wallet_id: id(0x60, 0x04),
            key_type: KeyType::Ed25519,
            public_key: Some(Bytes(vec![0xed; 32])),
            owner_public_key: None,
            created_at: 17,
            master_key_version: 7,
            wrapped_key: Bytes(vec![0x77; 65]),
            ciphertext: Bytes(vec![0x00; 64]),
        },
    ];
    for (n, wallet) in wallets.iter().enumerate() {
        import(&*store, id(0x61, n as u8), wallet).await;
    }
    for wallet in &wallets {
        assert_eq!(
            store.wallet(&wallet.wallet_id).await.unwrap().as_ref(),
            Some(wallet)
        );
    }
    assert_eq!(
        all_wallets(&*store).await,
        wallets.iter().map(metadata).collect::<Vec<_>>()
    );
    assert_eq!(store.wallet(&id(0x60, 0x05)).await.unwrap(), None);
}

/// `list_wallets` pages through wallets in ascending byte order of their
/// ids, whatever order they were stored in; `after` is exclusive and need
/// not name a stored wallet; `limit` caps the page.
async fn check_list_wallets_pages_in_byte_order(store: Arc<dyn Store>) {
    // Ids whose byte order differs from signed, textual-case or
    // insertion order.
    let ids = [
        id(0x80, 0x00),
        id(0x00, 0xff),
        id(0xff, 0x00),
        id(0x7f, 0xff),
        id(0x00, 0x00),
        id(0x0a, 0x00),
        id(0xa0, 0x00),
        id(0x01, 0x00),
    ];
    let mut wallets: Vec<WalletRecord> = ids
        .iter()
        .enumerate()
        .map(|(n, &wid)| {
            let mut w = secp256k1_wallet(wid, 100 + n as u64);
            if n % 2 == 0 {
                w.owner_public_key = Some(owner_key());
            }
            w
        })
        .collect();
    for (n, wallet) in wallets.iter().enumerate() {
        import(&*store, random_id(0x1157, n as u64), wallet).await;
    }
    wallets.sort_by(|a, b| a.wallet_id.as_bytes().cmp(b.wallet_id.as_bytes()));
    let sorted: Vec<WalletMetadata> = wallets.iter().map(metadata).collect();

    assert_eq!(store.list_wallets(None, 100).await.unwrap(), sorted);
    assert_eq!(store.list_wallets(None, 3).await.unwrap(), sorted[..3]);
    assert_eq!(store.list_wallets(None, 0).await.unwrap(), vec![]);

    // `after` is exclusive.
    let after = sorted[2].wallet_id;
    assert_eq!(
        store.list_wallets(Some(&after), 100).await.unwrap(),
        sorted[3..]
    );
    assert_eq!(
        store.list_wallets(Some(&after), 2).await.unwrap(),
        sorted[3..5]
    );

    // `after` between two stored ids: 00 00.. < 00 00..01 < 00 ff..
    let mut between = [0u8; 16];
    between[15] = 0x01;
    assert_eq!(
        store
            .list_wallets(Some(&Id::from_bytes(between)), 100)
            .await
            .unwrap(),
        sorted[1..]
    );
    // `after` below every stored id (the all-zero id is stored; nothing is
    // below it, so use it exclusively) and above every stored id.
    assert_eq!(
        store
            .list_wallets(Some(&Id::from_bytes([0; 16])), 100)
            .await
            .unwrap(),
        sorted[1..]
    );
    assert_eq!(
        store
            .list_wallets(Some(&Id::from_bytes([0xff; 16])), 100)
            .await
            .unwrap(),
        vec![]
    );
    assert_eq!(
        store
            .list_wallets(Some(&sorted[sorted.len() - 1].wallet_id), 100)
            .await
            .unwrap(),
        vec![]
    );

    // Paging with the last id of each page visits every wallet once.
    let mut paged = Vec::new();
    let mut cursor: Option<Id> = None;
    loop {
        let page = store.list_wallets(cursor.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        cursor = Some(last.wallet_id);
        paged.extend(page);
    }
    assert_eq!(paged, sorted);
}

/// `purge_sessions` deletes exactly the sessions that expired strictly
/// before the cutoff, completed or not, returns how many, and leaves
/// wallets alone.
async fn check_purge_sessions_by_expiry(store: Arc<dyn Store>) {
    let old_open = id(0x70, 0x01);
    let old_done = id(0x70, 0x02);
    let at_cutoff = id(0x70, 0x03);
    let later_open = id(0x70, 0x04);
    let later_done = id(0x70, 0x05);
    let w_old = secp256k1_wallet(id(0x71, 0x01), 900);
    let w_later = secp256k1_wallet(id(0x71, 0x02), 1_900);

    for (sid, expires_at) in [
        (old_open, 999),
        (old_done, 500),
        (at_cutoff, 1_000),
        (later_open, 2_000),
        (later_done, 2_000),
    ] {
        store
            .insert_session(&session(sid, expires_at), &audit())
            .await
            .unwrap();
    }
    store
        .complete_session(&old_done, 400, &w_old, &audit())
        .await
        .unwrap();
    store
        .complete_session(&later_done, 1_900, &w_later, &audit())
        .await
        .unwrap();

    assert_eq!(store.purge_sessions(1_000).await.unwrap(), 2);
    assert_eq!(store.session(&old_open).await.unwrap(), None);
    assert_eq!(store.session(&old_done).await.unwrap(), None);
    assert_eq!(
        store.session(&at_cutoff).await.unwrap(),
        Some(session(at_cutoff, 1_000))
    );
    assert_eq!(
        store.session(&later_open).await.unwrap(),
        Some(session(later_open, 2_000))
    );
    assert_eq!(
        store
            .session(&later_done)
            .await
            .unwrap()
            .unwrap()
            .completed_at,
        Some(1_900)
    );
    assert_eq!(
        store.wallet(&w_old.wallet_id).await.unwrap(),
        Some(w_old.clone())
    );
    assert_eq!(
        store.wallet(&w_later.wallet_id).await.unwrap(),
        Some(w_later.clone())
    );

    // Nothing left to purge below the same cutoff.
    assert_eq!(store.purge_sessions(1_000).await.unwrap(), 0);
    // A later cutoff takes the rest, completed or not; wallets stay.
    assert_eq!(store.purge_sessions(2_001).await.unwrap(), 3);
    for sid in [at_cutoff, later_open, later_done] {
        assert_eq!(store.session(&sid).await.unwrap(), None);
    }
    assert_eq!(
        all_wallets(&*store).await,
        vec![metadata(&w_old), metadata(&w_later)]
    );
}

// ---------------------------------------------------------------------------
// Opening by URL (no engine needed)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unsupported_urls_are_refused_pointing_at_sqlite() {
    for url in ["postgres://x", "postgresql://x", "mysql://x"] {
        match kms_store::open(url).await {
            Err(StoreError::Unsupported(message)) => assert!(
                message.to_lowercase().contains("sqlite"),
                "{url}: {message:?} does not point at sqlite"
            ),
            other => panic!("{url}: expected Unsupported, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// SQLite only
// ---------------------------------------------------------------------------

mod sqlite_only {
    use super::*;

    async fn migrations_applied(store: &SqliteStore) -> Vec<(i64, String)> {
        sqlx::query_as("SELECT version, name FROM kms_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await
            .unwrap()
    }

    /// Data survives closing and reopening the file; reopening applies no
    /// migration a second time.
    #[tokio::test]
    async fn reopen_keeps_data_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let path = path.to_str().unwrap();

        let first = SqliteStore::open(path).await.unwrap();
        assert_eq!(
            migrations_applied(&first).await,
            vec![(1, "init".to_owned()), (2, "audit".to_owned())]
        );
        let sid = id(0x90, 0x01);
        let open_sid = id(0x90, 0x02);
        let mut wallet = secp256k1_wallet(id(0x91, 0x01), 1_234);
        wallet.owner_public_key = Some(owner_key());
        import(&first, sid, &wallet).await;
        first
            .insert_session(&session(open_sid, 7_777), &audit())
            .await
            .unwrap();
        first.pool().close().await;

        for _ in 0..2 {
            let again = SqliteStore::open(path).await.unwrap();
            assert_eq!(
                migrations_applied(&again).await,
                vec![(1, "init".to_owned()), (2, "audit".to_owned())]
            );
            assert_eq!(
                again.wallet(&wallet.wallet_id).await.unwrap(),
                Some(wallet.clone())
            );
            assert_eq!(
                again.session(&sid).await.unwrap().unwrap().completed_at,
                Some(9_500)
            );
            assert_eq!(
                again.session(&open_sid).await.unwrap(),
                Some(session(open_sid, 7_777))
            );
            // Single use holds across reopening.
            let err = again
                .complete_session(
                    &sid,
                    9_600,
                    &secp256k1_wallet(id(0x91, 0x02), 9_600),
                    &audit(),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::SessionAlreadyCompleted),
                "got {err:?}"
            );
            let tables: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('wallets', 'import_sessions')",
            )
            .fetch_one(again.pool())
            .await
            .unwrap();
            assert_eq!(tables, 2);
            again.pool().close().await;
        }

        // The URL form opens the same file.
        let by_url = kms_store::open(&format!("sqlite://{path}")).await.unwrap();
        assert_eq!(all_wallets(&*by_url).await, vec![metadata(&wallet)]);
    }

    /// Bytes of file the database takes, with the WAL folded in.
    async fn file_bytes(store: &SqliteStore) -> (i64, i64) {
        let pool = store.pool();
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(busy, 0, "checkpoint could not complete");
        let page_count: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(pool)
            .await
            .unwrap();
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(pool)
            .await
            .unwrap();
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(pool)
            .await
            .unwrap();
        (page_count * page_size, (page_count - free) * page_size)
    }

    /// Deletes the audit records, which are the log of operations rather
    /// than wallet data, so the wallet measurement counts wallets only.
    async fn drop_audit(sqlite: &SqliteStore) -> i64 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_records")
            .fetch_one(sqlite.pool())
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_records")
            .execute(sqlite.pool())
            .await
            .unwrap();
        n
    }

    /// A secp256k1 wallet costs at most 400 bytes of database pages in use.
    ///
    /// The sessions the wallets are imported through are stored (and the
    /// file measured) before the baseline, so the growth is what storing
    /// the wallets adds. Ids are random, so the B-tree fills the way it does
    /// in production rather than by appending. Audit records (one per
    /// operation, kept in their own table) are measured and reported
    /// separately.
    #[tokio::test]
    async fn secp256k1_wallet_size_on_disk() {
        const WALLETS: u64 = 2000;
        const LIMIT: i64 = 400;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let sqlite = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        let store: &dyn Store = &sqlite;
        let (_, empty_used) = file_bytes(&sqlite).await;

        let sessions: Vec<Id> = (0..WALLETS).map(|n| random_id(0x5e55, n)).collect();
        for &sid in &sessions {
            store
                .insert_session(&session(sid, 10_000), &audit())
                .await
                .unwrap();
        }
        drop_audit(&sqlite).await;
        let (_, before_used) = file_bytes(&sqlite).await;

        for (n, sid) in sessions.iter().enumerate() {
            let wallet = secp256k1_wallet(random_id(0xa11e7, n as u64), 1_700_000_000 + n as u64);
            store
                .complete_session(sid, 9_000, &wallet, &audit())
                .await
                .unwrap();
        }
        let (_, with_audit_used) = file_bytes(&sqlite).await;
        let records = drop_audit(&sqlite).await;
        let (_, after_used) = file_bytes(&sqlite).await;
        assert_eq!(
            all_wallets(store).await.len() as u64,
            WALLETS,
            "not every wallet was stored"
        );
        let per_wallet = (after_used - before_used) / WALLETS as i64;
        let per_record = (with_audit_used - after_used) / records;

        // What a wallet costs once its session is purged, against an empty database.
        assert_eq!(store.purge_sessions(u64::MAX >> 1).await.unwrap(), WALLETS);
        let (_, purged_used) = file_bytes(&sqlite).await;
        let per_wallet_purged = (purged_used - empty_used) / WALLETS as i64;
        println!(
            "secp256k1 wallet: {per_wallet} bytes in use per wallet with its completed session, \
             {per_wallet_purged} after purging sessions; audit: {per_record} bytes per record"
        );
        assert!(
            per_wallet <= LIMIT,
            "{per_wallet} bytes per wallet exceeds {LIMIT}"
        );
        assert!(
            per_wallet_purged <= LIMIT,
            "{per_wallet_purged} bytes per wallet after purge exceeds {LIMIT}"
        );
    }
}

// ---------------------------------------------------------------------------
// Audit records

/// The same record twice is a no-op; another record under its seq is
/// refused and the stored one stays.
async fn check_audit_records_are_write_once(store: Arc<dyn Store>) {
    let r = audit_at(5);
    store.insert_audit(&r).await.unwrap();
    store.insert_audit(&r).await.unwrap();
    let mut other = audit_at(5);
    other.outcome = "authorization_failed".into();
    assert!(matches!(
        store.insert_audit(&other).await,
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(store.audit_page(0, 10).await.unwrap(), vec![r]);
}

/// Paging is by seq whatever the insert order; the contiguous watermark
/// stops at the first gap.
async fn check_audit_pages_and_gaps(store: Arc<dyn Store>) {
    assert_eq!(store.audit_contiguous_from(0).await.unwrap(), 0);
    for seq in [9, 3, 1, 6, 2, 5] {
        store.insert_audit(&audit_at(seq)).await.unwrap();
    }
    let seqs = |v: Vec<AuditRecord>| v.into_iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.audit_page(0, 100).await.unwrap()),
        vec![1, 2, 3, 5, 6, 9]
    );
    assert_eq!(seqs(store.audit_page(2, 2).await.unwrap()), vec![3, 5]);
    assert_eq!(
        seqs(store.audit_page(9, 10).await.unwrap()),
        Vec::<u64>::new()
    );
    for (from, want) in [(0, 3), (3, 3), (4, 6), (6, 6), (7, 7), (8, 9), (9, 9)] {
        assert_eq!(
            store.audit_contiguous_from(from).await.unwrap(),
            want,
            "from {from}"
        );
    }
}

/// A completion that loses stores neither its wallet nor its audit record;
/// a session whose record conflicts is not stored either.
async fn check_audit_record_is_part_of_the_transaction(store: Arc<dyn Store>) {
    let sid = id(0x77, 0x01);
    store
        .insert_session(&session(sid, 5_000), &audit_at(1))
        .await
        .unwrap();
    store
        .complete_session(
            &sid,
            100,
            &secp256k1_wallet(id(0x77, 0x02), 100),
            &audit_at(2),
        )
        .await
        .unwrap();
    let lost = store
        .complete_session(
            &sid,
            101,
            &secp256k1_wallet(id(0x77, 0x03), 101),
            &audit_at(3),
        )
        .await;
    assert!(matches!(lost, Err(StoreError::SessionAlreadyCompleted)));
    let stored: Vec<u64> = store
        .audit_page(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(stored, vec![1, 2]);
    let mut clash = audit_at(1);
    clash.outcome = "different".into();
    let other = id(0x77, 0x04);
    assert!(store
        .insert_session(&session(other, 5_000), &clash)
        .await
        .is_err());
    assert!(store.session(&other).await.unwrap().is_none());
}
