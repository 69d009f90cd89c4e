//! Property: nothing the validator accepts can ever decide "allow" with
//! fewer than two categories (R-AUTH-1), from weak possession alone
//! (R-AUTH-2), or from a device alone (R-AUTH-3).
//!
//! Policies are generated from every factor name, identifier and setting, so
//! most are refused; the ones accepted are then asked to decide on random
//! evidence. The oracle below maps evidence to categories on its own, without
//! the engine's token tables.

use clinauth_policy::{
    BiometricProtection, Connectivity, Context, Decision, Evidence, Factor, Policy, Purpose,
    UnixTime,
};
use proptest::prelude::*;

const NOW: i64 = 1_800_000_000;

const NAMES: &[&str] = &[
    "smartcard",
    "card_pin",
    "server_pin",
    "password",
    "badge",
    "fido2",
    "usb_token",
    "fido2_uv",
    "totp",
    "biometric",
    "biometric_on_reader",
    "biometric_sealed",
    "biometric_host_match",
    "user_id",
    "employee_number",
    "badge_number",
];
const ROLES: &[&str] = &["a", "b", "c"];
const GROUPS: &[&str] = &["g1", "g2"];

fn subset(items: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(items, 1..=items.len())
}

fn combination() -> impl Strategy<Value = Vec<&'static str>> {
    proptest::collection::vec(proptest::sample::select(NAMES), 1..=3)
}

#[derive(Debug, Clone)]
struct GenRule {
    roles: Vec<&'static str>,
    groups: Vec<&'static str>,
    allow: Vec<Vec<&'static str>>,
    review: bool,
    offline: bool,
}

fn rule() -> impl Strategy<Value = GenRule> {
    (
        subset(ROLES),
        subset(GROUPS),
        proptest::collection::vec(combination(), 1..=4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(roles, groups, allow, review, offline)| GenRule {
            roles,
            groups,
            allow,
            review,
            offline,
        })
}

fn quoted(items: &[&str]) -> String {
    let q: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", q.join(", "))
}

/// Rule i decides purpose i only, so generated rules never overlap.
fn policy_text(rules: &[GenRule]) -> String {
    let mut text = String::from(
        "version = 1\nname = \"prop\"\nroles = [\"a\", \"b\", \"c\"]\n[groups.g1]\n[groups.g2]\n",
    );
    for (i, r) in rules.iter().enumerate() {
        let allow: Vec<String> = r.allow.iter().map(|c| quoted(c)).collect();
        text.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\npurposes = [{:?}]\nroles = {}\ngroups = {}\nallow = [{}]\nreview = {}\n",
            Purpose::ALL[i].as_str(),
            quoted(&r.roles),
            quoted(&r.groups),
            allow.join(", "),
            r.review
        ));
        if r.offline {
            text.push_str("[rule.offline]\nallowed = true\nmax_age = \"24h\"\n");
        }
    }
    text
}

fn factor() -> impl Strategy<Value = Factor> {
    prop_oneof![
        Just(Factor::ServerPin),
        any::<bool>().prop_map(|pin| Factor::Smartcard {
            pin_protected_key: pin,
            qualification: None
        }),
        any::<bool>().prop_map(|uv| Factor::Fido2 {
            user_verified: uv,
            aaguid: None
        }),
        Just(Factor::Totp),
        Just(Factor::Badge),
        prop_oneof![
            Just(BiometricProtection::MatchOnReader),
            Just(BiometricProtection::SealedTemplate),
            Just(BiometricProtection::HostMatch),
        ]
        .prop_map(|protection| Factor::Biometric {
            protection,
            presentation_attack_detection: false
        }),
    ]
}

fn evidence() -> impl Strategy<Value = Vec<Evidence>> {
    proptest::collection::vec(
        (factor(), -40i64..600).prop_map(|(f, age)| Evidence::new(f, UnixTime(NOW - age))),
        0..=4,
    )
}

/// (knowledge, possession, inherence, user verification) of one factor, from
/// REQUIREMENTS.md's table, independent of the engine.
fn oracle(f: &Factor) -> [bool; 4] {
    match f {
        Factor::ServerPin => [true, false, false, false],
        Factor::Smartcard {
            pin_protected_key, ..
        } => [*pin_protected_key, true, false, false],
        Factor::Fido2 { user_verified, .. } => [false, true, false, *user_verified],
        Factor::Totp | Factor::Badge => [false, true, false, false],
        Factor::Biometric { protection, .. } => match protection {
            BiometricProtection::HostMatch => [false, false, false, false],
            _ => [false, false, true, false],
        },
    }
}

fn distinct_categories(evidence: &[Evidence]) -> u32 {
    let mut c = [false; 4];
    for e in evidence {
        for (acc, has) in c.iter_mut().zip(oracle(&e.factor)) {
            *acc |= has;
        }
    }
    let [k, p, i, uv] = c;
    u32::from(k) + u32::from(p) + u32::from(i) + u32::from(uv && !k && !i)
}

fn is_weak_or_nothing(f: &Factor) -> bool {
    matches!(
        f,
        Factor::Badge
            | Factor::Fido2 {
                user_verified: false,
                ..
            }
            | Factor::Biometric {
                protection: BiometricProtection::HostMatch,
                ..
            }
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn r_auth_1_accepted_policies_never_allow_fewer_than_two_categories(
        rules in proptest::collection::vec(rule(), 1..=Purpose::ALL.len()),
        asks in proptest::collection::vec(
            (evidence(), subset(ROLES), proptest::sample::select(&["g1", "g2", "g3"][..]),
             0usize..Purpose::ALL.len(), any::<bool>()),
            1..=8),
    ) {
        let text = policy_text(&rules);
        let Ok(policy) = Policy::from_toml(&text) else {
            return Ok(());
        };
        for (evidence, roles, group, purpose, offline) in asks {
            let ctx = Context {
                roles: policy.role_set(&roles),
                group,
                purpose: Purpose::ALL[purpose],
                connectivity: if offline {
                    Connectivity::Offline { bundle_issued_at: UnixTime(NOW - 3600) }
                } else {
                    Connectivity::Online
                },
                now: UnixTime(NOW),
                max_age: None,
            };
            if let Decision::Allow(allow) = policy.decide(&ctx, &evidence) {
                let fresh: Vec<Evidence> = evidence
                    .iter()
                    .filter(|e| (NOW - e.verified_at.0) <= allow.rule.max_factor_age.as_i64()
                        && NOW - e.verified_at.0 >= -30)
                    .cloned()
                    .collect();
                prop_assert!(distinct_categories(&fresh) >= 2,
                    "allowed with {} categories\npolicy:\n{text}\nevidence: {evidence:?}",
                    distinct_categories(&fresh));
                prop_assert!(!fresh.iter().all(|e| is_weak_or_nothing(&e.factor)),
                    "allowed on weak possession alone\npolicy:\n{text}\nevidence: {evidence:?}");
                prop_assert!(fresh.iter().any(|e| {
                    let [k, _, i, uv] = oracle(&e.factor);
                    k || i || uv
                }), "allowed with a device alone\npolicy:\n{text}\nevidence: {evidence:?}");
                prop_assert!(allow.proven.categories().distinct() >= 2);
            }
        }
    }

    #[test]
    fn validator_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let _ = Policy::from_toml(&text);
    }
}

/// The property is not vacuous: generation does produce accepted policies
/// that allow.
#[test]
fn generated_policies_are_sometimes_accepted_and_allow() {
    let rules = vec![GenRule {
        roles: vec!["a"],
        groups: vec!["g1"],
        allow: vec![vec!["badge", "server_pin"]],
        review: false,
        offline: false,
    }];
    let policy = Policy::from_toml(&policy_text(&rules)).unwrap();
    let ctx = Context {
        roles: policy.role_set(["a"]),
        group: "g1",
        purpose: Purpose::Login,
        connectivity: Connectivity::Online,
        now: UnixTime(NOW),
        max_age: None,
    };
    let evidence = [
        Evidence::new(Factor::Badge, UnixTime(NOW)),
        Evidence::new(Factor::ServerPin, UnixTime(NOW)),
    ];
    assert!(policy.decide(&ctx, &evidence).is_allow());
    assert_eq!(distinct_categories(&evidence), 2);
}
