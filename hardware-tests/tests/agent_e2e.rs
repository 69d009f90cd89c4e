//! The agent end to end: the real `clinauth-server` (in process, SQLite,
//! mutual TLS on 127.0.0.1), the agent daemon serving its socket, and the
//! virtual PIV card and badge through the private pcscd. Clients talk to
//! the agent exactly as the PAM module does (`clinauth_proto::AgentClient`).
//!
//! The tests share one site and one agent and run one at a time (they move
//! cards in and out of the same readers).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::sync::Mutex;
use std::time::Duration;

use clinauth_agent::card::CardIdentity;
use clinauth_hardware_tests::conversation::{self, converse, Transcript};
use clinauth_hardware_tests::pcscd::{Pcscd, PcscdOptions, SOCKET_ENV};
use clinauth_hardware_tests::stack::{Agent, Site};
use clinauth_hardware_tests::{PivApplet, VirtualBadge, VirtualCard};
use clinauth_policy::Purpose;
use clinauth_proto::agent::{ErrorCode, Outcome, PromptKind, Reply, Request};
use clinauth_proto::{AgentClient, ClientError, Label, SecretString, UserName};
use libtest_mimic::Failed;
use support::{err, TestResult};

#[macro_use]
mod support;

const NURSE: &str = "nurse.sato";
const CLERK: &str = "officer.ito";
const CARD_PIN: &str = "246810";
const SERVER_PIN: &str = "739146";
const BADGE_UID: [u8; 4] = [0x04, 0x5A, 0x6B, 0x7C];

/// The shared bed: the site, the agent and the two vpcd readers.
struct Bed {
    site: Mutex<Site>,
    agent: Agent,
    card_reader: String,
    badge_reader: String,
    card: Mutex<VirtualCard<PivApplet>>,
    badge: Mutex<VirtualCard<VirtualBadge>>,
}

impl Bed {
    fn client(&self) -> Result<AgentClient, Failed> {
        AgentClient::connect(&self.agent.socket, Duration::from_secs(30)).map_err(err)
    }

    /// Puts the nurse's card in its reader and waits until the agent sees it.
    fn insert_card(&self) -> TestResult {
        self.card.lock().map_err(err)?.insert().map_err(err)?;
        self.wait_agent_sees(&self.card_reader, true)
    }

    /// Takes the card out (its PIN counter stays with it).
    fn remove_card(&self) -> TestResult {
        let mut card = self.card.lock().map_err(err)?;
        if card.is_inserted() {
            card.remove().map_err(err)?;
        }
        drop(card);
        self.wait_agent_sees(&self.card_reader, false)
    }

    fn insert_badge(&self) -> TestResult {
        self.badge.lock().map_err(err)?.insert().map_err(err)?;
        self.wait_agent_sees(&self.badge_reader, true)
    }

    fn remove_badge(&self) -> TestResult {
        self.badge.lock().map_err(err)?.remove().map_err(err)?;
        self.wait_agent_sees(&self.badge_reader, false)
    }

    fn wait_agent_sees(&self, reader: &str, present: bool) -> TestResult {
        support::wait_agent_sees(&self.agent, reader, present, |c| {
            matches!(c, CardIdentity::Piv { .. } | CardIdentity::Badge(_))
        })
    }
}

fn authenticate(user: &str, purpose: Purpose) -> Request {
    conversation::authenticate(user, purpose, "e2e-test").unwrap()
}

fn expect_allow(t: &Transcript, factors: &[&str], site: &Site) -> TestResult {
    let Some(Reply::AuthResult {
        outcome: Outcome::Allow,
        factors: got,
        ticket: Some(ticket),
        ..
    }) = &t.end
    else {
        return Err(format!("expected allow, got {t:?}").into());
    };
    let got: Vec<&str> = got.iter().map(Label::as_str).collect();
    for f in factors {
        ensure!(got.contains(f), "factor {f} missing in {got:?}");
    }
    let now = clinauth_server::clock::now_ms() / 1000;
    let claims =
        clinauth_proto::ticket::verify(ticket.as_str(), &site.ticket_key, now).map_err(err)?;
    ensure!(claims.sub == NURSE || claims.sub == CLERK, "{claims:?}");
    ensure!(claims.ws == "ward3-ws07", "{claims:?}");
    Ok(())
}

// ---------------------------------------------------------------- tests

fn card_and_pin_login(bed: &Bed) -> TestResult {
    bed.insert_card()?;
    let mut client = bed.client()?;
    let t = converse(&mut client, &authenticate(NURSE, Purpose::Login), |k| {
        (k == PromptKind::CardPin).then(|| CARD_PIN.to_owned())
    })
    .map_err(err);
    bed.remove_card()?;
    let t = t?;
    ensure!(t.prompts == [PromptKind::CardPin], "{t:?}");
    let site = bed.site.lock().map_err(err)?;
    expect_allow(&t, &["smartcard", "card_pin"], &site)
}

fn wrong_card_pin_refused_with_tries_left(bed: &Bed) -> TestResult {
    bed.insert_card()?;
    let mut client = bed.client()?;
    let t = converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| {
        Some("999999".into())
    })
    .map_err(err);
    // The right PIN afterwards resets the card's counter.
    let mut client = bed.client()?;
    let good = converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| {
        Some(CARD_PIN.into())
    })
    .map_err(err);
    bed.remove_card()?;
    let t = t?;
    t.expect_no_allow().map_err(err)?;
    ensure!(t.reason().contains("tries left"), "{t:?}");
    let site = bed.site.lock().map_err(err)?;
    expect_allow(&good?, &["smartcard"], &site)
}

fn malformed_card_pin_costs_no_try(bed: &Bed) -> TestResult {
    bed.insert_card()?;
    let mut client = bed.client()?;
    let mut n = 0;
    let t = converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| {
        n += 1;
        Some(if n == 1 {
            "12ab".into()
        } else {
            CARD_PIN.into()
        })
    })
    .map_err(err);
    bed.remove_card()?;
    let t = t?;
    ensure!(
        t.prompts.len() == 2,
        "asked again after a malformed PIN: {t:?}"
    );
    ensure!(t.infos.iter().any(|i| i.contains("6 to 8 digits")), "{t:?}");
    let site = bed.site.lock().map_err(err)?;
    expect_allow(&t, &["smartcard"], &site)
}

fn badge_and_pin_login(bed: &Bed) -> TestResult {
    bed.insert_badge()?;
    let mut client = bed.client()?;
    let good = converse(&mut client, &authenticate(NURSE, Purpose::Login), |k| {
        (k == PromptKind::Pin).then(|| SERVER_PIN.to_owned())
    })
    .map_err(err);
    let mut client = bed.client()?;
    let bad = converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| {
        Some("000000".into())
    })
    .map_err(err);
    bed.remove_badge()?;
    let (good, bad) = (good?, bad?);
    let site = bed.site.lock().map_err(err)?;
    expect_allow(&good, &["badge", "server_pin"], &site)?;
    bad.expect_no_allow().map_err(err)
}

fn badge_alone_is_never_enough(bed: &Bed) -> TestResult {
    // The weak combination: a badge (a public identifier as much as a
    // token) and nothing else. Cancelling the PIN prompt leaves only it.
    bed.insert_badge()?;
    let mut client = bed.client()?;
    let t = converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| None).map_err(err);
    let mut client = bed.client()?;
    let empty = converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| {
        Some(String::new())
    })
    .map_err(err);
    bed.remove_badge()?;
    t?.expect_no_allow().map_err(err)?;
    empty?.expect_no_allow().map_err(err)
}

fn nothing_presented_no_login(bed: &Bed) -> TestResult {
    let mut client = bed.client()?;
    let t = converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| {
        Some(CARD_PIN.into())
    })
    .map_err(err)?;
    t.expect_no_allow().map_err(err)?;
    ensure!(
        t.infos.iter().any(|i| i.contains("Insert your card")),
        "{t:?}"
    );
    Ok(())
}

fn card_pulled_at_the_pin_prompt(bed: &Bed) -> TestResult {
    bed.insert_card()?;
    let mut client = bed.client()?;
    let t = converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| {
        if let Ok(mut card) = bed.card.lock() {
            let _ = card.remove();
        }
        Some(CARD_PIN.into())
    })
    .map_err(err);
    bed.remove_card()?;
    t?.expect_no_allow().map_err(err)
}

fn out_of_order_answer_ends_the_conversation(bed: &Bed) -> TestResult {
    bed.insert_card()?;
    let mut client = bed.client()?;
    let mut run = || -> Result<(Reply, Transcript), Failed> {
        client
            .send(&authenticate(NURSE, Purpose::Login))
            .map_err(err)?;
        let prompt_id = loop {
            match client.recv().map_err(err)? {
                Reply::Prompt { prompt_id, .. } => break prompt_id,
                Reply::Info { .. } => continue,
                other => return Err(format!("{other:?}").into()),
            }
        };
        client
            .send(&Request::Answer {
                prompt_id: prompt_id + 7,
                value: SecretString::new(CARD_PIN).map_err(err)?,
            })
            .map_err(err)?;
        let refused = match client.recv() {
            Err(ClientError::AgentError { code, message }) => Reply::Error {
                code,
                message: clinauth_proto::Text::lossy(&message),
            },
            other => return Err(format!("{other:?}").into()),
        };
        // The connection stays usable and a new conversation works.
        let again = converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| {
            Some(CARD_PIN.into())
        })
        .map_err(err)?;
        Ok((refused, again))
    };
    let result = run();
    bed.remove_card()?;
    let (refused, again) = result?;
    ensure!(
        matches!(
            refused,
            Reply::Error {
                code: ErrorCode::UnexpectedMessage,
                ..
            }
        ),
        "{refused:?}"
    );
    let site = bed.site.lock().map_err(err)?;
    expect_allow(&again, &["smartcard"], &site)
}

fn caller_hangs_up_mid_conversation(bed: &Bed) -> TestResult {
    bed.insert_card()?;
    let result = (|| -> Result<Transcript, Failed> {
        let mut client = bed.client()?;
        client
            .send(&authenticate(NURSE, Purpose::Login))
            .map_err(err)?;
        loop {
            if let Reply::Prompt { .. } = client.recv().map_err(err)? {
                break;
            }
        }
        drop(client);
        // The card is not left held by the abandoned flow.
        let mut client = bed.client()?;
        converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| {
            Some(CARD_PIN.into())
        })
        .map_err(err)
    })();
    bed.remove_card()?;
    let site = bed.site.lock().map_err(err)?;
    expect_allow(&result?, &["smartcard"], &site)
}

fn oversized_frame_closes_the_connection(bed: &Bed) -> TestResult {
    let mut stream = UnixStream::connect(&bed.agent.socket).map_err(err)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(err)?;
    let big = vec![b'x'; 70_000];
    // The agent may close before reading everything: a failed write is fine.
    let _ = stream.write_all(&big);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    ensure!(answer.contains("frame_too_large"), "{answer:?}");
    ensure!(answer.ends_with('\n'), "{answer:?}");
    Ok(())
}

fn malformed_request_refused_and_closed(bed: &Bed) -> TestResult {
    for bad in [
        "{\"v\":1,\"id\":1,\"body\":{\"type\":\"status\",\"extra\":1}}\n",
        "not json\n",
        "{\"v\":2,\"id\":1,\"body\":{\"type\":\"status\"}}\n",
        "{\"v\":1,\"id\":0,\"body\":{\"type\":\"status\"}}\n",
    ] {
        let mut stream = UnixStream::connect(&bed.agent.socket).map_err(err)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(err)?;
        stream.write_all(bad.as_bytes()).map_err(err)?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(err)?;
        ensure!(
            answer.contains("\"type\":\"error\"")
                && (answer.contains("malformed") || answer.contains("unsupported_version")),
            "{bad:?} → {answer:?}"
        );
    }
    Ok(())
}

fn unexpected_answer_without_conversation(bed: &Bed) -> TestResult {
    let mut client = bed.client()?;
    let reply = client.call(&Request::Answer {
        prompt_id: 1,
        value: SecretString::new("1").map_err(err)?,
    });
    ensure!(
        matches!(
            reply,
            Err(ClientError::AgentError {
                code: ErrorCode::UnexpectedMessage,
                ..
            })
        ),
        "{reply:?}"
    );
    let status = client.call(&Request::Status {}).map_err(err)?;
    ensure!(
        matches!(
            status,
            Reply::StatusResult {
                server_reachable: true,
                ..
            }
        ),
        "{status:?}"
    );
    Ok(())
}

/// A local user other than root asking to log someone in is refused by
/// the peer-credential check, and so is one asking about another user.
fn other_users_refused_by_peer_credentials(bed: &Bed) -> TestResult {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
for i, body in enumerate(sys.argv[2:], 1):
    s.sendall(('{"v":1,"id":%d,"body":%s}\n' % (i, body)).encode())
    print(s.makefile().readline().strip())
"#;
    let output = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&bed.agent.socket)
        .arg(format!(
            r#"{{"type":"authenticate","user":"{NURSE}","purpose":"login","service":"evil"}}"#
        ))
        .arg(format!(
            r#"{{"type":"authenticate","user":"{NURSE}","purpose":"step_up","service":"evil"}}"#
        ))
        .arg(format!(
            r#"{{"type":"open_session","user":"{NURSE}","service":"evil"}}"#
        ))
        .arg(r#"{"type":"status"}"#)
        .uid(65534)
        .gid(65534)
        .output()
        .map_err(err)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    ensure!(
        lines.len() == 4,
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in &lines[..3] {
        ensure!(line.contains("\"code\":\"unauthorized\""), "{line}");
    }
    ensure!(lines[3].contains("status_result"), "{}", lines[3]);
    Ok(())
}

fn account_check(bed: &Bed) -> TestResult {
    let mut client = bed.client()?;
    let known = client
        .call(&Request::Account {
            user: UserName::new(NURSE).map_err(err)?,
            service: Label::new("login").map_err(err)?,
        })
        .map_err(err)?;
    ensure!(
        matches!(
            known,
            Reply::AccountResult {
                outcome: Outcome::Allow,
                ..
            }
        ),
        "{known:?}"
    );
    for user in ["nobody.here", CLERK] {
        let reply = client
            .call(&Request::Account {
                user: UserName::new(user).map_err(err)?,
                service: Label::new("login").map_err(err)?,
            })
            .map_err(err)?;
        ensure!(
            matches!(
                reply,
                Reply::AccountResult {
                    outcome: Outcome::Deny,
                    reason: Some(_),
                }
            ),
            "{user}: {reply:?}"
        );
    }
    Ok(())
}

fn server_down_never_lets_in(bed: &Bed) -> TestResult {
    bed.site.lock().map_err(err)?.stop_server();
    bed.insert_card()?;
    let mut client = bed.client()?;
    let t = converse(&mut client, &authenticate(NURSE, Purpose::Login), |_| {
        Some(CARD_PIN.into())
    })
    .map_err(err);
    bed.remove_card()?;
    let restarted = bed.site.lock().map_err(err)?.start_server();
    restarted.map_err(err)?;
    let t = t?;
    t.expect_no_allow().map_err(err)?;
    ensure!(
        matches!(
            t.end,
            Some(Reply::Error {
                code: ErrorCode::ServerUnreachable,
                ..
            })
        ),
        "{t:?}"
    );
    Ok(())
}

/// pamtester through the real libpam (pam_wrapper, so /etc/pam.d is never
/// touched) loading the built `pam_clinauth.so` against this agent.
fn pamtester(bed: &Bed, user: &str, ops: &[&str], typed: &str) -> Result<(bool, String), Failed> {
    let exe = std::env::current_exe().map_err(err)?;
    let module = exe.with_file_name("libpam_clinauth.so");
    ensure!(module.is_file(), "{} was not built", module.display());
    let dir = bed.agent.socket.with_file_name("pam.d");
    std::fs::create_dir_all(&dir).map_err(err)?;
    let service = "clinauth-e2e";
    let line = format!(
        "{} socket={} timeout=30",
        module.display(),
        bed.agent.socket.display()
    );
    std::fs::write(
        dir.join(service),
        format!("auth required {line}\naccount required {line}\n"),
    )
    .map_err(err)?;
    let mut child = std::process::Command::new("pamtester")
        .arg("-v")
        .arg(service)
        .arg(user)
        .args(ops)
        .env("LD_PRELOAD", "libpam_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", &dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("pamtester (Debian package pamtester): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(typed.as_bytes()).map_err(err)?;
    }
    let out = child.wait_with_output().map_err(err)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

fn card_and_pin_login_through_libpam(bed: &Bed) -> TestResult {
    bed.insert_card()?;
    let good = pamtester(
        bed,
        NURSE,
        &["authenticate", "acct_mgmt"],
        &format!("{CARD_PIN}\n"),
    );
    let bad = pamtester(bed, NURSE, &["authenticate"], "111111\n");
    let again = pamtester(bed, NURSE, &["authenticate"], &format!("{CARD_PIN}\n"));
    bed.remove_card()?;
    let (ok, text) = good?;
    ensure!(ok, "card + PIN through libpam failed:\n{text}");
    ensure!(text.contains("successfully authenticated"), "{text}");
    ensure!(
        !text.contains(CARD_PIN),
        "the PIN leaked into the output:\n{text}"
    );
    let (ok, text) = bad?;
    ensure!(!ok, "a wrong PIN was let in through libpam:\n{text}");
    let (ok, text) = again?;
    ensure!(ok, "{text}");
    Ok(())
}

fn unknown_user_refused_through_libpam(bed: &Bed) -> TestResult {
    let (ok, text) = pamtester(bed, "nobody.here", &["acct_mgmt"], "")?;
    ensure!(!ok, "an unknown user passed acct_mgmt:\n{text}");
    let (ok, text) = pamtester(bed, CLERK, &["acct_mgmt"], "")?;
    ensure!(!ok, "a user with no rule here passed acct_mgmt:\n{text}");
    Ok(())
}

// ---------------------------------------------------------------- setup

fn setup() -> Result<(Pcscd, Bed), Failed> {
    let pcscd = Pcscd::start(&PcscdOptions::default()).map_err(err)?;
    // Before any other thread exists: libpcsclite reads this once.
    std::env::set_var(SOCKET_ENV, pcscd.socket_path());
    let readers = pcscd.readers().to_vec();
    let (card_reader, badge_reader) = match readers.as_slice() {
        [a, b, ..] => (a.clone(), b.clone()),
        _ => return Err("pcscd has fewer than two vpcd readers".into()),
    };
    let site = Site::start("agent-e2e").map_err(err)?;
    site.add_user(NURSE, &["nurse"]).map_err(err)?;
    // No rule lets a security officer use a ward workstation.
    site.add_user(CLERK, &["security_officer"]).map_err(err)?;
    site.enroll_pin(NURSE, SERVER_PIN).map_err(err)?;
    site.register_badge(NURSE, &BADGE_UID).map_err(err)?;
    let applet = support::enrolled_card(&site, NURSE, CARD_PIN)?;
    let ws = site.add_workstation("ward3-ws07", "ward").map_err(err)?;
    let config = site.agent_config(&ws, "").map_err(err)?;
    let agent = site
        .start_agent(
            config,
            vec![card_reader.name.clone(), badge_reader.name.clone()],
        )
        .map_err(err)?;
    Ok((
        pcscd,
        Bed {
            site: Mutex::new(site),
            agent,
            card: Mutex::new(VirtualCard::new(
                applet,
                SocketAddr::from(([127, 0, 0, 1], card_reader.port)),
            )),
            badge: Mutex::new(VirtualCard::new(
                VirtualBadge::new(&BADGE_UID).map_err(|_| "badge UID")?,
                SocketAddr::from(([127, 0, 0, 1], badge_reader.port)),
            )),
            card_reader: card_reader.name,
            badge_reader: badge_reader.name,
        },
    ))
}

type Test = support::Test<Bed>;

fn tests() -> Vec<(&'static str, Test)> {
    vec![
        ("card_and_pin_login", card_and_pin_login),
        (
            "wrong_card_pin_refused_with_tries_left",
            wrong_card_pin_refused_with_tries_left,
        ),
        (
            "malformed_card_pin_costs_no_try",
            malformed_card_pin_costs_no_try,
        ),
        ("badge_and_pin_login", badge_and_pin_login),
        ("badge_alone_is_never_enough", badge_alone_is_never_enough),
        ("nothing_presented_no_login", nothing_presented_no_login),
        (
            "card_pulled_at_the_pin_prompt",
            card_pulled_at_the_pin_prompt,
        ),
        (
            "out_of_order_answer_ends_the_conversation",
            out_of_order_answer_ends_the_conversation,
        ),
        (
            "caller_hangs_up_mid_conversation",
            caller_hangs_up_mid_conversation,
        ),
        (
            "oversized_frame_closes_the_connection",
            oversized_frame_closes_the_connection,
        ),
        (
            "malformed_request_refused_and_closed",
            malformed_request_refused_and_closed,
        ),
        (
            "unexpected_answer_without_conversation",
            unexpected_answer_without_conversation,
        ),
        (
            "other_users_refused_by_peer_credentials",
            other_users_refused_by_peer_credentials,
        ),
        ("account_check", account_check),
        (
            "card_and_pin_login_through_libpam",
            card_and_pin_login_through_libpam,
        ),
        (
            "unknown_user_refused_through_libpam",
            unknown_user_refused_through_libpam,
        ),
        // Last: it stops and restarts the server.
        ("server_down_never_lets_in", server_down_never_lets_in),
    ]
}

fn main() {
    support::run_on_bed("agent_e2e", setup, tests());
}
