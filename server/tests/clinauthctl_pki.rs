//! `clinauthctl pki init | issue-workstation | revoke` as an operator runs
//! them, checked with `openssl` from outside (R-TLS-1, R-TLS-2).

mod support;

use clinauth_server::pki::{self, InitOptions, PkiError, RevokeTarget};
use clinauth_server::tls;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// A test's own directory, removed when the test ends (pass or fail).
fn temp_dir(name: &str) -> support::TempDir {
    support::TempDir::new(name)
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clinauthctl"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap_or(-1), text)
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {out}"))
        .trim()
}

#[test]
fn r_tls_1_pki_init_makes_a_ca_a_server_certificate_and_a_crl() {
    let root = temp_dir("init");
    let dir = root.join("pki");
    let (code, out) = run(&[
        "pki",
        "init",
        "--dir",
        s(&dir),
        "--site",
        "Sakura General",
        "--server-name",
        "clinauth.hospital.example",
        "--server-name",
        "10.1.2.3",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ClinAuth Local CA Sakura General"), "{out}");
    assert!(out.contains("workstation_ca = ["), "{out}");

    // Modes: keys 0600, certificates 0644, the folder 0700.
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);
    assert_eq!(mode(&dir.join("server-key.pem")), 0o600);
    assert_eq!(mode(&dir.join("ca.pem")), 0o644);
    assert_eq!(mode(&dir.join("server.pem")), 0o644);
    assert_eq!(mode(&dir.join("crl.pem")), 0o644);

    // The CA: ECDSA P-256, CA:TRUE pathlen 0, 10 years, its name.
    let (ok, ca) = openssl(&["x509", "-noout", "-text", "-in", s(&dir.join("ca.pem"))]);
    assert!(ok, "{ca}");
    assert!(ca.contains("CN = ClinAuth Local CA Sakura General"), "{ca}");
    assert!(ca.contains("CA:TRUE, pathlen:0"), "{ca}");
    assert!(ca.contains("NIST CURVE: P-256"), "{ca}");
    assert!(ca.contains("Certificate Sign, CRL Sign"), "{ca}");
    let (ok, _) = openssl(&[
        "x509",
        "-noout",
        "-checkend",
        &(9 * 366 * 86_400).to_string(),
        "-in",
        s(&dir.join("ca.pem")),
    ]);
    assert!(ok, "the CA is valid for about 10 years");
    let (ok, _) = openssl(&[
        "x509",
        "-noout",
        "-checkend",
        &(11 * 366 * 86_400).to_string(),
        "-in",
        s(&dir.join("ca.pem")),
    ]);
    assert!(!ok, "but not 11");

    // The server certificate: the names, serverAuth, 2 years, chains to the CA.
    let (ok, server) = openssl(&["x509", "-noout", "-text", "-in", s(&dir.join("server.pem"))]);
    assert!(ok, "{server}");
    assert!(
        server.contains("DNS:clinauth.hospital.example, IP Address:10.1.2.3"),
        "{server}"
    );
    assert!(server.contains("TLS Web Server Authentication"), "{server}");
    assert!(server.contains("CA:FALSE"), "{server}");
    let (ok, _) = openssl(&[
        "x509",
        "-noout",
        "-checkend",
        &(729 * 86_400).to_string(),
        "-in",
        s(&dir.join("server.pem")),
    ]);
    assert!(ok);
    let (ok, _) = openssl(&[
        "x509",
        "-noout",
        "-checkend",
        &(733 * 86_400).to_string(),
        "-in",
        s(&dir.join("server.pem")),
    ]);
    assert!(!ok);
    let (ok, v) = openssl(&[
        "verify",
        "-purpose",
        "sslserver",
        "-CAfile",
        s(&dir.join("ca.pem")),
        s(&dir.join("server.pem")),
    ]);
    assert!(ok, "{v}");

    // The key matches the certificate.
    let (_, cert_pub) = openssl(&[
        "x509",
        "-noout",
        "-pubkey",
        "-in",
        s(&dir.join("server.pem")),
    ]);
    let (_, key_pub) = openssl(&["pkey", "-pubout", "-in", s(&dir.join("server-key.pem"))]);
    assert_eq!(cert_pub, key_pub);

    // The CRL: signed by the CA, empty.
    let (ok, crl) = openssl(&[
        "crl",
        "-noout",
        "-text",
        "-CAfile",
        s(&dir.join("ca.pem")),
        "-in",
        s(&dir.join("crl.pem")),
    ]);
    assert!(ok, "{crl}");
    assert!(crl.contains("verify OK"), "{crl}");
    assert!(crl.contains("No Revoked Certificates"), "{crl}");
}

#[test]
fn r_tls_1_pki_init_defaults_to_localhost_and_127_0_0_1() {
    let root = temp_dir("defaults");
    let dir = root.join("pki");
    let (code, out) = run(&["pki", "init", "--dir", s(&dir)]);
    assert_eq!(code, 0, "{out}");
    let (_, server) = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        s(&dir.join("server.pem")),
    ]);
    assert!(
        server.contains("DNS:localhost, IP Address:127.0.0.1"),
        "{server}"
    );
    assert!(out.contains("ClinAuth Local CA localhost"), "{out}");
}

#[test]
fn pki_init_twice_without_force_refuses_and_changes_nothing() {
    let root = temp_dir("twice");
    let dir = root.join("pki");
    let (code, out) = run(&["pki", "init", "--dir", s(&dir)]);
    assert_eq!(code, 0, "{out}");
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let key = std::fs::read(dir.join("ca-key.pem")).unwrap();

    let (code, out) = run(&["pki", "init", "--dir", s(&dir)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refusing to overwrite") && out.contains("--force"),
        "{out}"
    );
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
    assert_eq!(std::fs::read(dir.join("ca-key.pem")).unwrap(), key);

    // One file is enough to refuse.
    std::fs::remove_file(dir.join("ca.pem")).unwrap();
    let (code, out) = run(&["pki", "init", "--dir", s(&dir)]);
    assert_eq!(code, 1, "{out}");
    assert!(!dir.join("ca.pem").exists());

    let (code, out) = run(&["pki", "init", "--dir", s(&dir), "--force"]);
    assert_eq!(code, 0, "{out}");
    assert_ne!(std::fs::read(dir.join("ca-key.pem")).unwrap(), key);
    assert_eq!(mode(&dir.join("ca-key.pem")), 0o600);
    assert_eq!(mode(&dir.join("server-key.pem")), 0o600);
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

#[test]
fn r_tls_2_issue_workstation_prints_the_fingerprint_to_register() {
    let root = temp_dir("issue");
    let dir = root.join("pki");
    assert_eq!(run(&["pki", "init", "--dir", s(&dir)]).0, 0);
    let (code, out) = run(&[
        "pki",
        "issue-workstation",
        "--dir",
        s(&dir),
        "--name",
        "ws-ward3-01",
    ]);
    assert_eq!(code, 0, "{out}");
    let cert = dir.join("workstations/ws-ward3-01.pem");
    let key = dir.join("workstations/ws-ward3-01-key.pem");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&cert), 0o644);

    // The printed fingerprint is the certificate's SHA-256, as openssl computes it.
    let sha = field(&out, "sha256:");
    assert_eq!(sha.len(), 64);
    let (_, fp) = openssl(&["x509", "-noout", "-fingerprint", "-sha256", "-in", s(&cert)]);
    let fp = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase();
    assert_eq!(fp, sha);
    let der = tls::load_certs(&cert).unwrap();
    assert_eq!(tls::sha256_hex(der[0].as_ref()), sha);
    assert!(
        out.contains(&format!(
            "clinauthctl workstation add ws-ward3-01 --fingerprint {sha}"
        )),
        "{out}"
    );

    // CN = the name, clientAuth, 1 year, signed by the CA.
    let (_, text) = openssl(&["x509", "-noout", "-text", "-in", s(&cert)]);
    assert!(text.contains("CN = ws-ward3-01"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    let serial = field(&out, "serial:");
    assert!(
        text.to_ascii_lowercase().replace(':', "").contains(serial),
        "{serial} in {text}"
    );
    assert!(
        openssl(&[
            "x509",
            "-noout",
            "-checkend",
            &(364 * 86_400).to_string(),
            "-in",
            s(&cert)
        ])
        .0
    );
    assert!(
        !openssl(&[
            "x509",
            "-noout",
            "-checkend",
            &(366 * 86_400).to_string(),
            "-in",
            s(&cert)
        ])
        .0
    );
    let (ok, v) = openssl(&[
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        s(&dir.join("ca.pem")),
        s(&cert),
    ]);
    assert!(ok, "{v}");

    // Recorded in the index.
    let index = pki::read_index(&dir).unwrap();
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].name, "ws-ward3-01");
    assert_eq!(index[0].sha256, sha);

    // Not twice without --force; --out elsewhere.
    let (code, out2) = run(&[
        "pki",
        "issue-workstation",
        "--dir",
        s(&dir),
        "--name",
        "ws-ward3-01",
    ]);
    assert_eq!(code, 1, "{out2}");
    let elsewhere = root.join("out");
    let (code, out3) = run(&[
        "pki",
        "issue-workstation",
        "--dir",
        s(&dir),
        "--name",
        "ws-ward3-01",
        "--out",
        s(&elsewhere),
    ]);
    assert_eq!(code, 0, "{out3}");
    assert!(elsewhere.join("ws-ward3-01.pem").exists());
    assert_eq!(mode(&elsewhere.join("ws-ward3-01-key.pem")), 0o600);
    assert_ne!(field(&out3, "sha256:"), sha);
}

#[test]
fn issue_workstation_refuses_bad_names_and_a_missing_ca() {
    let root = temp_dir("badname");
    let dir = root.join("pki");
    let (code, out) = run(&[
        "pki",
        "issue-workstation",
        "--dir",
        s(&dir),
        "--name",
        "ws-1",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("pki init"), "{out}");

    assert_eq!(run(&["pki", "init", "--dir", s(&dir)]).0, 0);
    for bad in ["../evil", "", "-rf", "a/b", "ws 1", &"x".repeat(65)] {
        let name = format!("--name={bad}");
        let (code, out) = run(&["pki", "issue-workstation", "--dir", s(&dir), &name]);
        assert_eq!(code, 2, "{bad:?}: {out}");
        assert!(out.contains("invalid workstation name"), "{bad:?}: {out}");
    }
    assert!(!root.join("evil.pem").exists());
}

#[test]
fn r_tls_2_revoke_puts_the_serial_on_the_signed_crl() {
    let root = temp_dir("revoke");
    let dir = root.join("pki");
    assert_eq!(run(&["pki", "init", "--dir", s(&dir)]).0, 0);
    let (_, a) = run(&[
        "pki",
        "issue-workstation",
        "--dir",
        s(&dir),
        "--name",
        "ws-a",
    ]);
    let (_, b) = run(&[
        "pki",
        "issue-workstation",
        "--dir",
        s(&dir),
        "--name",
        "ws-b",
    ]);
    let serial_a = field(&a, "serial:").to_owned();
    let serial_b = field(&b, "serial:").to_owned();
    let cert_a = dir.join("workstations/ws-a.pem");
    let cert_b = dir.join("workstations/ws-b.pem");
    let ca = dir.join("ca.pem");
    let crl = dir.join("crl.pem");
    let check = |cert: &Path| {
        openssl(&[
            "verify",
            "-crl_check",
            "-CAfile",
            s(&ca),
            "-CRLfile",
            s(&crl),
            s(cert),
        ])
    };
    assert!(check(&cert_a).0);

    // By serial, with colons and in upper case as openssl prints it.
    let colons: String = serial_a
        .to_ascii_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let (code, out) = run(&["pki", "revoke", "--dir", s(&dir), "--serial", &colons]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("revoked {serial_a} (ws-a)")), "{out}");
    let (ok, v) = check(&cert_a);
    assert!(!ok && v.contains("certificate revoked"), "{v}");
    assert!(check(&cert_b).0, "ws-b is untouched");
    assert_eq!(mode(&crl), 0o644);

    // Again: already there, the CRL number still moves on.
    let (code, out) = run(&["pki", "revoke", "--dir", s(&dir), "--serial", &serial_a]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("already revoked"), "{out}");
    assert!(out.contains("CRL number 3, 1 revoked in all"), "{out}");

    // By name; both stay on the CRL.
    let (code, out) = run(&["pki", "revoke", "--dir", s(&dir), "--name", "ws-b"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("revoked {serial_b} (ws-b)")), "{out}");
    assert!(!check(&cert_a).0);
    assert!(!check(&cert_b).0);
    let (ok, text) = openssl(&["crl", "-noout", "-text", "-CAfile", s(&ca), "-in", s(&crl)]);
    assert!(ok && text.contains("verify OK"), "{text}");
    assert!(text.contains(&serial_a.to_ascii_uppercase()), "{text}");
    assert!(text.contains(&serial_b.to_ascii_uppercase()), "{text}");
    assert!(
        text.contains("X509v3 CRL Number: \n                4"),
        "{text}"
    );

    // Unknown serials and names are refused, and the CRL is not touched.
    let before = std::fs::read(&crl).unwrap();
    let (code, out) = run(&["pki", "revoke", "--dir", s(&dir), "--serial", "0123abcd"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("was not issued by this CA"), "{out}");
    let (code, out) = run(&["pki", "revoke", "--dir", s(&dir), "--name", "ws-nobody"]);
    assert_eq!(code, 1, "{out}");
    let (code, out) = run(&["pki", "revoke", "--dir", s(&dir), "--serial", "not-hex"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(std::fs::read(&crl).unwrap(), before);
}

#[test]
fn revoke_refuses_a_crl_not_signed_by_the_ca() {
    let root = temp_dir("forged");
    let dir = root.join("pki");
    let other = root.join("other");
    let now = clinauth_server::clock::now_ms();
    let opts = InitOptions {
        site: "Test".to_owned(),
        server_names: vec![],
        force: false,
    };
    pki::init(&dir, &opts, now).unwrap();
    pki::init(&other, &opts, now).unwrap();
    std::fs::copy(other.join("crl.pem"), dir.join("crl.pem")).unwrap();
    let issued = pki::issue_workstation(&dir, "ws-1", None, false, now).unwrap();
    let err = pki::revoke(&dir, &[RevokeTarget::Serial(issued.serial)], now).unwrap_err();
    assert!(matches!(err, PkiError::Ca(_)), "{err}");
    assert!(err.to_string().contains("not signed by the CA"), "{err}");
}

#[test]
fn validity_follows_the_given_now() {
    let root = temp_dir("now");
    let dir = root.join("pki");
    // 2030-01-01T00:00:00Z.
    let now_ms = 1_893_456_000_000;
    let report = pki::init(
        &dir,
        &InitOptions {
            site: "Test".to_owned(),
            server_names: vec![],
            force: false,
        },
        now_ms,
    )
    .unwrap();
    assert_eq!(report.ca_not_after, 1_893_456_000 + pki::CA_DAYS * 86_400);
    let issued = pki::issue_workstation(&dir, "ws-1", None, false, now_ms).unwrap();
    assert_eq!(issued.not_after, 1_893_456_000 + 365 * 86_400);
    let (_, text) = openssl(&[
        "x509",
        "-noout",
        "-startdate",
        "-enddate",
        "-in",
        s(&issued.cert),
    ]);
    assert!(
        text.contains("notBefore=Dec 31 23:55:00 2029 GMT"),
        "{text}"
    );
    assert!(text.contains("notAfter=Jan  1 00:00:00 2031 GMT"), "{text}");
    assert!(matches!(
        pki::issue_workstation(&dir, "ws-2", None, false, -1),
        Err(PkiError::Clock)
    ));
}

#[test]
fn serials_are_normalized() {
    assert_eq!(pki::normalize_serial("4D:B7:5C").unwrap(), "4db75c");
    assert_eq!(pki::normalize_serial("0x00ab").unwrap(), "ab");
    assert_eq!(pki::normalize_serial("abc").unwrap(), "0abc");
    assert!(pki::normalize_serial("xyz").is_err());
    assert!(pki::normalize_serial("").is_err());
}
