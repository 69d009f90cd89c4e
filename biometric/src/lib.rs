//! `clinauth-biometric`: templates, the sealed-template envelope and the
//! 1:1 matcher (R-BIO-1..5).
//!
//! How each piece meets the requirements (docs/BIOMETRICS.md has the detail
//! and the measurement):
//!
//! * **R-BIO-1** — feature data never leaves the reader in plaintext.
//!   [`envelope::seal`] runs inside the reader and HPKE-seals the encoded
//!   template (RFC 9180, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//!   ChaCha20-Poly1305, base mode) to the server's [`MatcherPublicKey`]; the
//!   agent and the network only carry [`SealedCapture`] bytes. A
//!   match-on-reader device sends a [`SignedDecision`] instead and the
//!   template never leaves it at all.
//! * **R-BIO-2** — 1:1 only: [`matcher::verify`] compares the claimed user's
//!   enrolled reference with one probe. The crate has no 1:N search API.
//!   (That biometrics are never a sole factor is enforced by the policy.)
//! * **R-BIO-3** — readers are enrolled devices with their own Ed25519 keys
//!   ([`ReaderKey`], registered as [`ReaderPublicKey`]). Every capture is
//!   bound (HPKE AAD and signature) to the server's single-use nonce, the
//!   reader ID, the user ID and the capture time; [`open`] and
//!   [`verify_decision`] check the signature first, then the binding
//!   ([`Expected`]).
//! * **R-BIO-4** — the matcher's [`OPERATING_THRESHOLD`] was chosen by
//!   measurement for FMR ≤ 1/10,000 with margin (`examples/measure.rs` on
//!   the [`synthetic`] finger model; a deterministic sample is re-checked by
//!   a unit test). Counting consecutive failures is the server's job.
//! * **R-BIO-5** — templates and samples are secrets: [`Template`] zeroizes
//!   its minutiae on drop and prints no feature data in `Debug`; encodings,
//!   HPKE plaintext buffers and matcher intermediates are zeroizing. Storing
//!   enrolled templates encrypted at rest is the server store's job (it keeps
//!   [`Template::encode`] output only under its at-rest encryption).
//!
//! The crate is pure: no I/O, no clock (time is a parameter), randomness
//! only from a caller-supplied `ring::rand::SecureRandom` (and seeded
//! SplitMix64 for synthetic test data). Every input has a size limit and a
//! typed error; nothing panics on input.
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

pub mod envelope;
pub mod matcher;
pub mod synthetic;
pub mod template;

pub use envelope::{
    open, open_capture, seal, verify_decision, CaptureContext, EnvelopeError, Expected, MatcherKey,
    MatcherPublicKey, ReaderKey, ReaderPublicKey, SealedCapture, SignedDecision,
};
pub use matcher::{verify, MatchResult, OPERATING_THRESHOLD};
pub use synthetic::{CaptureModel, SyntheticFinger};
pub use template::{Minutia, MinutiaKind, Template, TemplateError};
