//! The agent's sessions (R-SESS-1/2) for real: the agent's reader watcher on
//! the private pcscd with the virtual PIV cards and badge of this crate, its
//! logind client against python-dbusmock's `logind` template on a private
//! bus, and its tap-out task on a current-thread runtime as in the agent.
//! What logind was asked is read back from the mock (`MethodCalled`
//! signals, `GetMethodCalls`).
//!
//! The sessions' users are real accounts of the system's user database
//! (`daemon`, uid 1; `bin`, uid 2; `sys`, uid 3): the agent checks that a
//! session's uid is its user's.
//!
//! Needs `pcscd vsmartcard-vpcd dbus python3-dbusmock`; set
//! `CLINAUTH_SKIP_SESSION=1` to skip (no devices: every test is ignored).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clinauth_agent::card::CardIdentity;
use clinauth_agent::clock;
use clinauth_agent::login::CardUsed;
use clinauth_agent::session::{SessionSettings, Sessions};
use clinauth_hardware_tests::session_bed::{pam_peer, piv_card, SessionBed};
use clinauth_hardware_tests::vpcd::VirtualIcc;
use clinauth_hardware_tests::{VirtualBadge, VirtualCard};
use clinauth_policy::Purpose;
use clinauth_proto::agent::{ErrorCode, EventKind, Reply};
use clinauth_proto::{Label, UserName};
use libtest_mimic::{Arguments, Failed, Trial};

type TestResult = Result<(), Failed>;

/// pcscd 1.9.9 polls a vpcd reader every 400 ms: a removal is seen within
/// one poll; this bound adds generous slack for a loaded machine.
const LOCK_WITHIN: Duration = Duration::from_millis(2000);

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

fn err(e: impl std::fmt::Display) -> Failed {
    e.to_string().into()
}

/// A card in reader `i`, as the agent sees it.
struct Inserted<C: VirtualIcc + 'static> {
    card: VirtualCard<C>,
    reader: String,
    identity: CardIdentity,
}

impl<C: VirtualIcc + 'static> Inserted<C> {
    fn used(&self) -> Option<CardUsed> {
        Some(CardUsed {
            reader: self.reader.clone(),
            identity: self.identity.clone(),
        })
    }

    /// Removes the card; returns when.
    fn remove(&mut self) -> Result<Instant, Failed> {
        let at = Instant::now();
        self.card.remove().map_err(err)?;
        Ok(at)
    }

    fn reinsert(&mut self, bed: &SessionBed) -> TestResult {
        ensure!(
            bed.wait_absent(&self.reader, Duration::from_secs(5)),
            "{} still present",
            self.reader
        );
        self.card.insert().map_err(err)?;
        ensure!(
            bed.wait_present(&self.reader, Duration::from_secs(10))
                .as_ref()
                == Some(&self.identity),
            "{} not seen again",
            self.reader
        );
        Ok(())
    }
}

fn insert<C: VirtualIcc + 'static>(
    bed: &SessionBed,
    i: usize,
    icc: C,
) -> Result<Inserted<C>, Failed> {
    let reader = bed.reader(i).ok_or("no such reader")?.name.clone();
    let addr = bed.card_addr(i).ok_or("no such reader")?;
    ensure!(
        bed.wait_absent(&reader, Duration::from_secs(5)),
        "{reader} is not empty"
    );
    let mut card = VirtualCard::new(icc, addr);
    card.insert().map_err(err)?;
    let identity = bed
        .wait_present(&reader, Duration::from_secs(10))
        .ok_or_else(|| format!("the agent does not see the card in {reader}"))?;
    Ok(Inserted {
        card,
        reader,
        identity,
    })
}

fn login(bed: &SessionBed, s: &Sessions, user: &str, card: Option<CardUsed>) -> TestResult {
    let (s, user) = (s.clone(), user.to_owned());
    bed.run(async move {
        s.remember_login(
            &pam_peer(),
            &user,
            Purpose::Login,
            card,
            None,
            clock::now_ms(),
        )
        .await
    })
    .map_err(err)
}

fn open(bed: &SessionBed, s: &Sessions, user: &str, id: Option<&str>) -> Result<Reply, Failed> {
    let s = s.clone();
    let user = UserName::new(user).map_err(err)?;
    let service = Label::new("login").map_err(err)?;
    let id = id.map(Label::new).transpose().map_err(err)?;
    bed.run(async move {
        s.open(&pam_peer(), &user, &service, id.as_ref(), None)
            .await
    })
    .map_err(err)
}

fn close(bed: &SessionBed, s: &Sessions, user: &str, id: Option<&str>) -> Result<Reply, Failed> {
    let s = s.clone();
    let user = UserName::new(user).map_err(err)?;
    let service = Label::new("login").map_err(err)?;
    let id = id.map(Label::new).transpose().map_err(err)?;
    bed.run(async move { s.close(&pam_peer(), &user, &service, id.as_ref()).await })
        .map_err(err)
}

fn expect_opened(reply: &Reply, id: &str, card_bound: bool) -> TestResult {
    match reply {
        Reply::SessionOpened {
            session_id,
            card_bound: bound,
        } if session_id.as_str() == id && *bound == card_bound => Ok(()),
        other => Err(format!("expected session {id} (card {card_bound}): {other:?}").into()),
    }
}

fn no_lock_calls(bed: &SessionBed, within: Duration) -> TestResult {
    let mut watch = bed.logind.watch_calls().map_err(err)?;
    let calls = watch.drain(within);
    ensure!(
        calls.iter().all(|c| c.method != "LockSession"),
        "unexpected calls: {calls:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------- tests

/// The next session event, within a few seconds.
fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<clinauth_proto::agent::AgentEvent>,
) -> Result<clinauth_proto::agent::AgentEvent, Failed> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match events.try_recv() {
            Ok(e) => return Ok(e),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("no session event: {e}").into()),
        }
    }
}

fn r_sess_2_card_removal_locks_the_bound_session(bed: &SessionBed) -> TestResult {
    let logind = &bed.logind;
    logind
        .add_session("a1", "seat0", 1, "daemon", true)
        .map_err(err)?;
    logind
        .add_session("a2", "seat0", 2, "bin", false)
        .map_err(err)?;
    // PAM calls from its process, in session a1 (GetSessionByPID).
    logind
        .set_session_of_pid(std::process::id(), "a1")
        .map_err(err)?;
    let s = bed.sessions(bed.settings());
    let mut card = insert(bed, 0, piv_card("daemon")?)?;
    login(bed, &s, "daemon", card.used())?;
    expect_opened(&open(bed, &s, "daemon", None)?, "a1", true)?;
    // An unbound card coming and going locks nothing.
    let mut other = insert(bed, 1, piv_card("bin")?)?;
    other.remove()?;
    no_lock_calls(bed, Duration::from_millis(1200))?;
    // The bound card leaves: a1 locks, in bounded time; a2 does not.
    let mut watch = logind.watch_calls().map_err(err)?;
    let mut events = s.subscribe();
    let removed = card.remove()?;
    let call = watch
        .wait_for("LockSession", "a1", LOCK_WITHIN * 2)
        .ok_or("no LockSession(a1) after the card left")?;
    let took = call.at.duration_since(removed);
    eprintln!("card removal -> LockSession: {took:?}");
    ensure!(took <= LOCK_WITHIN, "locked after {took:?}");
    let locks = logind.calls("LockSession").map_err(err)?;
    ensure!(
        locks == vec![vec!["a1".to_owned()]],
        "lock calls: {locks:?}"
    );
    // Subscribers (an EHR hiding its chart) hear of it.
    let locked = next_event(&mut events)?;
    ensure!(
        locked.kind == EventKind::SessionLocked
            && locked.session.as_ref().map(|l| l.as_str()) == Some("a1")
            && locked.user.as_ref().map(|u| u.as_str()) == Some("daemon"),
        "{locked:?}"
    );
    // Back in: nothing is unlocked (the agent never unlocks).
    card.reinsert(bed)?;
    let after = watch.drain(Duration::from_millis(800));
    ensure!(
        after
            .iter()
            .all(|c| !c.method.starts_with("Unlock") && c.method != "ActivateSession"),
        "calls after reinsertion: {after:?}"
    );
    // Closed: the card no longer locks anything.
    let closed = close(bed, &s, "daemon", None)?;
    ensure!(closed == Reply::SessionClosed {}, "close: {closed:?}");
    ensure!(s.bound().is_empty(), "still bound: {:?}", s.bound());
    card.remove()?;
    no_lock_calls(bed, Duration::from_millis(1200))?;
    Ok(())
}

fn r_sess_2_another_users_card_on_a_locked_session_switches(bed: &SessionBed) -> TestResult {
    let logind = &bed.logind;
    logind
        .add_session("b1", "seat0", 1, "daemon", true)
        .map_err(err)?;
    logind
        .add_session("b2", "seat0", 2, "bin", false)
        .map_err(err)?;
    logind
        .add_session("bg", "seat0", 3, "sys", false)
        .map_err(err)?;
    logind.set_class("bg", "greeter").map_err(err)?;
    let s = bed.sessions(bed.settings());
    // bin's session, bound to bin's card, in the background (locked when
    // the card left).
    let mut bins = insert(bed, 1, piv_card("bin")?)?;
    login(bed, &s, "bin", bins.used())?;
    expect_opened(&open(bed, &s, "bin", Some("b2"))?, "b2", true)?;
    let mut watch = logind.watch_calls().map_err(err)?;
    bins.remove()?;
    watch
        .wait_for("LockSession", "b2", LOCK_WITHIN * 2)
        .ok_or("b2 not locked")?;
    // daemon's session in front; the card leaves: locked.
    let mut daemons = insert(bed, 0, piv_card("daemon")?)?;
    login(bed, &s, "daemon", daemons.used())?;
    expect_opened(&open(bed, &s, "daemon", Some("b1"))?, "b1", true)?;
    daemons.remove()?;
    watch
        .wait_for("LockSession", "b1", LOCK_WITHIN * 2)
        .ok_or("b1 not locked")?;
    // A card nobody logged in with here: locked again, then the greeter.
    let mut events = s.subscribe();
    let mut stranger = insert(bed, 1, piv_card("sys")?)?;
    watch
        .wait_for("LockSession", "b1", LOCK_WITHIN * 2)
        .ok_or("b1 not locked before the switch")?;
    watch
        .wait_for("ActivateSession", "bg", LOCK_WITHIN * 2)
        .ok_or("no switch to the greeter")?;
    let mut kinds = Vec::new();
    while !kinds.contains(&EventKind::UserSwitched) {
        kinds.push(next_event(&mut events)?.kind);
    }
    // The session is locked (again, maybe more than once) before the switch.
    ensure!(
        kinds.len() >= 2
            && kinds[..kinds.len() - 1]
                .iter()
                .all(|k| *k == EventKind::SessionLocked),
        "{kinds:?}"
    );
    stranger.remove()?;
    // bin's card: bin's session.
    bins.reinsert(bed)?;
    watch
        .wait_for("ActivateSession", "b2", LOCK_WITHIN * 2)
        .ok_or("no switch to bin's session")?;
    let activated = logind.calls("ActivateSession").map_err(err)?;
    ensure!(
        activated == vec![vec!["bg".to_owned()], vec!["b2".to_owned()]],
        "ActivateSession calls: {activated:?}"
    );
    // No unlock of anything, ever.
    for m in ["UnlockSession", "UnlockSessions"] {
        let c = logind.calls(m).map_err(err)?;
        ensure!(c.is_empty(), "{m}: {c:?}");
    }
    Ok(())
}

fn badge_re_tap_locks_its_session(bed: &SessionBed) -> TestResult {
    let logind = &bed.logind;
    logind
        .add_session("c1", "seat0", 1, "daemon", true)
        .map_err(err)?;
    let s = bed.sessions(bed.settings());
    let badge =
        VirtualBadge::new(&[0x04, 0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6]).map_err(|_| "uid")?;
    let mut tap = insert(bed, 0, badge)?;
    ensure!(
        matches!(tap.identity, CardIdentity::Badge(_)),
        "not a badge: {:?}",
        tap.identity
    );
    login(bed, &s, "daemon", tap.used())?;
    expect_opened(&open(bed, &s, "daemon", Some("c1"))?, "c1", true)?;
    // The badge leaves the reader: that is what a tap is.
    tap.remove()?;
    no_lock_calls(bed, Duration::from_millis(1200))?;
    let mut watch = logind.watch_calls().map_err(err)?;
    tap.reinsert(bed)?;
    watch
        .wait_for("LockSession", "c1", LOCK_WITHIN)
        .ok_or("the second tap did not lock")?;
    Ok(())
}

fn r_sess_1_idle_lock_from_logind_hints(bed: &SessionBed) -> TestResult {
    let logind = &bed.logind;
    logind
        .add_session("d1", "seat0", 1, "daemon", true)
        .map_err(err)?;
    let settings = SessionSettings {
        idle_lock: Duration::from_secs(10),
        ..bed.settings()
    };
    let s = bed.sessions(settings);
    // No login: bound without a card, with the configured idle lock.
    expect_opened(&open(bed, &s, "daemon", Some("d1"))?, "d1", false)?;
    let mut watch = logind.watch_calls().map_err(err)?;
    // Busy: never locked.
    logind.set_idle("d1", false, 0).map_err(err)?;
    ensure!(
        watch
            .wait_for("LockSession", "d1", Duration::from_millis(500))
            .is_none(),
        "locked while busy"
    );
    // Idle for 9 s already: locked 1 s from now, not before.
    let now_us = u64::try_from(clock::now_ms()).map_err(err)? * 1000;
    let idle_at = Instant::now();
    logind
        .set_idle("d1", true, now_us - 9_000_000)
        .map_err(err)?;
    ensure!(
        watch
            .wait_for("LockSession", "d1", Duration::from_millis(700))
            .is_none(),
        "locked before the idle time"
    );
    let call = watch
        .wait_for("LockSession", "d1", Duration::from_secs(3))
        .ok_or("not locked after the idle time")?;
    let took = call.at.duration_since(idle_at);
    eprintln!("idle lock after {took:?} (due after 1 s)");
    ensure!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(2500),
        "idle lock after {took:?}"
    );
    // Once per idle period.
    ensure!(
        watch
            .wait_for("LockSession", "d1", Duration::from_millis(1500))
            .is_none(),
        "locked twice"
    );
    Ok(())
}

fn open_session_fails_closed(bed: &SessionBed) -> TestResult {
    let logind = &bed.logind;
    logind
        .add_session("e1", "seat0", 2, "bin", true)
        .map_err(err)?;
    // uid 2 is bin, but logind calls the session's user "daemon".
    logind
        .add_session("e2", "seat0", 2, "daemon", false)
        .map_err(err)?;
    let s = bed.sessions(bed.settings());
    let refused = |reply: Reply, code: ErrorCode, words: &str| -> TestResult {
        match reply {
            Reply::Error { code: c, message } if c == code && message.as_str().contains(words) => {
                Ok(())
            }
            other => Err(format!("expected {code} ({words}): {other:?}").into()),
        }
    };
    refused(
        open(bed, &s, "daemon", Some("e1"))?,
        ErrorCode::Unauthorized,
        "belongs to bin",
    )?;
    refused(
        open(bed, &s, "daemon", Some("e2"))?,
        ErrorCode::Unauthorized,
        "uid 2",
    )?;
    refused(
        open(bed, &s, "daemon", Some("nosuch"))?,
        ErrorCode::Internal,
        "nosuch",
    )?;
    logind
        .set_session_of_pid(std::process::id(), "gone")
        .map_err(err)?;
    refused(
        open(bed, &s, "daemon", None)?,
        ErrorCode::Internal,
        "logind",
    )?;
    ensure!(s.bound().is_empty(), "bound: {:?}", s.bound());
    Ok(())
}

fn main() {
    let mut args = Arguments::from_args();
    // One bed (two readers, one logind) for all: one test at a time.
    args.test_threads = Some(1);
    type Test = fn(&SessionBed) -> TestResult;
    let tests: Vec<(&str, Test)> = vec![
        (
            "r_sess_2_card_removal_locks_the_bound_session",
            r_sess_2_card_removal_locks_the_bound_session,
        ),
        (
            "r_sess_2_another_users_card_on_a_locked_session_switches",
            r_sess_2_another_users_card_on_a_locked_session_switches,
        ),
        (
            "badge_re_tap_locks_its_session",
            badge_re_tap_locks_its_session,
        ),
        (
            "r_sess_1_idle_lock_from_logind_hints",
            r_sess_1_idle_lock_from_logind_hints,
        ),
        ("open_session_fails_closed", open_session_fails_closed),
    ];
    let skip = std::env::var_os("CLINAUTH_SKIP_SESSION").is_some();
    let bed = if skip || args.list {
        None
    } else {
        match SessionBed::start() {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                eprintln!(
                    "cannot start the session bed: {e}\n(set CLINAUTH_SKIP_SESSION=1 to skip)"
                );
                std::process::exit(101);
            }
        }
    };
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let bed = bed.clone();
            let ignored = bed.is_none();
            Trial::test(name, move || {
                let Some(bed) = bed else {
                    return Ok(());
                };
                bed.logind.clear_calls().map_err(err)?;
                f(&bed)
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        if let Some(bed) = &bed {
            eprintln!("--- logind mock and bus\n{}", bed.logind.bus().log());
            eprintln!("--- pcscd\n{}", bed.pcscd_log());
        }
    }
    drop(bed);
    conclusion.exit();
}
