//! FIDO2 through the server: registration (officer), then begin → finish
//! with a software authenticator (no USB here; TESTING.md).

mod support;

use clinauth_factors::fido2::{Fido2Config, Fido2Verifier};
use clinauth_policy::Purpose;
use clinauth_proto::workstation::{BeginRequest, EvidenceItem, FinishRequest, FinishResponse};
use clinauth_server::auth::evidence::Verifiers;
use clinauth_server::credentials::Enroller;
use support::fixture::{fixture_with, Fixture, T0};
use support::{Engine, TestDb};
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softtoken::SoftToken;

const ORIGIN: &str = "https://clinauth.test";

fn enroller(f: &Fixture) -> Enroller<'_> {
    Enroller {
        store: &f.auth.store,
        audit: &f.auth.keys.audit,
        data: &f.auth.keys.data[0],
        actor: "officer",
    }
}

async fn setup() -> (TestDb, Fixture) {
    let db = TestDb::new(Engine::Sqlite).await;
    let verifier = Fido2Verifier::new(Fido2Config::new("clinauth.test", ORIGIN)).unwrap();
    let f = fixture_with(
        &db,
        Verifiers {
            card_trust: Default::default(),
            fido2: Some(verifier),
            ..Verifiers::default()
        },
    )
    .await;
    (db, f)
}

/// The client's part: the authenticator signs what the server's options ask.
fn assert_with(token: &mut SoftToken, options: &serde_json::Value, uv: &str) -> serde_json::Value {
    let mut v = options.clone();
    v["publicKey"]["userVerification"] = uv.into();
    let rcr: RequestChallengeResponse = serde_json::from_value(v).unwrap();
    serde_json::to_value(
        token
            .do_authentication(Url::parse(ORIGIN).unwrap(), rcr)
            .unwrap(),
    )
    .unwrap()
}

async fn register(f: &Fixture, token: &mut SoftToken) {
    let verifier = f.auth.verifiers.fido2.as_ref().unwrap();
    let (enrollment, options) = enroller(f)
        .fido2_begin(verifier, "nurse.tanaka", "田中", true, T0)
        .await
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&options).unwrap();
    v["publicKey"]["authenticatorSelection"]["userVerification"] = "required".into();
    let ccr: CreationChallengeResponse = serde_json::from_value(v).unwrap();
    let response = serde_json::to_string(
        &token
            .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
            .unwrap(),
    )
    .unwrap();
    let registered = enroller(f)
        .fido2_finish(verifier, "nurse.tanaka", &enrollment, &response, T0 + 1_000)
        .await
        .unwrap();
    assert!(registered.user_verified_at_registration);
    // The enrollment is single use.
    assert!(enroller(f)
        .fido2_finish(verifier, "nurse.tanaka", &enrollment, &response, T0 + 2_000)
        .await
        .is_err());
}

async fn login(
    f: &Fixture,
    token: &mut SoftToken,
    uv: &str,
    at: i64,
) -> (FinishResponse, serde_json::Value) {
    let b = f
        .auth
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
        .unwrap();
    let options = b
        .webauthn
        .expect("begin offers a WebAuthn request for a user with a key");
    let assertion = assert_with(token, &options, uv);
    let r = f
        .auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: b.challenge_id,
                evidence: vec![EvidenceItem::Fido2 {
                    assertion: assertion.clone(),
                }],
            },
            at + 10,
        )
        .await
        .unwrap();
    (r, assertion)
}

#[tokio::test]
async fn r_auth_4_fido2_with_uv_alone_logs_in() {
    let (_db, f) = setup().await;
    let (mut token, _ca) = SoftToken::new(true).unwrap();
    register(&f, &mut token).await;
    let (r, _) = login(&f, &mut token, "required", T0 + 10_000).await;
    let FinishResponse::Allow { factors, rule, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        (rule.as_str(), factors),
        ("ward-login", vec!["fido2_uv".to_owned()])
    );
}

#[tokio::test]
async fn fido2_assertion_is_bound_to_its_challenge() {
    let (_db, f) = setup().await;
    let (mut token, _ca) = SoftToken::new(true).unwrap();
    register(&f, &mut token).await;
    let (first, assertion) = login(&f, &mut token, "required", T0 + 10_000).await;
    assert!(matches!(first, FinishResponse::Allow { .. }));
    // The same assertion presented for a new challenge.
    let b = f
        .auth
        .begin(
            &f.ws,
            &BeginRequest {
                user: "nurse.tanaka".into(),
                purpose: Purpose::Login,
                operation: None,
            },
            T0 + 20_000,
        )
        .await
        .unwrap();
    let r = f
        .auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: b.challenge_id,
                evidence: vec![EvidenceItem::Fido2 { assertion }],
            },
            T0 + 20_010,
        )
        .await
        .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("a replayed assertion must not count: {r:?}")
    };
    assert!(reason.contains("fido2:"), "{reason}");
}

#[tokio::test]
async fn r_auth_4_a_key_registered_with_uv_cannot_log_in_without_it() {
    let (_db, f) = setup().await;
    let (mut token, _ca) = SoftToken::new(true).unwrap();
    register(&f, &mut token).await;
    let (r, _) = login(&f, &mut token, "discouraged", T0 + 10_000).await;
    assert!(matches!(r, FinishResponse::Deny { .. }), "{r:?}");
}

#[tokio::test]
async fn users_without_keys_get_no_webauthn_request() {
    let (_db, f) = setup().await;
    let b = f
        .auth
        .begin(
            &f.ws,
            &BeginRequest {
                user: "nurse.tanaka".into(),
                purpose: Purpose::Login,
                operation: None,
            },
            T0,
        )
        .await
        .unwrap();
    assert!(b.webauthn.is_none());
    let r = f
        .auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: b.challenge_id,
                evidence: vec![EvidenceItem::Fido2 {
                    assertion: serde_json::json!({}),
                }],
            },
            T0 + 10,
        )
        .await
        .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("no FIDO2 request was issued"), "{reason}");
}
