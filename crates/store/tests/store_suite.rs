//! The engine-agnostic test suite every [`Store`] implementation must pass.
//!
//! # Layout
//!
//! * Each behaviour is one `async fn check_*(store: Arc<dyn Store>)` that
//!   knows nothing about the engine behind the trait. It assumes the store it
//!   is handed is fresh and empty, and takes the audit records it stores from
//!   its own [`Seqs`] (1, 2, 3, …), since a store refuses a different record
//!   under a seq it already holds.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kms_protocol::api::WalletMetadata;
use kms_protocol::audit::{AuditEvent, AuditRecord, Digest32};
use kms_protocol::internal::{WalletRecord, WrappedWalletKey};
use kms_protocol::provider::{KeySource, ProviderKeyRow, ProviderKeyType};
use kms_protocol::{Bytes, Id, KeyType, P256PublicKey, Signature};
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
            async fn provider_keys_are_unique_per_pub_and_source() {
                run(check_provider_keys_are_unique_per_pub_and_source).await;
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
            async fn audit_insert_is_write_once() {
                run(check_audit_insert_is_write_once).await;
            }

            #[tokio::test]
            async fn audit_page_by_seq() {
                run(check_audit_page_by_seq).await;
            }

            #[tokio::test]
            async fn audit_contiguous_from_stops_at_gaps() {
                run(check_audit_contiguous_from_stops_at_gaps).await;
            }

            #[tokio::test]
            async fn failed_completion_stores_no_audit() {
                run(check_failed_completion_stores_no_audit).await;
            }

            #[tokio::test]
            async fn completion_with_conflicting_audit_stores_nothing() {
                run(check_completion_with_conflicting_audit_stores_nothing).await;
            }

            #[tokio::test]
            async fn session_with_conflicting_audit_is_not_stored() {
                run(check_session_with_conflicting_audit_is_not_stored).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_audit_inserts_agree() {
                run(check_concurrent_audit_inserts_agree).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_writes_fail_alone() {
                run(check_concurrent_writes_fail_alone).await;
            }

            #[tokio::test]
            async fn rewrap_batches_are_compare_and_set() {
                run(check_rewrap_batches_are_compare_and_set).await;
            }

            #[tokio::test]
            async fn open_sessions_under_a_version() {
                run(check_open_sessions_under_a_version).await;
            }
        }
    };
}

engine_suite!(sqlite, fresh_sqlite);

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A dummy audit record, distinct for every seq. Stores keep records as
/// they are given and verify neither signature nor chain.
fn audit(seq: u64) -> AuditRecord {
    AuditRecord {
        seq,
        time: 1_800_000_000 + seq,
        event: AuditEvent::Import,
        outcome: "ok".to_owned(),
        session_id: None,
        wallet_id: None,
        key_type: None,
        recipient_fingerprint: None,
        owner_fingerprint: None,
        data_key_id: None,
        master_key_version: None,
        algorithm: None,
        curve: None,
        path: None,
        payload_sha256: None,
        provider_key: None,
        key_source: None,
        provider_key_type: None,
        coin: None,
        prev_hash: Digest32([seq as u8; 32]),
        signature: Signature::from_array([7; 64]),
    }
}

/// A record under the same seq as `record` with other content.
fn conflicting(record: &AuditRecord) -> AuditRecord {
    AuditRecord {
        outcome: "internal_error".to_owned(),
        ..record.clone()
    }
}

/// Hands out one test's audit records under fresh seqs 1, 2, 3, …
#[derive(Debug, Default)]
struct Seqs(AtomicU64);

impl Seqs {
    /// A dummy record under the next seq.
    fn next(&self) -> AuditRecord {
        audit(self.0.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Every audit record stored, in seq order.
async fn audit_log(store: &dyn Store) -> Vec<AuditRecord> {
    store.audit_page(0, u32::MAX).await.unwrap()
}

fn seqs_of(records: &[AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
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

/// Stores `wallet` the only way the trait allows: through a session (and
/// two audit records from `seqs`).
async fn import(store: &dyn Store, seqs: &Seqs, session_id: Id, wallet: &WalletRecord) {
    store
        .insert_session(&session(session_id, 10_000), &seqs.next())
        .await
        .unwrap();
    store
        .complete_session(&session_id, 9_500, wallet, &seqs.next())
        .await
        .unwrap();
}

async fn all_wallets(store: &dyn Store) -> Vec<WalletMetadata> {
    store.list_wallets(None, 100_000).await.unwrap()
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

async fn check_rewrap_batches_are_compare_and_set(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
    let mut wallets = Vec::new();
    for n in 0..7 {
        let mut w = secp256k1_wallet(random_id(41, n), 100 + n);
        w.master_key_version = if n == 6 { 2 } else { 1 };
        import(store.as_ref(), &seqs, random_id(42, n), &w).await;
        wallets.push(w);
    }
    assert_eq!(
        store.wallets_per_version().await.unwrap(),
        vec![(1, 6), (2, 1)]
    );
    // Batches in id order, skipping wallets already under the current version.
    let first = store.wallets_to_rewrap(2, None, 4).await.unwrap();
    assert_eq!(first.len(), 4);
    assert!(first
        .windows(2)
        .all(|p| p[0].wallet_id.as_bytes() < p[1].wallet_id.as_bytes()));
    assert!(first.iter().all(|w| w.master_key_version == 1));
    let rest = store
        .wallets_to_rewrap(2, Some(&first[3].wallet_id), 100)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    let moved = |w: &WrappedWalletKey| WrappedWalletKey {
        wallet_id: w.wallet_id,
        master_key_version: 2,
        wrapped_key: Bytes(vec![0xee; 65]),
    };
    // A pair whose "as read" no longer matches is left alone.
    let mut stale = first[1].clone();
    stale.wrapped_key = Bytes(vec![0; 65]);
    let batch = vec![
        (first[0].clone(), moved(&first[0])),
        (stale, moved(&first[1])),
        (first[2].clone(), moved(&first[2])),
        (first[3].clone(), moved(&first[3])),
    ];
    assert_eq!(store.apply_rewrap(&batch).await.unwrap(), 3);
    assert_eq!(
        store.wallets_per_version().await.unwrap(),
        vec![(1, 3), (2, 4)]
    );
    let w0 = store.wallet(&first[0].wallet_id).await.unwrap().unwrap();
    assert_eq!(
        (w0.master_key_version, w0.wrapped_key.0),
        (2, vec![0xee; 65])
    );
    let original = wallets
        .iter()
        .find(|w| w.wallet_id == first[0].wallet_id)
        .unwrap();
    assert_eq!(w0.ciphertext, original.ciphertext, "ciphertext untouched");
    // Applying the same batch again changes nothing (idempotent re-run).
    assert_eq!(store.apply_rewrap(&batch).await.unwrap(), 0);
    // A batch pairing two different wallets is refused whole.
    let crossed = vec![
        (first[1].clone(), moved(&first[1])),
        (rest[0].clone(), moved(&rest[1])),
    ];
    assert!(store.apply_rewrap(&crossed).await.is_err());
    assert_eq!(
        store.wallets_per_version().await.unwrap(),
        vec![(1, 3), (2, 4)]
    );
}

async fn check_open_sessions_under_a_version(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
    let sealed = |v: u32| {
        let mut b = vec![1u8];
        b.extend_from_slice(&v.to_be_bytes());
        b.extend_from_slice(&[0xa5; 56]);
        b
    };
    for (n, (v, expires, done)) in [
        (1, 2_000, false),
        (1, 500, false),
        (1, 2_000, true),
        (2, 2_000, false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = session(random_id(43, n as u64), expires);
        s.sealed_state = sealed(v);
        store.insert_session(&s, &seqs.next()).await.unwrap();
        if done {
            let w = secp256k1_wallet(random_id(44, n as u64), 1);
            store
                .complete_session(&s.session_id, 900, &w, &seqs.next())
                .await
                .unwrap();
        }
    }
    assert_eq!(store.open_sessions_under(1, 1_000).await.unwrap(), 1);
    assert_eq!(store.open_sessions_under(2, 1_000).await.unwrap(), 1);
    assert_eq!(store.open_sessions_under(3, 1_000).await.unwrap(), 0);
    assert_eq!(store.open_sessions_under(1, 3_000).await.unwrap(), 0);
}

fn provider_row(public: &str, source: KeySource, version: u32) -> ProviderKeyRow {
    ProviderKeyRow {
        public: public.to_owned(),
        source,
        key_type: ProviderKeyType::Independent,
        coin: "tbtc".to_owned(),
        master_key_version: version,
        sealed: Bytes(vec![1, 2, 3, version as u8]),
        created_at: 1_800_000_000,
    }
}

/// `(pub, source)` is a key's identity: a second store under it is refused
/// and changes nothing (neither the row nor the audit copy); the same pub
/// under the other source is another key.
async fn check_provider_keys_are_unique_per_pub_and_source(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
    let user = provider_row("xpub-a", KeySource::User, 1);
    let first = seqs.next();
    store.insert_provider_key(&user, &first).await.unwrap();
    assert_eq!(
        store.provider_key("xpub-a", KeySource::User).await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(
        store
            .provider_key("xpub-a", KeySource::Backup)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.provider_key("xpub-b", KeySource::User).await.unwrap(),
        None
    );

    let again = ProviderKeyRow {
        coin: "btc".to_owned(),
        sealed: Bytes(vec![9]),
        ..user.clone()
    };
    let refused = seqs.next();
    let err = store
        .insert_provider_key(&again, &refused)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ProviderKeyExists), "{err:?}");
    assert_eq!(
        store.provider_key("xpub-a", KeySource::User).await.unwrap(),
        Some(user.clone())
    );
    assert_eq!(seqs_of(&audit_log(&*store).await), vec![first.seq]);

    let backup = provider_row("xpub-a", KeySource::Backup, 2);
    store
        .insert_provider_key(&backup, &seqs.next())
        .await
        .unwrap();
    assert_eq!(
        store
            .provider_key("xpub-a", KeySource::Backup)
            .await
            .unwrap(),
        Some(backup)
    );
    assert_eq!(
        store.provider_keys_per_version().await.unwrap(),
        vec![(1, 1), (2, 1)]
    );
}

async fn check_ping(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
}

/// Every field of a session comes back as written, and so does the audit
/// record stored with it; an unknown id is `None`.
async fn check_session_round_trip(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
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
    let open_started = AuditRecord {
        event: AuditEvent::ImportSessionStarted,
        session_id: Some(open.session_id),
        ..seqs.next()
    };
    let completed_started = seqs.next();
    store.insert_session(&open, &open_started).await.unwrap();
    store
        .insert_session(&completed, &completed_started)
        .await
        .unwrap();

    assert_eq!(store.session(&open.session_id).await.unwrap(), Some(open));
    assert_eq!(
        store.session(&completed.session_id).await.unwrap(),
        Some(completed)
    );
    assert_eq!(store.session(&id(0x01, 0x24)).await.unwrap(), None);
    assert_eq!(
        audit_log(&*store).await,
        vec![open_started, completed_started]
    );
}

/// Inserting a session id that already exists fails, leaves the stored
/// session as it was and stores no audit record; in particular it cannot
/// reopen a completed session.
async fn check_session_insert_never_overwrites(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
    let sid = id(0x42, 0x42);
    store
        .insert_session(&session(sid, 5_000), &seqs.next())
        .await
        .unwrap();
    store
        .complete_session(
            &sid,
            4_800,
            &secp256k1_wallet(id(0x43, 0x01), 4_800),
            &seqs.next(),
        )
        .await
        .unwrap();
    let before = store.session(&sid).await.unwrap().unwrap();
    assert_eq!(before.completed_at, Some(4_800));

    let mut again = session(sid, 9_000);
    again.sealed_state = vec![0x99; 8];
    assert!(store.insert_session(&again, &seqs.next()).await.is_err());
    assert_eq!(store.session(&sid).await.unwrap(), Some(before));
    let err = store
        .complete_session(
            &sid,
            4_900,
            &secp256k1_wallet(id(0x43, 0x02), 4_900),
            &seqs.next(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SessionAlreadyCompleted),
        "got {err:?}"
    );
    assert_eq!(seqs_of(&audit_log(&*store).await), vec![1, 2]);
}

/// `complete_session` sets `completed_at` and stores the wallet and the
/// audit record; a second completion fails with `SessionAlreadyCompleted`
/// and stores nothing.
async fn check_complete_session_is_single_use(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
    let sid = id(0x10, 0x01);
    let first = secp256k1_wallet(id(0x20, 0x01), 1_000);
    let second = secp256k1_wallet(id(0x20, 0x02), 1_001);
    let started = seqs.next();
    store
        .insert_session(&session(sid, 2_000), &started)
        .await
        .unwrap();
    assert_eq!(
        store.session(&sid).await.unwrap().unwrap().completed_at,
        None
    );

    let imported = AuditRecord {
        session_id: Some(sid),
        wallet_id: Some(first.wallet_id),
        key_type: Some(first.key_type),
        ..seqs.next()
    };
    store
        .complete_session(&sid, 1_000, &first, &imported)
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
    assert_eq!(
        audit_log(&*store).await,
        vec![started.clone(), imported.clone()]
    );

    let err = store
        .complete_session(&sid, 1_001, &second, &seqs.next())
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
    assert_eq!(audit_log(&*store).await, vec![started, imported]);
}

/// Completing a session that does not exist fails with `SessionNotFound`,
/// stores no wallet and no audit record, and creates no session.
async fn check_complete_unknown_session_stores_nothing(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
    let sid = id(0x11, 0x11);
    let wallet = secp256k1_wallet(id(0x21, 0x21), 1_000);
    let err = store
        .complete_session(&sid, 1_000, &wallet, &seqs.next())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::SessionNotFound), "got {err:?}");
    assert_eq!(store.wallet(&wallet.wallet_id).await.unwrap(), None);
    assert_eq!(store.session(&sid).await.unwrap(), None);
    assert_eq!(all_wallets(&*store).await, vec![]);
    assert_eq!(audit_log(&*store).await, vec![]);

    // Another session's existence does not change the answer.
    let other_started = seqs.next();
    store
        .insert_session(&session(id(0x11, 0x12), 2_000), &other_started)
        .await
        .unwrap();
    let err = store
        .complete_session(&sid, 1_000, &wallet, &seqs.next())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::SessionNotFound), "got {err:?}");
    assert_eq!(all_wallets(&*store).await, vec![]);
    assert_eq!(audit_log(&*store).await, vec![other_started]);
}

/// When the wallet cannot be stored (here: its id is taken), neither is the
/// audit record nor is the session marked completed; it can still complete
/// afterwards.
async fn check_complete_session_is_atomic(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
    let taken = secp256k1_wallet(id(0x30, 0x01), 1_000);
    import(&*store, &seqs, id(0x31, 0x01), &taken).await;

    let sid = id(0x31, 0x02);
    store
        .insert_session(&session(sid, 2_000), &seqs.next())
        .await
        .unwrap();
    let mut clash = secp256k1_wallet(taken.wallet_id, 1_500);
    clash.ciphertext = Bytes(vec![0xee; 64]);
    let clash_audit = seqs.next();
    assert!(store
        .complete_session(&sid, 1_500, &clash, &clash_audit)
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
    assert_eq!(
        seqs_of(&audit_log(&*store).await),
        vec![1, 2, 3],
        "audit record stored although its wallet was not"
    );

    // The refused completion's seq is free; the retry may take it.
    let fresh = secp256k1_wallet(id(0x30, 0x02), 1_600);
    let retry_audit = AuditRecord {
        wallet_id: Some(fresh.wallet_id),
        ..clash_audit
    };
    store
        .complete_session(&sid, 1_600, &fresh, &retry_audit)
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
    assert_eq!(audit_log(&*store).await.last(), Some(&retry_audit));
}

/// Many completions of one session racing, each with its own audit record:
/// exactly one wins, every other gets `SessionAlreadyCompleted`, exactly
/// the winner's wallet and audit record are stored.
async fn check_concurrent_completions_one_wins(store: Arc<dyn Store>) {
    const RACERS: u64 = 16;
    let seqs = Seqs::default();
    let sid = id(0x50, 0x50);
    let started = seqs.next();
    store
        .insert_session(&session(sid, 100_000), &started)
        .await
        .unwrap();

    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS as usize));
    let mut tasks = Vec::new();
    for n in 0..RACERS {
        let store = Arc::clone(&store);
        let barrier = Arc::clone(&barrier);
        let wallet = secp256k1_wallet(random_id(0x5eed, n), 50_000 + n);
        let record = AuditRecord {
            wallet_id: Some(wallet.wallet_id),
            ..seqs.next()
        };
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let result = store
                .complete_session(&sid, 50_000 + n, &wallet, &record)
                .await;
            (wallet, record, result)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (wallet, record, result) = task.await.unwrap();
        match result {
            Ok(()) => winners.push((wallet, record)),
            Err(StoreError::SessionAlreadyCompleted) => {}
            Err(other) => panic!("a losing completion failed with {other:?}"),
        }
    }
    let winner_ids: Vec<Id> = winners.iter().map(|(w, _)| w.wallet_id).collect();
    assert_eq!(winners.len(), 1, "winning wallets: {winner_ids:?}");
    let (winner, winner_record) = &winners[0];
    assert_eq!(all_wallets(&*store).await, vec![metadata(winner)]);
    assert_eq!(
        store.wallet(&winner.wallet_id).await.unwrap().as_ref(),
        Some(winner)
    );
    assert_eq!(
        store.session(&sid).await.unwrap().unwrap().completed_at,
        Some(winner.created_at)
    );
    // The session's start and the winner's record; no loser's.
    assert_eq!(
        audit_log(&*store).await,
        vec![started, winner_record.clone()]
    );
}

/// Every field of a wallet comes back as written, with and without the
/// optional keys, at the extremes of the integer fields.
async fn check_wallet_round_trip(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
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
        import(&*store, &seqs, id(0x61, n as u8), wallet).await;
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
    let seqs = Seqs::default();
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
        import(&*store, &seqs, random_id(0x1157, n as u64), wallet).await;
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
/// wallets and audit records alone.
async fn check_purge_sessions_by_expiry(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
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
            .insert_session(&session(sid, expires_at), &seqs.next())
            .await
            .unwrap();
    }
    store
        .complete_session(&old_done, 400, &w_old, &seqs.next())
        .await
        .unwrap();
    store
        .complete_session(&later_done, 1_900, &w_later, &seqs.next())
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
    assert_eq!(
        seqs_of(&audit_log(&*store).await),
        (1..=7).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// The suite: audit records
// ---------------------------------------------------------------------------

/// Storing a record the store already holds is a no-op; a different record
/// under its seq, whichever field differs, is `Corrupt` and leaves the
/// stored one as it was.
async fn check_audit_insert_is_write_once(store: Arc<dyn Store>) {
    let held = audit(5);
    store.insert_audit(&held).await.unwrap();
    store.insert_audit(&held).await.unwrap();
    assert_eq!(audit_log(&*store).await, vec![held.clone()]);

    let others = [
        conflicting(&held),
        AuditRecord {
            time: held.time + 1,
            ..held.clone()
        },
        AuditRecord {
            event: AuditEvent::Export,
            ..held.clone()
        },
        AuditRecord {
            wallet_id: Some(id(0x05, 0x05)),
            ..held.clone()
        },
        AuditRecord {
            prev_hash: Digest32([0xee; 32]),
            ..held.clone()
        },
        AuditRecord {
            signature: Signature::from_array([8; 64]),
            ..held.clone()
        },
    ];
    for other in &others {
        let err = store.insert_audit(other).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Corrupt(_)),
            "{other:?}: got {err:?}"
        );
    }
    assert_eq!(audit_log(&*store).await, vec![held.clone()]);

    // The held record is still a no-op; its neighbours are unaffected.
    store.insert_audit(&held).await.unwrap();
    store.insert_audit(&audit(6)).await.unwrap();
    store.insert_audit(&audit(4)).await.unwrap();
    assert_eq!(audit_log(&*store).await, vec![audit(4), held, audit(6)]);
}

/// `audit_page` returns records in ascending seq order whatever order they
/// were stored in, each exactly as stored; `after` is exclusive and need
/// not be stored; `limit` caps the page.
async fn check_audit_page_by_seq(store: Arc<dyn Store>) {
    assert_eq!(store.audit_page(0, 10).await.unwrap(), vec![]);

    // One record with every optional field set, at the largest time a
    // signed 64-bit column can carry.
    let full = AuditRecord {
        time: i64::MAX as u64,
        event: AuditEvent::Export,
        outcome: "owner_authorization_invalid".to_owned(),
        session_id: Some(id(0x0e, 0x01)),
        wallet_id: Some(id(0x0e, 0x02)),
        key_type: Some(KeyType::Ed25519),
        recipient_fingerprint: Some(Digest32([0xab; 32])),
        owner_fingerprint: Some(Digest32([0xcd; 32])),
        data_key_id: Some(id(0x0e, 0x03)),
        master_key_version: Some(u32::MAX),
        ..audit(6)
    };
    let record = |seq: u64| if seq == 6 { full.clone() } else { audit(seq) };
    for seq in [9, 3, 1, 6, 2, 5] {
        store.insert_audit(&record(seq)).await.unwrap();
    }
    let sorted: Vec<AuditRecord> = [1, 2, 3, 5, 6, 9].into_iter().map(record).collect();

    assert_eq!(store.audit_page(0, 100).await.unwrap(), sorted);
    assert_eq!(store.audit_page(0, u32::MAX).await.unwrap(), sorted);
    assert_eq!(store.audit_page(0, 2).await.unwrap(), sorted[..2]);
    assert_eq!(store.audit_page(0, 0).await.unwrap(), vec![]);

    // `after` is exclusive, stored or not.
    assert_eq!(store.audit_page(2, 2).await.unwrap(), sorted[2..4]);
    assert_eq!(store.audit_page(3, 100).await.unwrap(), sorted[3..]);
    assert_eq!(store.audit_page(4, 100).await.unwrap(), sorted[3..]);
    assert_eq!(store.audit_page(7, 1).await.unwrap(), sorted[5..]);
    assert_eq!(store.audit_page(9, 10).await.unwrap(), vec![]);
    assert_eq!(store.audit_page(1_000, 10).await.unwrap(), vec![]);

    // Paging with the last seq of each page visits every record once.
    let mut paged = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store.audit_page(cursor, 4).await.unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, sorted);
}

/// `audit_contiguous_from(from)` is the largest `s >= from` with every seq
/// in `from+1..=s` stored: `from` itself when `from+1` is missing.
async fn check_audit_contiguous_from_stops_at_gaps(store: Arc<dyn Store>) {
    let expect = |cases: &'static [(u64, u64)]| {
        let store = Arc::clone(&store);
        async move {
            for &(from, want) in cases {
                assert_eq!(
                    store.audit_contiguous_from(from).await.unwrap(),
                    want,
                    "from {from}"
                );
            }
        }
    };
    // Empty: nothing follows anywhere.
    expect(&[(0, 0), (1, 1), (5, 5)]).await;

    for seq in [9, 3, 1, 6, 2, 5] {
        store.insert_audit(&audit(seq)).await.unwrap();
    }
    expect(&[
        (0, 3),
        (1, 3),
        (2, 3),
        (3, 3),
        (4, 6),
        (5, 6),
        (6, 6),
        (7, 7),
        (8, 9),
        (9, 9),
        (10, 10),
        (1_000, 1_000),
    ])
    .await;

    // Filling the gaps moves the answer on.
    store.insert_audit(&audit(4)).await.unwrap();
    expect(&[(0, 6), (3, 6), (7, 7)]).await;
    store.insert_audit(&audit(8)).await.unwrap();
    store.insert_audit(&audit(7)).await.unwrap();
    expect(&[(0, 9), (6, 9), (9, 9)]).await;
}

/// A completion refused with `SessionAlreadyCompleted` or `SessionNotFound`
/// stores neither its wallet nor its audit record; the record's seq stays
/// free, so kms-api can store the record on its own afterwards.
async fn check_failed_completion_stores_no_audit(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
    let sid = id(0x77, 0x01);
    let started = seqs.next();
    let done = seqs.next();
    store
        .insert_session(&session(sid, 5_000), &started)
        .await
        .unwrap();
    store
        .complete_session(&sid, 100, &secp256k1_wallet(id(0x77, 0x02), 100), &done)
        .await
        .unwrap();

    let lost = seqs.next();
    let lost_wallet = secp256k1_wallet(id(0x77, 0x03), 101);
    let err = store
        .complete_session(&sid, 101, &lost_wallet, &lost)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::SessionAlreadyCompleted),
        "got {err:?}"
    );
    assert_eq!(store.wallet(&lost_wallet.wallet_id).await.unwrap(), None);
    assert_eq!(
        audit_log(&*store).await,
        vec![started.clone(), done.clone()]
    );
    assert_eq!(store.audit_contiguous_from(0).await.unwrap(), 2);

    let err = store
        .complete_session(&id(0x77, 0x04), 101, &lost_wallet, &lost)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::SessionNotFound), "got {err:?}");
    assert_eq!(store.wallet(&lost_wallet.wallet_id).await.unwrap(), None);
    assert_eq!(
        audit_log(&*store).await,
        vec![started.clone(), done.clone()]
    );

    // What kms-api does after losing the race: store the record by itself.
    store.insert_audit(&lost).await.unwrap();
    assert_eq!(audit_log(&*store).await, vec![started, done, lost]);
    assert_eq!(all_wallets(&*store).await.len(), 1);
}

/// A completion whose audit record conflicts with a stored one fails with
/// `Corrupt`, stores no wallet, leaves the session open and the stored
/// record as it was. A completion whose record is already stored as is
/// (the audit sync copied it first) succeeds.
async fn check_completion_with_conflicting_audit_stores_nothing(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
    let sid = id(0x78, 0x01);
    let started = seqs.next();
    store
        .insert_session(&session(sid, 5_000), &started)
        .await
        .unwrap();
    let held = seqs.next();
    store.insert_audit(&held).await.unwrap();

    let wallet = secp256k1_wallet(id(0x78, 0x02), 1_000);
    let err = store
        .complete_session(&sid, 1_000, &wallet, &conflicting(&held))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "got {err:?}");
    assert_eq!(
        store.session(&sid).await.unwrap().unwrap().completed_at,
        None,
        "session marked completed although its audit record was refused"
    );
    assert_eq!(store.wallet(&wallet.wallet_id).await.unwrap(), None);
    assert_eq!(all_wallets(&*store).await, vec![]);
    assert_eq!(
        audit_log(&*store).await,
        vec![started.clone(), held.clone()]
    );

    store
        .complete_session(&sid, 1_000, &wallet, &held)
        .await
        .unwrap();
    assert_eq!(
        store.session(&sid).await.unwrap().unwrap().completed_at,
        Some(1_000)
    );
    assert_eq!(all_wallets(&*store).await, vec![metadata(&wallet)]);
    assert_eq!(audit_log(&*store).await, vec![started, held]);
}

/// A session whose audit record conflicts with a stored one fails with
/// `Corrupt` and is not stored; the stored record stays. A session whose
/// record is already stored as is (the audit sync copied it first) is
/// stored.
async fn check_session_with_conflicting_audit_is_not_stored(store: Arc<dyn Store>) {
    let seqs = Seqs::default();
    let held = seqs.next();
    store.insert_audit(&held).await.unwrap();

    let sid = id(0x79, 0x01);
    let err = store
        .insert_session(&session(sid, 5_000), &conflicting(&held))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "got {err:?}");
    assert_eq!(store.session(&sid).await.unwrap(), None);
    assert_eq!(audit_log(&*store).await, vec![held.clone()]);
    // Not stored, so not completable either.
    let err = store
        .complete_session(
            &sid,
            1_000,
            &secp256k1_wallet(id(0x79, 0x02), 1_000),
            &seqs.next(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::SessionNotFound), "got {err:?}");

    store
        .insert_session(&session(sid, 5_000), &held)
        .await
        .unwrap();
    assert_eq!(
        store.session(&sid).await.unwrap(),
        Some(session(sid, 5_000))
    );
    assert_eq!(audit_log(&*store).await, vec![held]);
}

/// Racing writes of one seq (two kms-api instances storing and copying the
/// same record): identical records all succeed and one is stored; different
/// records under one seq leave exactly one stored, and every other write
/// fails with `Corrupt`.
async fn check_concurrent_audit_inserts_agree(store: Arc<dyn Store>) {
    const RACERS: u8 = 16;
    async fn race(store: &Arc<dyn Store>, records: Vec<AuditRecord>) -> Vec<AuditRecord> {
        let barrier = Arc::new(tokio::sync::Barrier::new(records.len()));
        let tasks: Vec<_> = records
            .into_iter()
            .map(|record| {
                let store = Arc::clone(store);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    let result = store.insert_audit(&record).await;
                    (record, result)
                })
            })
            .collect();
        let mut stored = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                (record, Ok(())) => stored.push(record),
                (_, Err(StoreError::Corrupt(_))) => {}
                (_, Err(other)) => panic!("a racing insert failed with {other:?}"),
            }
        }
        stored
    }

    let same = audit(1);
    let stored = race(&store, vec![same.clone(); RACERS as usize]).await;
    assert_eq!(stored.len(), RACERS as usize, "an identical write failed");
    assert_eq!(audit_log(&*store).await, vec![same.clone()]);

    let different: Vec<AuditRecord> = (0..RACERS)
        .map(|n| AuditRecord {
            signature: Signature::from_array([n; 64]),
            ..audit(2)
        })
        .collect();
    let winners = race(&store, different).await;
    assert_eq!(winners.len(), 1, "winning records: {winners:?}");
    assert_eq!(audit_log(&*store).await, vec![same, winners[0].clone()]);
}

/// Writes that arrive together (and may share one commit) succeed or fail
/// each on its own: a completion refused after it changed rows (its audit
/// record conflicts) leaves its session open and stores no wallet, and takes
/// nothing of its neighbours with it.
async fn check_concurrent_writes_fail_alone(store: Arc<dyn Store>) {
    const N: u64 = 40;
    let barrier = Arc::new(tokio::sync::Barrier::new(2 * N as usize));
    let mut tasks = Vec::new();
    for n in 0..N {
        // Every n: a session (seq 1 + 2n), then its completion: with seq
        // 2 + 2n for even n; for odd n with a record conflicting with the
        // session's, while a neighbour stores seq 2 + 2n.
        let session_id = random_id(77, n);
        let wallet = secp256k1_wallet(random_id(78, n), 9_000);
        let (s, b) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            s.insert_session(&session(session_id, 10_000), &audit(1 + 2 * n))
                .await
                .unwrap();
            let record = if n % 2 == 0 {
                audit(2 + 2 * n)
            } else {
                conflicting(&audit(1 + 2 * n))
            };
            s.complete_session(&session_id, 9_500, &wallet, &record)
                .await
                .map(|()| Some(wallet))
        }));
        let (s, b) = (Arc::clone(&store), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            if n % 2 == 1 {
                s.insert_audit(&audit(2 + 2 * n)).await.unwrap();
            }
            Ok(None)
        }));
    }
    let mut wallets = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let n = (i / 2) as u64;
        match t.await.unwrap() {
            Ok(Some(w)) => wallets.push(metadata(&w)),
            Ok(None) => {}
            Err(StoreError::Corrupt(_)) if n % 2 == 1 => {}
            Err(e) => panic!("write {n} failed: {e:?}"),
        }
    }
    wallets.sort_by_key(|w| *w.wallet_id.as_bytes());
    assert_eq!(wallets.len(), (N / 2) as usize);
    assert_eq!(all_wallets(&*store).await, wallets);
    assert_eq!(
        audit_log(&*store).await,
        (1..=2 * N).map(audit).collect::<Vec<_>>()
    );
    for n in 0..N {
        let s = store.session(&random_id(77, n)).await.unwrap().unwrap();
        assert_eq!(s.completed_at.is_none(), n % 2 == 1, "session {n}");
    }
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

    /// The WAL is copied into the database file by the store's own
    /// checkpoint thread while writes keep coming, long before the writer's
    /// fallback threshold, so no write waits for a checkpoint. Fails if the
    /// thread is gone (the file would stay as the migrations left it).
    #[tokio::test]
    async fn wal_is_checkpointed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let seqs = Seqs::default();
        for _ in 0..300 {
            store.insert_audit(&seqs.next()).await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = std::fs::metadata(&path).unwrap().len();
            if now > before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file is still {now} bytes after 300 commits: nothing checkpointed the WAL"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(audit_log(&store).await.len(), 300);
    }

    /// Data survives closing and reopening the file; reopening applies no
    /// migration a second time.
    #[tokio::test]
    async fn reopen_keeps_data_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kms.db");
        let path = path.to_str().unwrap();

        let seqs = Seqs::default();
        let first = SqliteStore::open(path).await.unwrap();
        assert_eq!(
            migrations_applied(&first).await,
            vec![
                (1, "init".to_owned()),
                (2, "audit".to_owned()),
                (3, "provider_keys".to_owned())
            ]
        );
        let sid = id(0x90, 0x01);
        let open_sid = id(0x90, 0x02);
        let mut wallet = secp256k1_wallet(id(0x91, 0x01), 1_234);
        wallet.owner_public_key = Some(owner_key());
        import(&first, &seqs, sid, &wallet).await;
        first
            .insert_session(&session(open_sid, 7_777), &seqs.next())
            .await
            .unwrap();
        let log = audit_log(&first).await;
        assert_eq!(seqs_of(&log), vec![1, 2, 3]);
        first.pool().close().await;

        for _ in 0..2 {
            let again = SqliteStore::open(path).await.unwrap();
            assert_eq!(
                migrations_applied(&again).await,
                vec![
                    (1, "init".to_owned()),
                    (2, "audit".to_owned()),
                    (3, "provider_keys".to_owned())
                ]
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
                    &seqs.next(),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::SessionAlreadyCompleted),
                "got {err:?}"
            );
            // The audit log survives too, and the refused completion added
            // nothing to it.
            assert_eq!(audit_log(&again).await, log);
            assert_eq!(again.audit_contiguous_from(0).await.unwrap(), 3);
            let tables: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'
                 AND name IN ('wallets', 'import_sessions', 'audit_records')",
            )
            .fetch_one(again.pool())
            .await
            .unwrap();
            assert_eq!(tables, 3);
            again.pool().close().await;
        }

        // The URL form opens the same file.
        let by_url = kms_store::open(&format!("sqlite://{path}")).await.unwrap();
        assert_eq!(all_wallets(&*by_url).await, vec![metadata(&wallet)]);
    }

    /// Bytes of file the database takes, with the WAL folded in.
    async fn file_bytes(store: &SqliteStore) -> (i64, i64) {
        let pool = store.pool();
        // The store's own checkpoint thread may be mid-checkpoint: retry.
        let mut busy = 1;
        for _ in 0..100 {
            (busy, _, _) = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(pool)
                .await
                .unwrap();
            if busy == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
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
        let seqs = Seqs::default();

        let sessions: Vec<Id> = (0..WALLETS).map(|n| random_id(0x5e55, n)).collect();
        for &sid in &sessions {
            store
                .insert_session(&session(sid, 10_000), &seqs.next())
                .await
                .unwrap();
        }
        drop_audit(&sqlite).await;
        let (_, before_used) = file_bytes(&sqlite).await;

        for (n, sid) in sessions.iter().enumerate() {
            let wallet = secp256k1_wallet(random_id(0xa11e7, n as u64), 1_700_000_000 + n as u64);
            store
                .complete_session(sid, 9_000, &wallet, &seqs.next())
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
