//! Request and response bodies of the public API (docs/protocol.md §§0–9).
//!
//! Requests ignore unknown members, reject a known member given twice, and
//! read `null` as absent, as docs/protocol.md's "Request bodies" asks.

use serde::{Deserialize, Serialize};

use crate::hd::DerivationPath;
use crate::key_material::Curve;
use crate::{Bytes, Bytes32, HpkeCiphertext, Id, KeyType, Nonce, P256PublicKey, Signature};

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

/// `POST /v1/wallets` body (§7): a key type the service can generate
/// (every type but `raw`), optionally an owner and a client nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GenerateWallet {
    #[serde(deserialize_with = "generatable_key_type")]
    pub key_type: KeyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_public_key: Option<P256PublicKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_nonce: Option<Nonce>,
}

/// A `key_type` `POST /v1/wallets` accepts: `raw` is imported, never generated.
fn generatable_key_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<KeyType, D::Error> {
    match KeyType::deserialize(d)? {
        KeyType::Raw => Err(serde::de::Error::custom(
            "key_type raw cannot be generated; import it instead",
        )),
        k => Ok(k),
    }
}

/// `POST /v1/wallets` → 201 (§7): the new wallet and the identity key's
/// receipt over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GenerateReceipt {
    pub wallet_id: Id,
    pub key_type: KeyType,
    pub public_key: Option<Bytes>,
    pub owner_public_key: Option<P256PublicKey>,
    pub created_at: u64,
    pub signature: Signature,
}

/// `POST /v1/wallets/{wallet_id}/derive` body (§8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeriveKey {
    pub curve: Curve,
    pub path: DerivationPath,
}

/// `POST /v1/wallets/{wallet_id}/derive` → 200 (§8): the public key and
/// chain code at the path, signed by the identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DerivedKey {
    pub wallet_id: Id,
    pub curve: Curve,
    pub path: DerivationPath,
    pub public_key: Bytes,
    pub chain_code: Bytes32,
    pub signature: Signature,
}

/// The signature algorithms of §9.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// ECDSA over secp256k1 of a 32-byte digest: RFC 6979, low S, recovery id.
    EcdsaSecp256k1,
    /// BIP-340 Schnorr of a 32-byte message.
    SchnorrSecp256k1,
    /// BIP-340 by the BIP-341-tweaked key, of a 32-byte sighash.
    SchnorrSecp256k1Taproot,
    /// RFC 8032 Ed25519 of the message itself.
    Ed25519,
    /// ECDSA over P-256 of a 32-byte SHA-256 digest.
    EcdsaP256,
}

/// The longest `ed25519` payload (§9).
pub const ED25519_PAYLOAD_MAX: usize = 32 * 1024;

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Self::EcdsaSecp256k1,
        Self::SchnorrSecp256k1,
        Self::SchnorrSecp256k1Taproot,
        Self::Ed25519,
        Self::EcdsaP256,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::EcdsaSecp256k1 => "ecdsa-secp256k1",
            Self::SchnorrSecp256k1 => "schnorr-secp256k1",
            Self::SchnorrSecp256k1Taproot => "schnorr-secp256k1-taproot",
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256 => "ecdsa-p256",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }

    /// The curve of the key that signs.
    pub const fn curve(self) -> Curve {
        match self {
            Self::EcdsaSecp256k1 | Self::SchnorrSecp256k1 | Self::SchnorrSecp256k1Taproot => {
                Curve::Secp256k1
            }
            Self::Ed25519 => Curve::Ed25519,
            Self::EcdsaP256 => Curve::P256,
        }
    }

    /// Whether a payload of `len` bytes is one this algorithm signs: a
    /// 32-byte digest or message, or for `ed25519` 1 to 32 768 bytes.
    pub const fn payload_len_ok(self, len: usize) -> bool {
        match self {
            Self::Ed25519 => len >= 1 && len <= ED25519_PAYLOAD_MAX,
            _ => len == 32,
        }
    }

    /// Length of the public key answered: x-only (32) for the Schnorr
    /// algorithms, else the curve's reported form.
    pub const fn public_key_len(self) -> usize {
        match self {
            Self::SchnorrSecp256k1 | Self::SchnorrSecp256k1Taproot => 32,
            other => other.curve().public_key_len(),
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/wallets/{wallet_id}/sign` body (§9), checked as it parses:
/// the payload has its algorithm's length, and `merkle_root` is kept only
/// for `schnorr-secp256k1-taproot` (exactly 32 bytes there; with any other
/// algorithm it is ignored and counts as absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "SignRequestJson")]
pub struct SignRequest {
    pub algorithm: Algorithm,
    /// The key at this path (HD wallets); absent for single-key wallets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<DerivationPath>,
    pub payload: Bytes,
    /// BIP-341's script tree root (taproot only; absent: BIP-86, no tree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merkle_root: Option<Bytes32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
}

/// [`SignRequest`] as it arrives, before the cross-member checks.
#[derive(Deserialize)]
struct SignRequestJson {
    algorithm: Algorithm,
    #[serde(default)]
    path: Option<DerivationPath>,
    payload: Bytes,
    /// Read only for taproot, so that with another algorithm anything here
    /// is ignored, as §9 says.
    #[serde(default)]
    merkle_root: Option<serde_json::Value>,
    #[serde(default)]
    authorization: Option<Authorization>,
}

impl TryFrom<SignRequestJson> for SignRequest {
    type Error = String;

    fn try_from(j: SignRequestJson) -> Result<Self, String> {
        if !j.algorithm.payload_len_ok(j.payload.0.len()) {
            return Err(match j.algorithm {
                Algorithm::Ed25519 => "an ed25519 payload is 1 to 32768 bytes".to_owned(),
                a => format!("a {a} payload is 32 bytes"),
            });
        }
        let merkle_root = match (j.algorithm, j.merkle_root) {
            (Algorithm::SchnorrSecp256k1Taproot, Some(v)) if !v.is_null() => Some(
                serde_json::from_value::<Bytes32>(v)
                    .map_err(|_| "merkle_root is exactly 32 bytes of base64url".to_owned())?,
            ),
            _ => None,
        };
        Ok(Self {
            algorithm: j.algorithm,
            path: j.path,
            payload: j.payload,
            merkle_root,
            authorization: j.authorization,
        })
    }
}

/// `POST /v1/wallets/{wallet_id}/sign` → 200 (§9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignResponse {
    pub wallet_id: Id,
    pub algorithm: Algorithm,
    pub path: Option<DerivationPath>,
    /// The key that signed: SEC1 compressed (ECDSA), x-only (Schnorr; the
    /// tweaked output key for taproot), or 32 bytes (Ed25519).
    pub public_key: Bytes,
    pub signature: Signature,
    /// 0 or 1 for `ecdsa-secp256k1` (Ethereum's `v` is 27 + it), else null.
    pub recovery_id: Option<u8>,
}

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

    fn b64(n: usize) -> String {
        crate::b64::encode(vec![7u8; n])
    }

    #[test]
    fn generate_refuses_raw_and_unknown_types() {
        for (body, ok) in [
            (r#"{"key_type": "bip39"}"#.to_owned(), true),
            (
                r#"{"key_type": "bip32", "client_nonce": null}"#.to_owned(),
                true,
            ),
            (r#"{"key_type": "ed25519", "x": 1}"#.to_owned(), true),
            (r#"{"key_type": "raw"}"#.to_owned(), false),
            (r#"{"key_type": "rsa"}"#.to_owned(), false),
            (r#"{"key_type": "Bip39"}"#.to_owned(), false),
            (r#"{}"#.to_owned(), false),
            (
                r#"{"key_type": "p256", "key_type": "p256"}"#.to_owned(),
                false,
            ),
            (
                format!(r#"{{"key_type": "p256", "client_nonce": "{}"}}"#, b64(15)),
                false,
            ),
        ] {
            assert_eq!(
                serde_json::from_str::<GenerateWallet>(&body).is_ok(),
                ok,
                "{body}"
            );
        }
    }

    #[test]
    fn sign_requests_check_payloads_and_merkle_roots() {
        let parse = |body: String| serde_json::from_str::<SignRequest>(&body);
        let req = |alg: &str, payload: usize, extra: &str| {
            format!(
                r#"{{"algorithm": "{alg}", "payload": "{}"{extra}}}"#,
                b64(payload)
            )
        };
        assert!(parse(req("ecdsa-secp256k1", 32, "")).is_ok());
        assert!(parse(req("ecdsa-secp256k1", 31, "")).is_err());
        assert!(parse(req("ecdsa-p256", 33, "")).is_err());
        assert!(parse(req("schnorr-secp256k1", 0, "")).is_err());
        assert!(parse(req("ed25519", 1, "")).is_ok());
        assert!(parse(req("ed25519", 32768, "")).is_ok());
        assert!(parse(req("ed25519", 0, "")).is_err());
        assert!(parse(req("ed25519", 32769, "")).is_err());
        assert!(parse(req("ecdsa-secp256r1", 32, "")).is_err());
        // merkle_root: 32 bytes for taproot, anything (ignored) otherwise.
        let t = "schnorr-secp256k1-taproot";
        let root = |n: usize| format!(r#", "merkle_root": "{}""#, b64(n));
        assert_eq!(parse(req(t, 32, "")).unwrap().merkle_root, None);
        assert_eq!(
            parse(req(t, 32, r#", "merkle_root": null"#))
                .unwrap()
                .merkle_root,
            None
        );
        assert!(parse(req(t, 32, &root(32))).unwrap().merkle_root.is_some());
        assert!(parse(req(t, 32, &root(31))).is_err());
        assert!(parse(req(t, 32, &root(0))).is_err());
        assert!(parse(req(t, 32, r#", "merkle_root": 5"#)).is_err());
        let ignored = parse(req("ecdsa-secp256k1", 32, r#", "merkle_root": "!!""#)).unwrap();
        assert_eq!(ignored.merkle_root, None);
        // Paths parse with their grammar; null is absent.
        assert!(parse(req("ed25519", 5, r#", "path": "m/0'""#))
            .unwrap()
            .path
            .is_some());
        assert!(parse(req("ed25519", 5, r#", "path": null"#))
            .unwrap()
            .path
            .is_none());
        assert!(parse(req("ed25519", 5, r#", "path": "m/0h""#)).is_err());
        // A member given twice.
        assert!(parse(req("ed25519", 5, r#", "algorithm": "ed25519""#)).is_err());
        // What serializes parses back the same.
        let r = parse(req(t, 32, &root(32))).unwrap();
        let again: SignRequest = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(r, again);
    }

    #[test]
    fn algorithms_name_their_curves() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.as_str()), Some(a));
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::json!(a.as_str())
            );
        }
        assert_eq!(Algorithm::SchnorrSecp256k1Taproot.curve(), Curve::Secp256k1);
        assert_eq!(Algorithm::SchnorrSecp256k1.public_key_len(), 32);
        assert_eq!(Algorithm::EcdsaP256.public_key_len(), 33);
        assert_eq!(Algorithm::Ed25519.public_key_len(), 32);
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
