//! `pam_clinauth`: the PAM module that asks the ClinAuth agent.
//!
//! The module lands with the PAM issue: FFI in one file, logic behind a trait,
//! fail closed on every error path. Until then the library exports no PAM
//! entry point, so a PAM stack that names it fails to load it (fail closed)
//! rather than being let through by an empty module.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
