//! The offline bundle (R-OFF-1): what the server lets an agent keep about a
//! user so that, with the server unreachable, the agent can verify the
//! user's card + card PIN or FIDO2 key with user verification itself.
//!
//! `POST /v1/offline/bundle` (workstation API, mutual TLS): the agent
//! presents the ticket it has just been issued ([`BundleRequest`]); the
//! server answers with a signed bundle, or with none when no rule lets this
//! user work offline here ([`BundleResponse`]).
//!
//! Format: a compact JWS (RFC 7515) with EdDSA (Ed25519, RFC 8037), signed
//! with the server's **ticket key**. The header is fixed:
//! `{"alg":"EdDSA","typ":"clinauth-offline+jwt","kid":…}`. The distinct
//! `typ` (and claims that refuse unknown fields) keep a ticket from passing
//! as a bundle and a bundle from passing as a ticket. The claims are
//! [`BundleClaims`]; see `docs/agent-protocol.md`.
//!
//! Only public material is in a bundle: card certificates (public keys),
//! FIDO2 credential public keys (COSE, in the server's stored credential
//! form), and the part of the policy that says where offline use is allowed.

use crate::jws::{self, JwsError};
use crate::workstation::B64;
use clinauth_policy::Purpose;
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};

/// The `typ` of every bundle.
pub const BUNDLE_TYPE: &str = "clinauth-offline+jwt";
/// The claims' format version.
pub const BUNDLE_VERSION: u32 = 1;
/// The largest bundle (the whole compact JWS), in bytes.
pub const MAX_BUNDLE_LEN: usize = 192 * 1024;
/// The largest request body of `POST /v1/offline/bundle`.
pub const MAX_BUNDLE_REQUEST_BYTES: usize = 32 * 1024;
/// Most card certificates in one bundle.
pub const MAX_BUNDLE_CARDS: usize = 8;
/// Most FIDO2 credentials in one bundle.
pub const MAX_BUNDLE_FIDO2: usize = 16;
/// Most rules in one bundle.
pub const MAX_BUNDLE_RULES: usize = 32;
/// The longest stored FIDO2 credential (JSON) in a bundle.
pub const MAX_FIDO2_CREDENTIAL_LEN: usize = 16 * 1024;
/// The longest name (user, workstation, rule, issuer, IDs) in a bundle.
pub const MAX_NAME_LEN: usize = 256;
/// Allowed clock skew between server and agent, seconds.
pub const SKEW: i64 = 30;

/// The factor combinations an agent can verify offline, as policy factor
/// names (sorted as the policy sorts them): card + card PIN (one signature
/// by a PIN-protected card key), and FIDO2 with user verification.
pub const OFFLINE_COMBINATIONS: [&[&str]; 2] = [&["smartcard", "card_pin"], &["fido2_uv"]];

/// Whether `combination` (policy factor names) can be verified offline.
pub fn is_offline_combination(combination: &[String]) -> bool {
    let mut names: Vec<&str> = combination.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    OFFLINE_COMBINATIONS.iter().any(|c| {
        let mut want: Vec<&str> = c.to_vec();
        want.sort_unstable();
        want == names
    })
}

/// `POST /v1/offline/bundle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRequest {
    /// The ticket the server has just issued to this workstation.
    pub ticket: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleResponse {
    /// The signed bundle; `None` when no rule allows this user offline use
    /// at this workstation (the agent then forgets any bundle it holds for
    /// the user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// Why there is no bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `kid` of the key that signs bundles (the ticket key), so that an
    /// agent whose configured key differs can say so.
    pub kid: String,
}

/// A card the user may use offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleCard {
    /// The card's authentication certificate (DER), as enrolled; the card
    /// must present exactly this certificate.
    pub certificate: B64<16384>,
    /// The card key needs the card PIN (known from enrollment): only then
    /// does a signature prove `card_pin`.
    pub pin_protected: bool,
}

/// A FIDO2 credential the user may use offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFido2 {
    /// The credential in the server's stored form (JSON: credential ID,
    /// COSE public key, signature counter, registration flags).
    pub credential: String,
    /// The authenticator model, when attested (`xxxxxxxx-xxxx-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aaguid: Option<String>,
}

/// A rule that lets the user authenticate offline here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRule {
    /// The rule's name.
    pub name: String,
    /// The purposes it decides.
    pub purposes: Vec<Purpose>,
    /// Its combinations that can be verified offline (a subset of
    /// [`OFFLINE_COMBINATIONS`]), in policy order.
    pub combinations: Vec<Vec<String>>,
    /// Seconds after `iat` (the online login) the rule allows offline use.
    pub max_age: u32,
    /// The session locks after this many idle seconds (R-SESS-1).
    pub idle_lock: u32,
    /// Decisions are flagged for an officer's review (R-EMERG-1).
    #[serde(default)]
    pub review: bool,
    /// FIDO2 models accepted (AAGUIDs); empty: any of the user's keys.
    #[serde(default)]
    pub fido2_aaguids: Vec<String>,
}

/// What a bundle states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleClaims {
    /// [`BUNDLE_VERSION`].
    pub v: u32,
    /// The issuing server.
    pub iss: String,
    /// The user.
    pub sub: String,
    /// The workstation it is for (only that one may use it).
    pub ws: String,
    /// Issued at (the online login), seconds since the epoch.
    pub iat: i64,
    /// Expires at: `iat` plus the largest `max_age` of its rules.
    pub exp: i64,
    /// The ticket it was issued against (its `jti`).
    pub ticket_jti: String,
    /// The policy's version and digest when issued.
    pub policy_version: u64,
    /// `sha256:…`.
    pub policy_digest: String,
    /// The user's enrolled, currently valid cards.
    pub cards: Vec<BundleCard>,
    /// The user's active FIDO2 credentials.
    pub fido2: Vec<BundleFido2>,
    /// The relying party ID the FIDO2 credentials are bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fido2_rp_id: Option<String>,
    /// The rules allowing offline use, in policy order.
    pub rules: Vec<OfflineRule>,
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not a compact JWS of at most [`MAX_BUNDLE_LEN`] bytes.
    #[error("the offline bundle is not a compact JWS of at most {MAX_BUNDLE_LEN} bytes")]
    Format,
    /// Another algorithm or type.
    #[error("the offline bundle's header is not EdDSA / {BUNDLE_TYPE}")]
    Header,
    /// The signature does not verify with the server's key.
    #[error("the offline bundle's signature does not verify with the server's key")]
    Signature,
    /// The claims do not parse or break a limit.
    #[error("the offline bundle's claims are malformed: {0}")]
    Claims(&'static str),
    /// Signing failed (too large).
    #[error("the offline bundle could not be signed: {0}")]
    Sign(&'static str),
}

impl BundleClaims {
    /// Checks the limits and the shape (not the time, the user or the
    /// workstation: the caller knows those).
    pub fn check(&self) -> Result<(), BundleError> {
        let name = |s: &str| !s.is_empty() && s.len() <= MAX_NAME_LEN;
        if self.v != BUNDLE_VERSION {
            return Err(BundleError::Claims("unknown version"));
        }
        if !(name(&self.iss) && name(&self.sub) && name(&self.ws) && name(&self.ticket_jti)) {
            return Err(BundleError::Claims("a name is empty or too long"));
        }
        if self.policy_digest.len() > 128 {
            return Err(BundleError::Claims("policy digest too long"));
        }
        if self.exp < self.iat {
            return Err(BundleError::Claims("expires before it is issued"));
        }
        if self.cards.len() > MAX_BUNDLE_CARDS
            || self.fido2.len() > MAX_BUNDLE_FIDO2
            || self.rules.len() > MAX_BUNDLE_RULES
        {
            return Err(BundleError::Claims("too many cards, keys or rules"));
        }
        if self
            .fido2
            .iter()
            .any(|f| f.credential.is_empty() || f.credential.len() > MAX_FIDO2_CREDENTIAL_LEN)
        {
            return Err(BundleError::Claims(
                "a FIDO2 credential is empty or too long",
            ));
        }
        if self.fido2_rp_id.as_deref().is_some_and(|r| !name(r)) {
            return Err(BundleError::Claims("FIDO2 relying party ID"));
        }
        for rule in &self.rules {
            if !name(&rule.name)
                || rule.purposes.is_empty()
                || rule.purposes.len() > Purpose::ALL.len()
                || rule.combinations.is_empty()
                || rule.combinations.len() > OFFLINE_COMBINATIONS.len()
                || rule.fido2_aaguids.len() > 64
            {
                return Err(BundleError::Claims("a rule breaks a limit"));
            }
            if !rule.combinations.iter().all(|c| is_offline_combination(c)) {
                return Err(BundleError::Claims(
                    "a rule lists a combination that cannot be verified offline",
                ));
            }
        }
        Ok(())
    }

    /// Whether the bundle is valid at `now` (seconds): issued no later than
    /// `now` (with [`SKEW`]) and not expired.
    pub fn is_current(&self, now: i64) -> bool {
        now >= self.iat.saturating_sub(SKEW) && now <= self.exp
    }
}

/// Signs a bundle with the server's ticket key.
pub fn sign(claims: &BundleClaims, key: &Ed25519KeyPair, kid: &str) -> Result<String, BundleError> {
    claims.check()?;
    let payload = serde_json::to_vec(claims).map_err(|_| BundleError::Sign("claims"))?;
    jws::sign(BUNDLE_TYPE, kid, &payload, key, MAX_BUNDLE_LEN).map_err(from_jws)
}

/// The `kid` of a bundle, unverified (to say which key it claims).
pub fn key_id(token: &str) -> Result<String, BundleError> {
    jws::key_id(token, BUNDLE_TYPE, MAX_BUNDLE_LEN).map_err(from_jws)
}

/// Verifies a bundle's signature with the server's Ed25519 public key (raw
/// 32 bytes) and its shape, and returns its claims. The caller checks the
/// time ([`BundleClaims::is_current`]), the user and the workstation.
pub fn verify(token: &str, public_key: &[u8]) -> Result<BundleClaims, BundleError> {
    let payload = jws::verify(token, BUNDLE_TYPE, MAX_BUNDLE_LEN, public_key).map_err(from_jws)?;
    let claims: BundleClaims =
        serde_json::from_slice(&payload).map_err(|_| BundleError::Claims("not the bundle JSON"))?;
    claims.check()?;
    Ok(claims)
}

fn from_jws(e: JwsError) -> BundleError {
    match e {
        JwsError::Format => BundleError::Format,
        JwsError::Header => BundleError::Header,
        JwsError::Signature => BundleError::Signature,
        JwsError::SignHeader => BundleError::Sign("header"),
        JwsError::TooLarge => BundleError::Sign("larger than the bundle limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;

    fn key() -> Ed25519KeyPair {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap()
    }

    fn claims() -> BundleClaims {
        BundleClaims {
            v: BUNDLE_VERSION,
            iss: "clinauth.test".into(),
            sub: "nurse.tanaka".into(),
            ws: "ward3-ws01".into(),
            iat: 1_800_000_000,
            exp: 1_800_000_000 + 72 * 3600,
            ticket_jti: "c1".into(),
            policy_version: 3,
            policy_digest: format!("sha256:{}", "ab".repeat(32)),
            cards: vec![BundleCard {
                certificate: B64(vec![0x30, 0x82, 1, 2]),
                pin_protected: true,
            }],
            fido2: vec![],
            fido2_rp_id: None,
            rules: vec![OfflineRule {
                name: "ward-login".into(),
                purposes: vec![Purpose::Login, Purpose::Unlock],
                combinations: vec![vec!["smartcard".into(), "card_pin".into()]],
                max_age: 72 * 3600,
                idle_lock: 180,
                review: false,
                fido2_aaguids: vec![],
            }],
        }
    }

    #[test]
    fn round_trip_and_time() {
        let k = key();
        let token = sign(&claims(), &k, "k1").unwrap();
        assert_eq!(key_id(&token).unwrap(), "k1");
        let got = verify(&token, k.public_key().as_ref()).unwrap();
        assert_eq!(got, claims());
        assert!(got.is_current(1_800_000_000 - SKEW));
        assert!(!got.is_current(1_800_000_000 - SKEW - 1));
        assert!(got.is_current(got.exp));
        assert!(!got.is_current(got.exp + 1));
    }

    #[test]
    fn refuses_other_key_tampering_and_tickets() {
        let k = key();
        let token = sign(&claims(), &k, "k1").unwrap();
        assert_eq!(
            verify(&token, key().public_key().as_ref()),
            Err(BundleError::Signature)
        );
        // Another payload under the original signature.
        let mut c = claims();
        c.sub = "dr.evil".into();
        let other = sign(&c, &k, "k1").unwrap();
        let p: Vec<&str> = token.split('.').collect();
        let q: Vec<&str> = other.split('.').collect();
        let spliced = format!("{}.{}.{}", p[0], q[1], p[2]);
        assert_eq!(
            verify(&spliced, k.public_key().as_ref()),
            Err(BundleError::Signature)
        );
        // A ticket signed with the same key is not a bundle.
        let ticket = crate::ticket::sign(
            &crate::ticket::Claims {
                iss: "clinauth.test".into(),
                sub: "nurse.tanaka".into(),
                ws: "ward3-ws01".into(),
                purpose: Purpose::Login,
                rule: "ward-login".into(),
                factors: vec![],
                policy_version: 1,
                policy_digest: String::new(),
                iat: 0,
                exp: 1,
                jti: "j".into(),
                idle_lock: 0,
                offline: false,
                review: false,
                op: None,
            },
            &k,
            "k1",
        )
        .unwrap();
        assert_eq!(
            verify(&ticket, k.public_key().as_ref()),
            Err(BundleError::Header)
        );
        // And a bundle is not a ticket.
        assert!(crate::ticket::verify(&token, k.public_key().as_ref(), 1_800_000_001).is_err());
        for bad in ["", "a.b", "a.b.c.d", "..", "!!.??.**"] {
            assert!(verify(bad, k.public_key().as_ref()).is_err(), "{bad}");
        }
        let huge = "a".repeat(MAX_BUNDLE_LEN + 1);
        assert_eq!(
            verify(&huge, k.public_key().as_ref()),
            Err(BundleError::Format)
        );
    }

    #[test]
    fn only_offline_combinations() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert!(is_offline_combination(&s(&["card_pin", "smartcard"])));
        assert!(is_offline_combination(&s(&["fido2_uv"])));
        assert!(!is_offline_combination(&s(&["badge", "server_pin"])));
        assert!(!is_offline_combination(&s(&["fido2"])));
        assert!(!is_offline_combination(&s(&["smartcard"])));
        let mut c = claims();
        c.rules[0].combinations.push(s(&["badge", "server_pin"]));
        assert!(matches!(
            sign(&c, &key(), "k1"),
            Err(BundleError::Claims(_))
        ));
    }
}
