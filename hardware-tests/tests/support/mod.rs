//! What the end-to-end tests with their own `main` (one bed for all tests,
//! the private pcscd started before any other thread) share.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clinauth_agent::card::CardIdentity;
use clinauth_hardware_tests::pcscd::Pcscd;
use clinauth_hardware_tests::piv::keys::{Algorithm, SlotKey};
use clinauth_hardware_tests::stack::{Agent, Site};
use clinauth_hardware_tests::{CardConfig, PivApplet, SlotId};
use libtest_mimic::{Arguments, Failed, Trial};

/// Fails the test with the message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// What a test returns.
pub type TestResult = Result<(), Failed>;

/// A test of the bed `B`.
pub type Test<B> = fn(&B) -> TestResult;

/// Any error as a test failure.
pub fn err(e: impl std::fmt::Display) -> Failed {
    e.to_string().into()
}

/// A PIV card for `user` with a new P-256 authentication key, its
/// certificate from the site's card CA enrolled for `user`, the card PIN
/// `pin`.
pub fn enrolled_card(site: &Site, user: &str, pin: &str) -> Result<PivApplet, Failed> {
    let key = SlotKey::generate(Algorithm::EccP256).map_err(err)?;
    let cred = site.card_ca.credential(user, key, false).map_err(err)?;
    site.enroll_card(user, &cred.cert_der).map_err(err)?;
    let config = CardConfig::new(pin, "87654321")
        .and_then(|c| c.with_slot(SlotId::Authentication, cred))
        .map_err(err)?;
    Ok(PivApplet::new(config))
}

/// Waits (up to 10 s) until `agent` sees in `reader` a card that is
/// `usable` (`present`), or none that is (`!present`).
pub fn wait_agent_sees(
    agent: &Agent,
    reader: &str,
    present: bool,
    usable: impl Fn(&CardIdentity) -> bool,
) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = agent.readers.present();
        if now.get(reader).is_some_and(&usable) == present {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the agent does not see {reader} present={present}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The test binary's `main`: lists `tests`, or builds the bed with `setup`
/// (pcscd first, so that libpcsclite finds it) and runs `tests` on it one
/// at a time (one bed, one card: the tests take turns). Exits 101 without
/// pcscd (`CLINAUTH_SKIP_PCSCD` set, or not installed) or when the set-up
/// fails; tears the bed down before pcscd.
pub fn run_on_bed<B: Send + Sync + 'static>(
    name: &str,
    setup: fn() -> Result<(Pcscd, B), Failed>,
    tests: Vec<(&'static str, Test<B>)>,
) -> ! {
    let mut args = Arguments::from_args();
    args.test_threads = Some(1);
    if args.list {
        let trials = tests
            .into_iter()
            .map(|(name, _)| Trial::test(name, || Ok(())))
            .collect();
        libtest_mimic::run(&args, trials).exit();
    }
    if std::env::var_os("CLINAUTH_SKIP_PCSCD").is_some() || !Path::new("/usr/sbin/pcscd").exists() {
        eprintln!("{name}: pcscd is not installed (scripts/install-deps.sh installs it)");
        std::process::exit(101);
    }
    let (pcscd, bed) = match setup() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{name}: setup failed: {e:?}");
            std::process::exit(101);
        }
    };
    let bed = Arc::new(bed);
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let bed = bed.clone();
            Trial::test(name, move || f(&bed))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(bed);
    drop(pcscd);
    conclusion.exit();
}
