//! BitGo keycards (docs/bitgo.md, "Keycards"): the box BitGo's SDK puts a
//! key's xprv in, encrypted with the wallet passphrase. Opened only inside
//! the secure environment, from an import session's sealed plaintext.
//!
//! Two formats, told apart by the box's `v`:
//! - **v1** (SJCL, every keycard BitGo has printed): `{"iv","v":1,"iter",
//!   "ks","ts","mode":"ccm","adata","cipher":"aes","salt","ct"}`, base64
//!   members. key = PBKDF2-HMAC-SHA256(passphrase, salt, iter, ks/8);
//!   AES-`ks`-CCM with a `ts`-bit tag, the nonce the first 15 − L bytes of
//!   `iv`, where L (2 to 4) is the fewest bytes that can hold the
//!   plaintext's length (SJCL's rule).
//! - **v2** (Argon2id, BitGo's newer SDKs): `{"v":2,"m","t","p","salt",
//!   "iv","ct", "hkdfSalt"?, "adata"?}`. key = Argon2id(passphrase, salt,
//!   m KiB, t passes, p lanes, 32 bytes), then, with `hkdfSalt`,
//!   HKDF-SHA256(key, hkdfSalt, info "bitgo-v2-session"); AES-256-GCM
//!   with the 12-byte `iv` and `adata` as AAD.
//!
//! Costs are bounded before any work: v1 at most 1 000 000 PBKDF2
//! iterations, v2 at BitGo's own caps (256 MiB, 16 passes, 16 lanes).

use aws_lc_rs::{hkdf, pbkdf2};
use ccm::aead::{AeadInOut, KeyInit};
use ccm::consts::{U11, U12, U13, U16, U8};
use ccm::Ccm;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::kdf::{self, Argon2Params};
use crate::{aead, SecretBytes, SecretKey};

/// Why a keycard box did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeycardError {
    /// Not a box of a format this service reads, or parameters out of bounds.
    #[error("keycard box: {0}")]
    Format(&'static str),
    /// The authentication failed: a wrong passphrase, or a changed box.
    #[error("the keycard box does not open: wrong passphrase, or the box was changed")]
    Open,
}

const MAX_V1_ITERATIONS: u32 = 1_000_000;
const V2_MAX_MEMORY_KIB: u32 = 262_144;
const V2_MAX_PASSES: u32 = 16;
const V2_MAX_LANES: u32 = 16;

#[derive(Deserialize)]
struct Version {
    v: Option<u64>,
}

#[derive(Deserialize)]
struct V1 {
    iv: String,
    iter: u32,
    ks: u32,
    ts: u32,
    mode: String,
    #[serde(default)]
    adata: String,
    cipher: String,
    salt: String,
    ct: String,
}

#[derive(Deserialize)]
struct V2 {
    m: u32,
    t: u32,
    p: u32,
    salt: String,
    iv: String,
    ct: String,
    #[serde(default, rename = "hkdfSalt")]
    hkdf_salt: Option<String>,
    #[serde(default)]
    adata: Option<String>,
}

fn b64(text: &str) -> Result<Vec<u8>, KeycardError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| KeycardError::Format("a member is not base64"))
}

/// Opens `box_json` with `passphrase`: the plaintext (a BitGo xprv string).
pub fn open(box_json: &str, passphrase: &[u8]) -> Result<SecretBytes, KeycardError> {
    let version: Version =
        serde_json::from_str(box_json).map_err(|_| KeycardError::Format("not a JSON object"))?;
    match version.v {
        Some(1) | None => open_v1(box_json, passphrase),
        Some(2) => open_v2(box_json, passphrase),
        Some(_) => Err(KeycardError::Format("unknown box version")),
    }
}

fn open_v1(box_json: &str, passphrase: &[u8]) -> Result<SecretBytes, KeycardError> {
    let b: V1 = serde_json::from_str(box_json).map_err(|_| {
        KeycardError::Format("a v1 (SJCL) box needs iv, iter, ks, ts, mode, cipher, salt and ct")
    })?;
    if b.cipher != "aes" || b.mode != "ccm" {
        return Err(KeycardError::Format("only aes-ccm SJCL boxes are read"));
    }
    if !(1..=MAX_V1_ITERATIONS).contains(&b.iter) {
        return Err(KeycardError::Format("iter out of bounds"));
    }
    let key_len = match b.ks {
        128 => 16,
        256 => 32,
        _ => return Err(KeycardError::Format("ks must be 128 or 256")),
    };
    let tag_len = match b.ts {
        64 => 8,
        128 => 16,
        _ => return Err(KeycardError::Format("ts must be 64 or 128")),
    };
    let iv = b64(&b.iv)?;
    let salt = b64(&b.salt)?;
    let adata = b64(&b.adata)?;
    let mut ct = Zeroizing::new(b64(&b.ct)?);
    if iv.len() < 11 || ct.len() < tag_len {
        return Err(KeycardError::Format("iv or ct too short"));
    }
    let plain_len = ct.len() - tag_len;
    // SJCL: L is the fewest bytes (2 to 4) that hold the plaintext length.
    let mut l = 2usize;
    while l < 4 && (plain_len >> (8 * l)) != 0 {
        l += 1;
    }
    let nonce = &iv[..15 - l];
    let mut key = Zeroizing::new(vec![0u8; key_len]);
    let iterations =
        std::num::NonZeroU32::new(b.iter).ok_or(KeycardError::Format("iter out of bounds"))?;
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        passphrase,
        &mut key,
    );
    let (body, tag) = ct.split_at_mut(plain_len);
    let tag = tag.to_vec();
    macro_rules! ccm {
        ($aes:ty, $tag:ty, $nonce:ty) => {{
            let cipher = Ccm::<$aes, $tag, $nonce>::new_from_slice(&key)
                .map_err(|_| KeycardError::Format("key size"))?;
            let nonce = nonce
                .try_into()
                .map_err(|_| KeycardError::Format("nonce"))?;
            let tag = tag
                .as_slice()
                .try_into()
                .map_err(|_| KeycardError::Format("tag"))?;
            cipher
                .decrypt_inout_detached(nonce, &adata, body.into(), tag)
                .map_err(|_| KeycardError::Open)
        }};
    }
    use aes::{Aes128, Aes256};
    let opened = match (key_len, tag_len, nonce.len()) {
        (32, 8, 13) => ccm!(Aes256, U8, U13),
        (32, 8, 12) => ccm!(Aes256, U8, U12),
        (32, 8, 11) => ccm!(Aes256, U8, U11),
        (32, 16, 13) => ccm!(Aes256, U16, U13),
        (32, 16, 12) => ccm!(Aes256, U16, U12),
        (32, 16, 11) => ccm!(Aes256, U16, U11),
        (16, 8, 13) => ccm!(Aes128, U8, U13),
        (16, 8, 12) => ccm!(Aes128, U8, U12),
        (16, 8, 11) => ccm!(Aes128, U8, U11),
        (16, 16, 13) => ccm!(Aes128, U16, U13),
        (16, 16, 12) => ccm!(Aes128, U16, U12),
        (16, 16, 11) => ccm!(Aes128, U16, U11),
        _ => Err(KeycardError::Format("unsupported CCM sizes")),
    };
    opened?;
    Ok(SecretBytes::new(body.to_vec()))
}

fn open_v2(box_json: &str, passphrase: &[u8]) -> Result<SecretBytes, KeycardError> {
    let b: V2 = serde_json::from_str(box_json)
        .map_err(|_| KeycardError::Format("a v2 box needs m, t, p, salt, iv and ct"))?;
    if !(1..=V2_MAX_MEMORY_KIB).contains(&b.m)
        || !(1..=V2_MAX_PASSES).contains(&b.t)
        || !(1..=V2_MAX_LANES).contains(&b.p)
    {
        return Err(KeycardError::Format("Argon2id parameters out of bounds"));
    }
    let salt = b64(&b.salt)?;
    let iv = b64(&b.iv)?;
    let ct = b64(&b.ct)?;
    if iv.len() != aead::NONCE_BYTES || ct.len() < aead::TAG_BYTES {
        return Err(KeycardError::Format(
            "iv must be 12 bytes and ct hold a tag",
        ));
    }
    let params = Argon2Params {
        memory_kib: b.m,
        iterations: b.t,
        parallelism: b.p,
    };
    let mut key = kdf::argon2id(passphrase, &salt, params)
        .map_err(|_| KeycardError::Format("Argon2id parameters out of bounds"))?;
    if let Some(hkdf_salt) = &b.hkdf_salt {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &b64(hkdf_salt)?).extract(key.expose());
        let info = [&b"bitgo-v2-session"[..]];
        let okm = prk
            .expand(&info, hkdf::HKDF_SHA256)
            .map_err(|_| KeycardError::Format("hkdf"))?;
        let mut session = SecretKey::from_array([0; 32]);
        okm.fill(session.expose_mut())
            .map_err(|_| KeycardError::Format("hkdf"))?;
        key = session;
    }
    let mut sealed = iv;
    sealed.extend_from_slice(&ct);
    let aad = b.adata.unwrap_or_default();
    aead::decrypt(&key, aad.as_bytes(), &sealed).map_err(|_| KeycardError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `@bitgo/sjcl` as BitGo's SDK calls it (`sjcl.encrypt(
    /// passphrase, xprv, {iter: 10000, ks: 256, salt, iv})`), for the
    /// passphrase "correct horse battery staple" and BIP-32 test vector 1's
    /// master xprv.
    const V1_BOX: &str = include_str!("../tests/data/keycard-v1.json");
    const XPRV: &str = "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi";

    #[test]
    fn a_v1_box_opens_with_its_passphrase_only() {
        let opened = open(V1_BOX, b"correct horse battery staple").unwrap();
        assert_eq!(opened.expose(), XPRV.as_bytes());
        assert_eq!(open(V1_BOX, b"wrong").unwrap_err(), KeycardError::Open);
        // A changed ciphertext byte.
        let mut changed: serde_json::Value = serde_json::from_str(V1_BOX).unwrap();
        let ct = changed["ct"].as_str().unwrap().to_owned();
        let (first, rest) = ct.split_at(1);
        let flipped = format!("{}{rest}", if first == "A" { "B" } else { "A" });
        changed["ct"] = flipped.into();
        assert_eq!(
            open(&changed.to_string(), b"correct horse battery staple").unwrap_err(),
            KeycardError::Open
        );
        for (member, value) in [
            ("mode", serde_json::json!("gcm")),
            ("iter", serde_json::json!(0)),
            ("iter", serde_json::json!(2_000_000)),
            ("ks", serde_json::json!(192)),
            ("v", serde_json::json!(9)),
            ("ct", serde_json::json!("!!")),
        ] {
            let mut b: serde_json::Value = serde_json::from_str(V1_BOX).unwrap();
            b[member] = value;
            assert!(
                matches!(open(&b.to_string(), b"x"), Err(KeycardError::Format(_))),
                "{member}"
            );
        }
        assert!(matches!(open("[]", b"x"), Err(KeycardError::Format(_))));
        assert!(matches!(
            open("not json", b"x"),
            Err(KeycardError::Format(_))
        ));
    }

    /// A v2 box as BitGo's `encryptV2` makes it, built here from the
    /// primitives it names (Argon2id, then AES-256-GCM), with and without
    /// the session HKDF step.
    #[test]
    fn v2_boxes() {
        use base64::Engine;
        let e = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let params = Argon2Params {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let salt = [7u8; 16];
        let key = kdf::argon2id(b"pass", &salt, params).unwrap();
        let mut sealed = Vec::new();
        aead::encrypt(&key, b"ctx", XPRV.as_bytes(), &mut sealed).unwrap();
        let (iv, ct) = sealed.split_at(12);
        let v2 = serde_json::json!({"v": 2, "m": 64, "t": 1, "p": 1, "salt": e(&salt),
            "iv": e(iv), "ct": e(ct), "adata": "ctx"})
        .to_string();
        assert_eq!(open(&v2, b"pass").unwrap().expose(), XPRV.as_bytes());
        assert_eq!(open(&v2, b"other").unwrap_err(), KeycardError::Open);
        let big = v2.replace("\"m\":64", "\"m\":300000");
        assert!(matches!(open(&big, b"pass"), Err(KeycardError::Format(_))));
    }
}
