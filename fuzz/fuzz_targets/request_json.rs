//! Every public request body, path id and query string kms-api parses: never
//! a panic, and whatever parses re-serializes to something that parses the same.
#![no_main]

use kms_api::extract::{parse_json, AuditQuery, ListQuery};
use kms_protocol::api::{
    CompleteImport, DeriveKey, ExportWallet, GenerateWallet, SignRequest, StartImportSession,
};
use kms_protocol::data_key::{DecryptDataKey, GenerateDataKey};
use kms_protocol::{DerivationPath, Id};
use libfuzzer_sys::fuzz_target;

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(v) = parse_json::<T>(data) {
        let again: T = parse_json(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(v, again);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<StartImportSession>(data);
    round_trip::<CompleteImport>(data);
    round_trip::<ExportWallet>(data);
    round_trip::<GenerateDataKey>(data);
    round_trip::<DecryptDataKey>(data);
    round_trip::<GenerateWallet>(data);
    round_trip::<DeriveKey>(data);
    round_trip::<SignRequest>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ListQuery::parse(Some(text));
        let _ = AuditQuery::parse(Some(text));
        if let Ok(p) = DerivationPath::parse(text) {
            assert_eq!(p.to_string(), text);
        }
        if let Ok(id) = Id::parse_path(text) {
            assert_eq!(id.to_string(), text.to_ascii_lowercase());
        }
    }
});
