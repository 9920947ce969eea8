//! Byte values of docs/protocol.md, each parsed from canonical base64url into a
//! type that can only hold a value the protocol allows.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::b64;

/// The P-256 field prime p, big-endian (SEC 2 §2.4.2).
const P256_P: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
];

/// A P-256 public key in SEC1 uncompressed form (`0x04 ‖ X ‖ Y`, 65 bytes)
/// with X, Y < p. Whether the point is on the curve is checked by the secure
/// environment (docs/protocol.md, "Encodings"); this type only guarantees the shape.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct P256PublicKey([u8; 65]);

impl P256PublicKey {
    pub const LEN: usize = 65;

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShapeError> {
        let arr: [u8; 65] = bytes
            .try_into()
            .map_err(|_| ShapeError("a P-256 public key must be 65 bytes (SEC1 uncompressed)"))?;
        if arr[0] != 0x04 {
            return Err(ShapeError(
                "a P-256 public key must start with 0x04 (uncompressed)",
            ));
        }
        if arr[1..33] >= P256_P[..] || arr[33..65] >= P256_P[..] {
            return Err(ShapeError("a P-256 public key coordinate is not below p"));
        }
        Ok(Self(arr))
    }

    pub fn as_bytes(&self) -> &[u8; 65] {
        &self.0
    }
}

/// A 64-byte signature: ECDSA `r ‖ s` (IEEE P1363; the identity key's, an
/// owner's, or a wallet's), BIP-340 Schnorr or Ed25519. The range of its
/// parts is checked by whoever verifies it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    pub const LEN: usize = 64;

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShapeError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| ShapeError("a signature must be 64 bytes (r ‖ s)"))
    }

    pub const fn from_array(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

/// A client nonce: 16 to 64 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Nonce(Vec<u8>);

impl Nonce {
    pub const MIN_LEN: usize = 16;
    pub const MAX_LEN: usize = 64;

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShapeError> {
        if (Self::MIN_LEN..=Self::MAX_LEN).contains(&bytes.len()) {
            Ok(Self(bytes.to_vec()))
        } else {
            Err(ShapeError("a nonce must be 16 to 64 bytes"))
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// An HPKE ciphertext on the wire: `enc ‖ ct`, the 65-byte encapsulated key
/// then the AEAD output with its 16-byte tag, so at least 81 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct HpkeCiphertext(Vec<u8>);

impl HpkeCiphertext {
    pub const ENC_LEN: usize = 65;
    pub const MIN_LEN: usize = Self::ENC_LEN + 16;

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ShapeError> {
        if bytes.len() >= Self::MIN_LEN {
            Ok(Self(bytes))
        } else {
            Err(ShapeError(
                "an HPKE ciphertext must be at least 81 bytes (enc ‖ ct)",
            ))
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The encapsulated key, `enc`.
    pub fn enc(&self) -> &[u8] {
        &self.0[..Self::ENC_LEN]
    }

    /// The AEAD output, `ct`.
    pub fn ct(&self) -> &[u8] {
        &self.0[Self::ENC_LEN..]
    }
}

/// Exactly 32 bytes: a chain code, a taproot merkle root.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bytes32([u8; 32]);

impl Bytes32 {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShapeError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| ShapeError("must be exactly 32 bytes"))
    }

    pub const fn from_array(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Any byte string (base64url on the wire): opaque sealed state, envelopes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A value of the right encoding but the wrong shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub &'static str);

macro_rules! b64_serde {
    ($t:ty, $what:literal, |$v:ident| $parse:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&b64::encode(self.as_bytes()))
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::Error;
                let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
                let $v = b64::decode(&text)
                    .map_err(|_| D::Error::custom(concat!($what, " is not canonical base64url")))?;
                $parse.map_err(|e: ShapeError| D::Error::custom(e.0))
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!(stringify!($t), "({})"),
                    b64::encode(self.as_bytes())
                )
            }
        }
    };
}

b64_serde!(
    P256PublicKey,
    "a public key",
    |v| P256PublicKey::from_bytes(&v)
);
b64_serde!(Signature, "a signature", |v| Signature::from_bytes(&v));
b64_serde!(Nonce, "a nonce", |v| Nonce::from_bytes(&v));
b64_serde!(Bytes32, "a 32-byte value", |v| Bytes32::from_bytes(&v));
b64_serde!(HpkeCiphertext, "a ciphertext", |v| {
    HpkeCiphertext::from_bytes(v)
});
b64_serde!(Bytes, "a byte string", |v| Ok::<_, ShapeError>(Bytes(v)));

#[cfg(test)]
mod tests {
    use super::*;

    fn key(prefix: u8, x: [u8; 32], y: [u8; 32]) -> Vec<u8> {
        let mut k = vec![prefix];
        k.extend_from_slice(&x);
        k.extend_from_slice(&y);
        k
    }

    #[test]
    fn p256_shape() {
        assert!(P256PublicKey::from_bytes(&key(4, [1; 32], [2; 32])).is_ok());
        assert!(P256PublicKey::from_bytes(&key(2, [1; 32], [2; 32])).is_err());
        assert!(P256PublicKey::from_bytes(&key(4, P256_P, [2; 32])).is_err());
        assert!(P256PublicKey::from_bytes(&key(4, [1; 32], P256_P)).is_err());
        let mut below = P256_P;
        below[31] -= 1;
        assert!(P256PublicKey::from_bytes(&key(4, below, below)).is_ok());
        assert!(P256PublicKey::from_bytes(&[4; 64]).is_err());
        assert!(P256PublicKey::from_bytes(&[4; 33]).is_err());
    }

    #[test]
    fn lengths() {
        assert!(Signature::from_bytes(&[0; 64]).is_ok());
        assert!(Signature::from_bytes(&[0; 63]).is_err());
        assert!(Nonce::from_bytes(&[0; 15]).is_err());
        assert!(Nonce::from_bytes(&[0; 16]).is_ok());
        assert!(Nonce::from_bytes(&[0; 64]).is_ok());
        assert!(Nonce::from_bytes(&[0; 65]).is_err());
        assert!(HpkeCiphertext::from_bytes(vec![0; 80]).is_err());
        assert!(HpkeCiphertext::from_bytes(vec![0; 81]).is_ok());
        assert!(Bytes32::from_bytes(&[0; 32]).is_ok());
        assert!(Bytes32::from_bytes(&[0; 31]).is_err());
        assert!(Bytes32::from_bytes(&[]).is_err());
    }

    #[test]
    fn serde_rejects_bad_base64() {
        assert!(serde_json::from_str::<Signature>("\"AAAA=\"").is_err());
        let sig = Signature::from_array([7; 64]);
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
    }
}
