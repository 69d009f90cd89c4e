//! The workstation API: what the agent sends the server over mutual TLS to
//! authenticate a user, and what it gets back.
//!
//! `POST /v1/auth/begin` → [`BeginRequest`] / [`BeginResponse`]: what the
//! policy allows here, with a fresh single-use challenge.
//! `POST /v1/auth/finish` → [`FinishRequest`] / [`FinishResponse`]: the
//! evidence, and the decision with a signed ticket or what is missing.
//!
//! Binary values travel as base64url without padding ([`B64`]), each with a
//! size limit; secrets as [`SecretString`]. Every body refuses unknown fields.

use crate::secret::SecretString;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clinauth_policy::Purpose;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The largest body either endpoint accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most evidence items in one finish.
pub const MAX_EVIDENCE: usize = 8;

/// Bytes carried as base64url (no padding), at most `N` bytes once decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct B64<const N: usize>(pub Vec<u8>);

impl<const N: usize> B64<N> {
    /// Wraps bytes, refusing more than `N`.
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() <= N).then_some(B64(bytes))
    }
}

impl<const N: usize> fmt::Debug for B64<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "B64([{} bytes])", self.0.len())
    }
}

impl<const N: usize> Serialize for B64<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(&self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for B64<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        // Check the encoded length first so an oversized value is never decoded.
        if text.len() > N.div_ceil(3) * 4 {
            return Err(serde::de::Error::custom(format!(
                "value larger than {N} bytes"
            )));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| serde::de::Error::custom("value is not base64url without padding"))?;
        B64::new(bytes)
            .ok_or_else(|| serde::de::Error::custom(format!("value larger than {N} bytes")))
    }
}

/// `POST /v1/auth/begin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginRequest {
    /// The claimed user (1:1 verification against this identity).
    pub user: String,
    /// What the authentication is for.
    pub purpose: Purpose,
    /// What a step-up, confirmation or signature is for; bound to the
    /// challenge and stated in the ticket. Its kind must match `purpose`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<crate::records::Operation>,
}

/// The answer to begin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginResponse {
    /// Identifies the challenge in finish.
    pub challenge_id: String,
    /// 32 fresh random bytes, single use, bound to user, workstation and purpose.
    pub nonce: B64<32>,
    /// The challenge expires at this time (seconds since the epoch).
    pub expires_at: i64,
    /// The factor combinations the policy allows here, each a list of policy
    /// factor names; the agent offers these to the user.
    pub options: Vec<Vec<String>>,
    /// The server's HPKE public key that biometric readers seal templates
    /// to; absent when the server has no biometric matcher configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matcher_public_key: Option<B64<32>>,
    /// A WebAuthn request for the user's registered FIDO2 credentials, if any
    /// (the JSON of `PublicKeyCredentialRequestOptions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn: Option<serde_json::Value>,
}

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EvidenceItem {
    /// The card signed the challenge message (slot 9A).
    Card {
        /// The card's authentication certificate (DER).
        certificate: B64<16384>,
        /// Intermediate certificates, if the card carries them (DER each).
        #[serde(default)]
        chain: Vec<B64<16384>>,
        /// The signature over the challenge message.
        signature: B64<512>,
        /// The key needs the card PIN (PIV PIN policy), as the card reports it.
        pin_protected_key: bool,
    },
    /// A PIN or password for the server to check.
    ServerPin {
        /// The PIN.
        value: SecretString,
    },
    /// A TOTP code.
    Totp {
        /// The code.
        code: SecretString,
    },
    /// A contactless badge's UID.
    Badge {
        /// The UID (4, 7 or 10 bytes).
        uid: B64<16>,
    },
    /// A WebAuthn assertion (the JSON of `PublicKeyCredential`).
    Fido2 {
        /// The assertion.
        assertion: serde_json::Value,
    },
    /// A sealed template from a registered reader.
    BiometricSealed {
        /// The reader's signed, HPKE-sealed capture.
        capture: B64<8192>,
    },
    /// A match-on-reader device's signed decision.
    BiometricDecision {
        /// The reader's signed decision.
        decision: B64<2048>,
    },
    /// The document signature of a `sign` operation: the card's signature
    /// key (PIV 9C, HPKI 署名用) over the operation's digest. Counts only
    /// beside the card's challenge signature, from the same holder.
    DocumentSignature {
        /// The signature certificate (DER).
        certificate: B64<16384>,
        /// Intermediate certificates, if the card carries them (DER each).
        #[serde(default)]
        chain: Vec<B64<16384>>,
        /// The signature over the digest (ECDSA DER, or RSA PKCS#1 v1.5).
        signature: B64<512>,
    },
}

/// `POST /v1/auth/finish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    /// From begin.
    pub challenge_id: String,
    /// What the user presented.
    pub evidence: Vec<EvidenceItem>,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum FinishResponse {
    /// Authenticated.
    Allow {
        /// The signed ticket (see [`crate::ticket`]).
        ticket: String,
        /// The rule that decided.
        rule: String,
        /// The factor kinds that satisfied it.
        factors: Vec<String>,
    },
    /// Not authenticated.
    Deny {
        /// Why, in English.
        reason: String,
        /// Why, in Japanese.
        reason_ja: String,
        /// Seconds to wait before the next attempt is accepted (R-RATE-1).
        #[serde(default)]
        retry_after: u32,
    },
}

/// `POST /v1/auth/account`: may this user use this workstation now (PAM
/// `acct_mgmt`)? Nothing is proven here; it only refuses early what a
/// login would refuse anyway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRequest {
    /// The user.
    pub user: String,
    /// What for.
    pub purpose: Purpose,
}

/// The answer to account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountResponse {
    /// Whether the user may go on to authenticate here.
    pub allowed: bool,
    /// Why not, in English.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why not, in Japanese.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_ja: Option<String>,
}

/// `POST /v1/records/register`: a record entered by proxy, to stay pending
/// until its confirmer decides (R-REC-1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRecordRequest {
    /// The inputter's ticket from this workstation (login, unlock or
    /// step-up, unexpired): the inputter is authenticated (R-AUTH-5).
    pub inputter_ticket: String,
    /// The record's digest.
    pub digest: crate::records::Digest,
    /// What it is, for the confirmer.
    pub summary: crate::records::Summary,
    /// Who is to confirm it.
    pub confirmer: String,
}

/// `POST /v1/records/pending`: the records waiting for `confirmer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingRecordsRequest {
    /// The confirmer.
    pub confirmer: String,
}

/// `POST /v1/records/decide`: the confirmer's verdict, proven by a ticket
/// of a `confirm` authentication bound to this record and verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideRecordRequest {
    /// The confirmer's fresh `confirm` ticket, whose `op` names the record
    /// and the verdict.
    pub ticket: String,
}

/// `POST /v1/records/get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRecordRequest {
    /// The record.
    pub record: crate::records::RecordId,
}

/// A list of records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordList {
    /// Oldest first, at most [`crate::records::MAX_LISTED`].
    pub records: Vec<crate::records::RecordView>,
    /// More are waiting than one list holds.
    #[serde(default)]
    pub truncated: bool,
}

/// An error body (any 4xx/5xx of the server's APIs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// A stable machine-readable code.
    pub error: String,
    /// A sentence for people.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_round_trips_and_hides_secrets() {
        let items = vec![
            EvidenceItem::Card {
                certificate: B64(vec![0x30, 0x82]),
                chain: vec![],
                signature: B64(vec![1; 72]),
                pin_protected_key: true,
            },
            EvidenceItem::ServerPin {
                value: SecretString::new("493817").unwrap(),
            },
            EvidenceItem::Badge {
                uid: B64(vec![4, 1, 2, 3]),
            },
        ];
        let req = FinishRequest {
            challenge_id: "c1".into(),
            evidence: items,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert!(json.contains(r#""type":"server_pin""#), "{json}");
        let back: FinishRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, req);
        assert!(!format!("{back:?}").contains("493817"));
    }

    #[test]
    fn b64_refuses_oversized_padded_and_invalid() {
        let big = URL_SAFE_NO_PAD.encode(vec![0u8; 17]);
        let json = format!(r#"{{"type":"badge","uid":"{big}"}}"#);
        assert!(serde_json::from_str::<EvidenceItem>(&json).is_err());
        assert!(
            serde_json::from_str::<EvidenceItem>(r#"{"type":"badge","uid":"AQID=="}"#).is_err()
        );
        assert!(serde_json::from_str::<EvidenceItem>(r#"{"type":"badge","uid":"!!"}"#).is_err());
        assert!(serde_json::from_str::<EvidenceItem>(r#"{"type":"badge","uid":"AQID"}"#).is_ok());
        assert!(
            serde_json::from_str::<EvidenceItem>(r#"{"type":"badge","uid":"AQID","x":1}"#).is_err()
        );
        assert!(serde_json::from_str::<EvidenceItem>(r#"{"type":"usb_token"}"#).is_err());
    }
}
