//! `clinauth-policy`: the factor model, the policy file, its validation
//! against the guideline's requirements, and the decision.
//!
//! - [`factor`]: categories, factor kinds, public identifiers (never factors).
//! - [`file`]: the TOML policy file as officers write it.
//! - [`validate`]: refuses any policy breaking R-AUTH-1..4, R-BIO-1..2 and
//!   the range rules, listing every violation ([`Violation`]).
//! - [`Policy::decide`]: allow with the matched rule, or deny with what is missing.
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

pub mod decide;
pub mod evidence;
pub mod factor;
pub mod file;
mod policy;
mod purpose;
mod time;
pub mod validate;
mod violation;

pub use decide::{Allow, Connectivity, Context, Decision, Deny, DenyReason, NotCounted};
pub use evidence::{Evidence, Factor};
pub use factor::{BiometricProtection, Category, CategorySet, FactorKind, PublicIdentifier};
pub use policy::{
    Aaguid, Combination, CounterRegression, FailureLimits, Group, GroupId, GroupSet, IdentifyBy,
    OfflineLimits, Policy, PolicyDigest, PurposeSet, RoleSet, Rule, SelfConfirmation,
    SessionLimits,
};
pub use purpose::{Purpose, UnknownPurpose};
pub use time::{BadDuration, Seconds, UnixTime};
pub use validate::PolicyError;
pub use violation::{Code, Violation};
