//! Tap-out and idle lock (R-SESS-1/2): what reader events, logind's session
//! hints and the clock do to the bound sessions, and the task that carries
//! it out.
//!
//! - A bound PIV card leaves its reader (or the reader goes away, or the
//!   watcher restarts): that card's sessions are locked
//!   (`lock_on_card_removal`).
//! - A bound badge is tapped again after it left the reader: its session is
//!   locked if it is not already (`lock_on_badge_retap`). A badge leaving
//!   the reader is what a tap is, so that alone locks nothing.
//! - Another usable card or badge on a locked session in the front of its
//!   seat: the session is locked again (it may have been unlocked without
//!   the agent seeing it) and the seat switches (`user_switch`): to the
//!   session that card is bound to, else to a session of that card's user on
//!   the seat, else to the seat's greeter.
//! - logind says a session is idle (`IdleHint`, `IdleSinceHint`): it is
//!   locked when it has been idle for the policy's `idle_lock` (from the
//!   login's ticket) or the configured fallback. One timer, armed for the
//!   earliest deadline only; none when nothing is idle.
//!
//! The agent never unlocks: a session is unlocked by its own screen locker
//! after a login of its user at that session. Nothing here touches another
//! session than the ones bound to the card or timer concerned.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, Notify};

use crate::audit::AgentEvent;
use crate::card::{CardIdentity, ReaderEvent};
use crate::clock;
use crate::readers::{usable, Present};
use clinauth_proto::agent::EventKind;

use super::bindings::{describe, Binding, Bindings};
use super::logind::{LogindError, SessionChange};
use super::{Inner, SessionSettings, UserSwitch};

/// What to do about the sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Lock `session` (`LockSession`).
    Lock {
        /// The session.
        session: String,
        /// Its user.
        user: String,
        /// Why, for the audit.
        reason: String,
    },
    /// Lock `from` again and switch its seat to another session or the
    /// greeter.
    Switch {
        /// The locked session in front.
        from: String,
        /// Its user.
        from_user: String,
        /// The seat.
        seat: String,
        /// The card that was presented, for the audit.
        card: String,
        /// Whose card it is, if known.
        card_user: Option<String>,
        /// The session that card is bound to, if any.
        target: Option<String>,
    },
    /// logind says the session was unlocked (by its screen locker).
    Unlocked {
        /// The session.
        session: String,
        /// Its user.
        user: String,
    },
    /// The session ended without a PAM close: the binding is gone.
    Gone {
        /// The session.
        session: String,
        /// Its user.
        user: String,
    },
}

fn lock(b: &mut Binding, reason: String, now_ms: i64) -> Action {
    b.locked = true;
    b.locked_ms = now_ms;
    Action::Lock {
        session: b.session.clone(),
        user: b.user.clone(),
        reason,
    }
}

impl Bindings {
    /// A reader event.
    pub fn on_reader_event(
        &mut self,
        event: &ReaderEvent,
        settings: &SessionSettings,
        now_ms: i64,
    ) -> Vec<Action> {
        match event {
            ReaderEvent::Inserted { reader, identity } => {
                self.present.insert(reader.clone(), identity.clone());
                self.inserted(reader, identity, settings, now_ms)
            }
            ReaderEvent::Removed { reader } | ReaderEvent::ReaderDetached(reader) => {
                self.present.remove(reader);
                self.removed(reader, settings, now_ms)
            }
            ReaderEvent::ReaderAttached(_) => Vec::new(),
        }
    }

    fn removed(&mut self, reader: &str, settings: &SessionSettings, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        for b in self.sessions.values_mut() {
            if b.card_in.as_deref() != Some(reader) {
                continue;
            }
            b.card_in = None;
            match b.card.as_ref().map(|c| &c.identity) {
                Some(CardIdentity::Badge(_)) => b.badge_away = true,
                Some(identity) if settings.lock_on_card_removal => {
                    let reason = format!("{} removed from {reader}", describe(identity));
                    actions.push(lock(b, reason, now_ms));
                }
                _ => {}
            }
        }
        actions
    }

    fn inserted(
        &mut self,
        reader: &str,
        identity: &CardIdentity,
        settings: &SessionSettings,
        now_ms: i64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        for b in self.sessions.values_mut() {
            if !b.is_card(identity) {
                continue;
            }
            b.card_in = Some(reader.to_owned());
            if matches!(identity, CardIdentity::Badge(_)) && b.badge_away {
                b.badge_away = false;
                if settings.lock_on_badge_retap && !b.is_locked() {
                    let reason = format!("badge tapped again on {reader}");
                    actions.push(lock(b, reason, now_ms));
                }
            }
        }
        if !usable(identity) {
            return actions;
        }
        let owner = self.owner_of(identity).map(str::to_owned);
        let front = self
            .sessions
            .values()
            .filter(|b| b.is_locked() && b.props.active && !b.seat.is_empty())
            .max_by_key(|b| b.locked_ms);
        if let Some(front) = front {
            if !front.is_card(identity) && owner.as_deref() != Some(front.user.as_str()) {
                let target = self
                    .sessions
                    .values()
                    .find(|b| {
                        b.is_card(identity) && b.seat == front.seat && b.session != front.session
                    })
                    .map(|b| b.session.clone());
                actions.push(Action::Switch {
                    from: front.session.clone(),
                    from_user: front.user.clone(),
                    seat: front.seat.clone(),
                    card: format!("{} in {reader}", describe(identity)),
                    card_user: owner,
                    target,
                });
            }
        }
        actions
    }

    /// Events were lost: compares the bound cards with what is present now
    /// (a bound card that is gone counts as removed).
    pub fn resync(
        &mut self,
        present: Present,
        settings: &SessionSettings,
        now_ms: i64,
    ) -> Vec<Action> {
        self.present = present;
        let mut actions = Vec::new();
        let mut gone = Vec::new();
        for b in self.sessions.values() {
            let Some(card) = &b.card else { continue };
            let now_in = self
                .present
                .iter()
                .find(|(_, c)| **c == card.identity)
                .map(|(r, _)| r.clone());
            if let (Some(was), None) = (&b.card_in, &now_in) {
                gone.push((b.session.clone(), was.clone()));
            }
        }
        for b in self.sessions.values_mut() {
            if let Some(card) = &b.card {
                let identity = card.identity.clone();
                b.card_in = self
                    .present
                    .iter()
                    .find(|(_, c)| **c == identity)
                    .map(|(r, _)| r.clone());
            }
        }
        for (session, reader) in gone {
            let Some(b) = self.sessions.get_mut(&session) else {
                continue;
            };
            match b.card.as_ref().map(|c| &c.identity) {
                Some(CardIdentity::Badge(_)) => b.badge_away = true,
                Some(identity) if settings.lock_on_card_removal => {
                    let reason = format!("{} no longer in {reader}", describe(identity));
                    actions.push(lock(b, reason, now_ms));
                }
                _ => {}
            }
        }
        actions
    }

    /// A change of a watched session's hints.
    pub fn on_change(&mut self, change: SessionChange, now_ms: i64) -> Vec<Action> {
        let Some(props) = change.props else {
            return match self.sessions.remove(&change.id) {
                Some(b) => vec![Action::Gone {
                    session: b.session,
                    user: b.user,
                }],
                None => Vec::new(),
            };
        };
        let Some(b) = self.sessions.get_mut(&change.id) else {
            return Vec::new();
        };
        if b.apply_props(props, now_ms) {
            vec![Action::Unlocked {
                session: b.session.clone(),
                user: b.user.clone(),
            }]
        } else {
            Vec::new()
        }
    }

    /// The clock reached `now_ms`: idle sessions past their deadline lock.
    pub fn on_time(&mut self, now_ms: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        for b in self.sessions.values_mut() {
            let Some(deadline) = b.idle_deadline_ms() else {
                continue;
            };
            if deadline > now_ms {
                continue;
            }
            b.idle_acted = b.idle_since_ms;
            let whose = if b.idle_lock_from_policy {
                "the policy's idle lock"
            } else {
                "the configured idle lock"
            };
            let reason = format!("idle for {} s ({whose})", b.idle_lock.as_secs());
            actions.push(lock(b, reason, now_ms));
        }
        actions
    }
}

/// How the task reaches the sessions: weakly, so that it ends when the
/// [`super::Sessions`] are dropped.
pub(super) struct Task {
    pub(super) inner: Weak<Inner>,
    pub(super) events: broadcast::Receiver<ReaderEvent>,
    pub(super) changes: mpsc::UnboundedReceiver<SessionChange>,
    pub(super) wake: Arc<Notify>,
    pub(super) shutdown: Arc<Notify>,
}

/// When `deadline_ms` (wall clock) is, on tokio's clock.
fn instant_of(deadline_ms: i64) -> tokio::time::Instant {
    let wait = deadline_ms.saturating_sub(clock::now_ms()).max(0);
    tokio::time::Instant::now() + Duration::from_millis(u64::try_from(wait).unwrap_or(0))
}

enum Wakeup {
    Reader(ReaderEvent),
    Lagged,
    Change(SessionChange),
    Time,
    Rearm,
    Stop,
}

impl Task {
    /// Runs until the sessions are dropped or the readers go away.
    pub(super) async fn run(mut self) {
        loop {
            let deadline = match self.inner.upgrade() {
                Some(inner) => inner.with_state(|s| s.next_deadline_ms()).flatten(),
                None => return,
            };
            let timer = deadline.map(instant_of);
            let wakeup = tokio::select! {
                biased;
                () = self.shutdown.notified() => Wakeup::Stop,
                ev = self.events.recv() => match ev {
                    Ok(ev) => Wakeup::Reader(ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => Wakeup::Lagged,
                    Err(broadcast::error::RecvError::Closed) => Wakeup::Stop,
                },
                ch = self.changes.recv() => match ch {
                    Some(ch) => Wakeup::Change(ch),
                    None => Wakeup::Stop,
                },
                () = self.wake.notified() => Wakeup::Rearm,
                () = sleep_until(timer), if timer.is_some() => Wakeup::Time,
            };
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            let now = clock::now_ms();
            let settings = &inner.settings;
            let actions = match wakeup {
                Wakeup::Stop => return,
                Wakeup::Rearm => continue,
                Wakeup::Reader(ev) => inner.with_state(|s| s.on_reader_event(&ev, settings, now)),
                Wakeup::Lagged => {
                    tracing::warn!("reader events were lost; comparing with the readers now");
                    let present = inner.readers.present();
                    inner.with_state(|s| s.resync(present, settings, now))
                }
                Wakeup::Change(ch) => inner.with_state(|s| s.on_change(ch, now)),
                Wakeup::Time => inner.with_state(|s| s.on_time(now)),
            }
            .unwrap_or_default();
            perform(&inner, actions).await;
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn session_event(
    kind: &'static str,
    outcome: &'static str,
    user: &str,
    detail: String,
) -> AgentEvent {
    AgentEvent {
        at_ms: clock::now_ms(),
        kind,
        user: Some(user.to_owned()),
        purpose: None,
        outcome,
        peer: None,
        service: None,
        detail,
    }
}

/// Carries out `actions` and audits each.
pub(super) async fn perform(inner: &Inner, actions: Vec<Action>) {
    for action in actions {
        match action {
            Action::Lock {
                session,
                user,
                reason,
            } => {
                let result = inner.logind.lock_session(&session).await;
                let (outcome, detail) = match &result {
                    Ok(()) => ("done", format!("session {session} locked: {reason}")),
                    Err(e) => (
                        "error",
                        format!("session {session} could not be locked ({reason}): {e}"),
                    ),
                };
                if let Err(e) = &result {
                    tracing::error!(session = %session, error = %e, "lock failed");
                } else {
                    inner.publish(EventKind::SessionLocked, Some(&user), &session);
                }
                inner
                    .audit
                    .record(session_event("session_lock", outcome, &user, detail));
                if let Err(LogindError::NoSuchSession(_)) = result {
                    forget(inner, &session, &user);
                }
            }
            Action::Switch {
                from,
                from_user,
                seat,
                card,
                card_user,
                target,
            } => switch(inner, &from, &from_user, &seat, &card, card_user, target).await,
            Action::Unlocked { session, user } => {
                inner.publish(EventKind::SessionUnlocked, Some(&user), &session);
                inner.audit.record(session_event(
                    "session_unlock",
                    "done",
                    &user,
                    format!("session {session} unlocked by its screen locker"),
                ));
            }
            Action::Gone { session, user } => inner.audit.record(session_event(
                "session_close",
                "done",
                &user,
                format!("session {session} ended without a PAM close; its binding is gone"),
            )),
        }
    }
}

fn forget(inner: &Inner, session: &str, user: &str) {
    if inner
        .with_state(|s| s.sessions.remove(session))
        .flatten()
        .is_some()
    {
        inner.audit.record(session_event(
            "session_close",
            "done",
            user,
            format!("session {session} no longer exists; its binding is gone"),
        ));
    }
}

async fn switch(
    inner: &Inner,
    from: &str,
    from_user: &str,
    seat: &str,
    card: &str,
    card_user: Option<String>,
    target: Option<String>,
) {
    let whose = card_user.as_deref().unwrap_or("an unknown user");
    if inner.settings.user_switch == UserSwitch::Off {
        inner.audit.record(session_event(
            "session_switch",
            "refused",
            from_user,
            format!("{card} of {whose} on locked session {from}: user switching is off"),
        ));
        return;
    }
    // Whatever the agent believes, the session left behind is locked.
    let locked = inner.logind.lock_session(from).await;
    if locked.is_ok() {
        inner.publish(EventKind::SessionLocked, Some(from_user), from);
    }
    if let Err(e) = locked {
        tracing::error!(session = %from, error = %e, "lock before the switch failed");
        inner.audit.record(session_event(
            "session_switch",
            "error",
            from_user,
            format!("{card} of {whose}: session {from} could not be locked, no switch: {e}"),
        ));
        return;
    }
    let result = match inner.settings.user_switch {
        UserSwitch::DisplayManager => inner
            .logind
            .display_manager_switch(card_user.as_deref())
            .await
            .map(|()| match &card_user {
                Some(u) => format!("the display manager switched to {u}"),
                None => "the display manager switched to its greeter".to_owned(),
            }),
        _ => logind_switch(inner, from, seat, card_user.as_deref(), target).await,
    };
    if result.is_ok() {
        inner.publish(EventKind::UserSwitched, card_user.as_deref(), from);
    }
    let (outcome, detail) = match result {
        Ok(how) => (
            "done",
            format!("{card} of {whose} on locked session {from} ({seat}): {how}"),
        ),
        Err(e) => (
            "error",
            format!("{card} of {whose} on locked session {from} ({seat}): no switch: {e}"),
        ),
    };
    inner
        .audit
        .record(session_event("session_switch", outcome, from_user, detail));
}

/// Activates `target`, else a session of `card_user` on `seat`, else the
/// seat's greeter session.
async fn logind_switch(
    inner: &Inner,
    from: &str,
    seat: &str,
    card_user: Option<&str>,
    target: Option<String>,
) -> Result<String, LogindError> {
    let logind = &inner.logind;
    let target = match target {
        Some(t) => Some(t),
        None => {
            let on_seat: Vec<_> = logind
                .list_sessions()
                .await?
                .into_iter()
                .filter(|s| s.seat == seat && s.id != from)
                .collect();
            let mut found =
                card_user.and_then(|u| on_seat.iter().find(|s| s.user == u).map(|s| s.id.clone()));
            if found.is_none() {
                for s in &on_seat {
                    if logind
                        .session(&s.id)
                        .await
                        .is_ok_and(|i| i.class == "greeter")
                    {
                        found = Some(s.id.clone());
                        break;
                    }
                }
            }
            found
        }
    };
    let Some(target) = target else {
        return Err(LogindError::NoSuchSession(format!(
            "to switch to on {seat} (no session of that user, no greeter session)"
        )));
    };
    logind.activate_session(&target).await?;
    Ok(format!("activated session {target}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::BadgeUid;
    use crate::login::CardUsed;
    use crate::session::logind::{SessionInfo, SessionProps};
    use std::time::Duration;

    fn piv(n: u8) -> CardIdentity {
        CardIdentity::Piv {
            fingerprint: [n; 32],
        }
    }

    fn badge(n: u8) -> CardIdentity {
        CardIdentity::Badge(BadgeUid::new(&[n, 1, 2, 3]).unwrap())
    }

    fn settings() -> SessionSettings {
        SessionSettings::default()
    }

    fn bind(b: &mut Bindings, id: &str, user: &str, card: Option<(&str, CardIdentity)>) {
        let info = SessionInfo {
            id: id.into(),
            path: format!("/org/freedesktop/login1/session/{id}"),
            user: user.into(),
            uid: 1000,
            seat: "seat0".into(),
            class: "user".into(),
            props: SessionProps {
                active: true,
                ..SessionProps::default()
            },
        };
        let card = card.map(|(reader, identity)| CardUsed {
            reader: reader.into(),
            identity,
        });
        let mut binding = Binding::new(&info, card.clone(), Duration::from_secs(180), true, 0);
        if let Some(c) = &card {
            binding.card_in = b.reader_of(&c.identity);
            binding.badge_away = binding.card_in.is_none();
            b.learn_card(&c.identity, user);
        }
        b.sessions.insert(id.into(), binding);
    }

    fn insert(reader: &str, identity: CardIdentity) -> ReaderEvent {
        ReaderEvent::Inserted {
            reader: reader.into(),
            identity,
        }
    }

    fn remove(reader: &str) -> ReaderEvent {
        ReaderEvent::Removed {
            reader: reader.into(),
        }
    }

    fn locks(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Lock { session, .. } => Some(session.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn r_sess_2_removing_the_bound_card_locks_its_session_only() {
        let s = settings();
        let mut b = Bindings::default();
        b.on_reader_event(&insert("R0", piv(1)), &s, 0);
        b.on_reader_event(&insert("R1", piv(2)), &s, 0);
        bind(&mut b, "c1", "alice", Some(("R0", piv(1))));
        bind(&mut b, "c2", "bob", Some(("R1", piv(2))));
        bind(&mut b, "c3", "carol", None);
        let a = b.on_reader_event(&remove("R0"), &s, 10);
        assert_eq!(locks(&a), ["c1"]);
        assert!(b.sessions["c1"].is_locked());
        assert!(!b.sessions["c2"].is_locked());
        // Removed again (no card there any more): nothing.
        assert!(b.on_reader_event(&remove("R0"), &s, 20).is_empty());
        // The card comes back: nothing unlocks.
        let a = b.on_reader_event(&insert("R1", piv(1)), &s, 30);
        assert!(a.iter().all(|a| !matches!(a, Action::Unlocked { .. })));
        assert!(b.sessions["c1"].is_locked());
        // A reader that goes away takes its card with it.
        let a = b.on_reader_event(&ReaderEvent::ReaderDetached("R1".into()), &s, 40);
        assert_eq!(locks(&a), ["c1", "c2"]);
    }

    #[test]
    fn removal_locks_nothing_when_switched_off_and_unbound_cards_lock_nothing() {
        let s = SessionSettings {
            lock_on_card_removal: false,
            ..settings()
        };
        let mut b = Bindings::default();
        b.on_reader_event(&insert("R0", piv(1)), &s, 0);
        bind(&mut b, "c1", "alice", Some(("R0", piv(1))));
        assert!(b.on_reader_event(&remove("R0"), &s, 10).is_empty());
        let s = settings();
        let mut b = Bindings::default();
        bind(&mut b, "c1", "alice", None);
        b.on_reader_event(&insert("R0", piv(9)), &s, 0);
        assert!(b.on_reader_event(&remove("R0"), &s, 10).is_empty());
    }

    #[test]
    fn a_badge_locks_on_the_second_tap_not_when_it_leaves() {
        let s = settings();
        let mut b = Bindings::default();
        b.on_reader_event(&insert("NFC", badge(7)), &s, 0);
        bind(&mut b, "c1", "alice", Some(("NFC", badge(7))));
        assert!(b.on_reader_event(&remove("NFC"), &s, 10).is_empty());
        let a = b.on_reader_event(&insert("NFC", badge(7)), &s, 20);
        assert_eq!(locks(&a), ["c1"]);
        // Tapped again while locked: not locked twice, no switch.
        b.on_reader_event(&remove("NFC"), &s, 30);
        assert!(b
            .on_reader_event(&insert("NFC", badge(7)), &s, 40)
            .is_empty());
        // Off: never.
        let off = SessionSettings {
            lock_on_badge_retap: false,
            ..settings()
        };
        let mut b = Bindings::default();
        bind(&mut b, "c1", "alice", Some(("NFC", badge(7))));
        b.on_reader_event(&insert("NFC", badge(7)), &off, 0);
        b.on_reader_event(&remove("NFC"), &off, 10);
        assert!(b
            .on_reader_event(&insert("NFC", badge(7)), &off, 20)
            .is_empty());
    }

    #[test]
    fn r_sess_2_another_users_card_on_a_locked_session_switches() {
        let s = settings();
        let mut b = Bindings::default();
        b.on_reader_event(&insert("R0", piv(1)), &s, 0);
        bind(&mut b, "c1", "alice", Some(("R0", piv(1))));
        // Unlocked: another card does nothing.
        assert!(b.on_reader_event(&insert("R1", piv(2)), &s, 5).is_empty());
        b.on_reader_event(&remove("R1"), &s, 6);
        b.on_reader_event(&remove("R0"), &s, 10);
        // Alice's own card back: no switch.
        assert!(b.on_reader_event(&insert("R0", piv(1)), &s, 15).is_empty());
        b.on_reader_event(&remove("R0"), &s, 16);
        // An unknown card: the greeter.
        let a = b.on_reader_event(&insert("R1", piv(2)), &s, 20);
        assert_eq!(
            a,
            vec![Action::Switch {
                from: "c1".into(),
                from_user: "alice".into(),
                seat: "seat0".into(),
                card: format!("{} in R1", describe(&piv(2))),
                card_user: None,
                target: None,
            }]
        );
        // Bob's card, bound to his session on the seat: that session.
        b.on_reader_event(&remove("R1"), &s, 25);
        bind(&mut b, "c2", "bob", Some(("R1", piv(2))));
        if let Some(c2) = b.sessions.get_mut("c2") {
            c2.props.active = false;
        }
        let a = b.on_reader_event(&insert("R1", piv(2)), &s, 30);
        assert!(matches!(
            &a[..],
            [Action::Switch { from, target: Some(t), card_user: Some(u), .. }]
                if from == "c1" && t == "c2" && u == "bob"
        ));
        // A card known to be alice's (an earlier login): no switch.
        b.learn_card(&piv(3), "alice");
        assert!(b.on_reader_event(&insert("R2", piv(3)), &s, 40).is_empty());
        // Unreadable cards never switch.
        let mute = CardIdentity::Unreadable("mute".into());
        assert!(b.on_reader_event(&insert("R3", mute), &s, 50).is_empty());
    }

    #[test]
    fn r_sess_1_idle_locks_once_per_idle_period() {
        let mut b = Bindings::default();
        bind(&mut b, "c1", "alice", None);
        bind(&mut b, "c2", "bob", None);
        assert_eq!(b.next_deadline_ms(), None);
        let idle = SessionProps {
            active: true,
            idle_hint: true,
            idle_since_us: 1_000_000,
            ..SessionProps::default()
        };
        b.on_change(
            SessionChange {
                id: "c1".into(),
                props: Some(idle),
            },
            2_000,
        );
        assert_eq!(b.next_deadline_ms(), Some(1_000 + 180_000));
        assert!(b.on_time(180_999).is_empty());
        let a = b.on_time(181_000);
        assert_eq!(locks(&a), ["c1"]);
        assert_eq!(b.next_deadline_ms(), None);
        assert!(b.on_time(500_000).is_empty());
        // Active again, then idle again: a new period.
        b.on_change(
            SessionChange {
                id: "c1".into(),
                props: Some(SessionProps {
                    active: true,
                    ..SessionProps::default()
                }),
            },
            600_000,
        );
        let again = SessionProps {
            idle_since_us: 700_000_000,
            ..idle
        };
        b.on_change(
            SessionChange {
                id: "c1".into(),
                props: Some(again),
            },
            700_000,
        );
        assert_eq!(locks(&b.on_time(880_000)), ["c1"]);
    }

    #[test]
    fn unlock_and_end_are_reported() {
        let mut b = Bindings::default();
        bind(&mut b, "c1", "alice", None);
        let locked = SessionProps {
            active: true,
            locked_hint: true,
            ..SessionProps::default()
        };
        let change = |props| SessionChange {
            id: "c1".into(),
            props,
        };
        assert!(b.on_change(change(Some(locked)), 1).is_empty());
        assert!(b.sessions["c1"].is_locked());
        let a = b.on_change(
            change(Some(SessionProps {
                active: true,
                ..SessionProps::default()
            })),
            2,
        );
        assert!(matches!(&a[..], [Action::Unlocked { session, .. }] if session == "c1"));
        let a = b.on_change(change(None), 3);
        assert!(matches!(&a[..], [Action::Gone { session, .. }] if session == "c1"));
        assert!(b.sessions.is_empty());
        // Unknown sessions are ignored.
        assert!(b.on_change(change(Some(locked)), 4).is_empty());
    }

    #[test]
    fn lost_events_fail_closed() {
        let s = settings();
        let mut b = Bindings::default();
        b.on_reader_event(&insert("R0", piv(1)), &s, 0);
        bind(&mut b, "c1", "alice", Some(("R0", piv(1))));
        let a = b.resync(Present::new(), &s, 10);
        assert_eq!(locks(&a), ["c1"]);
        let mut present = Present::new();
        present.insert("R1".into(), piv(1));
        assert!(b.resync(present, &s, 20).is_empty());
        assert_eq!(b.sessions["c1"].card_in.as_deref(), Some("R1"));
    }
}
