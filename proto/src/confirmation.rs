//! The signed confirmation (R-REC-2): the server's statement that the
//! confirmer of a record entered by proxy authenticated and confirmed (or
//! rejected) it, binding the record's digest, both persons, both times and
//! the factors each used.
//!
//! Format: a compact JWS with EdDSA, signed with the server's ticket key,
//! header `{"alg":"EdDSA","typ":"clinauth-confirmation+jwt","kid":…}`. Unlike
//! a ticket it does not expire: it is a record of what happened. See
//! `docs/agent-protocol.md` for the claims.

use crate::jws::{self, JwsError};
use crate::records::{Digest, RecordId, Verdict};
use crate::text::MAX_TICKET_LEN;
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};

/// The `typ` every confirmation carries.
pub const CONFIRMATION_TYPE: &str = "clinauth-confirmation+jwt";

/// One person's identification and authentication (R-AUTH-5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// The user.
    pub user: String,
    /// The workstation they authenticated at.
    pub ws: String,
    /// When they authenticated (the ticket's `iat`), seconds since the epoch.
    pub auth_time: i64,
    /// The factor kinds that satisfied the rule.
    pub factors: Vec<String>,
    /// The policy rule that allowed it.
    pub rule: String,
    /// The ticket of that authentication (its `jti`), for the audit trail.
    pub ticket: String,
}

/// What a confirmation states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The issuing server.
    pub iss: String,
    /// The record.
    pub record: RecordId,
    /// The record's digest as registered.
    pub digest: Digest,
    /// Confirmed or rejected.
    pub verdict: Verdict,
    /// Who entered it, and how they were authenticated.
    pub inputter: Party,
    /// When it was entered, seconds since the epoch.
    pub entered_at: i64,
    /// Who decided, and how they were authenticated just before.
    pub confirmer: Party,
    /// When they decided, seconds since the epoch.
    pub decided_at: i64,
    /// The policy's version at the decision.
    pub policy_version: u64,
    /// The policy's canonical digest at the decision.
    pub policy_digest: String,
    /// A unique identifier.
    pub jti: String,
}

/// Why a confirmation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmationError {
    /// Not a compact JWS of at most 16 KiB.
    #[error("confirmation is not a compact JWS of at most 16 KiB")]
    Format,
    /// Another algorithm or type.
    #[error("confirmation header is not EdDSA / clinauth-confirmation+jwt")]
    Header,
    /// The signature does not verify.
    #[error("confirmation signature does not verify")]
    Signature,
    /// The claims do not parse.
    #[error("confirmation claims are malformed")]
    Claims,
    /// Signing failed.
    #[error("confirmation could not be signed")]
    Sign,
}

fn from_jws(e: JwsError) -> ConfirmationError {
    match e {
        JwsError::Format => ConfirmationError::Format,
        JwsError::Header => ConfirmationError::Header,
        JwsError::Signature => ConfirmationError::Signature,
        JwsError::SignHeader | JwsError::TooLarge => ConfirmationError::Sign,
    }
}

/// Signs `claims` with the server's ticket key.
pub fn sign(claims: &Claims, key: &Ed25519KeyPair, kid: &str) -> Result<String, ConfirmationError> {
    let payload = serde_json::to_vec(claims).map_err(|_| ConfirmationError::Sign)?;
    jws::sign(CONFIRMATION_TYPE, kid, &payload, key, MAX_TICKET_LEN).map_err(from_jws)
}

/// Verifies a confirmation with the server's Ed25519 public key (raw 32
/// bytes) and returns its claims.
pub fn verify(token: &str, public_key: &[u8]) -> Result<Claims, ConfirmationError> {
    let payload =
        jws::verify(token, CONFIRMATION_TYPE, MAX_TICKET_LEN, public_key).map_err(from_jws)?;
    serde_json::from_slice(&payload).map_err(|_| ConfirmationError::Claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::DigestAlg;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;

    fn key() -> Ed25519KeyPair {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap()
    }

    fn party(user: &str) -> Party {
        Party {
            user: user.into(),
            ws: "ward3-ws01".into(),
            auth_time: 1_800_000_000,
            factors: vec!["smartcard".into(), "card_pin".into()],
            rule: "app-step-up".into(),
            ticket: "ab12".into(),
        }
    }

    fn claims() -> Claims {
        Claims {
            iss: "clinauth.test".into(),
            record: RecordId::new(&"0a".repeat(16)).unwrap(),
            digest: Digest::new(DigestAlg::Sha256, &[9; 32]).unwrap(),
            verdict: Verdict::Confirm,
            inputter: party("clerk.ito"),
            entered_at: 1_800_000_000,
            confirmer: party("dr.suzuki"),
            decided_at: 1_800_300_000,
            policy_version: 4,
            policy_digest: format!("sha256:{}", "cd".repeat(32)),
            jti: "77".into(),
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let k = key();
        let token = sign(&claims(), &k, "k1").unwrap();
        assert_eq!(verify(&token, k.public_key().as_ref()).unwrap(), claims());
        assert_eq!(
            verify(&token, key().public_key().as_ref()),
            Err(ConfirmationError::Signature)
        );
        // A ticket is not a confirmation, even signed by the same key.
        let ticket = jws::sign(
            crate::ticket::TICKET_TYPE,
            "k1",
            &serde_json::to_vec(&claims()).unwrap(),
            &k,
            MAX_TICKET_LEN,
        )
        .unwrap();
        assert_eq!(
            verify(&ticket, k.public_key().as_ref()),
            Err(ConfirmationError::Header)
        );
        assert_eq!(
            verify("a.b", k.public_key().as_ref()),
            Err(ConfirmationError::Format)
        );
    }
}
