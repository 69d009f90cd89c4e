//! `clinauth-agent`: the workstation daemon.
//!
//! It turns devices (smartcard, badge, FIDO2, biometric reader) into evidence
//! for the server, serves the PAM module and clinical applications on a local
//! socket (`clinauth-proto`), keeps working offline without failing open, and
//! locks the session when the card leaves (R-SESS-2).
//!
//! - [`card`]: the smartcard driver over PC/SC (pcscd): PIV cards (PIN,
//!   certificates, signatures over the server's challenge), contactless
//!   badges (UID), and a reader watcher built on `SCardGetStatusChange`.
//!
//! The daemon itself lands with the agent issue.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod card;
