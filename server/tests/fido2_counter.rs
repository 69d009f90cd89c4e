//! A FIDO2 sign-counter regression (a cloned key, R-DEV-1) handled per the
//! policy's `fido2.counter_regression`: `refuse` (the default) refuses the
//! assertion and audits it; `suspend` also suspends the key, which the
//! officer API's device listing shows and only an officer re-enables.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use clinauth_factors::fido2::{Fido2Config, Fido2Verifier};
use clinauth_policy::Purpose;
use clinauth_proto::ticket::{self, Claims};
use clinauth_proto::workstation::{
    BeginRequest, BeginResponse, EvidenceItem, FinishRequest, FinishResponse,
};
use clinauth_server::api::officer::{router, OfficerApi};
use clinauth_server::audit;
use clinauth_server::auth::evidence::Verifiers;
use clinauth_server::credentials::Enroller;
use clinauth_server::directory::DeviceState;
use clinauth_server::metrics::Metrics;
use clinauth_server::officer::{device_listing, Officer};
use clinauth_server::{clock, directory};
use serde_json::{json, Value};
use std::sync::Arc;
use support::fixture::{fixture_with, Fixture, T0};
use support::TestDb;
use tower::ServiceExt;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softtoken::SoftToken;

const ORIGIN: &str = "https://clinauth.test";

async fn setup(db: &TestDb, setting: Option<&str>) -> Fixture {
    let verifier = Fido2Verifier::new(Fido2Config::new("clinauth.test", ORIGIN)).unwrap();
    let f = fixture_with(
        db,
        Verifiers {
            card_trust: Default::default(),
            fido2: Some(verifier),
            ..Verifiers::default()
        },
    )
    .await;
    if let Some(setting) = setting {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/policy/hospital.toml"
        ))
        .unwrap()
        .replacen("version = 3", "version = 4", 1);
        let text = format!("{text}\n[fido2]\ncounter_regression = \"{setting}\"\n");
        f.auth
            .policy
            .activate(&f.auth.store, &f.auth.keys.audit, &text, "officer", T0 + 1)
            .await
            .unwrap();
    }
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
    tx.commit().await.unwrap();
    f
}

/// Registers a key for the nurse; returns the token and its credential's device ID.
async fn register(f: &Fixture) -> (SoftToken, String) {
    let (mut token, _ca) = SoftToken::new(true).unwrap();
    let verifier = f.auth.verifiers.fido2.as_ref().unwrap();
    let enroller = Enroller {
        store: &f.auth.store,
        audit: &f.auth.keys.audit,
        data: &f.auth.keys.data[0],
        actor: "officer",
    };
    let (enrollment, options) = enroller
        .fido2_begin(verifier, "nurse.tanaka", "田中", true, T0)
        .await
        .unwrap();
    let mut v: Value = serde_json::from_str(&options).unwrap();
    v["publicKey"]["authenticatorSelection"]["userVerification"] = "required".into();
    let ccr: CreationChallengeResponse = serde_json::from_value(v).unwrap();
    let response = serde_json::to_string(
        &token
            .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
            .unwrap(),
    )
    .unwrap();
    let registered = enroller
        .fido2_finish(verifier, "nurse.tanaka", &enrollment, &response, T0 + 1_000)
        .await
        .unwrap();
    let id = clinauth_server::credentials::fido2_id(&registered.credential_id);
    (token, id)
}

fn clone_of(token: &SoftToken) -> SoftToken {
    SoftToken::from_cbor(&token.to_cbor().unwrap()).unwrap()
}

async fn begin(f: &Fixture, at: i64) -> BeginResponse {
    f.auth
        .begin(
            &f.ws,
            &BeginRequest {
                user: "nurse.tanaka".into(),
                purpose: Purpose::Login,
                operation: None,
            },
            at,
        )
        .await
        .unwrap()
}

async fn finish_with(
    f: &Fixture,
    token: &mut SoftToken,
    b: &BeginResponse,
    at: i64,
) -> FinishResponse {
    let mut options = b.webauthn.clone().expect("a WebAuthn request");
    options["publicKey"]["userVerification"] = "required".into();
    let rcr: RequestChallengeResponse = serde_json::from_value(options).unwrap();
    let assertion = serde_json::to_value(
        token
            .do_authentication(Url::parse(ORIGIN).unwrap(), rcr)
            .unwrap(),
    )
    .unwrap();
    f.auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: b.challenge_id.clone(),
                evidence: vec![EvidenceItem::Fido2 { assertion }],
            },
            at,
        )
        .await
        .unwrap()
}

async fn login(f: &Fixture, token: &mut SoftToken, at: i64) -> FinishResponse {
    let b = begin(f, at).await;
    finish_with(f, token, &b, at + 10).await
}

fn officer_ticket(f: &Fixture) -> String {
    let now = clock::now().0;
    let claims = Claims {
        iss: "clinauth.test".into(),
        sub: "officer.ito".into(),
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

async fn officer_call(f: &Fixture, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
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
        .header("authorization", format!("Bearer {}", officer_ticket(f)))
        .body(if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        })
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

/// The key's row in the officer API's device listing.
async fn listed(f: &Fixture, id: &str) -> Value {
    let (status, v) = officer_call(f, "GET", "/v1/devices", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not in the device listing: {v}"))
}

async fn entries(f: &Fixture, action: &str) -> Vec<audit::Entry> {
    audit::page(&f.auth.store, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action)
        .collect()
}

fn denied_because(r: &FinishResponse, words: &str) {
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("expected a denial naming {words:?}: {r:?}")
    };
    assert!(reason.contains(words), "{reason}");
}

/// A cloned key: the clone's counter is behind the original's.
async fn regress(f: &Fixture, original: &mut SoftToken, clone: &mut SoftToken) -> FinishResponse {
    assert!(matches!(
        login(f, original, T0 + 10_000).await,
        FinishResponse::Allow { .. }
    ));
    assert!(matches!(
        login(f, original, T0 + 20_000).await,
        FinishResponse::Allow { .. }
    ));
    login(f, clone, T0 + 30_000).await
}

async fn regression_refused_by_default(db: &TestDb) {
    let f = setup(db, None).await;
    let (mut original, id) = register(&f).await;
    let mut clone = clone_of(&original);
    let r = regress(&f, &mut original, &mut clone).await;
    denied_because(&r, "sign counter went backwards");
    let logged = entries(&f, "fido2.counter_regression").await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].outcome, "refused");
    assert_eq!(logged[0].target.as_deref(), Some(id.as_str()));
    assert!(
        logged[0].detail.contains("\"policy\":\"refuse\""),
        "{}",
        logged[0].detail
    );
    // The key stays usable: the original logs in again.
    assert_eq!(listed(&f, &id).await["state"], "active");
    assert!(matches!(
        login(&f, &mut original, T0 + 40_000).await,
        FinishResponse::Allow { .. }
    ));
    assert!(audit::verify(&f.auth.store, f.auth.keys.audit.public_key())
        .await
        .unwrap()
        .is_intact());
}
on_both_engines!(refuse_is_the_default, regression_refused_by_default);

async fn regression_refused_with_refuse(db: &TestDb) {
    let f = setup(db, Some("refuse")).await;
    let (mut original, id) = register(&f).await;
    let mut clone = clone_of(&original);
    let r = regress(&f, &mut original, &mut clone).await;
    denied_because(&r, "sign counter went backwards");
    assert_eq!(
        entries(&f, "fido2.counter_regression").await[0].outcome,
        "refused"
    );
    assert_eq!(listed(&f, &id).await["state"], "active");
}
on_both_engines!(refuse_keeps_the_key, regression_refused_with_refuse);

async fn regression_suspends_with_suspend(db: &TestDb) {
    let f = setup(db, Some("suspend")).await;
    let (mut original, id) = register(&f).await;
    let mut clone = clone_of(&original);
    assert!(matches!(
        login(&f, &mut original, T0 + 10_000).await,
        FinishResponse::Allow { .. }
    ));
    assert!(matches!(
        login(&f, &mut original, T0 + 20_000).await,
        FinishResponse::Allow { .. }
    ));
    // Two logins begun while the key is active; the clone answers the first.
    let first = begin(&f, T0 + 30_000).await;
    let second = begin(&f, T0 + 30_001).await;
    let r = finish_with(&f, &mut clone, &first, T0 + 30_010).await;
    denied_because(&r, "sign counter went backwards");
    let logged = entries(&f, "fido2.counter_regression").await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].outcome, "suspended");
    assert!(
        logged[0].detail.contains("\"policy\":\"suspend\""),
        "{}",
        logged[0].detail
    );

    // Visible to officers.
    let row = listed(&f, &id).await;
    assert_eq!(row["state"], "suspended", "{row}");
    assert_eq!(row["kind"], "fido2_token", "{row}");
    assert_eq!(row["owner"], "nurse.tanaka", "{row}");
    assert_eq!(row["attributes"]["counter"], 2, "{row}");

    // Refused afterwards even with a good counter (the original's is ahead),
    // including for a login begun before the suspension …
    let r = finish_with(&f, &mut original, &second, T0 + 35_000).await;
    denied_because(&r, "the key is suspended");
    // … and a new login offers no WebAuthn request for it.
    let b = begin(&f, T0 + 40_000).await;
    assert!(b.webauthn.is_none(), "a suspended key is not offered");

    // Only an officer re-enables it (officer API), and that is audited.
    let path = format!("/v1/devices/{}/state", id.replace(':', "%3A"));
    let (status, v) = officer_call(&f, "POST", &path, json!({ "state": "active" })).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(listed(&f, &id).await["state"], "active");
    let changes = entries(&f, "device.state").await;
    let last = changes.last().unwrap();
    assert_eq!(
        (
            last.actor.as_str(),
            last.target.as_deref(),
            last.outcome.as_str()
        ),
        ("officer.ito", Some(id.as_str()), "ok")
    );
    assert!(
        last.detail.contains("\"previous\":\"suspended\""),
        "{}",
        last.detail
    );
    assert!(matches!(
        login(&f, &mut original, T0 + 50_000).await,
        FinishResponse::Allow { .. }
    ));
    // The clone is still behind: caught and suspended again.
    let r = login(&f, &mut clone, T0 + 60_000).await;
    denied_because(&r, "sign counter went backwards");
    assert_eq!(listed(&f, &id).await["state"], "suspended");

    // clinauthctl and the officer API share this operation.
    Officer {
        store: &f.auth.store,
        key: &f.auth.keys.audit,
        actor: "officer.ito",
    }
    .set_device_state(&id, DeviceState::Active, T0 + 70_000)
    .await
    .unwrap();
    let devices = device_listing(&f.auth.store).await.unwrap();
    assert_eq!(
        devices.iter().find(|d| d.id == id).unwrap().state,
        DeviceState::Active
    );
    // Unknown keys are a 404 with a JSON error.
    let (status, v) = officer_call(
        &f,
        "POST",
        "/v1/devices/fido2%3A00/state",
        json!({ "state": "active" }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(audit::verify(&f.auth.store, f.auth.keys.audit.public_key())
        .await
        .unwrap()
        .is_intact());
}
on_both_engines!(
    suspend_until_an_officer_reenables,
    regression_suspends_with_suspend
);
