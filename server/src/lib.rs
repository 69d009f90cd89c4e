//! `clinauth-server`: the auth server and the officer CLI (`clinauthctl`).
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod audit;
pub mod auth;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod ctl;
pub mod directory;
pub mod hex;
pub mod keys;
pub mod metrics;
pub mod officer;
pub mod pki;
pub mod policy_store;
pub mod records;
pub mod review;
pub mod run;
pub mod store;
pub mod tls;
