//! Canonical base64url without padding (docs/protocol.md, "Encodings"; RFC 4648 §5).
//!
//! The alphabet is `A–Z a–z 0–9 - _`, no `=`, no whitespace, and the unused
//! trailing bits must be zero, so every byte string has exactly one encoding.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Encodes bytes as canonical base64url without padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    ENGINE.encode(bytes)
}

/// Decodes canonical base64url; anything else (padding, whitespace, the
/// standard alphabet, non-zero trailing bits, an impossible length) fails.
pub fn decode(text: &str) -> Result<Vec<u8>, InvalidBase64> {
    ENGINE.decode(text).map_err(|_| InvalidBase64)
}

/// Decodes canonical base64url into `out`, which must have exactly the decoded length.
pub fn decode_into(text: &str, out: &mut [u8]) -> Result<(), InvalidBase64> {
    if base64::decoded_len_estimate(text.len()) < out.len() {
        return Err(InvalidBase64);
    }
    let mut buf = vec![0u8; base64::decoded_len_estimate(text.len())];
    let n = ENGINE
        .decode_slice(text, &mut buf)
        .map_err(|_| InvalidBase64)?;
    if n != out.len() {
        return Err(InvalidBase64);
    }
    out.copy_from_slice(&buf[..n]);
    Ok(())
}

/// A string that is not canonical base64url.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not canonical base64url without padding")]
pub struct InvalidBase64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        for len in 0..70u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(decode(&encode(&bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn rejects_non_canonical_forms() {
        assert_eq!(encode([0xfb, 0xff]), "-_8");
        for bad in [
            "-_8=",  // padding
            "+/8",   // standard alphabet
            "-_9",   // non-zero trailing bits
            "-_ 8",  // whitespace
            "-_8\n", // newline
            "A",     // impossible length
            "AA==",  // padding
        ] {
            assert!(decode(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn decode_into_requires_exact_length() {
        let mut out = [0u8; 2];
        decode_into("-_8", &mut out).unwrap();
        assert_eq!(out, [0xfb, 0xff]);
        let mut short = [0u8; 1];
        assert!(decode_into("-_8", &mut short).is_err());
        let mut long = [0u8; 3];
        assert!(decode_into("-_8", &mut long).is_err());
    }
}
