//! `clinauth-policy`: the factor model, the policy file, its validation
//! against the guideline's requirements, and the decision.
//!
//! Pure: no I/O, and time is always a parameter.
#![forbid(unsafe_code)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::todo,
    clippy::unimplemented
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod purpose;

pub use purpose::{Purpose, UnknownPurpose};
