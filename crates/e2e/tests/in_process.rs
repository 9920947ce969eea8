//! Both routers in-process (`tower::ServiceExt::oneshot`, axum's testing
//! pattern), with clocks the test moves, so expiry is checked at its exact
//! boundary without sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kms_api::relay::SecureEnvClient;
use kms_api::AppState;
use kms_client::{generate_key_material, KeyType};
use kms_crypto::keyset::KeySet;
use kms_protocol::api::ImportEnvelope;
use kms_protocol::internal::Import;
use kms_protocol::{b64, HpkeCiphertext};
use secure_runtime::audit::AuditLog;
use secure_runtime::SecureRuntime;
use serde_json::{json, Value};
use tower::ServiceExt;

const T0: u64 = 1_800_000_000;
const TTL: u64 = 600;

struct Harness {
    api: axum::Router,
    runtime: SecureRuntime,
    api_clock: Arc<AtomicU64>,
    se_clock: Arc<AtomicU64>,
    identity: kms_protocol::P256PublicKey,
    _dir: tempfile::TempDir,
}

fn clock(c: &Arc<AtomicU64>) -> Arc<dyn Fn() -> u64 + Send + Sync> {
    let c = c.clone();
    Arc::new(move || c.load(Ordering::SeqCst))
}

async fn harness() -> Harness {
    let se_clock = Arc::new(AtomicU64::new(T0));
    let api_clock = Arc::new(AtomicU64::new(T0));
    let keys = KeySet::generate().unwrap();
    let identity = *keys.identity().public_key();
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::open(&dir.path().join("audit.log"), &identity, true).unwrap();
    let runtime = SecureRuntime::new(keys, audit, TTL, "00".repeat(32), clock(&se_clock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let se_url = format!("http://{}", listener.local_addr().unwrap());
    let se_app = secure_environment::server::app(runtime.clone());
    tokio::spawn(async move { axum::serve(listener, se_app).await.unwrap() });
    let store = kms_store::open(&format!(
        "sqlite://{}",
        dir.path().join("kms.sqlite").display()
    ))
    .await
    .unwrap();
    let state = AppState {
        store,
        env: SecureEnvClient::new(&se_url).unwrap(),
        clock: clock(&api_clock),
    };
    Harness {
        api: kms_api::app(state),
        runtime,
        api_clock,
        se_clock,
        identity,
        _dir: dir,
    }
}

impl Harness {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body
            .map(|b| Body::from(serde_json::to_vec(&b).unwrap()))
            .unwrap_or_else(Body::empty);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(body)
            .unwrap();
        let resp = self.api.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn set_time(&self, t: u64) {
        self.api_clock.store(t, Ordering::SeqCst);
        self.se_clock.store(t, Ordering::SeqCst);
    }

    /// Starts a session and returns its envelope and a valid `encrypted_key` for it.
    async fn session_with_ciphertext(&self) -> (ImportEnvelope, String) {
        let (status, body) = self.call("POST", "/v1/import-sessions", None).await;
        assert_eq!(status, StatusCode::CREATED);
        let env: ImportEnvelope = serde_json::from_value(body).unwrap();
        // The SDK would refuse this session by its own (real) clock, which is
        // behind the test clock; check the proof by hand instead.
        let msg = kms_crypto::messages::session_proof(
            &env.session_id,
            &env.session_public_key,
            env.expires_at,
            None,
        );
        kms_crypto::sign::verify(&self.identity, &msg, &env.proof.signature).unwrap();
        let m = generate_key_material(KeyType::Secp256k1).unwrap();
        let ct = kms_crypto::hpke::seal(
            &env.session_public_key,
            &kms_crypto::hpke::info(kms_crypto::labels::IMPORT, &env.session_id),
            m.to_import_plaintext().expose(),
        )
        .unwrap();
        (env, b64::encode(ct.as_bytes()))
    }
}

#[tokio::test]
async fn expiry_is_exclusive_at_expires_at() {
    let h = harness().await;
    let (env, ct) = h.session_with_ciphertext().await;
    assert_eq!(env.expires_at, T0 + TTL);
    let path = format!("/v1/import-sessions/{}/complete", env.session_id);
    // Valid while now < expires_at: at expires_at it is 410.
    h.set_time(env.expires_at);
    let (status, body) = h
        .call("POST", &path, Some(json!({"encrypted_key": ct})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::GONE, Some("session_expired"))
    );
    h.set_time(env.expires_at - 1);
    let (status, _) = h
        .call("POST", &path, Some(json!({"encrypted_key": ct})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Completed and expired: 409 wins, for at least a day.
    h.set_time(env.expires_at + 86_000);
    let (status, body) = h
        .call("POST", &path, Some(json!({"encrypted_key": ct})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("session_used"))
    );
}

#[tokio::test]
async fn the_secure_environment_enforces_expiry_itself() {
    // A relay whose clock lags (or lies) cannot stretch a session.
    let h = harness().await;
    let (env, ct) = h.session_with_ciphertext().await;
    h.se_clock.store(env.expires_at, Ordering::SeqCst);
    let path = format!("/v1/import-sessions/{}/complete", env.session_id);
    let (status, body) = h
        .call("POST", &path, Some(json!({"encrypted_key": ct})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::GONE, Some("session_expired"))
    );
    let (_, page) = h.call("GET", "/v1/wallets", None).await;
    assert_eq!(page["wallets"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn the_secure_environment_remembers_completed_sessions() {
    // A relay that forgets single use is still refused by the same instance.
    let h = harness().await;
    let started = h
        .runtime
        .trusted_env_exec(|env| env.start_session(None))
        .unwrap();
    let m = generate_key_material(KeyType::Raw).unwrap();
    let e = &started.envelope;
    let ct = kms_crypto::hpke::seal(
        &e.session_public_key,
        &kms_crypto::hpke::info(kms_crypto::labels::IMPORT, &e.session_id),
        m.to_import_plaintext().expose(),
    )
    .unwrap();
    let req = Import {
        session_id: e.session_id,
        expires_at: e.expires_at,
        sealed_state: started.sealed_state.clone(),
        encrypted_key: HpkeCiphertext::from_bytes(ct.as_bytes().to_vec()).unwrap(),
    };
    h.runtime.trusted_env_exec(|env| env.import(&req)).unwrap();
    let again = h
        .runtime
        .trusted_env_exec(|env| env.import(&req))
        .unwrap_err();
    assert!(
        matches!(again.error, secure_runtime::EnvError::SessionUsed),
        "{again:?}"
    );
    // Unrelated sessions are unaffected.
    assert!(h
        .runtime
        .trusted_env_exec(|env| env.start_session(None))
        .is_ok());
}

#[tokio::test]
async fn the_secure_environment_routes_answer_in_the_error_format() {
    let keys = KeySet::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::open(
        &dir.path().join("audit.log"),
        keys.identity().public_key(),
        true,
    )
    .unwrap();
    let runtime = SecureRuntime::new(
        keys,
        audit,
        TTL,
        String::new(),
        secure_runtime::runtime::system_clock(),
    );
    let app = secure_environment::server::app(runtime);
    for (method, path, status, code) in [
        ("GET", "/nope", 404, "not_found"),
        ("GET", "/internal/v1/import", 405, "method_not_allowed"),
        ("POST", "/internal/v1/import", 400, "invalid_request"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from("{"))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
        let body: Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["error"]["code"], code);
    }
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let h = harness().await;
    let (status, doc) = h.call("GET", "/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "/v1/health",
        "/v1/attestation",
        "/v1/import-sessions",
        "/v1/import-sessions/{session_id}/complete",
        "/v1/wallets",
        "/v1/wallets/{wallet_id}",
        "/v1/wallets/{wallet_id}/export",
        "/v1/audit",
        "/v1/openapi.json",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    // The byte types carry docs/protocol.md's exact shapes.
    let key = &doc["components"]["schemas"]["P256PublicKey"]["pattern"];
    assert!(key.as_str().unwrap().starts_with("^B[A-P]"), "{key}");
}
