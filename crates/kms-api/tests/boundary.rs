//! The trust boundary, proven from the dependency graph: kms-api links no
//! crate that handles key material or does TLS (docs/design.md, "Trust boundary").
//!
//! Walks the resolved graph of `cargo metadata --all-features` from kms-api
//! along normal (linked) edges only — build scripts and dev-dependencies are
//! not linked into the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::process::Command;

/// Crates that handle key material, do cryptography for it, or bring a TLS stack.
const FORBIDDEN: &[&str] = &[
    "kms-crypto",
    "secure-environment",
    "kms-client",
    "p256",
    "p384",
    "k256",
    "ecdsa",
    "elliptic-curve",
    "ed25519",
    "ed25519-dalek",
    "x25519-dalek",
    "curve25519-dalek",
    "aes",
    "aes-gcm",
    "chacha20poly1305",
    "hpke",
    "hkdf",
    "hmac",
    "ring",
    "aws-lc-rs",
    "aws-lc-sys",
    "aws-lc-fips-sys",
    "openssl",
    "openssl-sys",
    "native-tls",
    "rustls",
    "tokio-rustls",
    "hyper-rustls",
    "hyper-tls",
    "rand",
    "rand_core",
    "reqwest",
];

fn reachable_from_kms_api() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--all-features",
            "--manifest-path",
        ])
        .arg(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");

    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id"),
                p["name"].as_str().expect("name"),
            )
        })
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("node id"), n))
        .collect();
    let start = names
        .iter()
        .find(|(_, name)| **name == "kms-api")
        .map(|(id, _)| *id)
        .expect("kms-api in the workspace");

    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([start]);
    let mut visited = BTreeSet::from([start]);
    while let Some(id) = queue.pop_front() {
        seen.insert(names[id].to_owned());
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let linked = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().expect("pkg");
            if linked && visited.insert(pkg) {
                queue.push_back(pkg);
            }
        }
    }
    seen
}

#[test]
fn kms_api_links_no_key_material_crypto_and_no_tls() {
    let linked = reachable_from_kms_api();
    // The walk really covers kms-api's stack (a vacuous walk would pass).
    for expected in [
        "axum",
        "hyper-util",
        "sqlx-sqlite",
        "kms-store",
        "kms-protocol",
        "tokio",
    ] {
        assert!(
            linked.contains(expected),
            "{expected} should be linked; walk found {linked:?}"
        );
    }
    let bad: Vec<_> = FORBIDDEN.iter().filter(|c| linked.contains(**c)).collect();
    assert!(
        bad.is_empty(),
        "kms-api links key-material crypto or TLS crates: {bad:?}"
    );
    // sha2 is linked through sqlx-core (migration checksums): a hash with no
    // key, allowed. Anything new that looks like crypto must be looked at.
    let suspicious: Vec<_> = linked
        .iter()
        .filter(|n| {
            [
                "aes", "gcm", "ecdsa", "ecc", "curve", "tls", "ssl", "hpke", "cipher",
            ]
            .iter()
            .any(|w| n.contains(w))
        })
        .collect();
    assert!(
        suspicious.is_empty(),
        "new crypto-looking crates linked into kms-api: {suspicious:?}"
    );
}
