//! Clinical-app operations end to end (R-AUTH-5, R-REC-1/2, R-SIG-1): the
//! real server (in process, SQLite, mutual TLS on 127.0.0.1), the agent
//! serving its socket, virtual PIV cards through the private pcscd, and the
//! scripted pinentry (`clinauth-test-pinentry`) where the person types the
//! PIN. Apps talk to the agent socket as any app would; they never see a
//! PIN prompt.
//!
//! - step-up: the ticket is verified here by a verifier of its own (ring,
//!   not the project's ticket code), its `op` names the app's action;
//! - proxy input: a nurse enters a record for a physician, it stays pending
//!   while the server's clock moves three days on and housekeeping runs,
//!   then the physician confirms it with a fresh card + PIN and the signed
//!   confirmation verifies; self-confirmation is refused;
//! - sign: a physician's HPKI card signs a digest; a card whose signature
//!   certificate carries another qualification is refused for a
//!   prescription;
//! - events: card inserted and removed reach a subscriber;
//! - the Python example client (standard library only) against this agent.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clinauth_agent::card::CardIdentity;
use clinauth_hardware_tests::conversation::{self, converse, Transcript};
use clinauth_hardware_tests::pcscd::{Pcscd, PcscdOptions, SOCKET_ENV};
use clinauth_hardware_tests::piv::keys::{Algorithm, SlotKey};
use clinauth_hardware_tests::stack::{Agent, Site};
use clinauth_hardware_tests::{CardConfig, PivApplet, SlotId, VirtualCard};
use clinauth_policy::Purpose;
use clinauth_proto::agent::{EventKind, Outcome, PromptKind, Reply, Request};
use clinauth_proto::records::{
    Action, Digest, DigestAlg, RecordId, RecordState, RecordView, Summary, Verdict,
};
use clinauth_proto::{AgentClient, UserName};
use libtest_mimic::Failed;
use support::{err, TestResult};

// The shared helpers (this suite makes its cards itself).
#[allow(dead_code)]
#[macro_use]
mod support;

const NURSE: &str = "nurse.sato";
const DOCTOR: &str = "dr.suzuki";
/// A physician whose signature certificate carries another qualification.
const NOT_A_DOCTOR: &str = "dr.kato";
const NURSE_PIN: &str = "246810";
const DOCTOR_PIN: &str = "135790";
const KATO_PIN: &str = "864202";
const WS: &str = "ward3-ws09";

struct Bed {
    site: Mutex<Site>,
    agent: Agent,
    reader: String,
    /// Each person's card; one at a time is in the reader.
    cards: Mutex<Vec<(&'static str, VirtualCard<PivApplet>)>>,
    answers: PathBuf,
    log: PathBuf,
}

impl Bed {
    fn client(&self) -> Result<AgentClient, Failed> {
        AgentClient::connect(&self.agent.socket, Duration::from_secs(30)).map_err(err)
    }

    /// Puts `who`'s card in the reader (the card there first comes out)
    /// and waits until the agent sees it.
    fn insert(&self, who: &'static str) -> TestResult {
        self.pull()?;
        let mut cards = self.cards.lock().map_err(err)?;
        let (_, card) = cards
            .iter_mut()
            .find(|(name, _)| *name == who)
            .ok_or("no such card")?;
        card.insert().map_err(err)?;
        drop(cards);
        self.wait_agent_sees(true)
    }

    /// Takes the card out, if one is in.
    fn pull(&self) -> TestResult {
        let mut cards = self.cards.lock().map_err(err)?;
        let mut pulled = false;
        for (_, card) in cards.iter_mut() {
            if card.is_inserted() {
                card.remove().map_err(err)?;
                pulled = true;
            }
        }
        drop(cards);
        if pulled {
            self.wait_agent_sees(false)?;
        }
        Ok(())
    }

    fn wait_agent_sees(&self, present: bool) -> TestResult {
        support::wait_agent_sees(&self.agent, &self.reader, present, |c| {
            matches!(c, CardIdentity::Piv { .. })
        })
    }

    /// What the scripted pinentry answers next, one line per dialog.
    fn pinentry_answers(&self, answers: &[&str]) -> TestResult {
        let mut text = answers.join("\n");
        text.push('\n');
        std::fs::write(&self.answers, text).map_err(err)?;
        let _ = std::fs::remove_file(self.answers.with_file_name("answers.txt.used"));
        std::fs::write(&self.log, "").map_err(err)
    }

    fn pinentry_log(&self) -> Result<String, Failed> {
        std::fs::read_to_string(&self.log).map_err(err)
    }

    fn ticket_key(&self) -> Result<Vec<u8>, Failed> {
        Ok(self.site.lock().map_err(err)?.ticket_key.clone())
    }

    /// The server's clock, now (it may have been moved on).
    fn server_now(&self) -> Result<i64, Failed> {
        let site = self.site.lock().map_err(err)?;
        let server = site.server().ok_or("server down")?;
        Ok(server.auth.clock.now_ms() / 1000)
    }
}

fn user(name: &str) -> UserName {
    UserName::new(name).unwrap()
}

/// Runs an app request; the app must never be asked for anything.
fn app(bed: &Bed, request: &Request) -> Result<Transcript, Failed> {
    let mut client = bed.client()?;
    let t = converse(&mut client, request, |_| None).map_err(err)?;
    ensure!(
        t.prompts.is_empty(),
        "the app was prompted (a PIN would have gone through it): {t:?}"
    );
    Ok(t)
}

/// A compact JWS checked with ring alone: the header names EdDSA and
/// `typ`, the Ed25519 signature covers header.payload. Returns the claims.
fn verify_jws(token: &str, typ: &str, public_key: &[u8]) -> Result<serde_json::Value, Failed> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err("not three parts".into());
    };
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).map_err(err)?).map_err(err)?;
    ensure!(header["alg"] == "EdDSA", "{header}");
    ensure!(header["typ"] == typ, "{header}");
    let signed = format!("{}.{}", parts[0], parts[1]);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key)
        .verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).map_err(err)?,
        )
        .map_err(|_| "signature does not verify")?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).map_err(err)?).map_err(err)
}

fn digest_of(data: &[u8]) -> Result<Digest, Failed> {
    Digest::new(
        DigestAlg::Sha256,
        ring::digest::digest(&ring::digest::SHA256, data).as_ref(),
    )
    .map_err(err)
}

// ---------------------------------------------------------------- tests

fn step_up_ticket_verified_by_a_separate_verifier(bed: &Bed) -> TestResult {
    bed.insert(NURSE)?;
    bed.pinentry_answers(&[NURSE_PIN])?;
    let t = app(
        bed,
        &Request::StepUp {
            user: Some(user(NURSE)),
            action: Action::new("order.controlled_drug").map_err(err)?,
            max_age: 120,
        },
    );
    bed.pull()?;
    let t = t?;
    let Some(Reply::AuthResult {
        outcome: Outcome::Allow,
        purpose: Purpose::StepUp,
        ticket: Some(ticket),
        ..
    }) = &t.end
    else {
        return Err(format!("expected a step-up ticket: {t:?}").into());
    };
    let claims = verify_jws(ticket.as_str(), "clinauth-ticket+jwt", &bed.ticket_key()?)?;
    ensure!(claims["sub"] == NURSE, "{claims}");
    ensure!(claims["ws"] == WS, "{claims}");
    ensure!(claims["purpose"] == "step_up", "{claims}");
    ensure!(claims["op"]["type"] == "step_up", "{claims}");
    ensure!(
        claims["op"]["action"] == "order.controlled_drug",
        "{claims}"
    );
    let (iat, exp) = (
        claims["iat"].as_i64().ok_or("iat")?,
        claims["exp"].as_i64().ok_or("exp")?,
    );
    ensure!(exp - iat <= 120, "the ticket outlives max_age: {claims}");
    let factors = claims["factors"].to_string();
    ensure!(
        factors.contains("smartcard") && factors.contains("card_pin"),
        "{claims}"
    );
    // The PIN went to pinentry, with the action shown, and nowhere else.
    let log = bed.pinentry_log()?;
    ensure!(
        log.contains("GETPIN") && log.contains("order.controlled_drug"),
        "{log}"
    );
    ensure!(!log.contains(NURSE_PIN), "{log}");
    ensure!(!format!("{t:?}").contains(NURSE_PIN), "{t:?}");
    // A forged ticket fails the same verifier.
    let mut forged = ticket.as_str().to_owned();
    forged.push('A');
    ensure!(
        verify_jws(&forged, "clinauth-ticket+jwt", &bed.ticket_key()?).is_err(),
        "a forged ticket verified"
    );
    Ok(())
}

fn step_up_cancelled_at_pinentry_is_refused(bed: &Bed) -> TestResult {
    bed.insert(NURSE)?;
    bed.pinentry_answers(&["CANCEL"])?;
    let t = app(
        bed,
        &Request::StepUp {
            user: Some(user(NURSE)),
            action: Action::new("order.controlled_drug").map_err(err)?,
            max_age: 120,
        },
    );
    bed.pull()?;
    let t = t?;
    t.expect_no_allow()?;
    ensure!(t.reason().contains("cancelled"), "{t:?}");
    Ok(())
}

fn login(bed: &Bed, who: &'static str, pin: &'static str) -> TestResult {
    bed.insert(who)?;
    let mut client = bed.client()?;
    let t = converse(
        &mut client,
        &conversation::authenticate(who, Purpose::Login, "login").map_err(err)?,
        |k| (k == PromptKind::CardPin).then(|| pin.to_owned()),
    )
    .map_err(err);
    bed.pull()?;
    let t = t?;
    ensure!(t.allowed(), "{who} could not log in: {t:?}");
    Ok(())
}

fn register(bed: &Bed, inputter: &str, confirmer: &str, text: &[u8]) -> Result<Transcript, Failed> {
    app(
        bed,
        &Request::RegisterRecord {
            user: Some(user(inputter)),
            digest: digest_of(text)?,
            summary: Summary::new("指示: ロキソプロフェン 60mg 1日3回 (bed 12)").map_err(err)?,
            confirmer: user(confirmer),
        },
    )
}

fn record_of(t: &Transcript) -> Result<RecordView, Failed> {
    match &t.end {
        Some(Reply::Record { record }) => Ok((**record).clone()),
        other => Err(format!("expected a record: {other:?}").into()),
    }
}

fn decide(bed: &Bed, who: &str, record: &RecordId, verdict: Verdict) -> Result<Transcript, Failed> {
    app(
        bed,
        &Request::DecideRecord {
            user: Some(user(who)),
            record: record.clone(),
            verdict,
        },
    )
}

fn r_rec_1_proxy_input_stays_pending_for_days_then_is_confirmed(bed: &Bed) -> TestResult {
    // The nurse is authenticated on this workstation (her login ticket).
    login(bed, NURSE, NURSE_PIN)?;
    let order = b"order 2026-11-25 bed 12: loxoprofen 60 mg tid";
    let record = record_of(&register(bed, NURSE, DOCTOR, order)?)?;
    ensure!(record.state == RecordState::Pending, "{record:?}");
    ensure!(
        record.inputter == NURSE && record.confirmer == DOCTOR,
        "{record:?}"
    );

    // Three days on, housekeeping runs: nothing confirms it by itself.
    {
        let site = bed.site.lock().map_err(err)?;
        let server = site.server().ok_or("server down")?;
        server.auth.clock.advance(3 * 86_400 * 1000);
        site.rt
            .block_on(clinauth_server::run::housekeep_once(&server.auth));
    }
    let pending = app(
        bed,
        &Request::PendingRecords {
            user: Some(user(DOCTOR)),
        },
    )?;
    let Some(Reply::Records { records, .. }) = &pending.end else {
        return Err(format!("{pending:?}").into());
    };
    ensure!(
        records
            .iter()
            .any(|r| r.id == record.id && r.state == RecordState::Pending),
        "the record is not pending after three days: {records:?}"
    );
    let got = app(
        bed,
        &Request::GetRecord {
            record: record.id.clone(),
        },
    )?;
    ensure!(record_of(&got)?.state == RecordState::Pending, "{got:?}");

    // The physician confirms with a fresh card + PIN, through pinentry.
    bed.insert(DOCTOR)?;
    bed.pinentry_answers(&[DOCTOR_PIN])?;
    let t = decide(bed, DOCTOR, &record.id, Verdict::Confirm);
    bed.pull()?;
    let t = t?;
    let Some(Reply::RecordResult {
        outcome: Outcome::Allow,
        record: Some(done),
        ..
    }) = &t.end
    else {
        return Err(format!("expected a confirmation: {t:?}").into());
    };
    ensure!(done.state == RecordState::Confirmed, "{done:?}");
    let log = bed.pinentry_log()?;
    ensure!(
        log.contains("GETPIN") && log.contains("ロキソプロフェン"),
        "the dialog did not show what is confirmed: {log}"
    );

    // The signed confirmation, checked by ring alone and by the project's
    // verifier, binds digest, both persons, both times and the factors.
    let token = done.confirmation.as_deref().ok_or("no confirmation")?;
    let key = bed.ticket_key()?;
    let claims = verify_jws(token, "clinauth-confirmation+jwt", &key)?;
    ensure!(claims["record"] == record.id.as_str(), "{claims}");
    ensure!(
        claims["digest"] == digest_of(order)?.to_string(),
        "{claims}"
    );
    ensure!(claims["verdict"] == "confirm", "{claims}");
    ensure!(claims["inputter"]["user"] == NURSE, "{claims}");
    ensure!(claims["confirmer"]["user"] == DOCTOR, "{claims}");
    let typed = clinauth_proto::confirmation::verify(token, &key).map_err(err)?;
    ensure!(
        typed.decided_at - typed.entered_at >= 3 * 86_400,
        "entered {} decided {}",
        typed.entered_at,
        typed.decided_at
    );
    for party in [&typed.inputter, &typed.confirmer] {
        ensure!(
            party.factors.iter().any(|f| f == "smartcard")
                && party.factors.iter().any(|f| f == "card_pin"),
            "{party:?}"
        );
        ensure!(party.ws == WS, "{party:?}");
    }
    ensure!(
        typed.confirmer.auth_time >= bed.server_now()? - 120,
        "the confirmer's authentication is not fresh: {typed:?}"
    );

    // Decided once: a second decision is refused.
    bed.insert(DOCTOR)?;
    bed.pinentry_answers(&[DOCTOR_PIN])?;
    let again = decide(bed, DOCTOR, &record.id, Verdict::Reject);
    bed.pull()?;
    let again = again?;
    ensure!(
        matches!(
            again.end,
            Some(Reply::RecordResult {
                outcome: Outcome::Deny,
                ..
            })
        ),
        "{again:?}"
    );
    ensure!(again.reason().contains("already"), "{again:?}");

    // Both persons' identification and authentication are in the audit log.
    let site = bed.site.lock().map_err(err)?;
    let server = site.server().ok_or("server down")?;
    let entries = site
        .rt
        .block_on(clinauth_server::audit::page(&server.auth.store, 0, 100_000))
        .map_err(err)?;
    let registered = entries.iter().any(|e| {
        e.action == "record.register"
            && e.actor == NURSE
            && e.target.as_deref() == Some(record.id.as_str())
    });
    let confirmed = entries.iter().any(|e| {
        e.action == "record.confirm"
            && e.actor == DOCTOR
            && e.target.as_deref() == Some(record.id.as_str())
    });
    ensure!(registered && confirmed, "audit entries missing");
    Ok(())
}

fn r_auth_5_self_confirmation_and_others_refused(bed: &Bed) -> TestResult {
    login(bed, NURSE, NURSE_PIN)?;
    // An inputter who names themselves as confirmer.
    let t = register(bed, NURSE, NURSE, b"self")?;
    ensure!(
        matches!(&t.end, Some(Reply::Error { .. })) && t.reason().contains("cannot confirm"),
        "{t:?}"
    );
    // A record for the physician cannot be decided by the nurse who
    // entered it; she is not asked for a PIN for it.
    let record = record_of(&register(bed, NURSE, DOCTOR, b"order 2")?)?;
    bed.insert(NURSE)?;
    bed.pinentry_answers(&[NURSE_PIN])?;
    let t = decide(bed, NURSE, &record.id, Verdict::Confirm);
    bed.pull()?;
    let t = t?;
    ensure!(
        matches!(
            t.end,
            Some(Reply::RecordResult {
                outcome: Outcome::Deny,
                ..
            })
        ),
        "{t:?}"
    );
    ensure!(t.reason().contains("confirmer"), "{t:?}");
    ensure!(
        !bed.pinentry_log()?.contains("GETPIN"),
        "a PIN was asked for a decision that cannot be made"
    );
    // Another physician (not the named confirmer) cannot either.
    bed.insert(NOT_A_DOCTOR)?;
    bed.pinentry_answers(&[KATO_PIN])?;
    let t = decide(bed, NOT_A_DOCTOR, &record.id, Verdict::Confirm);
    bed.pull()?;
    ensure!(
        t?.reason().contains("confirmer"),
        "another physician decided"
    );
    // An app running as another user cannot decide for the physician.
    let line = format!(
        r#"{{"v":1,"id":1,"body":{{"type":"decide_record","user":"{DOCTOR}","record":"{}","verdict":"confirm"}}}}"#,
        record.id
    );
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()+b'\\n'); print(s.makefile().readline())")
        .arg(&bed.agent.socket)
        .arg(&line)
        .uid(65534)
        .gid(65534)
        .output()
        .map_err(err)?;
    let answer = String::from_utf8_lossy(&out.stdout);
    ensure!(answer.contains("\"code\":\"unauthorized\""), "{answer}");
    // The record is still pending.
    let got = app(
        bed,
        &Request::GetRecord {
            record: record.id.clone(),
        },
    )?;
    ensure!(record_of(&got)?.state == RecordState::Pending, "{got:?}");
    Ok(())
}

/// An inputter the agent holds no ticket for (never logged in here) is
/// stepped up through pinentry before the record is registered; a wrong
/// PIN there registers nothing.
fn inputter_without_a_ticket_is_stepped_up_first(bed: &Bed) -> TestResult {
    bed.insert(NOT_A_DOCTOR)?;
    bed.pinentry_answers(&["000000"])?;
    let refused = register(bed, NOT_A_DOCTOR, DOCTOR, b"order 3");
    bed.pinentry_answers(&[KATO_PIN])?;
    let entered = register(bed, NOT_A_DOCTOR, DOCTOR, b"order 4");
    let log = bed.pinentry_log();
    bed.pull()?;
    let refused = refused?;
    ensure!(
        matches!(
            refused.end,
            Some(Reply::AuthResult {
                outcome: Outcome::Deny,
                ..
            })
        ),
        "a wrong PIN registered a record: {refused:?}"
    );
    let record = record_of(&entered?)?;
    ensure!(
        record.inputter == NOT_A_DOCTOR && record.state == RecordState::Pending,
        "{record:?}"
    );
    ensure!(log?.contains("GETPIN"), "no PIN dialog for the step-up");
    Ok(())
}

fn sign(bed: &Bed, who: &'static str, pin: &str, document: &[u8]) -> Result<Transcript, Failed> {
    bed.insert(who)?;
    bed.pinentry_answers(&[pin])?;
    let t = app(
        bed,
        &Request::Sign {
            user: Some(user(who)),
            digest: digest_of(document)?,
        },
    );
    bed.pull()?;
    t
}

fn r_sig_1_physician_signs_with_the_hpki_key(bed: &Bed) -> TestResult {
    let document = "処方せん: ロキソプロフェン 60mg".as_bytes();
    let t = sign(bed, DOCTOR, DOCTOR_PIN, document)?;
    let Some(Reply::SignResult {
        outcome: Outcome::Allow,
        signature: Some(signature),
        certificate: Some(certificate),
        ticket: Some(ticket),
        ..
    }) = &t.end
    else {
        return Err(format!("expected a signature: {t:?}").into());
    };
    // The signature verifies over the document with the certificate's key,
    // and the certificate is the physician's HPKI signature certificate.
    let (_, cert) = x509_parser::parse_x509_certificate(&certificate.0).map_err(err)?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        cert.public_key().subject_public_key.data.as_ref(),
    )
    .verify(document, &signature.0)
    .map_err(|_| "the document signature does not verify")?;
    let card_key =
        clinauth_factors::card::CardPublicKey::from_spki_der(cert.public_key().raw).map_err(err)?;
    let digest: [u8; 32] = digest_of(document)?.bytes().try_into().map_err(err)?;
    clinauth_factors::card::verify_digest_signature(&card_key, &digest, &signature.0)
        .map_err(err)?;
    let claims = verify_jws(ticket.as_str(), "clinauth-ticket+jwt", &bed.ticket_key()?)?;
    ensure!(
        claims["purpose"] == "sign" && claims["sub"] == DOCTOR,
        "{claims}"
    );
    ensure!(claims["rule"] == "prescription-sign", "{claims}");
    ensure!(
        claims["op"]["digest"] == digest_of(document)?.to_string(),
        "{claims}"
    );
    Ok(())
}

fn r_sig_1_wrong_qualification_refused_for_a_prescription(bed: &Bed) -> TestResult {
    let t = sign(bed, NOT_A_DOCTOR, KATO_PIN, b"prescription")?;
    let Some(Reply::SignResult {
        outcome: Outcome::Deny,
        signature: None,
        reason: Some(reason),
        ..
    }) = &t.end
    else {
        return Err(format!("expected a refusal without a signature: {t:?}").into());
    };
    ensure!(reason.as_str().contains("qualification"), "{reason:?}");
    Ok(())
}

/// The app cancels while the PIN dialog is open: the flow ends with the
/// operation's own refusal, the dialog is closed, nothing is signed.
fn app_cancel_closes_the_dialog(bed: &Bed) -> TestResult {
    bed.insert(DOCTOR)?;
    bed.pinentry_answers(&["HANG"])?;
    let result = (|| -> Result<Reply, Failed> {
        let mut client = bed.client()?;
        client
            .send(&Request::Sign {
                user: Some(user(DOCTOR)),
                digest: digest_of(b"never signed")?,
            })
            .map_err(err)?;
        loop {
            match client.recv().map_err(err)? {
                Reply::Info { text, .. } if text.as_str().contains("dialog") => break,
                Reply::Info { .. } => continue,
                other => return Err(format!("{other:?}").into()),
            }
        }
        // The dialog is up (the scripted pinentry has logged its request).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !bed.pinentry_log()?.contains("GETPIN") {
            ensure!(std::time::Instant::now() < deadline, "no dialog");
            std::thread::sleep(Duration::from_millis(50));
        }
        client.send(&Request::Cancel {}).map_err(err)?;
        client.recv().map_err(err)
    })();
    bed.pull()?;
    let reply = result?;
    ensure!(
        matches!(
            &reply,
            Reply::SignResult {
                outcome: Outcome::Deny,
                signature: None,
                ..
            }
        ),
        "{reply:?}"
    );
    // The dialog's process is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let out = std::process::Command::new("pgrep")
            .args(["-f", "clinauth-test-pinentry"])
            .output()
            .map_err(err)?;
        if !out.status.success() {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "pinentry still running: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn events_when_the_card_is_pulled(bed: &Bed) -> TestResult {
    let mut client = bed.client()?;
    ensure!(
        matches!(
            client.call(&Request::Subscribe {}).map_err(err)?,
            Reply::Subscribed {}
        ),
        "not subscribed"
    );
    bed.insert(NURSE)?;
    bed.pull()?;
    let mut seen = Vec::new();
    while !seen.contains(&EventKind::CardRemoved) {
        match client.recv().map_err(err)? {
            Reply::Event { event } => {
                ensure!(
                    event.reader.as_ref().map(|r| r.as_str()) == Some(bed.reader.as_str()),
                    "{event:?}"
                );
                seen.push(event.kind);
            }
            other => return Err(format!("{other:?}").into()),
        }
    }
    ensure!(
        seen == [EventKind::CardInserted, EventKind::CardRemoved],
        "{seen:?}"
    );
    Ok(())
}

fn python_example_client_against_the_live_agent(bed: &Bed) -> TestResult {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/python/clinauth_agent.py"
    );
    let run = |args: &[&str]| -> Result<(i32, String, String), Failed> {
        let out = std::process::Command::new("/usr/bin/python3")
            .arg(script)
            .arg("--socket")
            .arg(&bed.agent.socket)
            .args(args)
            .output()
            .map_err(err)?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (code, out, errs) = run(&["status"])?;
    ensure!(
        code == 0 && out.contains("status_result"),
        "{code} {out} {errs}"
    );
    bed.insert(NURSE)?;
    bed.pinentry_answers(&[NURSE_PIN])?;
    let step_up = run(&["step-up", "chart.open", "--max-age", "60", "--user", NURSE]);
    bed.pull()?;
    let (code, out, errs) = step_up?;
    ensure!(code == 0, "step-up failed: {code} {out} {errs}");
    let reply: serde_json::Value =
        serde_json::from_str(out.lines().last().unwrap_or("")).map_err(err)?;
    let ticket = reply["ticket"].as_str().ok_or("no ticket")?;
    let claims = verify_jws(ticket, "clinauth-ticket+jwt", &bed.ticket_key()?)?;
    ensure!(claims["op"]["action"] == "chart.open", "{claims}");
    ensure!(
        !out.contains(NURSE_PIN) && !errs.contains(NURSE_PIN),
        "PIN leaked"
    );
    // A refusal exits 1.
    bed.insert(NOT_A_DOCTOR)?;
    bed.pinentry_answers(&[KATO_PIN])?;
    let refused = run(&[
        "sign",
        &digest_of(b"rx")?.to_string(),
        "--user",
        NOT_A_DOCTOR,
    ]);
    bed.pull()?;
    let (code, out, errs) = refused?;
    ensure!(
        code == 1,
        "a refused signature did not exit 1: {code} {out} {errs}"
    );
    Ok(())
}

// ---------------------------------------------------------------- setup

fn card(
    site: &Site,
    who: &str,
    pin: &str,
    qualification: Option<&str>,
) -> Result<PivApplet, Failed> {
    let auth_key = SlotKey::generate(Algorithm::EccP256).map_err(err)?;
    let auth = site
        .card_ca
        .qualified_credential(who, auth_key, false, qualification)
        .map_err(err)?;
    site.enroll_card(who, &auth.cert_der).map_err(err)?;
    let sign_key = SlotKey::generate(Algorithm::EccP256).map_err(err)?;
    let sign = site
        .card_ca
        .qualified_credential(who, sign_key, true, qualification)
        .map_err(err)?;
    let config = CardConfig::new(pin, "87654321")
        .and_then(|c| c.with_slot(SlotId::Authentication, auth))
        .and_then(|c| c.with_slot(SlotId::Signature, sign))
        .map_err(err)?;
    Ok(PivApplet::new(config))
}

fn setup() -> Result<(Pcscd, Bed), Failed> {
    let pcscd = Pcscd::start(&PcscdOptions::default()).map_err(err)?;
    std::env::set_var(SOCKET_ENV, pcscd.socket_path());
    let reader = pcscd.readers().first().cloned().ok_or("no vpcd reader")?;
    let at = SocketAddr::from(([127, 0, 0, 1], reader.port));
    let site = Site::start("agent-apps").map_err(err)?;
    site.add_user(NURSE, &["nurse"]).map_err(err)?;
    site.add_user(DOCTOR, &["physician"]).map_err(err)?;
    site.add_user(NOT_A_DOCTOR, &["physician"]).map_err(err)?;
    let nurse_card = card(&site, NURSE, NURSE_PIN, None)?;
    let doctor_card = card(&site, DOCTOR, DOCTOR_PIN, Some("Medical Doctor"))?;
    let kato_card = card(&site, NOT_A_DOCTOR, KATO_PIN, Some("Pharmacist"))?;
    let ws = site.add_workstation(WS, "ward").map_err(err)?;
    let dir = site.dir().join("pinentry");
    std::fs::create_dir_all(&dir).map_err(err)?;
    let answers = dir.join("answers.txt");
    let log = dir.join("log.txt");
    std::fs::write(&answers, "").map_err(err)?;
    let extra = format!(
        "[pinentry]\nprogram = \"{}\"\nargs = [\"--answers\", \"{}\", \"--log\", \"{}\"]\ntimeout = \"10s\"\n",
        env!("CARGO_BIN_EXE_clinauth-test-pinentry"),
        answers.display(),
        log.display()
    );
    let config = site.agent_config(&ws, &extra).map_err(err)?;
    let agent = site
        .start_agent(config, vec![reader.name.clone()])
        .map_err(err)?;
    Ok((
        pcscd,
        Bed {
            site: Mutex::new(site),
            agent,
            reader: reader.name,
            cards: Mutex::new(vec![
                (NURSE, VirtualCard::new(nurse_card, at)),
                (DOCTOR, VirtualCard::new(doctor_card, at)),
                (NOT_A_DOCTOR, VirtualCard::new(kato_card, at)),
            ]),
            answers,
            log,
        },
    ))
}

type Test = support::Test<Bed>;

fn tests() -> Vec<(&'static str, Test)> {
    vec![
        (
            "step_up_ticket_verified_by_a_separate_verifier",
            step_up_ticket_verified_by_a_separate_verifier,
        ),
        (
            "step_up_cancelled_at_pinentry_is_refused",
            step_up_cancelled_at_pinentry_is_refused,
        ),
        (
            "r_rec_1_proxy_input_stays_pending_for_days_then_is_confirmed",
            r_rec_1_proxy_input_stays_pending_for_days_then_is_confirmed,
        ),
        (
            "r_auth_5_self_confirmation_and_others_refused",
            r_auth_5_self_confirmation_and_others_refused,
        ),
        (
            "inputter_without_a_ticket_is_stepped_up_first",
            inputter_without_a_ticket_is_stepped_up_first,
        ),
        (
            "r_sig_1_physician_signs_with_the_hpki_key",
            r_sig_1_physician_signs_with_the_hpki_key,
        ),
        (
            "r_sig_1_wrong_qualification_refused_for_a_prescription",
            r_sig_1_wrong_qualification_refused_for_a_prescription,
        ),
        ("app_cancel_closes_the_dialog", app_cancel_closes_the_dialog),
        (
            "events_when_the_card_is_pulled",
            events_when_the_card_is_pulled,
        ),
        (
            "python_example_client_against_the_live_agent",
            python_example_client_against_the_live_agent,
        ),
    ]
}

fn main() {
    support::run_on_bed("agent_apps", setup, tests());
}
