//! P-256 public keys off the wire: the shape check, the curve check, and
//! sealing to whatever passes both.
#![no_main]

use kms_crypto::{hpke, sign};
use kms_protocol::P256PublicKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = P256PublicKey::from_bytes(data) {
        if sign::check_point(&key).is_ok() {
            hpke::seal(&key, b"kms/fuzz/v1", b"x").expect("a key on the curve accepts a seal");
        } else {
            assert!(hpke::seal(&key, b"kms/fuzz/v1", b"x").is_err());
        }
    }
});
