//! `clinauthctl` on the server host: init, bootstrap, audit verify/export,
//! with a real configuration file and database.

mod support;

use sqlx::{Connection, Executor};
use std::path::Path;
use std::process::Command;

fn run(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clinauthctl"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap_or(-1), text)
}

fn setup(dir: &Path) -> std::path::PathBuf {
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    );
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = \"clinauth.test\"\n[database]\nurl = \"sqlite://{d}/db/clinauth.db\"\n[keys]\ndir = \"{d}/keys\"\n[policy]\ninitial = \"{policy}\"\n[tls]\ncert = \"{d}/pki/server.pem\"\nkey = \"{d}/pki/server-key.pem\"\nworkstation_ca = \"{d}/pki/ca.pem\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn r_log_1_bootstrap_and_audit_verify_from_the_server_host() {
    let dir = support::TempDir::new("ctl");
    let config = setup(&dir.0);

    let (code, out) = run(&config, &["init"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("imported policy version 3"), "{out}");
    assert!(out.contains("created key"), "{out}");
    let (code, out) = run(&config, &["init"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("policy version 3 active"),
        "init is safe to run again: {out}"
    );

    let (code, out) = run(
        &config,
        &[
            "--as",
            "officer.ito",
            "user",
            "add",
            "officer.ito",
            "--name",
            "伊藤",
            "--roles",
            "security_officer",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(
        &config,
        &[
            "user",
            "add",
            "nurse.tanaka",
            "--name",
            "田中",
            "--roles",
            "nurse",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&config, &["user", "add", "nurse.tanaka", "--name", "again"]);
    assert_eq!(code, 2, "duplicate: {out}");
    assert!(out.contains("already exists"), "{out}");
    let (code, out) = run(&config, &["badge", "add", "nurse.tanaka", "04A1B2C3"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(
        &config,
        &[
            "workstation",
            "add",
            "ward3-ws01",
            "--fingerprint",
            &"ab".repeat(32),
            "--group",
            "ward",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let pin = |value: &str| {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_clinauthctl"))
            .arg("--config")
            .arg(&config)
            .args(["user", "pin", "nurse.tanaka"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(value.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
        )
    };
    let (code, out) = pin("1234\n");
    assert_eq!(code, 2, "a common PIN is refused: {out}");
    let (code, out) = pin("58204913\n");
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&config, &["user", "state", "nurse.tanaka", "vacation"]);
    assert_eq!(code, 2, "{out}");
    let (code, out) = run(&config, &["user", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("nurse.tanaka") && out.contains("security_officer"),
        "{out}"
    );
    let (code, out) = run(
        &config,
        &[
            "policy",
            "activate",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy/weak.toml"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("R-AUTH-2"), "{out}");
    let (code, out) = run(&config, &["policy", "history"]);
    assert_eq!(code, 0);
    assert!(out.contains("* version 3"), "{out}");

    let (code, out) = run(&config, &["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit log intact: 8 entries"), "{out}");
    let (code, out) = run(&config, &["audit", "export"]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    let refused: Vec<&str> = lines
        .iter()
        .filter(|l| l["outcome"] == "refused")
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(refused, vec!["user.add", "policy.activate"]);
    assert_eq!(lines[1]["actor"], "officer.ito");
    assert_eq!(lines[1]["action"], "user.add");

    // Someone edits the database behind the server's back.
    let url = format!("sqlite://{}/db/clinauth.db", dir.0.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        conn.execute("UPDATE audit_log SET actor = 'someone.else' WHERE seq = 3")
            .await
            .unwrap();
        conn.execute("DELETE FROM audit_log WHERE seq = 5")
            .await
            .unwrap();
    });
    let (code, out) = run(&config, &["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("entry 3 was edited"), "{out}");
    assert!(out.contains("entry 5 was deleted"), "{out}");
}

#[test]
fn host_commands_fail_clearly_without_a_configuration() {
    let dir = support::TempDir::new("ctl-missing");
    let (code, out) = run(&dir.0.join("nope.toml"), &["user", "list"]);
    assert_eq!(code, 2);
    assert!(out.contains("cannot read"), "{out}");
    std::fs::write(dir.0.join("bad.toml"), "[server]\nname = 1\n").unwrap();
    let (code, out) = run(&dir.0.join("bad.toml"), &["init"]);
    assert_eq!(code, 2);
    assert!(out.contains("bad.toml"), "{out}");
}
