//! The officer API: ticket authentication, officer role, JSON errors, and
//! each operation through HTTP.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use clinauth_policy::Purpose;
use clinauth_proto::ticket::{self, Claims};
use clinauth_server::api::officer::{router, OfficerApi};
use clinauth_server::clock;
use clinauth_server::metrics::Metrics;
use serde_json::{json, Value};
use std::sync::Arc;
use support::fixture::{fixture, Fixture};
use support::{Engine, TestDb};
use tower::ServiceExt;

fn token(f: &Fixture, user: &str, exp_in: i64) -> String {
    token_for(f, user, exp_in, Purpose::StepUp)
}

fn token_for(f: &Fixture, user: &str, exp_in: i64, purpose: Purpose) -> String {
    let now = clock::now().0;
    let claims = Claims {
        iss: "clinauth.test".into(),
        sub: user.into(),
        ws: "officer-desk-1".into(),
        purpose,
        rule: "officer-desk".into(),
        factors: vec!["smartcard".into(), "card_pin".into()],
        policy_version: 3,
        policy_digest: "sha256:00".into(),
        iat: now - 10,
        exp: now + exp_in,
        jti: "t".into(),
        idle_lock: 300,
        offline: false,
        review: false,
        op: None,
    };
    ticket::sign(&claims, &f.auth.keys.ticket, &f.auth.keys.ticket_kid).unwrap()
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(t) = bearer {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

async fn setup() -> (TestDb, Fixture, Router) {
    let db = TestDb::new(Engine::Sqlite).await;
    let f = fixture(&db).await;
    let mut tx = f.auth.store.begin().await.unwrap();
    clinauth_server::directory::create_user(
        &mut tx,
        "officer.ito",
        "伊藤",
        &["security_officer".into()],
        0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let app = router(OfficerApi {
        auth: f.auth.clone(),
        officer_roles: Arc::new(vec!["security_officer".into()]),
        fido2_require_uv: true,
        metrics: Arc::new(Metrics::default()),
    });
    (db, f, app)
}

#[tokio::test]
async fn only_officers_with_a_valid_ticket_get_in() {
    let (_db, f, app) = setup().await;
    let (s, v) = call(&app, "GET", "/v1/users", None, Value::Null).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, _) = call(&app, "GET", "/v1/users", Some("not.a.ticket"), Value::Null).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &app,
        "GET",
        "/v1/users",
        Some(&token(&f, "officer.ito", -120)),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "expired ticket");
    let login = token_for(&f, "officer.ito", 60, Purpose::Login);
    let (s, _) = call(&app, "GET", "/v1/users", Some(&login), Value::Null).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "an everyday login ticket is not enough"
    );
    let (s, v) = call(
        &app,
        "GET",
        "/v1/users",
        Some(&token(&f, "nurse.tanaka", 60)),
        Value::Null,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    // A ticket signed by another server's key.
    let other = ring::signature::Ed25519KeyPair::from_pkcs8(
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    let forged = {
        let mut parts: Vec<String> = token(&f, "officer.ito", 60)
            .split('.')
            .map(str::to_owned)
            .collect();
        let sig = other.sign(format!("{}.{}", parts[0], parts[1]).as_bytes());
        use base64::Engine;
        parts[2] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig.as_ref());
        parts.join(".")
    };
    let (s, _) = call(&app, "GET", "/v1/users", Some(&forged), Value::Null).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call(
        &app,
        "GET",
        "/v1/users",
        Some(&token(&f, "officer.ito", 60)),
        Value::Null,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["users"].as_array().unwrap().len(), 3);
    let (s, _) = call(&app, "GET", "/v1/openapi.json", None, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn directory_and_devices_through_the_api() {
    let (_db, f, app) = setup().await;
    let t = token(&f, "officer.ito", 60);
    let t = Some(t.as_str());
    let (s, _) = call(
        &app,
        "POST",
        "/v1/users",
        t,
        json!({"id":"dr.sato","display_name":"佐藤","roles":["physician"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(
        &app,
        "POST",
        "/v1/users",
        t,
        json!({"id":"dr.sato","display_name":"x"}),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("exists"))
    );
    let (s, v) = call(
        &app,
        "POST",
        "/v1/users",
        t,
        json!({"id":"bad id","display_name":"x"}),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let (s, v) = call(
        &app,
        "POST",
        "/v1/users",
        t,
        json!({"id":"x","display_name":"x","admin":true}),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let (s, _) = call(
        &app,
        "POST",
        "/v1/users/dr.sato/state",
        t,
        json!({"state":"suspended"}),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/users/dr.sato/state",
        t,
        json!({"state":"vacation"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/users/ghost/state",
        t,
        json!({"state":"active"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/users/dr.sato/roles",
        t,
        json!({"roles":["physician","security_officer"]}),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&app, "POST", "/v1/users/dr.sato/unlock", t, Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = call(
        &app,
        "POST",
        "/v1/users/dr.sato/badges",
        t,
        json!({"uid":"04aabbcc"}),
    )
    .await;
    assert_eq!(
        (s, v["device"].as_str()),
        (StatusCode::CREATED, Some("badge-04aabbcc"))
    );
    let (s, _) = call(
        &app,
        "POST",
        "/v1/users/dr.sato/badges",
        t,
        json!({"uid":"zz"}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/workstations",
        t,
        json!({"id":"ws2","cert_sha256":"ef".repeat(32),"group":"ward"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/workstations/ws2/state",
        t,
        json!({"state":"decommissioned"}),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = call(&app, "GET", "/v1/workstations", t, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["workstations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["state"] == "decommissioned"));
    let (s, v) = call(&app, "GET", "/v1/devices", t, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["devices"].as_array().unwrap().len(), 2);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/devices/badge-04aabbcc/state",
        t,
        json!({"state":"suspended"}),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (s, v) = call(&app, "GET", "/v1/audit?after=0&limit=500", t, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    let entries = v["entries"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["action"] == "user.add" && e["actor"] == "officer.ito"));
    let (s, _) = call(&app, "GET", "/v1/audit?limit=abc", t, Value::Null).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = call(&app, "GET", "/v1/audit/verify", t, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["intact"], true, "{v}");
}

#[tokio::test]
async fn r_pol_1_policies_are_validated_before_they_take_effect() {
    let (_db, f, app) = setup().await;
    let t = token(&f, "officer.ito", 60);
    let t = Some(t.as_str());
    let read = |n: &str| {
        std::fs::read_to_string(format!(
            "{}/../examples/policy/{n}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    let (s, v) = call(
        &app,
        "POST",
        "/v1/policies",
        t,
        json!({"text": read("weak.toml")}),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let codes: Vec<&str> = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"R-AUTH-2"), "{codes:?}");
    let (s, _) = call(
        &app,
        "POST",
        "/v1/policies",
        t,
        json!({"text": "version ="}),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let v4 = read("hospital.toml")
        .replace("version = 3", "version = 4")
        .replace("idle_lock = \"3m\"", "idle_lock = \"2m\"");
    let (s, v) = call(&app, "POST", "/v1/policies", t, json!({"text": v4})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["version"], 4);
    let (s, v) = call(
        &app,
        "POST",
        "/v1/policies",
        t,
        json!({"text": read("hospital.toml")}),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("version"))
    );
    let (s, v) = call(&app, "GET", "/v1/policies", t, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["policies"][0]["version"], 4);
    assert_eq!(v["policies"][0]["created_by"], "officer.ito");
    let (s, v) = call(&app, "GET", "/metrics", t, Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    assert!(text.contains("clinauth_auth_finish_total"));
    assert!(text.contains("# TYPE clinauth_db_commit_seconds histogram"));
}

#[tokio::test]
async fn enrollment_of_pin_totp_and_cards() {
    let (_db, f, app) = setup().await;
    let t = token(&f, "officer.ito", 60);
    let t = Some(t.as_str());
    let (s, v) = call(
        &app,
        "POST",
        "/v1/users/nurse.tanaka/pin",
        t,
        json!({"pin": "1234"}),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("pin_policy")),
        "{v}"
    );
    let (s, _) = call(
        &app,
        "POST",
        "/v1/users/nurse.tanaka/pin",
        t,
        json!({"pin": "58204913"}),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(
        &app,
        "POST",
        "/v1/users/ghost/pin",
        t,
        json!({"pin": "58204913"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = call(&app, "POST", "/v1/users/nurse.tanaka/totp", t, Value::Null).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(
        v["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/"),
        "{v}"
    );
    assert!(
        v["qr_png_base64"]
            .as_str()
            .unwrap()
            .starts_with("iVBORw0KGgo"),
        "a PNG"
    );
    let uri = v["otpauth_uri"].as_str().unwrap().to_owned();
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    assert!(secret.len() >= 16, "{uri}");
    // No CA is configured in this fixture: every card is refused, with the reason.
    let (s, v) = call(
        &app,
        "POST",
        "/v1/users/nurse.tanaka/cards",
        t,
        json!({"certificate": "MIIB"}),
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("card_refused")),
        "{v}"
    );
    // Neither the PIN nor the TOTP secret reaches the audit log.
    let log = clinauth_server::audit::page(&f.auth.store, 0, 1000)
        .await
        .unwrap();
    assert!(log
        .iter()
        .all(|e| !e.detail.contains("58204913") && !e.detail.contains(&secret)));
    assert!(log
        .iter()
        .any(|e| e.action == "credential.enroll" && e.detail.contains("\"kind\":\"totp\"")));
}

#[tokio::test]
async fn fido2_registration_needs_fido2_enabled() {
    let (_db, f, app) = setup().await;
    let t = token(&f, "officer.ito", 60);
    let (s, v) = call(
        &app,
        "POST",
        "/v1/users/nurse.tanaka/fido2",
        Some(&t),
        Value::Null,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("fido2_disabled")),
        "{v}"
    );
}
