//! Derivation paths of HD wallets (docs/protocol.md §8).
//!
//! A path is `m` followed by 0 to 16 steps `/i` (normal) or `/i'`
//! (hardened), `i` written with the digits 0–9 only, in [0, 2³¹−1],
//! without leading zeros. Nothing else parses: no `h` or `H`, no `+`, no
//! spaces, no other apostrophe, no trailing slash. The grammar has one
//! spelling per path, so [`DerivationPath`]'s `Display` gives back exactly
//! the text it was parsed from.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One step of a path: an index in [0, 2³¹−1] and whether it is hardened.
/// Held as BIP-32's `ser32(i)` value: hardened steps have the top bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildNumber(u32);

impl ChildNumber {
    /// The bit BIP-32 sets on hardened indices.
    pub const HARDENED_BIT: u32 = 1 << 31;

    /// A normal step `i`; `None` above 2³¹−1.
    pub const fn normal(index: u32) -> Option<Self> {
        if index < Self::HARDENED_BIT {
            Some(Self(index))
        } else {
            None
        }
    }

    /// A hardened step `i'`; `None` above 2³¹−1.
    pub const fn hardened(index: u32) -> Option<Self> {
        if index < Self::HARDENED_BIT {
            Some(Self(index | Self::HARDENED_BIT))
        } else {
            None
        }
    }

    /// From BIP-32's `ser32` value (hardened when the top bit is set).
    pub const fn from_ser32(value: u32) -> Self {
        Self(value)
    }

    pub const fn is_hardened(self) -> bool {
        self.0 & Self::HARDENED_BIT != 0
    }

    /// The index without the hardened bit.
    pub const fn index(self) -> u32 {
        self.0 & !Self::HARDENED_BIT
    }

    /// BIP-32's `ser32(i)`, big-endian.
    pub const fn ser32(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    pub const fn to_u32(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ChildNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.index())?;
        if self.is_hardened() {
            f.write_str("'")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChildNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChildNumber({self})")
    }
}

/// A path from a wallet's own node `m`: at most [`DerivationPath::MAX_DEPTH`]
/// steps, each valid. Exists only in the form the grammar allows.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DerivationPath {
    steps: [ChildNumber; DerivationPath::MAX_DEPTH],
    len: u8,
}

/// A string that is not a path in docs/protocol.md §8's grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a derivation path: {0}")]
pub struct InvalidPath(pub &'static str);

impl DerivationPath {
    /// The most steps a path may have.
    pub const MAX_DEPTH: usize = 16;
    /// The longest text a path can have: `m` and 16 × `/2147483647'`.
    pub const MAX_TEXT_LEN: usize = 1 + Self::MAX_DEPTH * 12;

    /// `m`: the wallet's own node.
    pub const fn master() -> Self {
        Self {
            steps: [ChildNumber(0); Self::MAX_DEPTH],
            len: 0,
        }
    }

    /// The path of these steps; `None` past [`Self::MAX_DEPTH`].
    pub fn from_steps(steps: &[ChildNumber]) -> Option<Self> {
        if steps.len() > Self::MAX_DEPTH {
            return None;
        }
        let mut p = Self::master();
        p.steps[..steps.len()].copy_from_slice(steps);
        p.len = u8::try_from(steps.len()).ok()?;
        Some(p)
    }

    pub fn parse(text: &str) -> Result<Self, InvalidPath> {
        let rest = text
            .strip_prefix('m')
            .ok_or(InvalidPath("a path starts with m"))?;
        let mut path = Self::master();
        if rest.is_empty() {
            return Ok(path);
        }
        let rest = rest
            .strip_prefix('/')
            .ok_or(InvalidPath("steps are separated by /"))?;
        for step in rest.split('/') {
            if usize::from(path.len) == Self::MAX_DEPTH {
                return Err(InvalidPath("a path has at most 16 steps"));
            }
            let (digits, hardened) = match step.strip_suffix('\'') {
                Some(d) => (d, true),
                None => (step, false),
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(InvalidPath(
                    "a step is an index of the digits 0-9, hardened with a trailing '",
                ));
            }
            if digits.len() > 1 && digits.starts_with('0') {
                return Err(InvalidPath("an index has no leading zeros"));
            }
            let index = if digits.len() > 10 {
                None
            } else {
                digits.parse::<u32>().ok()
            };
            let child = index
                .and_then(|i| {
                    if hardened {
                        ChildNumber::hardened(i)
                    } else {
                        ChildNumber::normal(i)
                    }
                })
                .ok_or(InvalidPath("an index is at most 2147483647"))?;
            path.steps[usize::from(path.len)] = child;
            path.len += 1;
        }
        Ok(path)
    }

    pub fn steps(&self) -> &[ChildNumber] {
        &self.steps[..usize::from(self.len)]
    }

    pub fn depth(&self) -> usize {
        usize::from(self.len)
    }

    /// The path one step shorter; `None` for `m`.
    pub fn parent(&self) -> Option<Self> {
        let n = self.steps().len().checked_sub(1)?;
        Self::from_steps(&self.steps()[..n])
    }

    /// This path with one more step; `None` at the depth limit.
    pub fn child(&self, step: ChildNumber) -> Option<Self> {
        let mut steps = self.steps().to_vec();
        steps.push(step);
        Self::from_steps(&steps)
    }

    /// Whether every step is hardened (ed25519 allows no other).
    pub fn all_hardened(&self) -> bool {
        self.steps().iter().all(|s| s.is_hardened())
    }
}

impl fmt::Display for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m")?;
        for s in self.steps() {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DerivationPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DerivationPath({self})")
    }
}

impl std::str::FromStr for DerivationPath {
    type Err = InvalidPath;
    fn from_str(s: &str) -> Result<Self, InvalidPath> {
        Self::parse(s)
    }
}

impl Serialize for DerivationPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DerivationPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_grammar_and_prints_it_back() {
        for text in [
            "m",
            "m/0",
            "m/0'",
            "m/44'/60'/0'/0/0",
            "m/2147483647'/2147483647",
            "m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16",
        ] {
            let p = DerivationPath::parse(text).unwrap();
            assert_eq!(p.to_string(), text);
        }
        let p = DerivationPath::parse("m/44'/0").unwrap();
        assert_eq!(p.depth(), 2);
        assert_eq!(p.steps()[0].to_u32(), 0x8000_002c);
        assert_eq!(p.steps()[0].ser32(), [0x80, 0, 0, 0x2c]);
        assert!(!p.steps()[1].is_hardened());
        assert!(!p.all_hardened());
        assert_eq!(p.parent().unwrap().to_string(), "m/44'");
        assert_eq!(DerivationPath::master().parent(), None);
        let long = format!("m{}", "/2147483647'".repeat(16));
        assert_eq!(long.len(), DerivationPath::MAX_TEXT_LEN);
        assert!(DerivationPath::parse(&long).is_ok());
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "M",
            "m/",
            "/0",
            "0",
            "m//0",
            "m/0/",
            "m/00",
            "m/01'",
            "m/0h",
            "m/0H",
            "m/0''",
            "m/'",
            "m/+1",
            "m/-1",
            "m/ 1",
            "m/1 ",
            " m/1",
            "m/1\u{2019}",
            "m/2147483648",
            "m/2147483648'",
            "m/4294967296",
            "m/99999999999999999999",
            "m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17",
            "m/0x1",
            "m/１",
            "n/0",
            "mm/0",
        ] {
            assert!(DerivationPath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serde_uses_the_text() {
        let p: DerivationPath = serde_json::from_str("\"m/1'/2\"").unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"m/1'/2\"");
        assert!(serde_json::from_str::<DerivationPath>("\"m/1h\"").is_err());
        assert!(serde_json::from_str::<DerivationPath>("1").is_err());
    }
}
