//! The key set: versioned master keys and the identity key, sealed as one
//! blob (docs/design.md, "Key hierarchy"). This module knows the layouts; the
//! secure environment's root-key providers wrap the key that seals it.
//!
//! Sealed layout, format 2 (written by this build):
//! ```text
//! "KMSKSET" ‖ u8(2) ‖ u8(len(provider)) ‖ provider ‖ u16be(len(wrapped_key)) ‖ wrapped_key
//!   ‖ nonce[12] ‖ AES-256-GCM(keyset_key, plaintext, aad)
//! aad       = "kms/keyset/v2" ‖ 0x00 ‖ (every byte before the nonce)
//! plaintext = u8(2) ‖ u32be(current) ‖ u16be(count) ‖ count × (u32be(version) ‖ master_key[32])
//!             ‖ u16be(retired_count) ‖ retired_count × u32be(version) ‖ identity_scalar[32]
//! ```
//! `keyset_key` is a fresh random AES-256 key per seal; `wrapped_key` is it,
//! wrapped by the root-key provider named `provider` (its own format).
//!
//! Format 1 (earlier builds; still opened, never written):
//! ```text
//! "KMSKSET" ‖ u8(1) ‖ nonce[12] ‖ AES-256-GCM(root_key, plaintext, "kms/keyset/v1" ‖ 0x00 ‖ u8(1))
//! plaintext = u8(1) ‖ u32be(current) ‖ u16be(count) ‖ count × (u32be(version) ‖ master_key[32]) ‖ identity_scalar[32]
//! ```

use crate::rng::{RandomSource, SystemRng};
use crate::sign::SigningKey;
use crate::{aead, labels, CryptoError, OpenError, SecretBytes, SecretKey};

const MAGIC: &[u8; 7] = b"KMSKSET";
const FORMAT_V1: u8 = 1;
const FORMAT_V2: u8 = 2;

/// Why a sealed key set could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    #[error("not a sealed key set, or a format this build does not know")]
    Format,
    #[error("the key set does not open under this root key (wrong key or tampered file)")]
    Open(#[from] OpenError),
    #[error("the key set opened but its contents are invalid")]
    Contents,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Why a key set cannot be changed as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    #[error("master key version {0} is current; rotate before retiring it")]
    RetireCurrent(u32),
    #[error("master key version {0} is already retired")]
    AlreadyRetired(u32),
    #[error("master key version {0} does not exist")]
    UnknownVersion(u32),
    #[error("no master key version is left to allocate")]
    Exhausted,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The header of a sealed key set: which provider wrapped its key, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedHeader<'a> {
    /// Format 1: sealed directly under a 32-byte local root key.
    Legacy,
    /// Format 2: the key-set key, wrapped by `provider`.
    Wrapped {
        provider: &'a str,
        wrapped_key: &'a [u8],
    },
}

/// Reads the header of a sealed key set without opening it.
pub fn sealed_header(sealed: &[u8]) -> Result<SealedHeader<'_>, KeySetError> {
    if sealed.len() < 8 || &sealed[..7] != MAGIC {
        return Err(KeySetError::Format);
    }
    match sealed[7] {
        FORMAT_V1 => Ok(SealedHeader::Legacy),
        FORMAT_V2 => {
            let (provider, wrapped_key, _) = split_v2(sealed)?;
            Ok(SealedHeader::Wrapped {
                provider,
                wrapped_key,
            })
        }
        _ => Err(KeySetError::Format),
    }
}

/// `(provider, wrapped_key, header_len)` of a format-2 blob.
fn split_v2(sealed: &[u8]) -> Result<(&str, &[u8], usize), KeySetError> {
    let rest = sealed.get(8..).ok_or(KeySetError::Format)?;
    let (&plen, rest) = rest.split_first().ok_or(KeySetError::Format)?;
    let plen = usize::from(plen);
    let provider = rest.get(..plen).ok_or(KeySetError::Format)?;
    let provider = std::str::from_utf8(provider).map_err(|_| KeySetError::Format)?;
    let rest = &rest[plen..];
    let wlen = rest.get(..2).ok_or(KeySetError::Format)?;
    let wlen = usize::from(u16::from_be_bytes([wlen[0], wlen[1]]));
    let wrapped = rest.get(2..2 + wlen).ok_or(KeySetError::Format)?;
    if provider.is_empty() || wrapped.is_empty() {
        return Err(KeySetError::Format);
    }
    Ok((provider, wrapped, 8 + 1 + plen + 2 + wlen))
}

/// Master keys by version, the current version, retired versions, and the
/// identity key.
pub struct KeySet {
    current: u32,
    master_keys: Vec<(u32, SecretKey)>,
    retired: Vec<u32>,
    identity: SigningKey,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("current", &self.current)
            .field("versions", &self.versions())
            .field("retired", &self.retired)
            .field("identity", self.identity.public_key())
            .finish()
    }
}

fn copy_key(k: &SecretKey) -> SecretKey {
    SecretKey::from_array(*k.expose())
}

impl KeySet {
    /// A new key set: master key version 1 and a new identity key.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::generate_with_rng(&mut SystemRng)
    }

    pub fn generate_with_rng(rng: &mut impl RandomSource) -> Result<Self, CryptoError> {
        let mut master = SecretKey::from_array([0; 32]);
        rng.fill(master.expose_mut())?;
        Ok(Self {
            current: 1,
            master_keys: vec![(1, master)],
            retired: Vec::new(),
            identity: SigningKey::generate_with_rng(rng)?,
        })
    }

    /// The master-key version new wallets and sessions are sealed under.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// The master key of `version`, if this key set holds it. A version
    /// this key set does not hold (too new, or retired) is `None`.
    pub fn master_key(&self, version: u32) -> Option<&SecretKey> {
        self.master_keys
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, k)| k)
    }

    /// The versions this key set holds, ascending.
    pub fn versions(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.master_keys.iter().map(|(v, _)| *v).collect();
        v.sort_unstable();
        v
    }

    /// The versions retired from this key set, ascending.
    pub fn retired_versions(&self) -> &[u32] {
        &self.retired
    }

    /// Whether `version` was retired (as opposed to never existing).
    pub fn is_retired(&self, version: u32) -> bool {
        self.retired.contains(&version)
    }

    pub fn identity(&self) -> &SigningKey {
        &self.identity
    }

    /// A copy with a new master key version, made current. The identity key
    /// and every older version are kept.
    pub fn rotated(&self) -> Result<Self, ChangeError> {
        self.rotated_with_rng(&mut SystemRng)
    }

    pub fn rotated_with_rng(&self, rng: &mut impl RandomSource) -> Result<Self, ChangeError> {
        let highest = self
            .master_keys
            .iter()
            .map(|(v, _)| *v)
            .chain(self.retired.iter().copied())
            .max()
            .unwrap_or(0);
        let next = highest.checked_add(1).ok_or(ChangeError::Exhausted)?;
        let mut fresh = SecretKey::from_array([0; 32]);
        rng.fill(fresh.expose_mut())?;
        let mut copy = self.try_clone()?;
        copy.master_keys.push((next, fresh));
        copy.current = next;
        Ok(copy)
    }

    /// A copy without master key `version`, which is remembered as retired.
    pub fn retired(&self, version: u32) -> Result<Self, ChangeError> {
        if self.is_retired(version) {
            return Err(ChangeError::AlreadyRetired(version));
        }
        if self.master_key(version).is_none() {
            return Err(ChangeError::UnknownVersion(version));
        }
        if version == self.current {
            return Err(ChangeError::RetireCurrent(version));
        }
        let mut copy = self.try_clone()?;
        copy.master_keys.retain(|(v, _)| *v != version);
        copy.retired.push(version);
        copy.retired.sort_unstable();
        Ok(copy)
    }

    fn try_clone(&self) -> Result<Self, CryptoError> {
        Ok(Self {
            current: self.current,
            master_keys: self
                .master_keys
                .iter()
                .map(|(v, k)| (*v, copy_key(k)))
                .collect(),
            retired: self.retired.clone(),
            identity: SigningKey::from_scalar(copy_key(self.identity.scalar()))?,
        })
    }

    /// The memory of every secret this value holds inline, for `mlock`.
    pub fn secret_regions(&self) -> Vec<&[u8]> {
        let mut r: Vec<&[u8]> = self
            .master_keys
            .iter()
            .map(|(_, k)| &k.expose()[..])
            .collect();
        r.push(self.identity.scalar().expose());
        r
    }

    fn plaintext_v2(&self) -> Result<SecretBytes, CryptoError> {
        let count = u16::try_from(self.master_keys.len())
            .map_err(|_| CryptoError::Unsupported("too many master keys"))?;
        let retired = u16::try_from(self.retired.len())
            .map_err(|_| CryptoError::Unsupported("too many retired master keys"))?;
        let mut pt = SecretBytes::with_capacity(
            1 + 4 + 2 + self.master_keys.len() * 36 + 2 + self.retired.len() * 4 + 32,
        );
        pt.extend_from_slice(&[FORMAT_V2]);
        pt.extend_from_slice(&self.current.to_be_bytes());
        pt.extend_from_slice(&count.to_be_bytes());
        for (v, k) in &self.master_keys {
            pt.extend_from_slice(&v.to_be_bytes());
            pt.extend_from_slice(k.expose());
        }
        pt.extend_from_slice(&retired.to_be_bytes());
        for v in &self.retired {
            pt.extend_from_slice(&v.to_be_bytes());
        }
        pt.extend_from_slice(self.identity.scalar().expose());
        Ok(pt)
    }

    /// Seals the key set (format 2) under `keyset_key`, recording that
    /// `provider` wrapped that key as `wrapped_key`.
    pub fn seal(
        &self,
        provider: &str,
        keyset_key: &SecretKey,
        wrapped_key: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.seal_with_rng(provider, keyset_key, wrapped_key, &mut SystemRng)
    }

    pub fn seal_with_rng(
        &self,
        provider: &str,
        keyset_key: &SecretKey,
        wrapped_key: &[u8],
        rng: &mut impl RandomSource,
    ) -> Result<Vec<u8>, CryptoError> {
        let plen = u8::try_from(provider.len())
            .ok()
            .filter(|l| *l > 0)
            .ok_or(CryptoError::Unsupported("provider name length"))?;
        let wlen = u16::try_from(wrapped_key.len())
            .ok()
            .filter(|l| *l > 0)
            .ok_or(CryptoError::Unsupported("wrapped key length"))?;
        let pt = self.plaintext_v2()?;
        let mut out =
            Vec::with_capacity(8 + 3 + provider.len() + wrapped_key.len() + 28 + pt.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_V2);
        out.push(plen);
        out.extend_from_slice(provider.as_bytes());
        out.extend_from_slice(&wlen.to_be_bytes());
        out.extend_from_slice(wrapped_key);
        let aad = aad_v2(&out);
        aead::encrypt_with_rng(keyset_key, &aad, pt.expose(), &mut out, rng)?;
        Ok(out)
    }

    /// Opens a format-2 key set with its unwrapped key-set key.
    pub fn open_wrapped(sealed: &[u8], keyset_key: &SecretKey) -> Result<Self, KeySetError> {
        if sealed.len() < 8 || &sealed[..7] != MAGIC || sealed[7] != FORMAT_V2 {
            return Err(KeySetError::Format);
        }
        let (_, _, header_len) = split_v2(sealed)?;
        let pt = aead::decrypt(
            keyset_key,
            &aad_v2(&sealed[..header_len]),
            &sealed[header_len..],
        )?;
        Self::parse(pt.expose()).ok_or(KeySetError::Contents)
    }

    /// Opens a format-1 key set sealed directly under a local root key.
    pub fn open_legacy(root: &SecretKey, sealed: &[u8]) -> Result<Self, KeySetError> {
        if sealed.len() < 8 || &sealed[..7] != MAGIC || sealed[7] != FORMAT_V1 {
            return Err(KeySetError::Format);
        }
        let mut aad = labels::KEYSET_AAD.to_vec();
        aad.extend_from_slice(&[0, FORMAT_V1]);
        let pt = aead::decrypt(root, &aad, &sealed[8..])?;
        Self::parse(pt.expose()).ok_or(KeySetError::Contents)
    }

    fn parse(pt: &[u8]) -> Option<Self> {
        let (&format, rest) = pt.split_first()?;
        if (format != FORMAT_V1 && format != FORMAT_V2) || rest.len() < 6 {
            return None;
        }
        let current = u32::from_be_bytes(rest[..4].try_into().ok()?);
        let count = usize::from(u16::from_be_bytes(rest[4..6].try_into().ok()?));
        let rest = &rest[6..];
        if count == 0 || rest.len() < count * 36 + 32 {
            return None;
        }
        let mut master_keys = Vec::with_capacity(count);
        for chunk in rest[..count * 36].chunks_exact(36) {
            let v = u32::from_be_bytes(chunk[..4].try_into().ok()?);
            if master_keys.iter().any(|(seen, _)| *seen == v) {
                return None;
            }
            master_keys.push((v, SecretKey::from_slice(&chunk[4..])?));
        }
        let mut rest = &rest[count * 36..];
        let mut retired = Vec::new();
        if format == FORMAT_V2 {
            let n = usize::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?));
            let list = rest.get(2..2 + n * 4)?;
            for chunk in list.chunks_exact(4) {
                let v = u32::from_be_bytes(chunk.try_into().ok()?);
                if retired.contains(&v) || master_keys.iter().any(|(m, _)| *m == v) {
                    return None;
                }
                retired.push(v);
            }
            rest = &rest[2 + n * 4..];
        }
        if rest.len() != 32 || !master_keys.iter().any(|(v, _)| *v == current) {
            return None;
        }
        let identity = SigningKey::from_scalar(SecretKey::from_slice(rest)?).ok()?;
        retired.sort_unstable();
        Some(Self {
            current,
            master_keys,
            retired,
            identity,
        })
    }

    /// Seals in format 1 (tests of the upgrade path only).
    #[doc(hidden)]
    pub fn seal_legacy(&self, root: &SecretKey) -> Result<Vec<u8>, CryptoError> {
        let count = u16::try_from(self.master_keys.len())
            .map_err(|_| CryptoError::Unsupported("too many master keys"))?;
        let mut pt = SecretBytes::with_capacity(1 + 4 + 2 + self.master_keys.len() * 36 + 32);
        pt.extend_from_slice(&[FORMAT_V1]);
        pt.extend_from_slice(&self.current.to_be_bytes());
        pt.extend_from_slice(&count.to_be_bytes());
        for (v, k) in &self.master_keys {
            pt.extend_from_slice(&v.to_be_bytes());
            pt.extend_from_slice(k.expose());
        }
        pt.extend_from_slice(self.identity.scalar().expose());
        let mut out = MAGIC.to_vec();
        out.push(FORMAT_V1);
        let mut aad = labels::KEYSET_AAD.to_vec();
        aad.extend_from_slice(&[0, FORMAT_V1]);
        aead::encrypt(root, &aad, pt.expose(), &mut out)?;
        Ok(out)
    }
}

fn aad_v2(header: &[u8]) -> Vec<u8> {
    let mut a = labels::KEYSET_AAD_V2.to_vec();
    a.push(0);
    a.extend_from_slice(header);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_array([b; 32])
    }

    #[test]
    fn seal_open_round_trip() {
        let ks = KeySet::generate().unwrap();
        let sealed = ks.seal("local", &key(3), b"wrapped").unwrap();
        assert_eq!(
            sealed_header(&sealed).unwrap(),
            SealedHeader::Wrapped {
                provider: "local",
                wrapped_key: b"wrapped"
            }
        );
        let back = KeySet::open_wrapped(&sealed, &key(3)).unwrap();
        assert_eq!(back.current_version(), 1);
        assert!(back.master_key(1).unwrap().ct_eq(ks.master_key(1).unwrap()));
        assert_eq!(back.identity().public_key(), ks.identity().public_key());
        assert!(back.master_key(2).is_none());
        assert!(!format!("{back:?}").contains(&crate::hex(ks.master_key(1).unwrap().expose())));
    }

    #[test]
    fn every_flipped_byte_and_wrong_key_fail() {
        let sealed = KeySet::generate()
            .unwrap()
            .seal("local", &key(3), b"wrapped")
            .unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(KeySet::open_wrapped(&bad, &key(3)).is_err(), "byte {i}");
        }
        assert!(matches!(
            KeySet::open_wrapped(&sealed, &key(4)),
            Err(KeySetError::Open(_))
        ));
        assert_eq!(
            KeySet::open_wrapped(&sealed[..7], &key(3)).unwrap_err(),
            KeySetError::Format
        );
        assert_eq!(
            sealed_header(&sealed[..12]).unwrap_err(),
            KeySetError::Format
        );
    }

    #[test]
    fn legacy_format_still_opens() {
        let ks = KeySet::generate().unwrap();
        let sealed = ks.seal_legacy(&key(3)).unwrap();
        assert_eq!(sealed.len(), 8 + 12 + 1 + 4 + 2 + 36 + 32 + 16);
        assert_eq!(sealed_header(&sealed).unwrap(), SealedHeader::Legacy);
        let back = KeySet::open_legacy(&key(3), &sealed).unwrap();
        assert_eq!(back.identity().public_key(), ks.identity().public_key());
        assert!(KeySet::open_legacy(&key(4), &sealed).is_err());
        assert!(KeySet::open_wrapped(&sealed, &key(3)).is_err());
    }

    #[test]
    fn rotate_and_retire_keep_identity_and_survive_sealing() {
        let ks = KeySet::generate().unwrap();
        let r = ks.rotated().unwrap();
        assert_eq!(r.current_version(), 2);
        assert_eq!(r.versions(), vec![1, 2]);
        assert_eq!(r.identity().public_key(), ks.identity().public_key());
        assert!(r.master_key(1).unwrap().ct_eq(ks.master_key(1).unwrap()));
        assert_eq!(r.retired(2).unwrap_err(), ChangeError::RetireCurrent(2));
        assert_eq!(r.retired(7).unwrap_err(), ChangeError::UnknownVersion(7));
        let gone = r.retired(1).unwrap();
        assert_eq!(gone.versions(), vec![2]);
        assert!(gone.is_retired(1) && gone.master_key(1).is_none());
        assert_eq!(gone.retired(1).unwrap_err(), ChangeError::AlreadyRetired(1));
        // A retired number is never handed out again.
        let three = gone.rotated().unwrap();
        assert_eq!(three.current_version(), 3);
        let back = KeySet::open_wrapped(&three.seal("x", &key(1), b"w").unwrap(), &key(1)).unwrap();
        assert_eq!(back.versions(), vec![2, 3]);
        assert_eq!(back.retired_versions(), &[1]);
        assert_eq!(back.current_version(), 3);
    }
}
