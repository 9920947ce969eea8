//! Generate, derive and sign (docs/protocol.md §§7–9) through the two real
//! processes: every key type, every algorithm, every error row of the three
//! sections, owner-bound wallets, the audit records, and durability across
//! `kill -9` of either process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use kms_client::{
    authorize_sign, authorize_sign_for, generate_key_material, Algorithm, ClientError, Curve,
    DerivationPath, KeyType, KmsClient, SigningKey, ToSign,
};
use kms_crypto::{secp256k1, sha256};
use kms_e2e::{post_json, raw, Deployment};
use kms_protocol::audit::{AuditEvent, Digest32};
use kms_protocol::{b64, ErrorCode, Id};
use serde_json::json;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn path(p: &str) -> DerivationPath {
    DerivationPath::parse(p).unwrap()
}

fn code(e: &ClientError) -> (u16, ErrorCode) {
    match e {
        ClientError::Api { status, code, .. } => (*status, *code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn to_sign(algorithm: Algorithm, path: Option<&str>, payload: &[u8]) -> ToSign {
    ToSign {
        algorithm,
        path: path.map(|p| DerivationPath::parse(p).unwrap()),
        payload: payload.to_vec(),
        merkle_root: None,
    }
}

/// Signs with every algorithm the wallet's key type allows, each answer
/// checked by the SDK against the key the test trusts (from the receipt,
/// or from the exported material derived locally).
async fn sign_every_way(kms: &KmsClient, wallet: &Id, key_type: KeyType, public: Option<&[u8]>) {
    let digest = sha256(b"pay 1 BTC to the example address");
    let material = kms.export_to_fresh_key(wallet).await.unwrap();
    let cases: Vec<(Algorithm, Option<&str>)> = match key_type {
        KeyType::Secp256k1 => vec![
            (Algorithm::EcdsaSecp256k1, None),
            (Algorithm::SchnorrSecp256k1, None),
            (Algorithm::SchnorrSecp256k1Taproot, None),
        ],
        KeyType::P256 => vec![(Algorithm::EcdsaP256, None)],
        KeyType::Ed25519 => vec![(Algorithm::Ed25519, None)],
        KeyType::Bip32 => vec![
            (Algorithm::EcdsaSecp256k1, Some("m/44'/60'/0'/0/7")),
            (Algorithm::SchnorrSecp256k1Taproot, Some("m/86'/0'/0'/0/0")),
        ],
        KeyType::Bip39 => vec![
            (Algorithm::EcdsaSecp256k1, Some("m/44'/60'/0'/0/0")),
            (Algorithm::SchnorrSecp256k1, Some("m/86'/0'/0'/0/1")),
            (Algorithm::SchnorrSecp256k1Taproot, Some("m/86'/0'/0'/0/0")),
            (Algorithm::Ed25519, Some("m/44'/501'/0'/0'")),
            (Algorithm::EcdsaP256, Some("m/1'/2/3")),
        ],
        KeyType::Raw => unreachable!(),
    };
    for (algorithm, p) in cases {
        let trusted = match p {
            None => public.unwrap().to_vec(),
            Some(p) => {
                // The derived key the service signs over equals the one
                // derived locally from the exported material.
                let local = material.derive(algorithm.curve(), &path(p)).unwrap();
                let derived = kms
                    .derive(wallet, algorithm.curve(), &path(p))
                    .await
                    .unwrap();
                assert_eq!(derived.public_key.as_bytes(), local.public_key());
                assert_eq!(derived.chain_code.as_bytes(), &local.chain_code());
                local.public_key().to_vec()
            }
        };
        let payload: Vec<u8> = match algorithm {
            Algorithm::Ed25519 => b"an ed25519 message of any length".to_vec(),
            _ => digest.to_vec(),
        };
        let mut what = to_sign(algorithm, p, &payload);
        let resp = kms.sign(wallet, &what, Some(&trusted)).await.unwrap();
        if algorithm == Algorithm::EcdsaSecp256k1 {
            // RFC 6979: the same digest gives the same signature.
            let again = kms.sign(wallet, &what, Some(&trusted)).await.unwrap();
            assert_eq!(resp.signature, again.signature);
            assert!(resp.recovery_id.is_some_and(|id| id <= 1));
            // Low S: libsecp256k1's verifier (used by the SDK) refuses high
            // S; check the bound directly too.
            let mut half = secp256k1::N;
            let mut carry = 0u8;
            for b in half.iter_mut() {
                let next = *b & 1;
                *b = (*b >> 1) | (carry << 7);
                carry = next;
            }
            assert!(resp.signature.as_bytes()[32..] <= half[..]);
        }
        if algorithm == Algorithm::SchnorrSecp256k1Taproot {
            what.merkle_root = Some([0x5a; 32]);
            kms.sign(wallet, &what, Some(&trusted)).await.unwrap();
        }
    }
}

#[tokio::test]
async fn every_key_type_generates_exports_derives_and_signs() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    for key_type in [
        KeyType::Bip39,
        KeyType::Bip32,
        KeyType::Secp256k1,
        KeyType::P256,
        KeyType::Ed25519,
    ] {
        let receipt = kms.generate(key_type, None).await.unwrap();
        assert_eq!(receipt.key_type, key_type);
        // An export opens to valid material of its type whose public key
        // is the one the receipt reported.
        let material = kms.export_to_fresh_key(&receipt.wallet_id).await.unwrap();
        assert_eq!(material.key_type(), key_type);
        assert_eq!(
            material.public_key().unwrap().as_deref(),
            receipt.public_key.as_ref().map(|p| p.as_bytes())
        );
        if key_type == KeyType::Bip39 {
            assert_eq!(material.private_key().len(), 32, "24 words");
        }
        let meta = kms.wallet(&receipt.wallet_id).await.unwrap();
        assert_eq!(meta.key_type, key_type);
        assert_eq!(meta.public_key, receipt.public_key);
        sign_every_way(
            &kms,
            &receipt.wallet_id,
            key_type,
            receipt.public_key.as_ref().map(|p| p.as_bytes()),
        )
        .await;
    }
    // Two generated wallets never share a key.
    let a = kms.generate(KeyType::Secp256k1, None).await.unwrap();
    let b = kms.generate(KeyType::Secp256k1, None).await.unwrap();
    assert_ne!(a.public_key, b.public_key);
}

#[tokio::test]
async fn imported_hd_wallets_derive_as_published() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    // "abandon ×11 about" (all-zero entropy) imported as bip39: BIP-84's
    // first receiving key.
    let m = kms_client::KeyMaterial::new(
        KeyType::Bip39,
        kms_client::SecretBytes::new(vec![0; 16]),
        None,
    )
    .unwrap();
    let w = kms.import(&m).await.unwrap();
    assert_eq!(w.public_key, None);
    let k = kms
        .derive(&w.wallet_id, Curve::Secp256k1, &path("m/84'/0'/0'/0/0"))
        .await
        .unwrap();
    assert_eq!(
        kms_crypto::hex(k.public_key.as_bytes()),
        "0330d54fd0dd420a6e5f8d3624f5f3482cae350f79d5f0753bf5beef9c2d91af3c"
    );
    // The P-256 step docs/protocol.md §8 names, where SLIP-10's retry fires.
    let local = m.derive(Curve::P256, &path("m/0'/1630910482'")).unwrap();
    let k = kms
        .derive(&w.wallet_id, Curve::P256, &path("m/0'/1630910482'"))
        .await
        .unwrap();
    assert_eq!(k.public_key.as_bytes(), local.public_key());

    // bip32: BIP-32 test vector 1's master node.
    let xprv = kms_client::address::base58check_decode(
        "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi",
    )
    .unwrap();
    let m = kms_client::KeyMaterial::new(KeyType::Bip32, kms_client::SecretBytes::new(xprv), None)
        .unwrap();
    let w = kms.import(&m).await.unwrap();
    let k = kms
        .derive(
            &w.wallet_id,
            Curve::Secp256k1,
            &path("m/0'/1/2'/2/1000000000"),
        )
        .await
        .unwrap();
    assert_eq!(
        kms_crypto::hex(k.public_key.as_bytes()),
        "022a471424da5e657499d1ff51cb43c47481a03b1e77f951fe64cec9f5a48f7011"
    );
}

/// The rows of the key-material table for `bip39` and `bip32`: anything
/// else is 422 `invalid_key_material` and stores nothing.
#[tokio::test]
async fn hd_import_rules() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let good = kms_client::address::base58check_decode(
        "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi",
    )
    .unwrap();
    let mut bad: Vec<(KeyType, Vec<u8>)> = vec![
        (KeyType::Bip39, vec![0; 15]),
        (KeyType::Bip39, vec![0; 17]),
        (KeyType::Bip39, vec![0; 33]),
        (KeyType::Bip32, good[..77].to_vec()),
    ];
    let mut edit = |at: usize, bytes: &[u8]| {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        bad.push((KeyType::Bip32, b));
    };
    edit(0, &[0x04, 0x88, 0xb2, 0x1e]); // an xpub version
    edit(5, &[0, 0, 0, 1]); // depth 0 with a parent fingerprint
    edit(9, &[0, 0, 0, 1]); // depth 0 with a child number
    edit(45, &[1]); // not 0x00 before the key
    edit(46, &secp256k1::N); // scalar n
    edit(46, &[0; 32]); // scalar 0
    for (key_type, bytes) in bad {
        let session = kms.start_import_session().await.unwrap();
        let plaintext = format!(
            r#"{{"v":1,"key_type":"{key_type}","private_key":"{}"}}"#,
            b64::encode(&bytes)
        );
        let ct = kms_crypto::hpke::seal(
            session.public_key(),
            &kms_crypto::hpke::info(kms_crypto::labels::IMPORT, session.id()),
            plaintext.as_bytes(),
        )
        .unwrap();
        let r = post_json(
            &format!(
                "{}/v1/import-sessions/{}/complete",
                d.api_url(),
                session.id()
            ),
            &json!({"encrypted_key": b64::encode(ct.as_bytes())}),
        )
        .await;
        r.assert_error(422, "invalid_key_material");
    }
    assert!(kms.list_wallets(None, 10).await.unwrap().wallets.is_empty());
    // testnet tprv and 12–24 word entropies are fine.
    let mut tprv = good.clone();
    tprv[..4].copy_from_slice(&[0x04, 0x35, 0x83, 0x94]);
    let m = kms_client::KeyMaterial::new(KeyType::Bip32, kms_client::SecretBytes::new(tprv), None)
        .unwrap();
    kms.import(&m).await.unwrap();
    // A node at depth 255 imports, but has no child: 422, not a 500.
    let mut deep = good.clone();
    deep[4] = 255;
    deep[5..9].copy_from_slice(&[1, 2, 3, 4]);
    let m = kms_client::KeyMaterial::new(KeyType::Bip32, kms_client::SecretBytes::new(deep), None)
        .unwrap();
    let w = kms.import(&m).await.unwrap().wallet_id;
    post_json(
        &format!("{}/v1/wallets/{w}/derive", d.api_url()),
        &json!({"curve": "secp256k1", "path": "m/0"}),
    )
    .await
    .assert_error(422, "unsupported_operation");
    for len in [16, 20, 24, 28, 32] {
        let m = kms_client::KeyMaterial::new(
            KeyType::Bip39,
            kms_client::SecretBytes::new(vec![7; len]),
            None,
        )
        .unwrap();
        kms.import(&m).await.unwrap();
    }
}

#[tokio::test]
async fn every_error_row_of_generate_derive_and_sign() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let api = d.api_url();
    let hd = kms.generate(KeyType::Bip39, None).await.unwrap().wallet_id;
    let xprv = kms.generate(KeyType::Bip32, None).await.unwrap().wallet_id;
    let k1 = kms
        .generate(KeyType::Secp256k1, None)
        .await
        .unwrap()
        .wallet_id;
    let ed = kms
        .generate(KeyType::Ed25519, None)
        .await
        .unwrap()
        .wallet_id;
    let raw_wallet = kms
        .import(&generate_key_material(KeyType::Raw).unwrap())
        .await
        .unwrap()
        .wallet_id;
    let before = kms.list_wallets(None, 100).await.unwrap().wallets.len();
    let unknown = Id::from_bytes([9; 16]);
    let owner = SigningKey::generate().unwrap();
    let mut off_curve = *owner.public_key().as_bytes();
    off_curve[64] ^= 1;

    // §7: raw, unknown, missing or mistyped key_type; bad owner keys and nonces.
    for body in [
        json!({"key_type": "raw"}),
        json!({"key_type": "rsa"}),
        json!({}),
        json!({"key_type": 1}),
        json!({"key_type": "secp256k1", "owner_public_key": b64::encode([4u8; 33])}),
        json!({"key_type": "secp256k1", "owner_public_key": b64::encode(off_curve)}),
        json!({"key_type": "secp256k1", "client_nonce": b64::encode([1u8; 15])}),
        json!({"key_type": "secp256k1", "client_nonce": b64::encode([1u8; 65])}),
    ] {
        post_json(&format!("{api}/v1/wallets"), &body)
            .await
            .assert_error(400, "invalid_request");
    }
    let gen = raw(
        "POST",
        &format!("{api}/v1/wallets"),
        Some(b"{\"key_type\":\"p256\",\"x\":\"\xff\xfe\"}".to_vec()),
    )
    .await;
    gen.assert_error(400, "invalid_request");

    // §8: bad paths and curves are 400; before the wallet is looked up.
    let derive = |id: Id, body: serde_json::Value| {
        let url = format!("{api}/v1/wallets/{id}/derive");
        async move { post_json(&url, &body).await }
    };
    let seventeen = format!("m{}", "/0'".repeat(17));
    for p in [
        "",
        "m/",
        "M/0",
        "m/01",
        "m/0h",
        "m/0H",
        "m/+1",
        "m/ 1",
        "m/1''",
        "m/2147483648",
        "44'/0",
        "m/0’",
        &seventeen,
    ] {
        derive(hd, json!({"curve": "secp256k1", "path": p}))
            .await
            .assert_error(400, "invalid_request");
        derive(unknown, json!({"curve": "secp256k1", "path": p}))
            .await
            .assert_error(400, "invalid_request");
    }
    derive(hd, json!({"curve": "ed448", "path": "m"}))
        .await
        .assert_error(400, "invalid_request");
    derive(hd, json!({"path": "m"}))
        .await
        .assert_error(400, "invalid_request");
    derive(unknown, json!({"curve": "secp256k1", "path": "m/0"}))
        .await
        .assert_error(404, "not_found");
    let r = post_json(
        &format!("{api}/v1/wallets/not-an-id/derive"),
        &json!({"curve": "secp256k1", "path": "m/0"}),
    )
    .await;
    r.assert_error(400, "invalid_request");
    // 422: single-key and raw wallets, a normal ed25519 step, a curve the
    // wallet lacks.
    for (id, curve, p) in [
        (k1, "secp256k1", "m/0"),
        (raw_wallet, "secp256k1", "m/0"),
        (ed, "ed25519", "m/0'"),
        (hd, "ed25519", "m/0'/1"),
        (xprv, "p256", "m/0"),
        (xprv, "ed25519", "m/0'"),
    ] {
        derive(id, json!({"curve": curve, "path": p}))
            .await
            .assert_error(422, "unsupported_operation");
    }
    // The longest path there is derives.
    let sixteen = format!("m{}", "/2147483647'".repeat(16));
    assert_eq!(
        derive(hd, json!({"curve": "ed25519", "path": sixteen}))
            .await
            .status,
        200
    );

    // §9.
    let sign = |id: Id, body: serde_json::Value| {
        let url = format!("{api}/v1/wallets/{id}/sign");
        async move { post_json(&url, &body).await }
    };
    let d32 = b64::encode([3u8; 32]);
    for body in [
        json!({"algorithm": "ecdsa-secp256k2", "payload": d32}),
        json!({"payload": d32}),
        json!({"algorithm": "ecdsa-secp256k1"}),
        json!({"algorithm": "ecdsa-secp256k1", "payload": b64::encode([3u8; 31])}),
        json!({"algorithm": "ecdsa-secp256k1", "payload": b64::encode([3u8; 33])}),
        json!({"algorithm": "schnorr-secp256k1", "payload": ""}),
        json!({"algorithm": "ecdsa-p256", "payload": b64::encode([3u8; 64])}),
        json!({"algorithm": "ed25519", "payload": ""}),
        json!({"algorithm": "ed25519", "payload": b64::encode(vec![1u8; 32 * 1024 + 1])}),
        json!({"algorithm": "schnorr-secp256k1-taproot", "payload": d32, "merkle_root": b64::encode([1u8; 31])}),
        json!({"algorithm": "schnorr-secp256k1-taproot", "payload": d32, "merkle_root": ""}),
        json!({"algorithm": "ecdsa-secp256k1", "payload": d32, "path": "m/0h"}),
        json!({"algorithm": "ecdsa-secp256k1", "payload": "AA=="}),
    ] {
        sign(k1, body.clone())
            .await
            .assert_error(400, "invalid_request");
        sign(unknown, body)
            .await
            .assert_error(400, "invalid_request");
    }
    sign(
        unknown,
        json!({"algorithm": "ecdsa-secp256k1", "payload": d32}),
    )
    .await
    .assert_error(404, "not_found");
    for (id, body) in [
        (
            raw_wallet,
            json!({"algorithm": "ecdsa-secp256k1", "payload": d32}),
        ),
        (k1, json!({"algorithm": "ecdsa-p256", "payload": d32})),
        (k1, json!({"algorithm": "ed25519", "payload": d32})),
        (ed, json!({"algorithm": "ecdsa-secp256k1", "payload": d32})),
        (
            k1,
            json!({"algorithm": "ecdsa-secp256k1", "payload": d32, "path": "m/0"}),
        ),
        (hd, json!({"algorithm": "ecdsa-secp256k1", "payload": d32})),
        (
            hd,
            json!({"algorithm": "ed25519", "payload": d32, "path": "m/0'/1"}),
        ),
        (
            xprv,
            json!({"algorithm": "ecdsa-p256", "payload": d32, "path": "m/0"}),
        ),
        (
            xprv,
            json!({"algorithm": "ed25519", "payload": d32, "path": "m/0'"}),
        ),
    ] {
        sign(id, body)
            .await
            .assert_error(422, "unsupported_operation");
    }
    // merkle_root is read for taproot only: with ECDSA, anything there is
    // ignored; `null` path counts as absent on a single-key wallet.
    let ok = sign(
        k1,
        json!({"algorithm": "ecdsa-secp256k1", "payload": d32, "merkle_root": "not base64!", "path": null}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["recovery_id"].as_u64().map(|v| v <= 1), Some(true));
    let ok = sign(
        k1,
        json!({"algorithm": "schnorr-secp256k1-taproot", "payload": d32, "merkle_root": null}),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert!(ok.body["recovery_id"].is_null());
    // An authorization sent for a wallet without an owner is checked for
    // shape only.
    let shape_only = json!({"algorithm": "ecdsa-secp256k1", "payload": d32,
        "authorization": {"expires_at": 1, "nonce": b64::encode([0u8; 16]), "signature": b64::encode([0u8; 64])}});
    assert_eq!(sign(k1, shape_only).await.status, 200);
    let bad_shape = json!({"algorithm": "ecdsa-secp256k1", "payload": d32,
        "authorization": {"expires_at": 1, "nonce": b64::encode([0u8; 15]), "signature": b64::encode([0u8; 64])}});
    sign(k1, bad_shape)
        .await
        .assert_error(400, "invalid_request");
    // Invalid UTF-8 in an ignored member, on every new route.
    for url in [
        format!("{api}/v1/wallets/{k1}/sign"),
        format!("{api}/v1/wallets/{hd}/derive"),
        format!("{api}/v1/import-sessions"),
    ] {
        raw("POST", &url, Some(b"{\"x\":\"\xff\xfe\"}".to_vec()))
            .await
            .assert_error(400, "invalid_request");
    }
    // Nothing above made a wallet.
    assert_eq!(
        kms.list_wallets(None, 100).await.unwrap().wallets.len(),
        before
    );
}

#[tokio::test]
async fn owner_bound_wallets_sign_only_with_the_owners_signature() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let owner = SigningKey::generate().unwrap();
    let receipt = kms
        .generate(KeyType::Bip39, Some(*owner.public_key()))
        .await
        .unwrap();
    assert_eq!(receipt.owner_public_key.as_ref(), Some(owner.public_key()));
    let w = receipt.wallet_id;
    // Public keys need no authorization.
    let key = kms
        .derive(&w, Curve::Secp256k1, &path("m/44'/60'/0'/0/0"))
        .await
        .unwrap();
    let what = to_sign(
        Algorithm::EcdsaSecp256k1,
        Some("m/44'/60'/0'/0/0"),
        &sha256(b"tx"),
    );
    assert_eq!(
        code(&kms.sign(&w, &what, None).await.unwrap_err()),
        (401, ErrorCode::AuthorizationRequired)
    );
    let stranger = SigningKey::generate().unwrap();
    let other_payload = to_sign(
        Algorithm::EcdsaSecp256k1,
        Some("m/44'/60'/0'/0/0"),
        &sha256(b"another tx"),
    );
    let other_path = to_sign(
        Algorithm::EcdsaSecp256k1,
        Some("m/44'/60'/0'/0/1"),
        &sha256(b"tx"),
    );
    for auth in [
        authorize_sign(&stranger, &w, &what, now() + 60).unwrap(),
        authorize_sign(&owner, &w, &what, now() - 1).unwrap(),
        authorize_sign(&owner, &w, &what, now()).unwrap(),
        authorize_sign(&owner, &w, &what, now() + 400).unwrap(),
        authorize_sign(&owner, &w, &other_payload, now() + 60).unwrap(),
        authorize_sign(&owner, &w, &other_path, now() + 60).unwrap(),
        authorize_sign(&owner, &Id::from_bytes([1; 16]), &what, now() + 60).unwrap(),
    ] {
        assert_eq!(
            code(
                &kms.sign_authorized(&w, &what, Some(auth), None)
                    .await
                    .unwrap_err()
            ),
            (403, ErrorCode::AuthorizationFailed)
        );
    }
    let auth = authorize_sign_for(&owner, &w, &what, 60).unwrap();
    let signed = kms
        .sign_authorized(
            &w,
            &what,
            Some(auth.clone()),
            Some(key.public_key.as_bytes()),
        )
        .await
        .unwrap();
    // A captured authorization replays only the same request, until it expires.
    kms.sign_authorized(&w, &what, Some(auth), None)
        .await
        .unwrap();
    assert_eq!(signed.path, Some(path("m/44'/60'/0'/0/0")));

    // The taproot merkle root is part of what the owner signs.
    let mut tap = to_sign(
        Algorithm::SchnorrSecp256k1Taproot,
        Some("m/86'/0'/0'/0/0"),
        &sha256(b"sighash"),
    );
    tap.merkle_root = Some([1; 32]);
    let auth = authorize_sign_for(&owner, &w, &tap, 60).unwrap();
    tap.merkle_root = Some([2; 32]);
    assert_eq!(
        code(
            &kms.sign_authorized(&w, &tap, Some(auth), None)
                .await
                .unwrap_err()
        ),
        (403, ErrorCode::AuthorizationFailed)
    );

    // Checks run in order: an owner-bound raw wallet is 401 without the
    // owner's signature, and only with it 422.
    let raw_owned = generate_key_material(KeyType::Raw)
        .unwrap()
        .with_owner(*owner.public_key())
        .unwrap();
    let rw = kms.import(&raw_owned).await.unwrap().wallet_id;
    let what = to_sign(Algorithm::EcdsaSecp256k1, None, &sha256(b"x"));
    assert_eq!(
        code(&kms.sign(&rw, &what, None).await.unwrap_err()),
        (401, ErrorCode::AuthorizationRequired)
    );
    let auth = authorize_sign_for(&owner, &rw, &what, 60).unwrap();
    assert_eq!(
        code(
            &kms.sign_authorized(&rw, &what, Some(auth), None)
                .await
                .unwrap_err()
        ),
        (422, ErrorCode::UnsupportedOperation)
    );
}

#[tokio::test]
async fn every_operation_is_in_the_audit_log() {
    let d = Deployment::start(&[]);
    let kms = d.client();
    let w = kms.generate(KeyType::Bip39, None).await.unwrap().wallet_id;
    kms.derive(&w, Curve::P256, &path("m/1'/2")).await.unwrap();
    let payload = sha256(b"audited");
    let what = to_sign(Algorithm::EcdsaSecp256k1, Some("m/0/1"), &payload);
    kms.sign(&w, &what, None).await.unwrap();
    let refused = to_sign(Algorithm::EcdsaSecp256k1, None, &payload);
    kms.sign(&w, &refused, None).await.unwrap_err();

    let records = d.audit_chain(5).await;
    let generated = records
        .iter()
        .find(|r| r.event == AuditEvent::WalletGenerated)
        .unwrap();
    assert_eq!(generated.wallet_id, Some(w));
    assert_eq!(generated.key_type, Some(KeyType::Bip39));
    let derived = records
        .iter()
        .find(|r| r.event == AuditEvent::KeyDerived)
        .unwrap();
    assert_eq!(
        (derived.curve, derived.path, derived.outcome.as_str()),
        (Some(Curve::P256), Some(path("m/1'/2")), "ok")
    );
    let signs: Vec<_> = records
        .iter()
        .filter(|r| r.event == AuditEvent::Sign)
        .collect();
    assert_eq!(signs.len(), 2);
    assert_eq!(signs[0].outcome, "ok");
    assert_eq!(signs[0].algorithm, Some(Algorithm::EcdsaSecp256k1));
    assert_eq!(signs[0].path, Some(path("m/0/1")));
    assert_eq!(signs[0].payload_sha256, Some(Digest32(sha256(&payload))));
    assert_eq!(signs[1].outcome, "unsupported_operation");
    let (ok, out) = d.verify_audit_export(&kms_e2e::jsonl(&records));
    assert!(ok, "{out}");
}

/// An acknowledged generate survives `kill -9` of either process, and the
/// wallet still signs with the same key afterwards.
#[tokio::test]
async fn generated_wallets_survive_kill_9() {
    let mut d = Deployment::start(&[]);
    let receipt = d.client().generate(KeyType::Secp256k1, None).await.unwrap();
    let hd = d.client().generate(KeyType::Bip39, None).await.unwrap();
    let before = d
        .client()
        .derive(&hd.wallet_id, Curve::Secp256k1, &path("m/0"))
        .await
        .unwrap();
    d.stop_api();
    d.start_api();
    d.stop_se();
    d.start_se();
    let kms = d.client();
    let what = to_sign(Algorithm::EcdsaSecp256k1, None, &sha256(b"after the crash"));
    kms.sign(
        &receipt.wallet_id,
        &what,
        Some(receipt.public_key.as_ref().unwrap().as_bytes()),
    )
    .await
    .unwrap();
    let after = kms
        .derive(&hd.wallet_id, Curve::Secp256k1, &path("m/0"))
        .await
        .unwrap();
    assert_eq!(before.public_key, after.public_key);
    // Both processes killed together.
    let third = kms.generate(KeyType::Ed25519, None).await.unwrap();
    d.stop_api();
    d.stop_se();
    d.start_se();
    d.start_api();
    let meta = d.client().wallet(&third.wallet_id).await.unwrap();
    assert_eq!(meta.public_key, third.public_key);
}
