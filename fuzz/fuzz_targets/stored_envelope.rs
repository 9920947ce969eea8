//! Wallet envelopes from the (untrusted) store: mutated real blobs and
//! random ones never open and never panic; the real one still does.
#![no_main]

use std::sync::OnceLock;

use kms_crypto::envelope::{open_wallet, seal_wallet, SealedWallet};
use kms_crypto::keyset::KeySet;
use kms_crypto::material::KeyMaterial;
use kms_crypto::SecretBytes;
use kms_protocol::{Id, KeyType};
use libfuzzer_sys::fuzz_target;

const WALLET: Id = Id::from_bytes([7; 16]);

fn fixture() -> &'static (KeySet, SealedWallet) {
    static F: OnceLock<(KeySet, SealedWallet)> = OnceLock::new();
    F.get_or_init(|| {
        let keys = KeySet::generate().unwrap();
        let m = KeyMaterial::new(KeyType::Secp256k1, SecretBytes::new(vec![1; 32]), None).unwrap();
        let sealed = seal_wallet(&keys, &WALLET, &m).unwrap();
        (keys, sealed)
    })
}

fuzz_target!(|data: &[u8]| {
    let (keys, sealed) = fixture();
    let split = data.first().map(|b| usize::from(*b)).unwrap_or(0);
    let rest = data.get(1..).unwrap_or_default();
    let (a, b) = rest.split_at(split.min(rest.len()));
    // Random blobs in either column.
    assert!(open_wallet(keys, &WALLET, KeyType::Secp256k1, a, &sealed.ciphertext).is_err() || a == sealed.wrapped_key);
    assert!(open_wallet(keys, &WALLET, KeyType::Secp256k1, &sealed.wrapped_key, b).is_err() || b == sealed.ciphertext);
    // The real blobs with bytes xored in.
    let mut w = sealed.wrapped_key.clone();
    let mut c = sealed.ciphertext.clone();
    for (i, x) in a.iter().enumerate() {
        let n = w.len();
        w[i % n] ^= x;
    }
    for (i, x) in b.iter().enumerate() {
        let n = c.len();
        c[i % n] ^= x;
    }
    let opened = open_wallet(keys, &WALLET, KeyType::Secp256k1, &w, &c);
    assert_eq!(opened.is_ok(), w == sealed.wrapped_key && c == sealed.ciphertext);
});
