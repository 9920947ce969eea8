//! `SecureRuntime`: the one door into the key set and every cryptographic
//! operation. Handlers call [`SecureRuntime::trusted_env_exec`] and get a
//! [`TrustedEnv`] for the duration of the closure; nothing else in the
//! process can reach the keys.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use kms_crypto::audit::{fingerprint, seal_record};
use kms_crypto::envelope;
use kms_crypto::envelope::EnvelopeError;
use kms_crypto::hpke::{self, HpkeSecretKey};
use kms_crypto::keyset::{ChangeError, KeySet};
use kms_crypto::material::KeyMaterial;
use kms_crypto::{labels, messages, rng, sign};
use kms_protocol::api::{ExportBundle, HpkeSuite, ImportEnvelope, ImportReceipt, SessionProof};
use kms_protocol::audit::{AuditEntry, AuditEvent, AuditRecord};
use kms_protocol::data_key::{DataKey, DecryptDataKey, GenerateDataKey};
use kms_protocol::internal::{
    DataKeyIssued, Export, Exported, Identity, Import, Imported, KeysChanged, KeysStatus, Rewrap,
    Rewrapped, SessionStarted, WalletRecord, WrappedWalletKey, REWRAP_BATCH_MAX,
};
use kms_protocol::{Bytes, Id, Nonce, P256PublicKey};

pub mod provider;
mod psbt;
mod wallets;

use wallets::HdNodeCache;
pub use wallets::DEFAULT_HD_NODE_CACHE_ENTRIES;

use crate::audit::AuditLog;
use crate::keystore::KeySetFile;
use crate::EnvError;

/// A refused operation and the audit record of the refusal (when it could
/// be written), which kms-api stores before it answers.
#[derive(Debug)]
pub struct Refused {
    pub error: EnvError,
    pub audit: Option<Box<AuditRecord>>,
}

/// Seconds since the Unix epoch; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// How far ahead an owner's authorization may expire (docs/protocol.md §6).
pub const MAX_AUTHORIZATION_WINDOW: u64 = 300;

/// The provider the attestation is rooted in (docs/protocol.md §1).
pub const PROVIDER: &str = "software";

struct Trusted {
    /// The key set; replaced whole (never mutated) when an administrator
    /// rotates or retires a master key. Each operation works on one
    /// snapshot.
    keys: RwLock<Arc<KeySet>>,
    /// Where a changed key set is sealed and saved; `None` in tests that
    /// never change it.
    file: Option<KeySetFile>,
    /// Serialises key-set changes.
    admin: Mutex<()>,
    audit: AuditLog,
    /// Completed session ids, forgotten once they expire.
    completed: Mutex<Completed>,
    session_ttl: u64,
    measurement: String,
    clock: Clock,
    /// HD nodes recently used (docs/design.md, "HD wallets").
    hd_nodes: HdNodeCache,
}

/// Sessions completed here, so a replayed completion is refused even if
/// kms-api's store would allow it. Each id is kept until its session
/// expires, about 50 bytes apiece (hash set slot and expiry list): import
/// rate × session TTL entries, so 600 000 entries and about 30 MB at a
/// sustained 1 000 imports/s and the default 600 s TTL.
/// Forgetting costs O(log n) per expiry second, not a scan per import.
#[derive(Default)]
struct Completed {
    ids: HashSet<Id>,
    /// The ids by expiry. An id unmarked after a failed audit write stays
    /// listed; marked again, it is listed twice under the same expiry (a
    /// session's expiry never changes), and removing it twice is harmless.
    by_expiry: BTreeMap<u64, Vec<Id>>,
}

impl Completed {
    /// Forgets every session that expired at or before `now`.
    fn forget_expired(&mut self, now: u64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() > now {
                break;
            }
            for id in entry.remove() {
                self.ids.remove(&id);
            }
        }
    }
}

/// The trusted runtime. Cheap to clone (shared).
#[derive(Clone)]
pub struct SecureRuntime {
    inner: Arc<Trusted>,
}

impl std::fmt::Debug for SecureRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureRuntime")
            .field("keys", &self.inner.snapshot())
            .field("session_ttl", &self.inner.session_ttl)
            .finish_non_exhaustive()
    }
}

impl SecureRuntime {
    /// Takes ownership of the key set and locks its memory. A failed `mlock`
    /// is a loud warning, not a refusal to start (docs/design.md, "Decisions").
    pub fn new(
        keys: KeySet,
        audit: AuditLog,
        session_ttl: u64,
        measurement: String,
        clock: Clock,
    ) -> Self {
        Self::with_file(keys, None, audit, session_ttl, measurement, clock)
    }

    /// [`SecureRuntime::new`] with the file a changed key set is saved to,
    /// which rotation and retirement need.
    pub fn with_file(
        keys: KeySet,
        file: Option<KeySetFile>,
        audit: AuditLog,
        session_ttl: u64,
        measurement: String,
        clock: Clock,
    ) -> Self {
        let keys = Arc::new(keys);
        lock_keys(&keys);
        Self {
            inner: Arc::new(Trusted {
                keys: RwLock::new(keys),
                file,
                admin: Mutex::new(()),
                audit,
                completed: Mutex::new(Completed::default()),
                session_ttl,
                measurement,
                clock,
                hd_nodes: HdNodeCache::new(DEFAULT_HD_NODE_CACHE_ENTRIES),
            }),
        }
    }

    /// Keeps at most `entries` HD nodes in memory (0: none, every derive
    /// and sign recomputes its wallet's root and path). Call before sharing.
    pub fn with_hd_node_cache(mut self, entries: usize) -> Self {
        if let Some(t) = Arc::get_mut(&mut self.inner) {
            t.hd_nodes = HdNodeCache::new(entries);
        }
        self
    }

    /// Runs `op` inside the trusted environment. Each audit record `op`
    /// writes is durable before `op` goes on, so this blocks the thread on
    /// the log's fsync: use it off the async executor, or for operations
    /// that write no record.
    pub fn trusted_env_exec<R>(&self, op: impl FnOnce(&TrustedEnv<'_>) -> R) -> R {
        op(&TrustedEnv {
            t: &self.inner,
            keys: self.inner.snapshot(),
            deferred: None,
        })
    }

    /// Runs `op` inside the trusted environment, then waits until every
    /// audit record `op` wrote is durable (group commit: concurrent calls
    /// share fsyncs). The call that finds no fsync in flight runs it on
    /// this thread, as it ran `op`'s cryptography; the others wait without
    /// holding an executor thread. Its result
    /// leaves only after that; if the log cannot make the records durable
    /// the caller gets [`EnvError::AuditUnavailable`] instead.
    pub async fn trusted_env_exec_async<R>(
        &self,
        op: impl FnOnce(&TrustedEnv<'_>) -> R,
    ) -> Result<R, EnvError> {
        let (r, end) = {
            let env = TrustedEnv {
                t: &self.inner,
                keys: self.inner.snapshot(),
                deferred: Some(Cell::new(0)),
            };
            let r = op(&env);
            (r, env.deferred.map_or(0, Cell::into_inner))
        };
        if end > 0 {
            self.inner.audit.durable(end).await?;
        }
        Ok(r)
    }
}

fn lock_keys(keys: &KeySet) {
    for region in keys.secret_regions() {
        if let Err(e) = crate::hardening::lock_memory(region) {
            tracing::warn!(error = %e, "could not mlock key set memory; it may be swapped to disk");
        }
    }
}

impl Trusted {
    fn snapshot(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Access to the trusted state, only inside [`SecureRuntime::trusted_env_exec`].
pub struct TrustedEnv<'a> {
    t: &'a Trusted,
    /// The key set as it was when this call began.
    keys: Arc<KeySet>,
    /// Under [`SecureRuntime::trusted_env_exec_async`]: the log offset its
    /// records must be durable to before the result leaves. `None`: each
    /// record is waited for as it is written.
    deferred: Option<Cell<u64>>,
}

impl std::fmt::Debug for TrustedEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrustedEnv")
    }
}

impl TrustedEnv<'_> {
    fn now(&self) -> u64 {
        (self.t.clock)()
    }

    fn new_id(&self) -> Result<Id, EnvError> {
        Ok(Id::new_v4(rng::array(&mut rng::SystemRng)?))
    }

    /// The identity public key and the measurement (docs/protocol.md §1).
    pub fn identity(&self) -> Identity {
        Identity {
            provider: PROVIDER.to_owned(),
            identity_public_key: *self.keys.identity().public_key(),
            measurement: self.t.measurement.clone(),
        }
    }

    /// Starts an import session (docs/protocol.md §2): a fresh HPKE key pair, its
    /// proof under the identity key, and its private key sealed for kms-api.
    fn start_session_inner(
        &self,
        client_nonce: Option<&Nonce>,
    ) -> Result<(ImportEnvelope, Bytes), EnvError> {
        let session_id = self.new_id()?;
        let sk = HpkeSecretKey::generate()?;
        let expires_at = self.now().saturating_add(self.t.session_ttl);
        let proof = messages::session_proof(
            &session_id,
            sk.public_key(),
            expires_at,
            client_nonce.map(Nonce::as_bytes),
        );
        let identity = self.keys.identity();
        let sealed_state = envelope::seal_session(&self.keys, &session_id, expires_at, &sk)?;
        Ok((
            ImportEnvelope {
                session_id,
                session_public_key: *sk.public_key(),
                expires_at,
                hpke_suite: HpkeSuite::V1,
                proof: SessionProof {
                    identity_public_key: *identity.public_key(),
                    signature: identity.sign(&proof)?,
                },
            },
            Bytes(sealed_state),
        ))
    }

    /// Completes an import (docs/protocol.md §3). Checks, in order: the sealed
    /// state opens (else the store is at fault, 500), the session has not
    /// completed here (409), it has not expired (410), the ciphertext opens
    /// (422 `decryption_failed`), the plaintext is key material (422
    /// `invalid_key_material`). Only then is the session marked completed, so
    /// a 422 leaves it usable.
    fn import_inner(&self, req: &Import) -> Result<(ImportReceipt, WalletRecord), EnvError> {
        let sk = envelope::open_session(
            &self.keys,
            &req.session_id,
            req.expires_at,
            req.sealed_state.as_bytes(),
        )?;
        let now = self.now();
        if self.is_completed(&req.session_id, now) {
            return Err(EnvError::SessionUsed);
        }
        if now >= req.expires_at {
            return Err(EnvError::SessionExpired);
        }
        let plaintext = sk
            .open(
                &hpke::info(labels::IMPORT, &req.session_id),
                &req.encrypted_key,
            )
            .map_err(|_| EnvError::DecryptionFailed)?;
        let material = KeyMaterial::from_plaintext(plaintext.expose())
            .map_err(|e| EnvError::InvalidKeyMaterial(e.0))?;
        drop(plaintext);
        let public_key = material
            .public_key()
            .map_err(|e| EnvError::InvalidKeyMaterial(e.0))?;
        let wallet_id = self.new_id()?;
        let sealed = envelope::seal_wallet(&self.keys, &wallet_id, &material)?;
        let receipt_msg = messages::import_receipt(
            &req.session_id,
            &wallet_id,
            req.encrypted_key.as_bytes(),
            material.key_type(),
            public_key.as_deref(),
            material.owner_public_key(),
        );
        let signature = self.keys.identity().sign(&receipt_msg)?;
        self.mark_completed(req.session_id, req.expires_at, now)?;
        let public_key = public_key.map(Bytes);
        let owner_public_key = material.owner_public_key().copied();
        Ok((
            ImportReceipt {
                wallet_id,
                key_type: material.key_type(),
                public_key: public_key.clone(),
                owner_public_key,
                created_at: now,
                signature,
            },
            WalletRecord {
                wallet_id,
                key_type: material.key_type(),
                public_key,
                owner_public_key,
                created_at: now,
                master_key_version: sealed.master_key_version,
                wrapped_key: Bytes(sealed.wrapped_key),
                ciphertext: Bytes(sealed.ciphertext),
            },
        ))
    }

    fn is_completed(&self, id: &Id, now: u64) -> bool {
        let mut done = self.t.completed.lock().unwrap_or_else(|p| p.into_inner());
        done.forget_expired(now);
        done.ids.contains(id)
    }

    fn unmark_completed(&self, id: &Id) {
        let mut done = self.t.completed.lock().unwrap_or_else(|p| p.into_inner());
        done.ids.remove(id);
    }

    fn mark_completed(&self, id: Id, expires_at: u64, now: u64) -> Result<(), EnvError> {
        let mut done = self.t.completed.lock().unwrap_or_else(|p| p.into_inner());
        done.forget_expired(now);
        if !done.ids.insert(id) {
            // A concurrent import of the same session won the race.
            return Err(EnvError::SessionUsed);
        }
        done.by_expiry.entry(expires_at).or_default().push(id);
        Ok(())
    }

    /// Exports a wallet sealed to `recipient_public_key` (docs/protocol.md §4).
    /// Checks, in order: the recipient key is on the curve (400), the stored
    /// record opens (else 500), the owner's authorization for an owner-bound
    /// wallet (401/403, §6).
    fn export_inner(
        &self,
        req: &Export,
        owner_seen: &mut Option<P256PublicKey>,
    ) -> Result<ExportBundle, EnvError> {
        sign::check_point(&req.recipient_public_key).map_err(|_| EnvError::InvalidPublicKey)?;
        let r = &req.record;
        let material = envelope::open_wallet(
            &self.keys,
            &r.wallet_id,
            r.key_type,
            r.wrapped_key.as_bytes(),
            r.ciphertext.as_bytes(),
        )?;
        *owner_seen = material.owner_public_key().copied();
        if let Some(owner) = material.owner_public_key() {
            self.check_owner(owner, req.authorization.as_ref(), |expires_at, nonce| {
                messages::export_request(&r.wallet_id, &req.recipient_public_key, expires_at, nonce)
            })?;
        }
        let plaintext = material.to_export_plaintext();
        let encrypted_key = hpke::seal(
            &req.recipient_public_key,
            &hpke::info(labels::EXPORT, &r.wallet_id),
            plaintext.expose(),
        )
        .map_err(|_| EnvError::InvalidPublicKey)?;
        let msg = messages::export_bundle(
            &r.wallet_id,
            &req.recipient_public_key,
            encrypted_key.as_bytes(),
        );
        Ok(ExportBundle {
            wallet_id: r.wallet_id,
            key_type: material.key_type(),
            recipient_public_key: req.recipient_public_key,
            encrypted_key,
            signature: self.keys.identity().sign(&msg)?,
        })
    }

    /// Appends an audit record, numbered, chained and signed with the identity key.
    pub fn record(&self, entry: AuditEntry) -> Result<AuditRecord, EnvError> {
        let identity = self.keys.identity();
        let time = self.now();
        let seal = |seq, prev| seal_record(identity, seq, time, prev, entry);
        match &self.deferred {
            None => Ok(self.t.audit.append(seal)?),
            Some(end) => {
                let (record, at) = self.t.audit.append_deferred(seal)?;
                end.set(end.get().max(at));
                Ok(record)
            }
        }
    }

    /// Up to `limit` audit records after `after`.
    pub fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, EnvError> {
        Ok(self.t.audit.read(after, limit)?)
    }

    /// Records a refusal; if even that cannot be written, the refusal
    /// becomes a 503 (the caller learns nothing it should not).
    fn refuse(&self, error: EnvError, entry: AuditEntry) -> Refused {
        match self.record(entry) {
            Ok(audit) => Refused {
                error,
                audit: Some(Box::new(audit)),
            },
            Err(e) => Refused {
                error: e,
                audit: None,
            },
        }
    }

    /// Starts an import session (docs/protocol.md §2), audited.
    pub fn start_session(&self, client_nonce: Option<&Nonce>) -> Result<SessionStarted, Refused> {
        let (envelope, sealed_state) = self
            .start_session_inner(client_nonce)
            .map_err(|error| Refused { error, audit: None })?;
        let mut entry = AuditEntry::new(AuditEvent::ImportSessionStarted, "ok");
        entry.session_id = Some(envelope.session_id);
        let audit = self
            .record(entry)
            .map_err(|error| Refused { error, audit: None })?;
        Ok(SessionStarted {
            envelope,
            sealed_state,
            audit,
        })
    }

    /// Completes an import (docs/protocol.md §3), audited whether it succeeds or
    /// is refused. If the record cannot be written the import is undone
    /// (the session stays usable) and nothing is returned.
    pub fn import(&self, req: &Import) -> Result<Imported, Refused> {
        let mut entry = AuditEntry::new(AuditEvent::Import, "ok");
        entry.session_id = Some(req.session_id);
        match self.import_inner(req) {
            Ok((receipt, record)) => {
                entry.wallet_id = Some(receipt.wallet_id);
                entry.key_type = Some(receipt.key_type);
                entry.owner_fingerprint = receipt.owner_public_key.as_ref().map(fingerprint);
                match self.record(entry) {
                    Ok(audit) => Ok(Imported {
                        receipt,
                        record,
                        audit,
                    }),
                    Err(error) => {
                        self.unmark_completed(&req.session_id);
                        Err(Refused { error, audit: None })
                    }
                }
            }
            Err(error) => {
                entry.outcome = error.code().as_str().to_owned();
                Err(self.refuse(error, entry))
            }
        }
    }

    /// Exports a wallet (docs/protocol.md §4, §6), audited whether granted or
    /// refused. The ciphertext is returned only once its record is written.
    pub fn export(&self, req: &Export) -> Result<Exported, Refused> {
        let mut owner = None;
        let result = self.export_inner(req, &mut owner);
        let mut entry = AuditEntry::new(AuditEvent::Export, "ok");
        entry.wallet_id = Some(req.record.wallet_id);
        entry.key_type = Some(req.record.key_type);
        entry.recipient_fingerprint = Some(fingerprint(&req.recipient_public_key));
        entry.owner_fingerprint = owner.as_ref().map(fingerprint);
        match result {
            Ok(bundle) => {
                let audit = self
                    .record(entry)
                    .map_err(|error| Refused { error, audit: None })?;
                Ok(Exported { bundle, audit })
            }
            Err(error) => {
                entry.outcome = error.code().as_str().to_owned();
                Err(self.refuse(error, entry))
            }
        }
    }
    /// The master-key versions and the provider (never a key).
    pub fn keys_status(&self) -> KeysStatus {
        status(&self.keys, self.t.file.as_ref())
    }

    /// Makes a new master key version current for new wallets, sessions
    /// and data keys at once; older versions keep opening what they sealed.
    pub fn rotate_master_key(&self) -> Result<KeysChanged, EnvError> {
        self.change_keys(AuditEvent::MasterKeyRotated, |k| {
            let next = k.rotated()?;
            let v = next.current_version();
            Ok((next, v))
        })
    }

    /// Deletes master key `version` from the key set. kms-api checks first
    /// that no stored wallet or open session is under it; data keys
    /// callers hold under it stop decrypting (refused as retired).
    pub fn retire_master_key(&self, version: u32) -> Result<KeysChanged, EnvError> {
        self.change_keys(AuditEvent::MasterKeyRetired, |k| {
            Ok((k.retired(version)?, version))
        })
    }

    /// Seals, saves, then swaps in a changed key set, and records it. A
    /// key set that cannot be saved is not used (nothing changes).
    fn change_keys(
        &self,
        event: AuditEvent,
        change: impl FnOnce(&KeySet) -> Result<(KeySet, u32), ChangeError>,
    ) -> Result<KeysChanged, EnvError> {
        let _one_at_a_time = self.t.admin.lock().unwrap_or_else(|p| p.into_inner());
        let file = self
            .t
            .file
            .as_ref()
            .ok_or_else(|| EnvError::KeySetStore("this runtime has no key set file".into()))?;
        let current = self.t.snapshot();
        let (next, version) = change(&current)?;
        file.persist(&next)
            .map_err(|e| EnvError::KeySetStore(e.to_string()))?;
        lock_keys(&next);
        let next = Arc::new(next);
        *self.t.keys.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        tracing::info!(event = event.as_str(), version, "key set changed");
        let mut entry = AuditEntry::new(event, "ok");
        entry.master_key_version = Some(version);
        let audit = self.record(entry)?;
        Ok(KeysChanged {
            status: status(&next, Some(file)),
            audit,
        })
    }

    /// Moves wallets' data keys to the current master key version. Each
    /// wallet is independent: one whose stored key does not open is listed
    /// in `failed` and the rest proceed.
    pub fn rewrap(&self, req: &Rewrap) -> Result<Rewrapped, EnvError> {
        if req.wallets.len() > REWRAP_BATCH_MAX {
            return Err(EnvError::BadRequest(
                "at most 1000 wallets per rewrap batch",
            ));
        }
        let mut wallets = Vec::with_capacity(req.wallets.len());
        let mut failed = Vec::new();
        for w in &req.wallets {
            match envelope::rewrap_wallet_key(&self.keys, &w.wallet_id, w.wrapped_key.as_bytes()) {
                Ok((version, wrapped)) => wallets.push(WrappedWalletKey {
                    wallet_id: w.wallet_id,
                    master_key_version: version,
                    wrapped_key: Bytes(wrapped),
                }),
                Err(e) => {
                    tracing::error!(wallet_id = %w.wallet_id, error = %e, "a stored wallet key does not re-wrap");
                    failed.push(w.wallet_id);
                }
            }
        }
        Ok(Rewrapped {
            current_version: self.keys.current_version(),
            wallets,
            failed,
        })
    }

    /// A new AES-256 data key, wrapped under the current master key and
    /// sealed to the recipient, audited.
    pub fn generate_data_key(&self, req: &GenerateDataKey) -> Result<DataKeyIssued, Refused> {
        let mut entry = AuditEntry::new(AuditEvent::DataKeyGenerated, "ok");
        entry.recipient_fingerprint = Some(fingerprint(&req.recipient_public_key));
        let result = (|| {
            sign::check_point(&req.recipient_public_key).map_err(|_| EnvError::InvalidPublicKey)?;
            let id = self.new_id()?;
            let mut key = kms_crypto::SecretKey::from_array([0; 32]);
            rng::RandomSource::fill(&mut rng::SystemRng, key.expose_mut())?;
            let context = req.encryption_context.canonical_bytes();
            let (version, wrapped) = envelope::wrap_data_key(&self.keys, &id, &context, &key)?;
            self.issue_data_key(
                id,
                version,
                wrapped,
                &key,
                &req.recipient_public_key,
                &context,
            )
        })();
        self.finish_data_key(result, entry)
    }

    /// Opens a wrapped data key (same encryption context) and seals it to
    /// the recipient, audited whether it opens or not.
    pub fn decrypt_data_key(&self, req: &DecryptDataKey) -> Result<DataKeyIssued, Refused> {
        let mut entry = AuditEntry::new(AuditEvent::DataKeyDecrypted, "ok");
        entry.recipient_fingerprint = Some(fingerprint(&req.recipient_public_key));
        if let Ok((version, id)) = envelope::data_key_header(req.wrapped_key.as_bytes()) {
            entry.data_key_id = Some(id);
            entry.master_key_version = Some(version);
        }
        let result = (|| {
            sign::check_point(&req.recipient_public_key).map_err(|_| EnvError::InvalidPublicKey)?;
            let context = req.encryption_context.canonical_bytes();
            let wrapped = req.wrapped_key.as_bytes();
            let (version, id, key) = envelope::unwrap_data_key(&self.keys, wrapped, &context)
                .map_err(|e| match e {
                    EnvelopeError::Format => EnvError::MalformedDataKey,
                    EnvelopeError::UnknownKeyVersion(v) if self.keys.is_retired(v) => {
                        EnvError::RetiredVersion(v)
                    }
                    EnvelopeError::UnknownKeyVersion(v) => EnvError::UnknownVersion(v),
                    EnvelopeError::Open => EnvError::DataKeyDoesNotOpen,
                    other => EnvError::StoredRecord(other),
                })?;
            self.issue_data_key(
                id,
                version,
                wrapped.to_vec(),
                &key,
                &req.recipient_public_key,
                &context,
            )
        })();
        self.finish_data_key(result, entry)
    }

    fn issue_data_key(
        &self,
        id: Id,
        version: u32,
        wrapped: Vec<u8>,
        key: &kms_crypto::SecretKey,
        recipient: &P256PublicKey,
        context: &[u8],
    ) -> Result<DataKey, EnvError> {
        let encrypted_key = hpke::seal(
            recipient,
            &hpke::info(labels::DATA_KEY_SEAL, &id),
            key.expose(),
        )
        .map_err(|_| EnvError::InvalidPublicKey)?;
        let msg = messages::data_key_response(
            &id,
            version,
            &wrapped,
            recipient,
            encrypted_key.as_bytes(),
            context,
        );
        Ok(DataKey {
            data_key_id: id,
            master_key_version: version,
            wrapped_key: Bytes(wrapped),
            recipient_public_key: *recipient,
            encrypted_key,
            signature: self.keys.identity().sign(&msg)?,
        })
    }

    fn finish_data_key(
        &self,
        result: Result<DataKey, EnvError>,
        mut entry: AuditEntry,
    ) -> Result<DataKeyIssued, Refused> {
        match result {
            Ok(data_key) => {
                entry.data_key_id = Some(data_key.data_key_id);
                entry.master_key_version = Some(data_key.master_key_version);
                let audit = self
                    .record(entry)
                    .map_err(|error| Refused { error, audit: None })?;
                Ok(DataKeyIssued { data_key, audit })
            }
            Err(error) => {
                entry.outcome = error.code().as_str().to_owned();
                Err(self.refuse(error, entry))
            }
        }
    }
}

fn status(keys: &KeySet, file: Option<&KeySetFile>) -> KeysStatus {
    KeysStatus {
        provider: file.map(KeySetFile::provider).unwrap_or("none").to_owned(),
        current_version: keys.current_version(),
        versions: keys.versions(),
        retired: keys.retired_versions().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id::from_bytes([n; 16])
    }

    #[test]
    fn completed_sessions_are_forgotten_when_they_expire() {
        let mut done = Completed::default();
        for (n, expires_at) in [(1, 10), (2, 20), (3, 10), (4, 30)] {
            assert!(done.ids.insert(id(n)));
            done.by_expiry.entry(expires_at).or_default().push(id(n));
        }
        done.forget_expired(9);
        assert_eq!(done.ids.len(), 4);
        done.forget_expired(10);
        assert!(!done.ids.contains(&id(1)) && !done.ids.contains(&id(3)));
        assert!(done.ids.contains(&id(2)) && done.ids.contains(&id(4)));
        // Unmarked (a failed audit write) and marked again: a session's
        // expiry never changes, so the duplicate entry is harmless.
        done.ids.remove(&id(2));
        assert!(done.ids.insert(id(2)));
        done.by_expiry.entry(20).or_default().push(id(2));
        done.forget_expired(19);
        assert!(done.ids.contains(&id(2)));
        done.forget_expired(20);
        assert!(!done.ids.contains(&id(2)));
        done.forget_expired(30);
        assert!(done.ids.is_empty() && done.by_expiry.is_empty());
    }
}
