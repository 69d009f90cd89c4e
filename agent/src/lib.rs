//! `clinauth-agent`: the workstation daemon.
//!
//! It turns devices (smartcard, badge, FIDO2, biometric reader) into evidence
//! for the server, serves the PAM module and clinical applications on a local
//! socket (`clinauth-proto`), keeps working offline without failing open, and
//! locks the session when the card leaves (R-SESS-2).
//!
//! - [`daemon`]: the shared state and what each request does;
//! - [`socket`]: the agent socket, peer credentials, connections;
//! - [`conversation`]: prompts to the person, carried by the caller;
//! - [`login`]: an authentication flow and its factors;
//! - [`server_client`]: the workstation API over mutual TLS;
//! - [`readers`]: the cards present and reader events;
//! - [`session`]: session binding, tap-out, idle lock (R-SESS-1/2);
//! - [`offline`]: offline login (R-OFF-1) and the event spool;
//! - [`audit`]: the agent's audit events;
//! - [`card`]: the smartcard driver over PC/SC (pcscd): PIV cards (PIN,
//!   certificates, signatures over the server's challenge), contactless
//!   badges (UID), and a reader watcher built on `SCardGetStatusChange`;
//! - [`pinentry`]: PINs and confirmations asked by the agent itself
//!   through GnuPG's pinentry programs, for clinical applications;
//! - [`hardening`]: memory locked, no core dumps;
//! - [`config`]: the TOML configuration.
#![deny(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod apps;
pub mod audit;
pub mod card;
pub mod clock;
pub mod config;
pub mod conversation;
pub mod daemon;
#[allow(unsafe_code)] // mlockall, prctl; each call with a SAFETY comment
pub mod hardening;
pub mod login;
pub mod offline;
pub mod pinentry;
pub mod readers;
pub mod server_client;
pub mod session;
pub mod socket;
