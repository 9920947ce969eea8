//! Request and response bodies of the public API (PROTOCOL.md §§0–6).
//!
//! Requests ignore unknown members, reject a known member given twice, and
//! read `null` as absent, as PROTOCOL.md's "Request bodies" asks.

use serde::{Deserialize, Serialize};

use crate::{Bytes, HpkeCiphertext, Id, KeyType, Nonce, P256PublicKey, Signature};

/// `GET /v1/health` (§0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: String,
}

/// `GET /v1/attestation` (§1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attestation {
    pub provider: String,
    pub identity_public_key: P256PublicKey,
    /// Lowercase hex SHA-256 of the secure-environment executable.
    pub measurement: String,
    pub document: Option<Bytes>,
}

/// `POST /v1/import-sessions` body (§2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StartImportSession {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_nonce: Option<Nonce>,
}

/// The HPKE suite ids, informational (§2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HpkeSuite {
    pub kem: u16,
    pub kdf: u16,
    pub aead: u16,
}

impl HpkeSuite {
    /// DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-256-GCM.
    pub const V1: Self = Self {
        kem: 0x0010,
        kdf: 0x0001,
        aead: 0x0002,
    };
}

/// The identity key's signature over a session (§2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionProof {
    pub identity_public_key: P256PublicKey,
    pub signature: Signature,
}

/// `POST /v1/import-sessions` → 201 (§2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportEnvelope {
    pub session_id: Id,
    pub session_public_key: P256PublicKey,
    pub expires_at: u64,
    pub hpke_suite: HpkeSuite,
    pub proof: SessionProof,
}

/// `POST /v1/import-sessions/{session_id}/complete` body (§3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteImport {
    pub encrypted_key: HpkeCiphertext,
}

/// `POST /v1/import-sessions/{session_id}/complete` → 201 (§3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportReceipt {
    pub wallet_id: Id,
    pub key_type: KeyType,
    pub public_key: Option<Bytes>,
    pub owner_public_key: Option<P256PublicKey>,
    pub created_at: u64,
    pub signature: Signature,
}

/// The owner's signed consent to one export (§6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Authorization {
    pub expires_at: u64,
    pub nonce: Nonce,
    pub signature: Signature,
}

/// `POST /v1/wallets/{wallet_id}/export` body (§4, §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportWallet {
    pub recipient_public_key: P256PublicKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
}

/// `POST /v1/wallets/{wallet_id}/export` → 200 (§4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportBundle {
    pub wallet_id: Id,
    pub key_type: KeyType,
    pub recipient_public_key: P256PublicKey,
    pub encrypted_key: HpkeCiphertext,
    pub signature: Signature,
}

/// `GET /v1/wallets/{wallet_id}` (§5): metadata only, never a secret or ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletMetadata {
    pub wallet_id: Id,
    pub key_type: KeyType,
    pub public_key: Option<Bytes>,
    pub owner_public_key: Option<P256PublicKey>,
    pub created_at: u64,
}

/// `GET /v1/wallets?limit=N&after=ID` (§5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletPage {
    pub wallets: Vec<WalletMetadata>,
    pub next: Option<Id>,
}

/// Limits of `GET /v1/wallets` (§5).
pub const LIST_LIMIT_DEFAULT: u32 = 100;
pub const LIST_LIMIT_MAX: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_follow_the_body_rules() {
        // Unknown members are ignored, null counts as absent.
        let s: StartImportSession =
            serde_json::from_str(r#"{"client_nonce": null, "other": [1]}"#).unwrap();
        assert_eq!(s.client_nonce, None);
        // A known member given twice is rejected.
        let dup = r#"{"encrypted_key": "AA", "encrypted_key": "AA"}"#;
        assert!(serde_json::from_str::<CompleteImport>(dup).is_err());
        // Integers carry no fraction or exponent.
        let auth = |e: &str| {
            format!(
                r#"{{"expires_at": {e}, "nonce": "{n}", "signature": "{s}"}}"#,
                n = crate::b64::encode([0u8; 16]),
                s = crate::b64::encode([0u8; 64])
            )
        };
        assert!(serde_json::from_str::<Authorization>(&auth("1")).is_ok());
        assert!(serde_json::from_str::<Authorization>(&auth("1.0")).is_err());
        assert!(serde_json::from_str::<Authorization>(&auth("1e0")).is_err());
        assert!(serde_json::from_str::<Authorization>(&auth("-1")).is_err());
    }

    #[test]
    fn absent_keys_serialize_as_null() {
        let m = WalletMetadata {
            wallet_id: Id::from_bytes([1; 16]),
            key_type: KeyType::Raw,
            public_key: None,
            owner_public_key: None,
            created_at: 5,
        };
        let v = serde_json::to_value(&m).unwrap();
        assert!(v["public_key"].is_null());
        assert!(v["owner_public_key"].is_null());
        assert_eq!(v["key_type"], "raw");
        assert_eq!(v["wallet_id"], "01010101-0101-0101-0101-010101010101");
    }
}
