//! Audit exports a verifier reads: any bytes parse or fail cleanly, and a
//! chain of parsed records is judged without panicking.
#![no_main]

use std::sync::OnceLock;

use kms_crypto::sign::SigningKey;
use libfuzzer_sys::fuzz_target;

fn identity() -> &'static SigningKey {
    static K: OnceLock<SigningKey> = OnceLock::new();
    K.get_or_init(|| SigningKey::generate().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let (records, bad) = kms_cli::read_records(data);
    let verdict = kms_cli::verify(&records, bad, identity().public_key());
    // Nothing here was signed by this key: a non-empty chain never verifies.
    if !records.is_empty() {
        assert!(matches!(verdict, kms_cli::Verdict::Bad(_)));
    }
});
