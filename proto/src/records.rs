//! Clinical-app operations shared by the agent socket and the workstation
//! API: records entered by proxy (代行入力) and their confirmation (R-AUTH-5,
//! R-REC-1/2), document digests to sign (R-SIG-1), and the operation a
//! step-up, confirmation or signature is bound to.
//!
//! A record entered by one person (the inputter) on behalf of another (the
//! confirmer) is registered with its digest and stays `pending` until the
//! confirmer authenticates and confirms or rejects it. Nothing confirms a
//! record by itself: no timer, setting or policy.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most records one listing returns (so that a listing fits one agent
/// socket frame: 50 × at most ~1 KiB).
pub const MAX_LISTED: usize = 50;
/// The longest summary of a record, in bytes.
pub const MAX_SUMMARY_LEN: usize = 512;
/// The longest action name of a step-up, in bytes.
pub const MAX_ACTION_LEN: usize = 64;
/// The longest maximum age of a step-up, in seconds (a day).
pub const MAX_STEP_UP_AGE: u32 = 86_400;

/// Why a field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FieldError(pub &'static str);

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestAlg {
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl DigestAlg {
    /// The name in `alg:hex`.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Sha384 => "sha384",
            DigestAlg::Sha512 => "sha512",
        }
    }

    /// The digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            DigestAlg::Sha256 => 32,
            DigestAlg::Sha384 => 48,
            DigestAlg::Sha512 => 64,
        }
    }
}

/// A digest as `alg:lowercase-hex`, e.g. `sha256:9f86d0…`: a record's or a
/// document's, computed by the app. Only well-formed digests of the listed
/// algorithms exist.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    alg: DigestAlg,
    bytes: Vec<u8>,
}

impl Digest {
    /// A digest of `alg` with these bytes.
    pub fn new(alg: DigestAlg, bytes: &[u8]) -> Result<Digest, FieldError> {
        if bytes.len() != alg.digest_len() {
            return Err(FieldError(
                "the digest's length does not match its algorithm",
            ));
        }
        Ok(Digest {
            alg,
            bytes: bytes.to_vec(),
        })
    }

    /// Parses `alg:hex`.
    pub fn parse(text: &str) -> Result<Digest, FieldError> {
        let bad = FieldError("a digest is sha256:, sha384: or sha512: and lowercase hex");
        if text.len() > 7 + 128 {
            return Err(bad);
        }
        let (alg, hex) = text.split_once(':').ok_or(bad.clone())?;
        let alg = match alg {
            "sha256" => DigestAlg::Sha256,
            "sha384" => DigestAlg::Sha384,
            "sha512" => DigestAlg::Sha512,
            _ => return Err(bad),
        };
        if hex.len() != alg.digest_len() * 2 {
            return Err(FieldError(
                "the digest's length does not match its algorithm",
            ));
        }
        let mut bytes = Vec::with_capacity(alg.digest_len());
        let digits = hex.as_bytes();
        for pair in digits.chunks(2) {
            let (Some(&hi), Some(&lo)) = (pair.first(), pair.get(1)) else {
                return Err(bad);
            };
            let (Some(hi), Some(lo)) = (nibble(hi), nibble(lo)) else {
                return Err(bad);
            };
            bytes.push(hi << 4 | lo);
        }
        Ok(Digest { alg, bytes })
    }

    /// The algorithm.
    pub fn alg(&self) -> DigestAlg {
        self.alg
    }

    /// The digest bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alg.as_str())?;
        f.write_str(":")?;
        f.write_str(&hex::encode(&self.bytes))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(|e| serde::de::Error::custom(e.0))
    }
}

/// A record's identifier, issued by the server: 32 lowercase hex digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(String);

impl RecordId {
    /// Checks `text`.
    pub fn new(text: &str) -> Result<RecordId, FieldError> {
        if text.len() == 32 && text.bytes().all(|b| nibble(b).is_some()) {
            Ok(RecordId(text.to_owned()))
        } else {
            Err(FieldError("a record ID is 32 lowercase hex digits"))
        }
    }

    /// The ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", self.0)
    }
}

impl Serialize for RecordId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RecordId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RecordId::new(&text).map_err(|e| serde::de::Error::custom(e.0))
    }
}

/// A short description of a record for its confirmer ("Order: morphine
/// 10 mg, patient 0012345"): 1 to [`MAX_SUMMARY_LEN`] bytes, no control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary(String);

impl Summary {
    /// Checks `text`.
    pub fn new(text: &str) -> Result<Summary, FieldError> {
        if text.is_empty() || text.len() > MAX_SUMMARY_LEN {
            return Err(FieldError("a summary is 1 to 512 bytes"));
        }
        if text.chars().any(char::is_control) {
            return Err(FieldError("a summary has no control characters"));
        }
        Ok(Summary(text.to_owned()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for Summary {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Summary {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Summary::new(&text).map_err(|e| serde::de::Error::custom(e.0))
    }
}

/// The name of the action a step-up is for (`order.controlled_drug`):
/// 1 to [`MAX_ACTION_LEN`] bytes of ASCII letters, digits, `.`, `_`, `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action(String);

impl Action {
    /// Checks `text`.
    pub fn new(text: &str) -> Result<Action, FieldError> {
        if text.is_empty()
            || text.len() > MAX_ACTION_LEN
            || !text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(FieldError(
                "an action is 1 to 64 ASCII letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(Action(text.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Action::new(&text).map_err(|e| serde::de::Error::custom(e.0))
    }
}

/// What the confirmer decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The record is right as entered.
    Confirm,
    /// It is not; it stays unconfirmed for good.
    Reject,
}

impl Verdict {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Confirm => "confirm",
            Verdict::Reject => "reject",
        }
    }
}

/// Where a record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// Waiting for its confirmer, for as long as it takes (R-REC-1).
    Pending,
    /// Confirmed by its confirmer.
    Confirmed,
    /// Rejected by its confirmer.
    Rejected,
}

impl RecordState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Pending => "pending",
            RecordState::Confirmed => "confirmed",
            RecordState::Rejected => "rejected",
        }
    }

    /// Parses the stored name.
    pub fn parse(text: &str) -> Option<RecordState> {
        match text {
            "pending" => Some(RecordState::Pending),
            "confirmed" => Some(RecordState::Confirmed),
            "rejected" => Some(RecordState::Rejected),
            _ => None,
        }
    }
}

/// A record as the server keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordView {
    /// Its ID.
    pub id: RecordId,
    /// The record's digest, computed by the app.
    pub digest: Digest,
    /// What it is, for the confirmer.
    pub summary: Summary,
    /// Who entered it.
    pub inputter: String,
    /// Who is to confirm it.
    pub confirmer: String,
    /// The workstation it was entered at.
    pub entered_at_workstation: String,
    /// When it was entered, seconds since the epoch.
    pub entered_at: i64,
    /// Where it stands.
    pub state: RecordState,
    /// When the confirmer decided, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
    /// The server-signed confirmation (or rejection), once decided
    /// (see [`crate::confirmation`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<String>,
}

/// What a step-up, confirmation or signature is for, bound to its
/// challenge at `begin` and carried in the ticket's `op` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    /// A fresh authentication before an app's sensitive action.
    StepUp {
        /// The action.
        action: Action,
        /// The oldest a factor may be, in seconds; the ticket lives no
        /// longer either.
        max_age: u32,
    },
    /// The confirmer's decision on a record entered by proxy.
    Confirm {
        /// The record.
        record: RecordId,
        /// Confirm or reject.
        verdict: Verdict,
    },
    /// A document digest to be signed with the card's signature key.
    Sign {
        /// The digest.
        digest: Digest,
    },
}

impl Operation {
    /// The purpose this operation belongs to.
    pub fn purpose(&self) -> clinauth_policy::Purpose {
        match self {
            Operation::StepUp { .. } => clinauth_policy::Purpose::StepUp,
            Operation::Confirm { .. } => clinauth_policy::Purpose::Confirm,
            Operation::Sign { .. } => clinauth_policy::Purpose::Sign,
        }
    }

    /// Checks the values serde cannot (the step-up's age).
    pub fn check(&self) -> Result<(), FieldError> {
        match self {
            Operation::StepUp { max_age, .. } if !(1..=MAX_STEP_UP_AGE).contains(max_age) => {
                Err(FieldError("a step-up's max_age is 1 second to 1 day"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_and_print() {
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let d = Digest::parse(&format!("sha256:{hex}")).unwrap();
        assert_eq!(d.alg(), DigestAlg::Sha256);
        assert_eq!(d.to_string(), format!("sha256:{hex}"));
        assert_eq!(d.bytes().len(), 32);
        for bad in [
            "",
            "sha256:",
            "md5:9f86",
            "sha256:9F86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0",
            "sha384:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "sha256:zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "sha256:９f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad}");
        }
        let long = format!("sha512:{}", "ab".repeat(64));
        assert_eq!(Digest::parse(&long).unwrap().bytes().len(), 64);
        assert!(Digest::parse(&format!("{long}ab")).is_err());
    }

    #[test]
    fn ids_summaries_and_actions_are_bounded() {
        assert!(RecordId::new(&"a1".repeat(16)).is_ok());
        for bad in ["", "A1", &"a1".repeat(17), &"g1".repeat(16)] {
            assert!(RecordId::new(bad).is_err(), "{bad}");
        }
        assert!(Summary::new("処方: ロキソプロフェン 60mg").is_ok());
        assert!(Summary::new("").is_err());
        assert!(Summary::new("a\nb").is_err());
        assert!(Summary::new(&"x".repeat(513)).is_err());
        assert!(Action::new("order.controlled_drug").is_ok());
        assert!(Action::new("order drug").is_err());
        assert!(Action::new("").is_err());
        assert!(Action::new(&"a".repeat(65)).is_err());
    }

    #[test]
    fn operations_round_trip_and_refuse_unknown_fields() {
        let ops = [
            Operation::StepUp {
                action: Action::new("order.opioid").unwrap(),
                max_age: 300,
            },
            Operation::Confirm {
                record: RecordId::new(&"0f".repeat(16)).unwrap(),
                verdict: Verdict::Reject,
            },
            Operation::Sign {
                digest: Digest::new(DigestAlg::Sha256, &[7; 32]).unwrap(),
            },
        ];
        for op in ops {
            let json = serde_json::to_string(&op).unwrap();
            let back: Operation = serde_json::from_str(&json).unwrap();
            assert_eq!(back, op);
        }
        assert!(serde_json::from_str::<Operation>(
            r#"{"type":"step_up","action":"a","max_age":1,"x":1}"#
        )
        .is_err());
        let zero: Operation =
            serde_json::from_str(r#"{"type":"step_up","action":"a","max_age":0}"#).unwrap();
        assert!(zero.check().is_err());
        let long: Operation =
            serde_json::from_str(r#"{"type":"step_up","action":"a","max_age":86401}"#).unwrap();
        assert!(long.check().is_err());
    }
}
