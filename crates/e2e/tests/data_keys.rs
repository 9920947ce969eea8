//! Data keys (`docs/data-keys.md`) with the real binaries: generate, open,
//! decrypt to the same and to another recipient; every malformed or wrong
//! request refused with docs/protocol.md's error JSON and changing nothing;
//! master-key rotation and retirement; the audit chain; and no plaintext
//! data key in either server's log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use kms_client::{encryption_context, ClientError, DataKey, EncryptionContext, HpkeSecretKey};
use kms_e2e::{binaries, jsonl, post_json, raw, Answer, Deployment};
use kms_protocol::audit::AuditEvent;
use kms_protocol::{b64, ErrorCode, P256PublicKey};
use serde_json::{json, Value};

fn ctx() -> EncryptionContext {
    encryption_context([
        ("tenant", "acme"),
        ("purpose", "backups"),
        ("object", "s3://bucket/2024/db.tar"),
    ])
    .unwrap()
}

fn key_b64(k: &P256PublicKey) -> String {
    b64::encode(k.as_bytes())
}

/// `0x04 ‖ X ‖ Y` with X = Y = 1: the right shape (X, Y < p), off the curve.
fn off_curve() -> String {
    let mut k = [0u8; 65];
    k[0] = 4;
    k[32] = 1;
    k[64] = 1;
    b64::encode(k)
}

fn code(e: &ClientError) -> (u16, ErrorCode) {
    match e {
        ClientError::Api { status, code, .. } => (*status, *code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn decrypt_raw(d: &Deployment, body: &Value) -> Answer {
    post_json(&format!("{}/v1/data-keys/decrypt", d.api_url()), body).await
}

async fn generate_raw(d: &Deployment, body: &Value) -> Answer {
    post_json(&format!("{}/v1/data-keys", d.api_url()), body).await
}

#[tokio::test]
async fn generate_open_and_decrypt_to_the_same_and_another_recipient() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let recipient = HpkeSecretKey::generate().unwrap();
    let dk = kms
        .generate_data_key(&ctx(), recipient.public_key())
        .await
        .unwrap();
    assert_eq!(dk.master_key_version, 1);
    assert_eq!(
        dk.wrapped_key.as_bytes().len(),
        kms_protocol::data_key::WRAPPED_DATA_KEY_LEN
    );
    let key = kms.open_data_key(&dk, &ctx(), &recipient).unwrap();

    // The signature verifies against the identity key the attestation
    // names (which is the pinned one), over docs/data-keys.md's message.
    let att = raw("GET", &format!("{}/v1/attestation", d.api_url()), None).await;
    let attested = P256PublicKey::from_bytes(
        &b64::decode(att.body["identity_public_key"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(&attested, kms.identity());
    let msg = kms_crypto::messages::data_key_response(
        &dk.data_key_id,
        dk.master_key_version,
        dk.wrapped_key.as_bytes(),
        recipient.public_key(),
        dk.encrypted_key.as_bytes(),
        &ctx().canonical_bytes(),
    );
    kms_crypto::sign::verify(&attested, &msg, &dk.signature).unwrap();
    // The layout by hand: label, id, version, hashes.
    assert_eq!(&msg[..25], b"kms/data-key-response/v1\0");
    assert_eq!(&msg[25..41], dk.data_key_id.as_bytes());
    assert_eq!(&msg[41..45], &1u32.to_be_bytes());
    assert_eq!(msg.len(), 25 + 16 + 4 + 32 + 65 + 32 + 32);
    // The wrapped key's header names the id and the version.
    let w = dk.wrapped_key.as_bytes();
    assert_eq!(&w[..5], &[1, 0, 0, 0, 1]);
    assert_eq!(&w[5..21], dk.data_key_id.as_bytes());

    // Decrypt, the context's pairs given in another order (raw JSON, so
    // the order on the wire really differs): the same key comes back.
    let a = decrypt_raw(
        &d,
        &json!({
            "wrapped_key": b64::encode(w),
            "encryption_context": {
                "object": "s3://bucket/2024/db.tar",
                "purpose": "backups",
                "tenant": "acme",
            },
            "recipient_public_key": key_b64(recipient.public_key()),
        }),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let again: DataKey = serde_json::from_value(a.body).unwrap();
    assert_eq!(
        (
            again.data_key_id,
            again.master_key_version,
            &again.wrapped_key
        ),
        (dk.data_key_id, 1, &dk.wrapped_key)
    );
    // Sealed afresh: another HPKE ciphertext, the same key inside.
    assert_ne!(again.encrypted_key, dk.encrypted_key);
    assert!(kms
        .open_data_key(&again, &ctx(), &recipient)
        .unwrap()
        .ct_eq(&key));
    let reordered = encryption_context([
        ("purpose", "backups"),
        ("object", "s3://bucket/2024/db.tar"),
        ("tenant", "acme"),
    ])
    .unwrap();
    let again = kms
        .decrypt_data_key(w, &reordered, recipient.public_key())
        .await
        .unwrap();
    assert!(kms
        .open_data_key(&again, &reordered, &recipient)
        .unwrap()
        .ct_eq(&key));

    // Decrypt to a different recipient: sealed to it, and only to it.
    let other = HpkeSecretKey::generate().unwrap();
    let moved = kms
        .decrypt_data_key(w, &ctx(), other.public_key())
        .await
        .unwrap();
    assert_eq!(&moved.recipient_public_key, other.public_key());
    assert_eq!(moved.wrapped_key, dk.wrapped_key);
    assert!(kms
        .open_data_key(&moved, &ctx(), &other)
        .unwrap()
        .ct_eq(&key));
    let info = kms_crypto::hpke::info(kms_crypto::labels::DATA_KEY_SEAL, &dk.data_key_id);
    assert!(recipient.open(&info, &moved.encrypted_key).is_err());
    assert!(matches!(
        kms.open_data_key(&moved, &ctx(), &recipient),
        Err(ClientError::Verification(_))
    ));

    // Each generate is a new key under a new id.
    let second = kms
        .generate_data_key(&ctx(), recipient.public_key())
        .await
        .unwrap();
    assert_ne!(second.data_key_id, dk.data_key_id);
    assert!(!kms
        .open_data_key(&second, &ctx(), &recipient)
        .unwrap()
        .ct_eq(&key));

    // No context, `null` and `{}` are all the empty context.
    let a = generate_raw(
        &d,
        &json!({"encryption_context": null, "recipient_public_key": key_b64(recipient.public_key())}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let empty: DataKey = serde_json::from_value(a.body).unwrap();
    let k0 = kms
        .open_data_key(&empty, &EncryptionContext::default(), &recipient)
        .unwrap();
    for body in [
        json!({"wrapped_key": b64::encode(empty.wrapped_key.as_bytes()),
               "recipient_public_key": key_b64(recipient.public_key())}),
        json!({"wrapped_key": b64::encode(empty.wrapped_key.as_bytes()),
               "encryption_context": {},
               "recipient_public_key": key_b64(recipient.public_key())}),
        json!({"wrapped_key": b64::encode(empty.wrapped_key.as_bytes()),
               "encryption_context": null,
               "recipient_public_key": key_b64(recipient.public_key())}),
    ] {
        let a = decrypt_raw(&d, &body).await;
        assert_eq!(a.status, 200, "{body}: {}", a.body);
        let dk: DataKey = serde_json::from_value(a.body).unwrap();
        assert!(kms
            .open_data_key(&dk, &EncryptionContext::default(), &recipient)
            .unwrap()
            .ct_eq(&k0));
    }
    // ...and a key generated with a context does not open with none.
    decrypt_raw(
        &d,
        &json!({"wrapped_key": b64::encode(w), "encryption_context": null,
                "recipient_public_key": key_b64(recipient.public_key())}),
    )
    .await
    .assert_error(422, "decryption_failed");
}

#[tokio::test]
async fn refusals_use_protocol_errors_are_audited_and_change_nothing() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let recipient = HpkeSecretKey::generate().unwrap();
    let rpk = key_b64(recipient.public_key());
    let dk = kms
        .generate_data_key(&ctx(), recipient.public_key())
        .await
        .unwrap();
    let key = kms.open_data_key(&dk, &ctx(), &recipient).unwrap();
    let w = dk.wrapped_key.as_bytes().to_vec();
    let good_ctx =
        json!({"tenant": "acme", "purpose": "backups", "object": "s3://bucket/2024/db.tar"});
    let before = d.audit_chain(2).await.len() as u64;

    // Refused by the secure environment, each with its audit record:
    // (body, status, code, expected outcome, whether the record names the data key).
    let flip = |i: usize| {
        let mut t = w.clone();
        t[i] ^= 0x01;
        b64::encode(t)
    };
    let wrong_contexts = [
        json!({"tenant": "acme", "purpose": "backups"}),
        json!({"tenant": "acme", "purpose": "backups", "object": "s3://bucket/2024/db.tar", "x": ""}),
        json!({"tenant": "acme", "purpose": "backups", "object": "s3://bucket/2024/db.taR"}),
        json!({"Tenant": "acme", "purpose": "backups", "object": "s3://bucket/2024/db.tar"}),
        json!({}),
    ];
    let mut se_refusals: Vec<(Value, u16, &str, bool)> = Vec::new();
    for c in wrong_contexts {
        se_refusals.push((
            json!({"wrapped_key": b64::encode(&w), "encryption_context": c, "recipient_public_key": rpk}),
            422,
            "decryption_failed",
            true,
        ));
    }
    // One flipped byte: in the id (bound through the AAD), the nonce, the
    // wrapped key, the tag.
    for i in [5, 20, 21, 40, w.len() - 1] {
        se_refusals.push((
            json!({"wrapped_key": flip(i), "encryption_context": good_ctx, "recipient_public_key": rpk}),
            422,
            "decryption_failed",
            true,
        ));
    }
    // The wrong shape: truncated, one byte long, empty, too long, another format.
    for bad in [
        w[..w.len() - 1].to_vec(),
        w[..1].to_vec(),
        Vec::new(),
        [&w[..], &[0]].concat(),
        [&[2u8][..], &w[1..]].concat(),
    ] {
        se_refusals.push((
            json!({"wrapped_key": b64::encode(bad), "encryption_context": good_ctx, "recipient_public_key": rpk}),
            400,
            "invalid_request",
            false,
        ));
    }
    // An off-curve recipient, decided before the wrapped key is opened.
    se_refusals.push((
        json!({"wrapped_key": b64::encode(&w), "encryption_context": good_ctx, "recipient_public_key": off_curve()}),
        400,
        "invalid_request",
        true,
    ));
    se_refusals.push((
        json!({"wrapped_key": flip(40), "encryption_context": {}, "recipient_public_key": off_curve()}),
        400,
        "invalid_request",
        true,
    ));
    for (body, status, code, _) in &se_refusals {
        let a = decrypt_raw(&d, body).await;
        a.assert_error(*status, code);
        assert!(a.body.get("encrypted_key").is_none());
    }
    // Generating to an off-curve recipient.
    generate_raw(
        &d,
        &json!({"encryption_context": good_ctx, "recipient_public_key": off_curve()}),
    )
    .await
    .assert_error(400, "invalid_request");
    // A wrong context through the SDK: the same error, as `Api`.
    let e = kms
        .decrypt_data_key(
            &w,
            &encryption_context([("tenant", "acme")]).unwrap(),
            recipient.public_key(),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), (422, ErrorCode::DecryptionFailed));

    // Refused by kms-api for their shape, before the secure environment:
    // no audit record. Raw bodies, so a key can be given twice.
    let api = d.api_url();
    let pairs17: Vec<String> = (0..17).map(|i| format!(r#""k{i}":"v""#)).collect();
    let pairs17 = format!("{{{}}}", pairs17.join(","));
    let long_key = format!(r#"{{"{}":"v"}}"#, "k".repeat(129));
    let long_value = format!(r#"{{"k":"{}"}}"#, "v".repeat(257));
    let shape_refusals = [
        r#"{"tenant":"acme","tenant":"acme"}"#.to_owned(),
        r#"{"tenant":"acme","tenant":"other"}"#.to_owned(),
        pairs17,
        r#"{"":"v"}"#.to_owned(),
        long_key,
        long_value,
        r#"{"k":1}"#.to_owned(),
        r#"{"k":null}"#.to_owned(),
        r#"["k","v"]"#.to_owned(),
        r#""k=v""#.to_owned(),
    ];
    for c in &shape_refusals {
        for (path, prefix) in [
            ("/v1/data-keys", String::new()),
            (
                "/v1/data-keys/decrypt",
                format!(r#""wrapped_key":"{}","#, b64::encode(&w)),
            ),
        ] {
            let body =
                format!(r#"{{{prefix}"encryption_context":{c},"recipient_public_key":"{rpk}"}}"#);
            let a = raw("POST", &format!("{api}{path}"), Some(body.into_bytes())).await;
            a.assert_error(400, "invalid_request");
        }
    }
    // The limits themselves are accepted: 16 pairs, a 128-byte key, a 256-byte value.
    let mut max: Vec<(String, String)> =
        (0..15).map(|i| (format!("k{i}"), String::new())).collect();
    max.push(("k".repeat(128), "v".repeat(256)));
    let max = encryption_context(max).unwrap();
    let at_limit = kms
        .generate_data_key(&max, recipient.public_key())
        .await
        .unwrap();
    kms.decrypt_data_key(
        at_limit.wrapped_key.as_bytes(),
        &max,
        recipient.public_key(),
    )
    .await
    .unwrap();
    // Malformed members of the decrypt body.
    for body in [
        json!({"encryption_context": good_ctx, "recipient_public_key": rpk}),
        json!({"wrapped_key": "not base64!", "encryption_context": good_ctx, "recipient_public_key": rpk}),
        json!({"wrapped_key": b64::encode(&w), "encryption_context": good_ctx}),
        json!({"wrapped_key": b64::encode(&w), "encryption_context": good_ctx,
               "recipient_public_key": b64::encode([4u8; 33])}),
    ] {
        decrypt_raw(&d, &body)
            .await
            .assert_error(400, "invalid_request");
    }

    // The audit log: the generate, then exactly one record per refusal
    // the secure environment decided, in order, with its outcome.
    let expected_se = se_refusals.len() as u64 + 1 + 1; // + off-curve generate + SDK wrong context
    let records = d.audit_chain(before + expected_se + 2).await;
    let ours = &records[before as usize..];
    let fp = kms_crypto::audit::fingerprint(recipient.public_key());
    for (r, (_, _, outcome, names_key)) in ours.iter().zip(&se_refusals) {
        assert_eq!(r.event, AuditEvent::DataKeyDecrypted, "{r:?}");
        assert_eq!(r.outcome, *outcome, "{r:?}");
        assert_eq!(r.data_key_id.is_some(), *names_key, "{r:?}");
        assert_eq!(r.session_id, None);
        assert_eq!(r.wallet_id, None);
    }
    // A wrong context names the very data key and its version.
    assert_eq!(ours[0].data_key_id, Some(dk.data_key_id));
    assert_eq!(ours[0].master_key_version, Some(1));
    assert_eq!(ours[0].recipient_fingerprint, Some(fp));
    let n = se_refusals.len();
    assert_eq!(
        (ours[n].event, ours[n].outcome.as_str(), ours[n].data_key_id),
        (AuditEvent::DataKeyGenerated, "invalid_request", None)
    );
    assert_eq!(
        (ours[n + 1].event, ours[n + 1].outcome.as_str()),
        (AuditEvent::DataKeyDecrypted, "decryption_failed")
    );
    // The shape refusals left no record: next come the two at the limit.
    assert_eq!(
        (ours[n + 2].event, ours[n + 2].outcome.as_str()),
        (AuditEvent::DataKeyGenerated, "ok")
    );
    assert_eq!(ours[n + 2].data_key_id, Some(at_limit.data_key_id));
    assert_eq!(
        (ours[n + 3].event, ours[n + 3].data_key_id),
        (AuditEvent::DataKeyDecrypted, Some(at_limit.data_key_id))
    );
    assert_eq!(ours.len(), n + 4, "{ours:#?}");
    let (ok, out) = d.verify_audit_export(&jsonl(&records));
    assert!(ok, "{out}");

    // Nothing changed: the wrapped key still opens to the same key, no
    // wallet appeared.
    let back = kms
        .decrypt_data_key(&w, &ctx(), recipient.public_key())
        .await
        .unwrap();
    assert!(kms
        .open_data_key(&back, &ctx(), &recipient)
        .unwrap()
        .ct_eq(&key));
    assert!(kms.list_wallets(None, 10).await.unwrap().wallets.is_empty());
}

#[tokio::test]
async fn the_audit_log_records_every_call_and_verifies() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let recipient = HpkeSecretKey::generate().unwrap();
    let other = HpkeSecretKey::generate().unwrap();
    let dk = kms
        .generate_data_key(&ctx(), recipient.public_key())
        .await
        .unwrap();
    let key = kms.open_data_key(&dk, &ctx(), &recipient).unwrap();
    let w = dk.wrapped_key.as_bytes();
    kms.decrypt_data_key(w, &ctx(), other.public_key())
        .await
        .unwrap();
    let e = kms
        .decrypt_data_key(w, &EncryptionContext::default(), other.public_key())
        .await
        .unwrap_err();
    assert_eq!(code(&e), (422, ErrorCode::DecryptionFailed));

    let records = d.audit_chain(4).await;
    let summary: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.event,
                r.outcome.as_str(),
                r.data_key_id,
                r.master_key_version,
            )
        })
        .collect();
    let id = Some(dk.data_key_id);
    assert_eq!(
        summary,
        vec![
            (AuditEvent::KeysetCreated, "ok", None, None),
            (AuditEvent::DataKeyGenerated, "ok", id, Some(1)),
            (AuditEvent::DataKeyDecrypted, "ok", id, Some(1)),
            (
                AuditEvent::DataKeyDecrypted,
                "decryption_failed",
                id,
                Some(1)
            ),
        ]
    );
    let fp = |k: &HpkeSecretKey| Some(kms_crypto::audit::fingerprint(k.public_key()));
    assert_eq!(records[1].recipient_fingerprint, fp(&recipient));
    assert_eq!(records[2].recipient_fingerprint, fp(&other));
    assert_eq!(records[3].recipient_fingerprint, fp(&other));
    // Records hold no key and no ciphertext.
    let text: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    for secret in [
        b64::encode(key.expose()),
        kms_crypto::hex(key.expose()),
        b64::encode(w),
        b64::encode(dk.encrypted_key.as_bytes()),
    ] {
        assert!(!text.contains(&secret));
    }
    // The JSON names the data-key fields.
    let page = raw("GET", &format!("{}/v1/audit", d.api_url()), None).await;
    assert_eq!(page.body["records"][1]["event"], "data_key_generated");
    assert_eq!(
        page.body["records"][1]["data_key_id"],
        dk.data_key_id.to_string()
    );
    assert_eq!(page.body["records"][1]["master_key_version"], 1);
    assert_eq!(page.body["records"][3]["event"], "data_key_decrypted");
    assert_eq!(page.body["records"][3]["outcome"], "decryption_failed");

    let (ok, out) = d.verify_audit_export(&jsonl(&records));
    assert!(ok, "{out}");
    assert!(out.starts_with("ok: 4 records"), "{out}");
    // A changed data_key_id breaks the signature at that record.
    let mut changed = records.clone();
    changed[2].data_key_id = Some(kms_protocol::Id::from_bytes([0; 16]));
    let (ok, out) = d.verify_audit_export(&jsonl(&changed));
    assert!(!ok);
    assert!(out.contains("(seq 3)"), "{out}");
    let api = Command::new(&binaries().kms_audit)
        .args([
            "verify",
            "--api-url",
            &d.api_url(),
            "--identity",
            d.identity_text().trim(),
        ])
        .output()
        .unwrap();
    assert!(
        api.status.success(),
        "{}",
        String::from_utf8_lossy(&api.stdout)
    );
}

#[tokio::test]
async fn rotation_keeps_data_keys_until_their_version_is_retired() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let recipient = HpkeSecretKey::generate().unwrap();
    let old = kms
        .generate_data_key(&ctx(), recipient.public_key())
        .await
        .unwrap();
    let old_key = kms.open_data_key(&old, &ctx(), &recipient).unwrap();
    let se = d.se.as_ref().unwrap().url();
    let internal = |path: &str, body: Option<Value>| {
        let url = format!("{se}{path}");
        async move {
            let a = raw("POST", &url, body.map(|b| serde_json::to_vec(&b).unwrap())).await;
            assert_eq!(a.status, 200, "{}", a.body);
            a.body
        }
    };

    // Rotated: new data keys are under version 2; the old one still
    // decrypts under version 1, its wrapped key unchanged.
    let status = internal(kms_protocol::internal::PATH_KEYS_ROTATE, None).await;
    assert_eq!(status["status"]["current_version"], 2);
    let new = kms
        .generate_data_key(&ctx(), recipient.public_key())
        .await
        .unwrap();
    assert_eq!(new.master_key_version, 2);
    assert_eq!(&new.wrapped_key.as_bytes()[..5], &[1, 0, 0, 0, 2]);
    let back = kms
        .decrypt_data_key(old.wrapped_key.as_bytes(), &ctx(), recipient.public_key())
        .await
        .unwrap();
    assert_eq!(
        (back.master_key_version, &back.wrapped_key),
        (1, &old.wrapped_key)
    );
    assert!(kms
        .open_data_key(&back, &ctx(), &recipient)
        .unwrap()
        .ct_eq(&old_key));

    // A version the key set never held: 422, with its own message.
    let mut unknown = old.wrapped_key.as_bytes().to_vec();
    unknown[4] = 9;
    let a = decrypt_raw(
        &d,
        &json!({"wrapped_key": b64::encode(&unknown),
                "encryption_context": {"tenant": "acme", "purpose": "backups", "object": "s3://bucket/2024/db.tar"},
                "recipient_public_key": key_b64(recipient.public_key())}),
    )
    .await;
    a.assert_error(422, "decryption_failed");
    let unknown_message = a.body["error"]["message"].as_str().unwrap().to_owned();

    // Retired: the old data key is refused as retired; the new one decrypts.
    let status = internal(
        kms_protocol::internal::PATH_KEYS_RETIRE,
        Some(json!({"version": 1})),
    )
    .await;
    assert_eq!(status["status"]["retired"], json!([1]));
    let e = kms
        .decrypt_data_key(old.wrapped_key.as_bytes(), &ctx(), recipient.public_key())
        .await
        .unwrap_err();
    let ClientError::Api {
        status: 422,
        code: ErrorCode::DecryptionFailed,
        message,
    } = &e
    else {
        panic!("expected 422 decryption_failed, got {e:?}");
    };
    assert!(message.contains("retired"), "{message}");
    assert_ne!(message, &unknown_message);
    let wrong = kms
        .decrypt_data_key(
            new.wrapped_key.as_bytes(),
            &EncryptionContext::default(),
            recipient.public_key(),
        )
        .await
        .unwrap_err();
    let ClientError::Api {
        message: wrong_message,
        ..
    } = &wrong
    else {
        panic!("{wrong:?}");
    };
    assert!(!wrong_message.contains("retired"), "{wrong_message}");
    let back = kms
        .decrypt_data_key(new.wrapped_key.as_bytes(), &ctx(), recipient.public_key())
        .await
        .unwrap();
    assert_eq!(back.master_key_version, 2);
    kms.open_data_key(&back, &ctx(), &recipient).unwrap();

    // Every step is in the chain, which still verifies.
    let records = d.audit_chain(10).await;
    let summary: Vec<_> = records
        .iter()
        .map(|r| (r.event, r.outcome.as_str(), r.master_key_version))
        .collect();
    assert_eq!(
        summary,
        vec![
            (AuditEvent::KeysetCreated, "ok", None),
            (AuditEvent::DataKeyGenerated, "ok", Some(1)),
            (AuditEvent::MasterKeyRotated, "ok", Some(2)),
            (AuditEvent::DataKeyGenerated, "ok", Some(2)),
            (AuditEvent::DataKeyDecrypted, "ok", Some(1)),
            (AuditEvent::DataKeyDecrypted, "decryption_failed", Some(9)),
            (AuditEvent::MasterKeyRetired, "ok", Some(1)),
            (AuditEvent::DataKeyDecrypted, "decryption_failed", Some(1)),
            (AuditEvent::DataKeyDecrypted, "decryption_failed", Some(2)),
            (AuditEvent::DataKeyDecrypted, "ok", Some(2)),
        ]
    );
    let (ok, out) = d.verify_audit_export(&jsonl(&records));
    assert!(ok, "{out}");
}

#[tokio::test]
async fn logs_hold_no_plaintext_data_key() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for i in 0..4 {
        let recipient = HpkeSecretKey::generate().unwrap();
        let other = HpkeSecretKey::generate().unwrap();
        let c = encryption_context([("n", i.to_string())]).unwrap();
        let dk = kms
            .generate_data_key(&c, recipient.public_key())
            .await
            .unwrap();
        let key = kms.open_data_key(&dk, &c, &recipient).unwrap();
        let moved = kms
            .decrypt_data_key(dk.wrapped_key.as_bytes(), &c, other.public_key())
            .await
            .unwrap();
        assert!(kms.open_data_key(&moved, &c, &other).unwrap().ct_eq(&key));
        // And a refusal, which logs its reason.
        assert!(kms
            .decrypt_data_key(
                dk.wrapped_key.as_bytes(),
                &EncryptionContext::default(),
                other.public_key()
            )
            .await
            .is_err());
        secrets.extend([
            key.expose().to_vec(),
            recipient.scalar().expose().to_vec(),
            other.scalar().expose().to_vec(),
        ]);
    }
    // The keys data keys are wrapped under.
    let keys = kms_e2e::open_key_set(&d.se_data());
    let master = keys.master_key(1).unwrap();
    secrets.push(master.expose().to_vec());
    secrets.push(
        kms_crypto::kdf::derive_key(master, kms_crypto::labels::DATA_KEY_WRAP_KDF)
            .unwrap()
            .expose()
            .to_vec(),
    );

    let logs = d.logs();
    assert!(
        logs.contains("data key generated")
            && logs.contains("data key decrypted")
            && logs.contains("DEBUG"),
        "debug logs of both servers were captured"
    );
    d.assert_logs_hold_none_of(&secrets);
}
