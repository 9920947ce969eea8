//! Wrapped data keys come from callers: only the exact blob opens, under
//! its own encryption context; a sealed key set's header never panics.
#![no_main]

use std::sync::OnceLock;

use kms_crypto::envelope::{data_key_header, unwrap_data_key, wrap_data_key};
use kms_crypto::keyset::{sealed_header, KeySet};
use kms_crypto::SecretKey;
use kms_protocol::Id;
use libfuzzer_sys::fuzz_target;

const CONTEXT: &[u8] = b"\x00\x01\x00\x01k\x00\x01v";

fn fixture() -> &'static (KeySet, Vec<u8>, Vec<u8>) {
    static F: OnceLock<(KeySet, Vec<u8>, Vec<u8>)> = OnceLock::new();
    F.get_or_init(|| {
        let keys = KeySet::generate().unwrap();
        let (_, wrapped) =
            wrap_data_key(&keys, &Id::from_bytes([7; 16]), CONTEXT, &SecretKey::from_array([3; 32]))
                .unwrap();
        let sealed = keys.seal("local", &SecretKey::from_array([5; 32]), b"wrapped").unwrap();
        (keys, wrapped, sealed)
    })
}

fuzz_target!(|data: &[u8]| {
    let (keys, wrapped, sealed) = fixture();
    let _ = data_key_header(data);
    assert_eq!(unwrap_data_key(keys, data, CONTEXT).is_ok(), data == wrapped.as_slice());
    let mut mutated = wrapped.clone();
    for (i, x) in data.iter().enumerate() {
        let n = mutated.len();
        mutated[i % n] ^= x;
    }
    assert_eq!(unwrap_data_key(keys, &mutated, CONTEXT).is_ok(), mutated == *wrapped);
    // Any context but its own is refused.
    if data != CONTEXT {
        assert!(unwrap_data_key(keys, wrapped, data).is_err());
    }
    let _ = sealed_header(data);
    let opened = KeySet::open_wrapped(data, &SecretKey::from_array([5; 32]));
    assert_eq!(opened.is_ok(), data == sealed.as_slice());
});
