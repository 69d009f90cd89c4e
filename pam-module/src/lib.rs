//! `pam_clinauth`: the PAM module that asks the ClinAuth workstation agent.
//!
//! A thin module: every decision is the agent's (and, behind it, the
//! server's policy); the module relays the agent's prompts through the PAM
//! conversation and turns the agent's answer into a PAM return code. It
//! **fails closed**: every error path returns a failure code, never
//! `PAM_SUCCESS` or `PAM_IGNORE` (see `docs/PAM.md`).
//!
//! - [`ffi`]: the PAM entry points and the few libpam declarations, the only
//!   unsafe code; every entry point catches panics.
//! - [`ops`]: the [`ops::PamOps`] trait, what the logic needs from libpam.
//! - [`logic`]: authenticate, account, session and setcred in plain Rust,
//!   tested with a scripted PAM handle and a scripted agent.
//! - [`options`]: the module arguments (`socket=`, `timeout=`, `purpose=`,
//!   `debug`); anything else refuses.
//! - [`codes`]: the PAM return codes and flags.
//! - [`messages`]: what the module itself tells the user, in English and
//!   Japanese.
#![deny(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod codes;
#[allow(unsafe_code)]
pub mod ffi;
pub mod logic;
pub mod messages;
pub mod ops;
pub mod options;

#[cfg(test)]
mod tests;
