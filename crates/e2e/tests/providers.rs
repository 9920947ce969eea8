//! Every root-key provider with the real binaries: a key set created under
//! it, a wallet imported, the secure environment restarted (the key set
//! re-opened through the provider), the wallet exported; an unreachable
//! provider stops the start with a clear error and a non-zero exit; and
//! `secure-environment reseal` moves a live data dir to another root key
//! with the identity (clients' pins) and every wallet intact.
//!
//! pkcs11 and aws-kms need their services and cargo features:
//! `. scripts/test-services.sh` and `--all-features` (as `.ci/run` does);
//! without them those tests print SKIPPED and pass.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use kms_e2e::{binaries, Deployment};

fn pkcs11_env() -> Option<(String, String, String)> {
    if !cfg!(feature = "pkcs11") {
        eprintln!(
            "SKIPPED: pkcs11 end-to-end — built without the pkcs11 feature (use --all-features)"
        );
        return None;
    }
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("KMS_TEST_PKCS11_MODULE"),
        get("KMS_TEST_PKCS11_TOKEN_LABEL"),
        get("KMS_TEST_PKCS11_PIN"),
    ) {
        (Some(m), Some(t), Some(p)) => Some((m, t, p)),
        _ => {
            eprintln!("SKIPPED: pkcs11 end-to-end — set KMS_TEST_PKCS11_MODULE/_TOKEN_LABEL/_PIN (. scripts/test-services.sh does)");
            None
        }
    }
}

fn aws_env() -> Option<(String, String)> {
    if !cfg!(feature = "aws-kms") {
        eprintln!(
            "SKIPPED: aws-kms end-to-end — built without the aws-kms feature (use --all-features)"
        );
        return None;
    }
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("KMS_TEST_AWS_KMS_ENDPOINT"),
        get("KMS_TEST_AWS_KMS_KEY_ID"),
    ) {
        (Some(e), Some(k)) => Some((e, k)),
        _ => {
            eprintln!("SKIPPED: aws-kms end-to-end — set KMS_TEST_AWS_KMS_ENDPOINT/_KEY_ID (. scripts/test-services.sh does)");
            None
        }
    }
}

/// A label no other test run uses, so each run creates its own token key.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn write_secret(dir: &Path, name: &str, value: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{value}\n")).unwrap();
    p.display().to_string()
}

/// Import, restart the secure environment, export: the key set re-opens
/// through the provider and the wallet comes back.
async fn round_trip_across_restart(d: &mut Deployment) {
    let client = d.client();
    let material = kms_client::generate_key_material(kms_protocol::KeyType::Secp256k1).unwrap();
    let receipt = client.import(&material).await.unwrap();
    d.stop_se();
    d.start_se();
    let back = d
        .client()
        .export_to_fresh_key(&receipt.wallet_id)
        .await
        .unwrap();
    assert_eq!(back.private_key().expose(), material.private_key().expose());
}

/// The secure environment with `args` exits non-zero without listening,
/// saying `expect`.
fn refuses_to_start(data_dir: &Path, args: &[&str], expect: &str) {
    let out = Command::new(&binaries().secure_environment)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "half-started"
    );
    assert!(stderr.contains(expect), "expected {expect:?} in: {stderr}");
}

#[tokio::test]
async fn local_passphrase_provider() {
    let secrets = tempfile::tempdir().unwrap();
    let pass = write_secret(secrets.path(), "pass", "correct horse battery staple");
    let args = [
        "--root-passphrase-file",
        &pass,
        "--argon2-memory-kib",
        "1024",
        "--argon2-iterations",
        "1",
    ];
    let mut d = Deployment::start(&args);
    assert!(
        !d.se_data().join("root.key").exists(),
        "no key file with a passphrase"
    );
    assert!(!d.logs().contains("root key file sits beside"));
    round_trip_across_restart(&mut d).await;
    d.stop_se();
    let wrong = write_secret(secrets.path(), "wrong", "incorrect horse");
    refuses_to_start(
        &d.se_data(),
        &["--root-passphrase-file", &wrong],
        "refused to unwrap",
    );
    // Without the passphrase: the key set names what it needs.
    refuses_to_start(&d.se_data(), &[], "passphrase");
}

#[tokio::test]
async fn pkcs11_provider() {
    let Some((module, token, pin)) = pkcs11_env() else {
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let pin_file = write_secret(secrets.path(), "pin", &pin);
    let label = unique("e2e");
    let args = [
        "--root-key",
        "pkcs11",
        "--pkcs11-module",
        &module,
        "--pkcs11-token-label",
        &token,
        "--pkcs11-key-label",
        &label,
        "--pkcs11-pin-file",
        &pin_file,
    ];
    let mut d = Deployment::start(&args);
    assert!(!d.se_data().join("root.key").exists());
    round_trip_across_restart(&mut d).await;
    d.stop_se();
    refuses_to_start(
        &d.se_data(),
        &[
            &args[..6],
            &[
                "--pkcs11-key-label",
                "no-such-key",
                "--pkcs11-pin-file",
                &pin_file,
            ],
        ]
        .concat(),
        "unavailable",
    );
    refuses_to_start(
        &d.se_data(),
        &[
            &[
                "--root-key",
                "pkcs11",
                "--pkcs11-module",
                "/nonexistent/libpkcs11.so",
            ][..],
            &args[4..],
        ]
        .concat(),
        "unavailable",
    );
}

#[tokio::test]
async fn aws_kms_provider() {
    let Some((endpoint, key_id)) = aws_env() else {
        return;
    };
    let args = [
        "--root-key",
        "aws-kms",
        "--aws-kms-endpoint",
        &endpoint,
        "--aws-kms-key-id",
        &key_id,
        "--aws-region",
        "us-east-1",
        "--deployment",
        "e2e",
    ];
    let mut d = Deployment::start(&args);
    round_trip_across_restart(&mut d).await;
    d.stop_se();
    // Another deployment name is another encryption context: refused.
    let mut other = args.to_vec();
    other[9] = "another";
    refuses_to_start(&d.se_data(), &other, "refused");
    let mut down = args.to_vec();
    down[3] = "http://127.0.0.1:1";
    refuses_to_start(&d.se_data(), &down, "unavailable");
}

/// `secure-environment reseal`: local key file → a passphrase (always), →
/// pkcs11 (when a token is configured). The identity key and every wallet
/// survive; the old root key no longer opens the key set; a re-seal under
/// a running server is refused before anything changes.
#[tokio::test]
async fn reseal_moves_a_live_data_dir_to_another_root_key() {
    let mut d = Deployment::start(&[]);
    let pinned = d.identity_text();
    let client = d.client();
    let material = kms_client::generate_key_material(kms_protocol::KeyType::Ed25519).unwrap();
    let receipt = client.import(&material).await.unwrap();

    let secrets = tempfile::tempdir().unwrap();
    let pass = write_secret(secrets.path(), "pass", "a new passphrase for the root");
    let se_data = d.se_data();
    let reseal = |args: &[&str]| {
        Command::new(&binaries().secure_environment)
            .arg("--data-dir")
            .arg(&se_data)
            .arg("reseal")
            .args(args)
            .env("SECURE_ENV_ARGON2_MEMORY_KIB", "1024")
            .env("SECURE_ENV_ARGON2_ITERATIONS", "1")
            .output()
            .unwrap()
    };
    let to_pass = ["--to", "local", "--to-root-passphrase-file", &pass];
    let busy = reseal(&to_pass);
    assert!(!busy.status.success(), "re-sealed under a running server");
    assert!(String::from_utf8_lossy(&busy.stderr).contains("stop the secure environment"));
    let before = std::fs::read(d.se_data().join("keyset.sealed")).unwrap();

    d.stop_se();
    let done = reseal(&to_pass);
    assert!(done.status.success(), "{done:?}");
    assert_ne!(
        std::fs::read(d.se_data().join("keyset.sealed")).unwrap(),
        before
    );
    // The old key file no longer opens it.
    refuses_to_start(&d.se_data(), &[], "passphrase");
    let pass_args = ["--root-passphrase-file", pass.as_str()];
    d = restart_with(d, &pass_args);
    assert_eq!(d.identity_text(), pinned, "the identity key is kept");
    let back = d
        .client()
        .export_to_fresh_key(&receipt.wallet_id)
        .await
        .unwrap();
    assert_eq!(back.private_key().expose(), material.private_key().expose());

    if let Some((module, token, pin)) = pkcs11_env() {
        d.stop_se();
        let pin_file = write_secret(secrets.path(), "pin", &pin);
        let label = unique("reseal");
        let mut args = vec!["--root-passphrase-file", pass.as_str()];
        let to = [
            "reseal",
            "--to",
            "pkcs11",
            "--to-pkcs11-module",
            &module,
            "--to-pkcs11-token-label",
            &token,
            "--to-pkcs11-key-label",
            &label,
            "--to-pkcs11-pin-file",
            &pin_file,
        ];
        args.extend(to);
        let out = Command::new(&binaries().secure_environment)
            .arg("--data-dir")
            .arg(d.se_data())
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let pk_args = [
            "--root-key",
            "pkcs11",
            "--pkcs11-module",
            &module,
            "--pkcs11-token-label",
            &token,
            "--pkcs11-key-label",
            &label,
            "--pkcs11-pin-file",
            &pin_file,
        ];
        d = restart_with(d, &pk_args);
        assert_eq!(d.identity_text(), pinned);
        let back = d
            .client()
            .export_to_fresh_key(&receipt.wallet_id)
            .await
            .unwrap();
        assert_eq!(back.private_key().expose(), material.private_key().expose());
    }

    // The move is in the signed audit log (kms-api copies records written
    // outside a request within a second or so).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let page = kms_e2e::raw("GET", &format!("{}/v1/audit?limit=1000", d.api_url()), None).await;
        let events: Vec<String> = page.body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["event"].as_str().unwrap().to_owned())
            .collect();
        if events.iter().any(|e| e == "keyset_resealed") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Restarts the secure environment of `d` with other flags (same data dir
/// and address), keeping kms-api.
fn restart_with(mut d: Deployment, se_args: &[&str]) -> Deployment {
    d.stop_se();
    d.set_se_args(se_args);
    d.start_se();
    d
}
