//! The server's own keys, each in a file of its own under the key directory
//! (mode 0600, never in the database, so a database dump or a DBA cannot
//! forge tickets or audit entries):
//!
//! | file | what |
//! |---|---|
//! | `ticket.ed25519.pk8` | signs tickets (JWS EdDSA) |
//! | `audit.ed25519.pk8` | signs audit entries |
//! | `data.key` | encrypts stored secrets: TOTP seeds, biometric templates (R-BIO-5) |
//! | `matcher.x25519` | opens sealed biometric templates (R-BIO-1) |
//!
//! `clinauthctl init` (or [`Keys::create_missing`]) makes the missing ones.

use crate::audit::{hex, AuditKey};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

const TICKET: &str = "ticket.ed25519.pk8";
const AUDIT: &str = "audit.ed25519.pk8";
const DATA: &str = "data.key";
const MATCHER: &str = "matcher.x25519";
/// Key files are small; anything larger is not one.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Why keys could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file does not hold a key of the expected kind.
    #[error("{0}: not a valid key file")]
    Invalid(PathBuf),
    /// A key file is readable by others.
    #[error("{0}: key file must not be readable by group or others (chmod 600)")]
    Permissions(PathBuf),
}

/// The server's signing keys.
pub struct Keys {
    /// Signs tickets.
    pub ticket: Ed25519KeyPair,
    /// The ticket key's ID (first 8 bytes of SHA-256 of its public key, hex).
    pub ticket_kid: String,
    /// Signs audit entries.
    pub audit: AuditKey,
    /// Encrypts stored secrets (the first seals; all open, for rotation).
    pub data: Vec<clinauth_factors::at_rest::DataKey>,
    /// Opens sealed biometric templates.
    pub matcher: clinauth_biometric::MatcherKey,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("ticket_kid", &self.ticket_kid)
            .field("audit", &self.audit)
            .field("data_keys", &self.data.len())
            .finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_key(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyError::Permissions(path.to_owned()));
    }
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyError::Invalid(path.to_owned()));
    }
    Ok(zeroize::Zeroizing::new(
        std::fs::read(path).map_err(io(path))?,
    ))
}

/// Writes a new file with mode 0600, refusing to replace an existing one.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// The key ID of an Ed25519 public key.
pub fn key_id(public_key: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
    hex(digest.as_ref().get(..8).unwrap_or_default())
}

impl Keys {
    /// Creates the key files that do not exist yet (mode 0600).
    pub fn create_missing(dir: &Path) -> Result<Vec<PathBuf>, KeyError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut made = Vec::new();
        let rng = SystemRandom::new();
        for name in [TICKET, AUDIT, DATA, MATCHER] {
            let path = dir.join(name);
            if path.exists() {
                continue;
            }
            let bytes = match name {
                DATA => clinauth_factors::at_rest::DataKey::generate(&rng)
                    .map(|k| zeroize::Zeroizing::new(k.expose().to_vec()))
                    .map_err(|_| KeyError::Invalid(path.clone()))?,
                MATCHER => clinauth_biometric::MatcherKey::generate(&rng)
                    .map(|k| zeroize::Zeroizing::new(k.to_bytes().to_vec()))
                    .map_err(|_| KeyError::Invalid(path.clone()))?,
                _ => zeroize::Zeroizing::new(
                    Ed25519KeyPair::generate_pkcs8(&rng)
                        .map_err(|_| KeyError::Invalid(path.clone()))?
                        .as_ref()
                        .to_vec(),
                ),
            };
            write_private(&path, &bytes)?;
            made.push(path);
        }
        Ok(made)
    }

    /// Loads every key from the directory.
    pub fn load(dir: &Path) -> Result<Keys, KeyError> {
        let ticket_path = dir.join(TICKET);
        let ticket = Ed25519KeyPair::from_pkcs8(&read_key(&ticket_path)?)
            .map_err(|_| KeyError::Invalid(ticket_path.clone()))?;
        let audit_path = dir.join(AUDIT);
        let audit = AuditKey::from_pkcs8(&read_key(&audit_path)?)
            .map_err(|_| KeyError::Invalid(audit_path.clone()))?;
        let data_path = dir.join(DATA);
        let data = clinauth_factors::at_rest::DataKey::from_bytes(&read_key(&data_path)?)
            .map_err(|_| KeyError::Invalid(data_path.clone()))?;
        let matcher_path = dir.join(MATCHER);
        let matcher = clinauth_biometric::MatcherKey::from_bytes(&read_key(&matcher_path)?)
            .map_err(|_| KeyError::Invalid(matcher_path.clone()))?;
        let ticket_kid = key_id(ticket.public_key().as_ref());
        Ok(Keys {
            ticket,
            ticket_kid,
            audit,
            data: vec![data],
            matcher,
        })
    }
}
