//! The key provider for BitGo's Advanced Wallet Manager (docs/bitgo.md):
//! HTTPS whose TLS session ends in this process, with client certificates
//! required and checked against the configured CA. kms-api relays the TCP
//! bytes and never sees the session's keys; the sealed rows are kept in
//! kms-api's store through its internal listener ([`store`]).
//!
//! Every call, granted or refused, is one record in the audit log, whose
//! copy is stored in kms-api before the answer leaves (fail closed: a
//! copy that cannot be stored turns the answer into a 503). A store of a
//! key carries its record in the same commit as the row.

pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use kms_protocol::audit::{AuditEvent, AuditRecord};
use kms_protocol::provider::{
    DecryptDataKey, ErrorMessage, GenerateDataKey, GenerateKey, KeySource, SignPayload, StoreKey,
    StoredKey, MAX_PROVIDER_BODY_BYTES,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secure_runtime::runtime::provider::{
    check_store_key, KeyFacts, ProviderError, ProviderRefused,
};
use secure_runtime::{SecureRuntime, TrustedEnv};
use serde::de::DeserializeOwned;
use serde::Serialize;
use store::{StoreCallError, StoreClient};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take to send a request's head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed as they arrive.
const MAX_CONNECTIONS: usize = 1024;

/// The listener's TLS settings: TLS 1.3 and 1.2 (aws-lc-rs), the given
/// certificate chain and key, and client certificates required from
/// `client_ca` unless `insecure_no_client_auth`.
pub fn tls_config(
    cert: &Path,
    key: PrivateKeyDer<'static>,
    client_ca: Option<&Path>,
    insecure_no_client_auth: bool,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("reading --bitgo-tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--bitgo-tls-cert {} holds no certificate",
            cert.display()
        ));
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match (client_ca, insecure_no_client_auth) {
        (_, true) => builder.with_no_client_auth(),
        (None, false) => return Err(
            "--bitgo-client-ca is required: the wallet manager connects with a client certificate \
                 (KEY_PROVIDER_CLIENT_TLS_CERT), checked against this CA \
                 (--bitgo-insecure-no-client-auth turns the check off, for development only)"
                .to_owned(),
        ),
        (Some(ca), false) => {
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("reading --bitgo-client-ca {}: {e}", ca.display()))?;
            for c in cas {
                roots
                    .add(c)
                    .map_err(|e| format!("--bitgo-client-ca {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--bitgo-client-ca {} holds no certificate",
                    ca.display()
                ));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--bitgo-client-ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!("--bitgo-tls-cert does not go with the TLS key (--bitgo-tls-key, or the key set's own when none is given): {e}")
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS key from a PEM file (`--bitgo-tls-key`, for development).
pub fn key_from_file(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("reading --bitgo-tls-key {}: {e}", path.display()))
}

/// A PEM certificate signing request for the key set's TLS key, naming
/// `names` (DNS names or IP addresses) as subject alternative names and the
/// first as common name: `secure-environment bitgo-csr`.
pub fn csr(keys: &kms_crypto::keyset::KeySet, names: &[String]) -> Result<String, String> {
    let key = kms_crypto::provider::tls_key(keys).map_err(|e| e.to_string())?;
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der.expose().to_vec());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("the TLS key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| format!("--bitgo-server-name: {e}"))?;
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(first) = names.first() {
        dn.push(rcgen::DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    params
        .serialize_request(&pair)
        .and_then(|r| r.pem())
        .map_err(|e| format!("making the CSR: {e}"))
}

/// Serves the key-provider API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "key provider: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "key provider: too many connections, closing one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "key provider: TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "key provider: TLS handshake timed out");
                    return;
                }
            };
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "key provider: connection ended");
            }
            drop(slot);
        });
    }
}

/// What every handler works with.
#[derive(Clone, Debug)]
pub struct Provider {
    rt: SecureRuntime,
    store: StoreClient,
}

/// The key-provider router (paths as BitGo's client has them).
pub fn app(rt: SecureRuntime, store: StoreClient) -> Router {
    Router::new()
        .route("/key", post(store_key))
        .route("/key/generate", post(generate_key))
        .route("/key/{pub}", get(fetch_key))
        .route("/sign", post(sign))
        .route("/generateDataKey", post(generate_data_key))
        .route("/decryptDataKey", post(decrypt_data_key))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { message(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            message(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_PROVIDER_BODY_BYTES))
        .with_state(Provider { rt, store })
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the answer failed",
        ),
    }
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    json(
        status,
        &ErrorMessage {
            message: text.into(),
        },
    )
}

/// A JSON body: UTF-8 throughout, then the type; the message says why not.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ProviderError> {
    let body = body.map_err(|e| ProviderError::BadRequest(format!("reading the body: {e}")))?;
    std::str::from_utf8(&body)
        .map_err(|_| ProviderError::BadRequest("the body is not UTF-8".to_owned()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ProviderError::BadRequest(format!("invalid request body: {e}")))
}

fn status_of(error: &ProviderError) -> StatusCode {
    StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn unavailable(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable(format!("{e}"))
}

impl Provider {
    /// Runs `op` in the trusted environment; its records are durable when
    /// this returns.
    async fn exec<R>(
        &self,
        op: impl FnOnce(&TrustedEnv<'_>) -> Result<R, ProviderRefused>,
    ) -> Result<R, ProviderRefused> {
        match self.rt.trusted_env_exec_async(op).await {
            Ok(r) => r,
            Err(e) => Err(ProviderRefused {
                error: unavailable(e),
                audit: None,
            }),
        }
    }

    /// Records a refusal and answers it.
    async fn refuse(
        &self,
        event: AuditEvent,
        facts: KeyFacts<'_>,
        error: ProviderError,
    ) -> Response {
        let refused = self
            .rt
            .trusted_env_exec_async(|env| env.provider_refuse(event, facts, error))
            .await
            .unwrap_or_else(|e| ProviderRefused {
                error: unavailable(e),
                audit: None,
            });
        self.refused(refused).await
    }

    /// Answers a refusal once its record's copy is stored.
    async fn refused(&self, r: ProviderRefused) -> Response {
        if let Some(audit) = &r.audit {
            if let Err(e) = self.store.audit(audit).await {
                tracing::warn!(error = %e, "key provider: the audit copy of a refusal was not stored");
                return message(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            }
        }
        if r.error.status() >= 500 {
            tracing::warn!(error = %r.error, "key provider: refused");
        }
        message(status_of(&r.error), r.error.to_string())
    }

    /// Answers a success once its record's copy is stored.
    async fn granted<T: Serialize>(&self, value: &T, audit: &AuditRecord) -> Response {
        match self.store.audit(audit).await {
            Ok(()) => json(StatusCode::OK, value),
            Err(e) => {
                tracing::warn!(error = %e, "key provider: the audit copy was not stored; answer withheld");
                message(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

fn duplicate(source: KeySource, public: &str) -> ProviderError {
    ProviderError::Conflict(format!(
        "Duplicated Key for source: {} and pub: {public}",
        source.as_str()
    ))
}

fn not_found(source: KeySource, public: &str) -> ProviderError {
    ProviderError::NotFound(format!(
        "Entry with pub {public} and source {} not found",
        source.as_str()
    ))
}

/// `POST /key`.
async fn store_key(State(p): State<Provider>, body: Result<Bytes, BytesRejection>) -> Response {
    let event = AuditEvent::ProviderKeyStored;
    let req: StoreKey = match parse(body) {
        Ok(r) => r,
        Err(e) => return p.refuse(event, KeyFacts::default(), e).await,
    };
    let facts = KeyFacts {
        public: Some(&req.public),
        source: Some(req.source),
        key_type: Some(req.key_type),
        coin: Some(&req.coin),
    };
    if let Err(e) = check_store_key(&req) {
        return p.refuse(event, facts, e).await;
    }
    match p.store.lookup(&req.public, req.source).await {
        Ok(None) => {}
        Ok(Some(_)) => {
            return p
                .refuse(event, facts, duplicate(req.source, &req.public))
                .await
        }
        Err(e) => return p.refuse(event, facts, unavailable(e)).await,
    }
    let (row, audit) = match p.exec(|env| env.provider_store_key(&req)).await {
        Ok(x) => x,
        Err(r) => return p.refused(r).await,
    };
    // The row and the record of its storing are one commit in the store.
    match p.store.insert(&row, &audit).await {
        Ok(()) => json(
            StatusCode::OK,
            &StoredKey {
                public: req.public.clone(),
                coin: req.coin.clone(),
                source: req.source,
                key_type: req.key_type,
            },
        ),
        // Two stores of the same key at once: the other one won.
        Err(StoreCallError::Exists) => {
            p.refuse(event, facts, duplicate(req.source, &req.public))
                .await
        }
        Err(e) => p.refuse(event, facts, unavailable(e)).await,
    }
}

/// `POST /key/generate`.
async fn generate_key(State(p): State<Provider>, body: Result<Bytes, BytesRejection>) -> Response {
    let event = AuditEvent::ProviderKeyGenerated;
    let req: GenerateKey = match parse(body) {
        Ok(r) => r,
        Err(e) => return p.refuse(event, KeyFacts::default(), e).await,
    };
    let (row, answer, audit) = match p.exec(|env| env.provider_generate_key(&req)).await {
        Ok(x) => x,
        Err(r) => return p.refused(r).await,
    };
    match p.store.insert(&row, &audit).await {
        Ok(()) => json(StatusCode::OK, &answer),
        Err(e) => {
            p.refuse(event, KeyFacts::of_row(&row), unavailable(e))
                .await
        }
    }
}

/// `%XX` and `+` decoding of one URL component; `None` if it is not UTF-8.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let pair = bytes.get(i + 1..i + 3)?;
                if !pair.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The `source` query parameter: exactly one, `user` or `backup`.
fn source_of(query: Option<&str>) -> Result<KeySource, ProviderError> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(name, true).as_deref() != Some("source") {
            continue;
        }
        if found.is_some() {
            return Err(ProviderError::BadRequest(
                "source is given more than once".to_owned(),
            ));
        }
        found = Some(percent_decode(value, true).unwrap_or_default());
    }
    let value = found.ok_or_else(|| {
        ProviderError::BadRequest("the source query parameter is required".to_owned())
    })?;
    KeySource::parse(&value).ok_or_else(|| {
        ProviderError::BadRequest(format!("source must be user or backup (got {value:?})"))
    })
}

/// `GET /key/{pub}?source=`.
async fn fetch_key(State(p): State<Provider>, uri: Uri) -> Response {
    let event = AuditEvent::ProviderKeyFetched;
    let raw = uri.path().strip_prefix("/key/").unwrap_or_default();
    let Some(public) = percent_decode(raw, false).filter(|p| !p.is_empty()) else {
        return p
            .refuse(
                event,
                KeyFacts::default(),
                ProviderError::BadRequest("pub must be non-empty UTF-8".to_owned()),
            )
            .await;
    };
    let mut facts = KeyFacts {
        public: Some(&public),
        ..KeyFacts::default()
    };
    let source = match source_of(uri.query()) {
        Ok(s) => s,
        Err(e) => return p.refuse(event, facts, e).await,
    };
    facts.source = Some(source);
    let row = match p.store.lookup(&public, source).await {
        Ok(Some(row)) => row,
        Ok(None) => return p.refuse(event, facts, not_found(source, &public)).await,
        Err(e) => return p.refuse(event, facts, unavailable(e)).await,
    };
    match p.exec(|env| env.provider_fetch_key(&row)).await {
        Ok((key, audit)) => p.granted(&key, &audit).await,
        Err(r) => p.refused(r).await,
    }
}

/// `POST /sign`.
async fn sign(State(p): State<Provider>, body: Result<Bytes, BytesRejection>) -> Response {
    let event = AuditEvent::ProviderSign;
    let req: SignPayload = match parse(body) {
        Ok(r) => r,
        Err(e) => return p.refuse(event, KeyFacts::default(), e).await,
    };
    let facts = KeyFacts {
        public: Some(&req.public),
        source: Some(req.source),
        ..KeyFacts::default()
    };
    if let Err(e) = req.check() {
        return p.refuse(event, facts, ProviderError::BadRequest(e.0)).await;
    }
    let row = match p.store.lookup(&req.public, req.source).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return p
                .refuse(event, facts, not_found(req.source, &req.public))
                .await
        }
        Err(e) => return p.refuse(event, facts, unavailable(e)).await,
    };
    match p.exec(|env| env.provider_sign(&row, &req)).await {
        Ok((signature, audit)) => p.granted(&signature, &audit).await,
        Err(r) => p.refused(r).await,
    }
}

/// `POST /generateDataKey`.
async fn generate_data_key(
    State(p): State<Provider>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let event = AuditEvent::ProviderDataKeyGenerated;
    let checked = parse::<GenerateDataKey>(body)
        .and_then(|req| req.check().map_err(|e| ProviderError::BadRequest(e.0)));
    if let Err(e) = checked {
        return p.refuse(event, KeyFacts::default(), e).await;
    }
    match p.exec(|env| env.provider_generate_data_key()).await {
        Ok((key, audit)) => p.granted(&key, &audit).await,
        Err(r) => p.refused(r).await,
    }
}

/// `POST /decryptDataKey`.
async fn decrypt_data_key(
    State(p): State<Provider>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let event = AuditEvent::ProviderDataKeyDecrypted;
    let req: DecryptDataKey = match parse(body) {
        Ok(r) => r,
        Err(e) => return p.refuse(event, KeyFacts::default(), e).await,
    };
    match p.exec(|env| env.provider_decrypt_data_key(&req)).await {
        Ok((key, audit)) => p.granted(&key, &audit).await,
        Err(r) => p.refused(r).await,
    }
}

/// `GET /openapi.json`: the provider API as this service serves it.
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("bitgo/openapi.json"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_sources() {
        assert_eq!(source_of(Some("source=user")).unwrap(), KeySource::User);
        assert_eq!(
            source_of(Some("a=1&source=backup")).unwrap(),
            KeySource::Backup
        );
        assert_eq!(source_of(Some("sour%63e=%75ser")).unwrap(), KeySource::User);
        for bad in [
            None,
            Some(""),
            Some("source="),
            Some("source=bitgo"),
            Some("source=user&source=user"),
            Some("Source=user"),
        ] {
            assert!(source_of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c", false).as_deref(), Some("a/b+c"));
        assert_eq!(percent_decode("a+c", true).as_deref(), Some("a c"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%ff", false), None);
        assert_eq!(percent_decode("abc%", false), None);
        assert_eq!(percent_decode("abc%4", false), None);
    }
}
