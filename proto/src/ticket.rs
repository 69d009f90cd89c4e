//! The signed ticket: the server's statement that a user authenticated, with
//! which factors, under which rule and policy, at which workstation, and for
//! how long. The agent, clinical apps and their backends verify it offline
//! with the server's public key.
//!
//! Format: a compact JWS (RFC 7515) with EdDSA (Ed25519, RFC 8037). The
//! header is fixed (`{"alg":"EdDSA","typ":"clinauth-ticket+jwt","kid":…}`);
//! any other algorithm, `none` included, is refused. See
//! `docs/agent-protocol.md` for the claims.

use crate::jws::{self, JwsError};
use crate::text::MAX_TICKET_LEN;
use clinauth_policy::Purpose;
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};

/// The `typ` every ticket carries.
pub const TICKET_TYPE: &str = "clinauth-ticket+jwt";

/// What a ticket states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The issuing server (its configured name).
    pub iss: String,
    /// The user.
    pub sub: String,
    /// The workstation the authentication happened at.
    pub ws: String,
    /// What it was for.
    pub purpose: Purpose,
    /// The policy rule that allowed it.
    pub rule: String,
    /// The factor kinds that satisfied the rule (policy names).
    pub factors: Vec<String>,
    /// The policy's version.
    pub policy_version: u64,
    /// The policy's canonical digest (`sha256:…`).
    pub policy_digest: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// A unique identifier, for audit correlation.
    pub jti: String,
    /// The session locks after this many idle seconds (R-SESS-1).
    pub idle_lock: u32,
    /// Decided offline by the agent with cached verifiers (R-OFF-1).
    #[serde(default)]
    pub offline: bool,
    /// Flagged for an officer's review (break-glass, R-EMERG-1).
    #[serde(default)]
    pub review: bool,
    /// What a step-up, confirmation or signature was for (the app's action,
    /// the record and verdict, the document digest), as bound to the
    /// challenge; absent for logins and plain authentications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<crate::records::Operation>,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not three base64url parts, or larger than 16 KiB.
    #[error("ticket is not a compact JWS of at most 16 KiB")]
    Format,
    /// The header names another algorithm or type.
    #[error("ticket header is not EdDSA / clinauth-ticket+jwt")]
    Header,
    /// The signature does not verify with the given key.
    #[error("ticket signature does not verify")]
    Signature,
    /// The claims do not parse.
    #[error("ticket claims are malformed")]
    Claims,
    /// Expired, or issued in the future beyond the allowed skew.
    #[error("ticket is expired or not yet valid")]
    Time,
    /// Signing failed (claims too large to encode).
    #[error("ticket could not be signed")]
    Sign,
}

/// Allowed clock skew between issuer and verifier, seconds.
pub const SKEW: i64 = 30;

/// Signs claims with the server's ticket key.
pub fn sign(claims: &Claims, key: &Ed25519KeyPair, kid: &str) -> Result<String, TicketError> {
    let payload = serde_json::to_vec(claims).map_err(|_| TicketError::Sign)?;
    jws::sign(TICKET_TYPE, kid, &payload, key, MAX_TICKET_LEN).map_err(from_jws)
}

/// The `kid` of a ticket, read before its signature is checked, to choose
/// the key. Nothing else in an unverified ticket may be trusted.
pub fn key_id(token: &str) -> Result<String, TicketError> {
    jws::key_id(token, TICKET_TYPE, MAX_TICKET_LEN).map_err(from_jws)
}

/// Verifies a ticket's signature with the server's Ed25519 public key and
/// its validity at `now` (seconds), and returns its claims.
pub fn verify(token: &str, public_key: &[u8], now: i64) -> Result<Claims, TicketError> {
    let payload = jws::verify(token, TICKET_TYPE, MAX_TICKET_LEN, public_key).map_err(from_jws)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TicketError::Claims)?;
    if now > claims.exp.saturating_add(SKEW) || now < claims.iat.saturating_sub(SKEW) {
        return Err(TicketError::Time);
    }
    Ok(claims)
}

fn from_jws(e: JwsError) -> TicketError {
    match e {
        JwsError::Format => TicketError::Format,
        JwsError::Header => TicketError::Header,
        JwsError::Signature => TicketError::Signature,
        JwsError::SignHeader | JwsError::TooLarge => TicketError::Sign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;

    fn key() -> Ed25519KeyPair {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            iss: "clinauth.example-hospital.jp".into(),
            sub: "nurse.tanaka".into(),
            ws: "ward3-ws01".into(),
            purpose: Purpose::Login,
            rule: "ward-login".into(),
            factors: vec!["smartcard".into(), "card_pin".into()],
            policy_version: 3,
            policy_digest: format!("sha256:{}", "ab".repeat(32)),
            iat: 1_800_000_000,
            exp: 1_800_000_300,
            jti: "3f1c".into(),
            idle_lock: 180,
            offline: false,
            review: false,
            op: None,
        }
    }

    #[test]
    fn round_trip() {
        let k = key();
        let token = sign(&claims(), &k, "k1").unwrap();
        assert_eq!(key_id(&token).unwrap(), "k1");
        let got = verify(&token, k.public_key().as_ref(), 1_800_000_100).unwrap();
        assert_eq!(got, claims());
    }

    #[test]
    fn refuses_other_keys_tampering_and_time() {
        let k = key();
        let token = sign(&claims(), &k, "k1").unwrap();
        let other = key();
        assert_eq!(
            verify(&token, other.public_key().as_ref(), 1_800_000_100),
            Err(TicketError::Signature)
        );
        // Swap the payload for another user's, keeping the signature.
        let mut c = claims();
        c.sub = "dr.evil".into();
        let forged = sign(&c, &other, "k1").unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged_parts: Vec<&str> = forged.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], forged_parts[1], parts[2]);
        assert_eq!(
            verify(&spliced, k.public_key().as_ref(), 1_800_000_100),
            Err(TicketError::Signature)
        );
        assert_eq!(
            verify(&token, k.public_key().as_ref(), 1_800_000_300 + SKEW + 1),
            Err(TicketError::Time)
        );
        assert_eq!(
            verify(&token, k.public_key().as_ref(), 1_800_000_000 - SKEW - 1),
            Err(TicketError::Time)
        );
    }

    #[test]
    fn refuses_alg_none_and_malformed() {
        let k = key();
        let none_header =
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"clinauth-ticket+jwt","kid":"k1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        let token = format!("{none_header}.{payload}.AAAA");
        assert_eq!(
            verify(&token, k.public_key().as_ref(), 1_800_000_100),
            Err(TicketError::Header)
        );
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "..",
            "a..c",
            &"a".repeat(MAX_TICKET_LEN + 1),
            "!!.??.**",
        ] {
            assert!(
                verify(bad, k.public_key().as_ref(), 0).is_err(),
                "{bad:.20}"
            );
        }
    }
}
