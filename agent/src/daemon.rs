//! The daemon: the shared state every connection uses, and what each
//! request does.

use std::sync::Arc;
use std::time::Duration;

use clinauth_policy::Purpose;
use clinauth_proto::agent::{ErrorCode, Outcome as WireOutcome, Reply};
use clinauth_proto::workstation::AccountRequest;
use clinauth_proto::{Label, Text, Ticket, UserName};

use crate::audit::{AgentEvent, Audit, OfflineDetail};
use crate::clock;
use crate::config::{duration, Config};
use crate::conversation::{Conversation, ConversationError};
use crate::login::{self, Devices, LoginError, Outcome};
use crate::offline::login::{OfflineError, OfflineOutcome};
use crate::offline::Offline;
use crate::readers::Readers;
use crate::server_client::{ServerClient, ServerError, TlsSetupError};
use crate::session::Sessions;
use crate::socket::peer::Peer;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The server client could not be set up.
    #[error("server TLS: {0}")]
    Tls(#[from] TlsSetupError),
    /// The socket could not be bound.
    #[error("socket {path}: {source}")]
    Socket {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The state directory (event spool, offline bundles) or the offline
    /// settings could not be set up.
    #[error("state: {0}")]
    State(String),
}

/// What every connection shares.
pub struct Daemon {
    pub(crate) config: Config,
    pub(crate) server: ServerClient,
    pub(crate) devices: Devices,
    pub(crate) audit: Audit,
    pub(crate) sessions: Sessions,
    offline: Offline,
    /// Each user's latest online ticket from this workstation, so that a
    /// record they enter names their authentication (R-AUTH-5).
    pub(crate) tickets: crate::apps::Tickets,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("workstation", &self.config.agent.workstation)
            .finish_non_exhaustive()
    }
}

fn text(s: &str) -> Text {
    Text::lossy(s)
}

fn error(code: ErrorCode, message: &str) -> Reply {
    Reply::Error {
        code,
        message: text(message),
    }
}

/// The `auth_result` of an allow; `None` when the server's ticket is not one
/// the wire accepts.
pub(crate) fn allow_reply(
    user: &UserName,
    purpose: Purpose,
    ticket: String,
    rule: String,
    factors: Vec<String>,
) -> Option<Reply> {
    Some(Reply::AuthResult {
        outcome: WireOutcome::Allow,
        user: user.clone(),
        purpose,
        rule: Label::new(rule).ok(),
        factors: factors
            .into_iter()
            .filter_map(|f| Label::new(f).ok())
            .collect(),
        reason: None,
        ticket: Some(Ticket::new(ticket).ok()?),
    })
}

/// The `auth_result` of a refusal.
pub(crate) fn deny_reply(user: &UserName, purpose: Purpose, reason: &str) -> Reply {
    Reply::AuthResult {
        outcome: WireOutcome::Deny,
        user: user.clone(),
        purpose,
        rule: None,
        factors: Vec::new(),
        reason: Some(text(reason)),
        ticket: None,
    }
}

impl Daemon {
    /// Sets up the daemon from `config` with `readers` (started by the
    /// caller, or [`Readers::new`] when cards are off).
    pub fn new(config: Config, readers: Readers) -> Result<Daemon, StartError> {
        let server = ServerClient::new(&config)?;
        let audit = Audit::open(&config, Some(server.clone())).map_err(StartError::State)?;
        let offline = Offline::new(&config).map_err(StartError::State)?;
        let sessions = Sessions::new(config.session.clone(), readers.clone(), audit.clone());
        let devices = Devices {
            readers,
            insert_timeout: duration(config.card.insert_timeout),
            apdu_timeout: duration(config.card.apdu_timeout),
            fido2: login::fido2::Fido2::from_settings(&config.fido2),
            biometric: login::biometric::Biometric::from_settings(&config.biometric),
        };
        Ok(Daemon {
            config,
            server,
            devices,
            audit,
            sessions,
            offline,
            tickets: crate::apps::Tickets::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How long a prompt waits for the person.
    pub fn conversation_timeout(&self) -> Duration {
        duration(self.config.agent.conversation_timeout)
    }

    pub(crate) fn event(
        &self,
        kind: &'static str,
        outcome: &'static str,
        detail: String,
    ) -> AgentEvent {
        AgentEvent {
            at_ms: clock::now_ms(),
            kind,
            user: None,
            purpose: None,
            outcome,
            peer: None,
            service: None,
            detail,
        }
    }

    /// `authenticate`: the whole flow, ending in the reply that closes the
    /// conversation.
    #[allow(clippy::too_many_arguments)]
    pub async fn authenticate(
        self: &Arc<Self>,
        peer: &Peer,
        user: UserName,
        purpose: Purpose,
        service: Label,
        tty: Option<Label>,
        _rhost: Option<Label>,
        conv: Conversation,
    ) -> Reply {
        let result = login::authenticate(
            &self.server,
            &self.devices,
            &self.config.agent.workstation,
            &user,
            purpose,
            None,
            &conv,
        )
        .await;
        let mut ev = self.event("authenticate", "error", String::new());
        ev.user = Some(user.as_str().to_owned());
        ev.purpose = Some(purpose);
        ev.peer = Some(peer.describe());
        ev.service = Some(match &tty {
            Some(tty) => format!("{} ({})", service.as_str(), tty.as_str()),
            None => service.as_str().to_owned(),
        });
        // R-OFF-1: no answer from the server at all, and this workstation
        // keeps offline bundles: the user's bundle decides.
        let result = match result {
            Err(LoginError::Unreachable(e)) if e.is_unreachable() && self.offline.is_enabled() => {
                return self
                    .authenticate_offline(peer, &user, purpose, ev, &e, &conv)
                    .await;
            }
            other => other,
        };
        if !matches!(result, Err(LoginError::Unreachable(_))) {
            // The server answered: spooled events need not wait out a backoff.
            self.audit.server_reachable();
        }
        let reply = match result {
            Ok(Outcome::Allow {
                ticket,
                rule,
                factors,
                card,
                ..
            }) => {
                ev.outcome = "allow";
                ev.detail = format!("rule {rule}, factors {}", factors.join("+"));
                self.sessions
                    .remember_login(
                        peer,
                        user.as_str(),
                        purpose,
                        card,
                        Some(&ticket),
                        clock::now_ms(),
                    )
                    .await;
                self.tickets.keep(user.as_str(), &ticket);
                self.keep_offline_bundle(&user, &ticket);
                allow_reply(&user, purpose, ticket, rule, factors).unwrap_or_else(|| {
                    ev.outcome = "error";
                    ev.detail = "the server's ticket is too large".into();
                    error(ErrorCode::Internal, "the server's ticket is not valid")
                })
            }
            Ok(Outcome::Deny { reason, reason_ja }) => {
                ev.outcome = "deny";
                ev.detail = reason.clone();
                deny_reply(&user, purpose, &format!("{reason} / {reason_ja}"))
            }
            Err(e) => {
                ev.detail = e.to_string();
                let reply = self.login_error_reply(&user, purpose, e);
                if let Reply::AuthResult { .. } = reply {
                    // A wrong card PIN, a declined prompt: refused, not broken.
                    ev.outcome = "deny";
                }
                reply
            }
        };
        self.audit.record(ev);
        reply
    }

    pub(crate) fn login_error_reply(
        &self,
        user: &UserName,
        purpose: Purpose,
        e: LoginError,
    ) -> Reply {
        let deny = |reason: String| deny_reply(user, purpose, &reason);
        match e {
            LoginError::Conversation(ConversationError::Timeout) => {
                error(ErrorCode::Timeout, "no answer in time")
            }
            LoginError::Conversation(ConversationError::Closed) => {
                error(ErrorCode::Internal, "the conversation ended")
            }
            LoginError::Conversation(ConversationError::Cancelled) => {
                deny("cancelled in the PIN dialog".into())
            }
            LoginError::Conversation(ConversationError::PinEntry) => error(
                ErrorCode::Internal,
                "the PIN dialog (pinentry) could not be used at this workstation",
            ),
            LoginError::Unreachable(e) => error(ErrorCode::ServerUnreachable, &e.to_string()),
            LoginError::Server(m) => error(ErrorCode::Internal, &format!("server: {m}")),
            e @ (LoginError::Card(_)
            | LoginError::Refused(_)
            | LoginError::Device(_)
            | LoginError::Declined(_)
            | LoginError::NoOption(_)) => deny(e.to_string()),
            LoginError::Internal(m) => error(ErrorCode::Internal, &m),
        }
    }

    /// `status`.
    pub fn status(&self, peer: &Peer) -> Reply {
        let _ = peer;
        let Ok(agent_version) = Label::new(env!("CARGO_PKG_VERSION")) else {
            return error(ErrorCode::Internal, "version");
        };
        Reply::StatusResult {
            agent_version,
            server_reachable: self.server.reachable(),
            session_user: self
                .sessions
                .session_user(peer)
                .and_then(|u| UserName::new(u).ok()),
            card_present: login::card_present(&self.devices.readers),
        }
    }

    /// `account`.
    pub async fn account(&self, peer: &Peer, user: UserName, service: Label) -> Reply {
        let answer = self
            .server
            .account(&AccountRequest {
                user: user.as_str().to_owned(),
                purpose: Purpose::Login,
            })
            .await;
        let mut ev = self.event("account", "error", String::new());
        ev.user = Some(user.as_str().to_owned());
        ev.peer = Some(peer.describe());
        ev.service = Some(service.as_str().to_owned());
        let reply = match answer {
            Ok(a) if a.allowed => {
                ev.outcome = "allow";
                Reply::AccountResult {
                    outcome: WireOutcome::Allow,
                    reason: None,
                }
            }
            Ok(a) => {
                let reason = format!(
                    "{} / {}",
                    a.reason.as_deref().unwrap_or("refused"),
                    a.reason_ja.as_deref().unwrap_or("拒否されました")
                );
                ev.outcome = "deny";
                ev.detail = reason.clone();
                Reply::AccountResult {
                    outcome: WireOutcome::Deny,
                    reason: Some(text(&reason)),
                }
            }
            Err(e) => {
                ev.detail = e.to_string();
                let code = if e.is_unreachable() {
                    ErrorCode::ServerUnreachable
                } else {
                    ErrorCode::Internal
                };
                error(code, &e.to_string())
            }
        };
        self.audit.record(ev);
        reply
    }

    /// `open_session`.
    pub async fn open_session(
        &self,
        peer: &Peer,
        user: UserName,
        service: Label,
        session_id: Option<Label>,
        tty: Option<Label>,
    ) -> Reply {
        self.sessions
            .open(peer, &user, &service, session_id.as_ref(), tty.as_ref())
            .await
    }

    /// `close_session`.
    pub async fn close_session(
        &self,
        peer: &Peer,
        user: UserName,
        service: Label,
        session_id: Option<Label>,
    ) -> Reply {
        self.sessions
            .close(peer, &user, &service, session_id.as_ref())
            .await
    }

    /// The card readers.
    pub fn readers(&self) -> &Readers {
        &self.devices.readers
    }

    /// The sessions (tap-out, locks).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// A caller subscribed to events.
    pub fn note_subscribed(&self, peer: &Peer) {
        let mut ev = self.event("subscribe", "done", "events subscribed".into());
        ev.peer = Some(peer.describe());
        self.audit.record(ev);
    }

    /// A caller hung up in the middle of a conversation.
    pub fn note_abandoned(&self, peer: &Peer) {
        let mut ev = self.event(
            "authenticate",
            "error",
            "the caller hung up mid-conversation".into(),
        );
        ev.peer = Some(peer.describe());
        self.audit.record(ev);
    }

    /// A caller cancelled a conversation.
    pub fn note_cancelled(&self, peer: &Peer, user: &UserName, purpose: Purpose) {
        let mut ev = self.event("authenticate", "deny", "cancelled by the caller".into());
        ev.peer = Some(peer.describe());
        ev.user = Some(user.as_str().to_owned());
        ev.purpose = Some(purpose);
        self.audit.record(ev);
    }

    /// A frame could not be read.
    pub fn note_refused(&self, peer: &Peer, why: &str) {
        let mut ev = self.event("bad_request", "refused", why.to_owned());
        ev.peer = Some(peer.describe());
        self.audit.record(ev);
    }

    /// The peer check refused a request.
    pub fn note_unauthorized(&self, peer: &Peer, request: &clinauth_proto::Request, why: &str) {
        let kind = match request {
            clinauth_proto::Request::Authenticate { .. } => "authenticate",
            clinauth_proto::Request::Account { .. } => "account",
            clinauth_proto::Request::OpenSession { .. } => "session_open",
            clinauth_proto::Request::CloseSession { .. } => "session_close",
            _ => "request",
        };
        let mut ev = self.event(kind, "refused", format!("unauthorized caller: {why}"));
        ev.peer = Some(peer.describe());
        if let clinauth_proto::Request::Authenticate { user, purpose, .. } = request {
            ev.user = Some(user.as_str().to_owned());
            ev.purpose = Some(*purpose);
        }
        tracing::warn!(peer = %peer.describe(), why, "request refused");
        self.audit.record(ev);
    }
}

/// Offline login (R-OFF-1): the bundle kept after an online login, and the
/// decision against it when the server cannot be reached.
impl Daemon {
    /// After an online allow: fetches and keeps the user's offline bundle
    /// in the background (the login's answer does not wait for it).
    fn keep_offline_bundle(self: &Arc<Self>, user: &UserName, ticket: &str) {
        if !self.offline.is_enabled() {
            return;
        }
        let daemon = self.clone();
        let user = user.as_str().to_owned();
        let ticket = zeroize::Zeroizing::new(ticket.to_owned());
        tokio::spawn(async move {
            match daemon.offline.refresh(&daemon.server, &user, &ticket).await {
                Ok(what) => tracing::info!(user, what, "offline bundle"),
                Err(why) => {
                    tracing::warn!(user, error = %why, "offline bundle not kept");
                    let mut ev = daemon.event("offline_bundle", "error", why);
                    ev.user = Some(user);
                    daemon.audit.record(ev);
                }
            }
        });
    }

    /// The server did not answer (`why`): decides with the user's bundle.
    /// An allow is answered only once its event is durable in the spool.
    async fn authenticate_offline(
        &self,
        peer: &Peer,
        user: &UserName,
        purpose: Purpose,
        mut ev: AgentEvent,
        why: &ServerError,
        conv: &Conversation,
    ) -> Reply {
        let mut detail = OfflineDetail::default();
        let reply = match self
            .offline
            .authenticate(&self.devices, user, purpose, conv)
            .await
        {
            Ok(OfflineOutcome::Allow {
                rule,
                factors,
                idle_lock: _,
                review,
                card,
            }) => {
                ev.outcome = "allow";
                ev.detail = format!(
                    "offline (server unreachable: {why}): rule {rule}, factors {}",
                    factors.join("+")
                );
                detail = OfflineDetail {
                    rule: Some(rule.clone()),
                    factors: factors.clone(),
                    review,
                };
                if let Err(e) = self.audit.record_durable(ev, Some(detail)).await {
                    tracing::error!(error = %e, "offline allow refused: its event is not durable");
                    return error(
                        ErrorCode::Internal,
                        "the offline login could not be recorded, so it is refused",
                    );
                }
                self.sessions
                    .remember_login(peer, user.as_str(), purpose, card, None, clock::now_ms())
                    .await;
                return Reply::AuthResult {
                    outcome: WireOutcome::Allow,
                    user: user.clone(),
                    purpose,
                    rule: Label::new(rule).ok(),
                    factors: factors
                        .into_iter()
                        .filter_map(|f| Label::new(f).ok())
                        .collect(),
                    reason: None,
                    // Decided offline: there is no server ticket.
                    ticket: None,
                };
            }
            Ok(OfflineOutcome::Deny { reason, reason_ja }) => {
                ev.outcome = "deny";
                ev.detail = format!("offline: {reason}");
                deny_reply(user, purpose, &format!("{reason} / {reason_ja}"))
            }
            Err(OfflineError::Unavailable(why_not)) => {
                ev.outcome = "error";
                let message = format!("{why}; offline login is not possible: {why_not}");
                ev.detail = message.clone();
                error(ErrorCode::ServerUnreachable, &message)
            }
            Err(OfflineError::Login(e)) => {
                ev.detail = format!("offline: {e}");
                self.login_error_reply(user, purpose, e)
            }
        };
        if let Err(e) = self.audit.record_durable(ev, Some(detail)).await {
            tracing::error!(error = %e, "an offline refusal could not be spooled");
        }
        reply
    }
}
