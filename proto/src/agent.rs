//! Messages on the agent socket.
//!
//! A client (the PAM module, a clinical app) sends [`Request`]s; the agent
//! answers with [`Reply`]s. One request is outstanding at a time. An
//! `authenticate` request starts a conversation: the agent may send `info`
//! and `prompt` replies, each `prompt` is answered by an `answer` request
//! (or `cancel`), and the conversation ends with `auth_result` or `error`.
//! Each reply carries the id of the request it answers.

use std::fmt;

use clinauth_policy::Purpose;
use serde::{Deserialize, Serialize};

use crate::frame::FrameError;
use crate::records::{Action, Digest, RecordId, RecordView, Summary, Verdict};
use crate::secret::SecretString;
use crate::text::{Label, Text, Ticket, UserName};
use crate::workstation::B64;

/// Client → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Authenticate `user` for `purpose`; starts a conversation.
    Authenticate {
        /// Who is to be authenticated.
        user: UserName,
        /// What for.
        purpose: Purpose,
        /// The PAM service name (`login`, `gdm-password`, `sudo`, …) or the
        /// app's name.
        service: Label,
        /// The PAM tty, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tty: Option<Label>,
        /// The PAM remote host, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rhost: Option<Label>,
    },
    /// The answer to the prompt `prompt_id`. `Debug` redacts `value`.
    Answer {
        /// The prompt answered.
        prompt_id: u32,
        /// What the user typed (empty for an acknowledgement).
        value: SecretString,
    },
    /// Abandon the conversation in progress.
    Cancel {},
    /// Ask for the agent's status.
    Status {},
    /// May `user` use this workstation now (PAM `acct_mgmt`)? Answered by
    /// [`Reply::AccountResult`].
    Account {
        /// The user.
        user: UserName,
        /// The PAM service name.
        service: Label,
    },
    /// A PAM session opened for `user` (PAM `open_session`): the agent binds
    /// the card of the user's last authentication to it, so that removing
    /// the card locks it (R-SESS-2). Answered by [`Reply::SessionOpened`].
    OpenSession {
        /// The session's user.
        user: UserName,
        /// The PAM service name.
        service: Label,
        /// The logind session ID (`XDG_SESSION_ID`), when PAM knows it; else
        /// the agent asks logind for the session of the caller's process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<Label>,
        /// The PAM tty, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tty: Option<Label>,
    },
    /// The PAM session closed (PAM `close_session`): the agent forgets the
    /// binding. Answered by [`Reply::SessionClosed`].
    CloseSession {
        /// The session's user.
        user: UserName,
        /// The PAM service name.
        service: Label,
        /// As in [`Request::OpenSession`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<Label>,
    },
    /// A clinical app's step-up: a fresh two-factor authentication of the
    /// user for `action`, decided by the policy's `step_up` rules. The PIN
    /// is asked through pinentry, never through the app; the app gets
    /// `info` replies, then [`Reply::AuthResult`] with the ticket.
    StepUp {
        /// The user; absent: the caller's own user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<UserName>,
        /// The app's action, stated in the ticket.
        action: Action,
        /// The oldest a factor may be, and the longest the ticket lives, in
        /// seconds (1 to 86,400).
        max_age: u32,
    },
    /// Registers a record the user entered on behalf of `confirmer`
    /// (proxy input, R-REC-1). The user must be authenticated on this
    /// workstation (a login or step-up whose ticket is still valid), else
    /// the agent first steps them up through pinentry. Answered by
    /// [`Reply::Record`].
    RegisterRecord {
        /// The inputter; absent: the caller's own user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<UserName>,
        /// The record's digest, computed by the app.
        digest: Digest,
        /// What it is, for the confirmer.
        summary: Summary,
        /// Who is to confirm it.
        confirmer: UserName,
    },
    /// The records waiting for the user to confirm. Answered by
    /// [`Reply::Records`].
    PendingRecords {
        /// The confirmer; absent: the caller's own user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<UserName>,
    },
    /// A record in any state, with its confirmation once decided, for its
    /// inputter or confirmer. Answered by [`Reply::Record`].
    GetRecord {
        /// The record.
        record: RecordId,
    },
    /// The confirmer confirms or rejects a record after a fresh two-factor
    /// authentication under the `confirm` rules (PIN through pinentry). Ends
    /// with [`Reply::RecordResult`].
    DecideRecord {
        /// The confirmer; absent: the caller's own user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<UserName>,
        /// The record.
        record: RecordId,
        /// Confirm or reject.
        verdict: Verdict,
    },
    /// Signs a document digest with the card's signature key (PIV 9C, the
    /// PIN through pinentry every time), after the `sign` rules (and the
    /// HPKI qualification they require) allow it. Ends with
    /// [`Reply::SignResult`].
    Sign {
        /// The signer; absent: the caller's own user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<UserName>,
        /// The digest to sign.
        digest: Digest,
    },
    /// Events from now on: cards inserted and removed, sessions locked and
    /// unlocked, users switched. Answered by [`Reply::Subscribed`], then an
    /// [`Reply::Event`] per event until the caller hangs up.
    Subscribe {},
}

/// Agent → client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// Ask the user something; answer with [`Request::Answer`].
    Prompt {
        /// Identifies this prompt in the answer.
        prompt_id: u32,
        /// Whether the answer is echoed.
        style: PromptStyle,
        /// What is being asked, so a client can pick its own wording or UI.
        kind: PromptKind,
        /// The prompt text.
        text: Text,
        /// The prompt text in Japanese.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text_ja: Option<Text>,
    },
    /// Show the user a message; no answer expected.
    Info {
        /// The message.
        text: Text,
        /// The message in Japanese.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text_ja: Option<Text>,
    },
    /// The end of an authentication conversation.
    AuthResult {
        /// Allowed or denied.
        outcome: Outcome,
        /// Who was authenticated (or refused).
        user: UserName,
        /// For what.
        purpose: Purpose,
        /// The policy rule that allowed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rule: Option<Label>,
        /// The factors that were verified.
        #[serde(default)]
        factors: Vec<Label>,
        /// Why it was denied (what is missing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Text>,
        /// The server-signed ticket, when allowed. `Debug` shows its length
        /// only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<Ticket>,
    },
    /// The answer to [`Request::Status`].
    StatusResult {
        /// The agent's version string.
        agent_version: Label,
        /// Whether the auth server answered recently.
        server_reachable: bool,
        /// The user of the desktop session, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_user: Option<UserName>,
        /// Whether a card is in the reader.
        card_present: bool,
    },
    /// The answer to [`Request::Account`].
    AccountResult {
        /// Allowed or denied.
        outcome: Outcome,
        /// Why it was denied.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Text>,
    },
    /// The answer to [`Request::OpenSession`].
    SessionOpened {
        /// The logind session the agent bound.
        session_id: Label,
        /// Whether a card is bound to it (removing that card locks the
        /// session).
        card_bound: bool,
    },
    /// The answer to [`Request::CloseSession`].
    SessionClosed {},
    /// A record (the answer to [`Request::RegisterRecord`] and
    /// [`Request::GetRecord`]).
    Record {
        /// The record.
        record: Box<RecordView>,
    },
    /// The answer to [`Request::PendingRecords`], oldest first.
    Records {
        /// The records.
        records: Vec<RecordView>,
        /// More are waiting than one answer holds.
        #[serde(default)]
        truncated: bool,
    },
    /// The end of a [`Request::DecideRecord`] conversation.
    RecordResult {
        /// Decided, or refused.
        outcome: Outcome,
        /// The record as decided, with its signed confirmation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<Box<RecordView>>,
        /// Why it was refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Text>,
    },
    /// The end of a [`Request::Sign`] conversation.
    SignResult {
        /// Signed, or refused.
        outcome: Outcome,
        /// The signature over the digest: ECDSA (DER) or RSA PKCS#1 v1.5,
        /// base64url.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<B64<512>>,
        /// The signature certificate (DER, base64url).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certificate: Option<B64<16384>>,
        /// The server's ticket for the signing authentication (`op` names
        /// the digest).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<Ticket>,
        /// Why it was refused (a missing HPKI qualification, say).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<Text>,
    },
    /// The answer to [`Request::Subscribe`].
    Subscribed {},
    /// Something happened at this workstation.
    Event {
        /// What.
        event: AgentEvent,
    },
    /// The request failed. See [`ErrorCode::closes_connection`].
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// A human-readable explanation, never containing a secret.
        message: Text,
    },
}

/// An event for subscribers ([`Request::Subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEvent {
    /// What happened.
    pub kind: EventKind,
    /// When, milliseconds since the epoch.
    pub at_ms: i64,
    /// The reader, for card events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reader: Option<Label>,
    /// The user concerned: the session's user, or the new user after a
    /// switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserName>,
    /// The logind session, for session events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Label>,
}

/// The kinds of [`AgentEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A card or badge was inserted or tapped.
    CardInserted,
    /// A card left its reader.
    CardRemoved,
    /// A session was locked (tap-out, idle, re-tap).
    SessionLocked,
    /// A session was unlocked.
    SessionUnlocked,
    /// Another user's card on a locked session started a user switch.
    UserSwitched,
    /// Events were dropped because the subscriber read too slowly.
    Lagged,
}

/// Whether a prompt's answer is echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptStyle {
    /// Not echoed (PAM_PROMPT_ECHO_OFF).
    Secret,
    /// Echoed (PAM_PROMPT_ECHO_ON).
    Visible,
}

/// What a prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptKind {
    /// A PIN checked by the server.
    Pin,
    /// The smartcard's PIN, checked by the card.
    CardPin,
    /// A password checked by the server.
    Password,
    /// A TOTP code.
    Totp,
    /// Insert or tap a card.
    InsertCard,
    /// Touch the security key.
    TouchKey,
    /// Place a finger on the reader.
    PlaceFinger,
    /// Anything else; the text says what.
    Other,
}

/// The result of an authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Authenticated.
    Allow,
    /// Refused.
    Deny,
}

/// The kind of an `error` reply.
///
/// After `frame_too_large`, `malformed` and `unsupported_version` the agent
/// closes the connection: the stream can no longer be trusted to be in
/// step. After the others the connection stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A frame was longer than [`MAX_FRAME_LEN`](crate::frame::MAX_FRAME_LEN).
    FrameTooLarge,
    /// A frame was not a valid message.
    Malformed,
    /// The envelope's version is not supported.
    UnsupportedVersion,
    /// A valid message at the wrong moment (an answer with no prompt open).
    UnexpectedMessage,
    /// The caller's peer credentials do not allow this request.
    Unauthorized,
    /// The user is not known.
    UnknownUser,
    /// The user or a device did not respond in time.
    Timeout,
    /// The auth server could not be reached and offline use is not allowed.
    ServerUnreachable,
    /// A fault in the agent.
    Internal,
}

impl ErrorCode {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnexpectedMessage => "unexpected_message",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownUser => "unknown_user",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ServerUnreachable => "server_unreachable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether the agent closes the connection after sending this error.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::FrameTooLarge | ErrorCode::Malformed | ErrorCode::UnsupportedVersion
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&FrameError> for ErrorCode {
    fn from(err: &FrameError) -> Self {
        match err {
            FrameError::TooLarge => ErrorCode::FrameTooLarge,
            FrameError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            FrameError::InvalidUtf8
            | FrameError::Empty
            | FrameError::Truncated
            | FrameError::Malformed(_) => ErrorCode::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use crate::frame::encode_frame;
    use crate::secret::SecretString;

    fn round_trip<B>(body: B) -> String
    where
        B: Serialize + serde::de::DeserializeOwned + PartialEq + fmt::Debug + Clone,
    {
        let env = Envelope::new(42, body);
        let bytes = encode_frame(&env).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap().to_owned();
        let json = text.strip_suffix('\n').unwrap();
        let back = Envelope::<B>::decode_str(json).unwrap();
        assert_eq!(back, env);
        json.to_owned()
    }

    fn user(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    fn label(s: &str) -> Label {
        Label::new(s).unwrap()
    }

    fn text(s: &str) -> Text {
        Text::new(s).unwrap()
    }

    pub(crate) fn all_requests() -> Vec<Request> {
        vec![
            Request::Authenticate {
                user: user("yamada"),
                purpose: Purpose::Login,
                service: label("gdm-password"),
                tty: Some(label(":0")),
                rhost: None,
            },
            Request::Authenticate {
                user: user("suzuki"),
                purpose: Purpose::BreakGlass,
                service: label("sudo"),
                tty: Some(label("/dev/pts/3")),
                rhost: Some(label("ward3-ws12.example.jp")),
            },
            Request::Answer {
                prompt_id: 1,
                value: SecretString::new("493817").unwrap(),
            },
            Request::Answer {
                prompt_id: u32::MAX,
                value: SecretString::new("").unwrap(),
            },
            Request::Cancel {},
            Request::Status {},
            Request::Account {
                user: user("yamada"),
                service: label("gdm-password"),
            },
            Request::OpenSession {
                user: user("yamada"),
                service: label("gdm-password"),
                session_id: Some(label("c2")),
                tty: None,
            },
            Request::CloseSession {
                user: user("yamada"),
                service: label("login"),
                session_id: None,
            },
            Request::StepUp {
                user: None,
                action: Action::new("order.opioid").unwrap(),
                max_age: 120,
            },
            Request::RegisterRecord {
                user: Some(user("clerk.ito")),
                digest: Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
                summary: Summary::new("処方 ロキソプロフェン").unwrap(),
                confirmer: user("dr.suzuki"),
            },
            Request::PendingRecords { user: None },
            Request::GetRecord {
                record: RecordId::new(&"0c".repeat(16)).unwrap(),
            },
            Request::DecideRecord {
                user: None,
                record: RecordId::new(&"0c".repeat(16)).unwrap(),
                verdict: Verdict::Confirm,
            },
            Request::Sign {
                user: None,
                digest: Digest::parse(&format!("sha256:{}", "cd".repeat(32))).unwrap(),
            },
            Request::Subscribe {},
        ]
    }

    fn record() -> RecordView {
        RecordView {
            id: RecordId::new(&"0c".repeat(16)).unwrap(),
            digest: Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
            summary: Summary::new("Order").unwrap(),
            inputter: "clerk.ito".into(),
            confirmer: "dr.suzuki".into(),
            entered_at_workstation: "ward3-ws01".into(),
            entered_at: 1_800_000_000,
            state: crate::records::RecordState::Pending,
            decided_at: None,
            confirmation: None,
        }
    }

    pub(crate) fn all_replies() -> Vec<Reply> {
        vec![
            Reply::Prompt {
                prompt_id: 1,
                style: PromptStyle::Secret,
                kind: PromptKind::CardPin,
                text: text("Card PIN: "),
                text_ja: Some(text("カードの暗証番号: ")),
            },
            Reply::Prompt {
                prompt_id: 2,
                style: PromptStyle::Visible,
                kind: PromptKind::Totp,
                text: text("Code: "),
                text_ja: None,
            },
            Reply::Info {
                text: text("Touch your security key"),
                text_ja: Some(text("セキュリティキーに触れてください")),
            },
            Reply::AuthResult {
                outcome: Outcome::Allow,
                user: user("yamada"),
                purpose: Purpose::Login,
                rule: Some(label("ward-card-pin")),
                factors: vec![label("smartcard"), label("card_pin")],
                reason: None,
                ticket: Some(Ticket::new("eyJ0eXAiOiJ0aWNrZXQifQ.sig").unwrap()),
            },
            Reply::AuthResult {
                outcome: Outcome::Deny,
                user: user("yamada"),
                purpose: Purpose::Sign,
                rule: None,
                factors: vec![],
                reason: Some(text("an HPKI signature key is required")),
                ticket: None,
            },
            Reply::StatusResult {
                agent_version: label("0.1.0"),
                server_reachable: true,
                session_user: Some(user("yamada")),
                card_present: false,
            },
            Reply::StatusResult {
                agent_version: label("0.1.0"),
                server_reachable: false,
                session_user: None,
                card_present: true,
            },
            Reply::AccountResult {
                outcome: Outcome::Deny,
                reason: Some(text("the account is suspended")),
            },
            Reply::SessionOpened {
                session_id: label("c2"),
                card_bound: true,
            },
            Reply::SessionClosed {},
            Reply::Record {
                record: Box::new(record()),
            },
            Reply::Records {
                records: vec![record()],
                truncated: false,
            },
            Reply::RecordResult {
                outcome: Outcome::Deny,
                record: None,
                reason: Some(text("the inputter cannot confirm their own record")),
            },
            Reply::SignResult {
                outcome: Outcome::Allow,
                signature: Some(B64(vec![0x30, 0x44])),
                certificate: Some(B64(vec![0x30, 0x82])),
                ticket: Some(Ticket::new("a.b.c").unwrap()),
                reason: None,
            },
            Reply::Subscribed {},
            Reply::Event {
                event: AgentEvent {
                    kind: EventKind::CardRemoved,
                    at_ms: 1_800_000_000_000,
                    reader: Some(label("Virtual PCD 00 00")),
                    user: Some(user("yamada")),
                    session: None,
                },
            },
            Reply::Error {
                code: ErrorCode::UnknownUser,
                message: text("no such user"),
            },
        ]
    }

    #[test]
    fn every_request_round_trips() {
        for req in all_requests() {
            round_trip(req);
        }
    }

    #[test]
    fn every_reply_round_trips() {
        for reply in all_replies() {
            round_trip(reply);
        }
    }

    #[test]
    fn every_error_code_round_trips() {
        let codes = [
            ErrorCode::FrameTooLarge,
            ErrorCode::Malformed,
            ErrorCode::UnsupportedVersion,
            ErrorCode::UnexpectedMessage,
            ErrorCode::Unauthorized,
            ErrorCode::UnknownUser,
            ErrorCode::Timeout,
            ErrorCode::ServerUnreachable,
            ErrorCode::Internal,
        ];
        for code in codes {
            let json = round_trip(Reply::Error {
                code,
                message: text("m"),
            });
            assert!(
                json.contains(&format!("\"code\":\"{}\"", code.as_str())),
                "{json}"
            );
        }
        let closing: Vec<_> = codes.iter().filter(|c| c.closes_connection()).collect();
        assert_eq!(
            closing,
            [
                &ErrorCode::FrameTooLarge,
                &ErrorCode::Malformed,
                &ErrorCode::UnsupportedVersion
            ]
        );
    }

    #[test]
    fn wire_format_is_as_documented() {
        let json = round_trip(Request::Authenticate {
            user: user("yamada"),
            purpose: Purpose::StepUp,
            service: label("ehr"),
            tty: None,
            rhost: None,
        });
        assert_eq!(
            json,
            r#"{"v":1,"id":42,"body":{"type":"authenticate","user":"yamada","purpose":"step_up","service":"ehr"}}"#
        );
        assert_eq!(
            round_trip(Request::Status {}),
            r#"{"v":1,"id":42,"body":{"type":"status"}}"#
        );
        assert_eq!(
            round_trip(Request::Answer {
                prompt_id: 3,
                value: SecretString::new("1234").unwrap()
            }),
            r#"{"v":1,"id":42,"body":{"type":"answer","prompt_id":3,"value":"1234"}}"#
        );
    }

    fn decode_request(json: &str) -> Result<Envelope<Request>, FrameError> {
        Envelope::<Request>::decode_str(json)
    }

    fn assert_malformed(json: &str, needle: &str) {
        match decode_request(json) {
            Err(FrameError::Malformed(m)) => assert!(m.contains(needle), "{json}: {m}"),
            other => panic!("{json}: {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_refused_in_bodies() {
        assert_malformed(
            r#"{"v":1,"id":1,"body":{"type":"status","verbose":true}}"#,
            "unknown field",
        );
        assert_malformed(
            r#"{"v":1,"id":1,"body":{"type":"cancel","why":"x"}}"#,
            "unknown field",
        );
        assert_malformed(
            r#"{"v":1,"id":1,"body":{"type":"authenticate","user":"a","purpose":"login","service":"s","uid":0}}"#,
            "unknown field",
        );
    }

    #[test]
    fn unknown_type_and_purpose_refused() {
        assert_malformed(
            r#"{"v":1,"id":1,"body":{"type":"shutdown"}}"#,
            "unknown variant",
        );
        assert_malformed(r#"{"v":1,"id":1,"body":{"status":{}}}"#, "type");
        assert_malformed(
            r#"{"v":1,"id":1,"body":{"type":"authenticate","user":"a","purpose":"root","service":"s"}}"#,
            "unknown variant",
        );
        // A reply is not a request.
        assert_malformed(
            r#"{"v":1,"id":1,"body":{"type":"info","text":"hi"}}"#,
            "unknown variant",
        );
    }

    #[test]
    fn field_limits_enforced() {
        let long_user = "u".repeat(257);
        assert_malformed(
            &format!(
                r#"{{"v":1,"id":1,"body":{{"type":"authenticate","user":"{long_user}","purpose":"login","service":"s"}}}}"#
            ),
            "longer than 256",
        );
        assert_malformed(
            r#"{"v":1,"id":1,"body":{"type":"authenticate","user":"","purpose":"login","service":"s"}}"#,
            "empty",
        );
        assert_malformed(
            r#"{"v":1,"id":1,"body":{"type":"authenticate","user":"ro\u0000ot","purpose":"login","service":"s"}}"#,
            "control character",
        );
        let long_pin = "9".repeat(1025);
        assert_malformed(
            &format!(
                r#"{{"v":1,"id":1,"body":{{"type":"answer","prompt_id":1,"value":"{long_pin}"}}}}"#
            ),
            "longer than 1024",
        );
        let long_text = "t".repeat(4097);
        let reply = format!(r#"{{"v":1,"id":1,"body":{{"type":"info","text":"{long_text}"}}}}"#);
        assert!(matches!(
            Envelope::<Reply>::decode_str(&reply),
            Err(FrameError::Malformed(_))
        ));
        assert_malformed(
            r#"{"v":1,"id":1,"body":{"type":"answer","prompt_id":-1,"value":"1"}}"#,
            "",
        );
    }

    #[test]
    fn pin_never_in_debug_or_errors() {
        let pin = "493817";
        let env = Envelope::new(
            5,
            Request::Answer {
                prompt_id: 1,
                value: SecretString::new(pin).unwrap(),
            },
        );
        for shown in [format!("{env:?}"), format!("{env:#?}")] {
            assert!(!shown.contains(pin), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
        }
        // A PIN sent with the wrong JSON type must not come back in the
        // error message (which the agent logs and sends back).
        for value in ["493817", "\"493817\" ", "[493817]", "{\"pin\":493817}"] {
            let json = format!(
                r#"{{"v":1,"id":1,"body":{{"type":"answer","prompt_id":1,"value":{value}}}}}"#
            );
            match decode_request(&json) {
                Err(err) => assert!(!err.to_string().contains(pin), "{json}: {err}"),
                Ok(env) => {
                    // Only the well-formed string case may decode.
                    assert_eq!(value, "\"493817\" ");
                    assert!(!format!("{env:?}").contains(pin));
                }
            }
        }
    }

    #[test]
    fn ticket_not_in_debug() {
        let reply = Reply::AuthResult {
            outcome: Outcome::Allow,
            user: user("a"),
            purpose: Purpose::Login,
            rule: None,
            factors: vec![],
            reason: None,
            ticket: Some(Ticket::new("SIGNED-TICKET-BODY").unwrap()),
        };
        assert!(!format!("{reply:?}").contains("SIGNED-TICKET-BODY"));
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let a = decode_request(
            r#"{"v":1,"id":1,"body":{"type":"authenticate","user":"a","purpose":"unlock","service":"s","tty":null}}"#,
        )
        .unwrap();
        assert_eq!(
            a.body,
            Request::Authenticate {
                user: user("a"),
                purpose: Purpose::Unlock,
                service: label("s"),
                tty: None,
                rhost: None
            }
        );
    }

    #[test]
    fn error_code_from_frame_error() {
        assert_eq!(
            ErrorCode::from(&FrameError::TooLarge),
            ErrorCode::FrameTooLarge
        );
        assert_eq!(
            ErrorCode::from(&FrameError::UnsupportedVersion(3)),
            ErrorCode::UnsupportedVersion
        );
        assert_eq!(
            ErrorCode::from(&FrameError::InvalidUtf8),
            ErrorCode::Malformed
        );
        assert_eq!(ErrorCode::from(&FrameError::Empty), ErrorCode::Malformed);
        assert_eq!(
            ErrorCode::from(&FrameError::Malformed("x".into())),
            ErrorCode::Malformed
        );
    }
}
