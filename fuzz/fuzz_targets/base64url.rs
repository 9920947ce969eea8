//! Canonical base64url: anything that decodes re-encodes to the same text
//! (one encoding per byte string), and every byte string round-trips.
#![no_main]

use kms_protocol::b64;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_eq!(b64::decode(&b64::encode(data)).unwrap(), data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bytes) = b64::decode(text) {
            assert_eq!(b64::encode(&bytes), text);
        }
    }
});
