//! The session flow against a fake logind (the real client is tested
//! against python-dbusmock in `hardware-tests/tests/agent_session.rs`).

use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;

use super::logind::{BoxFuture, SessionEntry, SessionProps, Watch};
use super::*;
use crate::card::{BadgeUid, CardIdentity, ReaderEvent};

#[derive(Default)]
struct FakeLogind {
    sessions: StdMutex<BTreeMap<String, SessionInfo>>,
    pids: StdMutex<BTreeMap<u32, String>>,
    calls: StdMutex<Vec<String>>,
    watchers: StdMutex<Vec<(String, mpsc::UnboundedSender<SessionChange>)>>,
    fail_watch: std::sync::atomic::AtomicBool,
}

impl FakeLogind {
    fn add(&self, id: &str, user: &str, uid: u32, class: &str, active: bool) {
        self.sessions.lock().unwrap().insert(
            id.into(),
            SessionInfo {
                id: id.into(),
                path: format!("/org/freedesktop/login1/session/{id}"),
                user: user.into(),
                uid,
                seat: "seat0".into(),
                class: class.into(),
                props: SessionProps {
                    active,
                    ..SessionProps::default()
                },
            },
        );
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn call(&self, c: String) {
        self.calls.lock().unwrap().push(c);
    }

    /// Plays the desktop / screen locker: new hints for `id`.
    fn change(&self, id: &str, props: Option<SessionProps>) {
        for (w, tx) in self.watchers.lock().unwrap().iter() {
            if w == id {
                let _ = tx.send(SessionChange {
                    id: id.into(),
                    props,
                });
            }
        }
    }

    fn get(&self, id: &str) -> Result<SessionInfo, LogindError> {
        self.sessions
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| LogindError::NoSuchSession(id.into()))
    }
}

impl Logind for FakeLogind {
    fn session_by_pid(&self, pid: u32) -> BoxFuture<'_, Result<SessionInfo, LogindError>> {
        Box::pin(async move {
            let id = self.pids.lock().unwrap().get(&pid).cloned();
            match id {
                Some(id) => self.get(&id),
                None => Err(LogindError::NoSuchSession(format!("of pid {pid}"))),
            }
        })
    }

    fn session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SessionInfo, LogindError>> {
        Box::pin(async move { self.get(id) })
    }

    fn list_sessions(&self) -> BoxFuture<'_, Result<Vec<SessionEntry>, LogindError>> {
        Box::pin(async move {
            Ok(self
                .sessions
                .lock()
                .unwrap()
                .values()
                .map(|s| SessionEntry {
                    id: s.id.clone(),
                    uid: s.uid,
                    user: s.user.clone(),
                    seat: s.seat.clone(),
                })
                .collect())
        })
    }

    fn lock_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), LogindError>> {
        Box::pin(async move {
            self.get(id)?;
            self.call(format!("lock {id}"));
            Ok(())
        })
    }

    fn activate_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), LogindError>> {
        Box::pin(async move {
            self.get(id)?;
            self.call(format!("activate {id}"));
            Ok(())
        })
    }

    fn display_manager_switch<'a>(
        &'a self,
        user: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), LogindError>> {
        Box::pin(async move {
            self.call(format!("dm {}", user.unwrap_or("greeter")));
            Ok(())
        })
    }

    fn watch<'a>(
        &'a self,
        session: &'a SessionInfo,
        changes: mpsc::UnboundedSender<SessionChange>,
    ) -> BoxFuture<'a, Result<Watch, LogindError>> {
        Box::pin(async move {
            if self.fail_watch.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(LogindError::Bus("the bus went away".into()));
            }
            self.watchers
                .lock()
                .unwrap()
                .push((session.id.clone(), changes));
            Ok(Watch::none())
        })
    }
}

fn names(uid: u32) -> Option<String> {
    match uid {
        1000 => Some("alice".into()),
        1001 => Some("bob".into()),
        1002 => Some("mallory".into()),
        120 => Some("gdm".into()),
        _ => None,
    }
}

fn root(pid: i32) -> Peer {
    Peer {
        uid: 0,
        gid: 0,
        pid: Some(pid),
        name: Some("root".into()),
    }
}

fn piv(n: u8) -> CardIdentity {
    CardIdentity::Piv {
        fingerprint: [n; 32],
    }
}

fn card(reader: &str, identity: CardIdentity) -> Option<CardUsed> {
    Some(CardUsed {
        reader: reader.into(),
        identity,
    })
}

fn user(u: &str) -> UserName {
    UserName::new(u).unwrap()
}

fn label(l: &str) -> Label {
    Label::new(l).unwrap()
}

struct Bed {
    logind: Arc<FakeLogind>,
    readers: Readers,
    sessions: Sessions,
}

fn bed(settings: SessionSettings) -> Bed {
    let logind = Arc::new(FakeLogind::default());
    logind.add("c0", "gdm", 120, "greeter", false);
    logind.add("c1", "alice", 1000, "user", true);
    logind.add("c2", "bob", 1001, "user", false);
    logind.add("c3", "mallory", 1002, "user", false);
    logind.pids.lock().unwrap().insert(4242, "c1".into());
    let readers = Readers::new();
    let sessions = Sessions::with_logind(
        settings,
        readers.clone(),
        Audit::default(),
        logind.clone(),
        names,
    );
    Bed {
        logind,
        readers,
        sessions,
    }
}

impl Bed {
    fn insert(&self, reader: &str, identity: CardIdentity) {
        self.readers.apply(ReaderEvent::Inserted {
            reader: reader.into(),
            identity,
        });
    }

    fn remove(&self, reader: &str) {
        self.readers.apply(ReaderEvent::Removed {
            reader: reader.into(),
        });
    }

    async fn login(&self, who: &str, used: Option<CardUsed>) {
        self.sessions
            .remember_login(&root(1), who, Purpose::Login, used, None, clock::now_ms())
            .await;
    }

    async fn open(&self, who: &str, id: Option<&str>) -> Reply {
        self.sessions
            .open(
                &root(4242),
                &user(who),
                &label("gdm-password"),
                id.map(label).as_ref(),
                None,
            )
            .await
    }

    /// Waits until the fake has seen `calls` (in order), or fails.
    async fn expect(&self, calls: &[&str]) {
        for _ in 0..400 {
            if self.logind.calls() == calls {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(self.logind.calls(), calls);
    }

    /// Lets the task run, then checks that nothing more was called.
    async fn quiet(&self, calls: &[&str]) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(self.logind.calls(), calls);
    }
}

fn opened(reply: &Reply) -> (String, bool) {
    match reply {
        Reply::SessionOpened {
            session_id,
            card_bound,
        } => (session_id.as_str().to_owned(), *card_bound),
        other => panic!("not opened: {other:?}"),
    }
}

fn refused_with(reply: &Reply, code: ErrorCode, words: &str) {
    match reply {
        Reply::Error { code: c, message } => {
            assert_eq!(*c, code, "{message:?}");
            assert!(message.as_str().contains(words), "{message:?}");
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test]
async fn r_sess_2_the_login_card_is_bound_and_its_removal_locks_that_session() {
    let b = bed(SessionSettings::default());
    b.insert("R0", piv(1));
    b.insert("R1", piv(2));
    b.login("alice", card("R0", piv(1))).await;
    // No session ID: the caller's session (GetSessionByPID).
    assert_eq!(opened(&b.open("alice", None).await), ("c1".into(), true));
    // An unbound card leaving locks nothing.
    b.remove("R1");
    b.quiet(&[]).await;
    b.remove("R0");
    b.expect(&["lock c1"]).await;
    assert_eq!(
        b.sessions.bound(),
        vec![("c1".into(), "alice".into(), true, true)]
    );
    // Back in: nothing unlocks.
    b.insert("R0", piv(1));
    b.quiet(&["lock c1"]).await;
}

#[tokio::test]
async fn a_session_without_a_recent_login_is_bound_without_a_card() {
    let b = bed(SessionSettings::default());
    b.insert("R0", piv(1));
    assert_eq!(
        opened(&b.open("alice", Some("c1")).await),
        ("c1".into(), false)
    );
    b.remove("R0");
    b.quiet(&[]).await;
    // A login too long ago binds nothing either.
    let old = clock::now_ms() - 121_000;
    b.sessions
        .remember_login(
            &root(1),
            "bob",
            Purpose::Login,
            card("R0", piv(2)),
            None,
            old,
        )
        .await;
    b.logind.pids.lock().unwrap().insert(4242, "c2".into());
    assert_eq!(opened(&b.open("bob", None).await), ("c2".into(), false));
}

#[tokio::test]
async fn one_login_binds_one_session() {
    let b = bed(SessionSettings::default());
    b.insert("R0", piv(1));
    b.login("alice", card("R0", piv(1))).await;
    assert!(opened(&b.open("alice", Some("c1")).await).1);
    b.logind.add("c9", "alice", 1000, "user", false);
    assert!(!opened(&b.open("alice", Some("c9")).await).1);
}

#[tokio::test]
async fn open_fails_closed() {
    let b = bed(SessionSettings::default());
    b.login("alice", card("R0", piv(1))).await;
    // Bob's session for alice.
    refused_with(
        &b.open("alice", Some("c2")).await,
        ErrorCode::Unauthorized,
        "belongs to bob",
    );
    // A session whose uid is not the named user's.
    b.logind.add("c8", "alice", 1001, "user", false);
    refused_with(
        &b.open("alice", Some("c8")).await,
        ErrorCode::Unauthorized,
        "uid 1001",
    );
    refused_with(
        &b.open("alice", Some("c77")).await,
        ErrorCode::Internal,
        "no session",
    );
    // Not root.
    let alice = Peer {
        uid: 1000,
        gid: 1000,
        pid: Some(4242),
        name: Some("alice".into()),
    };
    let r = b
        .sessions
        .open(&alice, &user("alice"), &label("x"), None, None)
        .await;
    refused_with(&r, ErrorCode::Unauthorized, "only root");
    // A caller outside any session, without a session ID.
    let r = b
        .sessions
        .open(&root(1), &user("alice"), &label("x"), None, None)
        .await;
    refused_with(&r, ErrorCode::Internal, "process 1");
    assert!(b.sessions.bound().is_empty());
    // The refused attempts did not use up the login.
    assert!(opened(&b.open("alice", Some("c1")).await).1);
}

#[tokio::test]
async fn an_unwatchable_session_is_not_bound() {
    let b = bed(SessionSettings::default());
    b.insert("R0", piv(1));
    b.login("alice", card("R0", piv(1))).await;
    b.logind
        .fail_watch
        .store(true, std::sync::atomic::Ordering::SeqCst);
    refused_with(
        &b.open("alice", None).await,
        ErrorCode::Internal,
        "watching session c1",
    );
    assert!(b.sessions.bound().is_empty());
    b.remove("R0");
    b.quiet(&[]).await;
}

#[tokio::test]
async fn a_card_that_left_before_the_session_opened_locks_it_at_once() {
    let b = bed(SessionSettings::default());
    b.login("alice", card("R0", piv(1))).await;
    assert!(opened(&b.open("alice", Some("c1")).await).1);
    b.expect(&["lock c1"]).await;
}

#[tokio::test]
async fn close_unbinds_and_checks_the_user() {
    let b = bed(SessionSettings::default());
    b.insert("R0", piv(1));
    b.login("alice", card("R0", piv(1))).await;
    opened(&b.open("alice", None).await);
    let r = b
        .sessions
        .close(
            &root(4242),
            &user("bob"),
            &label("login"),
            Some(&label("c1")),
        )
        .await;
    refused_with(&r, ErrorCode::Unauthorized, "alice's");
    let r = b
        .sessions
        .close(&root(4242), &user("alice"), &label("login"), None)
        .await;
    assert_eq!(r, Reply::SessionClosed {});
    assert!(b.sessions.bound().is_empty());
    b.remove("R0");
    b.quiet(&[]).await;
    // Closing what is not bound is fine.
    let r = b
        .sessions
        .close(
            &root(4242),
            &user("alice"),
            &label("login"),
            Some(&label("c1")),
        )
        .await;
    assert_eq!(r, Reply::SessionClosed {});
}

#[tokio::test]
async fn badge_re_tap_locks() {
    let b = bed(SessionSettings::default());
    let badge = CardIdentity::Badge(BadgeUid::new(&[4, 3, 2, 1]).unwrap());
    b.insert("NFC", badge.clone());
    b.login("alice", card("NFC", badge.clone())).await;
    opened(&b.open("alice", None).await);
    b.remove("NFC");
    b.quiet(&[]).await;
    b.insert("NFC", badge);
    b.expect(&["lock c1"]).await;
}

#[tokio::test]
async fn r_sess_2_another_card_on_the_locked_session_switches_user() {
    let b = bed(SessionSettings::default());
    b.insert("R0", piv(1));
    b.login("alice", card("R0", piv(1))).await;
    opened(&b.open("alice", None).await);
    b.remove("R0");
    b.expect(&["lock c1"]).await;
    // Unknown card: the greeter session.
    b.insert("R1", piv(2));
    b.expect(&["lock c1", "lock c1", "activate c0"]).await;
    b.remove("R1");
    // Bob's card (he logged in here before): his session.
    b.sessions
        .remember_login(
            &root(1),
            "bob",
            Purpose::StepUp,
            card("R1", piv(3)),
            None,
            clock::now_ms(),
        )
        .await;
    b.insert("R1", piv(3));
    b.expect(&[
        "lock c1",
        "lock c1",
        "activate c0",
        "lock c1",
        "activate c2",
    ])
    .await;
}

#[tokio::test]
async fn the_display_manager_switch_and_no_switch() {
    let dm = SessionSettings {
        user_switch: UserSwitch::DisplayManager,
        ..SessionSettings::default()
    };
    let b = bed(dm);
    b.insert("R0", piv(1));
    b.login("alice", card("R0", piv(1))).await;
    opened(&b.open("alice", None).await);
    b.remove("R0");
    b.insert("R1", piv(2));
    b.expect(&["lock c1", "lock c1", "dm greeter"]).await;

    let off = SessionSettings {
        user_switch: UserSwitch::Off,
        ..SessionSettings::default()
    };
    let b = bed(off);
    b.insert("R0", piv(1));
    b.login("alice", card("R0", piv(1))).await;
    opened(&b.open("alice", None).await);
    b.remove("R0");
    b.insert("R1", piv(2));
    b.quiet(&["lock c1"]).await;
}

#[tokio::test]
async fn r_sess_1_idle_lock_from_the_ticket() {
    let b = bed(SessionSettings::default());
    let claims = serde_json::json!({
        "iss": "clinauth.test", "sub": "alice", "ws": "ws1", "purpose": "login",
        "rule": "r", "factors": ["smartcard", "card_pin"], "policy_version": 1,
        "policy_digest": "sha256:00", "iat": 0, "exp": 1, "jti": "j", "idle_lock": 60
    });
    let ticket = format!(
        "e30.{}.c2ln",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
    );
    assert_eq!(
        ticket_idle_lock(&ticket, "alice"),
        Some(Duration::from_secs(60))
    );
    assert_eq!(ticket_idle_lock(&ticket, "bob"), None);
    assert_eq!(ticket_idle_lock("not.a.ticket", "alice"), None);
    b.sessions
        .remember_login(
            &root(1),
            "alice",
            Purpose::Login,
            None,
            Some(&ticket),
            clock::now_ms(),
        )
        .await;
    opened(&b.open("alice", None).await);
    // Idle, 59 s ago: not yet.
    let now_us = u64::try_from(clock::now_ms()).unwrap() * 1000;
    let idle = |since_us| SessionProps {
        active: true,
        idle_hint: true,
        idle_since_us: since_us,
        ..SessionProps::default()
    };
    b.logind.change("c1", Some(idle(now_us - 59_800_000)));
    b.quiet(&[]).await;
    b.expect(&["lock c1"]).await;
    // Once per idle period.
    b.quiet(&["lock c1"]).await;
    // Unlocked and active, then idle long ago: at once.
    b.logind.change(
        "c1",
        Some(SessionProps {
            active: true,
            ..SessionProps::default()
        }),
    );
    b.logind.change("c1", Some(idle(now_us - 3_600_000_000)));
    b.expect(&["lock c1", "lock c1"]).await;
}

#[tokio::test]
async fn unlock_logins_rebind_only_their_own_session() {
    let b = bed(SessionSettings::default());
    b.insert("R0", piv(1));
    b.login("alice", card("R0", piv(1))).await;
    opened(&b.open("alice", None).await);
    b.remove("R0");
    b.expect(&["lock c1"]).await;
    assert!(b.sessions.bound()[0].3, "locked");
    // Bob unlocking from alice's session: nothing.
    b.sessions
        .remember_login(
            &root(4242),
            "bob",
            Purpose::Unlock,
            None,
            None,
            clock::now_ms(),
        )
        .await;
    assert!(b.sessions.bound()[0].3, "still locked");
    // Alice with another card at her session: rebound, and tap-out
    // follows that card.
    b.sessions
        .remember_login(
            &root(4242),
            "alice",
            Purpose::Unlock,
            card("R1", piv(6)),
            None,
            clock::now_ms(),
        )
        .await;
    assert!(!b.sessions.bound()[0].3, "unlocked");
    b.insert("R1", piv(6));
    b.quiet(&["lock c1"]).await;
    b.remove("R1");
    b.expect(&["lock c1", "lock c1"]).await;
}

#[tokio::test]
async fn status_names_the_session_user() {
    let b = bed(SessionSettings::default());
    b.insert("R0", piv(1));
    b.login("alice", card("R0", piv(1))).await;
    opened(&b.open("alice", None).await);
    assert_eq!(b.sessions.session_user(&root(1)).as_deref(), Some("alice"));
    let bob = Peer {
        uid: 1001,
        gid: 1001,
        pid: None,
        name: Some("bob".into()),
    };
    assert_eq!(b.sessions.session_user(&bob), None);
    b.remove("R0");
    b.expect(&["lock c1"]).await;
    assert_eq!(b.sessions.session_user(&root(1)), None);
}

#[tokio::test]
async fn a_session_that_ends_is_forgotten() {
    let b = bed(SessionSettings::default());
    opened(&b.open("alice", None).await);
    b.logind.change("c1", None);
    for _ in 0..100 {
        if b.sessions.bound().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("still bound");
}

#[test]
fn settings_defaults_and_refusals() {
    let parse = |t: &str| toml::from_str::<SessionSettings>(t);
    let d = parse("").unwrap();
    assert_eq!(d, SessionSettings::default());
    assert!(d.lock_on_card_removal && d.lock_on_badge_retap);
    assert_eq!(d.idle_lock, Duration::from_secs(300));
    assert_eq!(d.bus, BusAddress::System);
    assert_eq!(d.user_switch, UserSwitch::Logind);
    let t = parse(
        "bus = \"unix:path=/tmp/bus\"\nuser_switch = \"display_manager\"\nidle_lock = \"3m\"",
    )
    .unwrap();
    assert_eq!(t.bus, BusAddress::Address("unix:path=/tmp/bus".into()));
    assert_eq!(t.user_switch, UserSwitch::DisplayManager);
    assert_eq!(t.idle_lock, Duration::from_secs(180));
    for bad in [
        "bus = \"session\"",
        "idle_lock = \"1s\"",
        "idle_lock = \"2h\"",
        "bind_window = \"1h\"",
        "user_switch = \"vt\"",
        "lock_on_card_remova = true",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}
