//! Decisions, table-driven, named after the requirement they enforce. The
//! guideline's own cases come first.

use clinauth_policy::{
    Aaguid, BiometricProtection, Connectivity, Context, Decision, DenyReason, Evidence, Factor,
    FactorKind, Policy, Purpose, Seconds, UnixTime,
};

const NOW: UnixTime = UnixTime(1_800_000_000);

const POLICY: &str = r#"
version = 1
name = "decision-tests"
roles = ["nurse", "physician", "pharmacist", "emergency"]
[groups.ward]
[groups.pharmacy]
[groups.remote]

[[rule]]
name = "ward-login"
purposes = ["login", "unlock"]
roles = ["nurse", "physician"]
groups = ["ward"]
allow = [
  ["smartcard", "card_pin"],
  ["badge", "server_pin"],
  ["badge", "biometric"],
  ["fido2_uv"],
]
max_factor_age = "2m"
[rule.offline]
allowed = true
max_age = "72h"

[[rule]]
name = "pharmacy-login"
purposes = ["login"]
roles = ["pharmacist"]
groups = ["pharmacy"]
allow = [["smartcard", "card_pin"], ["badge", "biometric_on_reader"]]

[[rule]]
name = "prescription-sign"
purposes = ["sign"]
roles = ["physician"]
groups = ["ward"]
allow = [["smartcard", "card_pin"]]
qualifications = ["Medical Doctor"]

[[rule]]
name = "remote"
purposes = ["login"]
roles = ["physician"]
groups = ["remote"]
allow = [["fido2_uv"], ["fido2", "server_pin"]]
fido2_aaguids = ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]

[[rule]]
name = "break-glass"
purposes = ["break_glass"]
roles = ["emergency"]
groups = ["ward"]
allow = [["badge", "server_pin"]]
review = true
"#;

fn policy() -> Policy {
    Policy::from_toml(POLICY).unwrap()
}

fn ctx<'a>(policy: &Policy, roles: &[&str], group: &'a str, purpose: Purpose) -> Context<'a> {
    Context {
        roles: policy.role_set(roles),
        group,
        purpose,
        connectivity: Connectivity::Online,
        now: NOW,
        max_age: None,
    }
}

fn fresh(factor: Factor) -> Evidence {
    Evidence::new(factor, UnixTime(NOW.0 - 5))
}

fn card(pin: bool) -> Factor {
    Factor::Smartcard {
        pin_protected_key: pin,
        qualification: None,
    }
}

fn fido2(uv: bool) -> Factor {
    Factor::Fido2 {
        user_verified: uv,
        aaguid: None,
    }
}

fn finger(protection: BiometricProtection) -> Factor {
    Factor::Biometric {
        protection,
        presentation_attack_detection: false,
    }
}

fn ward_login(evidence: &[Factor]) -> (bool, String) {
    let policy = policy();
    let evidence: Vec<Evidence> = evidence.iter().cloned().map(fresh).collect();
    let decision = policy.decide(&ctx(&policy, &["nurse"], "ward", Purpose::Login), &evidence);
    match decision {
        Decision::Allow(a) => (true, a.rule.name.clone()),
        Decision::Deny(d) => (false, d.en()),
    }
}

/// The guideline's cases (issue 2, item 6), at decision time.
#[test]
fn guideline_cases_at_decision_time() {
    use BiometricProtection::*;
    let cases: &[(&str, &[Factor], bool)] = &[
        // "user ID + USB token": the user ID is no evidence, the key has no UV.
        ("r_auth_2_rejects_id_plus_usb_token", &[fido2(false)], false),
        (
            "r_auth_2_badge_plus_pin_accepted",
            &[Factor::Badge, Factor::ServerPin],
            true,
        ),
        (
            "r_auth_4_fido2_with_uv_alone_accepted",
            &[fido2(true)],
            true,
        ),
        (
            "r_auth_4_fido2_without_uv_plus_user_name_refused",
            &[fido2(false)],
            false,
        ),
        (
            "r_bio_2_fingerprint_alone_refused",
            &[finger(SealedTemplate)],
            false,
        ),
        (
            "r_auth_1_password_then_password_refused",
            &[Factor::ServerPin, Factor::ServerPin],
            false,
        ),
        (
            "r_bio_1_host_match_fingerprint_refused",
            &[Factor::Badge, finger(HostMatch)],
            false,
        ),
        (
            "r_bio_1_match_on_sensor_fingerprint_accepted",
            &[Factor::Badge, finger(MatchOnReader)],
            true,
        ),
        (
            "r_bio_1_sealed_template_fingerprint_accepted",
            &[Factor::Badge, finger(SealedTemplate)],
            true,
        ),
        ("r_auth_1_card_with_pin_accepted", &[card(true)], true),
        ("r_auth_3_card_without_pin_refused", &[card(false)], false),
        (
            "r_auth_3_card_and_badge_refused",
            &[card(false), Factor::Badge],
            false,
        ),
        ("r_auth_2_badge_alone_refused", &[Factor::Badge], false),
        ("r_auth_1_nothing_refused", &[], false),
    ];
    for (name, evidence, allow) in cases {
        let (got, detail) = ward_login(evidence);
        assert_eq!(got, *allow, "{name}: {detail}");
    }
}

#[test]
fn r_auth_1_deny_says_what_is_missing() {
    let (allowed, message) = ward_login(&[Factor::Badge]);
    assert!(!allowed);
    assert_eq!(message, "add one of: PIN or password, fingerprint");

    let (_, message) = ward_login(&[card(false)]);
    assert_eq!(message, "add one of: card PIN");

    let (_, message) = ward_login(&[]);
    assert_eq!(message, "add one of: FIDO2 key with user verification");
}

#[test]
fn r_auth_1_deny_explains_in_japanese_too() {
    let policy = policy();
    let evidence = [fresh(Factor::Badge)];
    let Decision::Deny(deny) =
        policy.decide(&ctx(&policy, &["nurse"], "ward", Purpose::Login), &evidence)
    else {
        panic!("expected deny");
    };
    assert!(
        deny.ja().contains("次のいずれかを追加してください"),
        "{}",
        deny.ja()
    );
    assert!(deny.ja().contains("生体認証"), "{}", deny.ja());
    let DenyReason::Missing { rule, options } = &deny.reason else {
        panic!("expected Missing, got {:?}", deny.reason);
    };
    assert_eq!(rule.name, "ward-login");
    assert_eq!(
        options,
        &vec![vec![FactorKind::ServerPin], vec![FactorKind::Biometric]]
    );
}

#[test]
fn r_bio_1_host_match_is_named_in_the_denial() {
    let (_, message) = ward_login(&[Factor::Badge, finger(BiometricProtection::HostMatch)]);
    assert!(message.contains("R-BIO-1"), "{message}");
}

#[test]
fn allow_reports_rule_combination_and_limits() {
    let policy = policy();
    let evidence = [
        fresh(Factor::Badge),
        fresh(Factor::ServerPin),
        fresh(Factor::Totp),
    ];
    let Decision::Allow(allow) = policy.decide(
        &ctx(&policy, &["physician"], "ward", Purpose::Unlock),
        &evidence,
    ) else {
        panic!("expected allow");
    };
    assert_eq!(allow.rule.name, "ward-login");
    assert_eq!(allow.combination.to_string(), "badge + server_pin");
    // The TOTP was presented but is not part of the combination that decided.
    assert_eq!(allow.proven.iter().count(), 2);
    assert!(allow.proven.categories().distinct() >= 2);
    assert_eq!(allow.rule.session.idle_lock, Seconds::minutes(5));
    assert!(!allow.review);
    assert!(!allow.offline);
}

#[test]
fn stale_and_future_evidence_does_not_count() {
    let policy = policy();
    let c = ctx(&policy, &["nurse"], "ward", Purpose::Login);
    let stale = [
        Evidence::new(Factor::Badge, UnixTime(NOW.0 - 5)),
        Evidence::new(Factor::ServerPin, UnixTime(NOW.0 - 121)),
    ];
    let Decision::Deny(deny) = policy.decide(&c, &stale) else {
        panic!("stale PIN must not count");
    };
    assert!(deny.en().contains("verified too long ago"), "{}", deny.en());

    let edge = [
        Evidence::new(Factor::Badge, UnixTime(NOW.0 - 120)),
        Evidence::new(Factor::ServerPin, UnixTime(NOW.0 - 120)),
    ];
    assert!(policy.decide(&c, &edge).is_allow());

    let future = [
        Evidence::new(Factor::Badge, UnixTime(NOW.0 + 31)),
        Evidence::new(Factor::ServerPin, NOW),
    ];
    let Decision::Deny(deny) = policy.decide(&c, &future) else {
        panic!("future badge must not count");
    };
    assert!(deny.en().contains("clock error"), "{}", deny.en());
}

#[test]
fn step_up_max_age_is_stricter_than_the_rule() {
    let policy = policy();
    let mut c = ctx(&policy, &["nurse"], "ward", Purpose::Login);
    let evidence = [Evidence::new(fido2(true), UnixTime(NOW.0 - 60))];
    assert!(policy.decide(&c, &evidence).is_allow());
    c.max_age = Some(Seconds(30));
    assert!(!policy.decide(&c, &evidence).is_allow());
    // A looser caller limit never loosens the rule.
    c.max_age = Some(Seconds::hours(1));
    let old = [Evidence::new(fido2(true), UnixTime(NOW.0 - 600))];
    assert!(!policy.decide(&c, &old).is_allow());
}

#[test]
fn r_off_1_offline_within_bundle_age_only() {
    let policy = policy();
    let mut c = ctx(&policy, &["nurse"], "ward", Purpose::Login);
    let evidence = [fresh(card(true))];

    c.connectivity = Connectivity::Offline {
        bundle_issued_at: UnixTime(NOW.0 - 3600),
    };
    let Decision::Allow(allow) = policy.decide(&c, &evidence) else {
        panic!("offline within 72h must allow");
    };
    assert!(allow.offline);

    c.connectivity = Connectivity::Offline {
        bundle_issued_at: UnixTime(NOW.0 - Seconds::hours(73).as_i64()),
    };
    let Decision::Deny(deny) = policy.decide(&c, &evidence) else {
        panic!("expired bundle must deny");
    };
    assert!(
        matches!(deny.reason, DenyReason::OfflineExpired { .. }),
        "{:?}",
        deny.reason
    );

    // The pharmacy rule does not allow offline use at all: never fail open.
    let mut p = ctx(&policy, &["pharmacist"], "pharmacy", Purpose::Login);
    p.connectivity = Connectivity::Offline {
        bundle_issued_at: UnixTime(NOW.0 - 60),
    };
    let Decision::Deny(deny) = policy.decide(&p, &evidence) else {
        panic!("offline where not allowed must deny");
    };
    assert!(matches!(deny.reason, DenyReason::OfflineNotAllowed));
}

#[test]
fn r_off_1_offline_still_needs_two_factors() {
    let policy = policy();
    let mut c = ctx(&policy, &["nurse"], "ward", Purpose::Login);
    c.connectivity = Connectivity::Offline {
        bundle_issued_at: UnixTime(NOW.0 - 60),
    };
    assert!(!policy.decide(&c, &[fresh(card(false))]).is_allow());
}

#[test]
fn no_rule_and_unknown_group_deny() {
    let policy = policy();
    let evidence = [fresh(card(true))];
    let Decision::Deny(deny) = policy.decide(
        &ctx(&policy, &["nurse"], "pharmacy", Purpose::Login),
        &evidence,
    ) else {
        panic!("nurse has no pharmacy rule");
    };
    assert!(matches!(deny.reason, DenyReason::NoRule));

    let Decision::Deny(deny) = policy.decide(
        &ctx(&policy, &["nurse"], "basement", Purpose::Login),
        &evidence,
    ) else {
        panic!("unknown group");
    };
    assert!(matches!(deny.reason, DenyReason::UnknownGroup));

    let Decision::Deny(deny) = policy.decide(
        &ctx(&policy, &["janitor"], "ward", Purpose::Login),
        &evidence,
    ) else {
        panic!("unknown role");
    };
    assert!(matches!(deny.reason, DenyReason::NoRule));
}

#[test]
fn r_sig_1_signature_needs_the_qualification() {
    let policy = policy();
    let c = ctx(&policy, &["physician"], "ward", Purpose::Sign);
    let with = |q: Option<&str>| {
        [fresh(Factor::Smartcard {
            pin_protected_key: true,
            qualification: q.map(str::to_owned),
        })]
    };
    assert!(policy.decide(&c, &with(Some("Medical Doctor"))).is_allow());
    for q in [Some("Pharmacist"), None] {
        let Decision::Deny(deny) = policy.decide(&c, &with(q)) else {
            panic!("{q:?} must be refused");
        };
        assert!(deny.en().contains("R-SIG-1"), "{}", deny.en());
    }
}

#[test]
fn r_auth_4_attestation_allow_list_restricts_models() {
    let policy = policy();
    let c = ctx(&policy, &["physician"], "remote", Purpose::Login);
    let key = |aaguid: Option<&str>| {
        [fresh(Factor::Fido2 {
            user_verified: true,
            aaguid: aaguid.and_then(Aaguid::parse),
        })]
    };
    assert!(policy
        .decide(&c, &key(Some("cb69481e-8ff7-4039-93ec-0a2729a154a8")))
        .is_allow());
    assert!(!policy
        .decide(&c, &key(Some("00000000-0000-0000-0000-000000000001")))
        .is_allow());
    assert!(!policy.decide(&c, &key(None)).is_allow());
}

#[test]
fn r_auth_4_presence_only_key_needs_the_pin() {
    let policy = policy();
    let c = ctx(&policy, &["physician"], "remote", Purpose::Login);
    let key = Factor::Fido2 {
        user_verified: false,
        aaguid: Aaguid::parse("cb69481e-8ff7-4039-93ec-0a2729a154a8"),
    };
    assert!(!policy.decide(&c, &[fresh(key.clone())]).is_allow());
    assert!(policy
        .decide(&c, &[fresh(key), fresh(Factor::ServerPin)])
        .is_allow());
}

#[test]
fn r_emerg_1_break_glass_is_flagged_for_review() {
    let policy = policy();
    let c = ctx(&policy, &["emergency"], "ward", Purpose::BreakGlass);
    let Decision::Allow(allow) =
        policy.decide(&c, &[fresh(Factor::Badge), fresh(Factor::ServerPin)])
    else {
        panic!("break-glass with badge + PIN must allow");
    };
    assert!(allow.review);
    // Break-glass is still two factors.
    assert!(!policy.decide(&c, &[fresh(Factor::Badge)]).is_allow());
}

#[test]
fn several_roles_use_the_first_rule_that_allows() {
    let policy = policy();
    let c = ctx(
        &policy,
        &["nurse", "pharmacist"],
        "pharmacy",
        Purpose::Login,
    );
    let evidence = [
        fresh(Factor::Badge),
        fresh(finger(BiometricProtection::MatchOnReader)),
    ];
    let Decision::Allow(allow) = policy.decide(&c, &evidence) else {
        panic!("pharmacist rule applies");
    };
    assert_eq!(allow.rule.name, "pharmacy-login");
}

#[test]
fn decisions_are_deterministic() {
    let policy = policy();
    let c = ctx(&policy, &["nurse"], "ward", Purpose::Login);
    let evidence = [fresh(Factor::Badge)];
    let first = match policy.decide(&c, &evidence) {
        Decision::Deny(d) => d.en(),
        Decision::Allow(_) => panic!("badge alone"),
    };
    for _ in 0..100 {
        match policy.decide(&c, &evidence) {
            Decision::Deny(d) => assert_eq!(d.en(), first),
            Decision::Allow(_) => panic!("badge alone"),
        }
    }
}

#[test]
fn applicable_rules_are_what_a_workstation_may_offer() {
    let policy = policy();
    let names = |roles: &[&str], group: &str, purpose| -> Vec<String> {
        policy
            .applicable(policy.role_set(roles), group, purpose)
            .map(|r| r.name.clone())
            .collect()
    };
    assert_eq!(
        names(&["nurse"], "ward", Purpose::Login),
        vec!["ward-login"]
    );
    assert_eq!(
        names(&["physician"], "ward", Purpose::Sign),
        vec!["prescription-sign"]
    );
    assert!(names(&["nurse"], "ward", Purpose::Sign).is_empty());
    assert!(names(&["nurse"], "nowhere", Purpose::Login).is_empty());
    assert_eq!(
        names(&["physician", "pharmacist"], "pharmacy", Purpose::Login),
        vec!["pharmacy-login"]
    );
}
