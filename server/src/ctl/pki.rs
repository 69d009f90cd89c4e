//! `clinauthctl pki …`: the local PKI of the workstation API (R-TLS-1/2).
//!
//! - `pki init --dir DIR [--site NAME] [--server-name NAME …] [--force]`
//!   creates the local CA, the server certificate and an empty CRL.
//! - `pki issue-workstation --dir DIR --name NAME [--out DIR] [--force]`
//!   issues a workstation client certificate and prints its SHA-256, which
//!   the officer registers with `clinauthctl workstation add --fingerprint`.
//! - `pki revoke --dir DIR [--serial HEX …] [--name NAME …]` adds
//!   certificates to the CA's CRL; the server refuses them at the handshake
//!   once it has (re)loaded the CRL.
//!
//! A real site points the server's `[tls]` settings at its own CA instead;
//! see [`crate::pki`]. Exit status: 0 done, 1 refused (files exist, unknown
//! serial or name), 2 error.

use super::Outcome;
use crate::pki::{self, InitOptions, PkiError, RevokeTarget};
use std::fmt::Write as _;
use std::path::Path;

fn failed(e: &PkiError, out: &mut String) -> Outcome {
    let _ = writeln!(out, "error: {e}");
    match e {
        PkiError::Exists { .. } | PkiError::Unknown(_) => Outcome::Refused,
        _ => Outcome::Error,
    }
}

fn date(secs: u64) -> String {
    // Days since the epoch to a civil date (proleptic Gregorian), UTC.
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Runs `pki init`.
pub fn init(
    dir: &Path,
    site: Option<&str>,
    server_names: &[String],
    force: bool,
    now_ms: i64,
    out: &mut String,
) -> Outcome {
    let site = site
        .map(str::to_owned)
        .or_else(|| server_names.first().cloned())
        .unwrap_or_else(|| "localhost".to_owned());
    let opts = InitOptions {
        site,
        server_names: server_names.to_vec(),
        force,
    };
    match pki::init(dir, &opts, now_ms) {
        Ok(report) => {
            let _ = writeln!(out, "created {}", report.ca_name);
            if force {
                let _ = writeln!(
                    out,
                    "  (replaced: certificates issued by the previous CA no longer work)"
                );
            }
            let _ = writeln!(out, "  CA SHA-256: {}", report.ca_sha256);
            let _ = writeln!(out, "  CA valid until: {}", date(report.ca_not_after));
            let _ = writeln!(
                out,
                "  server certificate for: {}",
                report.server_names.join(", ")
            );
            for f in &report.files {
                let _ = writeln!(out, "  wrote {}", f.display());
            }
            let d = dir.display();
            let _ = writeln!(out, "server configuration:");
            let _ = writeln!(out, "  [tls]");
            let _ = writeln!(out, "  cert = \"{d}/{}\"", pki::SERVER_CERT);
            let _ = writeln!(out, "  key = \"{d}/{}\"", pki::SERVER_KEY);
            let _ = writeln!(out, "  workstation_ca = [\"{d}/{}\"]", pki::CA_CERT);
            let _ = writeln!(out, "  crl = [\"{d}/{}\"]", pki::CRL);
            Outcome::Ok
        }
        Err(e) => failed(&e, out),
    }
}

/// Runs `pki issue-workstation`.
pub fn issue_workstation(
    dir: &Path,
    name: &str,
    out_dir: Option<&Path>,
    force: bool,
    now_ms: i64,
    out: &mut String,
) -> Outcome {
    match pki::issue_workstation(dir, name, out_dir, force, now_ms) {
        Ok(issued) => {
            let _ = writeln!(out, "issued workstation certificate {}", issued.name);
            let _ = writeln!(out, "  certificate: {}", issued.cert.display());
            let _ = writeln!(out, "  key: {} (mode 0600)", issued.key.display());
            let _ = writeln!(out, "  serial: {}", issued.serial);
            let _ = writeln!(out, "  valid until: {}", date(issued.not_after));
            let _ = writeln!(out, "  sha256: {}", issued.sha256);
            let _ = writeln!(out, "register it:");
            let _ = writeln!(
                out,
                "  clinauthctl workstation add {} --fingerprint {} --group GROUP",
                issued.name, issued.sha256
            );
            Outcome::Ok
        }
        Err(e) => failed(&e, out),
    }
}

/// Runs `pki revoke`.
pub fn revoke(
    dir: &Path,
    serials: &[String],
    names: &[String],
    now_ms: i64,
    out: &mut String,
) -> Outcome {
    let targets: Vec<RevokeTarget> = serials
        .iter()
        .cloned()
        .map(RevokeTarget::Serial)
        .chain(names.iter().cloned().map(RevokeTarget::Name))
        .collect();
    match pki::revoke(dir, &targets, now_ms) {
        Ok(report) => {
            for (serial, name) in &report.revoked {
                let _ = writeln!(out, "revoked {serial} ({name})");
            }
            for (serial, name) in &report.already {
                let _ = writeln!(out, "already revoked {serial} ({name})");
            }
            let _ = writeln!(
                out,
                "wrote {} (CRL number {}, {} revoked in all)",
                report.crl.display(),
                report.crl_number,
                report.total
            );
            let _ = writeln!(
                out,
                "the server refuses them once it reloads its TLS configuration"
            );
            Outcome::Ok
        }
        Err(e) => failed(&e, out),
    }
}

#[cfg(test)]
mod tests {
    use super::date;

    #[test]
    fn dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_767_225_600), "2026-01-01");
    }
}
