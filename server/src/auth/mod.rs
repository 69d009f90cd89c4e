//! The authentication flow: begin (what the policy allows here, with a fresh
//! challenge) and finish (verify each piece of evidence, ask the policy,
//! sign a ticket or say what is missing), with throttling and an audit entry
//! in the same transaction as every decision.

pub mod card_trust;
pub mod challenge;
pub mod commit;
pub mod evidence;
pub mod hashing;
pub mod lookup;
pub mod operation;
pub mod service;
pub mod throttle;

pub use service::{AuthError, AuthService, AuthSettings};
