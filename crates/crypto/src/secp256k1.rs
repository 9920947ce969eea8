//! secp256k1 wallet keys: ECDSA with RFC 6979 nonces and low S, BIP-340
//! Schnorr, and BIP-341 key-path tweaking (docs/protocol.md §9), on
//! libsecp256k1 through the `secp256k1` crate and its global context.
//! This is the one secp256k1 implementation in the workspace: public keys,
//! derivation (in [`crate::hd`]) and signing all go through it.

use ::secp256k1::{ecdsa, schnorr, Keypair, Message, Scalar, XOnlyPublicKey};
use zeroize::Zeroize;

use crate::rng::RandomSource;
use crate::{sha256, CryptoError, SecretKey};

/// Order n of the secp256k1 group (SEC 2 §2.4.1), big-endian.
pub const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// A secp256k1 private key: a scalar in [1, n−1]. The library's key type
/// is `Copy`, so this wrapper owns the only copy it hands out and erases it
/// on drop.
pub struct PrivateKey(::secp256k1::SecretKey);

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.non_secure_erase();
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("secp256k1::PrivateKey([REDACTED])")
    }
}

/// An ECDSA signature and the recovery id of its (low-S) form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoverableSignature {
    pub signature: [u8; 64],
    /// 0 or 1: the parity of R's y coordinate (R's x is always below n
    /// here except with negligible probability, which libsecp256k1 reports
    /// as 2 or 3; [`PrivateKey::sign_ecdsa`] refuses those).
    pub recovery_id: u8,
}

impl PrivateKey {
    /// The key of a 32-byte big-endian scalar; `None` outside [1, n−1].
    pub fn from_scalar(scalar: &SecretKey) -> Option<Self> {
        ::secp256k1::SecretKey::from_secret_bytes(*scalar.expose())
            .ok()
            .map(Self)
    }

    /// A fresh key: a scalar rejection-sampled from `rng` into [1, n−1].
    pub fn generate_with_rng(rng: &mut impl RandomSource) -> Result<Self, CryptoError> {
        for _ in 0..64 {
            let mut k = SecretKey::from_array([0; 32]);
            rng.fill(k.expose_mut())?;
            if let Some(key) = Self::from_scalar(&k) {
                return Ok(key);
            }
        }
        Err(CryptoError::Backend(
            "random source produced no valid scalar",
        ))
    }

    /// The scalar, big-endian.
    pub fn scalar(&self) -> SecretKey {
        SecretKey::from_array(self.0.to_secret_bytes())
    }

    /// SEC1 compressed public key, 33 bytes.
    pub fn public_key(&self) -> [u8; 33] {
        self.0.public_key().serialize()
    }

    /// `(self + tweak) mod n`, or `None` when `tweak ≥ n` or the sum is
    /// zero (the cases BIP-32 and SLIP-10 treat as an invalid child).
    pub fn add_scalar(&self, tweak: &[u8; 32]) -> Option<Self> {
        let tweak = Scalar::from_be_bytes(*tweak).ok()?;
        self.0.add_tweak(&tweak).ok().map(Self)
    }

    /// ECDSA over a 32-byte digest: RFC 6979 nonce (HMAC-SHA256, no extra
    /// data), so deterministic, and S normalised to the lower half.
    pub fn sign_ecdsa(&self, digest: &[u8; 32]) -> Result<RecoverableSignature, CryptoError> {
        let sig = ecdsa::RecoverableSignature::sign_ecdsa_recoverable(
            Message::from_digest(*digest),
            &self.0,
        );
        let (id, signature) = sig.serialize_compact();
        let recovery_id = match u8::from(id) {
            0 => 0,
            1 => 1,
            _ => return Err(CryptoError::Backend("ecdsa recovery id above 1")),
        };
        Ok(RecoverableSignature {
            signature,
            recovery_id,
        })
    }

    /// BIP-340 Schnorr over a 32-byte message with `aux` as the auxiliary
    /// randomness. Returns the signature and the x-only public key.
    pub fn sign_schnorr(&self, message: &[u8; 32], aux: &[u8; 32]) -> ([u8; 64], [u8; 32]) {
        let mut pair = Keypair::from_secret_key(&self.0);
        let sig = schnorr::sign_with_aux_rand(message, &pair, aux);
        let xonly = pair.x_only_public_key().0.to_byte_array();
        pair.non_secure_erase();
        (sig.to_byte_array(), xonly)
    }

    /// BIP-340 Schnorr by the BIP-341 output key: the internal key tweaked by
    /// `t = hash_TapTweak(P ‖ merkle_root)` (just `P` with no script tree,
    /// as BIP-86 has it). Returns the signature and the x-only output key.
    pub fn sign_taproot(
        &self,
        message: &[u8; 32],
        merkle_root: Option<&[u8; 32]>,
        aux: &[u8; 32],
    ) -> Result<([u8; 64], [u8; 32]), CryptoError> {
        let pair = Keypair::from_secret_key(&self.0);
        let internal = pair.x_only_public_key().0.to_byte_array();
        let tweak = Scalar::from_be_bytes(tap_tweak(&internal, merkle_root))
            .map_err(|_| CryptoError::Backend("taproot tweak out of range"))?;
        let mut tweaked = pair
            .add_xonly_tweak(&tweak)
            .map_err(|_| CryptoError::Backend("taproot tweak gave the point at infinity"))?;
        let sig = schnorr::sign_with_aux_rand(message, &tweaked, aux);
        let output = tweaked.x_only_public_key().0.to_byte_array();
        tweaked.non_secure_erase();
        let mut pair = pair;
        pair.non_secure_erase();
        Ok((sig.to_byte_array(), output))
    }
}

/// BIP-340 tagged hash `SHA-256(SHA-256(tag) ‖ SHA-256(tag) ‖ data)`.
pub fn tagged_hash(tag: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let t = sha256(tag);
    let mut data = Vec::with_capacity(64 + parts.iter().map(|p| p.len()).sum::<usize>());
    data.extend_from_slice(&t);
    data.extend_from_slice(&t);
    for p in parts {
        data.extend_from_slice(p);
    }
    let out = sha256(&data);
    data.zeroize();
    out
}

/// The BIP-341 tweak of an x-only internal key.
pub fn tap_tweak(internal: &[u8; 32], merkle_root: Option<&[u8; 32]>) -> [u8; 32] {
    match merkle_root {
        Some(root) => tagged_hash(b"TapTweak", &[internal, root]),
        None => tagged_hash(b"TapTweak", &[internal]),
    }
}

/// The BIP-341 output key of an internal key given SEC1-compressed:
/// `Q = P + t·G` with `P` lifted to even y. Returns Q's x coordinate.
pub fn taproot_output_key(
    internal: &[u8; 33],
    merkle_root: Option<&[u8; 32]>,
) -> Result<[u8; 32], CryptoError> {
    let pk =
        ::secp256k1::PublicKey::from_slice(internal).map_err(|_| CryptoError::InvalidPublicKey)?;
    let (xonly, _) = pk.x_only_public_key();
    let tweak = Scalar::from_be_bytes(tap_tweak(&xonly.to_byte_array(), merkle_root))
        .map_err(|_| CryptoError::Backend("taproot tweak out of range"))?;
    let (out, _) = xonly
        .add_tweak(&tweak)
        .map_err(|_| CryptoError::Backend("taproot tweak gave the point at infinity"))?;
    Ok(out.to_byte_array())
}

/// Checks a 33-byte SEC1 compressed key is a point on secp256k1.
pub fn check_public_key(public: &[u8]) -> Result<(), CryptoError> {
    match public.len() {
        33 => ::secp256k1::PublicKey::from_slice(public)
            .map(|_| ())
            .map_err(|_| CryptoError::InvalidPublicKey),
        _ => Err(CryptoError::InvalidPublicKey),
    }
}

/// The SEC1 uncompressed form (65 bytes) of a compressed key.
pub fn decompress(public: &[u8; 33]) -> Result<[u8; 65], CryptoError> {
    ::secp256k1::PublicKey::from_slice(public)
        .map(|k| k.serialize_uncompressed())
        .map_err(|_| CryptoError::InvalidPublicKey)
}

/// Verifies a compact `r ‖ s` ECDSA signature; high S is refused, as
/// libsecp256k1 does (every signature the service makes is low S).
pub fn verify_ecdsa(public: &[u8], digest: &[u8; 32], sig: &[u8; 64]) -> Result<(), CryptoError> {
    let pk =
        ::secp256k1::PublicKey::from_slice(public).map_err(|_| CryptoError::InvalidPublicKey)?;
    let sig = ecdsa::Signature::from_compact(sig).map_err(|_| CryptoError::BadSignature)?;
    ecdsa::verify(&sig, Message::from_digest(*digest), &pk).map_err(|_| CryptoError::BadSignature)
}

/// The public key an ECDSA signature and recovery id recover to, compressed.
pub fn recover_ecdsa(
    digest: &[u8; 32],
    sig: &[u8; 64],
    recovery_id: u8,
) -> Result<[u8; 33], CryptoError> {
    let id = ecdsa::RecoveryId::try_from(i32::from(recovery_id))
        .map_err(|_| CryptoError::BadSignature)?;
    let sig = ecdsa::RecoverableSignature::from_compact(sig, id)
        .map_err(|_| CryptoError::BadSignature)?;
    sig.recover_ecdsa(Message::from_digest(*digest))
        .map(|k| k.serialize())
        .map_err(|_| CryptoError::BadSignature)
}

/// Verifies a BIP-340 signature under a 32-byte x-only key.
pub fn verify_schnorr(xonly: &[u8], message: &[u8], sig: &[u8; 64]) -> Result<(), CryptoError> {
    let xonly: [u8; 32] = xonly
        .try_into()
        .map_err(|_| CryptoError::InvalidPublicKey)?;
    let pk = XOnlyPublicKey::from_byte_array(xonly).map_err(|_| CryptoError::InvalidPublicKey)?;
    schnorr::verify(&schnorr::Signature::from_byte_array(*sig), message, &pk)
        .map_err(|_| CryptoError::BadSignature)
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

    fn key(hex: &str) -> PrivateKey {
        PrivateKey::from_scalar(&SecretKey::from_slice(&unhex(hex)).unwrap()).unwrap()
    }

    #[test]
    fn range() {
        let mut n = N;
        assert!(PrivateKey::from_scalar(&SecretKey::from_array(n)).is_none());
        assert!(PrivateKey::from_scalar(&SecretKey::from_array([0; 32])).is_none());
        n[31] -= 1;
        assert!(PrivateKey::from_scalar(&SecretKey::from_array(n)).is_some());
    }

    /// BIP-340's test vector 1 (secret key 3... with zero aux is vector 0).
    #[test]
    fn bip340_vector() {
        let k = key("0000000000000000000000000000000000000000000000000000000000000003");
        let (sig, xonly) = k.sign_schnorr(&[0; 32], &[0; 32]);
        assert_eq!(
            crate::hex(&xonly),
            "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9"
        );
        assert_eq!(
            crate::hex(&sig),
            "e907831f80848d1069a5371b402410364bdf1c5f8307b0084c55f1ce2dca821525f66a4a85ea8b71e482a74f382d2ce5ebeee8fdb2172f477df4900d310536c0"
        );
        verify_schnorr(&xonly, &[0; 32], &sig).unwrap();
    }

    #[test]
    fn ecdsa_is_deterministic_low_s_and_recovers() {
        let k = key("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721");
        for i in 0..32u8 {
            let digest = sha256(&[i]);
            let a = k.sign_ecdsa(&digest).unwrap();
            assert_eq!(a, k.sign_ecdsa(&digest).unwrap());
            let mut half = N;
            // n/2 rounded down, big-endian: shift right by one bit.
            let mut carry = 0u8;
            for b in half.iter_mut() {
                let next = *b & 1;
                *b = (*b >> 1) | (carry << 7);
                carry = next;
            }
            assert!(a.signature[32..] <= half[..], "high S");
            verify_ecdsa(&k.public_key(), &digest, &a.signature).unwrap();
            assert_eq!(
                recover_ecdsa(&digest, &a.signature, a.recovery_id).unwrap(),
                k.public_key()
            );
        }
    }

    #[test]
    fn taproot_signature_verifies_under_the_output_key() {
        let k = key("6b973d88838f27366ed61c9ad6367663045cb456e28335c109e30717ae0c6baa");
        for root in [None, Some([7u8; 32])] {
            let (sig, out) = k.sign_taproot(&[9; 32], root.as_ref(), &[1; 32]).unwrap();
            assert_eq!(
                out,
                taproot_output_key(&k.public_key(), root.as_ref()).unwrap()
            );
            verify_schnorr(&out, &[9; 32], &sig).unwrap();
        }
    }
}
