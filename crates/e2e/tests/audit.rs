//! The audit log with the real binaries: every operation leaves a signed,
//! chained record; kms-audit verifies an export and names the first bad
//! record; storing fails closed; missed records are copied back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use kms_client::{authorize_export_for, generate_key_material, HpkeSecretKey, KeyType, SigningKey};
use kms_e2e::{binaries, jsonl, post_json, raw, Deployment};
use kms_protocol::audit::AuditEvent;
use kms_protocol::b64;
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::SqlitePool;

async fn db(d: &Deployment) -> SqlitePool {
    let opts = SqliteConnectOptions::new()
        .filename(d.db_path())
        .busy_timeout(Duration::from_secs(5));
    SqlitePool::connect_with(opts).await.unwrap()
}

#[tokio::test]
async fn every_operation_is_recorded_and_the_chain_verifies() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let owner = SigningKey::generate().unwrap();
    let plain = generate_key_material(KeyType::Secp256k1).unwrap();
    let private_b64 = b64::encode(plain.private_key().expose());
    let w1 = kms.import(&plain).await.unwrap().wallet_id;
    let owned = generate_key_material(KeyType::Ed25519)
        .unwrap()
        .with_owner(*owner.public_key())
        .unwrap();
    let w2 = kms.import(&owned).await.unwrap().wallet_id;
    let recipient = HpkeSecretKey::generate().unwrap();
    kms.export(&w1, &recipient).await.unwrap();
    assert!(kms.export(&w2, &recipient).await.is_err()); // 401
    let auth = authorize_export_for(&owner, &w2, recipient.public_key(), 60).unwrap();
    kms.export_authorized(&w2, &recipient, Some(auth))
        .await
        .unwrap();
    let s = kms.start_import_session().await.unwrap();
    post_json(
        &format!("{}/v1/import-sessions/{}/complete", d.api_url(), s.id()),
        &json!({"encrypted_key": b64::encode([9u8; 100])}),
    )
    .await
    .assert_error(422, "decryption_failed");

    let records = d.audit_chain(10).await;
    let summary: Vec<(AuditEvent, &str)> = records
        .iter()
        .map(|r| (r.event, r.outcome.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (AuditEvent::KeysetCreated, "ok"),
            (AuditEvent::ImportSessionStarted, "ok"),
            (AuditEvent::Import, "ok"),
            (AuditEvent::ImportSessionStarted, "ok"),
            (AuditEvent::Import, "ok"),
            (AuditEvent::Export, "ok"),
            (AuditEvent::Export, "authorization_required"),
            (AuditEvent::Export, "ok"),
            (AuditEvent::ImportSessionStarted, "ok"),
            (AuditEvent::Import, "decryption_failed"),
        ]
    );
    // Records name wallets and fingerprints, never secrets.
    let fp = kms_crypto::audit::fingerprint(recipient.public_key());
    assert_eq!(records[5].wallet_id, Some(w1));
    assert_eq!(records[5].recipient_fingerprint, Some(fp));
    assert_eq!(
        records[7].owner_fingerprint,
        Some(kms_crypto::audit::fingerprint(owner.public_key()))
    );
    assert_eq!(records[9].session_id, Some(*s.id()));
    let text = jsonl(&records);
    assert!(!text.contains(&private_b64));

    // Paging.
    let page = raw(
        "GET",
        &format!("{}/v1/audit?after=3&limit=2", d.api_url()),
        None,
    )
    .await;
    assert_eq!(page.status, 200);
    assert_eq!(page.body["records"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["records"][0]["seq"], 4);
    assert_eq!(page.body["next"], 5);
    raw("GET", &format!("{}/v1/audit?limit=0", d.api_url()), None)
        .await
        .assert_error(400, "invalid_request");

    // The verifier accepts the export, from a file and from the API.
    let (ok, out) = d.verify_audit_export(&text);
    assert!(ok, "{out}");
    assert!(out.starts_with("ok: 10 records"), "{out}");
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
async fn the_verifier_names_the_first_bad_record() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    for _ in 0..3 {
        let w = kms
            .import(&generate_key_material(KeyType::Raw).unwrap())
            .await
            .unwrap()
            .wallet_id;
        kms.export_to_fresh_key(&w).await.unwrap();
    }
    let records = d.audit_chain(10).await;
    let text = jsonl(&records);
    let lines: Vec<&str> = text.lines().collect();

    let mut changed = lines.clone();
    let second = lines[1].replace("\"outcome\":\"ok\"", "\"outcome\":\"authorization_failed\"");
    changed[1] = &second;
    let mut deleted = lines.clone();
    deleted.remove(4);
    let mut swapped = lines.clone();
    swapped.swap(6, 7);
    let mut garbled = lines.clone();
    garbled[2] = "{not json";
    for (what, export, seq) in [
        ("changed", changed.join("\n"), 2),
        ("deleted", deleted.join("\n"), 6),
        ("swapped", swapped.join("\n"), 8),
        ("garbled", garbled.join("\n"), 3),
    ] {
        let (ok, out) = d.verify_audit_export(&export);
        assert!(!ok, "{what}: {out}");
        assert!(out.contains(&format!("(seq {seq})")), "{what}: {out}");
    }
    // A chain signed by another identity key fails at its first record.
    let out = Command::new(&binaries().kms_audit)
        .args([
            "verify",
            "--identity",
            &b64::encode(SigningKey::generate().unwrap().public_key().as_bytes()),
            "-",
        ])
        .stdin(
            std::fs::File::open({
                let p = d.dir.path().join("export.jsonl");
                std::fs::write(&p, &text).unwrap();
                p
            })
            .unwrap(),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("(seq 1)"));

    // Tampering in kms-api's database shows up in the next export.
    let pool = db(&d).await;
    sqlx::query("UPDATE audit_records SET record = replace(record, '\"outcome\":\"ok\"', '\"outcome\":\"x\"') WHERE seq = 5")
        .execute(&pool)
        .await
        .unwrap();
    let out = Command::new(&binaries().kms_audit)
        .args([
            "verify",
            "--api-url",
            &d.api_url(),
            "--identity",
            d.identity_text().trim(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(seq 5)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn storing_fails_closed_and_missed_records_come_back() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let material = generate_key_material(KeyType::Secp256k1).unwrap();
    let w = kms.import(&material).await.unwrap().wallet_id;
    d.audit_chain(3).await;

    // The audit table refuses writes: operations that must record are withheld.
    let pool = db(&d).await;
    sqlx::query("CREATE TRIGGER audit_down BEFORE INSERT ON audit_records BEGIN SELECT RAISE(ABORT, 'down'); END")
        .execute(&pool)
        .await
        .unwrap();
    let recipient = b64::encode(HpkeSecretKey::generate().unwrap().public_key().as_bytes());
    let a = post_json(
        &format!("{}/v1/wallets/{w}/export", d.api_url()),
        &json!({"recipient_public_key": recipient}),
    )
    .await;
    a.assert_error(503, "unavailable");
    assert!(
        a.body.get("encrypted_key").is_none(),
        "no ciphertext without its record"
    );
    raw("POST", &format!("{}/v1/import-sessions", d.api_url()), None)
        .await
        .assert_error(503, "unavailable");
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM import_sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        sessions, 1,
        "a session whose record was not stored is not stored either"
    );

    // Back up: the records kms-api could not store are copied from the
    // secure environment's own log, and the whole chain verifies.
    sqlx::query("DROP TRIGGER audit_down")
        .execute(&pool)
        .await
        .unwrap();
    let records = d.audit_chain(5).await;
    assert_eq!(records[3].event, AuditEvent::Export);
    assert_eq!(records[4].event, AuditEvent::ImportSessionStarted);
    let (ok, out) = d.verify_audit_export(&jsonl(&records));
    assert!(ok, "{out}");
    assert!(kms
        .export_to_fresh_key(&w)
        .await
        .unwrap()
        .private_key()
        .ct_eq(material.private_key()));
}

#[tokio::test]
async fn a_tampered_audit_log_stops_the_secure_environment() {
    let mut d = Deployment::start(&[]);
    let kms = d.client();
    kms.import(&generate_key_material(KeyType::Raw).unwrap())
        .await
        .unwrap();
    d.stop_se();
    let log = d.se_data().join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(
        &log,
        text.replacen("\"outcome\":\"ok\"", "\"outcome\":\"no\"", 2),
    )
    .unwrap();
    let out = Command::new(&binaries().secure_environment)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(d.se_data())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A deleted log is refused too.
    std::fs::remove_file(&log).unwrap();
    let out = Command::new(&binaries().secure_environment)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(d.se_data())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    // Restored, it starts and carries on the same chain.
    std::fs::write(&log, &text).unwrap();
    d.start_se();
    let records = d.audit_chain(4).await;
    assert_eq!(records.last().unwrap().event, AuditEvent::KeysetOpened);
}
