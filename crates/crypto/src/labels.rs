//! Every HPKE `info`, KDF label, AAD label and signature context, versioned.
//! No two purposes share a label (docs/design.md, "Key hierarchy").

/// Session proof signature context (docs/protocol.md §2).
pub const IMPORT_SESSION: &[u8] = b"kms/import-session/v1";
/// HPKE `info` prefix of an import (docs/protocol.md §3).
pub const IMPORT: &[u8] = b"kms/import/v1";
/// Import receipt signature context (docs/protocol.md §3).
pub const IMPORT_RECEIPT: &[u8] = b"kms/import-receipt/v1";
/// HPKE `info` prefix of an export (docs/protocol.md §4).
pub const EXPORT: &[u8] = b"kms/export/v1";
/// Export bundle signature context (docs/protocol.md §4).
pub const EXPORT_BUNDLE: &[u8] = b"kms/export-bundle/v1";
/// Owner's export authorization signature context (docs/protocol.md §6).
pub const EXPORT_REQUEST: &[u8] = b"kms/export-request/v1";
/// The identity key's receipt for a generated wallet (§7).
pub const GENERATE_RECEIPT: &[u8] = b"kms/generate-receipt/v1";
/// The identity key's signature over a derived public key (§8).
pub const DERIVED_KEY: &[u8] = b"kms/derived-key/v1";
/// What an owner signs to let a wallet sign (§9).
pub const SIGN_REQUEST: &[u8] = b"kms/sign-request/v1";

/// HKDF `info` deriving the key that seals import-session state from a master key.
pub const SESSION_SEAL_KDF: &[u8] = b"kms/session-seal/v1";
/// AAD label of sealed import-session state.
pub const SESSION_STATE_AAD: &[u8] = b"kms/session-state/v1";
/// AAD label of a wallet's data key wrapped under a master key.
pub const WALLET_KEY_WRAP_AAD: &[u8] = b"kms/wallet-key-wrap/v1";
/// AAD label of wallet material encrypted under its data key.
pub const WALLET_MATERIAL_AAD: &[u8] = b"kms/wallet-material/v1";
/// AAD label of the key set sealed under the root key.
pub const KEYSET_AAD: &[u8] = b"kms/keyset/v1";
/// AAD label of the key set sealed under a provider-wrapped key-set key (format 2).
pub const KEYSET_AAD_V2: &[u8] = b"kms/keyset/v2";
/// AAD label a root-key provider binds to the key-set key it wraps.
pub const KEYSET_KEY_WRAP: &[u8] = b"kms/keyset-key/v1";
/// HKDF `info` deriving, from a master key, the key that wraps data keys
/// handed to callers (`POST /v1/data-keys`).
pub const DATA_KEY_WRAP_KDF: &[u8] = b"kms/data-key-wrap/v1";
/// AAD label of a caller's data key wrapped under the data-key wrapping key.
pub const DATA_KEY_AAD: &[u8] = b"kms/data-key/v1";
/// HPKE `info` prefix of a data key sealed to its recipient.
pub const DATA_KEY_SEAL: &[u8] = b"kms/data-key-seal/v1";
/// Signature context of a data-key response.
pub const DATA_KEY_RESPONSE: &[u8] = b"kms/data-key-response/v1";
/// HKDF `info` deriving, from a master key, the key that seals the keys
/// BitGo's wallet manager stores with the key provider (docs/bitgo.md).
pub const PROVIDER_KEY_SEAL_KDF: &[u8] = b"kms/provider-key-seal/v1";
/// AAD label of a key-provider key, bound to its row.
pub const PROVIDER_KEY_AAD: &[u8] = b"kms/provider-key/v1";
/// HKDF `info` deriving the key that wraps the key provider's data keys.
pub const PROVIDER_DATA_KEY_WRAP_KDF: &[u8] = b"kms/provider-data-key-wrap/v1";
/// AAD label of a key-provider data key.
pub const PROVIDER_DATA_KEY_AAD: &[u8] = b"kms/provider-data-key/v1";
/// HKDF `info` prefix deriving the key provider's TLS key from the identity key.
pub const PROVIDER_TLS_KEY_KDF: &[u8] = b"kms/provider-tls-key/v1";

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_distinct() {
        let all = [
            super::IMPORT_SESSION,
            super::IMPORT,
            super::IMPORT_RECEIPT,
            super::EXPORT,
            super::EXPORT_BUNDLE,
            super::EXPORT_REQUEST,
            super::SESSION_SEAL_KDF,
            super::SESSION_STATE_AAD,
            super::WALLET_KEY_WRAP_AAD,
            super::WALLET_MATERIAL_AAD,
            super::KEYSET_AAD,
            super::KEYSET_AAD_V2,
            super::KEYSET_KEY_WRAP,
            super::DATA_KEY_WRAP_KDF,
            super::DATA_KEY_AAD,
            super::DATA_KEY_SEAL,
            super::DATA_KEY_RESPONSE,
            super::PROVIDER_KEY_SEAL_KDF,
            super::PROVIDER_KEY_AAD,
            super::PROVIDER_DATA_KEY_WRAP_KDF,
            super::PROVIDER_DATA_KEY_AAD,
            super::PROVIDER_TLS_KEY_KDF,
        ];
        for (i, a) in all.iter().enumerate() {
            assert!(a.starts_with(b"kms/") && (a.ends_with(b"/v1") || a.ends_with(b"/v2")));
            assert!(!a.contains(&0));
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
