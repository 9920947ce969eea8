//! The whole product with the real binaries: every key type, restarts of
//! each process, the secure environment going away and coming back, the
//! demo binary, and the identity subcommand.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use kms_client::{generate_key_material, ClientError, KeyMaterial, KeyType};
use kms_e2e::{binaries, raw, Deployment};
use kms_protocol::{b64, ErrorCode, Id};

#[tokio::test]
async fn full_flow_for_every_key_type() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    kms.health().await.unwrap();
    let att = kms.attestation().await.unwrap();
    assert_eq!(att.provider, "software");
    assert_eq!(att.measurement.len(), 64);
    let exe = std::fs::read(&binaries().secure_environment).unwrap();
    assert_eq!(att.measurement, kms_crypto::hex(&kms_crypto::sha256(&exe)));

    let mut ids = Vec::new();
    for key_type in KeyType::ALL {
        let material = generate_key_material(key_type).unwrap();
        let receipt = kms.import(&material).await.unwrap();
        assert_eq!(receipt.key_type, key_type);
        assert_eq!(
            receipt.public_key.is_some(),
            !matches!(key_type, KeyType::Raw | KeyType::Bip39)
        );
        let meta = kms.wallet(&receipt.wallet_id).await.unwrap();
        assert_eq!(meta.public_key, receipt.public_key);
        assert_eq!(meta.created_at, receipt.created_at);
        assert_eq!(meta.owner_public_key, None);
        let back = kms.export_to_fresh_key(&receipt.wallet_id).await.unwrap();
        assert_eq!(back.key_type(), key_type);
        assert!(
            back.private_key().ct_eq(material.private_key()),
            "{key_type} came back different"
        );
        ids.push(receipt.wallet_id);
    }

    // Paging one by one visits every wallet once, in ascending id order.
    ids.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = kms.list_wallets(after.as_ref(), 1).await.unwrap();
        assert!(page.wallets.len() <= 1);
        seen.extend(page.wallets.iter().map(|w| w.wallet_id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let all = kms.list_wallets(None, 1000).await.unwrap();
    assert_eq!(all.wallets.len(), KeyType::ALL.len());
    assert_eq!(all.next, None);
}

#[tokio::test]
async fn restarts_of_each_process_lose_nothing() {
    let mut d = Deployment::start(&[]);
    let kms = d.client();
    let material = generate_key_material(KeyType::Secp256k1).unwrap();
    let wallet = kms.import(&material).await.unwrap().wallet_id;
    // A session started before the secure environment restarts...
    let session = kms.start_import_session().await.unwrap();

    d.stop_se();
    d.start_se();
    let kms = d.client();
    wait_healthy(&kms).await;
    // ...still completes, and the old wallet still exports.
    let second = generate_key_material(KeyType::Ed25519).unwrap();
    let receipt = kms.complete_import(&session, &second).await.unwrap();
    assert_exports_back(&kms, &wallet, &material).await;

    d.stop_api();
    d.start_api();
    let kms = d.client();
    assert_exports_back(&kms, &wallet, &material).await;
    assert_exports_back(&kms, &receipt.wallet_id, &second).await;
    // A session completed before the kms-api restart stays used.
    let again = kms.complete_import(&session, &second).await.unwrap_err();
    assert!(
        matches!(
            again,
            ClientError::Api {
                status: 409,
                code: ErrorCode::SessionUsed,
                ..
            }
        ),
        "{again:?}"
    );
    assert_eq!(kms.list_wallets(None, 10).await.unwrap().wallets.len(), 2);
}

/// `wallet` exports to a fresh key as exactly `material`.
async fn assert_exports_back(kms: &kms_client::KmsClient, wallet: &Id, material: &KeyMaterial) {
    let back = kms.export_to_fresh_key(wallet).await.unwrap();
    assert!(back.private_key().ct_eq(material.private_key()));
}

async fn wait_healthy(kms: &kms_client::KmsClient) {
    for _ in 0..100 {
        if kms.health().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("kms-api did not become healthy");
}

#[tokio::test]
async fn secure_environment_down_is_503_and_recovers_by_itself() {
    let mut d = Deployment::start(&[]);
    let kms = d.client();
    let material = generate_key_material(KeyType::P256).unwrap();
    let wallet = kms.import(&material).await.unwrap().wallet_id;
    let session = kms.start_import_session().await.unwrap();

    d.stop_se();
    let api = d.api_url();
    let recipient = b64::encode(
        kms_crypto::hpke::HpkeSecretKey::generate()
            .unwrap()
            .public_key()
            .as_bytes(),
    );
    let checks = [
        raw("GET", &format!("{api}/v1/health"), None).await,
        raw("GET", &format!("{api}/v1/attestation"), None).await,
        raw("POST", &format!("{api}/v1/import-sessions"), None).await,
        kms_e2e::post_json(
            &format!("{api}/v1/wallets/{wallet}/export"),
            &serde_json::json!({"recipient_public_key": recipient}),
        )
        .await,
    ];
    for a in &checks {
        a.assert_error(503, "unavailable");
        assert_eq!(a.retry_after.as_deref(), Some("1"));
    }
    let err = kms.complete_import(&session, &material).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Api { status: 503, .. }),
        "{err:?}"
    );
    // Metadata needs only the store.
    assert_eq!(kms.wallet(&wallet).await.unwrap().key_type, KeyType::P256);

    d.start_se();
    wait_healthy(&kms).await;
    // The session that saw a 503 is still usable, and everything works again.
    kms.complete_import(&session, &material).await.unwrap();
    assert_exports_back(&kms, &wallet, &material).await;
}

#[tokio::test]
async fn client_example_runs_and_refuses_a_wrong_pin() {
    let d = Deployment::start(&[]);
    let run = |pin: String| {
        Command::new(&binaries().client_example)
            .args(["--api-url", &d.api_url(), "--identity-public-key", &pin])
            .output()
            .unwrap()
    };
    let ok = run(d.identity_text());
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("byte-identical"), "{stdout}");

    // Pinned to another key: the session proof does not verify, nothing is sealed, exit non-zero.
    let other = kms_crypto::sign::SigningKey::generate().unwrap();
    let bad = run(b64::encode(other.public_key().as_bytes()));
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("pinned"), "{stderr}");
    // The failed run imported nothing (the good run imported two: plain and owner-bound).
    assert_eq!(
        d.client()
            .list_wallets(None, 10)
            .await
            .unwrap()
            .wallets
            .len(),
        2
    );
}

#[test]
fn identity_subcommand_prints_the_key_to_pin() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("se");
    let run = || {
        let data = data.clone();
        std::thread::spawn(move || {
            Command::new(&binaries().secure_environment)
                .args(["identity", "--data-dir"])
                .arg(&data)
                .output()
                .unwrap()
        })
    };
    // Two at once on an empty dir: one key set, one key.
    let (a, b) = (run(), run());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert!(a.status.success() && b.status.success());
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8(a.stdout).unwrap();
    assert!(
        text.ends_with('\n') && text.lines().count() == 1,
        "{text:?}"
    );
    let key = b64::decode(text.trim_end()).unwrap();
    assert_eq!(key.len(), 65);
    assert_eq!(
        std::fs::read_to_string(data.join("identity.pub")).unwrap(),
        text
    );
    // The environment variable twin works too, and the key is stable.
    let again = Command::new(&binaries().secure_environment)
        .arg("identity")
        .env("SECURE_ENV_DATA_DIR", &data)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
}

#[test]
fn a_key_set_that_fails_to_open_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("se");
    let ok = Command::new(&binaries().secure_environment)
        .args(["identity", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(ok.status.success());
    std::fs::write(data.join("root.key"), [7u8; 32]).unwrap();
    let sealed = std::fs::read(data.join("keyset.sealed")).unwrap();
    let out = Command::new(&binaries().secure_environment)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it must not start listening");
    assert!(String::from_utf8_lossy(&out.stderr).contains("never regenerated"));
    assert_eq!(std::fs::read(data.join("keyset.sealed")).unwrap(), sealed);
}

#[test]
fn kms_api_refuses_postgres_until_its_store_exists() {
    let out = Command::new(&binaries().kms_api)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            "postgres://127.0.0.1/test",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PostgreSQL is not supported"), "{stderr}");
}

#[tokio::test]
async fn logs_hold_no_secret() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for key_type in KeyType::ALL {
        // Owner-bound and not, exported with and without authorization.
        let owner = kms_client::SigningKey::generate().unwrap();
        let m = generate_key_material(key_type).unwrap();
        let w = kms.import(&m).await.unwrap().wallet_id;
        kms.export_to_fresh_key(&w).await.unwrap();
        let owned = generate_key_material(key_type)
            .unwrap()
            .with_owner(*owner.public_key())
            .unwrap();
        let w2 = kms.import(&owned).await.unwrap().wallet_id;
        let recipient = kms_client::HpkeSecretKey::generate().unwrap();
        assert!(kms.export(&w2, &recipient).await.is_err());
        let auth =
            kms_client::authorize_export_for(&owner, &w2, recipient.public_key(), 60).unwrap();
        kms.export_authorized(&w2, &recipient, Some(auth))
            .await
            .unwrap();
        secrets.extend([
            m.private_key().expose().to_vec(),
            owned.private_key().expose().to_vec(),
        ]);
        secrets.extend([
            owner.scalar().expose().to_vec(),
            recipient.scalar().expose().to_vec(),
        ]);
    }
    // A refused import whose plaintext holds a (bad) key.
    let s = kms.start_import_session().await.unwrap();
    let bad_key = [0xffu8; 32];
    let pt = format!(
        r#"{{"v":1,"key_type":"p256","private_key":"{}"}}"#,
        b64::encode(bad_key)
    );
    let ct = kms_crypto::hpke::seal(
        s.public_key(),
        &kms_crypto::hpke::info(kms_crypto::labels::IMPORT, s.id()),
        pt.as_bytes(),
    )
    .unwrap();
    let a = kms_e2e::post_json(
        &format!("{}/v1/import-sessions/{}/complete", d.api_url(), s.id()),
        &serde_json::json!({"encrypted_key": b64::encode(ct.as_bytes())}),
    )
    .await;
    a.assert_error(422, "invalid_key_material");
    secrets.push(bad_key.to_vec());

    // The key set itself: root key, master key, identity key.
    let root = std::fs::read(d.se_data().join("root.key")).unwrap();
    let sealed = std::fs::read(d.se_data().join("keyset.sealed")).unwrap();
    assert!(sealed.starts_with(b"KMSKSET\x02\x05local"));
    let keys = kms_e2e::open_key_set(&d.se_data());
    secrets.push(root.clone());
    secrets.push(keys.master_key(1).unwrap().expose().to_vec());
    secrets.push(keys.identity().scalar().expose().to_vec());

    let logs = d.logs();
    assert!(
        logs.contains("wallet exported") && logs.contains("DEBUG"),
        "debug logs were captured"
    );
    d.assert_logs_hold_none_of(&secrets);
}

/// The internal hop over a Unix socket: the socket is the secure
/// environment's user's alone, the flow works over it, and a restart after
/// a crash (which leaves the socket file behind) takes the same path back.
#[tokio::test]
async fn the_internal_hop_works_over_a_unix_socket() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    let mut d = Deployment::start_over_unix_socket();
    let socket = d.se_socket().unwrap();
    assert_eq!(
        d.se.as_ref().unwrap().addr,
        format!("unix:{}", socket.display())
    );
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let kms = d.client();
    kms.health().await.unwrap();
    let material = generate_key_material(KeyType::P256).unwrap();
    let wallet = kms.import(&material).await.unwrap().wallet_id;
    let session = kms.start_import_session().await.unwrap();

    // A crash leaves the socket file; while nothing listens on it, kms-api
    // answers 503 rather than hanging or failing otherwise.
    d.stop_se();
    assert!(socket.exists());
    raw("GET", &format!("{}/v1/attestation", d.api_url()), None)
        .await
        .assert_error(503, "unavailable");

    d.start_se();
    wait_healthy(&kms).await;
    let second = generate_key_material(KeyType::Ed25519).unwrap();
    kms.complete_import(&session, &second).await.unwrap();
    assert_exports_back(&kms, &wallet, &material).await;
}

/// A path that holds something other than a socket is not taken over.
#[test]
fn the_secure_environment_refuses_a_socket_path_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("se.sock");
    std::fs::write(&path, b"not a socket").unwrap();
    let out = Command::new(&binaries().secure_environment)
        .arg("--listen")
        .arg(format!("unix:{}", path.display()))
        .arg("--data-dir")
        .arg(dir.path().join("se"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}
