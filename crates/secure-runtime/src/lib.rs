#![doc = include_str!("../README.md")]
#![deny(unsafe_code)]

pub mod audit;
pub mod error;
pub mod files;
pub mod hardening;
pub mod keystore;
pub mod root;
pub mod runtime;

pub use error::EnvError;
pub use runtime::{Clock, SecureRuntime, TrustedEnv};
