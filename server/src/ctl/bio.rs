//! `clinauthctl reader add` and `clinauthctl finger enroll`, on the server
//! host: register a biometric reader with its signing key (R-BIO-2), and
//! enroll a user's fingerprint template from an enrollment station's file
//! (stored encrypted at rest, R-BIO-5).

use std::fmt::Write as _;
use std::path::Path;

use clinauth_biometric::template::Template;

use super::host::{Host, HostError};
use super::Outcome;
use crate::credentials::Enroller;

/// The largest template file read (an encoded template is well under 1 KiB).
const MAX_TEMPLATE_FILE: u64 = 4096;

fn err(e: impl std::fmt::Display) -> HostError {
    HostError(e.to_string())
}

/// `clinauthctl reader add ID --public-key HEX --protection P [--pad]`.
pub async fn reader_add(
    host: &Host,
    id: &str,
    public_key_hex: &str,
    protection: &str,
    pad: bool,
    description: &str,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let key = crate::hex::decode(public_key_hex, 32)
        .ok_or_else(|| err("the public key must be hex (the reader's Ed25519 key, 32 bytes)"))?;
    host.officer()
        .register_reader(
            id,
            &key,
            protection,
            pad,
            description,
            crate::clock::now_ms(),
        )
        .await
        .map_err(err)?;
    let _ = writeln!(out, "registered reader {id} ({protection})");
    Ok(Outcome::Ok)
}

/// `clinauthctl finger enroll USER FILE [--slot N]`.
pub async fn finger_enroll(
    host: &Host,
    user: &str,
    file: &Path,
    slot: u8,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let meta = std::fs::metadata(file).map_err(|e| err(format!("{}: {e}", file.display())))?;
    if meta.len() > MAX_TEMPLATE_FILE {
        return Err(err(format!(
            "{}: larger than {MAX_TEMPLATE_FILE} bytes",
            file.display()
        )));
    }
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(file).map_err(|e| err(format!("{}: {e}", file.display())))?,
    );
    let template = Template::decode(&bytes).map_err(|e| err(format!("{}: {e}", file.display())))?;
    let data = host.keys.data.first().ok_or_else(|| err("no data key"))?;
    Enroller {
        store: &host.store,
        audit: &host.keys.audit,
        data,
        actor: &host.actor,
    }
    .template(user, slot, &template, crate::clock::now_ms())
    .await
    .map_err(err)?;
    let _ = writeln!(
        out,
        "enrolled fingerprint {slot} for {user} (encrypted at rest)"
    );
    Ok(Outcome::Ok)
}
