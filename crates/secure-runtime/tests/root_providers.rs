//! One suite for every root-key provider, run through `RootKeySpec::connect`
//! so the selection code is exercised too: local key file, local
//! passphrase, pkcs11 (SoftHSM2) and aws-kms (moto). The last two need
//! services: `. scripts/test-services.sh` starts them and exports the
//! `KMS_TEST_*` variables; without them (or without the cargo feature) the
//! test prints a SKIPPED line and passes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use kms_crypto::kdf::Argon2Params;
use kms_crypto::rng::{self, SystemRng};
use kms_crypto::SecretKey;
use secure_runtime::root::{
    AwsKmsSettings, LocalSettings, Pkcs11Settings, RootKeyError, RootKeySpec,
};

/// How long a `connect` to an unreachable backend may take.
const FAIL_FAST: Duration = Duration::from_secs(20);

/// Which bytes of a wrapped key to flip.
enum Flips {
    All,
    /// Network-bound providers: the version byte and a few spread out.
    Some,
}

/// What the suite needs to know of one provider.
struct Case {
    name: &'static str,
    spec: RootKeySpec,
    /// The same provider with another root key (other key file, other
    /// passphrase, other token key label, other deployment).
    other: RootKeySpec,
    /// Settings whose `connect` must fail (backend missing or refusing us).
    unreachable: Vec<(&'static str, RootKeySpec)>,
    flips: Flips,
}

fn random_key() -> SecretKey {
    SecretKey::from_array(rng::array(&mut SystemRng).unwrap())
}

fn suite(case: Case) {
    let name = case.name;
    // Unreachable backends first: in pkcs11, a later login in this process
    // would make a wrong PIN undetectable (logins are per application).
    for (what, spec) in &case.unreachable {
        let started = Instant::now();
        let err = spec
            .connect(false)
            .expect_err(&format!("{name}: connect with {what} must fail"));
        let took = started.elapsed();
        eprintln!("{name}: {what}: connect failed in {took:.1?}: {err}");
        assert!(took < FAIL_FAST, "{name}: {what}: took {took:?}");
        assert!(
            !matches!(err, RootKeyError::NotBuilt(_)),
            "{name}: {what}: {err}"
        );
    }

    let p = case.spec.connect(true).unwrap();
    assert_eq!(p.name(), case.spec.kind().as_str());
    let key = random_key();

    // Round trip.
    let w = p.wrap(&key).unwrap();
    assert!(p.unwrap(&w).unwrap().ct_eq(&key), "{name}: round trip");

    // Two wraps of the same key differ.
    let w2 = p.wrap(&key).unwrap();
    assert_ne!(w, w2, "{name}: two wraps of one key are identical");
    assert!(p.unwrap(&w2).unwrap().ct_eq(&key));

    // Every flipped byte (or a sample, for network calls) fails.
    let positions: Vec<usize> = match case.flips {
        Flips::All => (0..w.len()).collect(),
        Flips::Some => {
            let mut v = vec![0, 1, w.len() / 2, w.len() - 17, w.len() - 1];
            v.dedup();
            v
        }
    };
    for i in positions {
        let mut bad = w.clone();
        bad[i] ^= 0x01;
        match p.unwrap(&bad) {
            Ok(_) => panic!("{name}: a wrapped key with byte {i} flipped unwrapped"),
            Err(e) => {
                if i == 0 {
                    assert!(
                        matches!(e, RootKeyError::Malformed(_) | RootKeyError::Config(_)),
                        "{name}: flipped version byte: {e}"
                    );
                }
            }
        }
    }
    // A flipped last byte (in the tag for every provider) is a refusal.
    let mut bad = w.clone();
    *bad.last_mut().unwrap() ^= 0x80;
    match p.unwrap(&bad) {
        Err(RootKeyError::Refused { .. }) => {}
        other => panic!("{name}: flipped tag: expected Refused, got {other:?}"),
    }
    // Truncated and empty wrapped keys.
    assert!(p.unwrap(&w[..w.len() - 1]).is_err(), "{name}: truncated");
    assert!(p.unwrap(&[]).is_err(), "{name}: empty");

    // A second, re-connected instance opens what the first wrapped.
    let again = case.spec.connect(false).unwrap();
    assert!(
        again.unwrap(&w).unwrap().ct_eq(&key),
        "{name}: a re-connected provider"
    );
    let w3 = again.wrap(&key).unwrap();
    assert!(p.unwrap(&w3).unwrap().ct_eq(&key));
    drop(again);

    // The server calls providers from inside its multi-thread runtime (and
    // may drop them there): nothing may block_on or drop a runtime there.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let inner = case.spec.connect(false).unwrap();
        assert!(
            inner.unwrap(&w).unwrap().ct_eq(&key),
            "{name}: in a runtime"
        );
        let w4 = inner.wrap(&key).unwrap();
        assert!(inner.unwrap(&w4).unwrap().ct_eq(&key));
        drop(inner);
    });
    drop(rt);

    // Another root key (or deployment) refuses, and never returns a key.
    let other = case.other.connect(true).unwrap();
    match other.unwrap(&w) {
        Ok(_) => panic!("{name}: another root key unwrapped the key-set key"),
        Err(e @ (RootKeyError::Refused { .. } | RootKeyError::Unavailable { .. })) => {
            eprintln!("{name}: another root key: {e}");
        }
        Err(e) => panic!("{name}: another root key: expected Refused or Unavailable, got {e}"),
    }
    eprintln!("{name}: all provider cases passed");
}

fn argon2_for_tests() -> Argon2Params {
    Argon2Params {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    }
}

fn local(dir: &Path, key_file: &str, passphrase_file: Option<&str>) -> RootKeySpec {
    RootKeySpec::Local(LocalSettings {
        key_file: dir.join(key_file),
        passphrase_file: passphrase_file.map(|f| dir.join(f)),
        passphrase_env: "KMS_TEST_UNSET_PASSPHRASE_VARIABLE",
        argon2: argon2_for_tests(),
    })
}

#[test]
fn local_key_file() {
    let dir = tempfile::tempdir().unwrap();
    suite(Case {
        name: "local (key file)",
        spec: local(dir.path(), "root.key", None),
        other: local(dir.path(), "other.key", None),
        unreachable: vec![("a missing key file", local(dir.path(), "missing.key", None))],
        flips: Flips::All,
    });
}

#[test]
fn local_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pass"), "correct horse battery\n").unwrap();
    std::fs::write(dir.path().join("other-pass"), "wrong horse battery\n").unwrap();
    suite(Case {
        name: "local (passphrase)",
        spec: local(dir.path(), "unused.key", Some("pass")),
        other: local(dir.path(), "unused.key", Some("other-pass")),
        unreachable: vec![(
            "a missing passphrase file",
            local(dir.path(), "unused.key", Some("missing-pass")),
        )],
        flips: Flips::All,
    });
    assert!(!dir.path().join("unused.key").exists());
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn skipped(provider: &str, why: &str) {
    eprintln!("SKIPPED: {provider} provider tests — {why}");
}

fn pkcs11_spec(module: &str, token: Option<&str>, key_label: &str) -> Pkcs11Settings {
    Pkcs11Settings {
        module: module.into(),
        token_label: token.map(str::to_owned),
        key_label: key_label.to_owned(),
        pin_file: None,
        pin_env: "KMS_TEST_PKCS11_PIN",
    }
}

#[test]
fn pkcs11() {
    let Some(module) = env("KMS_TEST_PKCS11_MODULE") else {
        if cfg!(feature = "pkcs11") {
            skipped(
                "pkcs11",
                "set KMS_TEST_PKCS11_MODULE, KMS_TEST_PKCS11_TOKEN_LABEL and KMS_TEST_PKCS11_PIN (./scripts/test-services.sh does)",
            );
        } else {
            not_built_pkcs11();
        }
        return;
    };
    if !cfg!(feature = "pkcs11") {
        not_built_pkcs11();
        return;
    }
    let token = env("KMS_TEST_PKCS11_TOKEN_LABEL");
    let token = token.as_deref();
    let dir = tempfile::tempdir().unwrap();
    let wrong_pin = dir.path().join("wrong-pin");
    std::fs::write(&wrong_pin, "0000\n").unwrap();
    let mut bad_pin = pkcs11_spec(&module, token, "kms-test-root");
    bad_pin.pin_file = Some(wrong_pin);
    suite(Case {
        name: "pkcs11",
        spec: RootKeySpec::Pkcs11(pkcs11_spec(&module, token, "kms-test-root")),
        other: RootKeySpec::Pkcs11(pkcs11_spec(&module, token, "kms-test-other")),
        unreachable: vec![
            (
                "a nonexistent module",
                RootKeySpec::Pkcs11(pkcs11_spec(
                    "/nonexistent/libpkcs11-missing.so",
                    token,
                    "kms-test-root",
                )),
            ),
            ("a wrong PIN", RootKeySpec::Pkcs11(bad_pin)),
            (
                "a missing key without create",
                RootKeySpec::Pkcs11(pkcs11_spec(&module, token, "kms-test-never-created")),
            ),
        ],
        flips: Flips::All,
    });
}

fn not_built_pkcs11() {
    let spec = RootKeySpec::Pkcs11(pkcs11_spec("/nonexistent.so", None, "k"));
    assert!(matches!(
        spec.connect(false),
        Err(RootKeyError::NotBuilt("pkcs11"))
    ));
    skipped(
        "pkcs11",
        "the `pkcs11` feature is not compiled in (cargo test -p secure-environment --features pkcs11)",
    );
}

fn aws_spec(endpoint: &str, key_id: &str, deployment: &str) -> RootKeySpec {
    RootKeySpec::AwsKms(AwsKmsSettings {
        key_id: key_id.to_owned(),
        endpoint: Some(endpoint.to_owned()),
        region: Some("us-east-1".to_owned()),
        deployment: deployment.to_owned(),
    })
}

#[test]
fn aws_kms() {
    let (Some(endpoint), Some(key_id)) = (
        env("KMS_TEST_AWS_KMS_ENDPOINT"),
        env("KMS_TEST_AWS_KMS_KEY_ID"),
    ) else {
        if cfg!(feature = "aws-kms") {
            skipped(
                "aws-kms",
                "set KMS_TEST_AWS_KMS_ENDPOINT and KMS_TEST_AWS_KMS_KEY_ID (./scripts/test-services.sh does)",
            );
        } else {
            not_built_aws();
        }
        return;
    };
    if !cfg!(feature = "aws-kms") {
        not_built_aws();
        return;
    }
    suite(Case {
        name: "aws-kms",
        spec: aws_spec(&endpoint, &key_id, "kms-test"),
        other: aws_spec(&endpoint, &key_id, "kms-test-other-deployment"),
        unreachable: vec![
            (
                "an unreachable endpoint",
                aws_spec("http://127.0.0.1:1", &key_id, "kms-test"),
            ),
            (
                "a key that does not exist",
                aws_spec(
                    &endpoint,
                    "00000000-0000-0000-0000-000000000000",
                    "kms-test",
                ),
            ),
        ],
        flips: Flips::Some,
    });
}

fn not_built_aws() {
    let spec = aws_spec("http://127.0.0.1:1", "k", "d");
    assert!(matches!(
        spec.connect(false),
        Err(RootKeyError::NotBuilt("aws-kms"))
    ));
    skipped(
        "aws-kms",
        "the `aws-kms` feature is not compiled in (cargo test -p secure-environment --features aws-kms)",
    );
}
