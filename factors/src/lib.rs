//! `clinauth-factors`: verification of each factor, pure and time-as-parameter,
//! shared by the server and by the agent for offline login (R-OFF-1).
//!
//! No I/O, no clock, no global state: `now` is always a parameter, and the
//! random generator is passed in where randomness is needed (the server
//! passes `ring::rand::SystemRandom`). Every input has a size limit and a
//! typed error; nothing panics on input. Secrets live in zeroizing types
//! whose `Debug` prints `[redacted]`, and are compared in constant time.
//!
//! # What each module proves, and the policy evidence it leads to
//!
//! | module | proves | evidence ([`clinauth_policy::Factor`]) |
//! |---|---|---|
//! | [`card`] | the holder's card key signed *this* nonce for *this* user, workstation and purpose; the card certificate chains to a trusted CA, is valid now, not revoked, and its key type is accepted; the HPKI qualification it carries | `Factor::Smartcard { pin_protected_key, qualification }` via [`card::VerifiedCard::into_factor`] |
//! | [`fido2`] | one of the user's authenticators signed this WebAuthn challenge for this relying party and origin, with user verification reported; the model only if attested by an allowed CA | `Factor::Fido2 { user_verified, aaguid }` via [`fido2::Fido2Assertion::into_factor`] |
//! | [`totp`] | the user has the TOTP device: a code for a step later than any accepted before (RFC 6238 §5.2) | `Factor::Totp` |
//! | [`pin`] | the user knows the server-verified PIN or password (Argon2id at or above OWASP parameters) | `Factor::ServerPin` |
//! | [`at_rest`] | nothing about the user: it keeps stored secrets (TOTP seeds, later biometric templates, R-BIO-5) encrypted and bound to their row | — |
//!
//! `pin_protected_key` is not in the certificate: it comes from enrollment
//! (the PIV slot's PIN policy). A card signature from a PIN-protected key
//! also proves the card PIN (knowledge), which is how card + card PIN makes
//! two factors (R-AUTH-1, R-AUTH-3).
//!
//! Single use of nonces and storing the accepted TOTP step are the server's
//! job (it owns the tables); these functions make both checkable: the card
//! challenge binds the nonce, and [`totp::verify`] takes the last used step.
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

pub mod at_rest;
pub mod card;
mod constant_time;
mod der;
pub mod fido2;
pub mod pin;
pub mod totp;

pub use at_rest::{open, seal, DataKey, SealError};
pub use card::{
    challenge_message, pkcs1_v15_sha256_block, sha256, verify_challenge, verify_signature,
    CardError, CardKeyKind, CardPublicKey, CardTrust, CrlRule, KeyUse, VerifiedCard,
};
pub use fido2::{
    AttestationTrust, Fido2Assertion, Fido2Challenge, Fido2Config, Fido2Credential, Fido2Error,
    Fido2User, Fido2Verifier, RegisteredCredential,
};
pub use pin::{check_new_pin, hash_pin, verify_pin, PinError, PinPolicyError, SecretPin};
pub use totp::{TotpError, TotpSecret};
