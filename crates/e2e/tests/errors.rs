//! Every row of docs/protocol.md's error table (401/403 aside, section 6) provoked
//! against the real binaries, with its status and code, nothing stored, and
//! the check order docs/protocol.md states.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kms_client::{generate_key_material, KeyType, KmsClient};
use kms_crypto::hpke::{self, HpkeSecretKey};
use kms_crypto::labels;
use kms_e2e::{post_json, raw, Answer, Deployment};
use kms_protocol::{b64, Id};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UNKNOWN: &str = "00000000-0000-4000-8000-000000000000";

async fn wallet_count(kms: &KmsClient) -> usize {
    kms.list_wallets(None, 1000).await.unwrap().wallets.len()
}

fn fresh_recipient() -> String {
    b64::encode(HpkeSecretKey::generate().unwrap().public_key().as_bytes())
}

/// A P-256 key of the right shape that is not on the curve.
fn off_curve() -> String {
    let mut k = *HpkeSecretKey::generate().unwrap().public_key().as_bytes();
    k[64] ^= 1;
    b64::encode(k)
}

/// Seals `plaintext` to a verified session as a client would.
fn seal_to(session: &kms_client::ImportSession, plaintext: &[u8]) -> String {
    let ct = hpke::seal(
        session.public_key(),
        &hpke::info(labels::IMPORT, session.id()),
        plaintext,
    )
    .unwrap();
    b64::encode(ct.as_bytes())
}

async fn complete(api: &str, session: &Id, body: serde_json::Value) -> Answer {
    post_json(
        &format!("{api}/v1/import-sessions/{session}/complete"),
        &body,
    )
    .await
}

#[tokio::test]
async fn payload_too_large_is_decided_first() {
    let d = Deployment::start(&[]);
    let api = d.api_url();
    let big = vec![b' '; 64 * 1024 + 1];
    // On a real route, an unknown route, and a known route with the wrong method.
    for (method, path) in [
        ("POST", "/v1/import-sessions"),
        ("POST", "/v1/nope"),
        ("PUT", "/v1/health"),
    ] {
        raw(method, &format!("{api}{path}"), Some(big.clone()))
            .await
            .assert_error(413, "payload_too_large");
    }
    // Exactly 64 KiB is read (and is then an empty-ish object: whitespace + {}).
    let mut fits = vec![b' '; 64 * 1024 - 2];
    fits.extend_from_slice(b"{}");
    assert_eq!(
        raw("POST", &format!("{api}/v1/import-sessions"), Some(fits))
            .await
            .status,
        201
    );

    // A chunked body with no declared length is cut off at the limit.
    let addr = api.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("POST /v1/import-sessions HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 8192];
    for _ in 0..9 {
        let _ = s
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = s.write_all(&chunk).await;
        let _ = s.write_all(b"\r\n").await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let resp = String::from_utf8_lossy(&resp);
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("payload_too_large"), "{resp}");
    assert_eq!(wallet_count(&d.client()).await, 0);
}

#[tokio::test]
async fn routes_and_methods() {
    let d = Deployment::start(&[]);
    let api = d.api_url();
    raw("GET", &format!("{api}/v1/nope"), None)
        .await
        .assert_error(404, "not_found");
    raw("GET", &format!("{api}/"), None)
        .await
        .assert_error(404, "not_found");
    raw("GET", &format!("{api}/v1/wallets/{UNKNOWN}/export/x"), None)
        .await
        .assert_error(404, "not_found");
    raw("POST", &format!("{api}/v1/health"), None)
        .await
        .assert_error(405, "method_not_allowed");
    raw("GET", &format!("{api}/v1/import-sessions"), None)
        .await
        .assert_error(405, "method_not_allowed");
    raw("DELETE", &format!("{api}/v1/wallets/{UNKNOWN}"), None)
        .await
        .assert_error(405, "method_not_allowed");
    raw("GET", &format!("{api}/v1/wallets/{UNKNOWN}/export"), None)
        .await
        .assert_error(405, "method_not_allowed");
    // No CORS origin is allowed by default: OPTIONS is 405 like any other missing method.
    raw("OPTIONS", &format!("{api}/v1/wallets"), None)
        .await
        .assert_error(405, "method_not_allowed");
    // HEAD is allowed wherever GET is.
    assert_eq!(
        raw("HEAD", &format!("{api}/v1/health"), None).await.status,
        200
    );
    assert_eq!(
        raw("HEAD", &format!("{api}/v1/wallets"), None).await.status,
        200
    );
}

#[tokio::test]
async fn malformed_requests_are_400_and_store_nothing() {
    let d = Deployment::start(&[]);
    let api = d.api_url();
    let kms = d.client();
    let wallet = kms
        .import(&generate_key_material(KeyType::Raw).unwrap())
        .await
        .unwrap()
        .wallet_id;
    let session = kms.start_import_session().await.unwrap();
    let sid = session.id();
    let sessions = format!("{api}/v1/import-sessions");
    let export = format!("{api}/v1/wallets/{wallet}/export");
    let bad_b64 = [
        "AAAA=", // padding
        "AA+/",  // standard alphabet
        "AB",    // non-zero trailing bits
        "AA AA", // whitespace
    ];

    let cases: Vec<(String, Answer)> = vec![
        ("malformed JSON".into(), raw("POST", &sessions, Some(b"{".to_vec())).await),
        ("top-level array".into(), raw("POST", &sessions, Some(b"[]".to_vec())).await),
        ("nonce too short".into(), post_json(&sessions, &json!({"client_nonce": b64::encode([0u8; 15])})).await),
        ("nonce too long".into(), post_json(&sessions, &json!({"client_nonce": b64::encode([0u8; 65])})).await),
        ("nonce mistyped".into(), post_json(&sessions, &json!({"client_nonce": 5})).await),
        ("duplicate member".into(),
            raw("POST", &sessions, Some(br#"{"client_nonce": null, "client_nonce": null}"#.to_vec())).await),
        ("missing encrypted_key".into(), complete(&api, sid, json!({})).await),
        ("encrypted_key mistyped".into(), complete(&api, sid, json!({"encrypted_key": 81})).await),
        ("encrypted_key under 81 bytes".into(), complete(&api, sid, json!({"encrypted_key": b64::encode([1u8; 80])})).await),
        ("missing recipient".into(), post_json(&export, &json!({})).await),
        ("compressed recipient".into(), post_json(&export, &json!({"recipient_public_key": b64::encode([2u8; 33])})).await),
        ("recipient wrong prefix".into(), post_json(&export, &json!({"recipient_public_key": b64::encode([5u8; 65])})).await),
        ("recipient X >= p".into(), post_json(&export, &json!({"recipient_public_key": b64::encode([{4u8}].iter().chain([0xffu8; 64].iter()).copied().collect::<Vec<_>>())})).await),
        ("recipient off the curve".into(), post_json(&export, &json!({"recipient_public_key": off_curve()})).await),
        ("authorization signature length".into(), post_json(&export, &json!({
            "recipient_public_key": fresh_recipient(),
            "authorization": {"expires_at": 1, "nonce": b64::encode([0u8; 16]), "signature": b64::encode([0u8; 63])}})).await),
        ("authorization nonce length".into(), post_json(&export, &json!({
            "recipient_public_key": fresh_recipient(),
            "authorization": {"expires_at": 1, "nonce": b64::encode([0u8; 8]), "signature": b64::encode([0u8; 64])}})).await),
        ("authorization expires_at fraction".into(), raw("POST", &export, Some(format!(
            r#"{{"recipient_public_key": "{}", "authorization": {{"expires_at": 1.0, "nonce": "{}", "signature": "{}"}}}}"#,
            fresh_recipient(), b64::encode([0u8; 16]), b64::encode([0u8; 64])).into_bytes())).await),
        ("bad id: not a uuid".into(), raw("GET", &format!("{api}/v1/wallets/not-an-id"), None).await),
        ("bad id: braced".into(), raw("GET", &format!("{api}/v1/wallets/{{{wallet}}}"), None).await),
        ("bad id: urn".into(), raw("GET", &format!("{api}/v1/wallets/urn:uuid:{wallet}"), None).await),
        ("bad id: no hyphens".into(), raw("GET", &format!("{api}/v1/wallets/{}", wallet.to_string().replace('-', "")), None).await),
        ("limit 0".into(), raw("GET", &format!("{api}/v1/wallets?limit=0"), None).await),
        ("limit 1001".into(), raw("GET", &format!("{api}/v1/wallets?limit=1001"), None).await),
        ("limit signed".into(), raw("GET", &format!("{api}/v1/wallets?limit=%2B5"), None).await),
        ("limit twice".into(), raw("GET", &format!("{api}/v1/wallets?limit=5&limit=5"), None).await),
        ("after not an id".into(), raw("GET", &format!("{api}/v1/wallets?after=xyz"), None).await),
    ];
    for b in bad_b64 {
        let a = complete(&api, sid, json!({"encrypted_key": b})).await;
        a.assert_error(400, "invalid_request");
    }
    for (what, a) in cases {
        assert_eq!(
            (a.status, a.code()),
            (400, "invalid_request"),
            "{what}: {}",
            a.body
        );
    }
    // Upper-case ids parse in paths.
    assert_eq!(
        raw(
            "GET",
            &format!("{api}/v1/wallets/{}", wallet.to_string().to_uppercase()),
            None
        )
        .await
        .status,
        200
    );
    // Nothing was stored and the session is still usable.
    assert_eq!(wallet_count(&kms).await, 1);
    kms.complete_import(&session, &generate_key_material(KeyType::Raw).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let d = Deployment::start(&[]);
    let api = d.api_url();
    raw("GET", &format!("{api}/v1/wallets/{UNKNOWN}"), None)
        .await
        .assert_error(404, "not_found");
    post_json(
        &format!("{api}/v1/wallets/{UNKNOWN}/export"),
        &json!({"recipient_public_key": fresh_recipient()}),
    )
    .await
    .assert_error(404, "not_found");
    complete(
        &api,
        &Id::parse_json(UNKNOWN).unwrap(),
        json!({"encrypted_key": b64::encode([1u8; 81])}),
    )
    .await
    .assert_error(404, "not_found");
    // `after` need not name an existing wallet.
    assert_eq!(
        raw("GET", &format!("{api}/v1/wallets?after={UNKNOWN}"), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn check_order_follows_protocol_md() {
    let d = Deployment::start(&[]);
    let api = d.api_url();
    let kms = d.client();
    let wallet = kms
        .import(&generate_key_material(KeyType::Secp256k1).unwrap())
        .await
        .unwrap()
        .wallet_id;
    let unknown = Id::parse_json(UNKNOWN).unwrap();
    // A malformed request that names an unknown id is 400.
    complete(&api, &unknown, json!({"encrypted_key": "AAAA="}))
        .await
        .assert_error(400, "invalid_request");
    post_json(
        &format!("{api}/v1/wallets/{UNKNOWN}/export"),
        &json!({"recipient_public_key": "x"}),
    )
    .await
    .assert_error(400, "invalid_request");
    // An off-curve recipient for an unknown wallet is 404; for a known one, 400.
    post_json(
        &format!("{api}/v1/wallets/{UNKNOWN}/export"),
        &json!({"recipient_public_key": off_curve()}),
    )
    .await
    .assert_error(404, "not_found");
    post_json(
        &format!("{api}/v1/wallets/{wallet}/export"),
        &json!({"recipient_public_key": off_curve()}),
    )
    .await
    .assert_error(400, "invalid_request");
    // A used session: bad shape is still 400, a good shape 409.
    let session = kms.start_import_session().await.unwrap();
    kms.complete_import(&session, &generate_key_material(KeyType::Raw).unwrap())
        .await
        .unwrap();
    complete(
        &api,
        session.id(),
        json!({"encrypted_key": b64::encode([1u8; 80])}),
    )
    .await
    .assert_error(400, "invalid_request");
    complete(
        &api,
        session.id(),
        json!({"encrypted_key": b64::encode([1u8; 81])}),
    )
    .await
    .assert_error(409, "session_used");
    // An authorization for a wallet without an owner is checked for shape only, then ignored.
    let recipient = HpkeSecretKey::generate().unwrap();
    let a = post_json(&format!("{api}/v1/wallets/{wallet}/export"), &json!({
        "recipient_public_key": b64::encode(recipient.public_key().as_bytes()),
        "authorization": {"expires_at": 1, "nonce": b64::encode([0u8; 16]), "signature": b64::encode([0u8; 64])}})).await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test]
async fn used_expired_and_undecryptable_sessions() {
    let d = Deployment::start(&["--session-ttl", "2"]);
    let api = d.api_url();
    let kms = d.client();
    let material = generate_key_material(KeyType::Secp256k1).unwrap();

    // 422 decryption_failed: random bytes, an enc off the curve, sealed under another session's info.
    let s = kms.start_import_session().await.unwrap();
    let other = kms.start_import_session().await.unwrap();
    let mut off = vec![4u8; 65];
    off.extend_from_slice(&[0u8; 40]);
    let wrong_info = hpke::seal(
        s.public_key(),
        &hpke::info(labels::IMPORT, other.id()),
        material.to_import_plaintext().expose(),
    )
    .unwrap();
    for ct in [
        b64::encode([9u8; 120]),
        b64::encode(&off),
        b64::encode(wrong_info.as_bytes()),
    ] {
        complete(&api, s.id(), json!({"encrypted_key": ct}))
            .await
            .assert_error(422, "decryption_failed");
    }
    // 422 invalid_key_material: opens, but is not valid key material.
    let n = "_____________________rqu3OavSKA7v9JejNA2QUE"; // secp256k1 n: out of range
    for pt in [
        r#"{"v":2,"key_type":"raw","private_key":"AQ"}"#.to_owned(),
        r#"{"v":1,"key_type":"rsa","private_key":"AQ"}"#.to_owned(),
        r#"{"v":1,"key_type":"raw","private_key":"AQ","extra":1}"#.to_owned(),
        r#"{"v":1,"v":1,"key_type":"raw","private_key":"AQ"}"#.to_owned(),
        r#"{"key_type":"raw","private_key":"AQ"}"#.to_owned(),
        r#"{"v":1,"key_type":"raw","private_key":""}"#.to_owned(),
        r#"{"v":1,"key_type":"ed25519","private_key":"AQ"}"#.to_owned(),
        format!(r#"{{"v":1,"key_type":"secp256k1","private_key":"{n}"}}"#),
        "not json".to_owned(),
        // An owner key that is not a point on P-256.
        format!(
            r#"{{"v":1,"key_type":"raw","private_key":"AQ","owner_public_key":"{}"}}"#,
            off_curve()
        ),
    ] {
        complete(
            &api,
            s.id(),
            json!({"encrypted_key": seal_to(&s, pt.as_bytes())}),
        )
        .await
        .assert_error(422, "invalid_key_material");
    }
    assert_eq!(wallet_count(&kms).await, 0);
    // A 422 leaves the session usable; after completing, it is 409.
    kms.complete_import(&s, &material).await.unwrap();
    complete(
        &api,
        s.id(),
        json!({"encrypted_key": seal_to(&s, material.to_import_plaintext().expose())}),
    )
    .await
    .assert_error(409, "session_used");

    // 410 once expired; a completed session stays 409 after expiry.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    complete(
        &api,
        other.id(),
        json!({"encrypted_key": seal_to(&other, material.to_import_plaintext().expose())}),
    )
    .await
    .assert_error(410, "session_expired");
    complete(
        &api,
        s.id(),
        json!({"encrypted_key": seal_to(&s, material.to_import_plaintext().expose())}),
    )
    .await
    .assert_error(409, "session_used");
    assert_eq!(wallet_count(&kms).await, 1);
}
