//! Sessions (R-SESS-1/2): binding the card of a login to the logind session
//! PAM opens for it, locking that session when the card leaves (tap-out) or
//! the badge is tapped again, locking it when it has been idle for the
//! policy's time, and switching user when another person's card is
//! presented on a locked session.
//!
//! - [`logind`]: systemd-logind (and the display manager) over D-Bus, behind
//!   the [`logind::Logind`] trait;
//! - [`bindings`]: which card belongs to which session (pure state);
//! - [`tapout`]: what reader events, session hints and the clock do, and the
//!   task that does it.
//!
//! The flow: a successful `authenticate` for `login` remembers the card it
//! used ([`Sessions::remember_login`]); the PAM `open_session` that follows
//! (as root, after `pam_systemd` in the stack, so that the process is in its
//! new logind session) binds that card to the session if the login was
//! within `bind_window` ([`Sessions::open`]); `close_session` unbinds it.
//! A login binds one session only. The agent locks, it never unlocks: the
//! session's screen locker does, after a login of the session's user at
//! that session (an `unlock` login also rebinds the card it used to the
//! caller's session, and to no other).

pub mod bindings;
pub mod logind;
pub mod tapout;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clinauth_policy::{Purpose, Seconds};
use clinauth_proto::agent::{ErrorCode, Reply};
use clinauth_proto::{Label, Text, UserName};
use serde::Deserialize;
use tokio::sync::{mpsc, Notify};

use crate::audit::{AgentEvent, Audit};
use crate::clock;
use crate::login::CardUsed;
use crate::readers::Readers;
use crate::socket::peer::Peer;

use bindings::{describe, Binding, Bindings, PendingLogin};
use logind::{BusAddress, Logind, LogindClient, LogindError, SessionChange, SessionInfo};

/// How the agent switches user when another person's card is presented on
/// a locked session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSwitch {
    /// logind `ActivateSession`: the session the card is bound to, else a
    /// session of the card's user on the seat, else the seat's greeter
    /// session (GDM keeps one).
    #[default]
    Logind,
    /// The display manager's `org.freedesktop.DisplayManager.Seat`
    /// (LightDM): `SwitchToUser` when the card's user is known, else
    /// `SwitchToGreeter`.
    DisplayManager,
    /// No switch (the session is locked again, and audited).
    Off,
}

/// `[session]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSettings")]
pub struct SessionSettings {
    /// Lock the session when its PIV card leaves the reader (tap-out).
    pub lock_on_card_removal: bool,
    /// Lock the session when its badge is tapped again.
    pub lock_on_badge_retap: bool,
    /// Idle lock when the login's ticket carries none (a session opened
    /// without a recent ClinAuth login).
    pub idle_lock: Duration,
    /// How long after a login its PAM session may bind its card.
    pub bind_window: Duration,
    /// Where logind is.
    pub bus: BusAddress,
    /// How to switch user.
    pub user_switch: UserSwitch,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            lock_on_card_removal: true,
            lock_on_badge_retap: true,
            idle_lock: Duration::from_secs(300),
            bind_window: Duration::from_secs(120),
            bus: BusAddress::System,
            user_switch: UserSwitch::Logind,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default = "yes")]
    lock_on_card_removal: bool,
    #[serde(default = "yes")]
    lock_on_badge_retap: bool,
    #[serde(default = "default_idle_lock")]
    idle_lock: Seconds,
    #[serde(default = "default_bind_window")]
    bind_window: Seconds,
    #[serde(default = "default_bus")]
    bus: String,
    #[serde(default)]
    user_switch: UserSwitch,
}

fn yes() -> bool {
    true
}
fn default_idle_lock() -> Seconds {
    Seconds::minutes(5)
}
fn default_bind_window() -> Seconds {
    Seconds::minutes(2)
}
fn default_bus() -> String {
    "system".into()
}

impl TryFrom<RawSettings> for SessionSettings {
    type Error = String;

    fn try_from(raw: RawSettings) -> Result<Self, String> {
        // The policy's own bounds for its idle lock (R-SESS-1).
        if !(10..=1800).contains(&raw.idle_lock.0) {
            return Err("session.idle_lock must be between 10s and 30m".into());
        }
        if !(10..=600).contains(&raw.bind_window.0) {
            return Err("session.bind_window must be between 10s and 10m".into());
        }
        let bus = match raw.bus.as_str() {
            "system" => BusAddress::System,
            a if a.contains(':') && a.len() <= 1024 => BusAddress::Address(a.to_owned()),
            other => {
                return Err(format!(
                    "session.bus {other:?}: write \"system\" or a D-Bus address such as \"unix:path=/run/dbus/system_bus_socket\""
                ))
            }
        };
        Ok(SessionSettings {
            lock_on_card_removal: raw.lock_on_card_removal,
            lock_on_badge_retap: raw.lock_on_badge_retap,
            idle_lock: Duration::from_secs(u64::from(raw.idle_lock.0)),
            bind_window: Duration::from_secs(u64::from(raw.bind_window.0)),
            bus,
            user_switch: raw.user_switch,
        })
    }
}

/// Looks up a uid's login name (the system's user database; tests give
/// their own).
pub type UserNames = fn(u32) -> Option<String>;

/// The shared session state. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    settings: SessionSettings,
    logind: Arc<dyn Logind>,
    audit: Audit,
    readers: Readers,
    state: Mutex<Bindings>,
    changes: mpsc::UnboundedSender<SessionChange>,
    /// The task's receiver, until the task starts (at the first binding).
    waiting: Mutex<Option<mpsc::UnboundedReceiver<SessionChange>>>,
    wake: Arc<Notify>,
    shutdown: Arc<Notify>,
    user_names: UserNames,
    /// Locks, unlocks and switches, for the socket's subscribers.
    events: tokio::sync::broadcast::Sender<clinauth_proto::agent::AgentEvent>,
}

impl Inner {
    /// Tells subscribers (none listening is fine).
    pub(super) fn publish(
        &self,
        kind: clinauth_proto::agent::EventKind,
        user: Option<&str>,
        session: &str,
    ) {
        let _ = self.events.send(clinauth_proto::agent::AgentEvent {
            kind,
            at_ms: crate::clock::now_ms(),
            reader: None,
            user: user.and_then(|u| clinauth_proto::UserName::new(u).ok()),
            session: clinauth_proto::Label::new(session).ok(),
        });
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut Bindings) -> R) -> Option<R> {
        match self.state.lock() {
            Ok(mut s) => Some(f(&mut s)),
            Err(_) => {
                tracing::error!("session state poisoned");
                None
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.notify_one();
    }
}

/// A refusal of `open` / `close`.
struct Refused {
    code: ErrorCode,
    outcome: &'static str,
    message: String,
}

fn refused(code: ErrorCode, message: impl Into<String>) -> Refused {
    Refused {
        code,
        outcome: "refused",
        message: message.into(),
    }
}

fn failed(message: impl Into<String>) -> Refused {
    Refused {
        code: ErrorCode::Internal,
        outcome: "error",
        message: message.into(),
    }
}

fn logind_failed(what: &str, e: LogindError) -> Refused {
    failed(format!("{what}: {e}"))
}

/// The idle lock of a ticket's claims, if the ticket is `user`'s. The
/// ticket came from the server over mutual TLS a moment ago; only this
/// number is taken from it, and only to lock sooner or later than the
/// configured fallback.
fn ticket_idle_lock(ticket: &str, user: &str) -> Option<Duration> {
    let mut parts = ticket.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: clinauth_proto::ticket::Claims = serde_json::from_slice(&bytes).ok()?;
    (claims.sub == user && claims.idle_lock > 0)
        .then(|| Duration::from_secs(u64::from(claims.idle_lock)))
}

impl Sessions {
    /// Sessions with logind on the configured bus and the system's user
    /// database. Nothing connects or runs until the first session opens.
    pub fn new(settings: SessionSettings, readers: Readers, audit: Audit) -> Sessions {
        let logind = Arc::new(LogindClient::new(settings.bus.clone()));
        Sessions::with_logind(
            settings,
            readers,
            audit,
            logind,
            crate::socket::peer::user_name,
        )
    }

    /// Sessions with the given logind and user database.
    pub fn with_logind(
        settings: SessionSettings,
        readers: Readers,
        audit: Audit,
        logind: Arc<dyn Logind>,
        user_names: UserNames,
    ) -> Sessions {
        let (changes, waiting) = mpsc::unbounded_channel();
        Sessions {
            inner: Arc::new(Inner {
                settings,
                logind,
                audit,
                readers,
                state: Mutex::new(Bindings::default()),
                changes,
                waiting: Mutex::new(Some(waiting)),
                wake: Arc::new(Notify::new()),
                shutdown: Arc::new(Notify::new()),
                user_names,
                events: tokio::sync::broadcast::channel(64).0,
            }),
        }
    }

    /// Session locks, unlocks and user switches from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<clinauth_proto::agent::AgentEvent> {
        self.inner.events.subscribe()
    }

    /// The settings.
    pub fn settings(&self) -> &SessionSettings {
        &self.inner.settings
    }

    /// Starts the tap-out task (once; on the current tokio runtime).
    fn start(&self) -> Result<(), Refused> {
        let Ok(mut waiting) = self.inner.waiting.lock() else {
            return Err(failed("session state poisoned"));
        };
        let Some(changes) = waiting.take() else {
            return Ok(());
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            *waiting = Some(changes);
            return Err(failed("no runtime for the tap-out task"));
        };
        // Subscribed before the state is filled: no event is lost between.
        let events = self.inner.readers.subscribe();
        let present = self.inner.readers.present();
        self.inner.with_state(|s| s.present = present);
        let task = tapout::Task {
            inner: Arc::downgrade(&self.inner),
            events,
            changes,
            wake: Arc::clone(&self.inner.wake),
            shutdown: Arc::clone(&self.inner.shutdown),
        };
        handle.spawn(task.run());
        Ok(())
    }

    /// After a successful authentication: remembers the card a `login` (or
    /// `break_glass`) used for the session about to open, learns whose card
    /// it is, and for an `unlock` at a bound session of the same user (the
    /// caller's process is in it) rebinds the card used to that session.
    pub async fn remember_login(
        &self,
        peer: &Peer,
        user: &str,
        purpose: Purpose,
        card: Option<CardUsed>,
        ticket: Option<&str>,
        now_ms: i64,
    ) {
        let idle_lock = ticket.and_then(|t| ticket_idle_lock(t, user));
        match purpose {
            Purpose::Login | Purpose::BreakGlass => {
                self.inner.with_state(|s| {
                    s.remember(PendingLogin {
                        user: user.to_owned(),
                        card,
                        idle_lock,
                        at_ms: now_ms,
                    })
                });
            }
            Purpose::Unlock => self.unlock_login(peer, user, card).await,
            Purpose::StepUp | Purpose::Confirm | Purpose::Sign => {
                if let Some(card) = card {
                    self.inner
                        .with_state(|s| s.learn_card(&card.identity, user));
                }
            }
        }
    }

    async fn unlock_login(&self, peer: &Peer, user: &str, card: Option<CardUsed>) {
        if let Some(card) = &card {
            self.inner
                .with_state(|s| s.learn_card(&card.identity, user));
        }
        let Some(pid) = peer.pid.and_then(|p| u32::try_from(p).ok()) else {
            return;
        };
        let looked_up = tokio::time::timeout(
            Duration::from_secs(2),
            self.inner.logind.session_by_pid(pid),
        )
        .await;
        let Ok(Ok(info)) = looked_up else {
            // Not in a session, or logind is away: nothing to rebind.
            return;
        };
        let present = self.inner.readers.present();
        let outcome = self.inner.with_state(|s| {
            let b = s.sessions.get_mut(&info.id)?;
            if b.user != user {
                return Some(Err(b.user.clone()));
            }
            b.locked = false;
            if let Some(card) = card {
                b.card_in = present
                    .iter()
                    .find(|(_, c)| **c == card.identity)
                    .map(|(r, _)| r.clone());
                b.badge_away = b.card_in.is_none();
                let what = describe(&card.identity);
                b.card = Some(card);
                Some(Ok(Some(what)))
            } else {
                Some(Ok(None))
            }
        });
        let mut ev = event("session_bind", "done", user, peer);
        match outcome.flatten() {
            None => return,
            Some(Ok(card)) => {
                ev.detail = match card {
                    Some(card) => {
                        format!("unlock login at session {}: {card} bound to it", info.id)
                    }
                    None => format!("unlock login at session {} (no card)", info.id),
                };
            }
            Some(Err(owner)) => {
                ev.outcome = "refused";
                ev.detail = format!(
                    "unlock login of {user} from session {} of {owner}: nothing rebound",
                    info.id
                );
            }
        }
        self.inner.audit.record(ev);
        self.inner.wake.notify_one();
    }

    /// `open_session`: binds the card of `user`'s login (if within the
    /// window) to the logind session `session_id`, or the caller's.
    pub async fn open(
        &self,
        peer: &Peer,
        user: &UserName,
        service: &Label,
        session_id: Option<&Label>,
        tty: Option<&Label>,
    ) -> Reply {
        let mut ev = event("session_open", "done", user.as_str(), peer);
        ev.service = Some(match tty {
            Some(tty) => format!("{} ({})", service.as_str(), tty.as_str()),
            None => service.as_str().to_owned(),
        });
        let reply = match self.try_open(peer, user.as_str(), session_id).await {
            Ok((session, card_bound, detail)) => {
                ev.detail = detail;
                match Label::new(session) {
                    Ok(session_id) => Reply::SessionOpened {
                        session_id,
                        card_bound,
                    },
                    Err(_) => error(ErrorCode::Internal, "the session ID is not a label"),
                }
            }
            Err(r) => {
                ev.outcome = r.outcome;
                ev.detail = r.message.clone();
                error(r.code, &r.message)
            }
        };
        self.inner.audit.record(ev);
        reply
    }

    async fn session_of(&self, peer: &Peer, id: Option<&Label>) -> Result<SessionInfo, Refused> {
        match id {
            Some(id) => self
                .inner
                .logind
                .session(id.as_str())
                .await
                .map_err(|e| logind_failed(&format!("session {}", id.as_str()), e)),
            None => {
                let pid = peer
                    .pid
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or_else(|| {
                        failed("the caller's process is unknown; pass the session ID")
                    })?;
                self.inner
                    .logind
                    .session_by_pid(pid)
                    .await
                    .map_err(|e| logind_failed(&format!("the session of process {pid}"), e))
            }
        }
    }

    async fn try_open(
        &self,
        peer: &Peer,
        user: &str,
        id: Option<&Label>,
    ) -> Result<(String, bool, String), Refused> {
        if !peer.is_root() {
            return Err(refused(
                ErrorCode::Unauthorized,
                "only root (the PAM stack) may open sessions",
            ));
        }
        let info = self.session_of(peer, id).await?;
        self.check_owner(&info, user)?;
        let now = clock::now_ms();
        let settings = &self.inner.settings;
        let pending = self
            .inner
            .with_state(|s| s.take_pending(user, now, settings.bind_window))
            .flatten();
        let (card, idle_lock) = match pending {
            Some(p) => (p.card, p.idle_lock),
            None => (None, None),
        };
        self.start()?;
        let mut binding = Binding::new(
            &info,
            card.clone(),
            idle_lock.unwrap_or(settings.idle_lock),
            idle_lock.is_some(),
            now,
        );
        let present = self.inner.readers.present();
        let mut lock_now = None;
        if let Some(card) = &card {
            binding.card_in = present
                .iter()
                .find(|(_, c)| **c == card.identity)
                .map(|(r, _)| r.clone());
            if binding.card_in.is_none() {
                if matches!(card.identity, crate::card::CardIdentity::Badge(_)) {
                    binding.badge_away = true;
                } else if settings.lock_on_card_removal {
                    lock_now = Some(tapout::Action::Lock {
                        session: info.id.clone(),
                        user: user.to_owned(),
                        reason: format!(
                            "{} left before the session opened",
                            describe(&card.identity)
                        ),
                    });
                    binding.locked = true;
                    binding.locked_ms = now;
                }
            }
        }
        let replaced = self
            .inner
            .with_state(|s| {
                if let Some(card) = &card {
                    s.learn_card(&card.identity, user);
                }
                s.sessions.insert(info.id.clone(), binding).is_some()
            })
            .ok_or_else(|| failed("session state poisoned"))?;
        // Watched once bound: the hints the watch reports first (read after
        // its subscription) apply to the binding, and none is lost between.
        match self
            .inner
            .logind
            .watch(&info, self.inner.changes.clone())
            .await
        {
            Ok(watch) => {
                self.inner.with_state(|s| {
                    if let Some(b) = s.sessions.get_mut(&info.id) {
                        b.watch = watch;
                    }
                });
            }
            Err(e) => {
                // Unwatched, the idle lock cannot work: refused.
                self.inner.with_state(|s| s.sessions.remove(&info.id));
                return Err(logind_failed(&format!("watching session {}", info.id), e));
            }
        }
        self.inner.wake.notify_one();
        let idle = format!(
            "idle lock {} s ({})",
            idle_lock.unwrap_or(settings.idle_lock).as_secs(),
            if idle_lock.is_some() {
                "policy"
            } else {
                "configured fallback"
            }
        );
        let seat = if info.seat.is_empty() {
            "no seat".to_owned()
        } else {
            info.seat.clone()
        };
        let mut detail = match &card {
            Some(c) => format!(
                "session {} ({seat}) bound to {} in {}; {idle}",
                info.id,
                describe(&c.identity),
                c.reader
            ),
            None => format!(
                "session {} ({seat}) bound without a card (no card login within {} s); {idle}",
                info.id,
                settings.bind_window.as_secs()
            ),
        };
        if replaced {
            detail.push_str("; replaces an earlier binding");
        }
        if let Some(lock) = lock_now {
            tapout::perform(&self.inner, vec![lock]).await;
        }
        Ok((info.id, card.is_some(), detail))
    }

    fn check_owner(&self, info: &SessionInfo, user: &str) -> Result<(), Refused> {
        if info.user != user {
            return Err(refused(
                ErrorCode::Unauthorized,
                format!(
                    "session {} belongs to {} (uid {}), not to {user}",
                    info.id, info.user, info.uid
                ),
            ));
        }
        if (self.inner.user_names)(info.uid).as_deref() != Some(user) {
            return Err(refused(
                ErrorCode::Unauthorized,
                format!(
                    "session {} runs as uid {}, which is not {user}'s",
                    info.id, info.uid
                ),
            ));
        }
        Ok(())
    }

    /// `close_session`: forgets the binding of the session.
    pub async fn close(
        &self,
        peer: &Peer,
        user: &UserName,
        service: &Label,
        session_id: Option<&Label>,
    ) -> Reply {
        let mut ev = event("session_close", "done", user.as_str(), peer);
        ev.service = Some(service.as_str().to_owned());
        let reply = match self.try_close(peer, user.as_str(), session_id).await {
            Ok(detail) => {
                ev.detail = detail;
                Reply::SessionClosed {}
            }
            Err(r) => {
                ev.outcome = r.outcome;
                ev.detail = r.message.clone();
                error(r.code, &r.message)
            }
        };
        self.inner.audit.record(ev);
        reply
    }

    async fn try_close(
        &self,
        peer: &Peer,
        user: &str,
        id: Option<&Label>,
    ) -> Result<String, Refused> {
        if !peer.is_root() {
            return Err(refused(
                ErrorCode::Unauthorized,
                "only root (the PAM stack) may close sessions",
            ));
        }
        let id = match id {
            Some(id) => id.as_str().to_owned(),
            None => self.session_of(peer, None).await?.id,
        };
        let removed = self
            .inner
            .with_state(|s| match s.sessions.get(&id) {
                None => Ok(None),
                Some(b) if b.user != user => Err(b.user.clone()),
                Some(_) => Ok(s.sessions.remove(&id)),
            })
            .ok_or_else(|| failed("session state poisoned"))?;
        self.inner.wake.notify_one();
        match removed {
            Ok(Some(_)) => Ok(format!("session {id} unbound")),
            Ok(None) => Ok(format!("session {id} was not bound")),
            Err(owner) => Err(refused(
                ErrorCode::Unauthorized,
                format!("session {id} is {owner}'s, not {user}'s"),
            )),
        }
    }

    /// The desktop session's user for `status`: a desktop user's own name
    /// if they have a bound session; for root, the user of the latest
    /// bound session that is not locked.
    pub fn session_user(&self, peer: &Peer) -> Option<String> {
        self.inner
            .with_state(|s| {
                if peer.is_root() {
                    s.front_user().map(str::to_owned)
                } else {
                    s.sessions
                        .values()
                        .any(|b| b.uid == peer.uid)
                        .then(|| peer.name.clone())
                        .flatten()
                }
            })
            .flatten()
    }

    /// The bound sessions: (session, user, card bound, locked).
    pub fn bound(&self) -> Vec<(String, String, bool, bool)> {
        self.inner
            .with_state(|s| {
                s.sessions
                    .values()
                    .map(|b| {
                        (
                            b.session.clone(),
                            b.user.clone(),
                            b.card.is_some(),
                            b.is_locked(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn event(kind: &'static str, outcome: &'static str, user: &str, peer: &Peer) -> AgentEvent {
    AgentEvent {
        at_ms: clock::now_ms(),
        kind,
        user: Some(user.to_owned()),
        purpose: None,
        outcome,
        peer: Some(peer.describe()),
        service: None,
        detail: String::new(),
    }
}

fn error(code: ErrorCode, message: &str) -> Reply {
    Reply::Error {
        code,
        message: Text::lossy(message),
    }
}

#[cfg(test)]
mod tests;
