//! Verified evidence: what the server (or the agent, offline) has checked,
//! each piece bound to a fresh challenge before it reaches the engine.
//!
//! There is deliberately no variant for a user ID, employee number or badge
//! *number*: a public identifier cannot be passed as evidence (R-AUTH-2).

use crate::factor::{BiometricProtection, Token, TokenSet};
use crate::policy::Aaguid;
use crate::time::UnixTime;

/// One verified factor and when it was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// What was proven.
    pub factor: Factor,
    /// When the verifier checked it.
    pub verified_at: UnixTime,
}

impl Evidence {
    /// Evidence of `factor` verified at `verified_at`.
    pub fn new(factor: Factor, verified_at: UnixTime) -> Evidence {
        Evidence {
            factor,
            verified_at,
        }
    }
}

/// A verified factor with the attributes the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Factor {
    /// A PIN or password checked by the server against its Argon2id hash.
    ServerPin,
    /// A signature over the server's challenge by a card key.
    Smartcard {
        /// The key is protected by the card PIN (PIV PIN policy "once" or
        /// "always"), so the signature also proves the card PIN.
        pin_protected_key: bool,
        /// HPKI qualification (ISO 17090 hcRole) from the certificate, if any.
        qualification: Option<String>,
    },
    /// A WebAuthn assertion.
    Fido2 {
        /// The authenticator reported user verification (UV flag).
        user_verified: bool,
        /// The authenticator model, from the attested registration.
        aaguid: Option<Aaguid>,
    },
    /// A TOTP code, accepted once.
    Totp,
    /// A contactless badge UID.
    Badge,
    /// A 1:1 biometric verification.
    Biometric {
        /// How the reader protected the feature data.
        protection: BiometricProtection,
        /// The reader has presentation attack detection.
        presentation_attack_detection: bool,
    },
}

impl Factor {
    /// The tokens this factor proves, before any rule-specific filtering.
    pub fn tokens(&self) -> TokenSet {
        match self {
            Factor::ServerPin => TokenSet::of(Token::ServerPin),
            Factor::Smartcard {
                pin_protected_key, ..
            } => {
                let card = TokenSet::of(Token::Smartcard);
                if *pin_protected_key {
                    card.with(Token::CardPin)
                } else {
                    card
                }
            }
            Factor::Fido2 { user_verified, .. } => {
                let presence = TokenSet::of(Token::Fido2Presence);
                if *user_verified {
                    presence.with(Token::Fido2Uv)
                } else {
                    presence
                }
            }
            Factor::Totp => TokenSet::of(Token::Totp),
            Factor::Badge => TokenSet::of(Token::Badge),
            Factor::Biometric { protection, .. } => match protection {
                BiometricProtection::MatchOnReader => TokenSet::of(Token::BiometricOnReader),
                BiometricProtection::SealedTemplate => TokenSet::of(Token::BiometricSealed),
                // The workstation saw the plaintext template (R-BIO-1): it proves nothing.
                BiometricProtection::HostMatch => TokenSet::EMPTY,
            },
        }
    }
}
