//! Data keys (`POST /v1/data-keys`, `POST /v1/data-keys/decrypt`): AES-256
//! keys generated in the secure environment for callers' own envelope
//! encryption, as AWS KMS's GenerateDataKey / Decrypt. Byte layouts are in
//! `docs/data-keys.md`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::{Bytes, HpkeCiphertext, Id, P256PublicKey, Signature};

/// Limits of an encryption context.
pub const CONTEXT_MAX_PAIRS: usize = 16;
pub const CONTEXT_MAX_KEY_BYTES: usize = 128;
pub const CONTEXT_MAX_VALUE_BYTES: usize = 256;

/// Largest `wrapped_key` this build writes or reads (header, id, nonce,
/// key, tag).
pub const WRAPPED_DATA_KEY_LEN: usize = 1 + 4 + 16 + 12 + 32 + 16;

/// A caller's encryption context: string pairs bound to a data key as AAD.
/// The same pairs (in any order) must be given to decrypt it. Keys are
/// 1–128 bytes, values at most 256, at most 16 pairs; a key given twice
/// is refused.
#[derive(Clone, PartialEq, Eq, Default, Serialize)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl fmt::Debug for EncryptionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl EncryptionContext {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, &'static str> {
        let mut m = BTreeMap::new();
        for (k, v) in pairs {
            check_pair(&k, &v)?;
            if m.insert(k, v).is_some() {
                return Err("an encryption context key is given twice");
            }
            if m.len() > CONTEXT_MAX_PAIRS {
                return Err("an encryption context holds at most 16 pairs");
            }
        }
        Ok(Self(m))
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `u16be(n) ‖ n × (u16be(len(key)) ‖ key ‖ u16be(len(value)) ‖ value)`,
    /// pairs sorted by the keys' UTF-8 bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            2 + self
                .0
                .iter()
                .map(|(k, v)| 4 + k.len() + v.len())
                .sum::<usize>(),
        );
        // Bounded by the limits above, so every length fits in u16.
        out.extend_from_slice(
            &u16::try_from(self.0.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        for (k, v) in &self.0 {
            for s in [k, v] {
                out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(u16::MAX).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out
    }
}

fn check_pair(k: &str, v: &str) -> Result<(), &'static str> {
    if k.is_empty() || k.len() > CONTEXT_MAX_KEY_BYTES {
        return Err("an encryption context key is 1 to 128 bytes");
    }
    if v.len() > CONTEXT_MAX_VALUE_BYTES {
        return Err("an encryption context value is at most 256 bytes");
    }
    Ok(())
}

impl<'de> Deserialize<'de> for EncryptionContext {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EncryptionContext;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut m = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    check_pair(&k, &v).map_err(serde::de::Error::custom)?;
                    if m.insert(k, v).is_some() {
                        return Err(serde::de::Error::custom(
                            "an encryption context key is given twice",
                        ));
                    }
                    if m.len() > CONTEXT_MAX_PAIRS {
                        return Err(serde::de::Error::custom(
                            "an encryption context holds at most 16 pairs",
                        ));
                    }
                }
                Ok(EncryptionContext(m))
            }
        }
        d.deserialize_map(V)
    }
}

/// `null` reads as absent (docs/protocol.md, "Request bodies").
fn context_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<EncryptionContext, D::Error> {
    Option::<EncryptionContext>::deserialize(d).map(Option::unwrap_or_default)
}

/// `POST /v1/data-keys` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GenerateDataKey {
    /// Bound to the data key; required again to decrypt it. Absent is `{}`.
    #[serde(default, deserialize_with = "context_or_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<std::collections::HashMap<String, String>>))]
    pub encryption_context: EncryptionContext,
    /// The P-256 key the plaintext data key is sealed to.
    pub recipient_public_key: P256PublicKey,
}

/// `POST /v1/data-keys/decrypt` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecryptDataKey {
    pub wrapped_key: Bytes,
    #[serde(default, deserialize_with = "context_or_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<std::collections::HashMap<String, String>>))]
    pub encryption_context: EncryptionContext,
    pub recipient_public_key: P256PublicKey,
}

/// `POST /v1/data-keys` and `POST /v1/data-keys/decrypt` → 200: the data
/// key wrapped (keep it) and sealed to the recipient (open it, use it,
/// wipe it), signed by the identity key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DataKey {
    pub data_key_id: Id,
    /// The master-key version `wrapped_key` is under.
    pub master_key_version: u32,
    pub wrapped_key: Bytes,
    pub recipient_public_key: P256PublicKey,
    /// HPKE (§3's suite) of the 32-byte data key to the recipient.
    pub encrypted_key: HpkeCiphertext,
    pub signature: Signature,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_canonical_and_strict() {
        let a: EncryptionContext = serde_json::from_str(r#"{"b":"2","a":"1"}"#).unwrap();
        let b: EncryptionContext = serde_json::from_str(r#"{"a":"1","b":"2"}"#).unwrap();
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        assert_eq!(
            a.canonical_bytes(),
            b"\x00\x02\x00\x01a\x00\x011\x00\x01b\x00\x012".to_vec()
        );
        assert_eq!(EncryptionContext::default().canonical_bytes(), vec![0, 0]);
        for bad in [
            r#"{"a":"1","a":"2"}"#,
            r#"{"":"1"}"#,
            r#"{"a":1}"#,
            r#"{"a":null}"#,
            r#"["a"]"#,
        ] {
            assert!(
                serde_json::from_str::<EncryptionContext>(bad).is_err(),
                "{bad}"
            );
        }
        let long = format!(r#"{{"{}":"x"}}"#, "k".repeat(129));
        assert!(serde_json::from_str::<EncryptionContext>(&long).is_err());
        let key = crate::b64::encode([4u8; 65]);
        let g: GenerateDataKey = serde_json::from_str(&format!(
            r#"{{"encryption_context": null, "recipient_public_key": "{key}"}}"#
        ))
        .unwrap();
        assert_eq!(g.encryption_context, EncryptionContext::default());
        let g: GenerateDataKey =
            serde_json::from_str(&format!(r#"{{"recipient_public_key": "{key}"}}"#)).unwrap();
        assert_eq!(g.encryption_context, EncryptionContext::default());
        let many: String = (0..17)
            .map(|i| format!(r#""k{i}":"v""#))
            .collect::<Vec<_>>()
            .join(",");
        assert!(serde_json::from_str::<EncryptionContext>(&format!("{{{many}}}")).is_err());
    }
}
