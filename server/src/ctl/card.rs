//! `clinauthctl card enroll`: enroll a smartcard's PIV authentication
//! certificate (slot 9A) for a user, on the server host. The certificate
//! must chain to a configured trust anchor (`[smartcard]`) and pass its
//! revocation check, as at every login.

use std::fmt::Write as _;
use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::host::{Host, HostError};
use super::Outcome;
use crate::auth::card_trust;
use crate::credentials::Enroller;

/// The largest certificate file read.
const MAX_CERT_FILE: u64 = 64 * 1024;

fn err(e: impl std::fmt::Display) -> HostError {
    HostError(e.to_string())
}

/// Reads a certificate file, PEM or DER.
fn read_certificate(path: &Path) -> Result<Vec<u8>, HostError> {
    let meta = std::fs::metadata(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    if meta.len() > MAX_CERT_FILE {
        return Err(err(format!(
            "{}: larger than {MAX_CERT_FILE} bytes",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    if bytes.first() == Some(&0x30) {
        return Ok(bytes);
    }
    CertificateDer::from_pem_slice(&bytes)
        .map(|c| c.as_ref().to_vec())
        .map_err(|e| err(format!("{}: no CERTIFICATE: {e}", path.display())))
}

/// `clinauthctl card enroll USER CERT [--no-pin]`.
pub async fn enroll(
    host: &Host,
    user: &str,
    certificate: &Path,
    pin_protected: bool,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let der = read_certificate(certificate)?;
    let trust = card_trust::load(&host.config.smartcard).map_err(err)?;
    let data = host.keys.data.first().ok_or_else(|| err("no data key"))?;
    Enroller {
        store: &host.store,
        audit: &host.keys.audit,
        data,
        actor: &host.actor,
    }
    .card(user, &der, &trust, pin_protected, crate::clock::now_ms())
    .await
    .map_err(err)?;
    let _ = writeln!(
        out,
        "enrolled the card {} for {user}",
        crate::credentials::card_id(&der)
    );
    Ok(Outcome::Ok)
}
