#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod address;
mod data_key;
mod wallet_keys;

use kms_crypto::hpke;
use kms_crypto::{labels, messages, rng, sign};
use kms_protocol::api::{
    Attestation, Authorization, CompleteImport, ExportBundle, ExportWallet, ImportEnvelope,
    ImportReceipt, StartImportSession, WalletMetadata, WalletPage,
};
use kms_protocol::{b64, ErrorBody, ErrorCode, Nonce, P256PublicKey};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use data_key::{encryption_context, DataKey, EncryptionContext};
pub use kms_crypto::hpke::HpkeSecretKey;
pub use kms_crypto::material::KeyMaterial;
pub use kms_crypto::sign::SigningKey;
pub use kms_crypto::{SecretBytes, SecretKey};
pub use kms_protocol::api::{Algorithm, DerivedKey, GenerateReceipt, SignResponse};
pub use kms_protocol::{Curve, DerivationPath};
pub use kms_protocol::{Id, KeyType};
pub use wallet_keys::{authorize_sign, authorize_sign_for, verify_signature, ToSign};

/// Budget for one request (docs/design.md, "timeouts").
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The API answered with docs/protocol.md's error JSON.
    #[error("kms-api refused ({status} {}): {message}", code.as_str())]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    /// No answer, or a transport failure.
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// A signature by the pinned identity key that does not verify, or a
    /// signed value that is not the one asked for. Nothing was sealed or trusted.
    #[error("verification failed: {0}")]
    Verification(&'static str),
    /// An answer that does not follow docs/protocol.md.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// An export or a data key that does not open with the recipient key.
    #[error("the ciphertext does not open with the recipient key")]
    DecryptionFailed,
    /// Key material the SDK refuses to import.
    #[error("invalid key material")]
    InvalidKeyMaterial,
    /// A bad argument (URL, identity key).
    #[error("{0}")]
    Config(String),
    /// An encryption context the service would refuse (`docs/data-keys.md`).
    #[error("invalid encryption context: {0}")]
    InvalidContext(&'static str),
    #[error(transparent)]
    Crypto(#[from] kms_crypto::CryptoError),
}

/// Parses an identity public key as `secure-environment identity` prints
/// it (base64url of the 65-byte SEC1 point; surrounding whitespace ignored)
/// and checks it is on the curve.
pub fn parse_identity_public_key(text: &str) -> Result<P256PublicKey, ClientError> {
    let bytes = b64::decode(text.trim())
        .map_err(|_| ClientError::Config("identity key is not base64url".into()))?;
    let key = P256PublicKey::from_bytes(&bytes)
        .map_err(|e| ClientError::Config(format!("identity key: {e}")))?;
    sign::check_point(&key)
        .map_err(|_| ClientError::Config("identity key is not a P-256 point".into()))?;
    Ok(key)
}

/// An import session whose proof verified against the pinned identity key.
#[derive(Debug, Clone)]
pub struct ImportSession {
    envelope: ImportEnvelope,
}

impl ImportSession {
    pub fn id(&self) -> &Id {
        &self.envelope.session_id
    }

    pub fn public_key(&self) -> &P256PublicKey {
        &self.envelope.session_public_key
    }

    pub fn expires_at(&self) -> u64 {
        self.envelope.expires_at
    }
}

/// A client of kms-api that pins the secure environment's identity key.
#[derive(Debug, Clone)]
pub struct KmsClient {
    http: reqwest::Client,
    base: String,
    identity: P256PublicKey,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl KmsClient {
    /// A client for kms-api at `base_url` that trusts only `identity`.
    pub fn new(base_url: &str, identity: P256PublicKey) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Config(format!("http client: {e}")))?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            identity,
        })
    }

    pub fn identity(&self) -> &P256PublicKey {
        &self.identity
    }

    async fn send<R: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<R, ClientError> {
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| ClientError::InvalidResponse(e.to_string()));
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => Err(ClientError::Api {
                status: status.as_u16(),
                code: e.error.code,
                message: e.error.message,
            }),
            Err(_) => Err(ClientError::InvalidResponse(format!(
                "status {status} without an error body"
            ))),
        }
    }

    async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post<Q: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<R, ClientError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.get::<serde_json::Value>("/v1/health")
            .await
            .map(|_| ())
    }

    /// `GET /v1/attestation`, checked against the pinned identity key (the
    /// response comes through the untrusted relay: it can only confirm the pin).
    pub async fn attestation(&self) -> Result<Attestation, ClientError> {
        let a: Attestation = self.get("/v1/attestation").await?;
        if a.identity_public_key != self.identity {
            return Err(ClientError::Verification(
                "attested identity key is not the pinned one",
            ));
        }
        // The relay supplies this text; accept only docs/protocol.md §1's shape.
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if a.measurement.len() != 64 || !a.measurement.bytes().all(hex) {
            return Err(ClientError::InvalidResponse(
                "measurement is not a lowercase hex SHA-256".to_owned(),
            ));
        }
        Ok(a)
    }

    /// Starts an import session and verifies its proof (docs/protocol.md §2).
    pub async fn start_import_session(&self) -> Result<ImportSession, ClientError> {
        let nonce = Nonce::from_bytes(&rng::array::<32>(&mut rng::SystemRng)?)
            .map_err(|_| ClientError::Verification("nonce"))?;
        let envelope: ImportEnvelope = self
            .post(
                "/v1/import-sessions",
                &StartImportSession {
                    client_nonce: Some(nonce.clone()),
                },
            )
            .await?;
        self.verify_session(envelope, Some(&nonce))
    }

    /// Verifies an envelope's proof against the pinned key; the only way to
    /// get an [`ImportSession`].
    pub fn verify_session(
        &self,
        envelope: ImportEnvelope,
        client_nonce: Option<&Nonce>,
    ) -> Result<ImportSession, ClientError> {
        if envelope.proof.identity_public_key != self.identity {
            return Err(ClientError::Verification(
                "session proof is not by the pinned identity key",
            ));
        }
        let msg = messages::session_proof(
            &envelope.session_id,
            &envelope.session_public_key,
            envelope.expires_at,
            client_nonce.map(Nonce::as_bytes),
        );
        sign::verify(&self.identity, &msg, &envelope.proof.signature)
            .map_err(|_| ClientError::Verification("session proof does not verify"))?;
        sign::check_point(&envelope.session_public_key)
            .map_err(|_| ClientError::Verification("session key is not a P-256 point"))?;
        if envelope.expires_at <= now() {
            return Err(ClientError::Verification("session already expired"));
        }
        Ok(ImportSession { envelope })
    }

    /// Seals `material` to a verified session and completes the import,
    /// verifying the receipt (docs/protocol.md §3).
    pub async fn complete_import(
        &self,
        session: &ImportSession,
        material: &KeyMaterial,
    ) -> Result<ImportReceipt, ClientError> {
        let expected_public = material
            .public_key()
            .map_err(|_| ClientError::InvalidKeyMaterial)?;
        let receipt = self
            .seal_and_complete(session, &material.to_import_plaintext())
            .await?;
        if receipt.key_type != material.key_type()
            || receipt.public_key.as_ref().map(|p| p.as_bytes()) != expected_public.as_deref()
            || receipt.owner_public_key.as_ref() != material.owner_public_key()
        {
            return Err(ClientError::Verification(
                "receipt does not describe the imported key",
            ));
        }
        Ok(receipt)
    }

    /// Imports a BitGo keycard box into a `bip32` wallet: the box and its
    /// passphrase are sealed to an attested session and opened only inside
    /// the secure environment, so the xprv never exists here (docs/bitgo.md,
    /// "Keycards"). With `expected_public_key` (the 33-byte key of the
    /// keycard's xpub), the receipt must name it.
    pub async fn import_keycard(
        &self,
        box_json: &str,
        passphrase: &str,
        expected_public_key: Option<&[u8]>,
    ) -> Result<ImportReceipt, ClientError> {
        let session = self.start_import_session().await?;
        let plaintext = KeyMaterial::keycard_import_plaintext(box_json, passphrase);
        let receipt = self.seal_and_complete(&session, &plaintext).await?;
        if receipt.key_type != KeyType::Bip32
            || receipt.owner_public_key.is_some()
            || expected_public_key
                .is_some_and(|k| receipt.public_key.as_ref().map(|p| p.as_bytes()) != Some(k))
        {
            return Err(ClientError::Verification(
                "receipt does not describe the keycard's key",
            ));
        }
        Ok(receipt)
    }

    /// Seals an import plaintext to `session`, completes the import and
    /// verifies the receipt's signature.
    async fn seal_and_complete(
        &self,
        session: &ImportSession,
        plaintext: &kms_crypto::SecretBytes,
    ) -> Result<ImportReceipt, ClientError> {
        let info = hpke::info(labels::IMPORT, session.id());
        let encrypted_key = hpke::seal(session.public_key(), &info, plaintext.expose())?;
        let path = format!("/v1/import-sessions/{}/complete", session.id());
        let receipt: ImportReceipt = self
            .post(
                &path,
                &CompleteImport {
                    encrypted_key: encrypted_key.clone(),
                },
            )
            .await?;
        let msg = messages::import_receipt(
            session.id(),
            &receipt.wallet_id,
            encrypted_key.as_bytes(),
            receipt.key_type,
            receipt.public_key.as_ref().map(|p| p.as_bytes()),
            receipt.owner_public_key.as_ref(),
        );
        sign::verify(&self.identity, &msg, &receipt.signature)
            .map_err(|_| ClientError::Verification("import receipt does not verify"))?;
        Ok(receipt)
    }

    /// Starts a session and imports `material` through it.
    pub async fn import(&self, material: &KeyMaterial) -> Result<ImportReceipt, ClientError> {
        let session = self.start_import_session().await?;
        self.complete_import(&session, material).await
    }

    /// Exports a wallet sealed to `recipient`, verifies the bundle, opens it,
    /// and checks the inner key type (docs/protocol.md §4).
    pub async fn export(
        &self,
        wallet_id: &Id,
        recipient: &HpkeSecretKey,
    ) -> Result<KeyMaterial, ClientError> {
        self.export_authorized(wallet_id, recipient, None).await
    }

    /// [`KmsClient::export`] with the owner's authorization, which an
    /// owner-bound wallet needs (docs/protocol.md §6; see [`authorize_export`]).
    pub async fn export_authorized(
        &self,
        wallet_id: &Id,
        recipient: &HpkeSecretKey,
        authorization: Option<Authorization>,
    ) -> Result<KeyMaterial, ClientError> {
        let path = format!("/v1/wallets/{wallet_id}/export");
        let body = ExportWallet {
            recipient_public_key: *recipient.public_key(),
            authorization,
        };
        let bundle: ExportBundle = self.post(&path, &body).await?;
        self.open_export(wallet_id, recipient, &bundle)
    }

    /// Verifies and opens an export bundle.
    pub fn open_export(
        &self,
        wallet_id: &Id,
        recipient: &HpkeSecretKey,
        bundle: &ExportBundle,
    ) -> Result<KeyMaterial, ClientError> {
        if bundle.wallet_id != *wallet_id || bundle.recipient_public_key != *recipient.public_key()
        {
            return Err(ClientError::Verification(
                "export bundle is for another wallet or recipient",
            ));
        }
        let msg = messages::export_bundle(
            wallet_id,
            recipient.public_key(),
            bundle.encrypted_key.as_bytes(),
        );
        sign::verify(&self.identity, &msg, &bundle.signature)
            .map_err(|_| ClientError::Verification("export bundle signature does not verify"))?;
        let plaintext = recipient
            .open(
                &hpke::info(labels::EXPORT, wallet_id),
                &bundle.encrypted_key,
            )
            .map_err(|_| ClientError::DecryptionFailed)?;
        let material = KeyMaterial::from_plaintext(plaintext.expose())
            .map_err(|e| ClientError::InvalidResponse(format!("export plaintext: {e}")))?;
        if material.key_type() != bundle.key_type || material.owner_public_key().is_some() {
            return Err(ClientError::Verification(
                "export plaintext does not match the bundle",
            ));
        }
        Ok(material)
    }

    /// Exports to a fresh single-use recipient key.
    pub async fn export_to_fresh_key(&self, wallet_id: &Id) -> Result<KeyMaterial, ClientError> {
        let recipient = HpkeSecretKey::generate()?;
        self.export(wallet_id, &recipient).await
    }

    /// `GET /v1/wallets/{id}`.
    pub async fn wallet(&self, wallet_id: &Id) -> Result<WalletMetadata, ClientError> {
        self.get(&format!("/v1/wallets/{wallet_id}")).await
    }

    /// `GET /v1/wallets?limit=N&after=ID`.
    pub async fn list_wallets(
        &self,
        after: Option<&Id>,
        limit: u32,
    ) -> Result<WalletPage, ClientError> {
        let mut path = format!("/v1/wallets?limit={limit}");
        if let Some(a) = after {
            path.push_str(&format!("&after={a}"));
        }
        self.get(&path).await
    }
}

/// Longest an authorization may run ahead of the secure environment's clock
/// (docs/protocol.md §6).
pub const MAX_AUTHORIZATION_SECONDS: u64 = 300;

/// The owner's signature allowing one export of `wallet_id` to `recipient`
/// until `expires_at` (docs/protocol.md §6), with a fresh 32-byte nonce.
pub fn authorize_export(
    owner: &SigningKey,
    wallet_id: &Id,
    recipient: &P256PublicKey,
    expires_at: u64,
) -> Result<Authorization, ClientError> {
    let nonce = Nonce::from_bytes(&rng::array::<32>(&mut rng::SystemRng)?)
        .map_err(|_| ClientError::Verification("nonce"))?;
    let msg = messages::export_request(wallet_id, recipient, expires_at, nonce.as_bytes());
    Ok(Authorization {
        expires_at,
        nonce,
        signature: owner.sign(&msg)?,
    })
}

/// [`authorize_export`] valid for the next `seconds` (at most 300) by the local clock.
pub fn authorize_export_for(
    owner: &SigningKey,
    wallet_id: &Id,
    recipient: &P256PublicKey,
    seconds: u64,
) -> Result<Authorization, ClientError> {
    authorize_export(
        owner,
        wallet_id,
        recipient,
        now() + seconds.min(MAX_AUTHORIZATION_SECONDS),
    )
}

/// Random key material of `key_type`, made on the client (for import):
/// 32 random bytes for `raw`, else what the secure environment's generate
/// makes (docs/protocol.md §7).
pub fn generate_key_material(key_type: KeyType) -> Result<KeyMaterial, ClientError> {
    if key_type == KeyType::Raw {
        let mut buf = vec![0u8; 32];
        let filled = rng::RandomSource::fill(&mut rng::SystemRng, &mut buf);
        let bytes = SecretBytes::new(buf);
        filled?;
        return KeyMaterial::new(key_type, bytes, None)
            .map_err(|_| ClientError::InvalidKeyMaterial);
    }
    Ok(KeyMaterial::generate_with_rng(
        key_type,
        None,
        &mut rng::SystemRng,
    )?)
}
