//! `clinauth-hardware-tests`: virtual devices at the hardware boundary and the
//! suite that runs against them (or against real devices with `CLINAUTH_HW=1`).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
