//! The key material plaintext of PROTOCOL.md, "Key material plaintext":
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
}

impl KeyType {
    pub const ALL: [KeyType; 4] = [Self::Secp256k1, Self::P256, Self::Ed25519, Self::Raw];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Secp256k1 => "secp256k1",
            Self::P256 => "p256",
            Self::Ed25519 => "ed25519",
            Self::Raw => "raw",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The allowed lengths of the private key in bytes.
    pub const fn private_key_len(self) -> (usize, usize) {
        match self {
            Self::Secp256k1 | Self::P256 | Self::Ed25519 => (32, 32),
            Self::Raw => (1, 1024),
        }
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
        }
        assert_eq!(KeyType::parse("Secp256k1"), None);
    }
}
