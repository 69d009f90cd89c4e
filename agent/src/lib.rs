//! `clinauth-agent`: the workstation daemon.
//!
//! It turns devices (smartcard, badge, FIDO2, biometric reader) into evidence
//! for the server, serves the PAM module and clinical applications on a local
//! socket (`clinauth-proto`), keeps working offline without failing open, and
//! locks the session when the card leaves (R-SESS-2).
//!
//! The daemon lands with the agent issue; its smartcard driver lands with the
//! hardware-tests issue. Until then this crate only fixes its place and lints
//! in the workspace and exports nothing.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
