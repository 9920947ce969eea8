//! BitGo's key-provider API (docs/bitgo.md): the bodies BitGo's Advanced
//! Wallet Manager sends and expects, member for member as its client's
//! schemas have them (camelCase, `pub`, `type`), and the internal calls
//! the secure environment makes to kms-api's internal listener to keep the
//! sealed keys in the store.
//!
//! Every string member BitGo's contract lists as required must be present,
//! a string, and not empty; enums take only their listed values. Members
//! the contract does not list are ignored (BitGo sends `seed`, which no
//! operation uses). A private key (`prv`) is zeroized when dropped and
//! never printed.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::audit::AuditRecord;
use crate::Bytes;

/// Largest body of the key-provider API: `tss` key shares are opaque JSON
/// or base64 of tens of KiB.
pub const MAX_PROVIDER_BODY_BYTES: usize = 1024 * 1024;

/// Which of a wallet's keys: BitGo's `user` or `backup` key. With `pub`, it
/// identifies a stored key: the same pub under both is two keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    User,
    Backup,
}

impl KeySource {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Backup => "backup",
        }
    }

    /// The query-string value, as the contract spells it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Self::User),
            "backup" => Some(Self::Backup),
            _ => None,
        }
    }
}

/// `independent`: a BIP-32 key (`prv` an xprv, `pub` its xpub); `tss`: an
/// MPC key share, opaque to the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProviderKeyType {
    Independent,
    Tss,
}

impl ProviderKeyType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Independent => "independent",
            Self::Tss => "tss",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "independent" => Some(Self::Independent),
            "tss" => Some(Self::Tss),
            _ => None,
        }
    }
}

/// A private key or key share as text, wiped when dropped.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretText({} bytes)", self.0.len())
    }
}

impl Serialize for SecretText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// A body that parsed but breaks the contract: an empty member, a value
/// this provider does not serve. Answered 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn non_empty(name: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid(format!("{name} must not be empty")));
    }
    Ok(())
}

/// Longest coin name kept (BitGo's are short tickers: `btc`, `hteth`).
pub const MAX_COIN_BYTES: usize = 64;

fn coin_ok(coin: &str) -> Result<(), Invalid> {
    non_empty("coin", coin)?;
    if coin.len() > MAX_COIN_BYTES
        || !coin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b':')
    {
        return Err(Invalid(format!(
            "coin must be at most {MAX_COIN_BYTES} letters, digits, '_', '-' or ':'"
        )));
    }
    Ok(())
}

/// `POST /key`: store a key the manager made.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreKey {
    pub prv: SecretText,
    #[serde(rename = "pub")]
    pub public: String,
    pub coin: String,
    pub source: KeySource,
    #[serde(rename = "type")]
    pub key_type: ProviderKeyType,
    /// Sent by the manager for some coins; not used by any operation.
    #[serde(default)]
    pub seed: Option<SecretText>,
}

impl StoreKey {
    pub fn check(&self) -> Result<(), Invalid> {
        non_empty("prv", self.prv.expose())?;
        non_empty("pub", &self.public)?;
        coin_ok(&self.coin)
    }
}

/// The answer to `POST /key` and `POST /key/generate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    #[serde(rename = "pub")]
    pub public: String,
    pub coin: String,
    pub source: KeySource,
    #[serde(rename = "type")]
    pub key_type: ProviderKeyType,
}

/// The answer to `GET /key/{pub}?source=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedKey {
    #[serde(rename = "pub")]
    pub public: String,
    pub prv: SecretText,
    pub source: KeySource,
    #[serde(rename = "type")]
    pub key_type: ProviderKeyType,
}

/// `POST /key/generate`: a key made and kept in the secure environment.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerateKey {
    pub coin: String,
    pub source: KeySource,
    #[serde(rename = "type")]
    pub key_type: ProviderKeyType,
}

impl GenerateKey {
    pub fn check(&self) -> Result<(), Invalid> {
        coin_ok(&self.coin)?;
        if self.key_type != ProviderKeyType::Independent {
            return Err(Invalid(
                "type must be independent: tss key shares are made by the wallet manager's MPC rounds, not by the provider".to_owned(),
            ));
        }
        Ok(())
    }
}

/// `POST /sign`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignPayload {
    #[serde(rename = "pub")]
    pub public: String,
    pub source: KeySource,
    pub algorithm: String,
    pub signable_payload: String,
}

impl SignPayload {
    pub fn check(&self) -> Result<(), Invalid> {
        non_empty("pub", &self.public)?;
        non_empty("signablePayload", &self.signable_payload)?;
        if self.algorithm != "ecdsa" {
            return Err(Invalid(format!(
                "algorithm must be ecdsa (got {:?})",
                self.algorithm
            )));
        }
        Ok(())
    }
}

/// The answer to `POST /sign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureText {
    pub signature: String,
}

/// The data-key types the contract names; this provider makes `AES-256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataKeyType {
    #[serde(rename = "AES-256")]
    Aes256,
    #[serde(rename = "RSA-2048")]
    Rsa2048,
    #[serde(rename = "ECDSA-P256")]
    EcdsaP256,
}

/// `POST /generateDataKey`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateDataKey {
    pub key_type: DataKeyType,
}

impl GenerateDataKey {
    pub fn check(&self) -> Result<(), Invalid> {
        if self.key_type != DataKeyType::Aes256 {
            return Err(Invalid(
                "keyType must be AES-256: the only data key this provider makes".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The answer to `POST /generateDataKey`: the key (the manager uses the
/// string itself as a password) and the token that gives it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataKey {
    pub plaintext_key: SecretText,
    pub encrypted_key: String,
}

/// `POST /decryptDataKey`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptDataKey {
    pub encrypted_key: String,
}

impl DecryptDataKey {
    pub fn check(&self) -> Result<(), Invalid> {
        non_empty("encryptedKey", &self.encrypted_key)
    }
}

/// The answer to `POST /decryptDataKey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptedDataKey {
    pub plaintext_key: SecretText,
}

/// Every error of the key-provider API: `{"message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub message: String,
}

// ---- The secure environment's calls to kms-api's internal listener ----

/// Stores a sealed key: 201, or 409 when `(pub, source)` is taken (the row
/// and its audit record are then not stored).
pub const PATH_INTERNAL_KEYS: &str = "/internal/v1/provider-keys";
/// Finds a stored key by `(pub, source)`: 200 with the row, or 404.
pub const PATH_INTERNAL_KEYS_LOOKUP: &str = "/internal/v1/provider-keys/lookup";
/// Stores the copy of an audit record the secure environment wrote: 204.
pub const PATH_INTERNAL_AUDIT: &str = "/internal/v1/audit-records";

/// A stored key as the store keeps it: the columns the seal is bound to,
/// and the sealed private part (docs/bitgo.md, "Stored keys").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderKeyRow {
    #[serde(rename = "pub")]
    pub public: String,
    pub source: KeySource,
    #[serde(rename = "type")]
    pub key_type: ProviderKeyType,
    pub coin: String,
    pub master_key_version: u32,
    pub sealed: Bytes,
    pub created_at: u64,
}

/// `POST /internal/v1/provider-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsertProviderKey {
    pub row: ProviderKeyRow,
    pub audit: AuditRecord,
}

/// `POST /internal/v1/provider-keys/lookup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupProviderKey {
    #[serde(rename = "pub")]
    pub public: String,
    pub source: KeySource,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_as_bitgo_sends_them() {
        let k: StoreKey = serde_json::from_str(
            r#"{"prv":"xprv1","pub":"xpub1","coin":"tbtc","source":"user","type":"independent","seed":"s"}"#,
        )
        .unwrap();
        assert!(k.check().is_ok());
        assert_eq!(format!("{:?}", k.prv), "SecretText(5 bytes)");
        assert!(!format!("{k:?}").contains("xprv1"));
        let s: SignPayload = serde_json::from_str(
            r#"{"pub":"xpub1","source":"backup","algorithm":"ecdsa","signablePayload":"0x00"}"#,
        )
        .unwrap();
        assert!(s.check().is_ok());
        let d: GenerateDataKey = serde_json::from_str(r#"{"keyType":"AES-256"}"#).unwrap();
        assert!(d.check().is_ok());
        let out = serde_json::to_value(DataKey {
            plaintext_key: SecretText::new("p".into()),
            encrypted_key: "e".into(),
        })
        .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"plaintextKey": "p", "encryptedKey": "e"})
        );
    }

    #[test]
    fn what_breaks_the_contract() {
        for bad in [
            r#"{"pub":"x","coin":"c","source":"user","type":"independent"}"#,
            r#"{"prv":1,"pub":"x","coin":"c","source":"user","type":"independent"}"#,
            r#"{"prv":"p","pub":"x","coin":"c","source":"bitgo","type":"independent"}"#,
            r#"{"prv":"p","pub":"x","coin":"c","source":"user","type":"enclaved"}"#,
        ] {
            assert!(serde_json::from_str::<StoreKey>(bad).is_err(), "{bad}");
        }
        for empty in [
            r#"{"prv":"","pub":"x","coin":"c","source":"user","type":"tss"}"#,
            r#"{"prv":"p","pub":"","coin":"c","source":"user","type":"tss"}"#,
            r#"{"prv":"p","pub":"x","coin":"","source":"user","type":"tss"}"#,
            r#"{"prv":"p","pub":"x","coin":"b t c","source":"user","type":"tss"}"#,
        ] {
            let k: StoreKey = serde_json::from_str(empty).unwrap();
            assert!(k.check().is_err(), "{empty}");
        }
        let rsa: GenerateDataKey = serde_json::from_str(r#"{"keyType":"RSA-2048"}"#).unwrap();
        assert!(rsa.check().is_err());
        assert!(serde_json::from_str::<GenerateDataKey>(r#"{"keyType":"AES-128"}"#).is_err());
        let tss: GenerateKey =
            serde_json::from_str(r#"{"coin":"btc","source":"user","type":"tss"}"#).unwrap();
        assert!(tss.check().is_err());
        let eddsa: SignPayload = serde_json::from_str(
            r#"{"pub":"x","source":"user","algorithm":"eddsa","signablePayload":"00"}"#,
        )
        .unwrap();
        assert!(eddsa.check().is_err());
    }
}
