//! UUIDs as docs/protocol.md uses them for `session_id` and `wallet_id`.
//!
//! Only the hyphenated 8-4-4-4-12 form parses. JSON carries it lowercase
//! ([`Id::parse_json`]); URL paths and query parameters accept any case
//! ([`Id::parse_path`]). Braced, `urn:uuid:` and hyphen-less forms, which
//! general-purpose UUID parsers accept, are refused. Inside signed messages an
//! id is its 16 bytes in RFC 9562 order ([`Id::as_bytes`]).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A session or wallet id: 16 bytes, shown as a lowercase hyphenated UUID.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id([u8; 16]);

/// A string that is not an id in docs/protocol.md's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a hyphenated UUID")]
pub struct InvalidId;

const HYPHENS: [usize; 4] = [8, 13, 18, 23];

impl Id {
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Makes a random (version 4) UUID from 16 random bytes (RFC 9562 §5.4).
    pub fn new_v4(mut random: [u8; 16]) -> Self {
        random[6] = (random[6] & 0x0f) | 0x40;
        random[8] = (random[8] & 0x3f) | 0x80;
        Self(random)
    }

    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the form allowed in URL paths and query parameters: hyphenated, any case.
    pub fn parse_path(text: &str) -> Result<Self, InvalidId> {
        Self::parse(text, true)
    }

    /// Parses the form JSON carries: hyphenated, lowercase.
    pub fn parse_json(text: &str) -> Result<Self, InvalidId> {
        Self::parse(text, false)
    }

    fn parse(text: &str, any_case: bool) -> Result<Self, InvalidId> {
        let raw = text.as_bytes();
        if raw.len() != 36 {
            return Err(InvalidId);
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &c) in raw.iter().enumerate() {
            if HYPHENS.contains(&i) {
                if c != b'-' {
                    return Err(InvalidId);
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' if any_case => c - b'A' + 10,
                _ => return Err(InvalidId),
            };
            out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
            nibbles += 1;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = [0u8; 36];
        let mut j = 0;
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                s[j] = b'-';
                j += 1;
            }
            s[j] = HEX[usize::from(b >> 4)];
            s[j + 1] = HEX[usize::from(b & 0x0f)];
            j += 2;
        }
        // Only ASCII hex digits and hyphens were written.
        f.write_str(std::str::from_utf8(&s).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Id::parse_json(&s)
            .map_err(|_| serde::de::Error::custom("an id must be a lowercase hyphenated UUID"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "0191e9b2-5c3d-7a8b-9c0d-1e2f3a4b5c6d";

    #[test]
    fn parses_and_prints_the_hyphenated_form() {
        let id = Id::parse_json(TEXT).unwrap();
        assert_eq!(id.as_bytes()[0], 0x01);
        assert_eq!(id.as_bytes()[15], 0x6d);
        assert_eq!(id.to_string(), TEXT);
        assert_eq!(Id::parse_path(&TEXT.to_uppercase()).unwrap(), id);
    }

    #[test]
    fn refuses_the_forms_uuid_parsers_accept() {
        for bad in [
            "{0191e9b2-5c3d-7a8b-9c0d-1e2f3a4b5c6d}",
            "urn:uuid:0191e9b2-5c3d-7a8b-9c0d-1e2f3a4b5c6d",
            "0191e9b25c3d7a8b9c0d1e2f3a4b5c6d",
            "0191e9b2-5c3d-7a8b-9c0d-1e2f3a4b5c6",
            "0191e9b2-5c3d-7a8b-9c0d-1e2f3a4b5c6dd",
            "0191e9b2+5c3d-7a8b-9c0d-1e2f3a4b5c6d",
            "0191e9b2-5c3d-7a8b-9c0d-1e2f3a4b5c6g",
            " 0191e9b2-5c3d-7a8b-9c0d-1e2f3a4b5c6",
            "",
        ] {
            assert!(Id::parse_path(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Id::parse_json(&TEXT.to_uppercase()).is_err());
    }

    #[test]
    fn v4_sets_version_and_variant() {
        let id = Id::new_v4([0xff; 16]);
        assert_eq!(id.as_bytes()[6] >> 4, 4);
        assert_eq!(id.as_bytes()[8] >> 6, 0b10);
    }
}
