//! Master-key rotation with the real binaries: a new version is current at
//! once, the re-wrap job moves every wallet while imports and exports go
//! on without a failed request, a crash of either process mid-job loses
//! nothing and the job resumes, and a version is retired only when nothing
//! references it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_crypto::envelope;
use kms_crypto::material::KeyMaterial;
use kms_crypto::SecretBytes;
use kms_e2e::{binaries, Deployment};
use kms_protocol::admin::{KeysOverview, RewrapState, RewrapStatus};
use kms_protocol::{Id, KeyType};

/// Wallets sealed under the current key set, written straight into the
/// store in one transaction (importing 100k through the API would only
/// measure imports). Returns a sample of (id, private key) to check later.
async fn seed(d: &Deployment, n: u64, sample_every: u64) -> HashMap<Id, Vec<u8>> {
    let keys = kms_e2e::open_key_set(&d.se_data());
    let store = kms_store::SqliteStore::open(&d.db_path().display().to_string())
        .await
        .unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    let mut sample = HashMap::new();
    for i in 0..n {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        id[8..].copy_from_slice(&(i ^ 0x5bd1_e995).to_be_bytes());
        let id = Id::new_v4(id);
        let secret = [(i % 251) as u8 + 1; 32];
        let material =
            KeyMaterial::new(KeyType::Raw, SecretBytes::new(secret.to_vec()), None).unwrap();
        let sealed = envelope::seal_wallet(&keys, &id, &material).unwrap();
        sqlx::query(
            "INSERT INTO wallets (wallet_id, key_type, public_key, owner_public_key, created_at,
                                  master_key_version, wrapped_key, ciphertext)
             VALUES (?, 'raw', NULL, NULL, 1, ?, ?, ?)",
        )
        .bind(&id.as_bytes()[..])
        .bind(i64::from(sealed.master_key_version))
        .bind(&sealed.wrapped_key)
        .bind(&sealed.ciphertext)
        .execute(&mut *tx)
        .await
        .unwrap();
        if i % sample_every == 0 {
            sample.insert(id, secret.to_vec());
        }
    }
    tx.commit().await.unwrap();
    sample
}

async fn admin_get<T: serde::de::DeserializeOwned>(d: &Deployment, path: &str) -> T {
    let url = format!("{}{path}", d.admin_url());
    let resp = reqwest::get(&url).await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.json().await.unwrap()
}

fn admin(d: &Deployment, args: &[&str]) -> std::process::Output {
    std::process::Command::new(&binaries().kms_admin)
        .arg("--admin-url")
        .arg(d.admin_url())
        .args(args)
        .output()
        .unwrap()
}

fn wallets_under(k: &KeysOverview, version: u32) -> u64 {
    k.versions
        .iter()
        .find(|v| v.version == version)
        .map_or(0, |v| v.wallets)
}

/// Imports and exports from several tasks until `stop`; any failed
/// request is counted.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Wallet>>>,
}

/// A wallet's id and its private key.
type Wallet = (Id, Vec<u8>);

impl Load {
    fn start(d: &Deployment, sample: &HashMap<Id, Vec<u8>>, exporters: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let ids: Arc<Vec<Wallet>> = Arc::new(sample.iter().map(|(k, v)| (*k, v.clone())).collect());
        let mut tasks = Vec::new();
        for t in 0..exporters {
            let client = d.client();
            let (stop, failures, requests, ids) = (
                stop.clone(),
                failures.clone(),
                requests.clone(),
                ids.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let (id, secret) = &ids[i % ids.len()];
                    i += exporters;
                    requests.fetch_add(1, Ordering::Relaxed);
                    match client.export_to_fresh_key(id).await {
                        Ok(m) if m.private_key().expose() == &secret[..] => {}
                        Ok(_) => {
                            eprintln!("export of {id} returned other material");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("export of {id} failed: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Vec::new()
            }));
        }
        let client = d.client();
        let (stop2, failures2, requests2) = (stop.clone(), failures.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let mut imported = Vec::new();
            let mut n = 0u8;
            while !stop2.load(Ordering::Relaxed) {
                n = n.wrapping_add(1);
                let secret = vec![n | 1; 32];
                let m =
                    KeyMaterial::new(KeyType::Raw, SecretBytes::new(secret.clone()), None).unwrap();
                requests2.fetch_add(1, Ordering::Relaxed);
                match client.import(&m).await {
                    Ok(r) => imported.push((r.wallet_id, secret)),
                    Err(e) => {
                        eprintln!("import failed: {e}");
                        failures2.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            imported
        }));
        Load {
            stop,
            failures,
            requests,
            tasks,
        }
    }

    /// Stops the load; returns the wallets it imported.
    async fn finish(self) -> (u64, u64, Vec<Wallet>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut imported = Vec::new();
        for t in self.tasks {
            imported.extend(t.await.unwrap());
        }
        (
            self.requests.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            imported,
        )
    }
}

async fn wait_for_job(d: &Deployment, limit: Duration) -> RewrapStatus {
    let deadline = Instant::now() + limit;
    loop {
        let s: RewrapStatus = admin_get(d, "/admin/v1/rewrap").await;
        if s.state != RewrapState::Running {
            return s;
        }
        assert!(Instant::now() < deadline, "re-wrap did not finish: {s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 100k wallets (override with KMS_ROTATION_WALLETS) move to a new master
/// key version while exports and imports run: no failed request, no
/// wallet lost, every sampled wallet still exports its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_of_100k_wallets_under_load() {
    let n: u64 = std::env::var("KMS_ROTATION_WALLETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let d = Deployment::start_with(&[], &["--admin-listen", "127.0.0.1:0"]);
    let sample = seed(&d, n, (n / 500).max(1)).await;

    // A data key made under version 1 keeps working until version 1 retires.
    let recipient = kms_crypto::hpke::HpkeSecretKey::generate().unwrap();
    let context: kms_protocol::data_key::EncryptionContext =
        serde_json::from_str(r#"{"purpose":"rotation-test"}"#).unwrap();
    let dk_body = serde_json::json!({
        "encryption_context": context,
        "recipient_public_key": kms_protocol::b64::encode(recipient.public_key().as_bytes()),
    });
    let generated = kms_e2e::post_json(&format!("{}/v1/data-keys", d.api_url()), &dk_body).await;
    assert_eq!(generated.status, 200, "{}", generated.body);
    assert_eq!(generated.body["master_key_version"], 1);
    let wrapped = generated.body["wrapped_key"].as_str().unwrap().to_owned();
    let decrypt_body = serde_json::json!({
        "wrapped_key": wrapped,
        "encryption_context": context,
        "recipient_public_key": kms_protocol::b64::encode(recipient.public_key().as_bytes()),
    });

    let before: KeysOverview = admin_get(&d, "/admin/v1/keys").await;
    assert_eq!(before.current_version, 1);
    assert_eq!(wallets_under(&before, 1), n);

    let load = Load::start(&d, &sample, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = admin(&d, &["rotate"]);
    assert!(rotated.status.success(), "{rotated:?}");
    let started = Instant::now();
    // `kms-admin rewrap` starts the job and follows it to the end.
    let rewrap = tokio::task::spawn_blocking({
        let url = d.admin_url();
        move || {
            std::process::Command::new(&binaries().kms_admin)
                .args(["--admin-url", &url, "rewrap", "--batch-size", "500"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let took = started.elapsed();
    // Keep the load on a little past the job's end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (requests, failures, imported) = load.finish().await;
    assert!(rewrap.status.success(), "kms-admin rewrap: {rewrap:?}");
    eprintln!(
        "re-wrapped {n} wallets in {took:?} under load: {requests} requests, {failures} failed, {} imported",
        imported.len()
    );
    assert_eq!(failures, 0, "requests failed during the rotation");
    assert!(requests > 20, "the load ran ({requests} requests)");

    let job = wait_for_job(&d, Duration::from_secs(5)).await;
    assert_eq!(
        (job.state, job.failed, job.remaining),
        (RewrapState::Done, 0, 0)
    );
    // The seeded wallets, and any imported under version 1 just before the rotation.
    assert!(
        job.rewrapped >= n && job.rewrapped <= n + imported.len() as u64,
        "{job:?}"
    );
    let after: KeysOverview = admin_get(&d, "/admin/v1/keys").await;
    assert_eq!(after.current_version, 2);
    assert_eq!(wallets_under(&after, 1), 0);
    assert_eq!(
        wallets_under(&after, 2),
        n + imported.len() as u64,
        "no wallet lost"
    );

    // Re-running the job is a no-op.
    let again = admin(&d, &["rewrap"]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(wait_for_job(&d, Duration::from_secs(30)).await.rewrapped, 0);

    // Retire version 1; every wallet still exports its own key.
    let retired = admin(&d, &["retire", "1"]);
    assert!(retired.status.success(), "{retired:?}");
    let client = d.client();
    for (id, secret) in sample
        .iter()
        .take(50)
        .chain(imported.iter().take(20).map(|(a, b)| (a, b)))
    {
        let m = client.export_to_fresh_key(id).await.unwrap();
        assert_eq!(m.private_key().expose(), &secret[..]);
    }
    // The version-1 data key is now refused, and says why.
    let refused = kms_e2e::post_json(
        &format!("{}/v1/data-keys/decrypt", d.api_url()),
        &decrypt_body,
    )
    .await;
    refused.assert_error(422, "decryption_failed");
    assert!(refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("retired"));
    // The current version and an unknown one cannot be retired; retiring
    // a retired one again is a no-op.
    for v in ["2", "7"] {
        let out = admin(&d, &["retire", v]);
        assert!(!out.status.success(), "retire {v} succeeded");
    }
    let again = admin(&d, &["retire", "1"]);
    assert!(again.status.success(), "{again:?}");
    let audit = d.logs();
    assert!(audit.contains("master key rotated") && audit.contains("master key version retired"));
}

/// A crash of either process in the middle of the job loses nothing: the
/// job waits for the secure environment to come back, and a new kms-api
/// resumes from the store when the job is started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrap_survives_crashes_of_either_process() {
    let n = 20_000;
    let mut d = Deployment::start_with(&[], &["--admin-listen", "127.0.0.1:0"]);
    let sample = seed(&d, n, 97).await;
    assert!(admin(&d, &["rotate"]).status.success());
    // Small batches so the job is still running when the crash comes.
    let started = admin(&d, &["rewrap", "--batch-size", "20", "--no-wait"]);
    assert!(started.status.success(), "{started:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The secure environment crashes and comes back on the same address.
    d.stop_se();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting: RewrapStatus = admin_get(&d, "/admin/v1/rewrap").await;
    assert_eq!(waiting.state, RewrapState::Running, "{waiting:?}");
    d.start_se();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // kms-api crashes mid-job; a new one knows nothing of the job.
    d.stop_api();
    d.start_api();
    let partial: KeysOverview = admin_get(&d, "/admin/v1/keys").await;
    assert_eq!(
        wallets_under(&partial, 1) + wallets_under(&partial, 2),
        n,
        "no wallet lost or duplicated"
    );
    assert!(wallets_under(&partial, 2) > 0, "the job had made progress");
    // Started again, it resumes with what is left.
    let resumed = admin(&d, &["rewrap", "--batch-size", "1000"]);
    assert!(resumed.status.success(), "{resumed:?}");
    let job = wait_for_job(&d, Duration::from_secs(60)).await;
    assert_eq!(job.state, RewrapState::Done);
    assert_eq!(job.rewrapped, wallets_under(&partial, 1));
    let after: KeysOverview = admin_get(&d, "/admin/v1/keys").await;
    assert_eq!((wallets_under(&after, 1), wallets_under(&after, 2)), (0, n));
    let client = d.client();
    for (id, secret) in sample.iter().take(30) {
        let m = client.export_to_fresh_key(id).await.unwrap();
        assert_eq!(m.private_key().expose(), &secret[..]);
    }
}

/// The admin API: off unless asked for, loopback only unless allowed,
/// token-protected when configured, and bad input is a clear 400/404.
#[tokio::test]
async fn admin_api_is_off_by_default_and_checks_its_input() {
    let d = Deployment::start(&[]);
    assert!(!d.logs().contains("admin API serving"));
    drop(d);

    let d = Deployment::start_with(&[], &["--admin-listen", "127.0.0.1:0"]);
    let base = d.admin_url();
    let a = kms_e2e::raw("POST", &format!("{base}/admin/v1/keys/abc/retire"), None).await;
    a.assert_error(400, "invalid_request");
    let a = kms_e2e::raw("POST", &format!("{base}/admin/v1/keys/9/retire"), None).await;
    a.assert_error(404, "not_found");
    let a = kms_e2e::raw("POST", &format!("{base}/admin/v1/keys/1/retire"), None).await;
    a.assert_error(400, "invalid_request");
    let a = kms_e2e::post_json(
        &format!("{base}/admin/v1/rewrap"),
        &serde_json::json!({"batch_size": 0}),
    )
    .await;
    a.assert_error(400, "invalid_request");
    let a = kms_e2e::raw("GET", &format!("{base}/admin/v1/nope"), None).await;
    a.assert_error(404, "not_found");
    // The public API has no admin routes.
    let a = kms_e2e::raw(
        "POST",
        &format!("{}/admin/v1/keys/rotate", d.api_url()),
        None,
    )
    .await;
    a.assert_error(404, "not_found");
    drop(d);

    // A non-loopback admin address is refused at start.
    let bins = binaries();
    let out = std::process::Command::new(&bins.kms_api)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    // With a token, requests without it are refused.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef-admin\n").unwrap();
    let d = Deployment::start_with(
        &[],
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token-file",
            token.to_str().unwrap(),
        ],
    );
    let a = kms_e2e::raw("GET", &format!("{}/admin/v1/keys", d.admin_url()), None).await;
    a.assert_error(401, "authorization_required");
    let out = admin(&d, &["status"]);
    assert!(!out.status.success());
    let out = std::process::Command::new(&binaries().kms_admin)
        .args([
            "--admin-url",
            &d.admin_url(),
            "--token-file",
            token.to_str().unwrap(),
            "status",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("root-key provider: local"));
}
