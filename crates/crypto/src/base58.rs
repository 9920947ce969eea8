//! Base58Check (Bitcoin's encoding of `xprv`/`xpub` strings and legacy
//! addresses): `payload ‖ SHA-256(SHA-256(payload))[..4]` in Base58. The
//! decoder may be handed an `xprv`, so every intermediate buffer is wiped.

use zeroize::Zeroizing;

use crate::{sha256, SecretBytes};

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Why a string is not Base58Check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Base58Error {
    #[error("not Base58")]
    Alphabet,
    #[error("too short for Base58Check")]
    Short,
    #[error("Base58Check checksum does not match")]
    Checksum,
}

/// Encodes `payload` with its 4-byte checksum.
pub fn encode(payload: &[u8]) -> String {
    let mut data = Zeroizing::new(payload.to_vec());
    data.extend_from_slice(&sha256(&sha256(payload))[..4]);
    let zeros = data.iter().take_while(|&&b| b == 0).count();
    let mut digits: Zeroizing<Vec<u8>> =
        Zeroizing::new(Vec::with_capacity(data.len() * 138 / 100 + 1));
    for &byte in data.iter() {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n('1', zeros));
    out.extend(
        digits
            .iter()
            .rev()
            .map(|&d| char::from(ALPHABET[usize::from(d)])),
    );
    out
}

/// Decodes Base58Check, checking the checksum; the payload without it.
pub fn decode(text: &str) -> Result<SecretBytes, Base58Error> {
    let zeros = text.bytes().take_while(|&b| b == b'1').count();
    let mut bytes: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(text.len()));
    for c in text.bytes() {
        let mut carry = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or(Base58Error::Alphabet)? as u32;
        for b in bytes.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut out = SecretBytes::with_capacity(zeros + bytes.len());
    out.extend_from_slice(&vec![0u8; zeros]);
    let reversed: Zeroizing<Vec<u8>> = Zeroizing::new(bytes.iter().rev().copied().collect());
    out.extend_from_slice(&reversed);
    let all = out.expose();
    if all.len() < 4 {
        return Err(Base58Error::Short);
    }
    let (payload, check) = all.split_at(all.len() - 4);
    if sha256(&sha256(payload))[..4] != *check {
        return Err(Base58Error::Checksum);
    }
    Ok(SecretBytes::new(payload.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        for payload in [&b""[..], b"\x00\x00abc", &[0xff; 78]] {
            let s = encode(payload);
            assert_eq!(decode(&s).unwrap().expose(), payload);
        }
        let mut s = encode(b"hello");
        s.pop();
        s.push('z');
        assert_eq!(decode(&s).unwrap_err(), Base58Error::Checksum);
        assert_eq!(decode("0OIl").unwrap_err(), Base58Error::Alphabet);
        assert_eq!(decode("1").unwrap_err(), Base58Error::Short);
    }

    /// BIP-32 test vector 1's master xpub decodes to its 78 bytes.
    #[test]
    fn bip32_master_xpub() {
        let x = "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8";
        let raw = decode(x).unwrap();
        assert_eq!(raw.expose().len(), 78);
        assert_eq!(raw.expose()[..4], [0x04, 0x88, 0xb2, 0x1e]);
        assert_eq!(encode(raw.expose()), x);
    }
}
