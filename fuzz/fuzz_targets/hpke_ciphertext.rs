//! HPKE ciphertexts (`enc ‖ ct`) from clients: random bytes never open.
#![no_main]

use std::sync::OnceLock;

use kms_crypto::hpke::HpkeSecretKey;
use kms_protocol::HpkeCiphertext;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static HpkeSecretKey {
    static KEY: OnceLock<HpkeSecretKey> = OnceLock::new();
    KEY.get_or_init(|| HpkeSecretKey::generate().unwrap())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ct) = HpkeCiphertext::from_bytes(data.to_vec()) {
        assert!(key().open(b"kms/import/v1", &ct).is_err());
    }
});
