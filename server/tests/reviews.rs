//! The break-glass review queue (R-EMERG-1): every allowed break-glass
//! authentication leaves a pending item in the same commit as its audit
//! entry; officers list and close items through the officer API and
//! `clinauthctl`, never their own.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clinauth_policy::Purpose;
use clinauth_proto::ticket::{self, Claims};
use clinauth_proto::workstation::{BeginRequest, EvidenceItem, FinishRequest, FinishResponse, B64};
use clinauth_proto::SecretString;
use clinauth_server::api::officer::{router, OfficerApi};
use clinauth_server::audit;
use clinauth_server::credentials::Enroller;
use clinauth_server::directory::{self, DeviceKind, NewDevice};
use clinauth_server::metrics::Metrics;
use clinauth_server::{clock, review};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use support::fixture::{badge, fixture, Fixture, T0};
use support::TestDb;
use tower::ServiceExt;

const ER_BADGE: [u8; 4] = [0x04, 0xE1, 0xE2, 0xE3];

async fn setup(db: &TestDb) -> Fixture {
    let f = fixture(db).await;
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
    // An officer who also holds a named emergency account role.
    directory::create_user(
        &mut tx,
        "officer.kato",
        "加藤",
        &["security_officer".into(), "emergency".into()],
        T0,
    )
    .await
    .unwrap();
    directory::create_device(
        &mut tx,
        &NewDevice {
            id: &clinauth_server::auth::evidence::badge_device_id(&ER_BADGE),
            kind: DeviceKind::Badge,
            owner: Some("officer.kato"),
            description: "emergency badge",
            public_key: None,
            attributes: json!({}),
        },
        T0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let enroller = Enroller {
        store: &f.auth.store,
        audit: &f.auth.keys.audit,
        data: &f.auth.keys.data[0],
        actor: "officer",
    };
    enroller
        .pin(
            "officer.kato",
            &clinauth_factors::pin::SecretPin::from_text("739184").unwrap(),
            T0,
        )
        .await
        .unwrap();
    enroller
        .pin(
            "nurse.tanaka",
            &clinauth_factors::pin::SecretPin::from_text("482913").unwrap(),
            T0,
        )
        .await
        .unwrap();
    f
}

async fn login(
    f: &Fixture,
    user: &str,
    purpose: Purpose,
    evidence: Vec<EvidenceItem>,
    at: i64,
) -> FinishResponse {
    let b = f
        .auth
        .begin(
            &f.ws,
            &BeginRequest {
                user: user.into(),
                purpose,
                operation: None,
            },
            at,
        )
        .await
        .unwrap();
    f.auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: b.challenge_id,
                evidence,
            },
            at + 10,
        )
        .await
        .unwrap()
}

fn pin(value: &str) -> EvidenceItem {
    EvidenceItem::ServerPin {
        value: SecretString::new(value).unwrap(),
    }
}

fn er_badge() -> EvidenceItem {
    EvidenceItem::Badge {
        uid: B64(ER_BADGE.to_vec()),
    }
}

fn ticket_of(f: &Fixture, user: &str) -> String {
    let now = clock::now().0;
    let claims = Claims {
        iss: "clinauth.test".into(),
        sub: user.into(),
        ws: "officer-desk-1".into(),
        purpose: Purpose::StepUp,
        rule: "officer-desk".into(),
        factors: vec!["smartcard".into(), "card_pin".into()],
        policy_version: 3,
        policy_digest: "sha256:00".into(),
        iat: now - 10,
        exp: now + 60,
        jti: "t".into(),
        idle_lock: 300,
        offline: false,
        review: false,
        op: None,
    };
    ticket::sign(&claims, &f.auth.keys.ticket, &f.auth.keys.ticket_kid).unwrap()
}

async fn call(f: &Fixture, who: &str, method: &str, path: &str, body: Body) -> (StatusCode, Value) {
    let app = router(OfficerApi {
        auth: f.auth.clone(),
        officer_roles: Arc::new(vec!["security_officer".into()]),
        fido2_require_uv: true,
        metrics: Arc::new(Metrics::default()),
    });
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", ticket_of(f, who)))
        .body(body)
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn json_body(v: Value) -> Body {
    Body::from(v.to_string())
}

async fn queue(db: &TestDb) {
    let f = setup(db).await;
    // An everyday login leaves no item.
    let r = login(
        &f,
        "nurse.tanaka",
        Purpose::Login,
        vec![badge(), pin("482913")],
        T0 + 1_000,
    )
    .await;
    assert!(matches!(r, FinishResponse::Allow { .. }), "{r:?}");
    assert!(review::list(&f.auth.store, None, 100)
        .await
        .unwrap()
        .is_empty());

    // Break-glass: allowed, and a pending item in the decision's commit.
    let r = login(
        &f,
        "officer.kato",
        Purpose::BreakGlass,
        vec![er_badge(), pin("739184")],
        T0 + 2_000,
    )
    .await;
    let FinishResponse::Allow { ticket, rule, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(rule, "break-glass");
    let claims = ticket::verify(
        &ticket,
        ring::signature::KeyPair::public_key(&f.auth.keys.ticket).as_ref(),
        (T0 + 2_100) / 1000,
    )
    .unwrap();
    assert!(claims.review);
    let pending = review::list(&f.auth.store, Some(review::ReviewState::Pending), 100)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let item = &pending[0];
    assert_eq!(item.id, claims.jti);
    assert_eq!(
        (
            item.user.as_str(),
            item.workstation.as_str(),
            item.purpose.as_str(),
            item.rule.as_str()
        ),
        ("officer.kato", "ward3-ws01", "break_glass", "break-glass")
    );
    assert_eq!(
        item.factors,
        vec!["badge".to_owned(), "server_pin".to_owned()]
    );
    let entries = audit::page(&f.auth.store, item.audit_seq - 1, 1)
        .await
        .unwrap();
    assert_eq!(entries[0].seq, item.audit_seq);
    assert_eq!(
        (entries[0].action.as_str(), entries[0].outcome.as_str()),
        ("auth.finish", "allow")
    );
    assert!(entries[0].detail.contains(&item.id));
    // A denied break-glass attempt leaves no item.
    let r = login(
        &f,
        "officer.kato",
        Purpose::BreakGlass,
        vec![er_badge()],
        T0 + 3_000,
    )
    .await;
    assert!(matches!(r, FinishResponse::Deny { .. }), "{r:?}");
    assert_eq!(
        review::list(&f.auth.store, None, 100).await.unwrap().len(),
        1
    );

    // The officer API.
    let (s, v) = call(
        &f,
        "officer.ito",
        "GET",
        "/v1/officer/reviews?state=pending",
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["reviews"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["reviews"][0]["id"], item.id.as_str());
    assert_eq!(v["reviews"][0]["state"], "pending");
    let (s, _) = call(
        &f,
        "nurse.tanaka",
        "GET",
        "/v1/officer/reviews",
        Body::empty(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only officers");
    let (s, v) = call(
        &f,
        "officer.ito",
        "GET",
        "/v1/officer/reviews?state=bogus",
        Body::empty(),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );

    let path = format!("/v1/officer/reviews/{}", item.id);
    // Nobody reviews their own break-glass access.
    let (s, v) = call(
        &f,
        "officer.kato",
        "POST",
        &path,
        json_body(json!({"outcome": "justified", "note": "me"})),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("own_review")),
        "{v}"
    );
    let (s, _) = call(
        &f,
        "nurse.tanaka",
        "POST",
        &path,
        json_body(json!({"outcome": "justified", "note": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "only officers");
    // Validated input, JSON errors.
    for (body, status) in [
        (
            json!({"outcome": "fine", "note": "x"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"outcome": "justified"}), StatusCode::BAD_REQUEST),
        (
            json!({"outcome": "justified", "note": "  "}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"outcome": "justified", "note": "a\u{7}b"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"outcome": "justified", "note": "x".repeat(2001)}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"outcome": "justified", "note": "x", "extra": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"outcome": "justified", "note": "x".repeat(9000)}),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let (s, v) = call(&f, "officer.ito", "POST", &path, json_body(body.clone())).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let (s, v) = call(
        &f,
        "officer.ito",
        "POST",
        "/v1/officer/reviews/0123456789abcdef0123456789abcdef",
        json_body(json!({"outcome": "justified", "note": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    let note = "救急外来での心停止対応。主治医確認済み / cardiac arrest in ER, confirmed";
    let (s, v) = call(
        &f,
        "officer.ito",
        "POST",
        &path,
        json_body(json!({"outcome": "justified", "note": note})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["review"]["state"], "closed");
    assert_eq!(v["review"]["outcome"], "justified");
    assert_eq!(v["review"]["note"], note);
    assert_eq!(v["review"]["reviewed_by"], "officer.ito");
    // Once only.
    let (s, v) = call(
        &f,
        "officer.ito",
        "POST",
        &path,
        json_body(json!({"outcome": "unjustified", "note": "again"})),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("review_closed")),
        "{v}"
    );
    let (s, v) = call(
        &f,
        "officer.ito",
        "GET",
        "/v1/officer/reviews",
        Body::empty(),
    )
    .await;
    assert_eq!(
        (s, v["reviews"].as_array().unwrap().len()),
        (StatusCode::OK, 0),
        "{v}"
    );
    let (_, v) = call(
        &f,
        "officer.ito",
        "GET",
        "/v1/officer/reviews?state=closed",
        Body::empty(),
    )
    .await;
    assert_eq!(v["reviews"][0]["outcome"], "justified", "{v}");
    let (_, v) = call(
        &f,
        "officer.ito",
        "GET",
        "/v1/officer/reviews?state=all",
        Body::empty(),
    )
    .await;
    assert_eq!(v["reviews"].as_array().unwrap().len(), 1, "{v}");

    // Audited: the close, and every refusal with who tried.
    let log = audit::page(&f.auth.store, 0, 10_000).await.unwrap();
    let closes: Vec<_> = log.iter().filter(|e| e.action == "review.close").collect();
    assert!(closes
        .iter()
        .any(|e| e.actor == "officer.ito" && e.outcome == "ok" && e.detail.contains(note)));
    assert!(closes
        .iter()
        .any(|e| e.actor == "officer.kato" && e.outcome == "refused"));
    assert!(closes.iter().any(|e| e.actor == "officer.ito"
        && e.outcome == "refused"
        && e.detail.contains("already closed")));
    assert!(audit::verify(&f.auth.store, f.auth.keys.audit.public_key())
        .await
        .unwrap()
        .is_intact());
}
on_both_engines!(r_emerg_1_break_glass_review_queue, queue);

fn ctl(config: &Path, args: &[&str]) -> (i32, String) {
    support::ctl::run(config, args)
}

async fn clinauthctl_review(db: &TestDb) {
    let dir = support::TempDir::new("ctl-review");
    let config = support::ctl::config(&dir.0, &db.url);
    let (code, out) = ctl(&config, &["init"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = ctl(&config, &["review", "list"]);
    assert_eq!((code, out.trim()), (0, "no review items"), "{out}");

    // A break-glass decision as the server records it.
    let store = db.open().await;
    let keys = clinauth_server::keys::Keys::load(&dir.join("keys")).unwrap();
    let mut tx = store.begin().await.unwrap();
    let entry = audit::append(
        &mut tx,
        store.backend(),
        &keys.audit,
        &audit::Event {
            at_ms: T0,
            actor: "er.doctor1".into(),
            workstation: Some("er-ws01".into()),
            action: "auth.finish".into(),
            target: None,
            outcome: "allow".into(),
            detail: json!({ "purpose": "break_glass", "review": true }),
        },
    )
    .await
    .unwrap();
    review::create(
        &mut tx,
        &review::NewReview {
            id: "00112233445566778899aabbccddeeff",
            user: "er.doctor1",
            workstation: "er-ws01",
            purpose: "break_glass",
            rule: "break-glass",
            factors: &["smartcard".into(), "card_pin".into()],
            audit_seq: entry.seq,
        },
        T0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    store.close().await;

    let (code, out) = ctl(&config, &["review", "list"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("00112233445566778899aabbccddeeff\tpending"),
        "{out}"
    );
    assert!(out.contains("er.doctor1\ter-ws01\tbreak_glass"), "{out}");
    let close = |who: &'static str, outcome: &'static str| {
        let config = config.clone();
        move || {
            ctl(
                &config,
                &[
                    "--as",
                    who,
                    "review",
                    "close",
                    "00112233445566778899aabbccddeeff",
                    "--outcome",
                    outcome,
                    "--note",
                    "checked with the ward",
                ],
            )
        }
    };
    let (code, out) = close("er.doctor1", "justified")();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("your own"), "{out}");
    let (code, out) = close("officer.ito", "maybe")();
    assert_eq!(code, 2, "{out}");
    let (code, out) = close("officer.ito", "unjustified")();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("closed as unjustified"), "{out}");
    let (code, out) = close("officer.ito", "justified")();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("already closed"), "{out}");
    let (code, out) = ctl(&config, &["review", "list", "--state", "closed"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("unjustified by officer.ito: checked with the ward"),
        "{out}"
    );
    let (code, out) = ctl(&config, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}
on_both_engines!(clinauthctl_review_list_and_close, clinauthctl_review);
