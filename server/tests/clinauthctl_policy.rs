//! `clinauthctl policy check` as an officer runs it.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clinauthctl"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn r_pol_1_weak_policy_exits_non_zero_and_names_r_auth_2() {
    let (code, out) = run(&["policy", "check", "examples/policy/weak.toml"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REFUSED"), "{out}");
    assert!(out.contains("R-AUTH-2"), "{out}");
    assert!(out.contains("id-plus-usb-token"), "{out}");
    assert!(out.contains("[user_id, usb_token]"), "{out}");
    assert!(out.contains("公開された識別子"), "{out}");
}

#[test]
fn r_pol_1_hospital_policy_exits_zero_with_a_summary() {
    let (code, out) = run(&["policy", "check", "examples/policy/hospital.toml"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ACCEPTED"), "{out}");
    assert!(out.contains("digest sha256:"), "{out}");
    assert!(out.contains("rule \"ward-login\": login, unlock"), "{out}");
    assert!(out.contains("smartcard + card_pin"), "{out}");
    assert!(out.contains("every use flagged for review"), "{out}");
}

#[test]
fn unreadable_and_malformed_files_exit_2() {
    let (code, out) = run(&["policy", "check", "does/not/exist.toml"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot read"), "{out}");

    let dir = std::env::temp_dir().join(format!("clinauthctl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\nname = \"x\"\nroles = [\"a\"]\nbogus = true\n",
    )
    .unwrap();
    let (code, out) = run(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("bogus"), "{out}");

    let big = dir.join("big.toml");
    std::fs::write(&big, "#".repeat(1024 * 1024 + 1)).unwrap();
    let (code, out) = run(&["policy", "check", big.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("larger than"), "{out}");

    let binary = dir.join("binary.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let (code, out) = run(&["policy", "check", binary.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not UTF-8"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    let (code, _) = run(&["policy"]);
    assert_eq!(code, 2);
    let (code, _) = run(&["policy", "check"]);
    assert_eq!(code, 2);
}

fn simulate(extra: &[&str]) -> (i32, String) {
    let mut args = vec!["policy", "simulate", "examples/policy/hospital.toml"];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn simulate_allows_badge_plus_pin_on_the_ward() {
    let (code, out) = simulate(&[
        "--roles",
        "nurse",
        "--group",
        "ward",
        "--evidence",
        "badge,server_pin",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ALLOW"), "{out}");
    assert!(out.contains("\"ward-login\""), "{out}");
    assert!(out.contains("idle lock 3m"), "{out}");
}

#[test]
fn simulate_r_auth_3_badge_alone_says_what_to_add() {
    let (code, out) = simulate(&["--roles", "nurse", "--group", "ward", "--evidence", "badge"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("add one of: PIN or password, fingerprint"),
        "{out}"
    );
}

#[test]
fn simulate_r_sig_1_prescription_needs_a_physician_card() {
    let base = [
        "--roles",
        "physician",
        "--group",
        "ward",
        "--purpose",
        "sign",
        "--evidence",
        "card",
    ];
    let (code, out) = simulate(&[&base[..], &["--qualification", "Medical Doctor"]].concat());
    assert_eq!(code, 0, "{out}");
    let (code, out) = simulate(&[&base[..], &["--qualification", "Nurse"]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("R-SIG-1"), "{out}");
}

#[test]
fn simulate_r_off_1_offline_ward_login_within_72h_only() {
    let base = ["--roles", "nurse", "--group", "ward", "--evidence", "card"];
    let (code, out) = simulate(&[&base[..], &["--offline-bundle-age", "10h"]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(offline)"), "{out}");
    let (code, out) = simulate(&[&base[..], &["--offline-bundle-age", "4d"]].concat());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("offline"), "{out}");
}

#[test]
fn simulate_refuses_unknown_evidence_and_bad_durations() {
    let (code, out) = simulate(&[
        "--roles",
        "nurse",
        "--group",
        "ward",
        "--evidence",
        "retina",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown evidence"), "{out}");
    let (code, _) = simulate(&[
        "--roles",
        "nurse",
        "--group",
        "ward",
        "--evidence",
        "card",
        "--evidence-age",
        "5 min",
    ]);
    assert_eq!(code, 2);
    let (code, out) = run(&[
        "policy",
        "simulate",
        "examples/policy/weak.toml",
        "--roles",
        "nurse",
        "--group",
        "ward",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("policy check"), "{out}");
}

#[test]
fn fido2_counter_regression_setting_is_checked_and_summarised() {
    let (code, out) = run(&["policy", "check", "examples/policy/hospital.toml"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("FIDO2 sign-counter regression (possible cloned key): refuse the assertion"),
        "{out}"
    );
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    ))
    .unwrap();
    let dir = std::env::temp_dir().join(format!("clinauthctl-fido2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let suspend = dir.join("suspend.toml");
    std::fs::write(
        &suspend,
        format!("{text}\n[fido2]\ncounter_regression = \"suspend\"\n"),
    )
    .unwrap();
    let (code, out) = run(&["policy", "check", suspend.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("suspend the key until an officer re-enables it"),
        "{out}"
    );
    let wrong = dir.join("wrong.toml");
    std::fs::write(
        &wrong,
        format!("{text}\n[fido2]\ncounter_regression = \"ignore\"\n"),
    )
    .unwrap();
    let (code, out) = run(&["policy", "check", wrong.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("POLICY-UNKNOWN-NAME"), "{out}");
    assert!(out.contains("counter_regression"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
