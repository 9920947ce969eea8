//! Wallet key material: the plaintext JSON of docs/protocol.md, "Key material
//! plaintext", checked and held as a secret.

use kms_protocol::key_material::KeyMaterialJson;
use kms_protocol::{b64, Curve, DerivationPath, KeyType, P256PublicKey};

use crate::hd::{self, DeriveError, ExtendedKey};
use crate::rng::RandomSource;
use crate::{ed25519, p256, secp256k1, sign, CryptoError, SecretBytes, SecretKey};

/// A plaintext that opened but is not valid key material. Carries no detail
/// about which rule failed beyond a fixed reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid key material: {0}")]
pub struct InvalidKeyMaterial(pub &'static str);

/// Why a wallet cannot do what was asked of it (docs/protocol.md §§8–9,
/// 422 `unsupported_operation`), or a backend failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyUseError {
    #[error("{0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl From<DeriveError> for KeyUseError {
    fn from(e: DeriveError) -> Self {
        match e {
            DeriveError::NormalStepOnEd25519 => {
                Self::Unsupported("ed25519 derives hardened steps only")
            }
            DeriveError::WrongCurve => Self::Unsupported("this wallet has no keys on that curve"),
            DeriveError::TooDeep => Self::Unsupported("the path goes below depth 255"),
            DeriveError::Crypto(c) => Self::Crypto(c),
        }
    }
}

/// One signing key of a wallet, on its curve.
#[derive(Debug)]
pub enum WalletKey {
    Secp256k1(secp256k1::PrivateKey),
    P256(p256::PrivateKey),
    Ed25519(ed25519::PrivateKey),
}

impl WalletKey {
    /// The signing key of an HD node.
    pub fn from_node(node: &ExtendedKey) -> Result<Self, CryptoError> {
        Self::new(node.curve(), node.private_key())
    }

    fn new(curve: Curve, key: &SecretKey) -> Result<Self, CryptoError> {
        let copy = || SecretKey::from_array(*key.expose());
        let bad = CryptoError::Backend("wallet key out of range");
        Ok(match curve {
            Curve::Secp256k1 => {
                Self::Secp256k1(secp256k1::PrivateKey::from_scalar(key).ok_or(bad)?)
            }
            Curve::P256 => Self::P256(p256::PrivateKey::from_scalar(copy()).ok_or(bad)?),
            Curve::Ed25519 => Self::Ed25519(ed25519::PrivateKey::from_seed(copy())?),
        })
    }

    pub fn curve(&self) -> Curve {
        match self {
            Self::Secp256k1(_) => Curve::Secp256k1,
            Self::P256(_) => Curve::P256,
            Self::Ed25519(_) => Curve::Ed25519,
        }
    }

    /// The public key as the service reports it (SEC1 compressed, or the
    /// 32-byte ed25519 key).
    pub fn public_key(&self) -> Vec<u8> {
        match self {
            Self::Secp256k1(k) => k.public_key().to_vec(),
            Self::P256(k) => k.public_key_compressed().to_vec(),
            Self::Ed25519(k) => k.public_key().to_vec(),
        }
    }
}

/// The import-only `key_type` of a BitGo keycard box ([`KeyMaterial::from_plaintext`]).
pub const KEYCARD_KEY_TYPE: &str = "bitgo_keycard";

/// Checked key material: a private key of its type, and optionally the owner's key.
#[derive(Debug)]
pub struct KeyMaterial {
    key_type: KeyType,
    private_key: SecretBytes,
    owner_public_key: Option<P256PublicKey>,
}

impl KeyMaterial {
    /// Checks `private_key` against the rules of `key_type` and the owner
    /// key (if any) for being a point on P-256.
    pub fn new(
        key_type: KeyType,
        private_key: SecretBytes,
        owner_public_key: Option<P256PublicKey>,
    ) -> Result<Self, InvalidKeyMaterial> {
        if !key_type.private_key_len_ok(private_key.len()) {
            return Err(InvalidKeyMaterial("private_key has the wrong length"));
        }
        let as32 = || SecretKey::from_slice(private_key.expose());
        match key_type {
            KeyType::Secp256k1 => {
                let k = as32().ok_or(InvalidKeyMaterial("length"))?;
                secp256k1::PrivateKey::from_scalar(&k)
                    .ok_or(InvalidKeyMaterial("scalar out of range"))?;
            }
            KeyType::P256 => {
                let k = as32().ok_or(InvalidKeyMaterial("length"))?;
                if !p256::scalar_in_range(k.expose(), &p256::P256_N) {
                    return Err(InvalidKeyMaterial("scalar out of range"));
                }
            }
            KeyType::Bip32 => {
                ExtendedKey::from_bip32(private_key.expose()).map_err(InvalidKeyMaterial)?;
            }
            KeyType::Ed25519 | KeyType::Raw | KeyType::Bip39 => {}
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
        if json.key_type == KEYCARD_KEY_TYPE {
            return Self::from_keycard(&private_key, owner);
        }
        let key_type =
            KeyType::parse(&json.key_type).ok_or(InvalidKeyMaterial("unknown key_type"))?;
        Self::new(key_type, private_key, owner)
    }

    /// An import-only shape (docs/bitgo.md, "Keycards"): a BitGo keycard box
    /// and its passphrase, `{"box": "<the box's JSON text>", "passphrase":
    /// "…"}` as the private key. The box is opened here and the xprv in it
    /// becomes a `bip32` wallet. Every refusal names the keycard (the
    /// message is shown to the importer: the box is their own).
    fn from_keycard(
        inner: &SecretBytes,
        owner: Option<P256PublicKey>,
    ) -> Result<Self, InvalidKeyMaterial> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Keycard {
            #[serde(rename = "box")]
            sealed: kms_protocol::provider::SecretText,
            passphrase: kms_protocol::provider::SecretText,
        }
        let card: Keycard = serde_json::from_slice(inner.expose()).map_err(|_| {
            InvalidKeyMaterial("bitgo_keycard: private_key must be {\"box\", \"passphrase\"}")
        })?;
        let xprv = crate::keycard::open(card.sealed.expose(), card.passphrase.expose().as_bytes())
            .map_err(|e| {
                InvalidKeyMaterial(match e {
                crate::keycard::KeycardError::Open => {
                    "bitgo_keycard: the box does not open: wrong passphrase, or the box was changed"
                }
                crate::keycard::KeycardError::Format(_) => {
                    "bitgo_keycard: not a BitGo keycard box (v1 SJCL aes-ccm or v2 Argon2id)"
                }
            })
            })?;
        let text = std::str::from_utf8(xprv.expose())
            .map_err(|_| InvalidKeyMaterial("bitgo_keycard: the box does not hold an xprv"))?;
        let raw = crate::base58::decode(text)
            .map_err(|_| InvalidKeyMaterial("bitgo_keycard: the box does not hold an xprv"))?;
        Self::new(KeyType::Bip32, raw, owner)
            .map_err(|_| InvalidKeyMaterial("bitgo_keycard: the box does not hold a valid xprv"))
    }

    /// The import plaintext of a keycard box and its passphrase, sealed by
    /// a client to an import session (the box is opened in the secure
    /// environment only).
    pub fn keycard_import_plaintext(box_json: &str, passphrase: &str) -> SecretBytes {
        // Serialized straight from the borrowed strings: no intermediate
        // JSON value holds a copy of the passphrase.
        #[derive(serde::Serialize)]
        struct Keycard<'a> {
            #[serde(rename = "box")]
            sealed: &'a str,
            passphrase: &'a str,
        }
        let inner = zeroize::Zeroizing::new(
            serde_json::to_string(&Keycard {
                sealed: box_json,
                passphrase,
            })
            .unwrap_or_default(),
        );
        let encoded = zeroize::Zeroizing::new(b64::encode(inner.as_bytes()));
        let mut out = SecretBytes::with_capacity(64 + encoded.len());
        out.extend_from_slice(br#"{"v":1,"key_type":""#);
        out.extend_from_slice(KEYCARD_KEY_TYPE.as_bytes());
        out.extend_from_slice(br#"","private_key":""#);
        out.extend_from_slice(encoded.as_bytes());
        out.extend_from_slice(b"\"}");
        out
    }

    /// The plaintext an export carries: `{"v":1,"key_type":"…","private_key":"…"}`
    /// (the owner key is never part of it, docs/protocol.md "Key material plaintext").
    pub fn to_export_plaintext(&self) -> SecretBytes {
        self.plaintext(false)
    }

    /// The plaintext a client seals on import, with `owner_public_key` when
    /// the wallet is owner-bound (docs/protocol.md §6).
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

    /// The same material bound to an owner key (docs/protocol.md §6).
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

    /// Fresh material of `key_type` from `rng` (docs/protocol.md §7):
    /// 32 bytes of BIP-39 entropy, a BIP-32 master node of 32 random seed
    /// bytes, a scalar in [1, n−1] or an RFC 8032 seed. `raw` is refused.
    pub fn generate_with_rng(
        key_type: KeyType,
        owner_public_key: Option<P256PublicKey>,
        rng: &mut impl RandomSource,
    ) -> Result<Self, CryptoError> {
        let private_key = match key_type {
            KeyType::Raw => return Err(CryptoError::Unsupported("raw keys are imported")),
            KeyType::Bip39 => {
                let mut entropy = SecretKey::from_array([0; 32]);
                rng.fill(entropy.expose_mut())?;
                SecretBytes::new(entropy.expose().to_vec())
            }
            KeyType::Bip32 => hd::generate_bip32(rng)?,
            KeyType::Secp256k1 => {
                let k = secp256k1::PrivateKey::generate_with_rng(rng)?;
                SecretBytes::new(k.scalar().expose().to_vec())
            }
            KeyType::P256 => {
                let k = p256::PrivateKey::generate_with_rng(rng)?;
                SecretBytes::new(k.scalar().expose().to_vec())
            }
            KeyType::Ed25519 => {
                let k = ed25519::PrivateKey::generate_with_rng(rng)?;
                SecretBytes::new(k.seed().expose().to_vec())
            }
        };
        Self::new(key_type, private_key, owner_public_key)
            .map_err(|_| CryptoError::Backend("generated key material failed its own checks"))
    }

    /// The public key the service reports: SEC1 compressed for secp256k1,
    /// P-256 and a `bip32` node, the 32-byte RFC 8032 key for ed25519, none
    /// for `raw` and `bip39`.
    pub fn public_key(&self) -> Result<Option<Vec<u8>>, InvalidKeyMaterial> {
        if self.key_type == KeyType::Bip32 {
            let node =
                ExtendedKey::from_bip32(self.private_key.expose()).map_err(InvalidKeyMaterial)?;
            return Ok(Some(node.public_key().to_vec()));
        }
        let Some(curve) = self.key_type.single_key_curve() else {
            return Ok(None);
        };
        let k =
            SecretKey::from_slice(self.private_key.expose()).ok_or(InvalidKeyMaterial("length"))?;
        WalletKey::new(curve, &k)
            .map(|k| Some(k.public_key()))
            .map_err(|_| InvalidKeyMaterial("scalar out of range"))
    }

    /// The node `m` of an HD wallet on `curve` (docs/protocol.md §8): the
    /// master node of the BIP-39 seed, or the stored BIP-32 node.
    pub fn hd_root(&self, curve: Curve) -> Result<ExtendedKey, KeyUseError> {
        self.check_derivation(curve, &DerivationPath::master())?;
        match self.key_type {
            KeyType::Bip39 => {
                let seed = hd::bip39_seed(self.private_key.expose())?;
                Ok(ExtendedKey::master(curve, seed.expose())?)
            }
            _ => ExtendedKey::from_bip32(self.private_key.expose())
                .map_err(|_| KeyUseError::Crypto(CryptoError::Backend("stored bip32 node"))),
        }
    }

    /// Whether this wallet can derive `path` on `curve`, as §8 asks: HD
    /// wallets only, a curve the wallet has, hardened steps only on ed25519.
    pub fn check_derivation(&self, curve: Curve, path: &DerivationPath) -> Result<(), KeyUseError> {
        if !self.key_type.is_hd() {
            return Err(KeyUseError::Unsupported(
                "a single-key wallet has no derivation tree",
            ));
        }
        if !self.key_type.has_curve(curve) {
            return Err(KeyUseError::Unsupported(
                "this wallet has no keys on that curve",
            ));
        }
        if curve == Curve::Ed25519 && !path.all_hardened() {
            return Err(KeyUseError::Unsupported(
                "ed25519 derives hardened steps only",
            ));
        }
        Ok(())
    }

    /// The node at `path` on `curve`, after [`KeyMaterial::check_derivation`].
    pub fn derive(&self, curve: Curve, path: &DerivationPath) -> Result<ExtendedKey, KeyUseError> {
        self.check_derivation(curve, path)?;
        Ok(self.hd_root(curve)?.derive(path)?)
    }

    /// The key that signs on `curve`: the one key of a single-key wallet
    /// (no `path` allowed) or the node at `path` of an HD wallet (`path`
    /// required), docs/protocol.md §9.
    pub fn signing_key(
        &self,
        curve: Curve,
        path: Option<&DerivationPath>,
    ) -> Result<WalletKey, KeyUseError> {
        match (self.key_type.is_hd(), path) {
            (_, _) if self.key_type == KeyType::Raw => {
                Err(KeyUseError::Unsupported("a raw wallet cannot sign"))
            }
            (true, None) => Err(KeyUseError::Unsupported("an HD wallet signs with a path")),
            (false, Some(_)) => Err(KeyUseError::Unsupported(
                "a single-key wallet signs without a path",
            )),
            (true, Some(path)) => {
                let node = self.derive(curve, path)?;
                Ok(WalletKey::new(curve, node.private_key())?)
            }
            (false, None) => {
                if self.key_type.single_key_curve() != Some(curve) {
                    return Err(KeyUseError::Unsupported(
                        "this wallet's key is on another curve",
                    ));
                }
                let k = SecretKey::from_slice(self.private_key.expose())
                    .ok_or(CryptoError::Backend("stored key length"))?;
                Ok(WalletKey::new(curve, &k)?)
            }
        }
    }
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
    fn a_keycard_imports_as_the_bip32_wallet_in_it() {
        let card = include_str!("../tests/data/keycard-v1.json");
        let pt = KeyMaterial::keycard_import_plaintext(card, "correct horse battery staple");
        let m = KeyMaterial::from_plaintext(pt.expose()).unwrap();
        assert_eq!(m.key_type(), KeyType::Bip32);
        let node = ExtendedKey::from_bip32(m.private_key().expose()).unwrap();
        assert_eq!(node.depth(), 0);
        let wrong = KeyMaterial::keycard_import_plaintext(card, "wrong");
        let e = KeyMaterial::from_plaintext(wrong.expose()).unwrap_err();
        assert!(e.0.contains("wrong passphrase"), "{}", e.0);
        let junk = KeyMaterial::keycard_import_plaintext("{}", "x");
        let e = KeyMaterial::from_plaintext(junk.expose()).unwrap_err();
        assert!(e.0.starts_with("bitgo_keycard:"), "{}", e.0);
        let not_xprv = KeyMaterial::keycard_import_plaintext("{\"v\":3}", "x");
        assert!(KeyMaterial::from_plaintext(not_xprv.expose()).is_err());
    }

    #[test]
    fn export_plaintext_is_the_canonical_object() {
        let m = KeyMaterial::from_plaintext(&pt("raw", b"abc")).unwrap();
        assert_eq!(
            m.to_export_plaintext().expose(),
            br#"{"v":1,"key_type":"raw","private_key":"YWJj"}"#
        );
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
        let mut n = secp256k1::N;
        assert!(KeyMaterial::from_plaintext(&pt("secp256k1", &n)).is_err());
        n[31] -= 1;
        assert!(KeyMaterial::from_plaintext(&pt("secp256k1", &n)).is_ok());
        assert!(KeyMaterial::from_plaintext(&pt("p256", &p256::P256_N)).is_err());
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
