//! More of the agent end to end, against the real server: a ward
//! workstation with a sealing fingerprint reader (badge + finger), a remote
//! workstation (TOTP + password), and a suspended user through the real
//! libpam. Own main: the private pcscd must exist before any thread.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use clinauth_biometric::SyntheticFinger;
use clinauth_hardware_tests::bio_reader::{BioReader, Protection, ReaderService};
use clinauth_hardware_tests::pcscd::{Pcscd, PcscdOptions, SOCKET_ENV};
use clinauth_hardware_tests::stack::{Agent, Site};
use clinauth_hardware_tests::{VirtualBadge, VirtualCard};
use clinauth_policy::Purpose;
use clinauth_proto::agent::{Outcome, PromptKind, Reply, Request};
use clinauth_proto::{AgentClient, ClientError, Label, SecretString, UserName};
use clinauth_server::credentials::{self, Enroller};
use clinauth_server::directory::UserState;
use clinauth_server::officer::Officer;
use libtest_mimic::Failed;

// The shared runner and helpers of the end-to-end tests (this file uses
// some of them).
#[allow(dead_code)]
mod support;
use support::{err, run_on_bed, TestResult};

const NURSE: &str = "nurse.mori";
const DOCTOR: &str = "dr.sato";
const PASSWORD: &str = "kq7#Lm2p";
const BADGE: [u8; 4] = [0x04, 0x11, 0x22, 0x33];
const FINGER: u64 = 7;

// Fields drop in order: the reader (its socket lives in the site's
// directory), the agents and the badge before the site removes it all.
struct Bed {
    reader: ReaderService,
    ward: Agent,
    remote: Agent,
    badge: Mutex<VirtualCard<VirtualBadge>>,
    badge_reader: String,
    site: Site,
}

/// Runs an authentication, answering prompts with `answer`; returns the
/// prompts asked and the final reply.
fn login(
    agent: &Agent,
    user: &str,
    purpose: Purpose,
    mut answer: impl FnMut(PromptKind) -> String,
) -> Result<(Vec<PromptKind>, Reply), Failed> {
    let mut client = AgentClient::connect(&agent.socket, Duration::from_secs(30)).map_err(err)?;
    client
        .send(&Request::Authenticate {
            user: UserName::new(user).map_err(err)?,
            purpose,
            service: Label::new("agent-ward-test").map_err(err)?,
            tty: None,
            rhost: None,
        })
        .map_err(err)?;
    let mut prompts = Vec::new();
    loop {
        match client.recv() {
            Ok(Reply::Info { .. }) => {}
            Ok(Reply::Prompt {
                prompt_id, kind, ..
            }) => {
                prompts.push(kind);
                let value = SecretString::new(answer(kind)).map_err(err)?;
                client
                    .send(&Request::Answer { prompt_id, value })
                    .map_err(err)?;
            }
            Ok(end) => return Ok((prompts, end)),
            Err(ClientError::AgentError { code, message }) => {
                return Err(format!("agent error {code}: {message}").into())
            }
            Err(e) => return Err(err(e)),
        }
    }
}

fn factors_if_allowed(reply: &Reply) -> Option<Vec<String>> {
    match reply {
        Reply::AuthResult {
            outcome: Outcome::Allow,
            factors,
            ticket: Some(_),
            ..
        } => Some(factors.iter().map(|f| f.as_str().to_owned()).collect()),
        _ => None,
    }
}

impl Bed {
    fn badge_on(&self) -> TestResult {
        self.badge.lock().map_err(err)?.insert().map_err(err)?;
        self.wait_badge(true)
    }

    fn badge_off(&self) -> TestResult {
        self.badge.lock().map_err(err)?.remove().map_err(err)?;
        self.wait_badge(false)
    }

    fn wait_badge(&self, present: bool) -> TestResult {
        for _ in 0..200 {
            if self.ward.readers.present().contains_key(&self.badge_reader) == present {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("the agent does not see the badge present={present}").into())
    }
}

fn badge_and_sealed_fingerprint(bed: &Bed) -> TestResult {
    bed.reader.place_finger(SyntheticFinger::new(FINGER));
    bed.badge_on()?;
    let good = login(&bed.ward, NURSE, Purpose::Login, |_| String::new());
    bed.reader.place_finger(SyntheticFinger::new(FINGER + 100));
    let other = login(&bed.ward, NURSE, Purpose::Login, |_| String::new());
    bed.reader.lift_finger();
    bed.badge_off()?;
    let (prompts, reply) = good?;
    if !prompts.is_empty() {
        return Err(format!("nothing to type with badge + finger, asked {prompts:?}").into());
    }
    let factors = factors_if_allowed(&reply).ok_or_else(|| format!("{reply:?}"))?;
    if !(factors.iter().any(|f| f == "badge") && factors.iter().any(|f| f.starts_with("biometric")))
    {
        return Err(format!("factors {factors:?}").into());
    }
    let (_, reply) = other?;
    if factors_if_allowed(&reply).is_some() {
        return Err(format!("someone else's finger was let in: {reply:?}").into());
    }
    Ok(())
}

/// RFC 6238 with SHA-1, 30 s steps, 6 digits (what authenticator apps do).
fn totp(secret: &[u8], unix_seconds: i64) -> String {
    let counter = (unix_seconds / 30).to_be_bytes();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = ring::hmac::sign(&key, &counter);
    let mac = mac.as_ref();
    let offset = usize::from(mac[19] & 0x0f);
    let value = u32::from_be_bytes([
        mac[offset],
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]) & 0x7fff_ffff;
    format!("{:06}", value % 1_000_000)
}

fn totp_and_password_remote(bed: &Bed) -> TestResult {
    let server = bed.site.server().ok_or("server stopped")?;
    let (secret, _) = bed
        .site
        .rt
        .block_on(credentials::totp_secret(
            &server.auth.store,
            &server.auth.keys.data,
            DOCTOR,
        ))
        .map_err(err)?
        .ok_or("no TOTP enrolled")?;
    let code = totp(secret.expose(), clinauth_server::clock::now_ms() / 1000);
    let answer = |kind: PromptKind| match kind {
        PromptKind::Totp => code.clone(),
        _ => PASSWORD.to_owned(),
    };
    let (prompts, reply) = login(&bed.remote, DOCTOR, Purpose::Login, answer)?;
    let factors = factors_if_allowed(&reply).ok_or_else(|| format!("{reply:?}"))?;
    if !(prompts.contains(&PromptKind::Totp) && prompts.contains(&PromptKind::Pin)) {
        return Err(format!("prompts {prompts:?}").into());
    }
    if !(factors.iter().any(|f| f == "totp") && factors.iter().any(|f| f == "server_pin")) {
        return Err(format!("factors {factors:?}").into());
    }
    // The same code again is never accepted (RFC 6238 §5.2).
    std::thread::sleep(Duration::from_millis(1100));
    let answer = |kind: PromptKind| match kind {
        PromptKind::Totp => code.clone(),
        _ => PASSWORD.to_owned(),
    };
    let (_, again) = login(&bed.remote, DOCTOR, Purpose::Login, answer)?;
    if factors_if_allowed(&again).is_some() {
        return Err(format!("a TOTP code was accepted twice: {again:?}").into());
    }
    Ok(())
}

fn suspended_user_refused_through_libpam(bed: &Bed) -> TestResult {
    let server = bed.site.server().ok_or("server stopped")?;
    let officer = Officer {
        store: &server.auth.store,
        key: &server.auth.keys.audit,
        actor: "root@test",
    };
    bed.site
        .rt
        .block_on(officer.set_user_state(
            NURSE,
            UserState::Suspended,
            clinauth_server::clock::now_ms(),
        ))
        .map_err(err)?;
    bed.reader.place_finger(SyntheticFinger::new(FINGER));
    bed.badge_on()?;
    let result = pamtester(bed, NURSE);
    bed.reader.lift_finger();
    bed.badge_off()?;
    bed.site
        .rt
        .block_on(officer.set_user_state(
            NURSE,
            UserState::Active,
            clinauth_server::clock::now_ms(),
        ))
        .map_err(err)?;
    let (ok, text) = result?;
    if ok {
        return Err(format!("a suspended user logged in through libpam:\n{text}").into());
    }
    Ok(())
}

fn pamtester(bed: &Bed, user: &str) -> Result<(bool, String), Failed> {
    let exe = std::env::current_exe().map_err(err)?;
    let module = exe.with_file_name("libpam_clinauth.so");
    let dir = bed.ward.socket.with_file_name("pam.d");
    std::fs::create_dir_all(&dir).map_err(err)?;
    let line = format!(
        "{} socket={} timeout=30",
        module.display(),
        bed.ward.socket.display()
    );
    std::fs::write(
        dir.join("clinauth-ward"),
        format!("auth required {line}\naccount required {line}\n"),
    )
    .map_err(err)?;
    let mut child = std::process::Command::new("pamtester")
        .args(["-v", "clinauth-ward", user, "authenticate", "acct_mgmt"])
        .env("LD_PRELOAD", "libpam_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", &dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(err)?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"\n");
    }
    let out = child.wait_with_output().map_err(err)?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn setup() -> Result<(Pcscd, Bed), Failed> {
    let pcscd = Pcscd::start(&PcscdOptions::default()).map_err(err)?;
    std::env::set_var(SOCKET_ENV, pcscd.socket_path());
    let badge_reader = pcscd.readers().first().cloned().ok_or("no vpcd reader")?;
    let site = Site::start("agent-ward").map_err(err)?;
    site.add_user(NURSE, &["nurse"]).map_err(err)?;
    site.register_badge(NURSE, &BADGE).map_err(err)?;
    site.add_user(DOCTOR, &["physician"]).map_err(err)?;
    site.enroll_pin(DOCTOR, PASSWORD).map_err(err)?;

    let reader = BioReader::new("ward-bio-1", &[9; 32], Protection::SealedTemplate).map_err(err)?;
    let reader = ReaderService::unix(reader, &site.dir().join("bioreader.sock")).map_err(err)?;
    let server = site.server().ok_or("server")?;
    let officer = Officer {
        store: &server.auth.store,
        key: &server.auth.keys.audit,
        actor: "root@test",
    };
    let now = clinauth_server::clock::now_ms();
    site.rt
        .block_on(officer.register_reader(
            "ward-bio-1",
            reader.public_key().as_bytes(),
            "sealed_template",
            false,
            "test",
            now,
        ))
        .map_err(err)?;
    let enroller = Enroller {
        store: &server.auth.store,
        audit: &server.auth.keys.audit,
        data: &server.auth.keys.data[0],
        actor: "root@test",
    };
    let enrolled = SyntheticFinger::new(FINGER).capture(1000);
    site.rt
        .block_on(enroller.template(NURSE, 1, &enrolled, now))
        .map_err(err)?;
    site.rt.block_on(enroller.totp(DOCTOR, now)).map_err(err)?;

    let ward_ws = site.add_workstation("ward3-ws08", "ward").map_err(err)?;
    let extra = format!(
        "[biometric]\nreader = \"{}\"\nreader_id = \"ward-bio-1\"\ncapture_timeout = \"10s\"\n",
        reader.address()
    );
    let ward = site
        .start_agent(
            site.agent_config(&ward_ws, &extra).map_err(err)?,
            vec![badge_reader.name.clone()],
        )
        .map_err(err)?;
    let remote_ws = site
        .add_workstation("remote-vdi-01", "remote")
        .map_err(err)?;
    let mut remote_config = site.agent_config(&remote_ws, "").map_err(err)?;
    remote_config.card.enabled = false;
    let remote = site.start_agent(remote_config, Vec::new()).map_err(err)?;
    let badge = VirtualCard::new(
        VirtualBadge::new(&BADGE).map_err(|_| "badge")?,
        SocketAddr::from(([127, 0, 0, 1], badge_reader.port)),
    );
    Ok((
        pcscd,
        Bed {
            site,
            ward,
            remote,
            reader,
            badge: Mutex::new(badge),
            badge_reader: badge_reader.name,
        },
    ))
}

fn main() {
    run_on_bed(
        "agent_ward",
        setup,
        vec![
            (
                "r_bio_1_badge_and_sealed_fingerprint",
                badge_and_sealed_fingerprint,
            ),
            (
                "r_auth_1_totp_and_password_remote",
                totp_and_password_remote,
            ),
            (
                "suspended_user_refused_through_libpam",
                suspended_user_refused_through_libpam,
            ),
        ],
    )
}
