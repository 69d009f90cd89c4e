//! Which card belongs to which logind session: the logins waiting for their
//! PAM session, the bound sessions with what the agent knows of them, and
//! the cards last seen in the readers. Pure state (no I/O, time passed in);
//! [`super::tapout`] decides what reader and session events do to it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::card::CardIdentity;
use crate::login::CardUsed;

use super::logind::{SessionInfo, SessionProps, Watch};

/// Logins waiting for their session, at most.
const MAX_PENDING: usize = 32;
/// Cards remembered with their user (for the user switch), at most.
const MAX_KNOWN_CARDS: usize = 64;

/// A successful login not yet bound to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// Who.
    pub user: String,
    /// The card or badge used, if any.
    pub card: Option<CardUsed>,
    /// The policy's idle lock from the ticket, if it had one.
    pub idle_lock: Option<Duration>,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// A logind session the agent watches.
#[derive(Debug)]
pub struct Binding {
    /// The logind session ID.
    pub session: String,
    /// Its user.
    pub user: String,
    /// The user's uid.
    pub uid: u32,
    /// Its seat (may be empty).
    pub seat: String,
    /// The card whose removal (or the badge whose re-tap) locks it.
    pub card: Option<CardUsed>,
    /// Locks after this long idle.
    pub idle_lock: Duration,
    /// Whether `idle_lock` is the policy's (from the ticket) or the
    /// configured fallback.
    pub idle_lock_from_policy: bool,
    /// logind's hints, as last seen.
    pub props: SessionProps,
    /// The agent locked it (or saw it locked) and has seen no unlock since.
    pub locked: bool,
    /// When it was last locked, ms since the epoch.
    pub locked_ms: i64,
    /// The reader the bound card is in now.
    pub card_in: Option<String>,
    /// The bound badge left its reader since the last tap (a new tap is a
    /// re-tap).
    pub badge_away: bool,
    /// Since when the session is idle, ms since the epoch.
    pub idle_since_ms: Option<i64>,
    /// The idle period already acted on (locked once for it).
    pub idle_acted: Option<i64>,
    /// When the binding was made.
    pub opened_ms: i64,
    /// Keeps logind's change signals coming.
    pub(crate) watch: Watch,
}

impl Binding {
    /// A new binding of `session` to `card`.
    pub fn new(
        session: &SessionInfo,
        card: Option<CardUsed>,
        idle_lock: Duration,
        idle_lock_from_policy: bool,
        now_ms: i64,
    ) -> Binding {
        let mut b = Binding {
            session: session.id.clone(),
            user: session.user.clone(),
            uid: session.uid,
            seat: session.seat.clone(),
            card,
            idle_lock,
            idle_lock_from_policy,
            props: SessionProps::default(),
            locked: false,
            locked_ms: 0,
            card_in: None,
            badge_away: false,
            idle_since_ms: None,
            idle_acted: None,
            opened_ms: now_ms,
            watch: Watch::none(),
        };
        b.apply_props(session.props, now_ms);
        b.locked = session.props.locked_hint;
        b
    }

    /// Whether the session is locked, as far as the agent knows.
    pub fn is_locked(&self) -> bool {
        self.locked || self.props.locked_hint
    }

    /// Whether `identity` is the bound card.
    pub fn is_card(&self, identity: &CardIdentity) -> bool {
        self.card.as_ref().is_some_and(|c| &c.identity == identity)
    }

    /// Takes new hints from logind; returns whether the session went from
    /// locked to unlocked.
    pub fn apply_props(&mut self, props: SessionProps, now_ms: i64) -> bool {
        let was_locked = self.props.locked_hint;
        self.idle_since_ms = if props.idle_hint {
            if props.idle_since_us > 0 {
                Some(i64::try_from(props.idle_since_us / 1000).unwrap_or(i64::MAX))
            } else {
                // Idle, since an unknown time: since now at the latest.
                Some(self.idle_since_ms.unwrap_or(now_ms))
            }
        } else {
            None
        };
        self.props = props;
        if props.locked_hint && !was_locked {
            self.locked = true;
            self.locked_ms = now_ms;
        }
        let unlocked = was_locked && !props.locked_hint;
        if unlocked {
            self.locked = false;
        }
        unlocked
    }

    /// When the idle lock is due, ms since the epoch (none: not idle, or
    /// already locked for this idle period, or locked anyway).
    pub fn idle_deadline_ms(&self) -> Option<i64> {
        let since = self.idle_since_ms?;
        if self.props.locked_hint || self.idle_acted == Some(since) {
            return None;
        }
        let lock_ms = i64::try_from(self.idle_lock.as_millis()).unwrap_or(i64::MAX);
        Some(since.saturating_add(lock_ms))
    }
}

/// What is bound, pending and present.
#[derive(Debug, Default)]
pub struct Bindings {
    pending: Vec<PendingLogin>,
    known_cards: Vec<(CardIdentity, String)>,
    /// The bound sessions by ID.
    pub sessions: BTreeMap<String, Binding>,
    /// The cards in the readers, as the reader events said.
    pub present: BTreeMap<String, CardIdentity>,
}

impl Bindings {
    /// Remembers a login of `user` for the session about to open (the
    /// latest login of a user replaces an earlier one still waiting).
    pub fn remember(&mut self, login: PendingLogin) {
        if let Some(card) = &login.card {
            self.learn_card(&card.identity, &login.user);
        }
        self.pending.retain(|p| p.user != login.user);
        self.pending.push(login);
        if self.pending.len() > MAX_PENDING {
            let excess = self.pending.len() - MAX_PENDING;
            self.pending.drain(..excess);
        }
    }

    /// Records that `identity` belongs to `user` (a login with it succeeded).
    pub fn learn_card(&mut self, identity: &CardIdentity, user: &str) {
        self.known_cards.retain(|(c, _)| c != identity);
        self.known_cards.push((identity.clone(), user.to_owned()));
        if self.known_cards.len() > MAX_KNOWN_CARDS {
            let excess = self.known_cards.len() - MAX_KNOWN_CARDS;
            self.known_cards.drain(..excess);
        }
    }

    /// Whose card `identity` is, if a login with it was seen.
    pub fn owner_of(&self, identity: &CardIdentity) -> Option<&str> {
        self.sessions
            .values()
            .find(|b| b.is_card(identity))
            .map(|b| b.user.as_str())
            .or_else(|| {
                self.known_cards
                    .iter()
                    .rev()
                    .find(|(c, _)| c == identity)
                    .map(|(_, u)| u.as_str())
            })
    }

    /// Takes `user`'s login if it happened within `window` before `now_ms`
    /// (one login binds one session). Older logins are dropped.
    pub fn take_pending(
        &mut self,
        user: &str,
        now_ms: i64,
        window: Duration,
    ) -> Option<PendingLogin> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let oldest = now_ms.saturating_sub(window_ms);
        // A login from the future (clock stepped back) is not trusted either.
        let newest = now_ms.saturating_add(5_000);
        self.pending
            .retain(|p| p.at_ms >= oldest && p.at_ms <= newest);
        let at = self.pending.iter().position(|p| p.user == user)?;
        Some(self.pending.remove(at))
    }

    /// The reader `identity` is in now, if any.
    pub fn reader_of(&self, identity: &CardIdentity) -> Option<String> {
        self.present
            .iter()
            .find(|(_, c)| *c == identity)
            .map(|(r, _)| r.clone())
    }

    /// The earliest idle-lock deadline of all bound sessions.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.sessions
            .values()
            .filter_map(Binding::idle_deadline_ms)
            .min()
    }

    /// The user of the most recently opened session that is not locked.
    pub fn front_user(&self) -> Option<&str> {
        self.sessions
            .values()
            .filter(|b| !b.is_locked())
            .max_by_key(|b| b.opened_ms)
            .map(|b| b.user.as_str())
    }
}

/// A card for the log: the kind, and a PIV certificate's fingerprint prefix
/// (never a badge's UID, which could be cloned onto another badge).
pub fn describe(identity: &CardIdentity) -> String {
    match identity {
        CardIdentity::Piv { fingerprint } => {
            let prefix: String = fingerprint
                .iter()
                .take(6)
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("PIV card sha256:{prefix}…")
        }
        CardIdentity::Badge(_) => "badge".into(),
        CardIdentity::Unknown { .. } => "unknown card".into(),
        CardIdentity::Unreadable(_) => "unreadable card".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::BadgeUid;

    fn piv(n: u8) -> CardIdentity {
        CardIdentity::Piv {
            fingerprint: [n; 32],
        }
    }

    fn login(user: &str, at_ms: i64, card: Option<CardIdentity>) -> PendingLogin {
        PendingLogin {
            user: user.into(),
            card: card.map(|identity| CardUsed {
                reader: "R0".into(),
                identity,
            }),
            idle_lock: None,
            at_ms,
        }
    }

    #[test]
    fn a_login_binds_one_session_within_the_window() {
        let mut b = Bindings::default();
        b.remember(login("alice", 1_000, Some(piv(1))));
        let w = Duration::from_secs(120);
        assert!(b.take_pending("bob", 2_000, w).is_none());
        let got = b.take_pending("alice", 2_000, w).unwrap();
        assert_eq!(got.card.unwrap().identity, piv(1));
        // Taken: a second session gets nothing.
        assert!(b.take_pending("alice", 2_000, w).is_none());
        // Too old.
        b.remember(login("alice", 1_000, None));
        assert!(b.take_pending("alice", 1_000 + 120_001, w).is_none());
        // From the future.
        b.remember(login("alice", 100_000, None));
        assert!(b.take_pending("alice", 1_000, w).is_none());
    }

    #[test]
    fn the_latest_login_counts_and_cards_are_remembered() {
        let mut b = Bindings::default();
        b.remember(login("alice", 1_000, Some(piv(1))));
        b.remember(login("alice", 2_000, Some(piv(2))));
        b.remember(login("bob", 2_000, Some(piv(1))));
        let got = b
            .take_pending("alice", 3_000, Duration::from_secs(60))
            .unwrap();
        assert_eq!(got.card.unwrap().identity, piv(2));
        assert_eq!(b.owner_of(&piv(1)), Some("bob"));
        assert_eq!(b.owner_of(&piv(2)), Some("alice"));
        assert_eq!(b.owner_of(&piv(3)), None);
        for i in 0..100u8 {
            b.remember(login(&format!("u{i}"), 2_000, Some(piv(i))));
        }
        assert!(b.pending.len() <= MAX_PENDING);
        assert!(b.known_cards.len() <= MAX_KNOWN_CARDS);
    }

    #[test]
    fn idle_deadline_follows_the_hints() {
        let info = SessionInfo {
            id: "c1".into(),
            path: "/s/c1".into(),
            user: "alice".into(),
            uid: 1000,
            seat: "seat0".into(),
            class: "user".into(),
            props: SessionProps::default(),
        };
        let mut b = Binding::new(&info, None, Duration::from_secs(180), true, 0);
        assert_eq!(b.idle_deadline_ms(), None);
        let idle = SessionProps {
            active: true,
            idle_hint: true,
            idle_since_us: 10_000_000,
            ..SessionProps::default()
        };
        b.apply_props(idle, 20_000);
        assert_eq!(b.idle_deadline_ms(), Some(10_000 + 180_000));
        b.idle_acted = Some(10_000);
        assert_eq!(b.idle_deadline_ms(), None);
        // Idle without a time: from when it was seen.
        let mut unknown = idle;
        unknown.idle_since_us = 0;
        b.apply_props(SessionProps::default(), 30_000);
        b.apply_props(unknown, 40_000);
        assert_eq!(b.idle_deadline_ms(), Some(40_000 + 180_000));
        // Locked by the screen locker: no idle lock; unlocked: reported.
        let mut locked = unknown;
        locked.locked_hint = true;
        assert!(!b.apply_props(locked, 50_000));
        assert!(b.is_locked());
        assert_eq!(b.idle_deadline_ms(), None);
        assert!(b.apply_props(unknown, 60_000));
        assert!(!b.is_locked());
    }

    #[test]
    fn badges_are_never_logged_by_uid() {
        let uid = BadgeUid::new(&[0xDE, 0xAD, 0xBE, 0xEF]).unwrap();
        assert_eq!(describe(&CardIdentity::Badge(uid)), "badge");
        assert!(describe(&piv(0xab)).starts_with("PIV card sha256:abababababab"));
    }
}
