//! Offline login end to end (R-OFF-1): the real server, the agent daemon
//! with `[offline] server_key`, and the virtual PIV card through the
//! private pcscd. Clients talk to the agent as the PAM module does.
//!
//! Server stopped: no login without a bundle; after an online login the
//! agent keeps the user's bundle and card + PIN works offline (no ticket),
//! a wrong PIN, a purpose the policy does not allow offline, another user
//! or a tampered bundle do not; the offline decisions reach the server's
//! audit log once it is back, once each.
//!
//! The tests share one site and one agent and run in order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clinauth_agent::card::CardIdentity;
use clinauth_hardware_tests::conversation::{self, converse, Transcript};
use clinauth_hardware_tests::pcscd::{Pcscd, PcscdOptions, SOCKET_ENV};
use clinauth_hardware_tests::stack::{Agent, Site};
use clinauth_hardware_tests::{PivApplet, VirtualCard};
use clinauth_policy::Purpose;
use clinauth_proto::agent::{Outcome, PromptKind, Reply, Request};
use clinauth_proto::{AgentClient, Label, UserName};
use libtest_mimic::Failed;
use support::{err, TestResult};

#[macro_use]
mod support;

const NURSE: &str = "nurse.mori";
const OTHER: &str = "nurse.abe";
const CARD_PIN: &str = "246810";

struct Bed {
    site: Mutex<Site>,
    agent: Agent,
    card: Mutex<VirtualCard<PivApplet>>,
    card_reader: String,
    state_dir: PathBuf,
}

impl Bed {
    fn client(&self) -> Result<AgentClient, Failed> {
        AgentClient::connect(&self.agent.socket, Duration::from_secs(30)).map_err(err)
    }

    fn insert_card(&self) -> TestResult {
        self.card.lock().map_err(err)?.insert().map_err(err)?;
        self.wait_agent_sees(true)
    }

    fn remove_card(&self) -> TestResult {
        self.card.lock().map_err(err)?.remove().map_err(err)?;
        self.wait_agent_sees(false)
    }

    fn wait_agent_sees(&self, present: bool) -> TestResult {
        support::wait_agent_sees(&self.agent, &self.card_reader, present, |c| {
            matches!(c, CardIdentity::Piv { .. })
        })
    }

    fn bundle_path(&self, user: &str) -> PathBuf {
        let hex: String = user.bytes().map(|b| format!("{b:02x}")).collect();
        self.state_dir.join("offline").join(format!("{hex}.jws"))
    }

    /// Runs `f` with the server stopped, then starts it again.
    fn server_down<T>(&self, f: impl FnOnce() -> Result<T, Failed>) -> Result<T, Failed> {
        self.site.lock().map_err(err)?.stop_server();
        // A stopped in-process server still answers (500) on connections
        // kept alive from before; the agent drops such a connection after
        // one answer. Spend it here, so that the test's logins see the
        // server as a real outage does: no answer.
        let mut client = self.client()?;
        let _ = client.call(&Request::Account {
            user: UserName::new(NURSE).map_err(err)?,
            service: Label::new("offline-e2e").map_err(err)?,
        });
        let result = f();
        self.site.lock().map_err(err)?.start_server().map_err(err)?;
        result
    }

    /// The agent's authenticate events the server holds for `user`:
    /// (seq, outcome, offline).
    fn server_events(&self, user: &str) -> Result<Vec<(u64, String, bool)>, Failed> {
        let site = self.site.lock().map_err(err)?;
        let server = site.server().ok_or("the server is stopped")?;
        let entries = site
            .rt
            .block_on(clinauth_server::audit::page(&server.auth.store, 0, 100_000))
            .map_err(err)?;
        let mut out = Vec::new();
        for e in entries {
            if e.action != "agent.authenticate" || e.actor != user {
                continue;
            }
            let d: serde_json::Value = serde_json::from_str(&e.detail).map_err(err)?;
            out.push((
                d["seq"].as_u64().unwrap_or(0),
                e.outcome.clone(),
                d["offline"].as_bool().unwrap_or(false),
            ));
        }
        Ok(out)
    }
}

fn authenticate(user: &str, purpose: Purpose) -> Request {
    conversation::authenticate(user, purpose, "offline-e2e").unwrap()
}

/// Card + PIN for `user` and `purpose`, the card inserted for the duration.
fn card_login(bed: &Bed, user: &str, purpose: Purpose, pin: &str) -> Result<Transcript, Failed> {
    bed.insert_card()?;
    let t = bed.client().and_then(|mut c| {
        converse(&mut c, &authenticate(user, purpose), |_| {
            Some(pin.to_owned())
        })
        .map_err(err)
    });
    bed.remove_card()?;
    t
}

// ---------------------------------------------------------------- tests

fn no_bundle_no_offline_login(bed: &Bed) -> TestResult {
    let t = bed.server_down(|| card_login(bed, NURSE, Purpose::Login, CARD_PIN))?;
    t.expect_no_allow().map_err(err)?;
    ensure!(t.is_unreachable(), "{t:?}");
    Ok(())
}

fn online_login_keeps_a_bundle(bed: &Bed) -> TestResult {
    let t = card_login(bed, NURSE, Purpose::Login, CARD_PIN)?;
    ensure!(
        matches!(
            t.end,
            Some(Reply::AuthResult {
                outcome: Outcome::Allow,
                ticket: Some(_),
                ..
            })
        ),
        "{t:?}"
    );
    let path = bed.bundle_path(NURSE);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        ensure!(Instant::now() < deadline, "no bundle at {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).map_err(err)?.permissions().mode();
    ensure!(mode & 0o777 == 0o600, "bundle mode {mode:o}");
    Ok(())
}

fn offline_card_and_pin(bed: &Bed) -> TestResult {
    let (good, wrong, sign, other) = bed.server_down(|| {
        let good = card_login(bed, NURSE, Purpose::Login, CARD_PIN)?;
        let wrong = card_login(bed, NURSE, Purpose::Unlock, "999999")?;
        // The card's counter back to full for the tests after.
        let _ = card_login(bed, NURSE, Purpose::Unlock, CARD_PIN)?;
        let sign = card_login(bed, NURSE, Purpose::Sign, CARD_PIN)?;
        let other = card_login(bed, OTHER, Purpose::Login, CARD_PIN)?;
        Ok((good, wrong, sign, other))
    })?;
    let Some(Reply::AuthResult {
        outcome: Outcome::Allow,
        rule,
        factors,
        ticket,
        ..
    }) = &good.end
    else {
        return Err(format!("expected an offline allow: {good:?}").into());
    };
    ensure!(ticket.is_none(), "an offline allow has no server ticket");
    ensure!(
        rule.as_ref().map(Label::as_str) == Some("ward-login"),
        "{rule:?}"
    );
    let factors: Vec<&str> = factors.iter().map(Label::as_str).collect();
    ensure!(
        factors.contains(&"smartcard") && factors.contains(&"card_pin"),
        "{factors:?}"
    );
    ensure!(good.prompts == [PromptKind::CardPin], "{good:?}");
    ensure!(
        good.infos.iter().any(|i| i.contains("cannot be reached")),
        "{good:?}"
    );
    wrong.expect_no_allow().map_err(err)?;
    sign.expect_no_allow().map_err(err)?;
    ensure!(sign.is_unreachable(), "sign is never offline: {sign:?}");
    other.expect_no_allow().map_err(err)?;
    ensure!(other.is_unreachable(), "no bundle for {OTHER}: {other:?}");

    // Back online: every offline decision arrives, in order, once (the
    // first is the refusal of the first test, before there was a bundle).
    let want = ["error", "allow", "error", "allow", "error"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = bed.server_events(NURSE)?;
        if events.iter().filter(|e| e.2).count() >= want.len() || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // A little longer: nothing arrives twice.
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        bed.server_events(NURSE)? == events,
        "events changed: {events:?}"
    );
    let offline: Vec<&str> = events
        .iter()
        .filter(|e| e.2)
        .map(|e| e.1.as_str())
        .collect();
    ensure!(offline == want, "{events:?}");
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    ensure!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "events out of order or doubled: {seqs:?}"
    );
    Ok(())
}

fn tampered_bundle_refused(bed: &Bed) -> TestResult {
    let path = bed.bundle_path(NURSE);
    let text = std::fs::read_to_string(&path).map_err(err)?;
    // Another payload under the server's signature.
    let parts: Vec<&str> = text.trim().split('.').collect();
    ensure!(parts.len() == 3, "not a JWS");
    let mut payload = parts[1].to_owned();
    let last = payload.pop().unwrap_or('A');
    payload.push(if last == 'A' { 'B' } else { 'A' });
    std::fs::write(&path, format!("{}.{}.{}", parts[0], payload, parts[2])).map_err(err)?;
    let t = bed.server_down(|| card_login(bed, NURSE, Purpose::Login, CARD_PIN))?;
    std::fs::write(&path, text).map_err(err)?;
    t.expect_no_allow().map_err(err)?;
    ensure!(t.is_unreachable(), "{t:?}");
    Ok(())
}

// ---------------------------------------------------------------- setup

fn setup() -> Result<(Pcscd, Bed), Failed> {
    let pcscd = Pcscd::start(&PcscdOptions::default()).map_err(err)?;
    // Before any other thread exists: libpcsclite reads this once.
    std::env::set_var(SOCKET_ENV, pcscd.socket_path());
    let reader = pcscd
        .readers()
        .first()
        .cloned()
        .ok_or("pcscd has no vpcd reader")?;
    let site = Site::start("offline-e2e").map_err(err)?;
    site.add_user(NURSE, &["nurse"]).map_err(err)?;
    site.add_user(OTHER, &["nurse"]).map_err(err)?;
    let applet = support::enrolled_card(&site, NURSE, CARD_PIN)?;
    let ws = site.add_workstation("ward3-ws07", "ward").map_err(err)?;
    // The server's ticket key, installed on the workstation like its CA.
    let key_file = site.dir().join("ticket-key.pub");
    let hex: String = site.ticket_key.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_file, hex).map_err(err)?;
    let extra = format!(
        "[offline]\nserver_key = \"{}\"\nupload_max_backoff = \"1s\"\n",
        key_file.display()
    );
    let config_agent = site.agent_config(&ws, &extra).map_err(err)?;
    let state_dir = config_agent.agent.state_dir.clone();
    let agent = {
        let _guard = site.rt.enter();
        site.start_agent(config_agent, vec![reader.name.clone()])
            .map_err(err)?
    };
    Ok((
        pcscd,
        Bed {
            site: Mutex::new(site),
            agent,
            card: Mutex::new(VirtualCard::new(
                applet,
                SocketAddr::from(([127, 0, 0, 1], reader.port)),
            )),
            card_reader: reader.name,
            state_dir,
        },
    ))
}

type Test = support::Test<Bed>;

fn tests() -> Vec<(&'static str, Test)> {
    vec![
        ("no_bundle_no_offline_login", no_bundle_no_offline_login),
        ("online_login_keeps_a_bundle", online_login_keeps_a_bundle),
        ("offline_card_and_pin", offline_card_and_pin),
        ("tampered_bundle_refused", tampered_bundle_refused),
    ]
}

fn main() {
    support::run_on_bed("offline_e2e", setup, tests());
}
