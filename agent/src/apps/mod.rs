//! What clinical apps (EHR, order entry, pharmacy) ask of the agent on its
//! socket, for the user they run as (R-AUTH-5, R-REC-1/2, R-SIG-1):
//!
//! - `step_up`: a fresh two-factor authentication for the app's action,
//!   with a maximum age, ending in a server ticket the app's backend
//!   verifies with the server's public key;
//! - records entered by proxy: `register_record` (the inputter, who is
//!   authenticated on this workstation), `pending_records` and `get_record`,
//!   and `decide_record` (the confirmer confirms or rejects after a fresh
//!   two-factor authentication; the server signs the confirmation);
//! - `sign`: a document digest signed by the card's signature key after the
//!   `sign` rules, and the HPKI qualification they require, allow it;
//! - [`events`]: the subscription to card, lock and user-switch events.
//!
//! Every PIN an app request needs is asked through pinentry
//! ([`crate::conversation::Conversation::with_pinentry`]): the app sees
//! only `info` messages and the result. Each request and its outcome is
//! audited like a login.

pub mod events;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clinauth_policy::Purpose;
use clinauth_proto::agent::{ErrorCode, Outcome as WireOutcome, Reply};
use clinauth_proto::records::{
    Action, Digest, Operation, RecordId, RecordView, Summary, Verdict, MAX_LISTED,
};
use clinauth_proto::workstation::{
    DecideRecordRequest, GetRecordRequest, PendingRecordsRequest, RecordList, RegisterRecordRequest,
};
use clinauth_proto::{Text, Ticket, UserName};
use zeroize::Zeroizing;

use crate::clock;
use crate::conversation::{Conversation, Exchange, PinEntryRoute};
use crate::daemon::{allow_reply, deny_reply, Daemon};
use crate::login::{self, LoginError, Outcome};
use crate::pinentry::RunAs;
use crate::server_client::ServerError;
use crate::socket::peer::Peer;

/// A ticket is used for a record only while it has this long to live.
const TICKET_MARGIN_S: i64 = 30;
/// The step-up an inputter without a valid ticket is asked for.
const INPUTTER_STEP_UP_AGE: u32 = 300;

fn text(s: &str) -> Text {
    Text::lossy(s)
}

fn error(code: ErrorCode, message: &str) -> Reply {
    Reply::Error {
        code,
        message: text(message),
    }
}

/// Each user's latest online ticket from this workstation (login, unlock,
/// step-up), with its expiry. Tickets are bearer statements: kept in
/// zeroizing memory, never logged.
#[derive(Default)]
pub struct Tickets(Mutex<HashMap<String, (Zeroizing<String>, i64)>>);

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tickets([redacted])")
    }
}

/// The claims of a ticket this agent just received from the server over
/// mutual TLS: read, not verified (the server verifies it when it is used).
fn unverified_claims(ticket: &str) -> Option<clinauth_proto::ticket::Claims> {
    use base64::Engine;
    let payload = ticket.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

impl Tickets {
    /// Keeps `ticket` as `user`'s latest, if it is a login, unlock or
    /// step-up ticket for them.
    pub fn keep(&self, user: &str, ticket: &str) {
        let Some(claims) = unverified_claims(ticket) else {
            return;
        };
        if claims.sub != user
            || !matches!(
                claims.purpose,
                Purpose::Login | Purpose::Unlock | Purpose::StepUp
            )
        {
            return;
        }
        if let Ok(mut map) = self.0.lock() {
            // Expired tickets go: the map holds no more than the users
            // authenticated here within a ticket's lifetime.
            let now_s = clock::now_ms() / 1000;
            map.retain(|_, (_, exp)| *exp > now_s);
            map.insert(
                user.to_owned(),
                (Zeroizing::new(ticket.to_owned()), claims.exp),
            );
        }
    }

    /// `user`'s ticket, if it lives on for a while at `now_s`.
    fn valid(&self, user: &str, now_s: i64) -> Option<Zeroizing<String>> {
        let map = self.0.lock().ok()?;
        let (ticket, exp) = map.get(user)?;
        (*exp > now_s + TICKET_MARGIN_S).then(|| ticket.clone())
    }
}

/// The user an app request is for: the one named (the peer check allowed
/// it), else the caller's own.
pub fn app_user(peer: &Peer, user: Option<UserName>) -> Result<UserName, &'static str> {
    match user {
        Some(u) => Ok(u),
        None => peer
            .name
            .as_deref()
            .and_then(|n| UserName::new(n).ok())
            .ok_or("the caller has no user name"),
    }
}

/// The conversation of an app request: prompts to pinentry on the desktop
/// of the user the app runs as, infos to the app.
pub fn app_conversation(
    daemon: &Daemon,
    peer: &Peer,
    context: String,
) -> (Conversation, tokio::sync::mpsc::Receiver<Exchange>) {
    Conversation::with_pinentry(
        daemon.conversation_timeout(),
        PinEntryRoute {
            settings: Arc::new(daemon.config.pinentry.clone()),
            run_as: RunAs {
                uid: peer.uid,
                gid: peer.gid,
            },
            context,
        },
    )
}

fn refused_reason(e: &ServerError) -> String {
    match e {
        ServerError::Refused { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn server_error(e: ServerError) -> Reply {
    let code = if e.is_unreachable() {
        ErrorCode::ServerUnreachable
    } else {
        ErrorCode::Internal
    };
    error(code, &refused_reason(&e))
}

impl Daemon {
    /// One online authentication for an app operation; audited.
    async fn app_flow(
        &self,
        peer: &Peer,
        user: &UserName,
        op: &Operation,
        kind: &'static str,
        conv: &Conversation,
    ) -> Result<Outcome, LoginError> {
        let purpose = op.purpose();
        let result = login::authenticate(
            &self.server,
            &self.devices,
            &self.config.agent.workstation,
            user,
            purpose,
            Some(op),
            conv,
        )
        .await;
        let mut ev = self.event(kind, "error", String::new());
        ev.user = Some(user.as_str().to_owned());
        ev.purpose = Some(purpose);
        ev.peer = Some(peer.describe());
        ev.service = Some("app".into());
        match &result {
            Ok(Outcome::Allow { rule, factors, .. }) => {
                ev.outcome = "allow";
                ev.detail = format!(
                    "{}: rule {rule}, factors {}",
                    describe(op),
                    factors.join("+")
                );
            }
            Ok(Outcome::Deny { reason, .. }) => {
                ev.outcome = "deny";
                ev.detail = format!("{}: {reason}", describe(op));
            }
            Err(e) => ev.detail = format!("{}: {e}", describe(op)),
        }
        self.audit.record(ev);
        result
    }

    /// `step_up`: ends with an `auth_result` carrying the ticket.
    pub async fn step_up(
        &self,
        peer: &Peer,
        user: UserName,
        action: Action,
        max_age: u32,
        conv: Conversation,
    ) -> Reply {
        let op = Operation::StepUp { action, max_age };
        let result = self.app_flow(peer, &user, &op, "step_up", &conv).await;
        if let Ok(Outcome::Allow { ticket, .. }) = &result {
            self.tickets.keep(user.as_str(), ticket);
        }
        self.auth_reply(&user, Purpose::StepUp, result)
    }

    fn auth_reply(
        &self,
        user: &UserName,
        purpose: Purpose,
        result: Result<Outcome, LoginError>,
    ) -> Reply {
        match result {
            Ok(Outcome::Allow {
                ticket,
                rule,
                factors,
                ..
            }) => allow_reply(user, purpose, ticket, rule, factors)
                .unwrap_or_else(|| error(ErrorCode::Internal, "the server's ticket is not valid")),
            Ok(Outcome::Deny { reason, reason_ja }) => {
                deny_reply(user, purpose, &format!("{reason} / {reason_ja}"))
            }
            Err(LoginError::Unreachable(e)) => server_error(e),
            Err(e) => self.login_error_reply(user, purpose, e),
        }
    }

    /// `register_record`: with the inputter's ticket, stepping them up
    /// first (through pinentry) when they have none that is still valid.
    pub async fn register_record(
        &self,
        peer: &Peer,
        user: UserName,
        digest: Digest,
        summary: Summary,
        confirmer: UserName,
        conv: Conversation,
    ) -> Reply {
        let ticket = match self.tickets.valid(user.as_str(), clock::now_ms() / 1000) {
            Some(t) => t,
            None => {
                let op = Operation::StepUp {
                    action: match Action::new("record.enter") {
                        Ok(a) => a,
                        Err(_) => return error(ErrorCode::Internal, "action name"),
                    },
                    max_age: INPUTTER_STEP_UP_AGE,
                };
                match self.app_flow(peer, &user, &op, "step_up", &conv).await {
                    Ok(Outcome::Allow { ticket, .. }) => {
                        self.tickets.keep(user.as_str(), &ticket);
                        Zeroizing::new(ticket)
                    }
                    other => return self.auth_reply(&user, Purpose::StepUp, other),
                }
            }
        };
        let request = RegisterRecordRequest {
            inputter_ticket: ticket.to_string(),
            digest,
            summary,
            confirmer: confirmer.as_str().to_owned(),
        };
        let answer: Result<RecordView, ServerError> =
            self.server.post("/v1/records/register", &request).await;
        let mut ev = self.event("record_register", "error", String::new());
        ev.user = Some(user.as_str().to_owned());
        ev.peer = Some(peer.describe());
        let reply = match answer {
            Ok(record) => {
                ev.outcome = "done";
                ev.detail = format!(
                    "record {} ({}) entered for {}",
                    record.id, record.digest, record.confirmer
                );
                Reply::Record {
                    record: Box::new(record),
                }
            }
            Err(e) => {
                ev.outcome = if matches!(e, ServerError::Refused { status, .. } if status < 500) {
                    "refused"
                } else {
                    "error"
                };
                ev.detail = refused_reason(&e);
                match e {
                    ServerError::Refused {
                        status, message, ..
                    } if status < 500 => error(ErrorCode::Unauthorized, &message),
                    other => server_error(other),
                }
            }
        };
        self.audit.record(ev);
        reply
    }

    /// `pending_records`.
    pub async fn pending_records(&self, user: UserName) -> Reply {
        let answer: Result<RecordList, ServerError> = self
            .server
            .post(
                "/v1/records/pending",
                &PendingRecordsRequest {
                    confirmer: user.as_str().to_owned(),
                },
            )
            .await;
        match answer {
            Ok(list) => {
                let truncated = list.truncated || list.records.len() > MAX_LISTED;
                let mut records = list.records;
                records.truncate(MAX_LISTED);
                Reply::Records { records, truncated }
            }
            Err(e) => server_error(e),
        }
    }

    /// `get_record`, for its inputter or confirmer (root: any).
    pub async fn get_record(&self, peer: &Peer, record: RecordId) -> Reply {
        let answer: Result<RecordView, ServerError> = self
            .server
            .post("/v1/records/get", &GetRecordRequest { record })
            .await;
        match answer {
            Ok(record) => {
                let mine = peer.name.as_deref().is_some_and(|n| {
                    n == record.inputter.as_str() || n == record.confirmer.as_str()
                });
                if peer.is_root() || mine {
                    Reply::Record {
                        record: Box::new(record),
                    }
                } else {
                    error(
                        ErrorCode::Unauthorized,
                        "only the record's inputter or confirmer may read it",
                    )
                }
            }
            Err(e) => server_error(e),
        }
    }

    /// `decide_record`: the confirmer's fresh authentication under the
    /// `confirm` rules, bound to the record and verdict, then the server's
    /// decision and signed confirmation.
    pub async fn decide_record(
        &self,
        peer: &Peer,
        user: UserName,
        record: RecordId,
        verdict: Verdict,
        mut conv: Conversation,
    ) -> Reply {
        // The person sees in the agent's own dialog what they decide.
        let shown: Result<RecordView, ServerError> = self
            .server
            .post(
                "/v1/records/get",
                &GetRecordRequest {
                    record: record.clone(),
                },
            )
            .await;
        if let Ok(view) = shown {
            let (en, ja) = match verdict {
                Verdict::Confirm => ("Confirm", "確定"),
                Verdict::Reject => ("Reject", "差し戻し"),
            };
            conv.set_context(format!(
                "{en} the record {inputter} entered for you: {summary}\n{inputter} さんが代行入力した記録の{ja}: {summary}\n{digest}",
                inputter = view.inputter,
                summary = view.summary.as_str(),
                digest = view.digest,
            ));
        }
        let op = Operation::Confirm {
            record: record.clone(),
            verdict,
        };
        let deny = |reason: String| Reply::RecordResult {
            outcome: WireOutcome::Deny,
            record: None,
            reason: Some(text(&reason)),
        };
        let ticket = match self
            .app_flow(peer, &user, &op, "record_decide", &conv)
            .await
        {
            Ok(Outcome::Allow { ticket, .. }) => Zeroizing::new(ticket),
            Ok(Outcome::Deny { reason, reason_ja }) => {
                return deny(format!("{reason} / {reason_ja}"))
            }
            // The server refused to begin: not the confirmer, their own
            // record, already decided.
            Err(LoginError::Refused(reason)) => return deny(reason),
            Err(LoginError::Unreachable(e)) => return server_error(e),
            Err(e) => {
                return match self.login_error_reply(&user, Purpose::Confirm, e) {
                    Reply::AuthResult { reason, .. } => Reply::RecordResult {
                        outcome: WireOutcome::Deny,
                        record: None,
                        reason,
                    },
                    other => other,
                }
            }
        };
        let answer: Result<RecordView, ServerError> = self
            .server
            .post(
                "/v1/records/decide",
                &DecideRecordRequest {
                    ticket: ticket.to_string(),
                },
            )
            .await;
        let mut ev = self.event("record_decide", "error", String::new());
        ev.user = Some(user.as_str().to_owned());
        ev.purpose = Some(Purpose::Confirm);
        ev.peer = Some(peer.describe());
        let reply = match answer {
            Ok(view) => {
                ev.outcome = "done";
                ev.detail = format!("record {} {}", view.id, view.state.as_str());
                Reply::RecordResult {
                    outcome: WireOutcome::Allow,
                    record: Some(Box::new(view)),
                    reason: None,
                }
            }
            Err(ServerError::Refused {
                status, message, ..
            }) if status < 500 => {
                ev.outcome = "refused";
                ev.detail = message.clone();
                deny(message)
            }
            Err(e) => {
                ev.detail = e.to_string();
                server_error(e)
            }
        };
        self.audit.record(ev);
        reply
    }

    /// `sign`: the card signs the digest with its signature key as part of
    /// a `sign` authentication; the signature is released only when the
    /// server allows it (rules, HPKI qualification).
    pub async fn sign(
        &self,
        peer: &Peer,
        user: UserName,
        digest: Digest,
        conv: Conversation,
    ) -> Reply {
        let op = Operation::Sign { digest };
        // The flow already holds the signature when the server decides; it
        // is passed on only with an allow.
        let result = self.sign_flow(peer, &user, &op, &conv).await;
        let deny = |reason: String| Reply::SignResult {
            outcome: WireOutcome::Deny,
            signature: None,
            certificate: None,
            ticket: None,
            reason: Some(text(&reason)),
        };
        match result {
            Ok((ticket, Some((signature, certificate)))) => match Ticket::new(ticket) {
                Ok(ticket) => Reply::SignResult {
                    outcome: WireOutcome::Allow,
                    signature: Some(signature),
                    certificate: Some(certificate),
                    ticket: Some(ticket),
                    reason: None,
                },
                Err(_) => error(ErrorCode::Internal, "the server's ticket is not valid"),
            },
            Ok((_, None)) => error(ErrorCode::Internal, "the card produced no signature"),
            Err(SignFailure::Denied(reason)) => deny(reason),
            Err(SignFailure::Reply(reply)) => reply,
        }
    }

    async fn sign_flow(
        &self,
        peer: &Peer,
        user: &UserName,
        op: &Operation,
        conv: &Conversation,
    ) -> Result<(String, Option<login::DocumentSigned>), SignFailure> {
        match self.app_flow(peer, user, op, "sign", conv).await {
            Ok(Outcome::Allow {
                ticket, document, ..
            }) => Ok((ticket, document)),
            Ok(Outcome::Deny { reason, reason_ja }) => {
                Err(SignFailure::Denied(format!("{reason} / {reason_ja}")))
            }
            Err(LoginError::Refused(reason)) => Err(SignFailure::Denied(reason)),
            Err(LoginError::Unreachable(e)) => Err(SignFailure::Reply(server_error(e))),
            Err(e) => Err(match self.login_error_reply(user, Purpose::Sign, e) {
                Reply::AuthResult { reason, .. } => {
                    SignFailure::Denied(reason.map(|r| r.as_str().to_owned()).unwrap_or_default())
                }
                other => SignFailure::Reply(other),
            }),
        }
    }
}

enum SignFailure {
    Denied(String),
    Reply(Reply),
}

fn describe(op: &Operation) -> String {
    match op {
        Operation::StepUp { action, max_age } => {
            format!("step-up for {} (max age {max_age} s)", action.as_str())
        }
        Operation::Confirm { record, verdict } => {
            format!("{} record {record}", verdict.as_str())
        }
        Operation::Sign { digest } => format!("sign {digest}"),
    }
}
