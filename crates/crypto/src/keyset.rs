//! The key set: versioned master keys and the identity key, sealed as one
//! blob under the root key (DESIGN.md, "Key hierarchy").
//!
//! Sealed layout (format 1):
//! ```text
//! "KMSKSET" ‖ u8(1) ‖ nonce[12] ‖ AES-256-GCM(root_key, plaintext, aad)
//! aad       = "kms/keyset/v1" ‖ 0x00 ‖ u8(1)
//! plaintext = u8(1) ‖ u32be(current) ‖ u16be(count)
//!             ‖ count × (u32be(version) ‖ master_key[32]) ‖ identity_scalar[32]
//! ```

use crate::rng::{RandomSource, SystemRng};
use crate::sign::SigningKey;
use crate::{aead, labels, CryptoError, OpenError, SecretBytes, SecretKey};

const MAGIC: &[u8; 7] = b"KMSKSET";
const FORMAT: u8 = 1;

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

/// Master keys by version, the current version, and the identity key.
pub struct KeySet {
    current: u32,
    master_keys: Vec<(u32, SecretKey)>,
    identity: SigningKey,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("current", &self.current)
            .field(
                "versions",
                &self.master_keys.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            )
            .field("identity", self.identity.public_key())
            .finish()
    }
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

    pub fn identity(&self) -> &SigningKey {
        &self.identity
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

    /// Seals the key set under `root`.
    pub fn seal(&self, root: &SecretKey) -> Result<Vec<u8>, CryptoError> {
        self.seal_with_rng(root, &mut SystemRng)
    }

    pub fn seal_with_rng(
        &self,
        root: &SecretKey,
        rng: &mut impl RandomSource,
    ) -> Result<Vec<u8>, CryptoError> {
        let count = u16::try_from(self.master_keys.len())
            .map_err(|_| CryptoError::Unsupported("too many master keys"))?;
        let mut pt = SecretBytes::with_capacity(1 + 4 + 2 + self.master_keys.len() * 36 + 32);
        pt.extend_from_slice(&[FORMAT]);
        pt.extend_from_slice(&self.current.to_be_bytes());
        pt.extend_from_slice(&count.to_be_bytes());
        for (v, k) in &self.master_keys {
            pt.extend_from_slice(&v.to_be_bytes());
            pt.extend_from_slice(k.expose());
        }
        pt.extend_from_slice(self.identity.scalar().expose());
        let mut out = Vec::with_capacity(8 + 12 + pt.len() + 16);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        aead::encrypt_with_rng(root, &aad(), pt.expose(), &mut out, rng)?;
        Ok(out)
    }

    /// Opens a sealed key set.
    pub fn open(root: &SecretKey, sealed: &[u8]) -> Result<Self, KeySetError> {
        if sealed.len() < 8 || &sealed[..7] != MAGIC || sealed[7] != FORMAT {
            return Err(KeySetError::Format);
        }
        let pt = aead::decrypt(root, &aad(), &sealed[8..])?;
        Self::parse(pt.expose()).ok_or(KeySetError::Contents)
    }

    fn parse(pt: &[u8]) -> Option<Self> {
        let (&format, rest) = pt.split_first()?;
        if format != FORMAT || rest.len() < 6 {
            return None;
        }
        let current = u32::from_be_bytes(rest[..4].try_into().ok()?);
        let count = usize::from(u16::from_be_bytes(rest[4..6].try_into().ok()?));
        let rest = &rest[6..];
        if rest.len() != count * 36 + 32 || count == 0 {
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
        if !master_keys.iter().any(|(v, _)| *v == current) {
            return None;
        }
        let identity = SigningKey::from_scalar(SecretKey::from_slice(&rest[count * 36..])?).ok()?;
        Some(Self {
            current,
            master_keys,
            identity,
        })
    }
}

fn aad() -> Vec<u8> {
    let mut a = labels::KEYSET_AAD.to_vec();
    a.push(0);
    a.push(FORMAT);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let root = SecretKey::from_array([3; 32]);
        let ks = KeySet::generate().unwrap();
        let sealed = ks.seal(&root).unwrap();
        assert_eq!(sealed.len(), 8 + 12 + 1 + 4 + 2 + 36 + 32 + 16);
        let back = KeySet::open(&root, &sealed).unwrap();
        assert_eq!(back.current_version(), 1);
        assert!(back.master_key(1).unwrap().ct_eq(ks.master_key(1).unwrap()));
        assert_eq!(back.identity().public_key(), ks.identity().public_key());
        assert!(back.master_key(2).is_none());
        assert!(!format!("{back:?}").contains(&crate::hex(ks.master_key(1).unwrap().expose())));
    }

    #[test]
    fn every_flipped_byte_and_wrong_root_fail() {
        let root = SecretKey::from_array([3; 32]);
        let sealed = KeySet::generate().unwrap().seal(&root).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(KeySet::open(&root, &bad).is_err(), "byte {i}");
        }
        assert!(matches!(
            KeySet::open(&SecretKey::from_array([4; 32]), &sealed),
            Err(KeySetError::Open(_))
        ));
        assert_eq!(
            KeySet::open(&root, &sealed[..7]).unwrap_err(),
            KeySetError::Format
        );
    }
}
