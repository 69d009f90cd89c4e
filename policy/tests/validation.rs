//! Validation, one or more tests per requirement ID (R-POL-1): a policy that
//! allows a combination breaking R-AUTH-1..4 or R-BIO-1..2 is refused, with
//! the requirement named.

use clinauth_policy::{Code, Policy, PolicyError, Violation};

/// A one-rule policy with the given `allow` list and extra rule lines.
fn policy_text(allow: &str, extra: &str) -> String {
    format!(
        r#"
version = 1
name = "t"
roles = ["nurse", "physician"]
[groups.ward]
[[rule]]
name = "r"
purposes = ["login"]
roles = ["nurse"]
groups = ["ward"]
allow = {allow}
{extra}
"#
    )
}

fn violations(text: &str) -> Vec<Violation> {
    match Policy::from_toml(text) {
        Ok(_) => Vec::new(),
        Err(PolicyError::Invalid(v)) => v,
        Err(other) => panic!("expected a validation result, got {other}"),
    }
}

fn codes(allow: &str) -> Vec<Code> {
    violations(&policy_text(allow, ""))
        .into_iter()
        .map(|v| v.code)
        .collect()
}

#[track_caller]
fn refused_with(allow: &str, code: Code) {
    let found = codes(allow);
    assert!(
        found.contains(&code),
        "{allow}: expected {code}, got {found:?}"
    );
}

#[track_caller]
fn accepted(allow: &str) {
    let found = violations(&policy_text(allow, ""));
    assert!(
        found.is_empty(),
        "{allow}: expected acceptance, got {found:#?}"
    );
}

#[test]
fn r_auth_1_refuses_password_then_password() {
    refused_with(r#"[["password", "password"]]"#, Code::RAuth1);
    refused_with(r#"[["server_pin", "server_pin"]]"#, Code::RAuth1);
}

#[test]
fn r_auth_1_refuses_two_factors_of_one_category() {
    for allow in [
        r#"[["server_pin", "card_pin"]]"#,
        r#"[["smartcard", "totp"]]"#,
        r#"[["badge", "smartcard"]]"#,
        r#"[["biometric_on_reader", "biometric_sealed"]]"#,
    ] {
        refused_with(allow, Code::RAuth1);
    }
}

#[test]
fn r_auth_1_accepts_two_categories() {
    for allow in [
        r#"[["smartcard", "card_pin"]]"#,
        r#"[["badge", "server_pin"]]"#,
        r#"[["badge", "biometric"]]"#,
        r#"[["totp", "server_pin"]]"#,
        r#"[["smartcard", "biometric_sealed"]]"#,
        r#"[["smartcard", "card_pin", "biometric_on_reader"]]"#,
    ] {
        accepted(allow);
    }
}

#[test]
fn r_auth_2_rejects_id_plus_usb_token() {
    let found = violations(&policy_text(r#"[["user_id", "usb_token"]]"#, ""));
    let auth2: Vec<&Violation> = found.iter().filter(|v| v.code == Code::RAuth2).collect();
    assert!(!auth2.is_empty(), "{found:#?}");
    assert!(auth2.iter().any(|v| v.en.contains("public identifier")));
    assert!(auth2.iter().all(|v| !v.ja.is_empty()));
    assert_eq!(auth2[0].rule.as_deref(), Some("r"));
    assert_eq!(
        auth2[0].combination.as_deref(),
        Some("[user_id, usb_token]")
    );
}

#[test]
fn r_auth_2_rejects_badge_uid_plus_user_name() {
    refused_with(r#"[["badge", "user_name"]]"#, Code::RAuth2);
    refused_with(r#"[["employee_number", "badge"]]"#, Code::RAuth2);
    refused_with(r#"[["badge_number", "server_pin"]]"#, Code::RAuth2);
}

#[test]
fn r_auth_2_rejects_weak_possession_only() {
    refused_with(r#"[["badge"]]"#, Code::RAuth2);
    refused_with(r#"[["badge", "fido2"]]"#, Code::RAuth2);
}

#[test]
fn r_auth_2_accepts_badge_plus_pin() {
    accepted(r#"[["badge", "server_pin"]]"#);
}

#[test]
fn r_auth_3_refuses_a_device_on_its_own() {
    for allow in [
        r#"[["smartcard"]]"#,
        r#"[["totp"]]"#,
        r#"[["smartcard", "totp"]]"#,
    ] {
        refused_with(allow, Code::RAuth3);
    }
}

#[test]
fn r_auth_4_fido2_with_uv_alone_is_two_factors() {
    accepted(r#"[["fido2_uv"]]"#);
}

#[test]
fn r_auth_4_fido2_without_uv_is_weak_possession() {
    refused_with(r#"[["fido2"]]"#, Code::RAuth4);
    refused_with(r#"[["fido2", "user_name"]]"#, Code::RAuth4);
    refused_with(r#"[["fido2", "user_name"]]"#, Code::RAuth2);
    // With a knowledge factor beside it, a presence-only key is acceptable.
    accepted(r#"[["fido2", "server_pin"]]"#);
}

#[test]
fn r_auth_4_aaguid_allow_list_must_parse_and_be_used() {
    let bad = violations(&policy_text(
        r#"[["fido2_uv"]]"#,
        r#"fido2_aaguids = ["not-a-uuid"]"#,
    ));
    assert!(bad.iter().any(|v| v.code == Code::UnknownName), "{bad:#?}");
    let unused = violations(&policy_text(
        r#"[["smartcard", "card_pin"]]"#,
        r#"fido2_aaguids = ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]"#,
    ));
    assert!(unused.iter().any(|v| v.code == Code::Range), "{unused:#?}");
}

#[test]
fn r_bio_1_refuses_host_match_fingerprint() {
    refused_with(r#"[["badge", "biometric_host_match"]]"#, Code::RBio1);
    accepted(r#"[["badge", "biometric_on_reader"]]"#);
    accepted(r#"[["badge", "biometric_sealed"]]"#);
}

#[test]
fn r_bio_2_refuses_fingerprint_alone() {
    refused_with(r#"[["biometric"]]"#, Code::RBio2);
    refused_with(r#"[["biometric_sealed"]]"#, Code::RBio2);
}

#[test]
fn r_bio_2_refuses_identification_by_biometric() {
    let found = violations(&policy_text(
        r#"[["badge", "biometric"]]"#,
        r#"identify_by = ["fingerprint"]"#,
    ));
    assert!(found.iter().any(|v| v.code == Code::RBio2), "{found:#?}");
}

#[test]
fn r_bio_4_limits_biometric_failures() {
    let over = violations(&policy_text(
        r#"[["badge", "biometric"]]"#,
        "[rule.failures]\nbiometric_max = 6",
    ));
    assert!(over.iter().any(|v| v.code == Code::RBio4), "{over:#?}");
    let with_pad = violations(&policy_text(
        r#"[["badge", "biometric"]]"#,
        "[rule.failures]\nbiometric_max = 10\npresentation_attack_detection = true",
    ));
    assert!(with_pad.is_empty(), "{with_pad:#?}");
    let over_pad = violations(&policy_text(
        r#"[["badge", "biometric"]]"#,
        "[rule.failures]\nbiometric_max = 11\npresentation_attack_detection = true",
    ));
    assert!(over_pad.iter().any(|v| v.code == Code::RBio4));
}

#[test]
fn r_rate_1_at_most_100_consecutive_failures() {
    let ok = violations(&policy_text(
        r#"[["badge", "server_pin"]]"#,
        "[rule.failures]\nmax_consecutive = 100",
    ));
    assert!(ok.is_empty(), "{ok:#?}");
    for bad in [
        "max_consecutive = 101",
        "max_consecutive = 0",
        "backoff_base = \"0s\"",
    ] {
        let found = violations(&policy_text(
            r#"[["badge", "server_pin"]]"#,
            &format!("[rule.failures]\n{bad}"),
        ));
        assert!(!found.is_empty(), "{bad}");
    }
}

#[test]
fn r_sess_1_refuses_long_idle_and_long_sessions() {
    for (extra, code) in [
        ("[rule.session]\nidle_lock = \"31m\"", Code::RSess1),
        ("[rule.session]\nmax_length = \"25h\"", Code::RSess1),
        ("[rule.session]\nidle_lock = \"5s\"", Code::Range),
        (
            "[rule.session]\nidle_lock = \"2h\"\nmax_length = \"1h\"",
            Code::RSess1,
        ),
    ] {
        let found = violations(&policy_text(r#"[["badge", "server_pin"]]"#, extra));
        assert!(found.iter().any(|v| v.code == code), "{extra}: {found:#?}");
    }
}

#[test]
fn r_sess_1_idle_lock_may_not_exceed_session_length() {
    let found = violations(&policy_text(
        r#"[["badge", "server_pin"]]"#,
        "[rule.session]\nidle_lock = \"20m\"\nmax_length = \"10m\"",
    ));
    assert!(
        found.iter().any(|v| v.en.contains("longer than")),
        "{found:#?}"
    );
}

#[test]
fn r_off_1_offline_use_is_bounded() {
    let over = violations(&policy_text(
        r#"[["smartcard", "card_pin"]]"#,
        "[rule.offline]\nallowed = true\nmax_age = \"15d\"",
    ));
    assert!(over.iter().any(|v| v.code == Code::ROff1), "{over:#?}");
    let ok = violations(&policy_text(
        r#"[["smartcard", "card_pin"]]"#,
        "[rule.offline]\nallowed = true\nmax_age = \"14d\"",
    ));
    assert!(ok.is_empty(), "{ok:#?}");
}

#[test]
fn r_emerg_1_break_glass_is_its_own_purpose_and_flagged() {
    let text = policy_text(r#"[["badge", "server_pin"]]"#, "").replace(
        r#"purposes = ["login"]"#,
        r#"purposes = ["break_glass", "login"]"#,
    );
    let found = violations(&text);
    let emerg: Vec<&Violation> = found.iter().filter(|v| v.code == Code::REmerg1).collect();
    assert_eq!(emerg.len(), 2, "{found:#?}");

    let alone = policy_text(r#"[["badge", "server_pin"]]"#, "review = true")
        .replace(r#"purposes = ["login"]"#, r#"purposes = ["break_glass"]"#);
    assert!(violations(&alone).is_empty());
}

#[test]
fn r_sig_1_qualification_needs_a_smartcard_combination() {
    let found = violations(&policy_text(
        r#"[["fido2_uv"], ["smartcard", "card_pin"]]"#,
        r#"qualifications = ["Medical Doctor"]"#,
    ));
    assert_eq!(
        found.iter().filter(|v| v.code == Code::RSig1).count(),
        1,
        "{found:#?}"
    );
}

#[test]
fn r_pol_1_lists_every_violation_not_just_the_first() {
    let found =
        codes(r#"[["user_id", "usb_token"], ["biometric"], ["badge", "biometric_host_match"]]"#);
    for code in [
        Code::RAuth2,
        Code::RAuth4,
        Code::RBio2,
        Code::RBio1,
        Code::RAuth1,
        Code::RAuth3,
    ] {
        assert!(found.contains(&code), "missing {code}: {found:?}");
    }
}

#[test]
fn r_pol_1_refuses_unknown_roles_groups_and_factors() {
    let text = policy_text(r#"[["badge", "sms"]]"#, "")
        .replace(r#"roles = ["nurse"]"#, r#"roles = ["nurse", "janitor"]"#)
        .replace(r#"groups = ["ward"]"#, r#"groups = ["icu"]"#);
    let found = violations(&text);
    let refs: Vec<&str> = found
        .iter()
        .filter(|v| v.code == Code::UnknownReference)
        .map(|v| v.en.as_str())
        .collect();
    assert_eq!(refs.len(), 2, "{found:#?}");
    assert!(refs.iter().any(|m| m.contains("janitor")));
    assert!(refs.iter().any(|m| m.contains("icu")));
    assert!(found
        .iter()
        .any(|v| v.code == Code::UnknownName && v.en.contains("sms")));
}

#[test]
fn r_pol_1_refuses_overlapping_rules() {
    let text = format!(
        "{}\n{}",
        policy_text(r#"[["badge", "server_pin"]]"#, ""),
        r#"
[[rule]]
name = "other"
purposes = ["login", "unlock"]
roles = ["physician", "nurse"]
groups = ["ward"]
allow = [["smartcard", "card_pin"]]
"#
    );
    let found = violations(&text);
    let overlap: Vec<&Violation> = found.iter().filter(|v| v.code == Code::Overlap).collect();
    assert_eq!(overlap.len(), 1, "{found:#?}");
    assert!(overlap[0].en.contains("\"nurse\""));

    // Same roles and group, different purposes: no overlap.
    let disjoint = text.replace(
        r#"purposes = ["login", "unlock"]"#,
        r#"purposes = ["unlock"]"#,
    );
    assert!(violations(&disjoint).is_empty());
}

#[test]
fn r_pol_1_refuses_duplicates_and_empty_lists() {
    let dup = violations(&policy_text(
        r#"[["badge", "server_pin"], ["server_pin", "badge"]]"#,
        "",
    ));
    assert!(dup.iter().any(|v| v.code == Code::Duplicate), "{dup:#?}");
    let overlapping_kinds = violations(&policy_text(
        r#"[["badge", "biometric", "biometric_sealed"]]"#,
        "",
    ));
    assert!(overlapping_kinds.iter().any(|v| v.code == Code::Duplicate));
    let empty = violations(&policy_text("[]", ""));
    assert!(empty.iter().any(|v| v.code == Code::Range));
}

#[test]
fn unknown_fields_are_a_parse_error_with_a_line() {
    let text = policy_text(r#"[["badge", "server_pin"]]"#, "idle = \"5m\"");
    match Policy::from_toml(&text) {
        Err(PolicyError::Parse(message)) => {
            assert!(message.contains("idle"), "{message}");
            assert!(message.contains("line"), "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn malformed_text_and_durations_are_parse_errors() {
    for text in [
        "version = ",
        "version = 1\nname = 3",
        &policy_text(
            r#"[["badge", "server_pin"]]"#,
            "max_factor_age = \"5 minutes\"",
        ),
        &policy_text(r#"[["badge", "server_pin"]]"#, "max_factor_age = 300"),
        &policy_text(r#"[["badge", "server_pin"]]"#, "").replace("login", "logon"),
    ] {
        assert!(
            matches!(Policy::from_toml(text), Err(PolicyError::Parse(_))),
            "{text}"
        );
    }
}

#[test]
fn oversized_policy_is_refused_before_parsing() {
    let text = "#".repeat(clinauth_policy::file::MAX_POLICY_BYTES + 1);
    assert!(matches!(
        Policy::from_toml(&text),
        Err(PolicyError::TooLarge { .. })
    ));
}

#[test]
fn limits_on_names_and_counts() {
    let long_role = "r".repeat(65);
    let text = policy_text(r#"[["badge", "server_pin"]]"#, "").replace(
        r#"roles = ["nurse", "physician"]"#,
        &format!(r#"roles = ["nurse", "{long_role}"]"#),
    );
    assert!(violations(&text).iter().any(|v| v.code == Code::Limit));

    let many: Vec<String> = (0..200).map(|i| format!("\"r{i}\"")).collect();
    let text = policy_text(r#"[["badge", "server_pin"]]"#, "").replace(
        r#"roles = ["nurse", "physician"]"#,
        &format!("roles = [\"nurse\", {}]", many.join(", ")),
    );
    assert!(violations(&text).iter().any(|v| v.code == Code::Limit));

    let nine: Vec<&str> = std::iter::repeat_n("\"badge\"", 9).collect();
    let found = codes(&format!("[[{}]]", nine.join(", ")));
    assert!(found.contains(&Code::Limit), "{found:?}");
}

#[test]
fn a_bad_default_is_reported_once() {
    let text = format!(
        "{}\n{}",
        policy_text(r#"[["badge", "server_pin"]]"#, ""),
        r#"
[[rule]]
name = "second"
purposes = ["unlock"]
roles = ["nurse"]
groups = ["ward"]
allow = [["smartcard", "card_pin"]]
"#
    )
    .replace(
        "[groups.ward]",
        "[groups.ward]\n[defaults.session]\nidle_lock = \"2h\"\n",
    );
    let found = violations(&text);
    let sess: Vec<&Violation> = found.iter().filter(|v| v.code == Code::RSess1).collect();
    assert_eq!(sess.len(), 1, "{found:#?}");
    assert_eq!(sess[0].rule.as_deref(), Some("[defaults]"));
}

#[test]
fn fido2_counter_regression_is_refuse_or_suspend() {
    let base = policy_text(r#"[["fido2_uv"]]"#, "");
    let default = Policy::from_toml(&base).unwrap();
    assert_eq!(
        default.counter_regression(),
        clinauth_policy::CounterRegression::Refuse
    );
    for (setting, expected) in [
        ("refuse", clinauth_policy::CounterRegression::Refuse),
        ("suspend", clinauth_policy::CounterRegression::Suspend),
    ] {
        let text = format!("{base}\n[fido2]\ncounter_regression = \"{setting}\"\n");
        let policy = Policy::from_toml(&text).unwrap();
        assert_eq!(policy.counter_regression(), expected);
    }
    // The default written out or left out is the same policy.
    let explicit = Policy::from_toml(&format!(
        "{base}\n[fido2]\ncounter_regression = \"refuse\"\n"
    ))
    .unwrap();
    assert_eq!(explicit.digest(), default.digest());
    let suspend = Policy::from_toml(&format!(
        "{base}\n[fido2]\ncounter_regression = \"suspend\"\n"
    ))
    .unwrap();
    assert_ne!(suspend.digest(), default.digest());

    let found = violations(&format!(
        "{base}\n[fido2]\ncounter_regression = \"ignore\"\n"
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].code, Code::UnknownName);
    assert!(found[0].en.contains("refuse, suspend"), "{}", found[0].en);
    assert!(
        found[0].ja.contains("counter_regression"),
        "{}",
        found[0].ja
    );
    // Unknown keys in [fido2] are a parse error, like everywhere else.
    assert!(matches!(
        Policy::from_toml(&format!("{base}\n[fido2]\ncounter = \"suspend\"\n")),
        Err(PolicyError::Parse(_))
    ));
}

#[test]
fn r_auth_5_self_confirmation_is_refused_unless_allowed() {
    let base = policy_text(r#"[["fido2_uv"]]"#, "");
    let default = Policy::from_toml(&base).unwrap();
    assert_eq!(
        default.self_confirmation(),
        clinauth_policy::SelfConfirmation::Refuse
    );
    let allow = Policy::from_toml(&format!(
        "{base}\n[records]\nself_confirmation = \"allow\"\n"
    ))
    .unwrap();
    assert_eq!(
        allow.self_confirmation(),
        clinauth_policy::SelfConfirmation::Allow
    );
    assert_ne!(allow.digest(), default.digest());
    let explicit = Policy::from_toml(&format!(
        "{base}\n[records]\nself_confirmation = \"refuse\"\n"
    ))
    .unwrap();
    assert_eq!(explicit.digest(), default.digest());
    let found = violations(&format!(
        "{base}\n[records]\nself_confirmation = \"after_24h\"\n"
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].en.contains("refuse, allow"), "{}", found[0].en);
    // R-REC-1: there is no setting that confirms a record by itself.
    assert!(matches!(
        Policy::from_toml(&format!("{base}\n[records]\nauto_confirm_after = \"7d\"\n")),
        Err(PolicyError::Parse(_))
    ));
}
