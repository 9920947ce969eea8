//! Hierarchical deterministic keys (docs/protocol.md §8): BIP-39 seeds,
//! BIP-32 on secp256k1 and SLIP-10 on ed25519 and NIST P-256, and the
//! 78-byte BIP-32 serialization a `bip32` wallet stores.
//!
//! One implementation for all three curves, because the protocol asks for
//! SLIP-10's rule for an invalid key on secp256k1 too (recompute with
//! `0x01 ‖ IR ‖ ser32(i)` rather than BIP-32's "skip to the next i"), which
//! the usual BIP-32 crates do not do. Every intermediate secret (HMAC
//! outputs, parent keys, the seed) sits in a zeroizing buffer.

use std::num::NonZeroU32;

use aws_lc_rs::{hmac, pbkdf2};
use kms_protocol::{ChildNumber, Curve, DerivationPath};
use zeroize::{Zeroize, Zeroizing};

use crate::rng::RandomSource;
use crate::{ed25519, p256, secp256k1, CryptoError, SecretBytes, SecretKey};

/// BIP-32 version bytes of a mainnet (`xprv`) and testnet (`tprv`) private node.
pub const VERSION_XPRV: [u8; 4] = [0x04, 0x88, 0xad, 0xe4];
pub const VERSION_TPRV: [u8; 4] = [0x04, 0x35, 0x83, 0x94];
/// And of the public nodes (`xpub`, `tpub`).
pub const VERSION_XPUB: [u8; 4] = [0x04, 0x88, 0xb2, 0x1e];
pub const VERSION_TPUB: [u8; 4] = [0x04, 0x35, 0x87, 0xcf];

/// The HMAC key of each curve's master node.
const fn master_hmac_key(curve: Curve) -> &'static [u8] {
    match curve {
        Curve::Secp256k1 => b"Bitcoin seed",
        Curve::Ed25519 => b"ed25519 seed",
        Curve::P256 => b"Nist256p1 seed",
    }
}

/// Why a derivation could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeriveError {
    /// A normal (non-hardened) step on ed25519, which SLIP-10 does not define.
    #[error("ed25519 derives hardened steps only")]
    NormalStepOnEd25519,
    /// The node's curve is not the one asked for.
    #[error("this node is not on the requested curve")]
    WrongCurve,
    /// A step below depth 255, which BIP-32's one-byte depth cannot record
    /// (an imported `bip32` node may sit anywhere down to 255).
    #[error("the path goes below depth 255")]
    TooDeep,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// A node of an HD tree: a private key and its chain code, on one curve.
pub struct ExtendedKey {
    curve: Curve,
    key: SecretKey,
    chain_code: SecretKey,
    depth: u8,
    parent_fingerprint: [u8; 4],
    child_number: ChildNumber,
    /// SEC1 compressed (33 bytes) or the ed25519 key (32 bytes).
    public_key: Vec<u8>,
}

impl std::fmt::Debug for ExtendedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtendedKey")
            .field("curve", &self.curve)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA512 into a zeroizing buffer.
fn hmac_sha512(key: &[u8], data: &[u8]) -> Result<Zeroizing<[u8; 64]>, CryptoError> {
    let key = hmac::Key::new(hmac::HMAC_SHA512, key);
    let mut out = Zeroizing::new([0u8; 64]);
    hmac::sign_to_buffer(&key, data, &mut out[..]).map_err(|_| CryptoError::Backend("hmac"))?;
    Ok(out)
}

fn split(i: &[u8; 64]) -> (SecretKey, SecretKey) {
    let mut il = SecretKey::from_array([0; 32]);
    let mut ir = SecretKey::from_array([0; 32]);
    il.expose_mut().copy_from_slice(&i[..32]);
    ir.expose_mut().copy_from_slice(&i[32..]);
    (il, ir)
}

/// The public key of a private key on `curve`; `None` when the key is out
/// of range (zero or ≥ n on the Weierstrass curves).
fn public_key_of(curve: Curve, key: &SecretKey) -> Option<Vec<u8>> {
    match curve {
        Curve::Secp256k1 => {
            secp256k1::PrivateKey::from_scalar(key).map(|k| k.public_key().to_vec())
        }
        Curve::P256 => p256::PrivateKey::from_scalar(SecretKey::from_array(*key.expose()))
            .map(|k| k.public_key_compressed().to_vec()),
        Curve::Ed25519 => ed25519::PrivateKey::from_seed(SecretKey::from_array(*key.expose()))
            .ok()
            .map(|k| k.public_key().to_vec()),
    }
}

/// `(parent + il) mod n`, or `None` when `il ≥ n` or the sum is zero.
fn add_mod_n(curve: Curve, parent: &SecretKey, il: &SecretKey) -> Option<SecretKey> {
    match curve {
        Curve::Secp256k1 => secp256k1::PrivateKey::from_scalar(parent)?
            .add_scalar(il.expose())
            .map(|k| k.scalar()),
        Curve::P256 => {
            if !p256::scalar_in_range(il.expose(), &p256::P256_N) && !is_zero(il.expose()) {
                return None;
            }
            let sum = scalar_add_mod(parent.expose(), il.expose(), &p256::P256_N);
            (!is_zero(sum.expose())).then_some(sum)
        }
        Curve::Ed25519 => None,
    }
}

fn is_zero(x: &[u8; 32]) -> bool {
    x.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// `(a + b) mod n` for `a, b < n`, in constant time over big-endian bytes.
fn scalar_add_mod(a: &[u8; 32], b: &[u8; 32], n: &[u8; 32]) -> SecretKey {
    let limbs = |x: &[u8; 32]| -> [u64; 4] {
        let mut l = [0u64; 4];
        for (i, limb) in l.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&x[32 - 8 * (i + 1)..32 - 8 * i]);
            *limb = u64::from_be_bytes(w);
        }
        l
    };
    let (mut a, mut b, n) = (limbs(a), limbs(b), limbs(n));
    let mut sum = [0u64; 4];
    let mut carry = 0u64;
    for i in 0..4 {
        let (s1, c1) = a[i].overflowing_add(b[i]);
        let (s2, c2) = s1.overflowing_add(carry);
        sum[i] = s2;
        carry = u64::from(c1) + u64::from(c2);
    }
    let mut diff = [0u64; 4];
    let mut borrow = 0u64;
    for i in 0..4 {
        let (d1, b1) = sum[i].overflowing_sub(n[i]);
        let (d2, b2) = d1.overflowing_sub(borrow);
        diff[i] = d2;
        borrow = u64::from(b1) + u64::from(b2);
    }
    // Take the difference when the sum overflowed 256 bits or did not
    // borrow (sum ≥ n); both are 0/1, so the mask is all ones or zero.
    let take_diff = carry | (borrow ^ 1);
    let mask = 0u64.wrapping_sub(take_diff & 1);
    let mut out = SecretKey::from_array([0; 32]);
    for i in 0..4 {
        let limb = (diff[i] & mask) | (sum[i] & !mask);
        out.expose_mut()[32 - 8 * (i + 1)..32 - 8 * i].copy_from_slice(&limb.to_be_bytes());
    }
    a.zeroize();
    b.zeroize();
    sum.zeroize();
    diff.zeroize();
    out
}

impl ExtendedKey {
    /// The master node of a seed on `curve` (BIP-32 / SLIP-10), with
    /// SLIP-10's retry for an IL that is zero or not below n.
    pub fn master(curve: Curve, seed: &[u8]) -> Result<Self, CryptoError> {
        let key = master_hmac_key(curve);
        let mut i = hmac_sha512(key, seed)?;
        loop {
            let (il, ir) = split(&i);
            if let Some(public_key) = public_key_of(curve, &il) {
                return Ok(Self {
                    curve,
                    key: il,
                    chain_code: ir,
                    depth: 0,
                    parent_fingerprint: [0; 4],
                    child_number: ChildNumber::from_ser32(0),
                    public_key,
                });
            }
            i = hmac_sha512(key, &i[..])?;
        }
    }

    /// The child at `step` (CKDpriv), with SLIP-10's rule for an invalid child.
    pub fn child(&self, step: ChildNumber) -> Result<Self, DeriveError> {
        if self.curve == Curve::Ed25519 && !step.is_hardened() {
            return Err(DeriveError::NormalStepOnEd25519);
        }
        let ser32 = step.ser32();
        let mut data = Zeroizing::new(Vec::with_capacity(37));
        if step.is_hardened() {
            data.push(0);
            data.extend_from_slice(self.key.expose());
        } else {
            data.extend_from_slice(&self.public_key);
        }
        data.extend_from_slice(&ser32);
        let depth = self.depth.checked_add(1).ok_or(DeriveError::TooDeep)?;
        loop {
            let i = hmac_sha512(self.chain_code.expose(), &data)?;
            let (il, ir) = split(&i);
            let key = match self.curve {
                Curve::Ed25519 => Some(il),
                curve => add_mod_n(curve, &self.key, &il),
            };
            if let Some(key) = key {
                let public_key = public_key_of(self.curve, &key)
                    .ok_or(CryptoError::Backend("derived key out of range"))?;
                return Ok(Self {
                    curve: self.curve,
                    key,
                    chain_code: ir,
                    depth,
                    parent_fingerprint: [0; 4],
                    child_number: step,
                    public_key,
                });
            }
            data.clear();
            data.push(1);
            data.extend_from_slice(ir.expose());
            data.extend_from_slice(&ser32);
        }
    }

    /// The node at `path` below this one.
    pub fn derive(&self, path: &DerivationPath) -> Result<Self, DeriveError> {
        if self.curve == Curve::Ed25519 && !path.all_hardened() {
            return Err(DeriveError::NormalStepOnEd25519);
        }
        let mut node = self.clone_node();
        for &step in path.steps() {
            node = node.child(step)?;
        }
        Ok(node)
    }

    fn clone_node(&self) -> Self {
        Self {
            curve: self.curve,
            key: SecretKey::from_array(*self.key.expose()),
            chain_code: SecretKey::from_array(*self.chain_code.expose()),
            depth: self.depth,
            parent_fingerprint: self.parent_fingerprint,
            child_number: self.child_number,
            public_key: self.public_key.clone(),
        }
    }

    /// Parses the 78-byte serialization of a private node with the rules of
    /// docs/protocol.md's key-material table; the reason names the rule.
    pub fn from_bip32(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() != 78 {
            return Err("a bip32 node is 78 bytes");
        }
        if bytes[..4] != VERSION_XPRV && bytes[..4] != VERSION_TPRV {
            return Err("bip32 version is not xprv or tprv");
        }
        let depth = bytes[4];
        let mut parent_fingerprint = [0u8; 4];
        parent_fingerprint.copy_from_slice(&bytes[5..9]);
        let child = u32::from_be_bytes([bytes[9], bytes[10], bytes[11], bytes[12]]);
        if depth == 0 && (parent_fingerprint != [0; 4] || child != 0) {
            return Err("a depth-0 bip32 node has a zero fingerprint and child number");
        }
        if bytes[45] != 0 {
            return Err("bip32 private key is not 0x00-prefixed");
        }
        let chain_code = SecretKey::from_slice(&bytes[13..45]).ok_or("length")?;
        let key = SecretKey::from_slice(&bytes[46..78]).ok_or("length")?;
        let public_key =
            public_key_of(Curve::Secp256k1, &key).ok_or("bip32 scalar out of range")?;
        Ok(Self {
            curve: Curve::Secp256k1,
            key,
            chain_code,
            depth,
            parent_fingerprint,
            child_number: ChildNumber::from_ser32(child),
            public_key,
        })
    }

    /// The 78-byte BIP-32 serialization of this private node.
    pub fn to_bip32(&self, version: [u8; 4]) -> SecretBytes {
        let mut out = SecretBytes::with_capacity(78);
        out.extend_from_slice(&version);
        out.extend_from_slice(&[self.depth]);
        out.extend_from_slice(&self.parent_fingerprint);
        out.extend_from_slice(&self.child_number.ser32());
        out.extend_from_slice(self.chain_code.expose());
        out.extend_from_slice(&[0]);
        out.extend_from_slice(self.key.expose());
        out
    }

    /// The 78-byte BIP-32 serialization of this node's public half (an
    /// `xpub` with [`VERSION_XPUB`]), secp256k1 only.
    pub fn to_bip32_public(&self, version: [u8; 4]) -> Result<[u8; 78], DeriveError> {
        if self.curve != Curve::Secp256k1 {
            return Err(DeriveError::WrongCurve);
        }
        let mut out = [0u8; 78];
        out[..4].copy_from_slice(&version);
        out[4] = self.depth;
        out[5..9].copy_from_slice(&self.parent_fingerprint);
        out[9..13].copy_from_slice(&self.child_number.ser32());
        out[13..45].copy_from_slice(self.chain_code.expose());
        out[45..78].copy_from_slice(&self.public_key);
        Ok(out)
    }

    pub fn curve(&self) -> Curve {
        self.curve
    }

    pub fn private_key(&self) -> &SecretKey {
        &self.key
    }

    pub fn chain_code(&self) -> [u8; 32] {
        *self.chain_code.expose()
    }

    /// SEC1 compressed (secp256k1, p256) or 32 bytes (ed25519).
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    pub fn depth(&self) -> u8 {
        self.depth
    }
}

/// A fresh `bip32` wallet: the secp256k1 master node of 32 random seed
/// bytes, serialized with the `xprv` version (docs/protocol.md §7).
pub fn generate_bip32(rng: &mut impl RandomSource) -> Result<SecretBytes, CryptoError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill(&mut seed[..])?;
    Ok(ExtendedKey::master(Curve::Secp256k1, &seed[..])?.to_bip32(VERSION_XPRV))
}

/// The BIP-39 seed of `entropy` with the empty passphrase: PBKDF2-HMAC-SHA512
/// of the English mnemonic (words joined by one space), salt `"mnemonic"`,
/// 2048 iterations.
pub fn bip39_seed(entropy: &[u8]) -> Result<SecretBytes, CryptoError> {
    bip39_seed_with_passphrase(entropy, "")
}

/// The BIP-39 seed with a passphrase (salt `"mnemonic" ‖ passphrase`; the
/// caller gives it NFKD-normalised). The service itself uses only the
/// empty one; a wallet with a passphrase is imported as `bip32`.
pub fn bip39_seed_with_passphrase(
    entropy: &[u8],
    passphrase: &str,
) -> Result<SecretBytes, CryptoError> {
    let phrase = bip39_mnemonic(entropy)?;
    let mut salt = SecretBytes::with_capacity(8 + passphrase.len());
    salt.extend_from_slice(b"mnemonic");
    salt.extend_from_slice(passphrase.as_bytes());
    let iterations = NonZeroU32::new(2048).ok_or(CryptoError::Backend("pbkdf2"))?;
    let mut seed = SecretBytes::with_capacity(64);
    let mut out = Zeroizing::new([0u8; 64]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        salt.expose(),
        phrase.expose(),
        &mut out[..],
    );
    seed.extend_from_slice(&out[..]);
    Ok(seed)
}

/// The English mnemonic of BIP-39 entropy, words joined by one space.
pub fn bip39_mnemonic(entropy: &[u8]) -> Result<SecretBytes, CryptoError> {
    let mnemonic = bip39::Mnemonic::from_entropy(entropy)
        .map_err(|_| CryptoError::Unsupported("bip39 entropy length"))?;
    let mut phrase = SecretBytes::with_capacity(24 * 9);
    for (i, word) in mnemonic.words().enumerate() {
        if i > 0 {
            phrase.extend_from_slice(b" ");
        }
        phrase.extend_from_slice(word.as_bytes());
    }
    Ok(phrase)
}

/// The entropy of an English mnemonic (checksum checked); whitespace
/// between words may be any run of spaces.
pub fn bip39_entropy(mnemonic: &str) -> Result<SecretBytes, &'static str> {
    let m = bip39::Mnemonic::parse_in_normalized(bip39::Language::English, mnemonic)
        .map_err(|_| "not a valid English BIP-39 mnemonic")?;
    let (mut arr, len) = m.to_entropy_array();
    let out = SecretBytes::new(arr[..len].to_vec());
    arr.zeroize();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn path(p: &str) -> DerivationPath {
        DerivationPath::parse(p).unwrap()
    }

    /// BIP-32 test vector 1 and SLIP-10 test vector 1 for the other curves.
    #[test]
    fn published_vectors() {
        let seed = unhex("000102030405060708090a0b0c0d0e0f");
        let m = ExtendedKey::master(Curve::Secp256k1, &seed).unwrap();
        let n = m.derive(&path("m/0'/1/2'/2/1000000000")).unwrap();
        assert_eq!(
            crate::hex(n.public_key()),
            "022a471424da5e657499d1ff51cb43c47481a03b1e77f951fe64cec9f5a48f7011"
        );
        assert_eq!(
            crate::hex(&n.chain_code()),
            "c783e67b921d2beb8f6b389cc646d7263b4145701dadd2161548a8b078e65e9e"
        );
        let m = ExtendedKey::master(Curve::Ed25519, &seed).unwrap();
        let n = m.derive(&path("m/0'/1'/2'/2'/1000000000'")).unwrap();
        assert_eq!(
            crate::hex(n.public_key()),
            "3c24da049451555d51a7014a37337aa4e12d41e485abccfa46b47dfb2af54b7a"
        );
        assert_eq!(
            crate::hex(n.private_key().expose()),
            "8f94d394a8e8fd6b1bc2f3f49f5c47e385281d5c17e65324b0f62483e37e8793"
        );
        let m = ExtendedKey::master(Curve::P256, &seed).unwrap();
        let n = m.derive(&path("m/0'/1/2'/2/1000000000")).unwrap();
        assert_eq!(
            crate::hex(n.public_key()),
            "02216cd26d31147f72427a453c443ed2cde8a1e53c9cc44e5ddf739725413fe3f4"
        );
        assert!(matches!(
            ExtendedKey::master(Curve::Ed25519, &seed)
                .unwrap()
                .derive(&path("m/0")),
            Err(DeriveError::NormalStepOnEd25519)
        ));
    }

    /// SLIP-10's published vector for the child retry on P-256 (seed
    /// 000102…0f, `m/28578'/33941`, where the second step recomputes once).
    #[test]
    fn p256_retry_vector() {
        let seed = unhex("000102030405060708090a0b0c0d0e0f");
        let n = ExtendedKey::master(Curve::P256, &seed)
            .unwrap()
            .derive(&path("m/28578'/33941"))
            .unwrap();
        assert_eq!(
            crate::hex(n.public_key()),
            "0235bfee614c0d5b2cae260000bb1d0d84b270099ad790022c1ae0b2e782efe120"
        );
    }

    #[test]
    fn modular_addition() {
        let mut n_minus_1 = p256::P256_N;
        n_minus_1[31] -= 1;
        let mut two = [0u8; 32];
        two[31] = 2;
        let mut one = [0u8; 32];
        one[31] = 1;
        // (n−1) + 2 = 1 mod n; (n−1) + 1 = 0 mod n.
        assert_eq!(
            scalar_add_mod(&n_minus_1, &two, &p256::P256_N).expose(),
            &one
        );
        assert_eq!(
            scalar_add_mod(&n_minus_1, &one, &p256::P256_N).expose(),
            &[0u8; 32]
        );
        assert_eq!(scalar_add_mod(&one, &one, &p256::P256_N).expose(), &two);
    }

    #[test]
    fn bip32_round_trip_and_rules() {
        let seed = unhex("000102030405060708090a0b0c0d0e0f");
        let m = ExtendedKey::master(Curve::Secp256k1, &seed).unwrap();
        let ser = m.to_bip32(VERSION_XPRV);
        let back = ExtendedKey::from_bip32(ser.expose()).unwrap();
        assert_eq!(back.public_key(), m.public_key());
        let mut bad = ser.expose().to_vec();
        bad[5] = 1; // depth 0 with a fingerprint
        assert!(ExtendedKey::from_bip32(&bad).is_err());
        let mut bad = ser.expose().to_vec();
        bad[0] = 0x05;
        assert!(ExtendedKey::from_bip32(&bad).is_err());
        let mut bad = ser.expose().to_vec();
        bad[46..].copy_from_slice(&secp256k1::N);
        assert!(ExtendedKey::from_bip32(&bad).is_err());
        assert!(ExtendedKey::from_bip32(&ser.expose()[..77]).is_err());
        // A valid node at depth 255 has no children BIP-32 can write.
        let mut deep = ser.expose().to_vec();
        deep[4] = 255;
        deep[5..9].copy_from_slice(&[1, 2, 3, 4]);
        let deep = ExtendedKey::from_bip32(&deep).unwrap();
        assert_eq!(deep.derive(&path("m")).unwrap().depth(), 255);
        assert!(matches!(
            deep.derive(&path("m/0")),
            Err(DeriveError::TooDeep)
        ));
    }

    /// The BIP-39 reference vector for all-zero entropy ("abandon … about")
    /// with the empty passphrase.
    #[test]
    fn bip39_seed_of_zero_entropy() {
        let seed = bip39_seed(&[0; 16]).unwrap();
        assert_eq!(
            crate::hex(seed.expose()),
            "5eb00bbddcf069084889a8ab9155568165f5c453ccb85e70811aaed6f6da5fc19a5ac40b389cd370d086206dec8aa6c43daea6690f20ad3d8d48b2d2ce9e38e4"
        );
        let words = bip39_mnemonic(&[0; 16]).unwrap();
        assert!(words.expose().ends_with(b"abandon about"));
        let text = std::str::from_utf8(words.expose()).unwrap();
        assert_eq!(bip39_entropy(text).unwrap().expose(), &[0u8; 16]);
        assert!(bip39_entropy("abandon abandon").is_err());
    }
}
