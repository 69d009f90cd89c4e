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

pub mod audit;
pub mod clock;
pub mod ctl;
pub mod directory;
pub mod store;
