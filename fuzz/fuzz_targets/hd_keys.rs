//! HD key material from arbitrary bytes: a 78-byte BIP-32 node parses or is
//! refused (never a panic), and whatever is accepted derives along an
//! arbitrary short path on every curve it has, with public keys that match
//! the signing key the secure environment would use.
#![no_main]

use kms_crypto::material::KeyMaterial;
use kms_crypto::SecretBytes;
use kms_protocol::{ChildNumber, Curve, DerivationPath, KeyType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // The first byte picks the key type, the next four the path steps.
    let key_type = if selector & 1 == 0 { KeyType::Bip32 } else { KeyType::Bip39 };
    let (steps, material) = rest.split_at(rest.len().min(4));
    let Ok(m) = KeyMaterial::new(key_type, SecretBytes::new(material.to_vec()), None) else {
        return;
    };
    let path = DerivationPath::from_steps(
        &steps.iter().map(|&b| ChildNumber::from_ser32(u32::from(b) << 24 | u32::from(b))).collect::<Vec<_>>(),
    )
    .unwrap();
    for curve in Curve::ALL {
        match m.derive(curve, &path) {
            Ok(node) => {
                let key = m.signing_key(curve, Some(&path)).unwrap();
                assert_eq!(key.public_key(), node.public_key());
            }
            Err(_) => assert!(m.signing_key(curve, Some(&path)).is_err()),
        }
    }
});
