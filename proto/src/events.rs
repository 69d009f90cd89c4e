//! The agent's audit events as uploaded to the server (R-LOG-1, R-OFF-1).
//!
//! `POST /v1/events` (workstation API, mutual TLS): an [`EventBatch`] of
//! events from the agent's durable spool, in sequence order; the server
//! stores each exactly once in its audit log and answers [`EventAck`] with
//! the highest sequence number it holds for the stream. The agent then
//! drops what is acknowledged.
//!
//! Sequence numbers increase by one per event within a *stream*: a random
//! ID the agent draws when it creates its spool. A reinstalled agent (its
//! state directory wiped) starts a new stream, so its first events are
//! never mistaken for replays of the old stream's. Within a stream, an
//! event with a sequence number at or below the server's highest is a
//! replay: ignored and acknowledged. A gap (events lost on the workstation)
//! is accepted and recorded in the audit log as such.

use clinauth_policy::Purpose;
use serde::{Deserialize, Serialize};

/// The largest request body of `POST /v1/events`.
pub const MAX_EVENTS_BODY_BYTES: usize = 256 * 1024;
/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 100;
/// The longest `kind`.
pub const MAX_KIND_LEN: usize = 64;
/// The longest `outcome`.
pub const MAX_OUTCOME_LEN: usize = 32;
/// The longest `user`, `service` or `rule`.
pub const MAX_FIELD_LEN: usize = 256;
/// The longest `peer`.
pub const MAX_PEER_LEN: usize = 128;
/// The longest `detail`.
pub const MAX_DETAIL_LEN: usize = 1024;
/// Most factors.
pub const MAX_FACTORS: usize = 8;
/// The length of a stream ID (hex).
pub const STREAM_LEN: usize = 32;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEventRecord {
    /// Position in the stream, from 1, increasing by one.
    pub seq: u64,
    /// When, on the workstation's clock, ms since the epoch.
    pub at_ms: i64,
    /// What happened (`authenticate`, `bad_request`, `session_open`, …).
    pub kind: String,
    /// `allow`, `deny`, `error`, `refused`, `done`.
    pub outcome: String,
    /// The user concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The purpose, for authentications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    /// The local caller (`uid=… pid=…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The PAM service or app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A sentence, never a secret.
    pub detail: String,
    /// Decided by the agent offline with a bundle (R-OFF-1).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
    /// The rule that decided, for offline decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The factors verified, for offline decisions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub factors: Vec<String>,
    /// Flagged for an officer's review (break-glass offline).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub review: bool,
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

fn bounded(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
}

impl AgentEventRecord {
    /// Cuts every field to its limit (the agent does this before spooling,
    /// so that the server never refuses a spooled event for its size).
    pub fn clamp(&mut self) {
        truncate(&mut self.kind, MAX_KIND_LEN);
        truncate(&mut self.outcome, MAX_OUTCOME_LEN);
        for (field, max) in [
            (&mut self.user, MAX_FIELD_LEN),
            (&mut self.service, MAX_FIELD_LEN),
            (&mut self.rule, MAX_FIELD_LEN),
            (&mut self.peer, MAX_PEER_LEN),
        ] {
            if let Some(s) = field.as_mut() {
                truncate(s, max);
            }
        }
        truncate(&mut self.detail, MAX_DETAIL_LEN);
        self.factors.truncate(MAX_FACTORS);
        for f in &mut self.factors {
            truncate(f, 32);
        }
        // Control characters would only garble a log line.
        for s in [&mut self.kind, &mut self.outcome, &mut self.detail]
            .into_iter()
            .chain(self.user.as_mut())
            .chain(self.service.as_mut())
            .chain(self.rule.as_mut())
            .chain(self.peer.as_mut())
        {
            if s.chars().any(char::is_control) {
                *s = s
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
            }
        }
        if self.kind.is_empty() {
            self.kind = "event".into();
        }
        if self.outcome.is_empty() {
            self.outcome = "done".into();
        }
    }

    /// Checks the limits.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.seq == 0 || self.seq > i64::MAX as u64 {
            return Err("seq must be between 1 and 2^63-1");
        }
        if !bounded(&self.kind, MAX_KIND_LEN) || !bounded(&self.outcome, MAX_OUTCOME_LEN) {
            return Err("kind and outcome: 1 to 64 and 1 to 32 bytes, no control characters");
        }
        let ok = |v: &Option<String>, max| v.as_deref().is_none_or(|s| bounded(s, max));
        if !ok(&self.user, MAX_FIELD_LEN)
            || !ok(&self.service, MAX_FIELD_LEN)
            || !ok(&self.rule, MAX_FIELD_LEN)
            || !ok(&self.peer, MAX_PEER_LEN)
        {
            return Err("user, service, rule or peer is empty, too long or has control characters");
        }
        if self.detail.len() > MAX_DETAIL_LEN || self.detail.chars().any(char::is_control) {
            return Err("detail is too long or has control characters");
        }
        if self.factors.len() > MAX_FACTORS || !self.factors.iter().all(|f| bounded(f, 32)) {
            return Err("factors");
        }
        Ok(())
    }
}

/// `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// The spool's stream ID: 32 lowercase hex digits.
    pub stream: String,
    /// 1 to [`MAX_BATCH_EVENTS`] events, in strictly increasing `seq`.
    pub events: Vec<AgentEventRecord>,
}

impl EventBatch {
    /// Checks the stream ID, the count, the order and every event.
    pub fn check(&self) -> Result<(), String> {
        if !is_stream_id(&self.stream) {
            return Err(format!("stream must be {STREAM_LEN} lowercase hex digits"));
        }
        if self.events.is_empty() || self.events.len() > MAX_BATCH_EVENTS {
            return Err(format!("1 to {MAX_BATCH_EVENTS} events per batch"));
        }
        let mut last = 0u64;
        for e in &self.events {
            if e.seq <= last {
                return Err("events must be in strictly increasing seq order".into());
            }
            last = e.seq;
            e.check().map_err(|m| format!("event {}: {m}", e.seq))?;
        }
        Ok(())
    }
}

/// Whether `s` is a stream ID.
pub fn is_stream_id(s: &str) -> bool {
    s.len() == STREAM_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The answer to `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventAck {
    /// The stream.
    pub stream: String,
    /// The highest sequence number the server holds for the stream; every
    /// event up to it may be dropped by the agent.
    pub stored_up_to: u64,
    /// How many events of this batch were new (the rest were replays).
    pub stored: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> AgentEventRecord {
        AgentEventRecord {
            seq,
            at_ms: 1,
            kind: "authenticate".into(),
            outcome: "allow".into(),
            user: Some("nurse.tanaka".into()),
            purpose: Some(Purpose::Login),
            peer: None,
            service: Some("login".into()),
            detail: "rule ward-login".into(),
            offline: true,
            rule: Some("ward-login".into()),
            factors: vec!["smartcard".into(), "card_pin".into()],
            review: false,
        }
    }

    #[test]
    fn batches_checked() {
        let stream = "0123456789abcdef0123456789abcdef".to_owned();
        let ok = EventBatch {
            stream: stream.clone(),
            events: vec![event(1), event(2), event(5)],
        };
        ok.check().unwrap();
        let json = serde_json::to_string(&ok).unwrap();
        assert_eq!(serde_json::from_str::<EventBatch>(&json).unwrap(), ok);
        let bad = [
            EventBatch {
                stream: "XYZ".into(),
                events: vec![event(1)],
            },
            EventBatch {
                stream: stream.clone(),
                events: vec![],
            },
            EventBatch {
                stream: stream.clone(),
                events: vec![event(2), event(2)],
            },
            EventBatch {
                stream: stream.clone(),
                events: vec![event(0)],
            },
            EventBatch {
                stream: stream.clone(),
                events: (1..=101).map(event).collect(),
            },
        ];
        for b in bad {
            assert!(b.check().is_err(), "{b:?}");
        }
    }

    #[test]
    fn clamp_makes_any_event_acceptable() {
        let mut e = event(1);
        e.kind = String::new();
        e.detail = "é".repeat(MAX_DETAIL_LEN);
        e.user = Some("u\u{1}".repeat(300));
        e.factors = vec!["x".into(); 20];
        assert!(e.check().is_err());
        e.clamp();
        e.check().unwrap();
        assert!(e.detail.len() <= MAX_DETAIL_LEN);
    }
}
