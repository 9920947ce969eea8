#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod admin;
pub mod api;
pub mod audit;
pub mod b64;
pub mod data_key;
pub mod error;
pub mod hd;
pub mod id;
pub mod internal;
pub mod key_material;
#[cfg(feature = "openapi")]
mod openapi;
pub mod provider;
pub mod types;

pub use error::{ErrorBody, ErrorCode};
pub use hd::{ChildNumber, DerivationPath};
pub use id::Id;
pub use key_material::{Curve, KeyType};
pub use types::{Bytes, Bytes32, HpkeCiphertext, Nonce, P256PublicKey, Signature};

/// Largest request body either server reads (docs/protocol.md, "Request bodies").
pub const MAX_BODY_BYTES: usize = 64 * 1024;
