//! The key provider for BitGo's Advanced Wallet Manager (docs/bitgo.md),
//! end to end through both real processes: HTTPS to kms-api's
//! `--bitgo-listen`, relayed as TCP to the secure environment where TLS
//! ends, with client certificates from a test CA.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kms_crypto::hd::{self, ExtendedKey};
use kms_crypto::{base58, rng, secp256k1};
use kms_e2e::Deployment;
use kms_protocol::audit::AuditEvent;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use serde_json::{json, Value};

/// A CA, the server's certificate from it, and client certificates from
/// it and from a second, foreign CA; all as PEM files in `dir`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        let make_ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = p.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(p, key))
        };
        let leaf = |issuer: &Issuer<'_, KeyPair>, names: Vec<String>, usage| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, "leaf");
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (ca_pem, ca) = make_ca("test CA");
        write("ca.pem", &ca_pem);
        write("ca.key", &ca.key().serialize_pem());
        let (cert, key) = leaf(
            &ca,
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        write("server.pem", &cert);
        write("server.key", &key);
        let (cert, key) = leaf(&ca, vec!["awm".into()], ExtendedKeyUsagePurpose::ClientAuth);
        write("client.pem", &format!("{cert}{key}"));
        write("client.crt", &cert);
        write("client.key", &key);
        let (_, foreign) = make_ca("foreign CA");
        let (cert, key) = leaf(
            &foreign,
            vec!["awm".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        write("foreign-client.pem", &format!("{cert}{key}"));
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// An HTTPS client trusting the test CA, with `identity` (a PEM file
    /// with a certificate and its key) if given.
    fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.read("ca.pem")).unwrap()])
            // As BitGo's manager does: a new connection for every request.
            .pool_max_idle_per_host(0);
        if let Some(name) = identity {
            b = b.identity(reqwest::Identity::from_pem(&self.read(name)).unwrap());
        }
        b.build().unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Both servers with the key provider on, and the URL BitGo's manager
/// would be given as KEY_PROVIDER_URL.
struct Provider {
    d: Deployment,
    pki: Pki,
    url: String,
    se_args: Vec<String>,
}

fn start(pki: Pki) -> Provider {
    let (se_bitgo, internal) = (free_port(), free_port());
    let se_args: Vec<String> = [
        "--bitgo-listen".to_owned(),
        format!("127.0.0.1:{se_bitgo}"),
        "--bitgo-tls-cert".to_owned(),
        pki.path("server.pem").display().to_string(),
        "--bitgo-tls-key".to_owned(),
        pki.path("server.key").display().to_string(),
        "--bitgo-client-ca".to_owned(),
        pki.path("ca.pem").display().to_string(),
        "--kms-api-url".to_owned(),
        format!("http://127.0.0.1:{internal}"),
    ]
    .into();
    let internal_listen = format!("127.0.0.1:{internal}");
    let upstream = format!("127.0.0.1:{se_bitgo}");
    let se: Vec<&str> = se_args.iter().map(String::as_str).collect();
    let d = Deployment::start_with(
        &se,
        &[
            "--internal-listen",
            &internal_listen,
            "--bitgo-listen",
            "127.0.0.1:0",
            "--bitgo-upstream",
            &upstream,
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    // kms-api prints its admin address before the relay's.
    let _ = d.admin_url();
    let relay = d.api.as_ref().unwrap().line_after("bitgo listening on ");
    let url = format!("https://{relay}");
    Provider {
        d,
        pki,
        url,
        se_args,
    }
}

impl Provider {
    fn client(&self) -> reqwest::Client {
        self.pki.client(Some("client.pem"))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client()
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        answer(r).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        answer(r).await
    }

    async fn raw_post(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        answer(r).await
    }

    /// Restarts both processes after SIGKILL; the relay's port changes.
    fn restart(&mut self) {
        self.d.stop_api();
        self.d.stop_se();
        let se: Vec<&str> = self.se_args.iter().map(String::as_str).collect();
        self.d.set_se_args(&se);
        self.d.start_se();
        self.d.start_api();
        let _ = self.d.admin_url();
        let relay = self
            .d
            .api
            .as_ref()
            .unwrap()
            .line_after("bitgo listening on ");
        self.url = format!("https://{relay}");
    }
}

/// Status and JSON body; every answer, errors too, is application/json.
async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        content_type.as_deref(),
        Some("application/json"),
        "status {status}"
    );
    let body: Value = r.json().await.unwrap();
    if status >= 400 {
        assert!(body["message"].is_string(), "{body}");
    }
    (status, body)
}

/// A BitGo-style independent key pair: an xprv and its xpub.
fn key_pair() -> (String, String) {
    let raw = hd::generate_bip32(&mut rng::SystemRng).unwrap();
    let node = ExtendedKey::from_bip32(raw.expose()).unwrap();
    let xpub = base58::encode(&node.to_bip32_public(hd::VERSION_XPUB).unwrap());
    (base58::encode(raw.expose()), xpub)
}

/// The compressed public key inside an xpub.
fn xpub_key(xpub: &str) -> [u8; 33] {
    base58::decode(xpub).unwrap().expose()[45..78]
        .try_into()
        .unwrap()
}

fn store_body(prv: &str, public: &str, source: &str) -> Value {
    json!({"prv": prv, "pub": public, "coin": "tbtc", "source": source, "type": "independent"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitgo_key_provider_over_mtls() {
    let mut p = start(Pki::new());

    // Keys: stored, fetched, unique per (pub, source).
    let (xprv, xpub) = key_pair();
    let (status, body) = p.post("/key", &store_body(&xprv, &xpub, "user")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"pub": xpub, "coin": "tbtc", "source": "user", "type": "independent"})
    );
    let (status, body) = p.post("/key", &store_body(&xprv, &xpub, "user")).await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = p.post("/key", &store_body(&xprv, &xpub, "backup")).await;
    assert_eq!(status, 200);
    let (status, body) = p.get(&format!("/key/{xpub}?source=user")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"pub": xpub, "prv": xprv, "source": "user", "type": "independent"})
    );

    // An independent key's prv must be its pub's.
    let (other_prv, _) = key_pair();
    let (status, body) = p.post("/key", &store_body(&other_prv, &xpub, "user")).await;
    assert_eq!(status, 400, "{body}");
    let (other_prv2, other_pub2) = key_pair();
    let (status, _) = p
        .post("/key", &store_body(&other_prv, &other_pub2, "user"))
        .await;
    assert_eq!(status, 400);
    let (status, _) = p.get(&format!("/key/{other_pub2}?source=user")).await;
    assert_eq!(status, 404, "a refused store keeps nothing");
    let _ = other_prv2;

    // A tss share is opaque and can be tens of KiB.
    let share: String = (0..40_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let common = "03".to_owned() + &"ab".repeat(64);
    let (status, _) = p
        .post(
            "/key",
            &json!({"prv": share, "pub": common, "coin": "tsol", "source": "backup", "type": "tss"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = p.get(&format!("/key/{common}?source=backup")).await;
    assert_eq!(status, 200);
    assert_eq!(body["prv"], share);
    assert_eq!(body["type"], "tss");

    // Lookups that break the contract.
    for path in [
        format!("/key/{xpub}"),
        format!("/key/{xpub}?source="),
        format!("/key/{xpub}?source=bitgo"),
    ] {
        let (status, body) = p.get(&path).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (status, _) = p.get("/key/xpub-unknown?source=user").await;
    assert_eq!(status, 404);

    // Every malformed body is a 400 with a message, and changes nothing.
    for bad in [
        json!({}),
        json!({"prv": xprv, "pub": xpub, "coin": "tbtc", "source": "user"}),
        json!({"prv": xprv, "pub": xpub, "coin": 1, "source": "user", "type": "independent"}),
        json!({"prv": "", "pub": "x", "coin": "tbtc", "source": "user", "type": "tss"}),
        json!({"prv": "p", "pub": "x", "coin": "tbtc", "source": "bitgo", "type": "tss"}),
        json!({"prv": "p", "pub": "x", "coin": "tbtc", "source": "user", "type": "enclaved"}),
        json!([]),
    ] {
        let (status, body) = p.post("/key", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    for raw in [
        b"not json".to_vec(),
        b"{\"x\":\"\xff\xfe\"}".to_vec(),
        Vec::new(),
    ] {
        for path in [
            "/key",
            "/sign",
            "/generateDataKey",
            "/decryptDataKey",
            "/key/generate",
        ] {
            let (status, _) = p.raw_post(path, raw.clone()).await;
            assert_eq!(status, 400, "{path} {raw:?}");
        }
    }
    let (status, _) = p.get("/nowhere").await;
    assert_eq!(status, 404);

    // Generate and sign: an Ethereum operation hash, by the xpub's own key.
    let (status, made) = p
        .post(
            "/key/generate",
            &json!({"coin": "hteth", "source": "user", "type": "independent"}),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    let made_pub = made["pub"].as_str().unwrap().to_owned();
    assert!(made_pub.starts_with("xpub"), "{made}");
    assert_eq!(made["coin"], "hteth");
    let digest = kms_crypto::sha256(b"an operation hash");
    let payload = format!("0x{}", kms_crypto::hex(&digest));
    let (status, signed) = p
        .post(
            "/sign",
            &json!({"pub": made_pub, "source": "user", "algorithm": "ecdsa", "signablePayload": payload}),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    let sig = signed["signature"].as_str().unwrap();
    assert_eq!(sig.len(), 132, "{sig}");
    let bytes: Vec<u8> = (0..65)
        .map(|i| u8::from_str_radix(&sig[2 + 2 * i..4 + 2 * i], 16).unwrap())
        .collect();
    let v = bytes[64];
    assert!(v == 27 || v == 28, "v = {v}");
    let rs: [u8; 64] = bytes[..64].try_into().unwrap();
    let recovered = secp256k1::recover_ecdsa(&digest, &rs, v - 27).unwrap();
    assert_eq!(recovered, xpub_key(&made_pub));
    // Low S: s ≤ n/2.
    let half_n = hex32("7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0");
    assert!(rs[32..] <= half_n[..], "high S");
    // A generated key can be fetched like a stored one, and is the xpub's.
    let (status, fetched) = p.get(&format!("/key/{made_pub}?source=user")).await;
    assert_eq!(status, 200);
    let node = ExtendedKey::from_bip32(
        base58::decode(fetched["prv"].as_str().unwrap())
            .unwrap()
            .expose(),
    )
    .unwrap();
    assert_eq!(node.public_key(), &xpub_key(&made_pub)[..]);
    for bad in [
        json!({"pub": made_pub, "source": "user", "algorithm": "eddsa", "signablePayload": payload}),
        json!({"pub": made_pub, "source": "user", "algorithm": "ecdsa", "signablePayload": "0x1234"}),
        json!({"pub": made_pub, "source": "user", "algorithm": "ecdsa", "signablePayload": ""}),
        json!({"pub": common, "source": "backup", "algorithm": "ecdsa", "signablePayload": payload}),
        json!({"pub": made_pub, "source": "user", "algorithm": "ecdsa"}),
    ] {
        let (status, body) = p.post("/sign", &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = p
        .post(
            "/sign",
            &json!({"pub": made_pub, "source": "backup", "algorithm": "ecdsa", "signablePayload": payload}),
        )
        .await;
    assert_eq!(
        status, 404,
        "the same pub under the other source is another key"
    );
    let (status, _) = p
        .post(
            "/key/generate",
            &json!({"coin": "btc", "source": "user", "type": "tss"}),
        )
        .await;
    assert_eq!(status, 400);

    // A UTXO coin: the PSBT comes back with this key's partial signature.
    psbt_round(&p).await;

    // Data keys: the same plaintext back; tampered or foreign is a 400.
    let (status, dk) = p
        .post("/generateDataKey", &json!({"keyType": "AES-256"}))
        .await;
    assert_eq!(status, 200, "{dk}");
    let plaintext = dk["plaintextKey"].as_str().unwrap().to_owned();
    let encrypted = dk["encryptedKey"].as_str().unwrap().to_owned();
    assert_eq!(plaintext.len(), 64);
    let (status, back) = p
        .post("/decryptDataKey", &json!({"encryptedKey": encrypted}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(back, json!({"plaintextKey": plaintext}));
    let mut tampered = encrypted.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [tampered.as_str(), "", "not-a-key", "AAAA"] {
        let (status, body) = p
            .post("/decryptDataKey", &json!({"encryptedKey": bad}))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    for bad in [
        json!({"keyType": "RSA-2048"}),
        json!({"keyType": "AES-128"}),
        json!({}),
    ] {
        let (status, _) = p.post("/generateDataKey", &bad).await;
        assert_eq!(status, 400, "{bad}");
    }

    // The handshake: no client certificate, or one from another CA, fails.
    for identity in [None, Some("foreign-client.pem")] {
        let r = p
            .pki
            .client(identity)
            .get(format!("{}/key/{xpub}?source=user", p.url))
            .send()
            .await;
        assert!(r.is_err(), "{identity:?} got an answer: {r:?}");
    }
    assert!(handshake_fails(&p, None).await);
    assert!(handshake_fails(&p, Some("foreign-client.pem")).await);
    assert!(!handshake_fails(&p, Some("client.pem")).await);

    // kill -9 of both processes, then a master-key rotation: stored keys
    // and data keys still open.
    p.restart();
    let (status, body) = p.get(&format!("/key/{xpub}?source=user")).await;
    assert_eq!((status, body["prv"].as_str()), (200, Some(xprv.as_str())));
    let rotated = reqwest::Client::new()
        .post(format!("{}/admin/v1/keys/rotate", p.d.admin_url()))
        .send()
        .await
        .unwrap();
    assert!(rotated.status().is_success(), "{rotated:?}");
    let (status, back) = p
        .post("/decryptDataKey", &json!({"encryptedKey": encrypted}))
        .await;
    assert_eq!(
        (status, back["plaintextKey"].as_str()),
        (200, Some(plaintext.as_str()))
    );
    let (status, body) = p.get(&format!("/key/{common}?source=backup")).await;
    assert_eq!((status, body["prv"].as_str()), (200, Some(share.as_str())));
    let (status, _) = p.post("/key", &store_body(&xprv, &xpub, "user")).await;
    assert_eq!(status, 409, "still unique after a restart");
    // The re-wrap does not move provider keys yet, so their version stays.
    let retire = reqwest::Client::new()
        .post(format!("{}/admin/v1/keys/1/retire", p.d.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(retire.status().as_u16(), 400);
    assert!(retire.text().await.unwrap().contains("BitGo"));

    // Every call is in the audit log, none with a secret.
    let chain = p.d.audit_chain(1).await;
    let count = |event: AuditEvent, outcome: &str| {
        chain
            .iter()
            .filter(|r| r.event == event && r.outcome == outcome)
            .count()
    };
    assert!(count(AuditEvent::ProviderKeyStored, "ok") >= 3);
    assert!(count(AuditEvent::ProviderKeyStored, "conflict") >= 2);
    assert!(count(AuditEvent::ProviderKeyStored, "invalid_request") >= 7);
    assert!(count(AuditEvent::ProviderKeyFetched, "ok") >= 4);
    assert!(count(AuditEvent::ProviderKeyFetched, "not_found") >= 2);
    assert_eq!(count(AuditEvent::ProviderKeyGenerated, "ok"), 2);
    assert_eq!(count(AuditEvent::ProviderSign, "ok"), 2);
    assert!(count(AuditEvent::ProviderDataKeyDecrypted, "invalid_request") >= 4);
    let signed = chain
        .iter()
        .find(|r| {
            r.event == AuditEvent::ProviderSign
                && r.outcome == "ok"
                && r.coin.as_deref() == Some("hteth")
        })
        .unwrap();
    assert_eq!(
        signed.payload_sha256.unwrap().0,
        kms_crypto::sha256(payload.as_bytes())
    );
    assert_eq!(signed.coin.as_deref(), Some("hteth"));

    // An attacker who owns the database: an edited or moved row is
    // refused (500, never another key's prv), an intact one still opens.
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(p.d.db_path())
            .busy_timeout(std::time::Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let edit = |sql: &'static str, a: String| {
        let pool = pool.clone();
        async move {
            let n = sqlx::query(sql).bind(a).execute(&pool).await.unwrap();
            assert_eq!(n.rows_affected(), 1, "{sql}");
        }
    };
    edit(
        "UPDATE provider_keys SET coin = 'btc' WHERE pub = ? AND source = 'user'",
        xpub.clone(),
    )
    .await;
    let (status, body) = p.get(&format!("/key/{xpub}?source=user")).await;
    assert_eq!(status, 500, "{body}");
    assert!(!body.to_string().contains(&xprv));
    let (status, _) = p
        .post(
            "/sign",
            &json!({"pub": xpub, "source": "user", "algorithm": "ecdsa", "signablePayload": payload}),
        )
        .await;
    assert_eq!(status, 500);
    // The tss row moved from backup to user: its seal names backup.
    edit(
        "UPDATE provider_keys SET source = 'user' WHERE pub = ? AND source = 'backup'",
        common.clone(),
    )
    .await;
    let (status, _) = p.get(&format!("/key/{common}?source=user")).await;
    assert_eq!(status, 500);
    let (status, body) = p.get(&format!("/key/{xpub}?source=backup")).await;
    assert_eq!((status, body["prv"].as_str()), (200, Some(xprv.as_str())));

    // Neither the store nor either log ever held a plaintext prv.
    let secrets = [
        xprv.clone(),
        share.clone(),
        fetched["prv"].as_str().unwrap().to_owned(),
        plaintext.clone(),
    ];
    assert_file_holds_none(&p.d.db_path(), &secrets);
    let wal = p.d.api_data().join("kms.sqlite-wal");
    if wal.exists() {
        assert_file_holds_none(&wal, &secrets);
    }
    let logs = p.d.logs();
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a log holds a secret");
    }
}

fn hex32(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn assert_file_holds_none(path: &Path, secrets: &[String]) {
    let bytes = std::fs::read(path).unwrap();
    for s in secrets {
        let needle = s.as_bytes();
        let found = bytes
            .windows(needle.len().min(40))
            .any(|w| w == &needle[..needle.len().min(40)]);
        assert!(!found, "{} holds a secret", path.display());
    }
}

/// Whether a TLS 1.3 handshake (and a first read, where TLS 1.3 reports a
/// refused client certificate) fails with `identity`.
async fn handshake_fails(p: &Provider, identity: Option<&str>) -> bool {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&p.pki.read("ca.pem")).unwrap())
        .unwrap();
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => b.with_no_client_auth(),
        Some(name) => {
            let pem = p.pki.read(name);
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(&pem).unwrap();
            b.with_client_auth_cert(chain, key).unwrap()
        }
    };
    let addr = p.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return true;
    };
    let request = "GET /openapi.json HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if tls.write_all(request.as_bytes()).await.is_err() {
        return true;
    }
    let mut buf = Vec::new();
    match tls.read_to_end(&mut buf).await {
        Ok(_) => !String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
        Err(_) => true,
    }
}

/// A 2-of-3 P2WSH spend whose user key was made by the provider: the
/// provider adds its partial signature (verified here over the input's
/// sighash) and keeps every other field.
async fn psbt_round(p: &Provider) {
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use bitcoin::bip32::{DerivationPath, Xpriv, Xpub};
    use bitcoin::blockdata::script::Builder;
    use bitcoin::hashes::Hash;
    use bitcoin::opcodes::all::{OP_CHECKMULTISIG, OP_PUSHNUM_2, OP_PUSHNUM_3};
    use bitcoin::psbt::Psbt;
    use bitcoin::secp256k1::{Message, Secp256k1};
    use bitcoin::sighash::{EcdsaSighashType, SighashCache};
    use bitcoin::{
        absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Txid, Witness,
    };

    let (status, made) = p
        .post(
            "/key/generate",
            &json!({"coin": "tbtc", "source": "user", "type": "independent"}),
        )
        .await;
    assert_eq!(status, 200);
    let user_pub = made["pub"].as_str().unwrap().to_owned();
    let secp = Secp256k1::new();
    let user = Xpub::from_str(&user_pub).unwrap();
    let backup = Xpriv::new_master(bitcoin::NetworkKind::Main, &[2; 32]).unwrap();
    let bitgo = Xpriv::new_master(bitcoin::NetworkKind::Main, &[3; 32]).unwrap();
    let path = DerivationPath::from_str("m/0/0/20/3").unwrap();
    let child = |x: &Xpub| x.derive_pub(&secp, &path).unwrap().public_key;
    let keys = [
        (user.fingerprint(), child(&user)),
        (
            backup.fingerprint(&secp),
            child(&Xpub::from_priv(&secp, &backup)),
        ),
        (
            bitgo.fingerprint(&secp),
            child(&Xpub::from_priv(&secp, &bitgo)),
        ),
    ];
    let mut b = Builder::new().push_opcode(OP_PUSHNUM_2);
    for (_, k) in &keys {
        b = b.push_key(&bitcoin::PublicKey::new(*k));
    }
    let script = b
        .push_opcode(OP_PUSHNUM_3)
        .push_opcode(OP_CHECKMULTISIG)
        .into_script();
    let spk = ScriptBuf::new_p2wsh(&script.wscript_hash());
    let tx = bitcoin::Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::all_zeros(), 1),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(40_000),
            script_pubkey: spk.clone(),
        }],
    };
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    psbt.inputs[0].witness_utxo = Some(TxOut {
        value: Amount::from_sat(50_000),
        script_pubkey: spk,
    });
    psbt.inputs[0].witness_script = Some(script.clone());
    psbt.inputs[0].bip32_derivation = keys
        .iter()
        .map(|(fp, k)| (*k, (*fp, path.clone())))
        .collect::<BTreeMap<_, _>>();
    let payload = kms_crypto::hex(&psbt.serialize());
    let (status, signed) = p
        .post(
            "/sign",
            &json!({"pub": user_pub, "source": "user", "algorithm": "ecdsa", "signablePayload": payload}),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    let hex = signed["signature"].as_str().unwrap();
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let back = Psbt::deserialize(&bytes).unwrap();
    assert_eq!(back.unsigned_tx, psbt.unsigned_tx);
    assert_eq!(
        back.inputs[0].bip32_derivation,
        psbt.inputs[0].bip32_derivation
    );
    assert_eq!(back.inputs[0].partial_sigs.len(), 1);
    let (pk, sig) = back.inputs[0].partial_sigs.iter().next().unwrap();
    assert_eq!(pk.inner, keys[0].1, "signed by the user key's child");
    let sighash = SighashCache::new(&back.unsigned_tx)
        .p2wsh_signature_hash(0, &script, Amount::from_sat(50_000), EcdsaSighashType::All)
        .unwrap();
    let msg = Message::from_digest(sighash.to_byte_array());
    secp.verify_ecdsa(&msg, &sig.signature, &pk.inner).unwrap();
    // A PSBT that does not name this key is refused.
    let mut foreign = psbt.clone();
    foreign.inputs[0].bip32_derivation.remove(&keys[0].1);
    let (status, body) = p
        .post(
            "/sign",
            &json!({"pub": user_pub, "source": "user", "algorithm": "ecdsa",
                    "signablePayload": kms_crypto::hex(&foreign.serialize())}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

/// BitGo's side, independently: `tests/bitgo-client/test.js` on BitGo's
/// own npm packages (superagent and zod as its client uses them,
/// @bitgo/utxo-lib, @bitgo/sjcl, ethereumjs-util), against both real
/// processes over mTLS. Needs `npm ci` in tests/bitgo-client (`.ci/run`
/// does it and sets KMS_REQUIRE_BITGO_CLIENT=1); skipped with a message
/// otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitgo_node_client() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/bitgo-client");
    let required = std::env::var("KMS_REQUIRE_BITGO_CLIENT").as_deref() == Ok("1");
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok || !dir.join("node_modules/@bitgo/utxo-lib").exists() {
        let why = "SKIPPED: bitgo_node_client needs node and `npm ci` in tests/bitgo-client";
        assert!(!required, "{why} (KMS_REQUIRE_BITGO_CLIENT=1)");
        eprintln!("{why}");
        return;
    }
    let p = start(Pki::new());
    let out = tokio::process::Command::new("node")
        .arg(dir.join("test.js"))
        .current_dir(&dir)
        .env("KP_URL", &p.url)
        .env("KP_CA", p.pki.path("ca.pem"))
        .env("KP_CERT", p.pki.path("client.crt"))
        .env("KP_KEY", p.pki.path("client.key"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node client failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nlogs:\n{}",
        p.d.logs()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    eprint!("{stdout}");
}

/// The TLS key made from the key set: `bitgo-csr` prints a CSR for it, the
/// CA signs it, and the listener serves with it and no key file; a
/// certificate for another key is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitgo_tls_key_from_the_key_set() {
    let mut p = start(Pki::new());
    let csr = |data: &Path| {
        let out = std::process::Command::new(&kms_e2e::binaries().secure_environment)
            .args([
                "bitgo-csr",
                "--bitgo-server-name",
                "localhost",
                "--bitgo-server-name",
                "127.0.0.1",
                "--data-dir",
            ])
            .arg(data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = csr(&p.d.se_data());
    assert!(
        first.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{first}"
    );
    let request = rcgen::CertificateSigningRequestParams::from_pem(&first).unwrap();
    let again = rcgen::CertificateSigningRequestParams::from_pem(&csr(&p.d.se_data())).unwrap();
    assert_eq!(
        request.public_key.der_bytes(),
        again.public_key.der_bytes(),
        "one key per key set"
    );
    let ca_key = KeyPair::from_pem(&String::from_utf8(p.pki.read("ca.key")).unwrap()).unwrap();
    let ca_cert = String::from_utf8(p.pki.read("ca.pem")).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_cert, ca_key).unwrap();
    let cert = request.signed_by(&issuer).unwrap();
    std::fs::write(p.pki.path("own.pem"), cert.pem()).unwrap();

    // Served with the key set's key: no --bitgo-tls-key.
    let file_args = p.se_args.clone();
    let own_args = |cert: PathBuf| -> Vec<String> {
        let mut args = file_args.clone();
        let at = args.iter().position(|a| a == "--bitgo-tls-key").unwrap();
        args.drain(at..at + 2);
        let at = args.iter().position(|a| a == "--bitgo-tls-cert").unwrap();
        args[at + 1] = cert.display().to_string();
        args
    };
    p.se_args = own_args(p.pki.path("own.pem"));
    p.restart();
    let (status, body) = p.get("/openapi.json").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = p
        .post("/generateDataKey", &json!({"keyType": "AES-256"}))
        .await;
    assert_eq!(status, 200);
    assert!(!p.d.logs().contains("BEGIN PRIVATE KEY"));

    // The file key's certificate does not go with the key set's key.
    p.d.stop_api();
    p.d.stop_se();
    let mismatched = own_args(p.pki.path("server.pem"));
    let out = std::process::Command::new(&kms_e2e::binaries().secure_environment)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(p.d.se_data())
        .args(&mismatched)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not go with the TLS key"), "{stderr}");
}
