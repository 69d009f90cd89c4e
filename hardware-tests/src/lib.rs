//! `clinauth-hardware-tests`: virtual devices at the hardware boundary and the
//! suite that runs against them (or against real devices with `CLINAUTH_HW=1`).
//!
//! - [`vpcd`]: the vsmartcard vpcd protocol and [`vpcd::VirtualCard`], a card
//!   that tests insert into and remove from a reader of the real pcscd.
//! - [`piv`]: a PIV applet (SP 800-73-4 subset) as a pure state machine.
//! - [`testpki`]: a small CA issuing the card's certificates.
//! - [`pcscd`]: starts a private pcscd with vpcd readers for a test run.
//! - [`bio_reader`]: a biometric reader emulator (own signing key, sealed
//!   template or match-on-reader evidence from a synthetic finger).
//! - [`badge`]: a contactless badge (UID through `FF CA`) for a vpcd reader.
//! - [`faulty`]: a misbehaving PIV card (broken TLV, odd status words, a card
//!   that falls silent or leaves mid-command) for the driver's fault tests.
//! - [`dbus`]: a private "system" D-Bus bus and python-dbusmock services on it.
//! - [`logind`]: systemd-logind played by dbusmock's `logind` template on a
//!   private bus (the agent's session and tap-out tests).
//! - [`session_bed`]: pcscd, the agent's reader watcher and the logind mock
//!   together, for the session tests and the tap-out latency benchmark.
//! - [`conversation`]: a login conversation with the agent over its socket
//!   (the end-to-end tests' helpers).
//! - [`hw`]: which device a test runs against (virtual, or real ones with
//!   `CLINAUTH_HW=1`) and why a test is skipped.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod badge;
pub mod bio_reader;
pub mod conversation;
pub mod dbus;
pub mod faulty;
pub mod fprintd;
pub mod hw;
pub mod logind;
pub mod pcscd;
pub mod piv;
pub mod session_bed;
pub mod stack;
pub mod testpki;
pub mod vpcd;

pub use badge::VirtualBadge;
pub use faulty::{Fault, FaultyCard};
pub use piv::{CardConfig, PivApplet, SlotId};
pub use vpcd::VirtualCard;
mod tempdir;
