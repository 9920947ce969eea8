#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod aead;
pub mod audit;
pub mod base58;
pub mod ed25519;
pub mod envelope;
pub mod error;
pub mod hd;
pub mod hpke;
pub mod kdf;
pub mod keycard;
pub mod keyset;
pub mod labels;
pub mod material;
pub mod messages;
pub mod p256;
pub mod provider;
pub mod rng;
pub mod secp256k1;
pub mod secret;
pub mod sign;

pub use error::{CryptoError, OpenError};
pub use secret::{SecretBytes, SecretKey};

/// SHA-256 of `data` (FIPS 180-4).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

/// The bytes of hex text (either case, whole bytes only); `None` otherwise.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trip() {
        assert_eq!(super::unhex("00aBff").unwrap(), vec![0, 0xab, 0xff]);
        assert_eq!(super::hex(&[0, 0xab, 0xff]), "00abff");
        for bad in ["0", "zz", "+f", "0x00", "é0"] {
            assert_eq!(super::unhex(bad), None, "{bad}");
        }
    }
}
