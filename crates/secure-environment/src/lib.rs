#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod bitgo;
pub mod config;
pub mod server;
