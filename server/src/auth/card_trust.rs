//! The smartcard trust store, built once at start from `[smartcard]`.

use crate::config::SmartcardSection;
use clinauth_factors::card::{CardTrust, CrlRule};
use std::path::Path;

/// The most bytes read from one trust anchor or CRL file.
const MAX_FILE: u64 = 8 * 1024 * 1024;

fn read(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_FILE {
        return Err(format!("{}: larger than 8 MiB", path.display()));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// DER blocks of the given PEM label, or the file itself if it is DER.
fn der_blocks(bytes: &[u8], label: &str) -> Result<Vec<Vec<u8>>, String> {
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(vec![bytes.to_vec()]);
    }
    let mut out = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| format!("PEM: {e}"))?;
        if pem.label == label {
            out.push(pem.contents);
        }
    }
    Ok(out)
}

/// Builds the trust store: every certificate in the anchor files is an
/// anchor; every CRL is checked against its issuer when it is added.
pub fn load(section: &SmartcardSection) -> Result<CardTrust, String> {
    let mut trust = CardTrust::new();
    let rule = if section.require_crl {
        CrlRule::Required
    } else {
        CrlRule::IfPresent
    };
    for path in &section.trust_anchors {
        for der in der_blocks(&read(path)?, "CERTIFICATE")? {
            trust
                .add_anchor(&der, rule)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    for path in &section.crls {
        for der in der_blocks(&read(path)?, "X509 CRL")? {
            trust
                .add_crl(&der)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    if trust.unauthenticated_crls() > 0 {
        // Such a CRL is checked against its issuer at every login instead of
        // once here: correct, but slower. Usually a CRL of an intermediate CA
        // that is not configured as a trust anchor or intermediate.
        tracing::warn!(
            count = trust.unauthenticated_crls(),
            "smartcard: CRLs whose issuer is not a configured CA are verified at every login"
        );
    }
    Ok(trust)
}
