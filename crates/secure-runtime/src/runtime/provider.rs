//! The key provider for BitGo's Advanced Wallet Manager (docs/bitgo.md),
//! inside the trust boundary: sealing and opening the keys it stores,
//! making keys and data keys, and signing. The manager's TLS session ends
//! in this process, so a `prv` exists in the clear only here and inside
//! that session; kms-api and its store see sealed rows alone.
//!
//! Every operation, granted or refused, writes one audit record: the
//! SHA-256 of the key's `pub`, its source, type and coin where known, the
//! SHA-256 of a signed payload — never a `prv`, a data key or a payload.

use kms_crypto::hd::{self, ExtendedKey};
use kms_crypto::provider::{self as envelope, ProviderKeyBinding};
use kms_crypto::{base58, rng, secp256k1, sha256, SecretBytes};
use kms_protocol::audit::{AuditEntry, AuditEvent, AuditRecord, Digest32};
use kms_protocol::provider::{
    DataKey, DecryptDataKey, DecryptedDataKey, FetchedKey, GenerateKey, KeySource, ProviderKeyRow,
    ProviderKeyType, SecretText, SignPayload, SignatureText, StoreKey, StoredKey,
};
use kms_protocol::{b64, Bytes};

use super::TrustedEnv;
use crate::EnvError;

/// Why a key-provider call is refused, with the status BitGo's client
/// tells apart (400, 404, 409) or a fault of this service (500, 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// A body or query the contract does not allow (400).
    #[error("{0}")]
    BadRequest(String),
    /// No key under this `(pub, source)` (404).
    #[error("{0}")]
    NotFound(String),
    /// A key under this `(pub, source)` is already stored (409).
    #[error("{0}")]
    Conflict(String),
    /// A stored row that does not open: the store returned what this key
    /// set did not write for that row (500; never the caller's input).
    #[error("{0}")]
    StoredKey(String),
    /// The audit log or the store cannot be reached (503).
    #[error("{0}")]
    Unavailable(String),
}

impl ProviderError {
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::NotFound(_) => 404,
            Self::Conflict(_) => 409,
            Self::StoredKey(_) => 500,
            Self::Unavailable(_) => 503,
        }
    }

    /// The audit record's outcome for this refusal.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "invalid_request",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::StoredKey(_) => "internal_error",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// A refusal and the audit record of it (`None` only when the record
/// itself could not be written: then the error is 503).
#[derive(Debug)]
pub struct ProviderRefused {
    pub error: ProviderError,
    pub audit: Option<Box<AuditRecord>>,
}

/// What an audit record says about the key a call concerns.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyFacts<'a> {
    pub public: Option<&'a str>,
    pub source: Option<KeySource>,
    pub key_type: Option<ProviderKeyType>,
    pub coin: Option<&'a str>,
}

impl<'a> KeyFacts<'a> {
    pub fn of_row(row: &'a ProviderKeyRow) -> Self {
        Self {
            public: Some(&row.public),
            source: Some(row.source),
            key_type: Some(row.key_type),
            coin: Some(&row.coin),
        }
    }

    fn entry(&self, event: AuditEvent) -> AuditEntry {
        let mut e = AuditEntry::new(event, "ok");
        e.provider_key = self.public.map(|p| Digest32(sha256(p.as_bytes())));
        e.key_source = self.source;
        e.provider_key_type = self.key_type;
        e.coin = self.coin.map(str::to_owned);
        e
    }
}

fn binding(row: &ProviderKeyRow) -> ProviderKeyBinding<'_> {
    ProviderKeyBinding {
        public: &row.public,
        source: row.source.as_str(),
        key_type: row.key_type.as_str(),
        coin: &row.coin,
    }
}

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

/// An `xprv`/`tprv` string as a node (BitGo's independent keys).
fn parse_xprv(text: &str) -> Result<ExtendedKey, ProviderError> {
    let raw = base58::decode(text).map_err(|e| bad(format!("prv is not an xprv: {e}")))?;
    ExtendedKey::from_bip32(raw.expose()).map_err(|e| bad(format!("prv is not an xprv: {e}")))
}

/// The public string of `node` in the network its private one was in.
fn xpub_of(node: &ExtendedKey, xprv: &str) -> Result<String, ProviderError> {
    let version = if xprv.starts_with("tprv") {
        hd::VERSION_TPUB
    } else {
        hd::VERSION_XPUB
    };
    let public = node
        .to_bip32_public(version)
        .map_err(|e| bad(format!("prv: {e}")))?;
    Ok(base58::encode(&public))
}

/// `0x` + 64 hex digits: an Ethereum-like coin's operation hash.
fn operation_hash(payload: &str) -> Option<[u8; 32]> {
    let hex = payload.strip_prefix("0x")?;
    kms_crypto::unhex(hex)?.try_into().ok()
}

/// What `POST /key` must satisfy before anything else is looked at: the
/// contract's members, and for an independent key a `prv` that is the
/// xprv of `pub` (400 otherwise).
pub fn check_store_key(req: &StoreKey) -> Result<(), ProviderError> {
    req.check().map_err(|e| bad(e.0))?;
    if req.key_type == ProviderKeyType::Independent {
        let node = parse_xprv(req.prv.expose())?;
        if xpub_of(&node, req.prv.expose())? != req.public {
            return Err(bad("prv is not the private key of pub"));
        }
    }
    Ok(())
}

impl TrustedEnv<'_> {
    /// The key provider's TLS key (derived from the identity key, see
    /// [`envelope::tls_key`]) as PKCS#8 DER, for the listener's TLS stack
    /// in this process.
    pub fn provider_tls_key(&self) -> Result<SecretBytes, EnvError> {
        Ok(envelope::tls_key(&self.keys)?.to_pkcs8_der()?)
    }

    /// Records a refusal decided outside these operations (a body that
    /// does not parse, an unknown key, a taken `(pub, source)`).
    pub fn provider_refuse(
        &self,
        event: AuditEvent,
        facts: KeyFacts<'_>,
        error: ProviderError,
    ) -> ProviderRefused {
        self.provider_refuse_entry(facts.entry(event), error)
    }

    fn provider_refuse_entry(
        &self,
        mut entry: AuditEntry,
        error: ProviderError,
    ) -> ProviderRefused {
        entry.outcome = error.outcome().to_owned();
        match self.record(entry) {
            Ok(audit) => ProviderRefused {
                error,
                audit: Some(Box::new(audit)),
            },
            Err(e) => ProviderRefused {
                error: ProviderError::Unavailable(format!("audit log unavailable: {e}")),
                audit: None,
            },
        }
    }

    fn provider_ok(
        &self,
        event: AuditEvent,
        facts: KeyFacts<'_>,
        edit: impl FnOnce(&mut AuditEntry),
    ) -> Result<AuditRecord, ProviderRefused> {
        let mut entry = facts.entry(event);
        edit(&mut entry);
        self.record(entry).map_err(|e| ProviderRefused {
            error: ProviderError::Unavailable(format!("audit log unavailable: {e}")),
            audit: None,
        })
    }

    fn sealed_row(
        &self,
        public: String,
        source: KeySource,
        key_type: ProviderKeyType,
        coin: String,
        prv: &[u8],
    ) -> Result<ProviderKeyRow, EnvError> {
        let mut row = ProviderKeyRow {
            public,
            source,
            key_type,
            coin,
            master_key_version: 0,
            sealed: Bytes::default(),
            created_at: self.now(),
        };
        let (version, sealed) = envelope::seal_key(&self.keys, &binding(&row), prv)?;
        row.master_key_version = version;
        row.sealed = Bytes(sealed);
        Ok(row)
    }

    /// `POST /key`: checks the key (an independent key's `prv` must be the
    /// xprv of its `pub`) and seals it for its row. The row is stored by
    /// the caller, with the audit record returned here.
    pub fn provider_store_key(
        &self,
        req: &StoreKey,
    ) -> Result<(ProviderKeyRow, AuditRecord), ProviderRefused> {
        let facts = KeyFacts {
            public: Some(&req.public),
            source: Some(req.source),
            key_type: Some(req.key_type),
            coin: Some(&req.coin),
        };
        let event = AuditEvent::ProviderKeyStored;
        if let Err(error) = check_store_key(req) {
            return Err(self.provider_refuse(event, facts, error));
        }
        let row = self
            .sealed_row(
                req.public.clone(),
                req.source,
                req.key_type,
                req.coin.clone(),
                req.prv.expose().as_bytes(),
            )
            .map_err(|e| {
                self.provider_refuse(event, facts, ProviderError::StoredKey(e.to_string()))
            })?;
        let audit = self.provider_ok(event, facts, |_| {})?;
        Ok((row, audit))
    }

    /// `POST /key/generate`: a BIP-32 master key made here from this
    /// environment's randomness, sealed for its row; the answer names it
    /// by its xpub.
    pub fn provider_generate_key(
        &self,
        req: &GenerateKey,
    ) -> Result<(ProviderKeyRow, StoredKey, AuditRecord), ProviderRefused> {
        let event = AuditEvent::ProviderKeyGenerated;
        let mut facts = KeyFacts {
            public: None,
            source: Some(req.source),
            key_type: Some(req.key_type),
            coin: Some(&req.coin),
        };
        if let Err(e) = req.check() {
            return Err(self.provider_refuse(event, facts, bad(e.0)));
        }
        let made = (|| -> Result<(String, ProviderKeyRow), EnvError> {
            let raw = hd::generate_bip32(&mut rng::SystemRng)?;
            let node = ExtendedKey::from_bip32(raw.expose())
                .map_err(|_| EnvError::InvalidKeyMaterial("generated bip32 node"))?;
            let public = node
                .to_bip32_public(hd::VERSION_XPUB)
                .map_err(|_| EnvError::InvalidKeyMaterial("generated bip32 node"))?;
            let xpub = base58::encode(&public);
            let xprv = SecretBytes::new(base58::encode(raw.expose()).into_bytes());
            let row = self.sealed_row(
                xpub.clone(),
                req.source,
                req.key_type,
                req.coin.clone(),
                xprv.expose(),
            )?;
            Ok((xpub, row))
        })();
        let (xpub, row) = made.map_err(|e| {
            self.provider_refuse(event, facts, ProviderError::StoredKey(e.to_string()))
        })?;
        facts.public = Some(&xpub);
        let audit = self.provider_ok(event, facts, |_| {})?;
        let answer = StoredKey {
            public: xpub.clone(),
            coin: req.coin.clone(),
            source: req.source,
            key_type: req.key_type,
        };
        Ok((row, answer, audit))
    }

    fn open_row(&self, row: &ProviderKeyRow) -> Result<SecretBytes, ProviderError> {
        envelope::open_key(&self.keys, &binding(row), row.sealed.as_bytes()).map_err(|e| {
            tracing::error!(error = %e, "a stored key-provider row does not open");
            ProviderError::StoredKey(
                "the stored key does not open: its row was changed or moved".to_owned(),
            )
        })
    }

    /// `GET /key/{pub}?source=`: the stored key, opened for the manager.
    pub fn provider_fetch_key(
        &self,
        row: &ProviderKeyRow,
    ) -> Result<(FetchedKey, AuditRecord), ProviderRefused> {
        let event = AuditEvent::ProviderKeyFetched;
        let facts = KeyFacts::of_row(row);
        let prv = self
            .open_row(row)
            .and_then(|p| {
                String::from_utf8(p.expose().to_vec())
                    .map_err(|_| ProviderError::StoredKey("the stored key is not text".to_owned()))
            })
            .map_err(|e| self.provider_refuse(event, facts, e))?;
        let audit = self.provider_ok(event, facts, |_| {})?;
        Ok((
            FetchedKey {
                public: row.public.clone(),
                prv: SecretText::new(prv),
                source: row.source,
                key_type: row.key_type,
            },
            audit,
        ))
    }

    /// `POST /sign` with a stored independent key: an operation hash
    /// (`0x` + 32 bytes) is signed by the xpub's own key, answered as
    /// Ethereum's 65-byte `0x r ‖ s ‖ v` with low S and v = 27 + recovery id.
    pub fn provider_sign(
        &self,
        row: &ProviderKeyRow,
        req: &SignPayload,
    ) -> Result<(SignatureText, AuditRecord), ProviderRefused> {
        let event = AuditEvent::ProviderSign;
        let facts = KeyFacts::of_row(row);
        let payload_sha256 = Digest32(sha256(req.signable_payload.as_bytes()));
        let signed = self.provider_sign_inner(row, req);
        match signed {
            Ok(signature) => {
                let audit = self.provider_ok(event, facts, |e| {
                    e.payload_sha256 = Some(payload_sha256);
                })?;
                Ok((signature, audit))
            }
            Err(error) => {
                let mut entry = facts.entry(event);
                entry.payload_sha256 = Some(payload_sha256);
                Err(self.provider_refuse_entry(entry, error))
            }
        }
    }

    fn provider_sign_inner(
        &self,
        row: &ProviderKeyRow,
        req: &SignPayload,
    ) -> Result<SignatureText, ProviderError> {
        req.check().map_err(|e| bad(e.0))?;
        if row.key_type != ProviderKeyType::Independent {
            return Err(bad(
                "sign needs an independent key: tss key shares sign in the wallet manager's MPC rounds",
            ));
        }
        let prv = self.open_row(row)?;
        let text = std::str::from_utf8(prv.expose())
            .map_err(|_| ProviderError::StoredKey("the stored key is not text".to_owned()))?;
        let stored_key_broken =
            || ProviderError::StoredKey("the stored independent key is not an xprv".to_owned());
        let Some(digest) = operation_hash(&req.signable_payload) else {
            // A UTXO coin's PSBT.
            let raw = base58::decode(text).map_err(|_| stored_key_broken())?;
            let signed = super::psbt::sign_psbt(raw.expose(), &req.signable_payload)?;
            return Ok(SignatureText { signature: signed });
        };
        let node = parse_xprv(text).map_err(|_| stored_key_broken())?;
        let key = secp256k1::PrivateKey::from_scalar(node.private_key()).ok_or_else(|| {
            ProviderError::StoredKey("the stored key's scalar is out of range".to_owned())
        })?;
        let sig = key
            .sign_ecdsa(&digest)
            .map_err(|e| ProviderError::StoredKey(format!("signing failed: {e}")))?;
        let mut rsv = Vec::with_capacity(65);
        rsv.extend_from_slice(&sig.signature);
        rsv.push(27 + sig.recovery_id);
        Ok(SignatureText {
            signature: format!("0x{}", kms_crypto::hex(&rsv)),
        })
    }

    /// `POST /generateDataKey`: 32 random bytes, given as 64 lowercase hex
    /// digits (the manager uses the string itself as a password), and
    /// their wrapping under the current master key.
    pub fn provider_generate_data_key(&self) -> Result<(DataKey, AuditRecord), ProviderRefused> {
        let event = AuditEvent::ProviderDataKeyGenerated;
        let (key, wrapped) = envelope::generate_data_key(&self.keys).map_err(|e| {
            self.provider_refuse(
                event,
                KeyFacts::default(),
                ProviderError::StoredKey(e.to_string()),
            )
        })?;
        let version = envelope::sealed_version(&wrapped).ok();
        let audit = self.provider_ok(event, KeyFacts::default(), |e| {
            e.master_key_version = version;
        })?;
        Ok((
            DataKey {
                plaintext_key: SecretText::new(kms_crypto::hex(key.expose())),
                encrypted_key: b64::encode(&wrapped),
            },
            audit,
        ))
    }

    /// `POST /decryptDataKey`: the same string `generateDataKey` gave,
    /// under whichever master-key version wrapped it; anything else is a
    /// 400 (a token this provider did not write, or tampered).
    pub fn provider_decrypt_data_key(
        &self,
        req: &DecryptDataKey,
    ) -> Result<(DecryptedDataKey, AuditRecord), ProviderRefused> {
        let event = AuditEvent::ProviderDataKeyDecrypted;
        let opened = (|| {
            req.check().map_err(|e| bad(e.0))?;
            let wrapped = b64::decode(&req.encrypted_key)
                .map_err(|_| bad("encryptedKey is not a data key of this provider"))?;
            let version = envelope::sealed_version(&wrapped).ok();
            let key = envelope::open_data_key(&self.keys, &wrapped).map_err(|e| match e {
                kms_crypto::envelope::EnvelopeError::UnknownKeyVersion(v)
                    if self.keys.is_retired(v) =>
                {
                    bad(format!(
                        "encryptedKey is sealed under master key version {v}, which is retired"
                    ))
                }
                _ => bad("encryptedKey is not a data key of this provider, or was changed"),
            })?;
            Ok((key, version))
        })();
        let (key, version) =
            opened.map_err(|error| self.provider_refuse(event, KeyFacts::default(), error))?;
        let audit = self.provider_ok(event, KeyFacts::default(), |e| {
            e.master_key_version = version;
        })?;
        Ok((
            DecryptedDataKey {
                plaintext_key: SecretText::new(kms_crypto::hex(key.expose())),
            },
            audit,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_hashes() {
        let h = format!("0x{}", "ab".repeat(32));
        assert_eq!(operation_hash(&h), Some([0xab; 32]));
        assert_eq!(
            operation_hash(&h.to_uppercase().replacen("0X", "0x", 1)),
            Some([0xab; 32])
        );
        for bad in [
            "",
            "0x",
            &"ab".repeat(32),
            &format!("0x{}", "ab".repeat(31)),
            &format!("0x{}zz", "ab".repeat(31)),
        ] {
            assert_eq!(operation_hash(bad), None, "{bad}");
        }
    }
}
