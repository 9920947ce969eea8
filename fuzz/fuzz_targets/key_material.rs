//! Decrypted import plaintexts: parse or refuse, and anything accepted
//! re-encodes to a plaintext that parses to the same key.
#![no_main]

use kms_crypto::material::KeyMaterial;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = KeyMaterial::from_plaintext(data) {
        let again = KeyMaterial::from_plaintext(m.to_import_plaintext().expose()).unwrap();
        assert!(again.private_key().ct_eq(m.private_key()));
        assert_eq!(again.key_type(), m.key_type());
        let _ = m.public_key();
    }
});
