//! The workstation API's offline endpoints (R-OFF-1, R-LOG-1), on both
//! engines: `POST /v1/offline/bundle` (a signed bundle against a fresh
//! ticket of this workstation, only what the policy allows offline) and
//! `POST /v1/events` (the agent's spooled events, stored exactly once in
//! the audit hash chain).

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use clinauth_policy::Purpose;
use clinauth_proto::events::{AgentEventRecord, EventAck, EventBatch, MAX_EVENTS_BODY_BYTES};
use clinauth_proto::offline::{self, BundleResponse};
use clinauth_proto::ticket::{self, Claims};
use clinauth_proto::workstation::ErrorBody;
use clinauth_server::api::workstation::{router, PeerFingerprint, WorkstationApi};
use clinauth_server::audit;
use clinauth_server::auth::card_trust;
use clinauth_server::auth::evidence::Verifiers;
use clinauth_server::clock;
use clinauth_server::config::SmartcardSection;
use clinauth_server::credentials::Enroller;
use clinauth_server::directory;
use clinauth_server::metrics::Metrics;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use std::sync::Arc;
use support::fixture::{fixture_with, Fixture, T0};
use support::{TempDir, TestDb};
use tower::ServiceExt;

const STREAM: &str = "00112233445566778899aabbccddeeff";

fn app(f: &Fixture, peer: Option<&str>) -> Router {
    let api = WorkstationApi {
        auth: f.auth.clone(),
        metrics: Arc::new(Metrics::default()),
    };
    let r = router(api);
    match peer {
        Some(fp) => r.layer(axum::Extension(PeerFingerprint(fp.to_owned()))),
        None => r,
    }
}

async fn post(f: &Fixture, path: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    post_as(f, Some(&f.ws.cert_sha256.clone()), path, body).await
}

async fn post_as(
    f: &Fixture,
    peer: Option<&str>,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = app(f, peer).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

fn error(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("not a JSON error ({e}): {}", String::from_utf8_lossy(body)))
        .error
}

/// A card CA (no CRL required) and one card certificate for the nurse.
fn card_pki(dir: &TempDir) -> (SmartcardSection, Vec<u8>) {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, "Hospital Card CA");
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2045, 1, 1);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca =
        CertifiedIssuer::self_signed(p, KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap())
            .unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut c = CertificateParams::default();
    c.distinguished_name = rcgen::DistinguishedName::new();
    c.distinguished_name
        .push(DnType::CommonName, "nurse.tanaka");
    c.not_before = date_time_ymd(2020, 1, 1);
    c.not_after = date_time_ymd(2044, 1, 1);
    c.is_ca = IsCa::ExplicitNoCa;
    c.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = c.signed_by(&key, &ca).unwrap().der().to_vec();
    let ca_path = dir.0.join("card-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    (
        SmartcardSection {
            trust_anchors: vec![ca_path],
            crls: vec![],
            require_crl: false,
        },
        cert,
    )
}

struct Bed {
    f: Fixture,
    cert: Vec<u8>,
    _dir: TempDir,
}

async fn bed(db: &TestDb) -> Bed {
    let dir = TempDir::new("offline-pki");
    let (section, cert) = card_pki(&dir);
    let f = fixture_with(
        db,
        Verifiers {
            card_trust: card_trust::load(&section).unwrap(),
            ..Verifiers::default()
        },
    )
    .await;
    Enroller {
        store: &f.auth.store,
        audit: &f.auth.keys.audit,
        data: &f.auth.keys.data[0],
        actor: "officer",
    }
    .card(
        "nurse.tanaka",
        &cert,
        &f.auth.verifiers.card_trust,
        true,
        T0,
    )
    .await
    .unwrap();
    let mut tx = f.auth.store.begin().await.unwrap();
    directory::create_user(
        &mut tx,
        "officer.ito",
        "伊藤",
        &["security_officer".into()],
        T0,
    )
    .await
    .unwrap();
    directory::create_user(&mut tx, "nurse.kato", "加藤", &["nurse".into()], T0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    Bed { f, cert, _dir: dir }
}

fn claims(user: &str, ws: &str, iat: i64, jti: &str) -> Claims {
    Claims {
        iss: "clinauth.test".into(),
        sub: user.into(),
        ws: ws.into(),
        purpose: Purpose::Login,
        rule: "ward-login".into(),
        factors: vec!["smartcard".into(), "card_pin".into()],
        policy_version: 3,
        policy_digest: "sha256:00".into(),
        iat,
        exp: iat + 300,
        jti: jti.into(),
        idle_lock: 180,
        offline: false,
        review: false,
        op: None,
    }
}

fn ticket_for(f: &Fixture, c: &Claims) -> String {
    ticket::sign(c, &f.auth.keys.ticket, &f.auth.keys.ticket_kid).unwrap()
}

fn bundle_body(ticket: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "ticket": ticket })).unwrap()
}

async fn audit_entries(f: &Fixture, action: &str) -> Vec<audit::Entry> {
    audit::page(&f.auth.store, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .collect()
}

async fn r_off_1_bundle_for_a_fresh_ticket(db: &TestDb) {
    let b = bed(db).await;
    let f = &b.f;
    let now = clock::now_ms() / 1000;
    let t = ticket_for(f, &claims("nurse.tanaka", "ward3-ws01", now, "j1"));
    let (status, body) = post(f, "/v1/offline/bundle", bundle_body(&t)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let answer: BundleResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer.kid, f.auth.keys.ticket_kid);
    let token = answer.bundle.expect("a bundle");
    let public = f.auth.keys.ticket.public_key().as_ref().to_vec();
    let got = offline::verify(&token, &public).unwrap();
    assert_eq!(got.sub, "nurse.tanaka");
    assert_eq!(got.ws, "ward3-ws01");
    assert_eq!(got.iat, now);
    assert_eq!(got.exp, now + 72 * 3600, "ward-login allows 72h");
    assert_eq!(got.ticket_jti, "j1");
    assert_eq!(got.cards.len(), 1);
    assert_eq!(got.cards[0].certificate.0, b.cert);
    assert!(got.cards[0].pin_protected);
    assert!(got.fido2.is_empty());
    let names: Vec<&str> = got.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["ward-login"],
        "only rules with [rule.offline] allowed"
    );
    assert_eq!(got.rules[0].purposes, [Purpose::Login, Purpose::Unlock]);
    assert_eq!(got.rules[0].idle_lock, 180);
    for c in &got.rules[0].combinations {
        assert!(offline::is_offline_combination(c), "{c:?}");
    }
    assert!(
        got.rules[0]
            .combinations
            .contains(&vec!["card_pin".to_owned(), "smartcard".to_owned()])
            || got.rules[0]
                .combinations
                .contains(&vec!["smartcard".to_owned(), "card_pin".to_owned()])
    );
    // A bundle is no ticket.
    assert!(ticket::verify(&token, &public, now).is_err());

    // The same ticket once more: refused (one bundle per ticket).
    let (status, body) = post(f, "/v1/offline/bundle", bundle_body(&t)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error(&body), "ticket_used");

    let issued = audit_entries(f, "offline.bundle").await;
    let outcomes: Vec<&str> = issued.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["issued", "refused"]);
    assert_eq!(issued[0].actor, "nurse.tanaka");
    assert_eq!(issued[0].workstation.as_deref(), Some("ward3-ws01"));
    let report = audit::verify(&f.auth.store, f.auth.keys.audit.public_key())
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
}
on_both_engines!(
    r_off_1_bundle_for_a_fresh_ticket,
    r_off_1_bundle_for_a_fresh_ticket
);

async fn r_off_1_bundle_refusals(db: &TestDb) {
    let b = bed(db).await;
    let f = &b.f;
    let now = clock::now_ms() / 1000;
    let other_key = {
        let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap()
    };
    let cases: Vec<(String, StatusCode, &str)> = vec![
        // Another workstation's ticket.
        (
            ticket_for(f, &claims("nurse.tanaka", "ward9-ws02", now, "a")),
            StatusCode::FORBIDDEN,
            "ticket_invalid",
        ),
        // Not signed by this server.
        (
            ticket::sign(
                &claims("nurse.tanaka", "ward3-ws01", now, "b"),
                &other_key,
                "x",
            )
            .unwrap(),
            StatusCode::FORBIDDEN,
            "ticket_invalid",
        ),
        // Expired.
        (
            ticket_for(f, &claims("nurse.tanaka", "ward3-ws01", now - 3600, "c")),
            StatusCode::FORBIDDEN,
            "ticket_invalid",
        ),
        // Valid, but older than the bundle's limit.
        (
            ticket_for(f, &{
                let mut c = claims("nurse.tanaka", "ward3-ws01", now - 400, "d");
                c.exp = now + 600;
                c
            }),
            StatusCode::FORBIDDEN,
            "ticket_invalid",
        ),
        // An offline ticket.
        (
            ticket_for(f, &{
                let mut c = claims("nurse.tanaka", "ward3-ws01", now, "e");
                c.offline = true;
                c
            }),
            StatusCode::FORBIDDEN,
            "ticket_invalid",
        ),
        ("garbage".into(), StatusCode::FORBIDDEN, "ticket_invalid"),
    ];
    for (t, status, code) in &cases {
        let (got, body) = post(f, "/v1/offline/bundle", bundle_body(t)).await;
        assert_eq!(got, *status, "{}", String::from_utf8_lossy(&body));
        assert_eq!(error(&body), *code);
    }
    // A suspended user.
    let mut tx = f.auth.store.begin().await.unwrap();
    directory::set_user_state(
        &mut tx,
        "nurse.kato",
        directory::UserState::Suspended,
        now * 1000,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let t = ticket_for(f, &claims("nurse.kato", "ward3-ws01", now, "f"));
    let (status, body) = post(f, "/v1/offline/bundle", bundle_body(&t)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error(&body), "user_refused");
    // Bad bodies.
    let (status, body) = post(f, "/v1/offline/bundle", b"{".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&body), "invalid_json");
    let (status, body) = post(
        f,
        "/v1/offline/bundle",
        bundle_body(&"x".repeat(offline::MAX_BUNDLE_REQUEST_BYTES)),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error(&body), "body_too_large");
    // An unregistered workstation.
    let t = ticket_for(f, &claims("nurse.tanaka", "ward3-ws01", now, "g"));
    let (status, body) = post_as(
        f,
        Some(&"00".repeat(32)),
        "/v1/offline/bundle",
        bundle_body(&t),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error(&body), "workstation_refused");
    // Every refusal is in the audit log.
    let refused = audit_entries(f, "offline.bundle")
        .await
        .into_iter()
        .filter(|e| e.outcome == "refused")
        .count();
    assert_eq!(refused, cases.len() + 4);
}
on_both_engines!(r_off_1_bundle_refusals, r_off_1_bundle_refusals);

async fn r_off_1_no_bundle_without_an_offline_rule_or_credential(db: &TestDb) {
    let b = bed(db).await;
    let f = &b.f;
    let now = clock::now_ms() / 1000;
    // No rule lets a security officer use a ward workstation offline.
    for (user, jti, why) in [
        ("officer.ito", "h", "no rule"),
        // Offline allowed, but no enrolled card or key.
        ("nurse.kato", "i", "no enrolled card"),
    ] {
        let t = ticket_for(f, &claims(user, "ward3-ws01", now, jti));
        let (status, body) = post(f, "/v1/offline/bundle", bundle_body(&t)).await;
        assert_eq!(status, StatusCode::OK);
        let answer: BundleResponse = serde_json::from_slice(&body).unwrap();
        assert!(answer.bundle.is_none());
        assert!(answer.reason.unwrap().contains(why));
    }
    let none = audit_entries(f, "offline.bundle")
        .await
        .into_iter()
        .filter(|e| e.outcome == "none")
        .count();
    assert_eq!(none, 2);
}
on_both_engines!(
    r_off_1_no_bundle_without_an_offline_rule_or_credential,
    r_off_1_no_bundle_without_an_offline_rule_or_credential
);

fn event(seq: u64) -> AgentEventRecord {
    AgentEventRecord {
        seq,
        at_ms: T0 + seq as i64,
        kind: "authenticate".into(),
        outcome: "allow".into(),
        user: Some("nurse.tanaka".into()),
        purpose: Some(Purpose::Login),
        peer: Some("uid=0 (root) pid=42".into()),
        service: Some("gdm-password".into()),
        detail: format!("event {seq}"),
        offline: true,
        rule: Some("ward-login".into()),
        factors: vec!["smartcard".into(), "card_pin".into()],
        review: false,
    }
}

fn batch(stream: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<u8> {
    serde_json::to_vec(&EventBatch {
        stream: stream.into(),
        events: seqs.into_iter().map(event).collect(),
    })
    .unwrap()
}

async fn upload(f: &Fixture, body: Vec<u8>) -> EventAck {
    let (status, bytes) = post(f, "/v1/events", body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap()
}

/// (stream, seq) of every stored agent event, in audit order.
async fn stored(f: &Fixture) -> Vec<(String, u64)> {
    audit_entries(f, "agent.authenticate")
        .await
        .into_iter()
        .map(|e| {
            let d: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
            (
                d["stream"].as_str().unwrap().to_owned(),
                d["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn r_log_1_events_stored_exactly_once(db: &TestDb) {
    let b = bed(db).await;
    let f = &b.f;
    let ack = upload(f, batch(STREAM, 1..=3)).await;
    assert_eq!((ack.stored_up_to, ack.stored), (3, 3));
    // The same batch again (the agent did not get the answer): acknowledged, not stored.
    let ack = upload(f, batch(STREAM, 1..=3)).await;
    assert_eq!((ack.stored_up_to, ack.stored), (3, 0));
    // Overlapping: only the new ones.
    let ack = upload(f, batch(STREAM, 2..=5)).await;
    assert_eq!((ack.stored_up_to, ack.stored), (5, 2));
    // Another stream (a reinstalled agent) numbers from 1 again.
    let other = "ffeeddccbbaa99887766554433221100";
    let ack = upload(f, batch(other, 1..=2)).await;
    assert_eq!((ack.stored_up_to, ack.stored), (2, 2));
    // A gap: stored, and the loss is recorded.
    let ack = upload(f, batch(STREAM, [8, 9])).await;
    assert_eq!((ack.stored_up_to, ack.stored), (9, 2));
    let gap = audit_entries(f, "agent.events_gap").await;
    assert_eq!(gap.len(), 1);
    let d: serde_json::Value = serde_json::from_str(&gap[0].detail).unwrap();
    assert_eq!(
        (d["missing_from"].as_u64(), d["missing_to"].as_u64()),
        (Some(6), Some(7))
    );
    // A late event inside the gap is a replay now: never stored out of order.
    let ack = upload(f, batch(STREAM, [6])).await;
    assert_eq!((ack.stored_up_to, ack.stored), (9, 0));

    let mut want: Vec<(String, u64)> = (1..=5).map(|s| (STREAM.to_owned(), s)).collect();
    want.extend((1..=2).map(|s| (other.to_owned(), s)));
    want.extend([8, 9].map(|s| (STREAM.to_owned(), s)));
    assert_eq!(stored(f).await, want);
    let first = audit_entries(f, "agent.authenticate").await.remove(0);
    assert_eq!(first.actor, "nurse.tanaka");
    assert_eq!(first.workstation.as_deref(), Some("ward3-ws01"));
    assert_eq!(first.outcome, "allow");
    let d: serde_json::Value = serde_json::from_str(&first.detail).unwrap();
    assert_eq!(d["offline"], true);
    assert_eq!(d["agent_at_ms"], T0 + 1);
    assert_eq!(d["rule"], "ward-login");
    // Part of the hash chain.
    let report = audit::verify(&f.auth.store, f.auth.keys.audit.public_key())
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
}
on_both_engines!(
    r_log_1_events_stored_exactly_once,
    r_log_1_events_stored_exactly_once
);

async fn r_log_1_concurrent_uploads_store_once(db: &TestDb) {
    let b = bed(db).await;
    let f = &b.f;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let body = batch(STREAM, 1..=20);
        let app = app(f, Some(&f.ws.cert_sha256));
        tasks.push(tokio::spawn(async move {
            let req = Request::builder()
                .method("POST")
                .uri("/v1/events")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        // A loser of a race may be told to retry; never a 500.
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "{status}"
        );
    }
    let ack = upload(f, batch(STREAM, 1..=20)).await;
    assert_eq!((ack.stored_up_to, ack.stored), (20, 0));
    let want: Vec<(String, u64)> = (1..=20).map(|s| (STREAM.to_owned(), s)).collect();
    assert_eq!(stored(f).await, want);
}
on_both_engines!(
    r_log_1_concurrent_uploads_store_once,
    r_log_1_concurrent_uploads_store_once
);

async fn r_log_1_event_limits(db: &TestDb) {
    let b = bed(db).await;
    let f = &b.f;
    let long = {
        let mut e = event(1);
        e.detail = "x".repeat(5000);
        serde_json::to_vec(&EventBatch {
            stream: STREAM.into(),
            events: vec![e],
        })
        .unwrap()
    };
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (b"{".to_vec(), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            batch("XYZ", [1]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            batch(STREAM, [2, 1]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            batch(STREAM, [0]),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            batch(STREAM, []),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            batch(STREAM, 1..=101),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (long, StatusCode::BAD_REQUEST, "invalid_request"),
        (
            vec![b' '; MAX_EVENTS_BODY_BYTES + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            br#"{"stream":"00112233445566778899aabbccddeeff","events":[],"x":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ];
    for (body, status, code) in &cases {
        let (got, bytes) = post(f, "/v1/events", body.clone()).await;
        assert_eq!(got, *status, "{}", String::from_utf8_lossy(&bytes));
        assert_eq!(error(&bytes), *code);
    }
    let (status, bytes) = post_as(f, None, "/v1/events", batch(STREAM, [1])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error(&bytes), "workstation_refused");
    assert!(stored(f).await.is_empty());
    let refused = audit_entries(f, "agent.events").await;
    assert_eq!(refused.len(), cases.len() + 1);
    assert!(refused.iter().all(|e| e.outcome == "refused"));
}
on_both_engines!(r_log_1_event_limits, r_log_1_event_limits);

async fn r_emerg_1_offline_break_glass_is_reviewed(db: &TestDb) {
    let b = bed(db).await;
    let f = &b.f;
    let mut e = event(1);
    e.purpose = Some(Purpose::BreakGlass);
    e.review = true;
    let body = serde_json::to_vec(&EventBatch {
        stream: STREAM.into(),
        events: vec![e],
    })
    .unwrap();
    upload(f, body).await;
    let reviews: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reviews WHERE state = 'pending'")
        .fetch_one(f.auth.store.pool())
        .await
        .unwrap();
    assert_eq!(reviews, 1);
}
on_both_engines!(
    r_emerg_1_offline_break_glass_is_reviewed,
    r_emerg_1_offline_break_glass_is_reviewed
);
