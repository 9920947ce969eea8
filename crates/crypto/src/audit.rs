//! Hashing, signing and verifying the audit chain (layout in
//! `kms_protocol::audit`).

use kms_protocol::audit::{signed_body, AuditEntry, AuditRecord, Digest32};
use kms_protocol::P256PublicKey;

use crate::sign::{self, SigningKey};
use crate::{sha256, CryptoError};

/// The hash the next record carries as `prev_hash`: `SHA-256(body ‖ signature)`.
pub fn record_hash(record: &AuditRecord) -> Digest32 {
    Digest32(sha256(&record.hashed_bytes()))
}

/// SHA-256 of a 65-byte public key: how records name recipients and owners.
pub fn fingerprint(key: &P256PublicKey) -> Digest32 {
    Digest32(sha256(key.as_bytes()))
}

/// Numbers, chains and signs an entry.
pub fn seal_record(
    identity: &SigningKey,
    seq: u64,
    time: u64,
    prev_hash: Digest32,
    entry: AuditEntry,
) -> Result<AuditRecord, CryptoError> {
    let signature = identity.sign(&signed_body(seq, time, &prev_hash, &entry))?;
    Ok(AuditRecord {
        seq,
        time,
        event: entry.event,
        outcome: entry.outcome,
        session_id: entry.session_id,
        wallet_id: entry.wallet_id,
        key_type: entry.key_type,
        recipient_fingerprint: entry.recipient_fingerprint,
        owner_fingerprint: entry.owner_fingerprint,
        data_key_id: entry.data_key_id,
        master_key_version: entry.master_key_version,
        algorithm: entry.algorithm,
        curve: entry.curve,
        path: entry.path,
        payload_sha256: entry.payload_sha256,
        provider_key: entry.provider_key,
        key_source: entry.key_source,
        provider_key_type: entry.provider_key_type,
        coin: entry.coin,
        prev_hash,
        signature,
    })
}

/// Why a chain does not verify, naming the first bad record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {position} (seq {seq}): {reason}")]
pub struct ChainError {
    /// 1-based position in the input.
    pub position: usize,
    pub seq: u64,
    pub reason: &'static str,
}

/// Checks a chain record by record: seq starts at `first_seq` and goes up by
/// one, each `prev_hash` is the previous record's hash (32 zero bytes before
/// seq 1), each signature verifies under `identity`. With `check_signatures`
/// false only the hash links are checked (enough when the last record's
/// signature is checked separately: it commits to everything before it).
/// Returns the hash of the last record.
pub fn verify_chain<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
    identity: &P256PublicKey,
    expected_prev: Option<Digest32>,
    check_signatures: bool,
) -> Result<Option<(u64, Digest32)>, ChainError> {
    let mut prev: Option<(u64, Digest32)> = None;
    for (i, r) in records.into_iter().enumerate() {
        let fail = |reason| ChainError {
            position: i + 1,
            seq: r.seq,
            reason,
        };
        let (want_seq, want_prev) = match prev {
            Some((seq, hash)) => (seq + 1, hash),
            None if r.seq == 1 => (1, Digest32::default()),
            None => (
                r.seq,
                expected_prev.ok_or_else(|| fail("the chain does not start at seq 1"))?,
            ),
        };
        if r.seq != want_seq {
            return Err(fail(if r.seq > want_seq {
                "a record is missing before this one"
            } else {
                "out of order or duplicated"
            }));
        }
        if r.prev_hash != want_prev {
            return Err(fail(
                "prev_hash does not match the previous record (changed, deleted or reordered)",
            ));
        }
        if check_signatures && sign::verify(identity, &r.signed_body(), &r.signature).is_err() {
            return Err(fail("signature does not verify under the identity key"));
        }
        prev = Some((r.seq, record_hash(r)));
    }
    Ok(prev)
}

#[cfg(test)]
mod tests {
    use kms_protocol::audit::AuditEvent;

    use super::*;

    fn chain(key: &SigningKey, n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map(record_hash).unwrap_or_default();
            out.push(
                seal_record(
                    key,
                    seq,
                    100 + seq,
                    prev,
                    AuditEntry::new(AuditEvent::Export, "ok"),
                )
                .unwrap(),
            );
        }
        out
    }

    #[test]
    fn a_good_chain_verifies() {
        let key = SigningKey::generate().unwrap();
        let c = chain(&key, 5);
        let (seq, head) = verify_chain(&c, key.public_key(), None, true)
            .unwrap()
            .unwrap();
        assert_eq!(seq, 5);
        assert_eq!(head, record_hash(&c[4]));
        // A suffix verifies given the hash it continues from.
        assert!(verify_chain(&c[2..], key.public_key(), Some(record_hash(&c[1])), true).is_ok());
        assert!(verify_chain(&c[2..], key.public_key(), None, true).is_err());
    }

    #[test]
    fn deletion_reordering_and_changes_are_caught() {
        let key = SigningKey::generate().unwrap();
        let c = chain(&key, 5);
        let pk = key.public_key();
        let mut deleted = c.clone();
        deleted.remove(2);
        assert_eq!(verify_chain(&deleted, pk, None, true).unwrap_err().seq, 4);
        let mut swapped = c.clone();
        swapped.swap(1, 2);
        assert_eq!(
            verify_chain(&swapped, pk, None, true).unwrap_err().position,
            2
        );
        let mut changed = c.clone();
        changed[3].outcome = "authorization_failed".into();
        assert_eq!(verify_chain(&changed, pk, None, true).unwrap_err().seq, 4);
        // Changed and re-linked, but not re-signable without the identity key.
        let mut relinked = c.clone();
        relinked[4].time += 1;
        assert_eq!(verify_chain(&relinked, pk, None, true).unwrap_err().seq, 5);
        // The hash links alone catch a change anywhere but the last record.
        assert_eq!(verify_chain(&changed, pk, None, false).unwrap_err().seq, 5);
        let other = SigningKey::generate().unwrap();
        assert_eq!(
            verify_chain(&c, other.public_key(), None, true)
                .unwrap_err()
                .seq,
            1
        );
    }
}
