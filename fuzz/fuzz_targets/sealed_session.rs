//! Sealed import-session state from the store: only the exact blob opens.
#![no_main]

use std::sync::OnceLock;

use kms_crypto::envelope::{open_session, seal_session};
use kms_crypto::hpke::HpkeSecretKey;
use kms_crypto::keyset::KeySet;
use kms_protocol::Id;
use libfuzzer_sys::fuzz_target;

const SESSION: Id = Id::from_bytes([9; 16]);

fn fixture() -> &'static (KeySet, Vec<u8>) {
    static F: OnceLock<(KeySet, Vec<u8>)> = OnceLock::new();
    F.get_or_init(|| {
        let keys = KeySet::generate().unwrap();
        let sealed = seal_session(&keys, &SESSION, 1000, &HpkeSecretKey::generate().unwrap()).unwrap();
        (keys, sealed)
    })
}

fuzz_target!(|data: &[u8]| {
    let (keys, sealed) = fixture();
    assert_eq!(open_session(keys, &SESSION, 1000, data).is_ok(), data == sealed.as_slice());
    let mut mutated = sealed.clone();
    for (i, x) in data.iter().enumerate() {
        let n = mutated.len();
        mutated[i % n] ^= x;
    }
    assert_eq!(open_session(keys, &SESSION, 1000, &mutated).is_ok(), mutated == *sealed);
});
