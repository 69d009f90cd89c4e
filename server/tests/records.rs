//! Records entered by proxy and their confirmation (R-AUTH-5, R-REC-1,
//! R-REC-2), on SQLite and PostgreSQL: registered with the inputter's
//! ticket, pending for as long as it takes (the clock moved a month on,
//! housekeeping run), decided once by the named confirmer with a fresh
//! `confirm` ticket bound to the record and verdict, the confirmation signed
//! and audited with both persons; self-confirmation refused unless the
//! policy allows it; every malformed or misbound ticket refused.

mod support;

use clinauth_policy::Purpose;
use clinauth_proto::confirmation;
use clinauth_proto::records::{
    Digest, DigestAlg, Operation, RecordId, RecordState, Summary, Verdict,
};
use clinauth_proto::ticket::{self, Claims};
use clinauth_proto::workstation::RegisterRecordRequest;
use clinauth_server::records::{self, RecordError};
use clinauth_server::{audit, directory};
use ring::signature::KeyPair;
use std::path::Path;
use support::fixture::{fixture, Fixture, T0};
use support::TestDb;

const NURSE: &str = "nurse.tanaka";
const DOCTOR: &str = "dr.yamada";
const OTHER_DOCTOR: &str = "dr.mori";

fn mint(f: &Fixture, sub: &str, purpose: Purpose, iat_s: i64, op: Option<Operation>) -> String {
    let claims = Claims {
        iss: "clinauth.test".into(),
        sub: sub.into(),
        ws: f.ws.id.clone(),
        purpose,
        rule: "test-rule".into(),
        factors: vec!["smartcard".into(), "card_pin".into()],
        policy_version: 1,
        policy_digest: "sha256:00".into(),
        iat: iat_s,
        exp: iat_s + 300,
        jti: format!("{sub}-{iat_s}-{}", purpose.as_str()),
        idle_lock: 0,
        offline: false,
        review: false,
        op,
    };
    ticket::sign(&claims, &f.auth.keys.ticket, &f.auth.keys.ticket_kid).unwrap()
}

fn digest(n: u8) -> Digest {
    Digest::new(DigestAlg::Sha256, &[n; 32]).unwrap()
}

fn request(ticket: String, confirmer: &str, n: u8) -> RegisterRecordRequest {
    RegisterRecordRequest {
        inputter_ticket: ticket,
        digest: digest(n),
        summary: Summary::new("指示: 点滴 500mL").unwrap(),
        confirmer: confirmer.into(),
    }
}

fn confirm_op(record: &RecordId, verdict: Verdict) -> Option<Operation> {
    Some(Operation::Confirm {
        record: record.clone(),
        verdict,
    })
}

async fn setup(db: &TestDb) -> Fixture {
    let f = fixture(db).await;
    let mut tx = f.auth.store.begin().await.unwrap();
    for (id, name) in [(DOCTOR, "山田 医師"), (OTHER_DOCTOR, "森 医師")] {
        directory::create_user(&mut tx, id, name, &["physician".into()], T0)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    f
}

async fn activate(f: &Fixture, extra: &str, version: u64) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    ))
    .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("version = "))
        .unwrap()
        .to_owned();
    let text = text.replacen(&line, &format!("version = {version}"), 1) + extra;
    f.auth
        .policy
        .activate(&f.auth.store, &f.auth.keys.audit, &text, "officer", T0)
        .await
        .unwrap();
}

async fn lifecycle(db: &TestDb) {
    let f = setup(db).await;
    let now_s = clinauth_server::clock::now_ms() / 1000;
    let login = mint(&f, NURSE, Purpose::Login, now_s, None);
    let view = records::register(
        &f.auth,
        &f.ws,
        &request(login.clone(), DOCTOR, 1),
        f.auth.clock.now_ms(),
    )
    .await
    .unwrap();
    assert_eq!(view.state, RecordState::Pending);
    assert_eq!(
        (view.inputter.as_str(), view.confirmer.as_str()),
        (NURSE, DOCTOR)
    );

    // A month on, housekeeping run: still pending, still listed.
    f.auth.clock.advance(30 * 86_400 * 1000);
    clinauth_server::run::housekeep_once(&f.auth).await;
    let (pending, truncated) = records::pending(&f.auth.store, DOCTOR).await.unwrap();
    assert!(!truncated);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, view.id);
    assert_eq!(pending[0].state, RecordState::Pending);
    assert!(records::pending(&f.auth.store, OTHER_DOCTOR)
        .await
        .unwrap()
        .0
        .is_empty());

    let now_s = f.auth.clock.now_ms() / 1000;
    // Tickets that do not prove the confirmer's decision on this record.
    let cases = [
        (mint(&f, DOCTOR, Purpose::Confirm, now_s, None), "ticket"),
        (
            mint(
                &f,
                DOCTOR,
                Purpose::Login,
                now_s,
                confirm_op(&view.id, Verdict::Confirm),
            ),
            "ticket",
        ),
        (
            mint(
                &f,
                DOCTOR,
                Purpose::Confirm,
                now_s - 400,
                confirm_op(&view.id, Verdict::Confirm),
            ),
            "ticket",
        ),
        (
            mint(
                &f,
                DOCTOR,
                Purpose::Confirm,
                now_s,
                confirm_op(&RecordId::new(&"ee".repeat(16)).unwrap(), Verdict::Confirm),
            ),
            "not_found",
        ),
        (
            mint(
                &f,
                OTHER_DOCTOR,
                Purpose::Confirm,
                now_s,
                confirm_op(&view.id, Verdict::Confirm),
            ),
            "not_confirmer",
        ),
        (
            mint(
                &f,
                NURSE,
                Purpose::Confirm,
                now_s,
                confirm_op(&view.id, Verdict::Confirm),
            ),
            "not_confirmer",
        ),
    ];
    for (token, code) in cases {
        let e = records::decide(&f.auth, &f.ws, &token, f.auth.clock.now_ms())
            .await
            .unwrap_err();
        assert!(e.code().starts_with(code), "{code}: {e:?}");
    }
    // Another server's key.
    let other = ring::signature::Ed25519KeyPair::from_pkcs8(
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    let forged = ticket::sign(
        &ticket::verify(
            &mint(
                &f,
                DOCTOR,
                Purpose::Confirm,
                now_s,
                confirm_op(&view.id, Verdict::Confirm),
            ),
            f.auth.keys.ticket.public_key().as_ref(),
            now_s,
        )
        .unwrap(),
        &other,
        &f.auth.keys.ticket_kid,
    )
    .unwrap();
    assert!(matches!(
        records::decide(&f.auth, &f.ws, &forged, f.auth.clock.now_ms()).await,
        Err(RecordError::Ticket(_))
    ));
    assert_eq!(
        records::get(&f.auth.store, &view.id).await.unwrap().state,
        RecordState::Pending
    );

    // The confirmer decides.
    let good = mint(
        &f,
        DOCTOR,
        Purpose::Confirm,
        now_s,
        confirm_op(&view.id, Verdict::Confirm),
    );
    let done = records::decide(&f.auth, &f.ws, &good, f.auth.clock.now_ms())
        .await
        .unwrap();
    assert_eq!(done.state, RecordState::Confirmed);
    let signed = done.confirmation.clone().unwrap();
    let claims = confirmation::verify(&signed, f.auth.keys.ticket.public_key().as_ref()).unwrap();
    assert_eq!(claims.record, view.id);
    assert_eq!(claims.digest, digest(1));
    assert_eq!(claims.verdict, Verdict::Confirm);
    assert_eq!(claims.inputter.user, NURSE);
    assert_eq!(claims.confirmer.user, DOCTOR);
    assert!(claims.decided_at - claims.entered_at >= 30 * 86_400);
    assert_eq!(claims.confirmer.factors, ["smartcard", "card_pin"]);
    // Stored as returned; decided once.
    let stored = records::get(&f.auth.store, &view.id).await.unwrap();
    assert_eq!(stored.confirmation.as_deref(), Some(signed.as_str()));
    let again = mint(
        &f,
        DOCTOR,
        Purpose::Confirm,
        now_s + 1,
        confirm_op(&view.id, Verdict::Reject),
    );
    assert!(matches!(
        records::decide(&f.auth, &f.ws, &again, f.auth.clock.now_ms()).await,
        Err(RecordError::Decided(_))
    ));
    assert!(records::pending(&f.auth.store, DOCTOR)
        .await
        .unwrap()
        .0
        .is_empty());

    // Audited with both persons, refusals included; the chain verifies.
    let entries = audit::page(&f.auth.store, 0, 10_000).await.unwrap();
    assert!(entries
        .iter()
        .any(|e| e.action == "record.register" && e.actor == NURSE));
    assert!(entries
        .iter()
        .any(|e| e.action == "record.confirm" && e.actor == DOCTOR));
    assert!(
        entries
            .iter()
            .filter(|e| e.action == "record.decide" && e.outcome == "refused")
            .count()
            >= 6
    );
    let v = audit::verify(&f.auth.store, f.auth.keys.audit.public_key())
        .await
        .unwrap();
    assert!(v.breaks.is_empty(), "{v:?}");
}
on_both_engines!(
    r_rec_1_records_pending_until_their_confirmer_decides,
    lifecycle
);

async fn registration_refusals(db: &TestDb) {
    let f = setup(db).await;
    let now_s = clinauth_server::clock::now_ms() / 1000;
    let now_ms = f.auth.clock.now_ms();
    let refused = |token: String, confirmer: &'static str| {
        let f = &f;
        async move {
            records::register(&f.auth, &f.ws, &request(token, confirmer, 2), now_ms)
                .await
                .unwrap_err()
        }
    };
    // Expired, decided offline, for a purpose that does not authenticate an inputter.
    assert!(matches!(
        refused(mint(&f, NURSE, Purpose::Login, now_s - 1000, None), DOCTOR).await,
        RecordError::Ticket(_)
    ));
    assert!(matches!(
        refused(mint(&f, NURSE, Purpose::Sign, now_s, None), DOCTOR).await,
        RecordError::Ticket(_)
    ));
    assert!(matches!(
        refused("not.a.ticket".into(), DOCTOR).await,
        RecordError::Ticket(_)
    ));
    // An unknown confirmer; the inputter as confirmer (R-AUTH-5).
    assert!(matches!(
        refused(mint(&f, NURSE, Purpose::Login, now_s, None), "nobody").await,
        RecordError::User(_)
    ));
    assert!(matches!(
        refused(mint(&f, NURSE, Purpose::Login, now_s, None), NURSE).await,
        RecordError::SelfConfirmation
    ));
    // Another workstation's ticket.
    let mut tx = f.auth.store.begin().await.unwrap();
    let other_ws =
        directory::create_workstation(&mut tx, "ward3-ws02", &"cd".repeat(32), "ward", "3F", T0)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    let err = records::register(
        &f.auth,
        &other_ws,
        &request(mint(&f, NURSE, Purpose::Login, now_s, None), DOCTOR, 2),
        now_ms,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RecordError::Ticket(_)), "{err:?}");
    assert!(records::list(&f.auth.store, None, 100)
        .await
        .unwrap()
        .is_empty());
}
on_both_engines!(records_registration_refusals, registration_refusals);

async fn self_confirmation(db: &TestDb) {
    let f = setup(db).await;
    let now_s = clinauth_server::clock::now_ms() / 1000;
    let now_ms = f.auth.clock.now_ms();
    // A site that allows it: the physician enters and confirms their own.
    activate(&f, "\n[records]\nself_confirmation = \"allow\"\n", 100).await;
    let own = records::register(
        &f.auth,
        &f.ws,
        &request(mint(&f, DOCTOR, Purpose::Login, now_s, None), DOCTOR, 3),
        now_ms,
    )
    .await
    .unwrap();
    let own2 = records::register(
        &f.auth,
        &f.ws,
        &request(mint(&f, DOCTOR, Purpose::StepUp, now_s, None), DOCTOR, 4),
        now_ms,
    )
    .await
    .unwrap();
    let ok = mint(
        &f,
        DOCTOR,
        Purpose::Confirm,
        now_s,
        confirm_op(&own.id, Verdict::Confirm),
    );
    assert_eq!(
        records::decide(&f.auth, &f.ws, &ok, now_ms)
            .await
            .unwrap()
            .state,
        RecordState::Confirmed
    );
    // The policy changes back: the pending one can no longer confirm itself.
    activate(&f, "", 101).await;
    let t = mint(
        &f,
        DOCTOR,
        Purpose::Confirm,
        now_s,
        confirm_op(&own2.id, Verdict::Confirm),
    );
    assert!(matches!(
        records::decide(&f.auth, &f.ws, &t, now_ms).await,
        Err(RecordError::SelfConfirmation)
    ));
    assert!(matches!(
        records::check_decidable(&f.auth, DOCTOR, &own2.id).await,
        Err(RecordError::SelfConfirmation)
    ));
    assert_eq!(
        records::get(&f.auth.store, &own2.id).await.unwrap().state,
        RecordState::Pending
    );
}
on_both_engines!(
    r_auth_5_self_confirmation_follows_the_policy,
    self_confirmation
);

fn ctl(config: &Path, args: &[&str]) -> (i32, String) {
    support::ctl::run(config, args)
}

async fn clinauthctl_list(db: &TestDb) {
    let dir = support::TempDir::new("ctl-records");
    let config = support::ctl::config(&dir.0, &db.url);
    let (code, out) = ctl(&config, &["init"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = ctl(&config, &["record", "list"]);
    assert_eq!((code, out.trim()), (0, "no records"), "{out}");
    let f = setup(db).await;
    let now_s = clinauth_server::clock::now_ms() / 1000;
    let view = records::register(
        &f.auth,
        &f.ws,
        &request(mint(&f, NURSE, Purpose::Login, now_s, None), DOCTOR, 5),
        f.auth.clock.now_ms(),
    )
    .await
    .unwrap();
    let (code, out) = ctl(&config, &["record", "list", "--confirmer", DOCTOR]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{}\tpending", view.id)), "{out}");
    assert!(
        out.contains(&format!("by {NURSE} at ward3-ws01\tconfirmer {DOCTOR}")),
        "{out}"
    );
    let (code, out) = ctl(&config, &["record", "list", "--confirmer", OTHER_DOCTOR]);
    assert_eq!((code, out.trim()), (0, "no records"), "{out}");
    let (code, out) = ctl(&config, &["record", "list", "--state", "done"]);
    assert_eq!(code, 2, "{out}");
}
on_both_engines!(clinauthctl_record_list, clinauthctl_list);

async fn operations_at_begin(db: &TestDb) {
    use clinauth_proto::records::Action;
    use clinauth_proto::workstation::BeginRequest;
    use clinauth_server::auth::AuthError;
    let f = setup(db).await;
    let now_ms = f.auth.clock.now_ms();
    let begin = |user: &str, purpose: Purpose, operation: Operation| BeginRequest {
        user: user.into(),
        purpose,
        operation: Some(operation),
    };
    let step_up = Operation::StepUp {
        action: Action::new("order.opioid").unwrap(),
        max_age: 60,
    };
    // The operation's kind must match the purpose; its values are checked.
    let e = f
        .auth
        .begin(
            &f.ws,
            &begin(NURSE, Purpose::Login, step_up.clone()),
            now_ms,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Invalid(_)), "{e:?}");
    let zero = Operation::StepUp {
        action: Action::new("order.opioid").unwrap(),
        max_age: 0,
    };
    let e = f
        .auth
        .begin(&f.ws, &begin(NURSE, Purpose::StepUp, zero), now_ms)
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Invalid(_)), "{e:?}");
    let sha512 = Operation::Sign {
        digest: Digest::new(DigestAlg::Sha512, &[1; 64]).unwrap(),
    };
    let e = f
        .auth
        .begin(&f.ws, &begin(DOCTOR, Purpose::Sign, sha512), now_ms)
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::Invalid(_)), "{e:?}");
    assert!(f
        .auth
        .begin(&f.ws, &begin(NURSE, Purpose::StepUp, step_up), now_ms)
        .await
        .is_ok());
    // Nobody is asked for factors to decide a record they cannot decide.
    let now_s = now_ms / 1000;
    let view = records::register(
        &f.auth,
        &f.ws,
        &request(mint(&f, NURSE, Purpose::Login, now_s, None), DOCTOR, 6),
        now_ms,
    )
    .await
    .unwrap();
    for who in [NURSE, OTHER_DOCTOR] {
        let e = f
            .auth
            .begin(
                &f.ws,
                &begin(
                    who,
                    Purpose::Confirm,
                    Operation::Confirm {
                        record: view.id.clone(),
                        verdict: Verdict::Confirm,
                    },
                ),
                now_ms,
            )
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::Operation(_)), "{who}: {e:?}");
    }
    let ok = f
        .auth
        .begin(
            &f.ws,
            &begin(
                DOCTOR,
                Purpose::Confirm,
                Operation::Confirm {
                    record: view.id.clone(),
                    verdict: Verdict::Confirm,
                },
            ),
            now_ms,
        )
        .await
        .unwrap();
    assert!(!ok.options.is_empty());
}
on_both_engines!(operations_bound_at_begin, operations_at_begin);
