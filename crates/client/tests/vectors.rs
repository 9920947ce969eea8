//! The published vectors (BIP-32/39/84/86/340/341, SLIP-10, EIP-55, RFC 6979
//! on secp256k1, RFC 8032) against the code the secure environment derives
//! and signs with and the SDK's address encoders. The files are read from
//! `../shared/fixtures/vectors/` beside the repository and never copied in;
//! without them every test here prints SKIPPED and passes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use kms_client::address::{
    base58check_decode, eip55, p2tr_address, p2wpkh_address, segwit_address, Network,
};
use kms_crypto::hd::{self, ExtendedKey, VERSION_XPRV};
use kms_crypto::{ed25519, secp256k1, SecretKey};
use kms_protocol::{Curve, DerivationPath};
use serde_json::Value;

fn vectors(name: &str) -> Option<Value> {
    let dir = std::env::var_os("KMS_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/vectors")
        });
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) if name.ends_with(".json") => Some(serde_json::from_slice(&bytes).unwrap()),
        Ok(bytes) => Some(Value::String(String::from_utf8(bytes).unwrap())),
        Err(_) => {
            eprintln!(
                "SKIPPED: {} not found (set KMS_VECTORS_DIR to the vectors directory)",
                path.display()
            );
            None
        }
    }
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn path(p: &str) -> DerivationPath {
    DerivationPath::parse(p).unwrap()
}

fn key32(hex: &str) -> SecretKey {
    SecretKey::from_slice(&unhex(hex)).unwrap()
}

#[test]
fn bip32_chains_and_invalid_keys() {
    let Some(v) = vectors("bip32.json") else {
        return;
    };
    let mut checked = 0;
    for seed in v["valid"].as_array().unwrap() {
        let m = ExtendedKey::master(Curve::Secp256k1, &unhex(s(&seed["seed_hex"]))).unwrap();
        for chain in seed["chains"].as_array().unwrap() {
            let node = m.derive(&path(s(&chain["path"]))).unwrap();
            let prv = base58check_decode(s(&chain["ext_prv"])).unwrap();
            let publ = base58check_decode(s(&chain["ext_pub"])).unwrap();
            assert_eq!(node.chain_code()[..], prv[13..45], "{}", s(&chain["path"]));
            assert_eq!(node.private_key().expose()[..], prv[46..78]);
            assert_eq!(node.public_key(), &publ[45..78]);
            // Every published ext_prv is a valid `bip32` wallet, and
            // reports the public key of its ext_pub.
            let parsed = ExtendedKey::from_bip32(&prv).unwrap();
            assert_eq!(parsed.public_key(), &publ[45..78]);
            checked += 1;
        }
    }
    assert_eq!(checked, 17);
    for k in v["invalid_extended_keys"]["keys"].as_array().unwrap() {
        let rejected = match base58check_decode(s(&k["key"])) {
            Err(_) => true,
            Ok(bytes) => ExtendedKey::from_bip32(&bytes).is_err(),
        };
        assert!(rejected, "accepted {} ({})", s(&k["key"]), s(&k["reason"]));
    }
}

#[test]
fn bip39_english() {
    let Some(v) = vectors("bip39-vectors.json") else {
        return;
    };
    for e in v["english"].as_array().unwrap() {
        let entropy = unhex(s(&e[0]));
        let words = hd::bip39_mnemonic(&entropy).unwrap();
        assert_eq!(std::str::from_utf8(words.expose()).unwrap(), s(&e[1]));
        assert_eq!(hd::bip39_entropy(s(&e[1])).unwrap().expose(), &entropy[..]);
        let seed = hd::bip39_seed_with_passphrase(&entropy, "TREZOR").unwrap();
        assert_eq!(kms_crypto::hex(seed.expose()), s(&e[2]));
        let xprv = ExtendedKey::master(Curve::Secp256k1, seed.expose())
            .unwrap()
            .to_bip32(VERSION_XPRV);
        assert_eq!(base58check_decode(s(&e[3])).unwrap(), xprv.expose());
    }
}

#[test]
fn slip10_all_curves_and_retries() {
    let Some(v) = vectors("slip10.json") else {
        return;
    };
    let curves = [
        ("secp256k1", Curve::Secp256k1),
        ("nist256p1", Curve::P256),
        ("ed25519", Curve::Ed25519),
    ];
    let check = |curve: Curve, seed: &Value| {
        let m = ExtendedKey::master(curve, &unhex(s(&seed["seed_hex"]))).unwrap();
        for chain in seed["chains"].as_array().unwrap() {
            let p = s(&chain["path"]);
            let node = m.derive(&path(p)).unwrap();
            assert_eq!(
                kms_crypto::hex(&node.chain_code()),
                s(&chain["chain_code"]),
                "{p}"
            );
            assert_eq!(
                kms_crypto::hex(node.private_key().expose()),
                s(&chain["private"])
            );
            let public = unhex(s(&chain["public"]));
            let public = if curve == Curve::Ed25519 {
                assert_eq!(public[0], 0);
                &public[1..]
            } else {
                &public[..]
            };
            assert_eq!(node.public_key(), public, "{p}");
        }
    };
    for (name, curve) in curves {
        for seed in v["curves"][name].as_array().unwrap() {
            check(curve, seed);
        }
    }
    check(Curve::P256, &v["derivation_retry_nist256p1"]);
    check(Curve::P256, &v["seed_retry_nist256p1"]);
}

#[test]
fn bip340_schnorr() {
    let Some(Value::String(csv)) = vectors("bip340-test-vectors.csv") else {
        return;
    };
    for line in csv.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (sk, pk, aux, msg, sig, ok) = (f[1], f[2], f[3], f[4], f[5], f[6] == "TRUE");
        let msg = unhex(&msg.to_lowercase());
        let sig: [u8; 64] = unhex(&sig.to_lowercase()).try_into().unwrap();
        let pk = unhex(&pk.to_lowercase());
        assert_eq!(
            secp256k1::verify_schnorr(&pk, &msg, &sig).is_ok(),
            ok,
            "row {}",
            f[0]
        );
        if !sk.is_empty() && msg.len() == 32 {
            let key = secp256k1::PrivateKey::from_scalar(&key32(&sk.to_lowercase())).unwrap();
            let aux: [u8; 32] = unhex(&aux.to_lowercase()).try_into().unwrap();
            let (made, xonly) = key.sign_schnorr(&msg.clone().try_into().unwrap(), &aux);
            assert_eq!(made, sig, "row {}", f[0]);
            assert_eq!(xonly[..], pk[..]);
        }
    }
}

#[test]
fn bip341_tweaks_and_key_path_signatures() {
    let Some(v) = vectors("bip341-wallet-test-vectors.json") else {
        return;
    };
    for case in v["scriptPubKey"].as_array().unwrap() {
        let mut internal = vec![2u8];
        internal.extend(unhex(s(&case["given"]["internalPubkey"])));
        let root: Option<[u8; 32]> = case["intermediary"]["merkleRoot"]
            .as_str()
            .map(|r| unhex(r).try_into().unwrap());
        let out =
            secp256k1::taproot_output_key(&internal.clone().try_into().unwrap(), root.as_ref())
                .unwrap();
        assert_eq!(
            kms_crypto::hex(&out),
            s(&case["intermediary"]["tweakedPubkey"])
        );
        assert_eq!(
            segwit_address("bc", 1, &out).unwrap(),
            s(&case["expected"]["bip350Address"])
        );
    }
    for input in v["keyPathSpending"][0]["inputSpending"].as_array().unwrap() {
        let key = secp256k1::PrivateKey::from_scalar(&key32(s(&input["given"]["internalPrivkey"])))
            .unwrap();
        let root: Option<[u8; 32]> = input["given"]["merkleRoot"]
            .as_str()
            .map(|r| unhex(r).try_into().unwrap());
        let sighash: [u8; 32] = unhex(s(&input["intermediary"]["sigHash"]))
            .try_into()
            .unwrap();
        let (sig, _) = key.sign_taproot(&sighash, root.as_ref(), &[0; 32]).unwrap();
        let witness = unhex(s(&input["expected"]["witness"][0]));
        assert_eq!(sig[..], witness[..64]);
    }
}

#[test]
fn bip84_and_bip86_addresses() {
    let Some(v) = vectors("bip84-bip86.json") else {
        return;
    };
    let entropy = hd::bip39_entropy(s(&v["bip84"]["mnemonic"])).unwrap();
    let seed = hd::bip39_seed(entropy.expose()).unwrap();
    let m = ExtendedKey::master(Curve::Secp256k1, seed.expose()).unwrap();
    let mut addresses = 0;
    for d in v["bip84"]["derived"].as_array().unwrap() {
        if let Some(addr) = d["address"].as_str() {
            let node = m.derive(&path(s(&d["path"]))).unwrap();
            assert_eq!(kms_crypto::hex(node.public_key()), s(&d["pubkey"]));
            assert_eq!(
                p2wpkh_address(node.public_key(), Network::Mainnet).unwrap(),
                addr
            );
            addresses += 1;
        }
    }
    for d in v["bip86"]["derived"].as_array().unwrap() {
        if let Some(addr) = d["address"].as_str() {
            let node = m.derive(&path(s(&d["path"]))).unwrap();
            assert_eq!(
                kms_crypto::hex(&node.public_key()[1..]),
                s(&d["internal_key"])
            );
            assert_eq!(
                p2tr_address(node.public_key(), Network::Mainnet).unwrap(),
                addr
            );
            addresses += 1;
        }
    }
    assert_eq!(addresses, 6);
}

#[test]
fn eip55_checksums() {
    let Some(v) = vectors("eip55.json") else {
        return;
    };
    for a in v["addresses"].as_array().unwrap() {
        let a = s(a);
        let raw: [u8; 20] = unhex(&a[2..].to_lowercase()).try_into().unwrap();
        assert_eq!(eip55(&raw), a);
    }
}

/// Parses a DER ECDSA signature into `r ‖ s`.
fn der_to_rs(der: &[u8]) -> [u8; 64] {
    assert_eq!(der[0], 0x30);
    let mut out = [0u8; 64];
    let mut at = 2;
    for half in 0..2 {
        assert_eq!(der[at], 0x02);
        let len = usize::from(der[at + 1]);
        let int = &der[at + 2..at + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out[half * 32 + 32 - int.len()..half * 32 + 32].copy_from_slice(int);
        at += 2 + len;
    }
    out
}

#[test]
fn rfc6979_secp256k1_is_what_the_service_signs() {
    let Some(v) = vectors("rfc6979-secp256k1.json") else {
        return;
    };
    for e in v["vectors"].as_array().unwrap() {
        let key = secp256k1::PrivateKey::from_scalar(&key32(s(&e["private_key_hex"]))).unwrap();
        let digest: [u8; 32] = unhex(s(&e["digest_sha256_hex"])).try_into().unwrap();
        let want = unhex(s(&e["signature_der_or_rs_hex"]));
        let want: [u8; 64] = match s(&e["signature_format"]) {
            "rs" => want.try_into().unwrap(),
            _ => der_to_rs(&want),
        };
        let made = key.sign_ecdsa(&digest).unwrap();
        assert_eq!(made.signature, want, "{}", s(&e["message"]));
        assert_eq!(
            secp256k1::recover_ecdsa(&digest, &made.signature, made.recovery_id).unwrap(),
            key.public_key()
        );
    }
}

#[test]
fn rfc8032_ed25519() {
    let Some(v) = vectors("rfc8032-ed25519.json") else {
        return;
    };
    for e in v["vectors"].as_array().unwrap() {
        let key = ed25519::PrivateKey::from_seed(key32(s(&e["secret_key"]))).unwrap();
        assert_eq!(kms_crypto::hex(&key.public_key()), s(&e["public_key"]));
        let msg = unhex(s(&e["message_hex"]));
        assert_eq!(
            kms_crypto::hex(&key.sign(&msg)),
            s(&e["signature"]),
            "{}",
            s(&e["name"])
        );
    }
}
