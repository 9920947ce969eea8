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
