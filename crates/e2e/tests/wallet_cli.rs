//! `kms-wallet` against the real servers: importing the BIP-39 reference
//! mnemonic and an xprv from stdin, the published addresses and xpubs it
//! must then show, signing and offline verification, owner-bound signing
//! with an owner key file, and clear failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use kms_e2e::{binaries, Deployment};
use serde_json::Value;

const ABANDON: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

fn wallet(d: &Deployment, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(&binaries().kms_wallet)
        .arg("--api-url")
        .arg(d.api_url())
        .arg("--identity-file")
        .arg(d.se_data().join("identity.pub"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kms-wallet failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

#[tokio::test]
async fn the_reference_mnemonic_gives_the_published_addresses() {
    let d = Deployment::start(&[]);
    let imported = json(&wallet(
        &d,
        &["--json", "import", "mnemonic"],
        Some(&format!("  {ABANDON}\n")),
    ));
    assert_eq!(imported["key_type"], "bip39");
    let id = imported["wallet_id"].as_str().unwrap().to_owned();
    let addr = |path: &str, kind: &str, testnet: bool| {
        let mut args = vec!["address", "--wallet", &id, "--path", path, "--kind", kind];
        if testnet {
            args.push("--testnet");
        }
        ok(&wallet(&d, &args, None))
    };
    // BIP-84, BIP-86, and the well-known first Ethereum account of this mnemonic.
    assert_eq!(
        addr("m/84'/0'/0'/0/0", "p2wpkh", false),
        "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    );
    assert_eq!(
        addr("m/86'/0'/0'/0/0", "p2tr", false),
        "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
    );
    assert_eq!(
        addr("m/44'/60'/0'/0/0", "evm", false),
        "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
    );
    assert!(addr("m/84'/1'/0'/0/0", "p2wpkh", true).starts_with("tb1q"));
    assert!(addr("m/86'/1'/0'/0/0", "p2tr", true).starts_with("tb1p"));
    // BIP-86's account xpub and its first receiving key's.
    assert_eq!(
        ok(&wallet(&d, &["xpub", "--wallet", &id, "--path", "m/86'/0'/0'"], None)),
        "xpub6BgBgsespWvERF3LHQu6CnqdvfEvtMcQjYrcRzx53QJjSxarj2afYWcLteoGVky7D3UKDP9QyrLprQ3VCECoY49yfdDEHGCtMMj92pReUsQ"
    );
    assert_eq!(
        ok(&wallet(&d, &["xpub", "--wallet", &id, "--path", "m/86'/0'/0'/0/0"], None)),
        "xpub6H3W6JmYJXN49h5TfcVjLC3onS6uPeUTTJoVvRC8oG9vsTn2J8LwigLzq5tHbrwAzH9DGo6ThGUdWsqce8dGfwHVBxSbixjDADGGdzF7t2B"
    );

    // Sign, then verify offline; a changed message does not verify.
    for (algorithm, path) in [
        ("ecdsa-secp256k1", "m/44'/60'/0'/0/0"),
        ("schnorr-secp256k1-taproot", "m/86'/0'/0'/0/0"),
        ("ed25519", "m/44'/501'/0'/0'"),
        ("ecdsa-p256", "m/0'/1"),
    ] {
        let signed = json(&wallet(
            &d,
            &[
                "--json",
                "sign",
                "--wallet",
                &id,
                "--path",
                path,
                "--algorithm",
                algorithm,
                "--message",
                "hello",
            ],
            None,
        ));
        let sig = signed["signature"].as_str().unwrap();
        let pk = signed["public_key"].as_str().unwrap();
        let verify = |message: &str| {
            wallet(
                &d,
                &[
                    "verify",
                    "--algorithm",
                    algorithm,
                    "--public-key",
                    pk,
                    "--signature",
                    sig,
                    "--message",
                    message,
                ],
                None,
            )
        };
        assert_eq!(ok(&verify("hello")), "valid");
        let bad = verify("hellO");
        assert!(!bad.status.success());
        assert_eq!(String::from_utf8_lossy(&bad.stdout).trim(), "INVALID");
    }
}

#[tokio::test]
async fn xprv_import_owner_keys_and_errors() {
    let d = Deployment::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let owner = dir.path().join("owner.key");
    let owner_s = owner.to_str().unwrap();
    ok(&wallet(&d, &["owner-key", owner_s], None));
    // Never overwritten.
    assert!(!wallet(&d, &["owner-key", owner_s], None).status.success());

    // BIP-32 test vector 1's master, from stdin, bound to the owner.
    let xprv = "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi";
    let imported = json(&wallet(
        &d,
        &["--json", "import", "xprv", "--owner-key-file", owner_s],
        Some(xprv),
    ));
    assert_eq!(imported["key_type"], "bip32");
    let id = imported["wallet_id"].as_str().unwrap().to_owned();
    let derived = json(&wallet(
        &d,
        &[
            "--json",
            "derive",
            "--wallet",
            &id,
            "--path",
            "m/0'/1/2'/2/1000000000",
        ],
        None,
    ));
    assert_eq!(
        derived["public_key"],
        "022a471424da5e657499d1ff51cb43c47481a03b1e77f951fe64cec9f5a48f7011"
    );
    let sign = |extra: &[&str]| {
        let mut args = vec![
            "sign",
            "--wallet",
            &id,
            "--path",
            "m/0",
            "--algorithm",
            "ecdsa-secp256k1",
            "--digest",
            "1111111111111111111111111111111111111111111111111111111111111111",
        ];
        args.extend_from_slice(extra);
        wallet(&d, &args, None)
    };
    let refused = sign(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("authorization_required"));
    ok(&sign(&["--owner-key-file", owner_s]));

    // A generated owner-bound wallet.
    let g = json(&wallet(
        &d,
        &[
            "--json",
            "generate",
            "--key-type",
            "ed25519",
            "--owner-key-file",
            owner_s,
        ],
        None,
    ));
    assert_eq!(g["owner_bound"], true);

    // Bad input: a mnemonic with a wrong checksum, a corrupted xprv, a bad
    // path, a malformed id: clear errors, nothing imported.
    for (args, stdin) in [
        (vec!["import", "mnemonic"], Some("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon")),
        (vec!["import", "xprv"], Some(&xprv[..xprv.len() - 1])),
        (vec!["derive", "--wallet", &id, "--path", "m/1h"], None),
        (vec!["derive", "--wallet", "nope", "--path", "m/1"], None),
    ] {
        let out = wallet(&d, &args, stdin);
        assert!(!out.status.success(), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
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

/// A BitGo keycard box (made with `@bitgo/sjcl` as BitGo's SDK makes them,
/// crates/crypto/tests/data/README.md) imports as the bip32 wallet inside
/// it; the box is opened in the secure environment only. A wrong
/// passphrase or a changed box is a clear 422 and stores nothing.
#[tokio::test]
async fn a_bitgo_keycard_imports_inside_the_secure_environment() {
    let d = Deployment::start(&[]);
    let card = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crypto/tests/data/keycard-v1.json");
    let card = card.display().to_string();
    // BIP-32 test vector 1's master key, which the box holds.
    let xpub = "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8";
    let imported = json(&wallet(
        &d,
        &[
            "--json", "import", "keycard", "--box", &card, "--xpub", xpub,
        ],
        Some("correct horse battery staple\n"),
    ));
    assert_eq!(imported["key_type"], "bip32");
    assert_eq!(
        imported["public_key"],
        "0339a36013301597daef41fbe593a02cc513d0b55527ec2df1050e2e8ff49c85c2"
    );
    let wallet_id = imported["wallet_id"].as_str().unwrap().to_owned();
    let shown = json(&wallet(
        &d,
        &["--json", "xpub", "--wallet", &wallet_id, "--path", "m"],
        None,
    ));
    assert_eq!(shown["xpub"], xpub, "{shown}");

    let wrong = wallet(
        &d,
        &["import", "keycard", "--box", &card],
        Some("not the passphrase\n"),
    );
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    assert!(stderr.contains("invalid_key_material"), "{stderr}");
    let changed = d.dir.path().join("changed.json");
    let text = std::fs::read_to_string(&card)
        .unwrap()
        .replace("\"ct\":\"c", "\"ct\":\"d");
    std::fs::write(&changed, text).unwrap();
    let out = wallet(
        &d,
        &["import", "keycard", "--box", &changed.display().to_string()],
        Some("correct horse battery staple\n"),
    );
    assert!(!out.status.success());
    let junk = d.dir.path().join("junk.json");
    std::fs::write(&junk, "{\"v\": 7}").unwrap();
    let out = wallet(
        &d,
        &["import", "keycard", "--box", &junk.display().to_string()],
        Some("x\n"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a BitGo keycard box"));
    // Only the good import is stored.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", d.db_path().display()))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM wallets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    d.assert_logs_hold_none_of(&[b"correct horse battery staple".to_vec()]);
}
