//! FIDO2 factor: registration and assertions against webauthn-rs with the
//! software authenticators of `webauthn-authenticator-rs` (no USB here).
//!
//! The soft authenticators set the UV flag only when the options they are
//! given say `userVerification: "required"` (and they were built with
//! `falsify_uv = true`, i.e. "this authenticator can verify the user"). A
//! real UV-capable key also verifies under "preferred", which is what the
//! server asks for at authentication. The tests therefore play the client:
//! they take the server's options and set `userVerification` to what the
//! authenticator in the scenario would do ("required" = it verifies the
//! user, "discouraged" = presence only). The server never sees the options
//! the client used, only the signed flags, so this is the same evidence as a
//! real key would produce.
//!
//! Every state crosses a `String` between start and finish, as it does in
//! the server's challenge row.

use clinauth_factors::fido2::{
    AttestationTrust, Fido2Config, Fido2Credential, Fido2Error, Fido2User, Fido2Verifier,
    RegisteredCredential, MAX_ASSERTION_LEN, MAX_CREDENTIALS, MAX_CREDENTIAL_LEN,
    MAX_REGISTRATION_RESPONSE_LEN, MAX_STATE_LEN,
};
use clinauth_policy::{Aaguid, Factor, Seconds, UnixTime};
use der::pem::LineEnding;
use der::EncodePem;
use proptest::prelude::*;
use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, RequestChallengeResponse, Url, WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::{SoftToken, AAGUID as SOFTTOKEN_AAGUID};

const RP_ID: &str = "clinauth.example-hospital.jp";
const ORIGIN: &str = "https://clinauth.example-hospital.jp";
/// 2025-06-01T00:00:00Z.
const NOW: UnixTime = UnixTime(1_748_736_000);

// ---------------------------------------------------------------- harness

fn config(trust: Option<AttestationTrust>) -> Fido2Config {
    let mut c = Fido2Config::new(RP_ID, ORIGIN);
    c.rp_name = Some("ClinAuth".to_owned());
    c.attestation = trust;
    c
}

fn verifier(trust: Option<AttestationTrust>) -> Fido2Verifier {
    Fido2Verifier::new(config(trust)).unwrap()
}

fn user() -> Fido2User<'static> {
    Fido2User {
        handle: [0x42; 16],
        name: "nurse.sato",
        display_name: "佐藤 花子",
    }
}

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

/// A SoftToken (with its own attestation CA) and that CA as PEM.
fn soft_token(can_verify_user: bool) -> (SoftToken, Vec<u8>) {
    let (token, ca) = SoftToken::new(can_verify_user).unwrap();
    let pem = ca.to_pem(LineEnding::LF).unwrap().into_bytes();
    (token, pem)
}

fn trust_all_models(ca_pem: &[u8]) -> AttestationTrust {
    let mut t = AttestationTrust::new();
    t.allow_ca_pem(ca_pem, &[]).unwrap();
    t
}

fn softtoken_aaguid() -> Aaguid {
    Aaguid(*SOFTTOKEN_AAGUID.as_bytes())
}

/// The client's side of a registration. `uv` overrides the options'
/// `userVerification` as the authenticator would behave.
fn client_register<A: WebauthnAuthenticator>(
    authenticator: &mut A,
    options: &str,
    uv: Option<&str>,
) -> String {
    let mut v: serde_json::Value = serde_json::from_str(options).unwrap();
    if let Some(uv) = uv {
        v["publicKey"]["authenticatorSelection"]["userVerification"] = uv.into();
    }
    let ccr: CreationChallengeResponse = serde_json::from_value(v).unwrap();
    let response = authenticator.do_registration(origin(), ccr).unwrap();
    serde_json::to_string(&response).unwrap()
}

/// The client's side of an authentication, from `at` (the page's origin).
fn client_assert_at<A: WebauthnAuthenticator>(
    authenticator: &mut A,
    options: &str,
    uv: &str,
    at: &str,
) -> String {
    let mut v: serde_json::Value = serde_json::from_str(options).unwrap();
    v["publicKey"]["userVerification"] = uv.into();
    let rcr: RequestChallengeResponse = serde_json::from_value(v).unwrap();
    let response = authenticator
        .do_authentication(Url::parse(at).unwrap(), rcr)
        .unwrap();
    serde_json::to_string(&response).unwrap()
}

fn client_assert<A: WebauthnAuthenticator>(
    authenticator: &mut A,
    options: &str,
    uv: &str,
) -> String {
    client_assert_at(authenticator, options, uv, ORIGIN)
}

/// Registration, start to finish, with the authenticator behaving as `uv` says.
fn register<A: WebauthnAuthenticator>(
    v: &Fido2Verifier,
    authenticator: &mut A,
    require_uv: bool,
    uv: Option<&str>,
) -> Result<RegisteredCredential, Fido2Error> {
    let challenge = v.start_registration(&user(), &[], require_uv, NOW)?;
    let response = client_register(authenticator, &challenge.client_options, uv);
    v.finish_registration(&challenge.state, &response, NOW)
}

/// Registers and returns the credential as the server would read it back.
fn enrolled<A: WebauthnAuthenticator>(
    v: &Fido2Verifier,
    authenticator: &mut A,
    require_uv: bool,
) -> Fido2Credential {
    let uv = if require_uv {
        None
    } else {
        Some("discouraged")
    };
    let reg = register(v, authenticator, require_uv, uv).unwrap();
    let stored = reg.credential.to_json().unwrap();
    Fido2Credential::from_json(&stored).unwrap()
}

// ------------------------------------------------------------ R-AUTH-4: UV

#[test]
fn r_auth_4_fido2_with_uv_is_reported_as_user_verified() {
    let v = verifier(None);
    let (mut token, _) = soft_token(true);
    let reg = register(&v, &mut token, true, None).unwrap();
    assert!(reg.user_verified_at_registration);
    let creds = [reg.credential];

    let challenge = v.start_authentication(&creds, NOW).unwrap();
    // The server asks for "preferred"; this authenticator verifies the user.
    assert!(challenge
        .client_options
        .contains(r#""userVerification":"preferred""#));
    let response = client_assert(&mut token, &challenge.client_options, "required");
    let assertion = v
        .finish_authentication(&challenge.state, &response, &creds, NOW)
        .unwrap();
    assert!(assertion.user_verified);
    assert_eq!(assertion.counter, 1);
    assert_eq!(assertion.verified_at, NOW);
    assert_eq!(
        assertion.into_factor(),
        Factor::Fido2 {
            user_verified: true,
            aaguid: None
        }
    );
}

#[test]
fn r_auth_4_fido2_presence_only_is_reported_as_not_user_verified() {
    let v = verifier(None);
    let (mut token, _) = soft_token(false);
    let reg = register(&v, &mut token, false, None).unwrap();
    assert!(!reg.user_verified_at_registration);
    let creds = [reg.credential];

    let challenge = v.start_authentication(&creds, NOW).unwrap();
    let response = client_assert(&mut token, &challenge.client_options, "discouraged");
    let assertion = v
        .finish_authentication(&challenge.state, &response, &creds, NOW)
        .unwrap();
    assert!(!assertion.user_verified);
    let evidence = assertion.into_evidence();
    assert_eq!(evidence.verified_at, NOW);
    assert_eq!(
        evidence.factor,
        Factor::Fido2 {
            user_verified: false,
            aaguid: None
        }
    );
}

#[test]
fn r_auth_4_presence_only_key_refused_when_registration_requires_uv() {
    let v = verifier(None);
    let (mut token, _) = soft_token(false);
    // The options require UV; this key cannot do it and answers presence only.
    let err = register(&v, &mut token, true, Some("discouraged")).unwrap_err();
    assert_eq!(err, Fido2Error::UserNotVerified);
}

#[test]
fn r_auth_4_credential_registered_with_uv_cannot_assert_without_it() {
    let v = verifier(None);
    let (mut token, _) = soft_token(true);
    let creds = [enrolled(&v, &mut token, true)];
    assert!(creds[0].user_verified_at_registration());

    let challenge = v.start_authentication(&creds, NOW).unwrap();
    let response = client_assert(&mut token, &challenge.client_options, "discouraged");
    let err = v
        .finish_authentication(&challenge.state, &response, &creds, NOW)
        .unwrap_err();
    assert_eq!(err, Fido2Error::UserNotVerified);
}

#[test]
fn r_auth_4_uv_and_presence_only_keys_answer_one_ceremony() {
    let v = verifier(None);
    let (mut uv_key, _) = soft_token(true);
    let (mut usb_token, _) = soft_token(false);
    let creds = [
        enrolled(&v, &mut uv_key, true),
        enrolled(&v, &mut usb_token, false),
    ];
    let a = v.start_authentication(&creds, NOW).unwrap();
    let r = client_assert(&mut usb_token, &a.client_options, "discouraged");
    let got = v.finish_authentication(&a.state, &r, &creds, NOW).unwrap();
    assert!(!got.user_verified);
    assert_eq!(got.credential_id, creds[1].credential_id());

    let b = v.start_authentication(&creds, NOW).unwrap();
    let r = client_assert(&mut uv_key, &b.client_options, "required");
    let got = v.finish_authentication(&b.state, &r, &creds, NOW).unwrap();
    assert!(got.user_verified);
    assert_eq!(got.credential_id, creds[0].credential_id());
}

// --------------------------------------------------- R-AUTH-4: attestation

#[test]
fn r_auth_4_attested_softtoken_round_trip_reports_its_model() {
    let (mut token, ca) = soft_token(true);
    let v = verifier(Some(trust_all_models(&ca)));
    assert!(v.requires_attestation());
    for require_uv in [false, true] {
        let uv = if require_uv {
            None
        } else {
            Some("discouraged")
        };
        let reg = register(&v, &mut token, require_uv, uv).unwrap();
        assert!(reg.attested_by_allowed_ca);
        assert_eq!(reg.aaguid, Some(softtoken_aaguid().0));
        assert_eq!(reg.user_verified_at_registration, require_uv);
        assert_eq!(reg.credential_id, reg.credential.credential_id());

        let stored = reg.credential.to_json().unwrap();
        let creds = [Fido2Credential::from_json(&stored).unwrap()];
        assert_eq!(creds[0].aaguid(), Some(softtoken_aaguid()));
        assert!(creds[0].attested_by_allowed_ca());

        let challenge = v.start_authentication(&creds, NOW).unwrap();
        let response = client_assert(&mut token, &challenge.client_options, "required");
        let assertion = v
            .finish_authentication(&challenge.state, &response, &creds, NOW)
            .unwrap();
        assert_eq!(
            assertion.into_factor(),
            Factor::Fido2 {
                user_verified: true,
                aaguid: Some(softtoken_aaguid())
            }
        );
    }
}

#[test]
fn r_auth_4_registration_refused_when_ca_not_on_allow_list() {
    let (_, allowed_ca) = soft_token(true);
    let (mut other, _) = soft_token(true);
    let v = verifier(Some(trust_all_models(&allowed_ca)));
    for require_uv in [false, true] {
        let uv = if require_uv {
            None
        } else {
            Some("discouraged")
        };
        let err = register(&v, &mut other, require_uv, uv).unwrap_err();
        assert_eq!(
            err,
            Fido2Error::AttestationNotTrusted,
            "require_uv={require_uv}"
        );
    }
}

#[test]
fn r_auth_4_self_attested_key_refused_when_attestation_required() {
    let (_, ca) = soft_token(true);
    let v = verifier(Some(trust_all_models(&ca)));
    let mut passkey = SoftPasskey::new(true);
    let err = register(&v, &mut passkey, true, None).unwrap_err();
    assert_eq!(err, Fido2Error::AttestationNotTrusted);
}

#[test]
fn r_auth_4_model_restriction_by_aaguid() {
    let (mut token, ca) = soft_token(true);
    let other_model = Aaguid::parse("cb69481e-8ff7-4039-93ec-0a2729a154a8").unwrap();

    let mut only_other = AttestationTrust::new();
    only_other.allow_ca_pem(&ca, &[other_model]).unwrap();
    let err = register(&verifier(Some(only_other)), &mut token, true, None).unwrap_err();
    assert_eq!(err, Fido2Error::AttestationNotTrusted);

    let mut this_model = AttestationTrust::new();
    this_model
        .allow_ca_pem(&ca, &[other_model, softtoken_aaguid()])
        .unwrap();
    assert_eq!(this_model.len(), 1);
    let reg = register(&verifier(Some(this_model)), &mut token, true, None).unwrap();
    assert_eq!(reg.aaguid, Some(softtoken_aaguid().0));
}

#[test]
fn r_auth_4_unattested_model_is_never_reported() {
    // SoftPasskey self-attests and claims an AAGUID; SoftToken sends a chain
    // nobody asked to trust. Neither claim is evidence of a model.
    let v = verifier(None);
    let mut passkey = SoftPasskey::new(true);
    let reg = register(&v, &mut passkey, true, None).unwrap();
    assert!(!reg.attested_by_allowed_ca);
    assert_eq!(reg.aaguid, None);
    assert_eq!(reg.credential.aaguid(), None);

    let (mut token, _) = soft_token(false);
    let reg = register(&v, &mut token, false, None).unwrap();
    assert!(!reg.attested_by_allowed_ca);
    assert_eq!(reg.aaguid, None);
}

// ------------------------------------------------------- replay, counters

#[test]
fn replayed_authentication_is_refused_once_the_counter_is_stored() {
    let v = verifier(None);
    let (mut token, _) = soft_token(false);
    let mut creds = [enrolled(&v, &mut token, false)];

    let challenge = v.start_authentication(&creds, NOW).unwrap();
    let response = client_assert(&mut token, &challenge.client_options, "discouraged");
    let assertion = v
        .finish_authentication(&challenge.state, &response, &creds, NOW)
        .unwrap();
    assert!(assertion.update_credential(&mut creds[0]).unwrap());
    assert_eq!(creds[0].counter(), 1);
    let stored = creds[0].to_json().unwrap();
    let creds = [Fido2Credential::from_json(&stored).unwrap()];

    // The same state and response again (a server that failed to consume
    // its challenge row): the stored counter refuses it.
    let err = v
        .finish_authentication(&challenge.state, &response, &creds, NOW)
        .unwrap_err();
    assert_eq!(err, Fido2Error::CounterRegressed);
}

#[test]
fn assertion_for_another_challenge_is_refused() {
    let v = verifier(None);
    let (mut token, _) = soft_token(false);
    let creds = [enrolled(&v, &mut token, false)];
    let first = v.start_authentication(&creds, NOW).unwrap();
    let second = v.start_authentication(&creds, NOW).unwrap();
    assert_ne!(first.state, second.state);
    let response = client_assert(&mut token, &first.client_options, "discouraged");
    let err = v
        .finish_authentication(&second.state, &response, &creds, NOW)
        .unwrap_err();
    assert_eq!(err, Fido2Error::ChallengeMismatch);
    // A registration response is not an assertion either.
    let reg = v.start_registration(&user(), &[], false, NOW).unwrap();
    let reg_response = client_register(&mut token, &reg.client_options, None);
    assert!(v
        .finish_authentication(&first.state, &reg_response, &creds, NOW)
        .is_err());
}

#[test]
fn cloned_authenticator_is_detected_by_the_sign_counter() {
    let v = verifier(None);
    let (mut token, _) = soft_token(false);
    let mut creds = [enrolled(&v, &mut token, false)];
    // Copies of the key material, with the counter as it was (0).
    let copy = token.to_cbor().unwrap();
    let mut clone_a = SoftToken::from_cbor(&copy).unwrap();
    let mut clone_b = SoftToken::from_cbor(&copy).unwrap();

    // A ceremony started before the genuine key's use is stored: its state
    // holds counter 0; the stored credential will hold 1.
    let early = v.start_authentication(&creds, NOW).unwrap();

    let a = v.start_authentication(&creds, NOW).unwrap();
    let r = client_assert(&mut token, &a.client_options, "discouraged");
    let genuine = v.finish_authentication(&a.state, &r, &creds, NOW).unwrap();
    assert_eq!(genuine.counter, 1);
    genuine.update_credential(&mut creds[0]).unwrap();

    // Clone A signs counter 1 for the early ceremony: above the state's 0,
    // not above the stored 1.
    let r = client_assert(&mut clone_a, &early.client_options, "discouraged");
    let err = v
        .finish_authentication(&early.state, &r, &creds, NOW)
        .unwrap_err();
    assert_eq!(err, Fido2Error::CounterRegressed);

    // Clone B answers a ceremony started after the update: webauthn-rs's
    // own check (against the state) refuses it.
    let late = v.start_authentication(&creds, NOW).unwrap();
    let r = client_assert(&mut clone_b, &late.client_options, "discouraged");
    let err = v
        .finish_authentication(&late.state, &r, &creds, NOW)
        .unwrap_err();
    assert_eq!(err, Fido2Error::CounterRegressed);

    // The genuine key goes on working.
    let next = v.start_authentication(&creds, NOW).unwrap();
    let r = client_assert(&mut token, &next.client_options, "discouraged");
    let got = v
        .finish_authentication(&next.state, &r, &creds, NOW)
        .unwrap();
    assert_eq!(got.counter, 2);
}

#[test]
fn credential_removed_since_the_start_is_refused() {
    let v = verifier(None);
    let (mut token, _) = soft_token(false);
    let creds = [enrolled(&v, &mut token, false)];
    let challenge = v.start_authentication(&creds, NOW).unwrap();
    let response = client_assert(&mut token, &challenge.client_options, "discouraged");
    let err = v
        .finish_authentication(&challenge.state, &response, &[], NOW)
        .unwrap_err();
    assert_eq!(err, Fido2Error::UnknownCredential);
}

#[test]
fn another_users_key_is_refused() {
    let v = verifier(None);
    let (mut mine, _) = soft_token(false);
    let (mut theirs, _) = soft_token(false);
    let my_creds = [enrolled(&v, &mut mine, false)];
    let their_creds = [enrolled(&v, &mut theirs, false)];
    let challenge = v.start_authentication(&my_creds, NOW).unwrap();
    // Their key cannot even find a credential it holds in my options.
    let mut v_json: serde_json::Value = serde_json::from_str(&challenge.client_options).unwrap();
    let their_id = serde_json::to_value(
        serde_json::from_str::<serde_json::Value>(&their_creds[0].to_json().unwrap()).unwrap()
            ["key"]["cred"]["cred_id"]
            .clone(),
    )
    .unwrap();
    v_json["publicKey"]["allowCredentials"][0]["id"] = their_id;
    let response = client_assert(&mut theirs, &v_json.to_string(), "discouraged");
    let err = v
        .finish_authentication(&challenge.state, &response, &their_creds, NOW)
        .unwrap_err();
    assert_eq!(err, Fido2Error::UnknownCredential);
}

#[test]
fn assertion_from_another_origin_is_refused() {
    let v = verifier(None);
    let (mut token, _) = soft_token(false);
    let creds = [enrolled(&v, &mut token, false)];
    let challenge = v.start_authentication(&creds, NOW).unwrap();
    // A page on a subdomain may use the RP ID, but is not the allowed origin.
    let response = client_assert_at(
        &mut token,
        &challenge.client_options,
        "discouraged",
        "https://phish.clinauth.example-hospital.jp",
    );
    let err = v
        .finish_authentication(&challenge.state, &response, &creds, NOW)
        .unwrap_err();
    assert_eq!(err, Fido2Error::OriginMismatch);
}

#[test]
fn expired_states_are_refused() {
    let v = verifier(None);
    let (mut token, _) = soft_token(false);
    let reg = v.start_registration(&user(), &[], false, NOW).unwrap();
    let response = client_register(&mut token, &reg.client_options, None);
    let late = UnixTime(NOW.0 + 301);
    assert_eq!(
        v.finish_registration(&reg.state, &response, late)
            .unwrap_err(),
        Fido2Error::Expired("registration state")
    );
    let creds = [v
        .finish_registration(&reg.state, &response, UnixTime(NOW.0 + 300))
        .unwrap()
        .credential];

    let challenge = v.start_authentication(&creds, NOW).unwrap();
    let response = client_assert(&mut token, &challenge.client_options, "discouraged");
    assert_eq!(
        v.finish_authentication(&challenge.state, &response, &creds, late)
            .unwrap_err(),
        Fido2Error::Expired("authentication state")
    );
}

// ------------------------------------------------ state across replicas

#[test]
fn state_crosses_the_database_to_another_replica() {
    let (mut token, ca) = soft_token(true);
    let replica_a = verifier(Some(trust_all_models(&ca)));
    let replica_b = verifier(Some(trust_all_models(&ca)));

    // Registration started on A, the state stored as text, finished on B.
    let reg = replica_a
        .start_registration(&user(), &[], true, NOW)
        .unwrap();
    let row: String = reg.state.clone();
    let response = client_register(&mut token, &reg.client_options, None);
    let reg = replica_b.finish_registration(&row, &response, NOW).unwrap();
    let creds = [Fido2Credential::from_json(&reg.credential.to_json().unwrap()).unwrap()];

    let auth = replica_b.start_authentication(&creds, NOW).unwrap();
    let row: String = auth.state.clone();
    let response = client_assert(&mut token, &auth.client_options, "required");
    let assertion = replica_a
        .finish_authentication(&row, &response, &creds, NOW)
        .unwrap();
    assert!(assertion.user_verified);
    assert_eq!(assertion.aaguid, Some(softtoken_aaguid()));
}

// ------------------------------------------------ malformed and oversized

#[test]
fn malformed_and_oversized_inputs_are_refused_with_typed_errors() {
    let v = verifier(None);
    let (mut token, _) = soft_token(false);
    let creds = [enrolled(&v, &mut token, false)];
    let challenge = v.start_authentication(&creds, NOW).unwrap();
    let good = client_assert(&mut token, &challenge.client_options, "discouraged");
    let state = challenge.state.as_str();

    let fin = |s: &str, r: &str| v.finish_authentication(s, r, &creds, NOW).unwrap_err();
    assert_eq!(fin(state, ""), Fido2Error::Empty("assertion"));
    assert_eq!(fin(state, "not json"), Fido2Error::Malformed("assertion"));
    assert_eq!(fin(state, "{}"), Fido2Error::Malformed("assertion"));
    let deep = format!("{}{}", "[".repeat(8000), "]".repeat(8000));
    assert_eq!(fin(state, &deep), Fido2Error::Malformed("assertion"));
    let big = format!("{good:<width$}", width = MAX_ASSERTION_LEN + 1);
    assert_eq!(
        fin(state, &big),
        Fido2Error::TooLarge {
            what: "assertion",
            len: MAX_ASSERTION_LEN + 1,
            max: MAX_ASSERTION_LEN
        }
    );
    assert_eq!(fin("", &good), Fido2Error::Empty("authentication state"));
    assert_eq!(
        fin("{\"v\":1}", &good),
        Fido2Error::Malformed("authentication state")
    );
    assert!(matches!(
        fin(&" ".repeat(MAX_STATE_LEN + 1), &good),
        Fido2Error::TooLarge {
            what: "authentication state",
            ..
        }
    ));
    let future = state.replacen("\"v\":1", "\"v\":2", 1);
    assert_eq!(
        fin(&future, &good),
        Fido2Error::Malformed("authentication state (unknown version)")
    );
    // Well-formed JSON, garbage inside: webauthn-rs's parse errors are mapped.
    let mut garbled: serde_json::Value = serde_json::from_str(&good).unwrap();
    garbled["response"]["authenticatorData"] = "AAAA".into();
    assert!(matches!(
        fin(state, &garbled.to_string()),
        Fido2Error::Malformed(_) | Fido2Error::Rejected(_)
    ));
    // The signature does not cover a changed clientDataJSON.
    let mut forged: serde_json::Value = serde_json::from_str(&good).unwrap();
    let sig = forged["response"]["signature"].as_str().unwrap().to_owned();
    let flipped = if sig.starts_with('M') {
        sig.replacen('M', "N", 1)
    } else {
        format!("M{}", &sig[1..])
    };
    forged["response"]["signature"] = flipped.into();
    assert!(v
        .finish_authentication(state, &forged.to_string(), &creds, NOW)
        .is_err());
    // Still fine with the genuine response.
    assert!(v.finish_authentication(state, &good, &creds, NOW).is_ok());

    // Registration responses and stored credentials.
    let reg = v.start_registration(&user(), &[], false, NOW).unwrap();
    assert!(matches!(
        v.finish_registration(
            &reg.state,
            &"x".repeat(MAX_REGISTRATION_RESPONSE_LEN + 1),
            NOW
        ),
        Err(Fido2Error::TooLarge {
            what: "registration response",
            ..
        })
    ));
    assert_eq!(
        v.finish_registration(&reg.state, "[1,2,3]", NOW)
            .unwrap_err(),
        Fido2Error::Malformed("registration response")
    );
    assert_eq!(
        v.finish_registration(&challenge.state, "{}", NOW)
            .unwrap_err(),
        Fido2Error::Malformed("registration state")
    );
    assert!(matches!(
        Fido2Credential::from_json(&"x".repeat(MAX_CREDENTIAL_LEN + 1)),
        Err(Fido2Error::TooLarge {
            what: "credential",
            ..
        })
    ));
    assert_eq!(
        Fido2Credential::from_json("{\"v\":1}").unwrap_err(),
        Fido2Error::Malformed("credential")
    );
}

#[test]
fn user_names_and_credential_counts_are_bounded() {
    let v = verifier(None);
    let long = "a".repeat(257);
    let mut u = user();
    u.name = &long;
    assert!(matches!(
        v.start_registration(&u, &[], false, NOW),
        Err(Fido2Error::TooLarge {
            what: "user name",
            ..
        })
    ));
    let mut u = user();
    u.display_name = "";
    assert_eq!(
        v.start_registration(&u, &[], false, NOW).unwrap_err(),
        Fido2Error::Empty("display name")
    );
    let mut u = user();
    u.name = "nurse\u{0}sato";
    assert_eq!(
        v.start_registration(&u, &[], false, NOW).unwrap_err(),
        Fido2Error::Malformed("user name")
    );

    let (mut token, _) = soft_token(false);
    let one = enrolled(&v, &mut token, false);
    assert_eq!(
        v.start_authentication(&[], NOW).unwrap_err(),
        Fido2Error::Empty("credential list")
    );
    let many = vec![one; MAX_CREDENTIALS + 1];
    assert!(matches!(
        v.start_authentication(&many, NOW),
        Err(Fido2Error::TooMany { .. })
    ));
}

#[test]
fn configuration_is_validated() {
    let bad = |c: Fido2Config| Fido2Verifier::new(c).unwrap_err();
    assert!(matches!(
        bad(Fido2Config::new(
            RP_ID,
            "http://clinauth.example-hospital.jp"
        )),
        Fido2Error::Configuration(_)
    ));
    assert!(matches!(
        bad(Fido2Config::new("other-hospital.jp", ORIGIN)),
        Fido2Error::Configuration(_)
    ));
    assert!(matches!(
        bad(Fido2Config::new(RP_ID, "not a url")),
        Fido2Error::Configuration(_)
    ));
    let mut c = config(None);
    c.ceremony_timeout = Seconds(0);
    assert!(matches!(bad(c), Fido2Error::Configuration(_)));
    assert!(matches!(
        bad(config(Some(AttestationTrust::new()))),
        Fido2Error::Configuration(_)
    ));
    // A parent domain as RP ID is allowed.
    assert!(Fido2Verifier::new(Fido2Config::new("example-hospital.jp", ORIGIN)).is_ok());

    let mut t = AttestationTrust::new();
    assert_eq!(
        t.allow_ca_pem(b"", &[]).unwrap_err(),
        Fido2Error::Empty("attestation CA certificate")
    );
    assert_eq!(
        t.allow_ca_pem(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &[]
        )
        .unwrap_err(),
        Fido2Error::Malformed("attestation CA certificate")
    );
    assert!(matches!(
        t.allow_ca_pem(&vec![b'a'; 16 * 1024 + 1], &[]),
        Err(Fido2Error::TooLarge { .. })
    ));
    assert!(t.is_empty());
}

// ------------------------------------------------------------- no panics

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn hostile_text_never_panics(text in ".{0,600}") {
        let v = verifier(None);
        let _ = v.finish_authentication(&text, &text, &[], NOW);
        let _ = v.finish_registration(&text, &text, NOW);
        let _ = Fido2Credential::from_json(&text);
    }

    #[test]
    fn mutated_assertions_never_panic(at in 0usize..4096, byte in any::<u8>()) {
        let (v, state, good, creds) = fixture();
        let mut bytes = good.as_bytes().to_vec();
        let i = at % bytes.len();
        bytes[i] = byte;
        let text = String::from_utf8_lossy(&bytes);
        let _ = v.finish_authentication(state, &text, creds, NOW);
    }
}

/// One verifier, one authentication state and its genuine response.
fn fixture() -> &'static (Fido2Verifier, String, String, Vec<Fido2Credential>) {
    static F: std::sync::OnceLock<(Fido2Verifier, String, String, Vec<Fido2Credential>)> =
        std::sync::OnceLock::new();
    F.get_or_init(|| {
        let v = verifier(None);
        let (mut token, _) = soft_token(false);
        let creds = vec![enrolled(&v, &mut token, false)];
        let challenge = v.start_authentication(&creds, NOW).unwrap();
        let good = client_assert(&mut token, &challenge.client_options, "discouraged");
        (v, challenge.state, good, creds)
    })
}
