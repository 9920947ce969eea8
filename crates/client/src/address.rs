//! Addresses and extended keys made from public keys the service returned
//! (docs/protocol.md §8): Ethereum (EIP-55), Bitcoin P2WPKH (BIP-173
//! bech32) and P2TR (BIP-350 bech32m, BIP-86 key path), and Base58Check
//! for `xpub`/`xprv` strings. All of it is public-key arithmetic on the
//! client; no secret is involved except where an `xprv` is parsed for import.

use kms_crypto::{secp256k1, sha256};
use ripemd::{Digest, Ripemd160};
use sha3::Keccak256;

/// Bitcoin networks, for the human-readable part and version bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Mainnet,
    Testnet,
}

impl Network {
    fn hrp(self) -> &'static str {
        match self {
            Self::Mainnet => "bc",
            Self::Testnet => "tb",
        }
    }
}

/// Why an address or key string could not be made or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddressError(pub &'static str);

/// `RIPEMD-160(SHA-256(x))`.
pub fn hash160(data: &[u8]) -> [u8; 20] {
    let mut out = [0u8; 20];
    out.copy_from_slice(&Ripemd160::digest(sha256(data)));
    out
}

/// Keccak-256 (Ethereum's, the pre-standard padding).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Keccak256::digest(data));
    out
}

/// The EIP-55 mixed-case checksum form of a 20-byte address, `0x`-prefixed.
pub fn eip55(address: &[u8; 20]) -> String {
    let lower = kms_crypto::hex(address);
    let hash = keccak256(lower.as_bytes());
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, c) in lower.chars().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
        if c.is_ascii_alphabetic() && nibble >= 8 {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Ethereum address of a secp256k1 key (SEC1 compressed or
/// uncompressed): the last 20 bytes of Keccak-256 of the 64-byte point.
pub fn ethereum_address(public_key: &[u8]) -> Result<String, AddressError> {
    let full = match public_key.len() {
        33 => {
            let k: [u8; 33] = public_key.try_into().map_err(|_| AddressError("length"))?;
            secp256k1::decompress(&k).map_err(|_| AddressError("not a secp256k1 point"))?
        }
        65 => {
            secp256k1::check_public_key(&compress65(public_key)?)
                .map_err(|_| AddressError("not a secp256k1 point"))?;
            public_key.try_into().map_err(|_| AddressError("length"))?
        }
        _ => return Err(AddressError("a secp256k1 public key is 33 or 65 bytes")),
    };
    let hash = keccak256(&full[1..]);
    let mut addr = [0u8; 20];
    addr.copy_from_slice(&hash[12..]);
    Ok(eip55(&addr))
}

fn compress65(p: &[u8]) -> Result<[u8; 33], AddressError> {
    if p.len() != 65 || p[0] != 4 {
        return Err(AddressError("not an uncompressed point"));
    }
    let mut out = [0u8; 33];
    out[0] = 2 | (p[64] & 1);
    out[1..].copy_from_slice(&p[1..33]);
    Ok(out)
}

/// The P2WPKH (native SegWit v0) address of a compressed secp256k1 key.
pub fn p2wpkh_address(public_key: &[u8], network: Network) -> Result<String, AddressError> {
    secp256k1::check_public_key(public_key)
        .map_err(|_| AddressError("P2WPKH needs a compressed secp256k1 key"))?;
    segwit_address(network.hrp(), 0, &hash160(public_key))
}

/// The P2TR (Taproot, SegWit v1) address of a compressed secp256k1 key
/// used as the internal key with no script tree (BIP-86).
pub fn p2tr_address(public_key: &[u8], network: Network) -> Result<String, AddressError> {
    let k: [u8; 33] = public_key
        .try_into()
        .map_err(|_| AddressError("P2TR needs a compressed secp256k1 key"))?;
    let output = secp256k1::taproot_output_key(&k, None)
        .map_err(|_| AddressError("P2TR needs a compressed secp256k1 key"))?;
    segwit_address(network.hrp(), 1, &output)
}

const BECH32_CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const BECH32_CONST: u32 = 1;
const BECH32M_CONST: u32 = 0x2bc8_30a3;

fn polymod(values: impl Iterator<Item = u8>) -> u32 {
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn hrp_expand(hrp: &str) -> Vec<u8> {
    let mut v: Vec<u8> = hrp.bytes().map(|b| b >> 5).collect();
    v.push(0);
    v.extend(hrp.bytes().map(|b| b & 31));
    v
}

/// Regroups bits (8 → 5) with padding, as BIP-173 does for the program.
fn to_5_bits(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (5 - bits)) & 31) as u8);
    }
    out
}

/// A SegWit address: bech32 for version 0, bech32m for 1 and above.
pub fn segwit_address(hrp: &str, version: u8, program: &[u8]) -> Result<String, AddressError> {
    if version > 16 || !(2..=40).contains(&program.len()) {
        return Err(AddressError("not a SegWit program"));
    }
    let mut data = vec![version];
    data.extend(to_5_bits(program));
    let constant = if version == 0 {
        BECH32_CONST
    } else {
        BECH32M_CONST
    };
    let mut values = hrp_expand(hrp);
    values.extend_from_slice(&data);
    values.extend_from_slice(&[0; 6]);
    let pm = polymod(values.into_iter()) ^ constant;
    let mut out = String::with_capacity(hrp.len() + 1 + data.len() + 6);
    out.push_str(hrp);
    out.push('1');
    for d in data {
        out.push(char::from(BECH32_CHARSET[usize::from(d)]));
    }
    for i in 0..6 {
        out.push(char::from(
            BECH32_CHARSET[((pm >> (5 * (5 - i))) & 31) as usize],
        ));
    }
    Ok(out)
}

/// Base58Check: `payload ‖ SHA-256(SHA-256(payload))[..4]` in Base58.
pub fn base58check_encode(payload: &[u8]) -> String {
    kms_crypto::base58::encode(payload)
}

/// Decodes Base58Check, checking the 4-byte checksum.
pub fn base58check_decode(text: &str) -> Result<Vec<u8>, AddressError> {
    use kms_crypto::base58::Base58Error;
    kms_crypto::base58::decode(text)
        .map(|b| b.expose().to_vec())
        .map_err(|e| {
            AddressError(match e {
                Base58Error::Alphabet => "not Base58",
                Base58Error::Short => "too short for Base58Check",
                Base58Error::Checksum => "Base58Check checksum does not match",
            })
        })
}

/// The `xpub`/`tpub` string of a secp256k1 node from its parts.
pub fn xpub(
    network: Network,
    depth: u8,
    parent_fingerprint: [u8; 4],
    child_number: u32,
    chain_code: &[u8; 32],
    public_key: &[u8; 33],
) -> String {
    let version = match network {
        Network::Mainnet => kms_crypto::hd::VERSION_XPUB,
        Network::Testnet => kms_crypto::hd::VERSION_TPUB,
    };
    let mut p = Vec::with_capacity(78);
    p.extend_from_slice(&version);
    p.push(depth);
    p.extend_from_slice(&parent_fingerprint);
    p.extend_from_slice(&child_number.to_be_bytes());
    p.extend_from_slice(chain_code);
    p.extend_from_slice(public_key);
    base58check_encode(&p)
}

/// A key's BIP-32 fingerprint: the first 4 bytes of its HASH160.
pub fn fingerprint(public_key: &[u8]) -> [u8; 4] {
    let h = hash160(public_key);
    [h[0], h[1], h[2], h[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base58_round_trip() {
        for payload in [&b""[..], b"\x00\x00abc", &[0xff; 78]] {
            let s = base58check_encode(payload);
            assert_eq!(base58check_decode(&s).unwrap(), payload);
        }
        let mut s = base58check_encode(b"hello");
        s.pop();
        s.push('z');
        assert!(base58check_decode(&s).is_err());
        assert!(base58check_decode("0OIl").is_err());
    }

    /// BIP-173's and BIP-350's example programs.
    #[test]
    fn segwit_examples() {
        let p2wpkh = [
            0x75, 0x1e, 0x76, 0xe8, 0x19, 0x91, 0x96, 0xd4, 0x54, 0x94, 0x1c, 0x45, 0xd1, 0xb3,
            0xa3, 0x23, 0xf1, 0x43, 0x3b, 0xd6,
        ];
        assert_eq!(
            segwit_address("bc", 0, &p2wpkh).unwrap(),
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
        );
        assert_eq!(
            p2wpkh_address(
                &[
                    0x02, 0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95,
                    0xce, 0x87, 0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59,
                    0xf2, 0x81, 0x5b, 0x16, 0xf8, 0x17, 0x98
                ],
                Network::Mainnet
            )
            .unwrap(),
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
        );
    }
}
