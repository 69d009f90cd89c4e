//! The shipped example policies, and the policy digest.

use clinauth_policy::{Code, Policy, PolicyError};

fn example(name: &str) -> String {
    let path = format!("{}/../examples/policy/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn hospital_example_is_accepted() {
    let policy = Policy::from_toml(&example("hospital.toml")).unwrap();
    assert_eq!(policy.version(), 3);
    let names: Vec<&str> = policy.rules().iter().map(|r| r.name.as_str()).collect();
    for expected in [
        "ward-login",
        "outpatient-login",
        "pharmacy-login",
        "remote-access",
        "break-glass",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn weak_example_is_refused_with_each_kind_of_violation() {
    let Err(PolicyError::Invalid(violations)) = Policy::from_toml(&example("weak.toml")) else {
        panic!("weak.toml must be refused");
    };
    let codes: Vec<Code> = violations.iter().map(|v| v.code).collect();
    for code in [
        Code::RAuth1,
        Code::RAuth2,
        Code::RAuth3,
        Code::RAuth4,
        Code::RBio1,
        Code::RBio2,
        Code::RBio4,
        Code::RSess1,
        Code::ROff1,
        Code::RRate1,
        Code::REmerg1,
        Code::RSig1,
        Code::UnknownName,
        Code::UnknownReference,
        Code::Duplicate,
        Code::Overlap,
    ] {
        assert!(
            codes.contains(&code),
            "weak.toml should show {code}; got {codes:?}"
        );
    }
    for v in &violations {
        assert!(!v.en.is_empty() && !v.ja.is_empty(), "{v}");
    }
}

#[test]
fn digest_ignores_comments_layout_and_list_order() {
    let text = example("hospital.toml");
    let a = Policy::from_toml(&text).unwrap();
    let reformatted = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n\n")
        .replace(
            r#"roles = ["physician", "nurse", "pharmacist", "medical_clerk", "lab_technician"]"#,
            r#"roles = ["nurse", "lab_technician", "physician", "pharmacist", "medical_clerk"]"#,
        )
        .replace(
            r#"["smartcard", "card_pin"],"#,
            r#"["card_pin", "smartcard"],"#,
        );
    assert_ne!(text, reformatted);
    let b = Policy::from_toml(&reformatted).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert!(a.digest().to_string().starts_with("sha256:"));
    assert_eq!(a.digest().to_string().len(), "sha256:".len() + 64);
}

#[test]
fn digest_changes_with_anything_that_changes_a_decision() {
    let text = example("hospital.toml");
    let base = Policy::from_toml(&text).unwrap();
    for (from, to) in [
        (r#"idle_lock = "3m""#, r#"idle_lock = "4m""#),
        (
            r#"["fido2_uv"],                # FIDO2"#,
            r#"["fido2", "server_pin"], # FIDO2"#,
        ),
        ("version = 3", "version = 4"),
        (r#"max_age = "72h""#, r#"max_age = "48h""#),
        (
            r#"qualifications = ["Pharmacist"]"#,
            r#"qualifications = ["Pharmacist", "Dentist"]"#,
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let changed = Policy::from_toml(&text.replacen(from, to, 1)).unwrap();
        assert_ne!(base.digest(), changed.digest(), "{from} -> {to}");
    }
}
