//! The peer: the same load against OpenBao's Transit engine (a `bao server
//! -dev` on loopback), measured exactly as `load` measures our own servers:
//! `concurrency` tasks each send one request after another (keep-alive,
//! pooled) for `seconds`, after a warm-up that is not counted.
//!
//! - `byok-import`: Transit BYOK (`POST /v1/transit/keys/{name}/import`) of
//!   an AES-256 key wrapped as RSA-OAEP-SHA256(wrapping key, ephemeral AES
//!   key) ‖ AES-KWP(ephemeral, target). The wrapped key is prepared once and
//!   sent under a fresh key name per request, so the load generator does no
//!   RSA; the server still does its RSA-4096 private unwrap per import.
//! - `export`: `GET /v1/transit/export/encryption-key/{name}/latest`.
//! - `encrypt` / `decrypt`: `POST /v1/transit/{encrypt,decrypt}/{name}` of a
//!   32-byte plaintext (the peer of our data-key decrypt).
//! - `sign-ecdsa-p256` / `sign-ed25519`: `POST /v1/transit/sign/{name}` of a
//!   32-byte digest (prehashed, SHA-256) or message: the peer of our sign.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
use kms_protocol::b64;

use crate::load::{drive, http_client, report, Levels};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Op {
    /// Transit BYOK import of an AES-256 key under a fresh name.
    ByokImport,
    /// Export of an exportable AES-256 Transit key.
    Export,
    /// Transit encrypt of 32 bytes.
    Encrypt,
    /// Transit decrypt of 32 bytes (the peer of our data-key decrypt).
    Decrypt,
    /// Transit sign with an `ecdsa-p256` key of a 32-byte SHA-256 digest
    /// (`prehashed`), the peer of our ECDSA signing.
    SignEcdsaP256,
    /// Transit sign with an `ed25519` key of a 32-byte message.
    SignEd25519,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// OpenBao's address.
    #[arg(long, default_value = "http://127.0.0.1:8200")]
    addr: String,
    /// Token (the dev server's root token).
    #[arg(long, default_value = "root")]
    token: String,
    #[arg(long, value_enum)]
    op: Op,
    #[command(flatten)]
    levels: Levels,
}

/// Standard base64 with padding (what OpenBao speaks), from our base64url.
fn std_b64(bytes: &[u8]) -> String {
    let mut s: String = b64::encode(bytes)
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    s
}

fn from_std_b64(s: &str) -> anyhow::Result<Vec<u8>> {
    let url: String = s
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    Ok(b64::decode(&url)?)
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| anyhow::anyhow!("rand"))?;
    Ok(b)
}

/// RSA-OAEP-SHA256(wrapping key, ephemeral) ‖ AES-KWP(ephemeral, target),
/// base64: the Transit BYOK wrapped form of `target`.
fn byok_wrap(wrapping_key_pem: &str, target: &[u8]) -> anyhow::Result<String> {
    let body: String = wrapping_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = from_std_b64(&body).context("wrapping key PEM")?;
    let public =
        PublicEncryptingKey::from_der(&der).map_err(|e| anyhow::anyhow!("wrapping key: {e:?}"))?;
    let oaep = OaepPublicEncryptingKey::new(public).map_err(|_| anyhow::anyhow!("OAEP key"))?;
    let ephemeral = random::<32>()?;
    let mut rsa = vec![0u8; oaep.ciphertext_size()];
    let rsa = oaep
        .encrypt(&OAEP_SHA256_MGF1SHA256, &ephemeral, &mut rsa, None)
        .map_err(|_| anyhow::anyhow!("RSA-OAEP"))?;
    let mut kwp = vec![0u8; target.len() + 15];
    let kwp = AesKek::new(&AES_256, &ephemeral)
        .map_err(|_| anyhow::anyhow!("KEK"))?
        .wrap_with_padding(target, &mut kwp)
        .map_err(|_| anyhow::anyhow!("AES-KWP"))?;
    let mut out = rsa.to_vec();
    out.extend_from_slice(kwp);
    Ok(std_b64(&out))
}

struct Fixture {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Key names of the imports: `{import_prefix}{counter}`.
    import_prefix: String,
    import_counter: AtomicU64,
    import_ciphertext: String,
    encrypt_body: Vec<u8>,
    decrypt_body: Vec<u8>,
    sign_p256_body: Vec<u8>,
    sign_ed25519_body: Vec<u8>,
}

impl Fixture {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut r = self
            .http
            .request(method, format!("{}/v1/{path}", self.base))
            .header("X-Vault-Token", &self.token);
        if let Some(body) = body {
            r = r.header("Content-Type", "application/json").body(body);
        }
        Ok(r.send().await?)
    }

    /// A setup call: a JSON answer (or none) on 2xx, the server's text otherwise.
    async fn setup(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
        let r = self.call(method.clone(), path, body).await?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(status.is_success(), "{method} {path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}

async fn fixture(a: &Args) -> anyhow::Result<Fixture> {
    let http = http_client()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut f = Fixture {
        http,
        base: a.addr.trim_end_matches('/').to_owned(),
        token: a.token.clone(),
        import_prefix: format!("bench-import-{}-{nanos}-", std::process::id()),
        import_counter: AtomicU64::new(0),
        import_ciphertext: String::new(),
        encrypt_body: Vec::new(),
        decrypt_body: Vec::new(),
        sign_p256_body: Vec::new(),
        sign_ed25519_body: Vec::new(),
    };
    use reqwest::Method;
    let mount = f
        .setup(
            Method::POST,
            "sys/mounts/transit",
            Some(serde_json::json!({"type": "transit"})),
        )
        .await;
    if let Err(e) = mount {
        if !e.to_string().contains("already in use") {
            return Err(e);
        }
    }
    f.setup(
        Method::POST,
        "transit/keys/bench-export",
        Some(serde_json::json!({"type": "aes256-gcm96", "exportable": true})),
    )
    .await?;
    f.setup(
        Method::POST,
        "transit/keys/bench-dec",
        Some(serde_json::json!({"type": "aes256-gcm96"})),
    )
    .await?;
    let plaintext = std_b64(&random::<32>()?);
    f.encrypt_body = serde_json::to_vec(&serde_json::json!({ "plaintext": plaintext }))?;
    let enc = f
        .setup(
            Method::POST,
            "transit/encrypt/bench-dec",
            Some(serde_json::json!({ "plaintext": plaintext })),
        )
        .await?;
    let ciphertext = enc["data"]["ciphertext"]
        .as_str()
        .context("encrypt: no data.ciphertext")?;
    f.decrypt_body = serde_json::to_vec(&serde_json::json!({ "ciphertext": ciphertext }))?;
    for (name, key_type) in [
        ("bench-sign-p256", "ecdsa-p256"),
        ("bench-sign-ed25519", "ed25519"),
    ] {
        f.setup(
            Method::POST,
            &format!("transit/keys/{name}"),
            Some(serde_json::json!({ "type": key_type })),
        )
        .await?;
    }
    let digest = std_b64(&kms_crypto::sha256(b"a transaction to sign"));
    f.sign_p256_body = serde_json::to_vec(&serde_json::json!({
        "input": digest, "prehashed": true, "hash_algorithm": "sha2-256",
        "marshaling_algorithm": "jws"}))?;
    f.sign_ed25519_body = serde_json::to_vec(&serde_json::json!({ "input": digest }))?;
    if a.op == Op::ByokImport {
        let wk = f.setup(Method::GET, "transit/wrapping_key", None).await?;
        let pem = wk["data"]["public_key"]
            .as_str()
            .context("wrapping_key: no data.public_key")?;
        f.import_ciphertext = byok_wrap(pem, &random::<32>()?)?;
    }
    Ok(f)
}

async fn expect_2xx(r: reqwest::Response, what: &str) -> anyhow::Result<()> {
    let status = r.status();
    let body = r.bytes().await?;
    anyhow::ensure!(
        status.is_success(),
        "{what}: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// One operation; Ok when the response was a success (2xx).
async fn one(f: &Fixture, op: Op) -> anyhow::Result<()> {
    use reqwest::Method;
    match op {
        Op::ByokImport => {
            let n = f.import_counter.fetch_add(1, Ordering::Relaxed);
            let body = format!(
                r#"{{"ciphertext":"{}","hash_function":"SHA256","type":"aes256-gcm96"}}"#,
                f.import_ciphertext
            );
            let path = format!("transit/keys/{}{n}/import", f.import_prefix);
            let r = f.call(Method::POST, &path, Some(body.into_bytes())).await?;
            expect_2xx(r, "import").await
        }
        Op::Export => {
            let r = f
                .call(
                    Method::GET,
                    "transit/export/encryption-key/bench-export/latest",
                    None,
                )
                .await?;
            expect_2xx(r, "export").await
        }
        Op::Encrypt => {
            let r = f
                .call(
                    Method::POST,
                    "transit/encrypt/bench-dec",
                    Some(f.encrypt_body.clone()),
                )
                .await?;
            expect_2xx(r, "encrypt").await
        }
        Op::Decrypt => {
            let r = f
                .call(
                    Method::POST,
                    "transit/decrypt/bench-dec",
                    Some(f.decrypt_body.clone()),
                )
                .await?;
            expect_2xx(r, "decrypt").await
        }
        Op::SignEcdsaP256 => {
            let r = f
                .call(
                    Method::POST,
                    "transit/sign/bench-sign-p256",
                    Some(f.sign_p256_body.clone()),
                )
                .await?;
            expect_2xx(r, "sign").await
        }
        Op::SignEd25519 => {
            let r = f
                .call(
                    Method::POST,
                    "transit/sign/bench-sign-ed25519",
                    Some(f.sign_ed25519_body.clone()),
                )
                .await?;
            expect_2xx(r, "sign").await
        }
    }
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let f = Arc::new(fixture(&a).await?);
    // One request first, so a refusal is reported rather than counted.
    one(&f, a.op)
        .await
        .with_context(|| format!("openbao {:?} at {}", a.op, f.base))?;
    println!(
        "openbao {:?}: {} runs of {} s per level (median [min–max])",
        a.op, a.levels.runs, a.levels.seconds
    );
    for &c in &a.levels.concurrency {
        let d = a.levels.drive(c, None);
        let mut runs = Vec::new();
        for _ in 0..a.levels.runs {
            let (f, op) = (f.clone(), a.op);
            runs.push(
                drive(&d, move |_| {
                    let f = f.clone();
                    async move { one(&f, op).await }
                })
                .await,
            );
        }
        report(
            a.levels.json_out.as_deref(),
            serde_json::json!({"bench": "openbao", "op": format!("{:?}", a.op)}),
            "",
            c,
            &runs,
        )?;
    }
    Ok(())
}
