//! Wallet key material: the plaintext JSON of PROTOCOL.md, "Key material
//! plaintext", checked and held as a secret.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use kms_protocol::key_material::KeyMaterialJson;
use kms_protocol::{b64, KeyType, P256PublicKey};

use crate::sign::{scalar_in_range, P256_N};
use crate::{sign, SecretBytes, SecretKey};

/// Order n of the secp256k1 group (SEC 2 §2.4.1), big-endian.
const SECP256K1_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// A plaintext that opened but is not valid key material. Carries no detail
/// about which rule failed beyond a fixed reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid key material: {0}")]
pub struct InvalidKeyMaterial(pub &'static str);

/// Checked key material: a private key of its type, and optionally the owner's key.
#[derive(Debug)]
pub struct KeyMaterial {
    key_type: KeyType,
    private_key: SecretBytes,
    owner_public_key: Option<P256PublicKey>,
}

/// The SEC1 compressed secp256k1 public key of the scalar `sk`, through
/// k256's precomputed multiples of the generator (constant time, about a
/// third of the generic multiplication's cost).
fn secp256k1_public_key(sk: &[u8]) -> Result<[u8; 33], InvalidKeyMaterial> {
    use k256::elliptic_curve::ops::MulByGenerator;
    use k256::elliptic_curve::sec1::ToEncodedPoint;
    let sk =
        k256::SecretKey::from_slice(sk).map_err(|_| InvalidKeyMaterial("scalar out of range"))?;
    let point = k256::ProjectivePoint::mul_by_generator(sk.to_nonzero_scalar().as_ref());
    point
        .to_affine()
        .to_encoded_point(true)
        .as_bytes()
        .try_into()
        .map_err(|_| InvalidKeyMaterial("scalar out of range"))
}

impl KeyMaterial {
    /// Checks `private_key` against the rules of `key_type` and the owner
    /// key (if any) for being a point on P-256.
    pub fn new(
        key_type: KeyType,
        private_key: SecretBytes,
        owner_public_key: Option<P256PublicKey>,
    ) -> Result<Self, InvalidKeyMaterial> {
        let (min, max) = key_type.private_key_len();
        if !(min..=max).contains(&private_key.len()) {
            return Err(InvalidKeyMaterial("private_key has the wrong length"));
        }
        let as32 = || SecretKey::from_slice(private_key.expose());
        match key_type {
            KeyType::Secp256k1 => {
                let k = as32().ok_or(InvalidKeyMaterial("length"))?;
                if !scalar_in_range(k.expose(), &SECP256K1_N) {
                    return Err(InvalidKeyMaterial("scalar out of range"));
                }
            }
            KeyType::P256 => {
                let k = as32().ok_or(InvalidKeyMaterial("length"))?;
                if !scalar_in_range(k.expose(), &P256_N) {
                    return Err(InvalidKeyMaterial("scalar out of range"));
                }
            }
            KeyType::Ed25519 | KeyType::Raw => {}
        }
        if let Some(owner) = &owner_public_key {
            sign::check_point(owner)
                .map_err(|_| InvalidKeyMaterial("owner_public_key is not on P-256"))?;
        }
        Ok(Self {
            key_type,
            private_key,
            owner_public_key,
        })
    }

    /// Parses and checks the plaintext JSON.
    pub fn from_plaintext(plaintext: &[u8]) -> Result<Self, InvalidKeyMaterial> {
        let json = KeyMaterialJson::parse(plaintext)
            .ok_or(InvalidKeyMaterial("not the key material object"))?;
        if json.v != 1 {
            return Err(InvalidKeyMaterial("unsupported v"));
        }
        let key_type =
            KeyType::parse(&json.key_type).ok_or(InvalidKeyMaterial("unknown key_type"))?;
        let private_key = SecretBytes::new(
            b64::decode(&json.private_key)
                .map_err(|_| InvalidKeyMaterial("private_key is not base64url"))?,
        );
        let owner = match &json.owner_public_key {
            None => None,
            Some(text) => {
                let bytes = b64::decode(text)
                    .map_err(|_| InvalidKeyMaterial("owner_public_key is not base64url"))?;
                Some(
                    P256PublicKey::from_bytes(&bytes)
                        .map_err(|_| InvalidKeyMaterial("owner_public_key is not a P-256 key"))?,
                )
            }
        };
        Self::new(key_type, private_key, owner)
    }

    /// The plaintext an export carries: `{"v":1,"key_type":"…","private_key":"…"}`
    /// (the owner key is never part of it, PROTOCOL.md "Key material plaintext").
    pub fn to_export_plaintext(&self) -> SecretBytes {
        self.plaintext(false)
    }

    /// The plaintext a client seals on import, with `owner_public_key` when
    /// the wallet is owner-bound (PROTOCOL.md §6).
    pub fn to_import_plaintext(&self) -> SecretBytes {
        self.plaintext(true)
    }

    fn plaintext(&self, with_owner: bool) -> SecretBytes {
        let b64_len = (self.private_key.len() * 4).div_ceil(3);
        let mut out = SecretBytes::with_capacity(48 + b64_len + 112);
        out.extend_from_slice(br#"{"v":1,"key_type":""#);
        out.extend_from_slice(self.key_type.as_str().as_bytes());
        out.extend_from_slice(br#"","private_key":""#);
        let encoded = SecretBytes::new(b64::encode(self.private_key.expose()).into_bytes());
        out.extend_from_slice(encoded.expose());
        out.extend_from_slice(b"\"");
        if let (true, Some(owner)) = (with_owner, &self.owner_public_key) {
            out.extend_from_slice(br#","owner_public_key":""#);
            out.extend_from_slice(b64::encode(owner.as_bytes()).as_bytes());
            out.extend_from_slice(b"\"");
        }
        out.extend_from_slice(b"}");
        out
    }

    /// The same material bound to an owner key (PROTOCOL.md §6).
    pub fn with_owner(self, owner: P256PublicKey) -> Result<Self, InvalidKeyMaterial> {
        Self::new(self.key_type, self.private_key, Some(owner))
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn private_key(&self) -> &SecretBytes {
        &self.private_key
    }

    pub fn owner_public_key(&self) -> Option<&P256PublicKey> {
        self.owner_public_key.as_ref()
    }

    /// The public key the service reports: SEC1 compressed for secp256k1 and
    /// P-256, the 32-byte RFC 8032 key for ed25519, none for raw.
    pub fn public_key(&self) -> Result<Option<Vec<u8>>, InvalidKeyMaterial> {
        let pk = self.private_key.expose();
        Ok(match self.key_type {
            KeyType::Secp256k1 => Some(secp256k1_public_key(pk)?.to_vec()),
            KeyType::P256 => {
                let scalar = SecretKey::from_slice(pk).ok_or(InvalidKeyMaterial("length"))?;
                let full = crate::hpke::p256_public_key(&scalar)
                    .map_err(|_| InvalidKeyMaterial("scalar out of range"))?;
                Some(compress(full.as_bytes()).to_vec())
            }
            KeyType::Ed25519 => {
                let pair = Ed25519KeyPair::from_seed_unchecked(pk)
                    .map_err(|_| InvalidKeyMaterial("ed25519 seed"))?;
                Some(pair.public_key().as_ref().to_vec())
            }
            KeyType::Raw => None,
        })
    }
}

/// SEC1 compressed form of an uncompressed point: `0x02|0x03 (Y parity) ‖ X`.
fn compress(uncompressed: &[u8; 65]) -> [u8; 33] {
    let mut out = [0u8; 33];
    out[0] = 0x02 | (uncompressed[64] & 1);
    out[1..].copy_from_slice(&uncompressed[1..33]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(key_type: &str, private_key: &[u8]) -> Vec<u8> {
        format!(
            r#"{{"v":1,"key_type":"{key_type}","private_key":"{}"}}"#,
            b64::encode(private_key)
        )
        .into_bytes()
    }

    #[test]
    fn export_plaintext_is_the_canonical_object() {
        let m = KeyMaterial::from_plaintext(&pt("raw", b"abc")).unwrap();
        assert_eq!(
            m.to_export_plaintext().expose(),
            br#"{"v":1,"key_type":"raw","private_key":"YWJj"}"#
        );
    }

    /// The table-driven secp256k1 public key agrees with k256's generic
    /// multiplication, over keys whose scalars touch every window.
    #[test]
    fn secp256k1_public_key_matches_the_generic_multiplication() {
        use k256::elliptic_curve::sec1::ToEncodedPoint;
        let mut n = SECP256K1_N;
        n[31] -= 1;
        let mut keys = vec![n, [0x11; 32], [0x7f; 32]];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..32 {
            let mut k = [0u8; 32];
            for b in k.iter_mut() {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                *b = (state >> 56) as u8;
            }
            keys.push(k);
        }
        for k in keys {
            let generic = k256::SecretKey::from_slice(&k).unwrap().public_key();
            assert_eq!(
                secp256k1_public_key(&k).unwrap()[..],
                *generic.to_encoded_point(true).as_bytes(),
                "key {}",
                crate::hex(&k)
            );
        }
    }

    #[test]
    fn known_public_keys() {
        // secp256k1 and P-256 with private key 1: the public key is the generator G.
        let mut one = [0u8; 32];
        one[31] = 1;
        let k = KeyMaterial::from_plaintext(&pt("secp256k1", &one)).unwrap();
        assert_eq!(
            crate::hex(&k.public_key().unwrap().unwrap()),
            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        );
        let k = KeyMaterial::from_plaintext(&pt("p256", &one)).unwrap();
        assert_eq!(
            crate::hex(&k.public_key().unwrap().unwrap()),
            "036b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
        );
        // RFC 8032 §7.1 test 1.
        let seed = [
            0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec,
            0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03,
            0x1c, 0xae, 0x7f, 0x60,
        ];
        let k = KeyMaterial::from_plaintext(&pt("ed25519", &seed)).unwrap();
        assert_eq!(
            crate::hex(&k.public_key().unwrap().unwrap()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            KeyMaterial::from_plaintext(&pt("raw", b"x"))
                .unwrap()
                .public_key()
                .unwrap(),
            None
        );
    }

    #[test]
    fn rejects_bad_material() {
        let mut n = SECP256K1_N;
        assert!(KeyMaterial::from_plaintext(&pt("secp256k1", &n)).is_err());
        n[31] -= 1;
        assert!(KeyMaterial::from_plaintext(&pt("secp256k1", &n)).is_ok());
        assert!(KeyMaterial::from_plaintext(&pt("p256", &P256_N)).is_err());
        assert!(KeyMaterial::from_plaintext(&pt("p256", &[0; 32])).is_err());
        assert!(KeyMaterial::from_plaintext(&pt("secp256k1", &[1; 31])).is_err());
        assert!(KeyMaterial::from_plaintext(&pt("ed25519", &[1; 33])).is_err());
        assert!(KeyMaterial::from_plaintext(&pt("raw", &[])).is_err());
        assert!(KeyMaterial::from_plaintext(&pt("raw", &[1; 1025])).is_err());
        assert!(KeyMaterial::from_plaintext(&pt("raw", &[1; 1024])).is_ok());
        assert!(KeyMaterial::from_plaintext(&pt("rsa", &[1; 32])).is_err());
        assert!(
            KeyMaterial::from_plaintext(br#"{"v":2,"key_type":"raw","private_key":"AQ"}"#).is_err()
        );
        assert!(
            KeyMaterial::from_plaintext(br#"{"v":1,"key_type":"raw","private_key":"AQ=="}"#)
                .is_err()
        );
        let off_curve = b64::encode([4u8; 65]);
        let with_owner = format!(
            r#"{{"v":1,"key_type":"raw","private_key":"AQ","owner_public_key":"{off_curve}"}}"#
        );
        assert!(KeyMaterial::from_plaintext(with_owner.as_bytes()).is_err());
    }
}
