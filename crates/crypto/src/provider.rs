//! What the secure environment keeps for BitGo's Advanced Wallet Manager
//! as its key provider (docs/bitgo.md): the keys the manager stores and
//! fetches, and the data keys it asks for. Both are sealed under keys
//! derived from a master key, each with its own label, so neither can be
//! opened as the other, nor as any envelope of the KMS's own API.
//!
//! ```text
//! provider key (format 1) = u8(1) ‖ u32be(mk_version) ‖ nonce[12] ‖ AES-256-GCM(k, prv)
//!   k   = HKDF-SHA256(master[mk_version], salt = "", info = "kms/provider-key-seal/v1")
//!   aad = "kms/provider-key/v1" ‖ 0x00 ‖ u8(1) ‖ u32be(mk_version)
//!         ‖ lp(pub) ‖ lp(source) ‖ lp(type) ‖ lp(coin)        lp(x) = u32be(len(x)) ‖ x
//! provider data key (format 1) = u8(1) ‖ u32be(mk_version) ‖ nonce[12] ‖ AES-256-GCM(k, data_key[32])
//!   k   = HKDF-SHA256(master[mk_version], salt = "", info = "kms/provider-data-key-wrap/v1")
//!   aad = "kms/provider-data-key/v1" ‖ 0x00 ‖ u8(1) ‖ u32be(mk_version)
//! ```
//! The AAD binds a stored key to the row it is stored in: a row moved to
//! another `(pub, source)`, or with its type or coin edited, does not open.

use crate::envelope::EnvelopeError;
use crate::keyset::KeySet;
use crate::rng::{RandomSource, SystemRng};
use crate::{aead, kdf, labels, CryptoError, SecretBytes, SecretKey};

const FORMAT: u8 = 1;

/// What a stored key is bound to: the columns of its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderKeyBinding<'a> {
    pub public: &'a str,
    pub source: &'a str,
    pub key_type: &'a str,
    pub coin: &'a str,
}

fn lp(out: &mut Vec<u8>, field: &str) {
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field.as_bytes());
}

fn key_aad(version: u32, b: &ProviderKeyBinding<'_>) -> Vec<u8> {
    let mut a = labels::PROVIDER_KEY_AAD.to_vec();
    a.push(0);
    a.push(FORMAT);
    a.extend_from_slice(&version.to_be_bytes());
    for field in [b.public, b.source, b.key_type, b.coin] {
        lp(&mut a, field);
    }
    a
}

fn data_key_aad(version: u32) -> Vec<u8> {
    let mut a = labels::PROVIDER_DATA_KEY_AAD.to_vec();
    a.push(0);
    a.push(FORMAT);
    a.extend_from_slice(&version.to_be_bytes());
    a
}

fn derived(keys: &KeySet, version: u32, label: &[u8]) -> Result<SecretKey, EnvelopeError> {
    let master = keys
        .master_key(version)
        .ok_or(EnvelopeError::UnknownKeyVersion(version))?;
    Ok(kdf::derive_key(master, label)?)
}

/// The master-key version a sealed blob of this module claims.
pub fn sealed_version(sealed: &[u8]) -> Result<u32, EnvelopeError> {
    if sealed.len() < 5 + aead::NONCE_BYTES + aead::TAG_BYTES || sealed[0] != FORMAT {
        return Err(EnvelopeError::Format);
    }
    Ok(u32::from_be_bytes([
        sealed[1], sealed[2], sealed[3], sealed[4],
    ]))
}

fn seal(
    k: &SecretKey,
    version: u32,
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut impl RandomSource,
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(5 + aead::NONCE_BYTES + plaintext.len() + aead::TAG_BYTES);
    out.push(FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    aead::encrypt_with_rng(k, aad, plaintext, &mut out, rng)?;
    Ok(out)
}

/// Seals a stored key's private part under the current master key.
/// Returns the version used and the sealed blob.
pub fn seal_key(
    keys: &KeySet,
    binding: &ProviderKeyBinding<'_>,
    prv: &[u8],
) -> Result<(u32, Vec<u8>), CryptoError> {
    let version = keys.current_version();
    let k = derived(keys, version, labels::PROVIDER_KEY_SEAL_KDF)
        .map_err(|_| CryptoError::Unsupported("current master key missing"))?;
    let sealed = seal(&k, version, &key_aad(version, binding), prv, &mut SystemRng)?;
    Ok((version, sealed))
}

/// Opens a stored key; `binding` must be the row it was sealed for.
pub fn open_key(
    keys: &KeySet,
    binding: &ProviderKeyBinding<'_>,
    sealed: &[u8],
) -> Result<SecretBytes, EnvelopeError> {
    let version = sealed_version(sealed)?;
    let k = derived(keys, version, labels::PROVIDER_KEY_SEAL_KDF)?;
    Ok(aead::decrypt(&k, &key_aad(version, binding), &sealed[5..])?)
}

/// A new 32-byte data key and its wrapping under the current master key.
pub fn generate_data_key(keys: &KeySet) -> Result<(SecretKey, Vec<u8>), CryptoError> {
    generate_data_key_with_rng(keys, &mut SystemRng)
}

/// [`generate_data_key`] with the given randomness.
pub fn generate_data_key_with_rng(
    keys: &KeySet,
    rng: &mut impl RandomSource,
) -> Result<(SecretKey, Vec<u8>), CryptoError> {
    let version = keys.current_version();
    let k = derived(keys, version, labels::PROVIDER_DATA_KEY_WRAP_KDF)
        .map_err(|_| CryptoError::Unsupported("current master key missing"))?;
    let data_key = SecretKey::from_array(crate::rng::array::<32>(rng)?);
    let wrapped = seal(&k, version, &data_key_aad(version), data_key.expose(), rng)?;
    Ok((data_key, wrapped))
}

/// Opens a data key [`generate_data_key`] wrapped, under whichever master
/// key version it names (so it opens after rotations, until that version
/// is retired).
pub fn open_data_key(keys: &KeySet, wrapped: &[u8]) -> Result<SecretKey, EnvelopeError> {
    let version = sealed_version(wrapped)?;
    if wrapped.len() != 5 + aead::NONCE_BYTES + 32 + aead::TAG_BYTES {
        return Err(EnvelopeError::Format);
    }
    let k = derived(keys, version, labels::PROVIDER_DATA_KEY_WRAP_KDF)?;
    let plain = aead::decrypt(&k, &data_key_aad(version), &wrapped[5..])?;
    SecretKey::from_slice(plain.expose()).ok_or(EnvelopeError::Open)
}

/// The key provider's TLS key: a P-256 key derived from the key set's
/// identity key, so it exists only where the key set is open, is the same
/// in every secure environment of a deployment, and never leaves one
/// (docs/bitgo.md, "The TLS key"). `k_i = HKDF-SHA256(identity, info =
/// "kms/provider-tls-key/v1" ‖ u8(i))` for i = 0, 1, … until one is a
/// scalar in [1, n−1].
pub fn tls_key(keys: &KeySet) -> Result<crate::p256::PrivateKey, CryptoError> {
    for i in 0u8..=255 {
        let mut label = labels::PROVIDER_TLS_KEY_KDF.to_vec();
        label.push(i);
        let scalar = kdf::derive_key(keys.identity().scalar(), &label)?;
        if let Some(key) = crate::p256::PrivateKey::from_scalar(scalar) {
            return Ok(key);
        }
    }
    Err(CryptoError::Backend("no TLS key scalar in range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding<'a>(public: &'a str, source: &'a str) -> ProviderKeyBinding<'a> {
        ProviderKeyBinding {
            public,
            source,
            key_type: "independent",
            coin: "tbtc",
        }
    }

    #[test]
    fn a_key_opens_only_in_its_own_row() {
        let keys = KeySet::generate().unwrap();
        let b = binding("xpub1", "user");
        let (version, sealed) = seal_key(&keys, &b, b"xprv-secret").unwrap();
        assert_eq!(version, 1);
        assert_eq!(
            open_key(&keys, &b, &sealed).unwrap().expose(),
            b"xprv-secret"
        );
        for other in [
            binding("xpub1", "backup"),
            binding("xpub2", "user"),
            ProviderKeyBinding {
                key_type: "tss",
                ..b
            },
            ProviderKeyBinding { coin: "btc", ..b },
            // lp() keeps field boundaries: moving a byte between fields fails.
            binding("xpub1u", "ser"),
        ] {
            assert_eq!(
                open_key(&keys, &other, &sealed).err(),
                Some(EnvelopeError::Open),
                "{other:?}"
            );
        }
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            open_key(&keys, &b, &flipped).err(),
            Some(EnvelopeError::Open)
        );
        assert_eq!(
            open_key(&keys, &b, &sealed[..10]).err(),
            Some(EnvelopeError::Format)
        );
        let other_keys = KeySet::generate().unwrap();
        assert_eq!(
            open_key(&other_keys, &b, &sealed).err(),
            Some(EnvelopeError::Open)
        );
    }

    #[test]
    fn data_keys_open_after_rotation_and_not_after_retirement() {
        let keys = KeySet::generate().unwrap();
        let (data_key, wrapped) = generate_data_key(&keys).unwrap();
        let rotated = keys.rotated().unwrap();
        assert!(open_data_key(&rotated, &wrapped).unwrap().ct_eq(&data_key));
        let (_, newer) = generate_data_key(&rotated).unwrap();
        assert_eq!(sealed_version(&newer).unwrap(), 2);
        let retired = rotated.retired(1).unwrap();
        assert_eq!(
            open_data_key(&retired, &wrapped).err(),
            Some(EnvelopeError::UnknownKeyVersion(1))
        );
        let mut flipped = wrapped.clone();
        flipped[7] ^= 1;
        assert_eq!(
            open_data_key(&keys, &flipped).err(),
            Some(EnvelopeError::Open)
        );
        assert_eq!(
            open_data_key(&keys, &wrapped[..wrapped.len() - 1]).err(),
            Some(EnvelopeError::Format)
        );
    }

    #[test]
    fn the_tls_key_is_the_key_sets_own() {
        let keys = KeySet::generate().unwrap();
        let a = tls_key(&keys).unwrap();
        assert_eq!(a.public_key(), tls_key(&keys).unwrap().public_key());
        assert_ne!(a.public_key(), keys.identity().public_key());
        let rotated = keys.rotated().unwrap();
        assert_eq!(a.public_key(), tls_key(&rotated).unwrap().public_key());
        let other = KeySet::generate().unwrap();
        assert_ne!(a.public_key(), tls_key(&other).unwrap().public_key());
        assert!(!a.to_pkcs8_der().unwrap().expose().is_empty());
    }

    /// A stored key's seal and a data key's wrap use different keys: one
    /// never opens as the other.
    #[test]
    fn keys_and_data_keys_are_separate() {
        let keys = KeySet::generate().unwrap();
        let (_, wrapped) = generate_data_key(&keys).unwrap();
        assert!(open_key(&keys, &binding("", ""), &wrapped).is_err());
        let (_, sealed) = seal_key(&keys, &binding("", ""), &[0; 32]).unwrap();
        assert!(open_data_key(&keys, &sealed).is_err());
    }
}
