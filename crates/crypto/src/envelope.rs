//! Envelopes: wallet material under its data key, data keys under a master
//! key, and import-session state under a key derived from a master key.
//! Every envelope is versioned and binds its owner through AAD, so a blob
//! moved to another wallet or session fails to open.
//!
//! ```text
//! wrapped_key (format 1) = u8(1) ‖ u32be(mk_version) ‖ nonce[12] ‖ AES-256-GCM(master[mk_version], data_key[32])
//!   aad = "kms/wallet-key-wrap/v1" ‖ 0x00 ‖ u8(1) ‖ u32be(mk_version) ‖ wallet_id[16]
//! ciphertext (format 1)  = u8(1) ‖ nonce[12] ‖ AES-256-GCM(data_key, record)
//!   aad = "kms/wallet-material/v1" ‖ 0x00 ‖ u8(1) ‖ wallet_id[16] ‖ u8(len(key_type)) ‖ key_type
//!   record = u16be(len(private_key)) ‖ private_key ‖ u8(len(owner_public_key)) ‖ owner_public_key
//! sealed_state (format 1) = u8(1) ‖ u32be(mk_version) ‖ nonce[12] ‖ AES-256-GCM(session_seal_key, scalar[32])
//!   session_seal_key = HKDF-SHA256(master[mk_version], salt = "", info = "kms/session-seal/v1")
//!   aad = "kms/session-state/v1" ‖ 0x00 ‖ u8(1) ‖ u32be(mk_version) ‖ session_id[16] ‖ u64be(expires_at)
//! data key (format 1)     = u8(1) ‖ u32be(mk_version) ‖ data_key_id[16] ‖ nonce[12] ‖ AES-256-GCM(data_key_wrap_key, data_key[32])
//!   data_key_wrap_key = HKDF-SHA256(master[mk_version], salt = "", info = "kms/data-key-wrap/v1")
//!   aad = "kms/data-key/v1" ‖ 0x00 ‖ u8(1) ‖ u32be(mk_version) ‖ data_key_id[16] ‖ canonical(encryption_context)
//! ```
//! Re-wrapping a wallet (master-key rotation) opens `wrapped_key` under its
//! version and wraps the same data key under the current one; the
//! wallet's `ciphertext` is unchanged.

use kms_protocol::{Id, KeyType, P256PublicKey};

use crate::hpke::HpkeSecretKey;
use crate::keyset::KeySet;
use crate::material::KeyMaterial;
use crate::rng::{RandomSource, SystemRng};
use crate::{aead, kdf, labels, CryptoError, OpenError, SecretBytes, SecretKey};

const FORMAT: u8 = 1;

/// Why a stored envelope did not open. All of these are the service's own
/// fault (the store returned something it did not write), never the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    #[error("envelope format unknown or truncated")]
    Format,
    #[error("master key version {0} is not in the key set (too new, or retired)")]
    UnknownKeyVersion(u32),
    #[error("envelope does not open")]
    Open,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl From<OpenError> for EnvelopeError {
    fn from(_: OpenError) -> Self {
        Self::Open
    }
}

/// A wallet's sealed blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedWallet {
    pub master_key_version: u32,
    pub wrapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

fn wrap_aad(version: u32, wallet_id: &Id) -> Vec<u8> {
    let mut a = labels::WALLET_KEY_WRAP_AAD.to_vec();
    a.push(0);
    a.push(FORMAT);
    a.extend_from_slice(&version.to_be_bytes());
    a.extend_from_slice(wallet_id.as_bytes());
    a
}

fn material_aad(wallet_id: &Id, key_type: KeyType) -> Vec<u8> {
    let kt = key_type.as_str().as_bytes();
    let mut a = labels::WALLET_MATERIAL_AAD.to_vec();
    a.push(0);
    a.push(FORMAT);
    a.extend_from_slice(wallet_id.as_bytes());
    a.push(u8::try_from(kt.len()).unwrap_or(u8::MAX));
    a.extend_from_slice(kt);
    a
}

fn session_aad(version: u32, session_id: &Id, expires_at: u64) -> Vec<u8> {
    let mut a = labels::SESSION_STATE_AAD.to_vec();
    a.push(0);
    a.push(FORMAT);
    a.extend_from_slice(&version.to_be_bytes());
    a.extend_from_slice(session_id.as_bytes());
    a.extend_from_slice(&expires_at.to_be_bytes());
    a
}

fn current_master(keys: &KeySet) -> Result<(u32, &SecretKey), CryptoError> {
    let v = keys.current_version();
    keys.master_key(v)
        .map(|k| (v, k))
        .ok_or(CryptoError::Unsupported("current master key missing"))
}

/// `u8(1) ‖ u32be(version) ‖ rest`: the header of versioned envelopes.
fn split_versioned(blob: &[u8]) -> Result<(u32, &[u8]), EnvelopeError> {
    if blob.len() < 5 || blob[0] != FORMAT {
        return Err(EnvelopeError::Format);
    }
    let v = u32::from_be_bytes([blob[1], blob[2], blob[3], blob[4]]);
    Ok((v, &blob[5..]))
}

/// Seals wallet material under a fresh data key wrapped by the current master key.
pub fn seal_wallet(
    keys: &KeySet,
    wallet_id: &Id,
    material: &KeyMaterial,
) -> Result<SealedWallet, CryptoError> {
    seal_wallet_with_rng(keys, wallet_id, material, &mut SystemRng)
}

pub fn seal_wallet_with_rng(
    keys: &KeySet,
    wallet_id: &Id,
    material: &KeyMaterial,
    rng: &mut impl RandomSource,
) -> Result<SealedWallet, CryptoError> {
    let (version, master) = current_master(keys)?;
    let mut data_key = SecretKey::from_array([0; 32]);
    rng.fill(data_key.expose_mut())?;

    let pk = material.private_key().expose();
    let owner = material
        .owner_public_key()
        .map(|k| &k.as_bytes()[..])
        .unwrap_or_default();
    let pk_len =
        u16::try_from(pk.len()).map_err(|_| CryptoError::Unsupported("private key too long"))?;
    let mut record = SecretBytes::with_capacity(2 + pk.len() + 1 + owner.len());
    record.extend_from_slice(&pk_len.to_be_bytes());
    record.extend_from_slice(pk);
    record.extend_from_slice(&[u8::try_from(owner.len()).unwrap_or(0)]);
    record.extend_from_slice(owner);

    let mut ciphertext = Vec::with_capacity(1 + 12 + record.len() + 16);
    ciphertext.push(FORMAT);
    aead::encrypt_with_rng(
        &data_key,
        &material_aad(wallet_id, material.key_type()),
        record.expose(),
        &mut ciphertext,
        rng,
    )?;

    let mut wrapped_key = Vec::with_capacity(5 + 12 + 32 + 16);
    wrapped_key.push(FORMAT);
    wrapped_key.extend_from_slice(&version.to_be_bytes());
    aead::encrypt_with_rng(
        master,
        &wrap_aad(version, wallet_id),
        data_key.expose(),
        &mut wrapped_key,
        rng,
    )?;

    Ok(SealedWallet {
        master_key_version: version,
        wrapped_key,
        ciphertext,
    })
}

/// Opens a wallet's blobs; `wallet_id` and `key_type` must be the ones it was sealed for.
pub fn open_wallet(
    keys: &KeySet,
    wallet_id: &Id,
    key_type: KeyType,
    wrapped_key: &[u8],
    ciphertext: &[u8],
) -> Result<KeyMaterial, EnvelopeError> {
    let (version, wrapped) = split_versioned(wrapped_key)?;
    let master = keys
        .master_key(version)
        .ok_or(EnvelopeError::UnknownKeyVersion(version))?;
    let data_key = aead::decrypt(master, &wrap_aad(version, wallet_id), wrapped)?;
    let data_key = SecretKey::from_slice(data_key.expose()).ok_or(EnvelopeError::Open)?;

    let (&format, sealed) = ciphertext.split_first().ok_or(EnvelopeError::Format)?;
    if format != FORMAT {
        return Err(EnvelopeError::Format);
    }
    let record = aead::decrypt(&data_key, &material_aad(wallet_id, key_type), sealed)?;
    let r = record.expose();
    let pk_len = usize::from(u16::from_be_bytes([
        *r.first().ok_or(EnvelopeError::Open)?,
        *r.get(1).ok_or(EnvelopeError::Open)?,
    ]));
    let pk = r.get(2..2 + pk_len).ok_or(EnvelopeError::Open)?;
    let owner_len = usize::from(*r.get(2 + pk_len).ok_or(EnvelopeError::Open)?);
    let owner = r.get(3 + pk_len..).ok_or(EnvelopeError::Open)?;
    if owner.len() != owner_len {
        return Err(EnvelopeError::Open);
    }
    let owner = match owner_len {
        0 => None,
        _ => Some(P256PublicKey::from_bytes(owner).map_err(|_| EnvelopeError::Open)?),
    };
    KeyMaterial::new(key_type, SecretBytes::new(pk.to_vec()), owner)
        .map_err(|_| EnvelopeError::Open)
}

/// Moves a wallet's data key to the current master key version. A key
/// already there is returned unchanged. The data key itself never changes,
/// so `ciphertext` stays valid.
pub fn rewrap_wallet_key(
    keys: &KeySet,
    wallet_id: &Id,
    wrapped_key: &[u8],
) -> Result<(u32, Vec<u8>), EnvelopeError> {
    let (version, wrapped) = split_versioned(wrapped_key)?;
    let (current, current_key) = current_master(keys)?;
    if version == current {
        return Ok((version, wrapped_key.to_vec()));
    }
    let master = keys
        .master_key(version)
        .ok_or(EnvelopeError::UnknownKeyVersion(version))?;
    let data_key = aead::decrypt(master, &wrap_aad(version, wallet_id), wrapped)?;
    if data_key.len() != 32 {
        return Err(EnvelopeError::Open);
    }
    let mut out = Vec::with_capacity(5 + 12 + 32 + 16);
    out.push(FORMAT);
    out.extend_from_slice(&current.to_be_bytes());
    aead::encrypt(
        current_key,
        &wrap_aad(current, wallet_id),
        data_key.expose(),
        &mut out,
    )?;
    Ok((current, out))
}

fn data_key_aad(version: u32, id: &Id, context: &[u8]) -> Vec<u8> {
    let mut a = labels::DATA_KEY_AAD.to_vec();
    a.push(0);
    a.push(FORMAT);
    a.extend_from_slice(&version.to_be_bytes());
    a.extend_from_slice(id.as_bytes());
    a.extend_from_slice(context);
    a
}

/// The key that wraps callers' data keys under master key `version`.
fn data_key_wrap_key(keys: &KeySet, version: u32) -> Result<SecretKey, EnvelopeError> {
    let master = keys
        .master_key(version)
        .ok_or(EnvelopeError::UnknownKeyVersion(version))?;
    Ok(kdf::derive_key(master, labels::DATA_KEY_WRAP_KDF)?)
}

/// Wraps a caller's data key under the current master key version, bound
/// to its id and the canonical encryption context.
pub fn wrap_data_key(
    keys: &KeySet,
    data_key_id: &Id,
    context: &[u8],
    data_key: &SecretKey,
) -> Result<(u32, Vec<u8>), CryptoError> {
    let version = keys.current_version();
    let k = data_key_wrap_key(keys, version)
        .map_err(|_| CryptoError::Unsupported("current master key missing"))?;
    let mut out = Vec::with_capacity(5 + 16 + 12 + 32 + 16);
    out.push(FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(data_key_id.as_bytes());
    aead::encrypt(
        &k,
        &data_key_aad(version, data_key_id, context),
        data_key.expose(),
        &mut out,
    )?;
    Ok((version, out))
}

/// The version and id a wrapped data key claims, without opening it.
pub fn data_key_header(wrapped: &[u8]) -> Result<(u32, Id), EnvelopeError> {
    let (version, rest) = split_versioned(wrapped)?;
    let id: [u8; 16] = rest
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or(EnvelopeError::Format)?;
    if rest.len() != 16 + 12 + 32 + 16 {
        return Err(EnvelopeError::Format);
    }
    Ok((version, Id::from_bytes(id)))
}

/// Opens a wrapped data key; the encryption context must be the one it was
/// wrapped with.
pub fn unwrap_data_key(
    keys: &KeySet,
    wrapped: &[u8],
    context: &[u8],
) -> Result<(u32, Id, SecretKey), EnvelopeError> {
    let (version, id) = data_key_header(wrapped)?;
    let k = data_key_wrap_key(keys, version)?;
    let plain = aead::decrypt(&k, &data_key_aad(version, &id, context), &wrapped[5 + 16..])?;
    let key = SecretKey::from_slice(plain.expose()).ok_or(EnvelopeError::Open)?;
    Ok((version, id, key))
}

fn session_key(keys: &KeySet, version: u32) -> Result<SecretKey, EnvelopeError> {
    let master = keys
        .master_key(version)
        .ok_or(EnvelopeError::UnknownKeyVersion(version))?;
    Ok(kdf::derive_key(master, labels::SESSION_SEAL_KDF)?)
}

/// Seals an import session's private key for kms-api to keep.
pub fn seal_session(
    keys: &KeySet,
    session_id: &Id,
    expires_at: u64,
    sk: &HpkeSecretKey,
) -> Result<Vec<u8>, CryptoError> {
    seal_session_with_rng(keys, session_id, expires_at, sk, &mut SystemRng)
}

pub fn seal_session_with_rng(
    keys: &KeySet,
    session_id: &Id,
    expires_at: u64,
    sk: &HpkeSecretKey,
    rng: &mut impl RandomSource,
) -> Result<Vec<u8>, CryptoError> {
    let version = keys.current_version();
    let key = session_key(keys, version)
        .map_err(|_| CryptoError::Unsupported("current master key missing"))?;
    let mut out = Vec::with_capacity(5 + 12 + 32 + 16);
    out.push(FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    aead::encrypt_with_rng(
        &key,
        &session_aad(version, session_id, expires_at),
        sk.scalar().expose(),
        &mut out,
        rng,
    )?;
    Ok(out)
}

/// Opens sealed session state; `session_id` and `expires_at` must be the sealed ones.
pub fn open_session(
    keys: &KeySet,
    session_id: &Id,
    expires_at: u64,
    sealed: &[u8],
) -> Result<HpkeSecretKey, EnvelopeError> {
    let (version, body) = split_versioned(sealed)?;
    let key = session_key(keys, version)?;
    let scalar = aead::decrypt(&key, &session_aad(version, session_id, expires_at), body)?;
    let scalar = SecretKey::from_slice(scalar.expose()).ok_or(EnvelopeError::Open)?;
    HpkeSecretKey::from_scalar(scalar).map_err(|_| EnvelopeError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrap_keeps_the_data_key_and_moves_the_version() {
        let keys = KeySet::generate().unwrap();
        let id = Id::from_bytes([4; 16]);
        let sealed = seal_wallet(&keys, &id, &material()).unwrap();
        let (v, same) = rewrap_wallet_key(&keys, &id, &sealed.wrapped_key).unwrap();
        assert_eq!((v, &same), (1, &sealed.wrapped_key));
        let rotated = keys.rotated().unwrap();
        let (v, moved) = rewrap_wallet_key(&rotated, &id, &sealed.wrapped_key).unwrap();
        assert_eq!(v, 2);
        assert_eq!(&moved[..5], &[1, 0, 0, 0, 2]);
        let m = open_wallet(
            &rotated,
            &id,
            KeyType::Secp256k1,
            &moved,
            &sealed.ciphertext,
        )
        .unwrap();
        assert_eq!(m.private_key().expose(), &[7; 32]);
        // Bound to the wallet id.
        let other = Id::from_bytes([5; 16]);
        assert_eq!(
            rewrap_wallet_key(&rotated, &other, &sealed.wrapped_key).unwrap_err(),
            EnvelopeError::Open
        );
        // Once version 1 is retired only the moved key opens.
        let retired = rotated.retired(1).unwrap();
        assert_eq!(
            rewrap_wallet_key(&retired, &id, &sealed.wrapped_key).unwrap_err(),
            EnvelopeError::UnknownKeyVersion(1)
        );
        assert!(open_wallet(
            &retired,
            &id,
            KeyType::Secp256k1,
            &moved,
            &sealed.ciphertext
        )
        .is_ok());
    }

    #[test]
    fn data_keys_bind_context_and_survive_rotation() {
        let keys = KeySet::generate().unwrap();
        let id = Id::from_bytes([9; 16]);
        let dk = SecretKey::from_array([3; 32]);
        let (v, wrapped) = wrap_data_key(&keys, &id, b"\x00\x00", &dk).unwrap();
        assert_eq!(v, 1);
        assert_eq!(wrapped.len(), kms_protocol::data_key::WRAPPED_DATA_KEY_LEN);
        assert_eq!(data_key_header(&wrapped).unwrap(), (1, id));
        let rotated = keys.rotated().unwrap();
        let (v, got_id, got) = unwrap_data_key(&rotated, &wrapped, b"\x00\x00").unwrap();
        assert!(v == 1 && got_id == id && got.ct_eq(&dk));
        assert_eq!(
            unwrap_data_key(&rotated, &wrapped, b"\x00\x01").unwrap_err(),
            EnvelopeError::Open
        );
        for i in 0..wrapped.len() {
            let mut bad = wrapped.clone();
            bad[i] ^= 1;
            assert!(
                unwrap_data_key(&rotated, &bad, b"\x00\x00").is_err(),
                "byte {i}"
            );
        }
        // A data-key wrap is not a wallet-key wrap (separate derived key).
        assert!(rewrap_wallet_key(&rotated, &id, &wrapped).is_err());
        let retired = rotated.retired(1).unwrap();
        assert_eq!(
            unwrap_data_key(&retired, &wrapped, b"\x00\x00").unwrap_err(),
            EnvelopeError::UnknownKeyVersion(1)
        );
    }

    fn material() -> KeyMaterial {
        KeyMaterial::new(KeyType::Secp256k1, SecretBytes::new(vec![7; 32]), None).unwrap()
    }

    #[test]
    fn wallet_round_trip_and_binding() {
        let keys = KeySet::generate().unwrap();
        let a = Id::from_bytes([1; 16]);
        let b = Id::from_bytes([2; 16]);
        let s = seal_wallet(&keys, &a, &material()).unwrap();
        assert_eq!(s.wrapped_key.len(), 65);
        assert_eq!(s.ciphertext.len(), 1 + 12 + 2 + 32 + 1 + 16);
        let m = open_wallet(&keys, &a, KeyType::Secp256k1, &s.wrapped_key, &s.ciphertext).unwrap();
        assert_eq!(m.private_key().expose(), &[7; 32]);
        // Bound to wallet id and key type.
        assert!(open_wallet(&keys, &b, KeyType::Secp256k1, &s.wrapped_key, &s.ciphertext).is_err());
        assert!(open_wallet(&keys, &a, KeyType::Raw, &s.wrapped_key, &s.ciphertext).is_err());
        // Another wallet's blobs, swapped in.
        let t = seal_wallet(&keys, &b, &material()).unwrap();
        assert!(open_wallet(&keys, &a, KeyType::Secp256k1, &t.wrapped_key, &s.ciphertext).is_err());
        assert!(open_wallet(&keys, &a, KeyType::Secp256k1, &s.wrapped_key, &t.ciphertext).is_err());
        // Every flipped byte.
        for i in 0..s.wrapped_key.len() {
            let mut bad = s.wrapped_key.clone();
            bad[i] ^= 0x01;
            assert!(
                open_wallet(&keys, &a, KeyType::Secp256k1, &bad, &s.ciphertext).is_err(),
                "wrapped {i}"
            );
        }
        for i in 0..s.ciphertext.len() {
            let mut bad = s.ciphertext.clone();
            bad[i] ^= 0x01;
            assert!(
                open_wallet(&keys, &a, KeyType::Secp256k1, &s.wrapped_key, &bad).is_err(),
                "ct {i}"
            );
        }
        // Another key set cannot open it.
        let other = KeySet::generate().unwrap();
        assert!(open_wallet(
            &other,
            &a,
            KeyType::Secp256k1,
            &s.wrapped_key,
            &s.ciphertext
        )
        .is_err());
    }

    #[test]
    fn unknown_master_key_version_is_refused() {
        let keys = KeySet::generate().unwrap();
        let a = Id::from_bytes([1; 16]);
        let mut s = seal_wallet(&keys, &a, &material()).unwrap();
        s.wrapped_key[4] = 2;
        assert_eq!(
            open_wallet(&keys, &a, KeyType::Secp256k1, &s.wrapped_key, &s.ciphertext).unwrap_err(),
            EnvelopeError::UnknownKeyVersion(2)
        );
    }

    #[test]
    fn session_round_trip_and_binding() {
        let keys = KeySet::generate().unwrap();
        let id = Id::from_bytes([5; 16]);
        let sk = HpkeSecretKey::generate().unwrap();
        let sealed = seal_session(&keys, &id, 100, &sk).unwrap();
        let back = open_session(&keys, &id, 100, &sealed).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        assert!(open_session(&keys, &id, 101, &sealed).is_err());
        assert!(open_session(&keys, &Id::from_bytes([6; 16]), 100, &sealed).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open_session(&keys, &id, 100, &bad).is_err(), "byte {i}");
        }
    }
}
