//! The verifier against every single-byte change of an exported chain:
//! each one is refused, none accepted, no panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kms_cli::{read_records, verify, Verdict};
use kms_crypto::audit::{fingerprint, record_hash, seal_record};
use kms_crypto::sign::SigningKey;
use kms_protocol::audit::{AuditEntry, AuditEvent, AuditRecord};
use kms_protocol::{Id, KeyType};

fn chain(key: &SigningKey) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = Vec::new();
    let entries = [
        AuditEntry::new(AuditEvent::KeysetCreated, "ok"),
        {
            let mut e = AuditEntry::new(AuditEvent::Import, "ok");
            e.session_id = Some(Id::from_bytes([1; 16]));
            e.wallet_id = Some(Id::from_bytes([2; 16]));
            e.key_type = Some(KeyType::Secp256k1);
            e.owner_fingerprint = Some(fingerprint(key.public_key()));
            e
        },
        {
            let mut e = AuditEntry::new(AuditEvent::Export, "authorization_failed");
            e.wallet_id = Some(Id::from_bytes([2; 16]));
            e.recipient_fingerprint = Some(fingerprint(key.public_key()));
            e
        },
    ];
    for (i, e) in entries.into_iter().enumerate() {
        let prev = out.last().map(record_hash).unwrap_or_default();
        out.push(seal_record(key, i as u64 + 1, 1_800_000_000 + i as u64, prev, e).unwrap());
    }
    out
}

#[test]
fn every_flipped_byte_of_an_export_is_refused() {
    let key = SigningKey::generate().unwrap();
    let records = chain(&key);
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    let (parsed, bad) = read_records(text.as_bytes());
    assert!(matches!(
        verify(&parsed, bad, key.public_key()),
        Verdict::Ok {
            records: 3,
            last_seq: 3,
            ..
        }
    ));

    let bytes = text.as_bytes();
    let mut refused = 0;
    for i in 0..bytes.len() {
        if bytes[i] == b'\n' {
            continue; // a line break moved is the same export
        }
        for flip in [0x01u8, 0x20, 0x80] {
            let mut changed = bytes.to_vec();
            changed[i] ^= flip;
            let (parsed, bad) = read_records(&changed[..]);
            let verdict = verify(&parsed, bad, key.public_key());
            assert!(
                matches!(verdict, Verdict::Bad(_)),
                "byte {i} ^ {flip:#x} accepted: {:?}",
                String::from_utf8_lossy(&changed)
            );
            refused += 1;
        }
    }
    assert!(refused > 1000);
}
