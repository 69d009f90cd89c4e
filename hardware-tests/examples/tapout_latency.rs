//! Tap-out latency (issue 5, item 7): from pulling the virtual PIV card out
//! of its reader to logind's `LockSession` call for the session bound to
//! it, through the real pcscd (vpcd), the agent's reader watcher and
//! session code, and python-dbusmock's logind on a private bus (the time
//! the mock's `MethodCalled` signal reaches this process).
//!
//! ```text
//! cargo run -p clinauth-hardware-tests --example tapout_latency [-- ROUNDS]
//! ```
//!
//! Needs `pcscd vsmartcard-vpcd dbus python3-dbusmock`. Results go to
//! `docs/BENCHMARKS.md` ("Agent").

use std::process::ExitCode;
use std::time::Duration;

use clinauth_agent::clock;
use clinauth_agent::login::CardUsed;
use clinauth_hardware_tests::session_bed::{pam_peer, piv_card, SessionBed};
use clinauth_hardware_tests::VirtualCard;
use clinauth_policy::Purpose;
use clinauth_proto::agent::Reply;
use clinauth_proto::{Label, UserName};

fn main() -> ExitCode {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    match run(rounds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapout_latency: {e}");
            ExitCode::FAILURE
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or_default()
}

fn run(rounds: usize) -> Result<(), String> {
    let bed = SessionBed::start()?;
    bed.logind
        .add_session("t1", "seat0", 1, "daemon", true)
        .map_err(|e| e.to_string())?;
    let reader = bed.reader(0).ok_or("no reader")?.name.clone();
    let addr = bed.card_addr(0).ok_or("no reader")?;
    let mut card = VirtualCard::new(piv_card("daemon")?, addr);
    card.insert().map_err(|e| e.to_string())?;
    let identity = bed
        .wait_present(&reader, Duration::from_secs(10))
        .ok_or("the agent does not see the card")?;
    let sessions = bed.sessions(bed.settings());
    let s = sessions.clone();
    let used = CardUsed {
        reader: reader.clone(),
        identity: identity.clone(),
    };
    let opened = bed.run(async move {
        s.remember_login(
            &pam_peer(),
            "daemon",
            Purpose::Login,
            Some(used),
            None,
            clock::now_ms(),
        )
        .await;
        match (
            UserName::new("daemon"),
            Label::new("login"),
            Label::new("t1"),
        ) {
            (Ok(u), Ok(l), Ok(id)) => s.open(&pam_peer(), &u, &l, Some(&id), None).await,
            _ => Reply::SessionClosed {},
        }
    })?;
    if !matches!(
        opened,
        Reply::SessionOpened {
            card_bound: true,
            ..
        }
    ) {
        return Err(format!("not bound: {opened:?}"));
    }
    let mut watch = bed.logind.watch_calls().map_err(|e| e.to_string())?;
    let mut took = Vec::with_capacity(rounds);
    for round in 0..rounds {
        if round > 0 {
            if !bed.wait_absent(&reader, Duration::from_secs(5)) {
                return Err("the card is still seen".into());
            }
            card.insert().map_err(|e| e.to_string())?;
            if bed.wait_present(&reader, Duration::from_secs(10)).as_ref() != Some(&identity) {
                return Err("the card is not seen again".into());
            }
        }
        // Removals at different points of pcscd's 400 ms poll.
        std::thread::sleep(Duration::from_millis(50 + (round as u64 * 89) % 400));
        let removed = std::time::Instant::now();
        card.remove().map_err(|e| e.to_string())?;
        let call = watch
            .wait_for("LockSession", "t1", Duration::from_secs(5))
            .ok_or_else(|| format!("round {round}: no LockSession"))?;
        let t = call.at.duration_since(removed);
        eprintln!("round {round:2}: {t:?}");
        took.push(t);
    }
    took.sort();
    let mean = took.iter().sum::<Duration>() / u32::try_from(took.len().max(1)).unwrap_or(1);
    println!(
        "card removal -> LockSession over {} removals: min {:?}, p50 {:?}, mean {:?}, p99 {:?}, max {:?}",
        took.len(),
        took.first().copied().unwrap_or_default(),
        percentile(&took, 50.0),
        mean,
        percentile(&took, 99.0),
        took.last().copied().unwrap_or_default(),
    );
    drop(sessions);
    Ok(())
}
