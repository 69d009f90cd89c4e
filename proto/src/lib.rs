//! `clinauth-proto`: every message that crosses a process boundary.
//!
//! The agent socket speaks newline-delimited JSON:
//!
//! - [`frame`]: framing, the 64 KiB limit, the incremental decoder and a
//!   blocking reader;
//! - [`envelope`]: the versioned envelope `{"v":1,"id":…,"body":{…}}`;
//! - [`agent`]: the requests and replies, and the error codes;
//! - [`text`], [`secret`]: bounded field types, and the redacted,
//!   zeroizing [`SecretString`];
//! - [`client`]: [`AgentClient`], the blocking client for the PAM module;
//! - [`serve`]: the agent's side (read a request, write a reply, refuse a
//!   bad frame);
//! - [`fuzzing`]: the function the fuzz target runs;
//! - [`ticket`]: the server-signed ticket (JWS, EdDSA) the agent and apps verify;
//! - [`workstation`]: the bodies of the workstation API (begin, finish) over mTLS;
//! - [`offline`]: the server-signed offline bundle (R-OFF-1);
//! - [`events`]: the agent's spooled audit events uploaded to the server.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented,
    clippy::indexing_slicing
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![warn(missing_docs)]

pub mod agent;
pub mod client;
pub mod confirmation;
pub mod envelope;
pub mod events;
pub mod frame;
pub mod fuzzing;
mod jws;
pub mod offline;
pub mod records;
pub mod secret;
pub mod serve;
pub mod text;
pub mod ticket;
pub mod workstation;

pub use agent::{ErrorCode, Outcome, PromptKind, PromptStyle, Reply, Request};
pub use client::{AgentClient, ClientError};
pub use envelope::{Envelope, PROTOCOL_VERSION};
pub use frame::{FrameDecoder, FrameError, MAX_FRAME_LEN};
pub use secret::SecretString;
pub use text::{Label, Text, Ticket, UserName};
