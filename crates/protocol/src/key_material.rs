//! The key material plaintext of docs/protocol.md, "Key material plaintext":
//! `{"v": 1, "key_type": "...", "private_key": "<base64url>"}`, optionally
//! with `owner_public_key`.
//!
//! Parsing here is strict: another `v`, an unknown `key_type`, a duplicated,
//! missing or unknown member all fail. Range checks of scalars need curve
//! arithmetic and live in `kms-crypto`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of key a wallet can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Secp256k1,
    P256,
    Ed25519,
    Raw,
    /// BIP-39 entropy: an HD wallet on every curve (docs/protocol.md §8).
    Bip39,
    /// A BIP-32 extended private key: an HD wallet on secp256k1.
    Bip32,
}

/// Lengths of BIP-39 entropy in bytes (12, 15, 18, 21 or 24 words).
pub const BIP39_ENTROPY_LENGTHS: [usize; 5] = [16, 20, 24, 28, 32];

/// Length of a BIP-32 extended key's serialization (its Base58Check
/// payload without the checksum).
pub const BIP32_SERIALIZED_LEN: usize = 78;

impl KeyType {
    pub const ALL: [KeyType; 6] = [
        Self::Secp256k1,
        Self::P256,
        Self::Ed25519,
        Self::Raw,
        Self::Bip39,
        Self::Bip32,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Secp256k1 => "secp256k1",
            Self::P256 => "p256",
            Self::Ed25519 => "ed25519",
            Self::Raw => "raw",
            Self::Bip39 => "bip39",
            Self::Bip32 => "bip32",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether the private key has an allowed length for this type.
    pub fn private_key_len_ok(self, len: usize) -> bool {
        match self {
            Self::Secp256k1 | Self::P256 | Self::Ed25519 => len == 32,
            Self::Raw => (1..=1024).contains(&len),
            Self::Bip39 => BIP39_ENTROPY_LENGTHS.contains(&len),
            Self::Bip32 => len == BIP32_SERIALIZED_LEN,
        }
    }

    /// HD wallets hold a tree of keys; a request on one names a path.
    pub const fn is_hd(self) -> bool {
        matches!(self, Self::Bip39 | Self::Bip32)
    }

    /// The single key's curve, for the single-key types.
    pub const fn single_key_curve(self) -> Option<Curve> {
        match self {
            Self::Secp256k1 => Some(Curve::Secp256k1),
            Self::P256 => Some(Curve::P256),
            Self::Ed25519 => Some(Curve::Ed25519),
            Self::Raw | Self::Bip39 | Self::Bip32 => None,
        }
    }

    /// Whether this wallet holds keys on `curve` (docs/protocol.md §8's
    /// table: `bip39` every curve, `bip32` secp256k1, a single key its own).
    pub fn has_curve(self, curve: Curve) -> bool {
        match self {
            Self::Bip39 => true,
            Self::Bip32 => curve == Curve::Secp256k1,
            other => other.single_key_curve() == Some(curve),
        }
    }
}

/// The curves keys live on (docs/protocol.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Curve {
    Secp256k1,
    P256,
    Ed25519,
}

impl Curve {
    pub const ALL: [Curve; 3] = [Self::Secp256k1, Self::P256, Self::Ed25519];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Secp256k1 => "secp256k1",
            Self::P256 => "p256",
            Self::Ed25519 => "ed25519",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// Length of a public key as the service reports it: SEC1 compressed
    /// (33) on the Weierstrass curves, 32 bytes on ed25519.
    pub const fn public_key_len(self) -> usize {
        match self {
            Self::Secp256k1 | Self::P256 => 33,
            Self::Ed25519 => 32,
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The plaintext as it appears on the wire, before its bytes are checked.
///
/// Holds the private key as base64url text; callers decode it straight into
/// a zeroizing secret type and drop this value (whose `Drop` wipes the text).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMaterialJson {
    pub v: u64,
    pub key_type: String,
    pub private_key: String,
    #[serde(default)]
    pub owner_public_key: Option<String>,
}

impl KeyMaterialJson {
    /// Parses the outer shape; `None` for anything that is not one JSON
    /// object with exactly these members (no detail, so no oracle).
    pub fn parse(plaintext: &[u8]) -> Option<Self> {
        let first = plaintext.iter().find(|b| !b.is_ascii_whitespace())?;
        if *first != b'{' {
            return None;
        }
        serde_json::from_slice(plaintext).ok()
    }
}

impl Drop for KeyMaterialJson {
    fn drop(&mut self) {
        // The base64 text of the private key is as secret as the key.
        zeroize::Zeroize::zeroize(&mut self.private_key);
    }
}

impl fmt::Debug for KeyMaterialJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterialJson")
            .field("v", &self.v)
            .field("key_type", &self.key_type)
            .field("private_key", &"[REDACTED]")
            .field("owner_public_key", &self.owner_public_key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_members_only() {
        let ok = br#"{"v": 1, "key_type": "raw", "private_key": "AQ"}"#;
        let m = KeyMaterialJson::parse(ok).unwrap();
        assert_eq!(m.v, 1);
        assert_eq!(m.key_type, "raw");
        for bad in [
            &br#"{"v": 1, "key_type": "raw", "private_key": "AQ", "x": 1}"#[..],
            br#"{"v": 1, "v": 1, "key_type": "raw", "private_key": "AQ"}"#,
            br#"{"key_type": "raw", "private_key": "AQ"}"#,
            br#"{"v": 1.0, "key_type": "raw", "private_key": "AQ"}"#,
            br#"{"v": "1", "key_type": "raw", "private_key": "AQ"}"#,
            br#"[1, "raw", "AQ"]"#,
            br#"{"v": 1, "key_type": "raw", "private_key": "AQ"} x"#,
            b"\xff",
        ] {
            assert!(
                KeyMaterialJson::parse(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn key_types_round_trip() {
        for k in KeyType::ALL {
            assert_eq!(KeyType::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        assert_eq!(KeyType::parse("Secp256k1"), None);
        for c in Curve::ALL {
            assert_eq!(Curve::parse(c.as_str()), Some(c));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.as_str())
            );
        }
    }

    #[test]
    fn lengths_and_curves_follow_the_table() {
        assert!(KeyType::Bip39.private_key_len_ok(16));
        assert!(KeyType::Bip39.private_key_len_ok(28));
        assert!(!KeyType::Bip39.private_key_len_ok(17));
        assert!(!KeyType::Bip39.private_key_len_ok(36));
        assert!(KeyType::Bip32.private_key_len_ok(78));
        assert!(!KeyType::Bip32.private_key_len_ok(82));
        assert!(KeyType::Raw.private_key_len_ok(1024));
        assert!(!KeyType::Raw.private_key_len_ok(0));
        assert!(KeyType::Bip39.has_curve(Curve::Ed25519));
        assert!(KeyType::Bip32.has_curve(Curve::Secp256k1));
        assert!(!KeyType::Bip32.has_curve(Curve::P256));
        assert!(!KeyType::Raw.has_curve(Curve::Secp256k1));
        assert!(KeyType::P256.has_curve(Curve::P256));
        assert!(!KeyType::P256.has_curve(Curve::Secp256k1));
    }
}
