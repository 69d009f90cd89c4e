//! The server's configuration file (TOML). `examples/server.toml` documents
//! every option with its default; unknown keys are refused so a typo never
//! silently drops a setting.

use clinauth_policy::Seconds;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The largest configuration file accepted.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity and listeners.
    pub server: ServerSection,
    /// Storage.
    #[serde(default)]
    pub database: DatabaseSection,
    /// Keys.
    pub keys: KeysSection,
    /// The policy to import when the database has none.
    #[serde(default)]
    pub policy: PolicySection,
    /// The authentication flow.
    #[serde(default)]
    pub auth: AuthSection,
    /// Smartcard trust.
    #[serde(default)]
    pub smartcard: SmartcardSection,
    /// TLS for both listeners (the workstation API requires client certificates).
    pub tls: crate::tls::TlsSettings,
    /// The officer API.
    #[serde(default)]
    pub officer: OfficerSection,
    /// FIDO2 (WebAuthn).
    #[serde(default)]
    pub fido2: Fido2Section,
}

/// `[fido2]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fido2Section {
    /// Accept FIDO2 authenticators at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The WebAuthn relying party ID (default: `server.name`).
    pub rp_id: Option<String>,
    /// The origin clients use (default: `https://<rp_id>`).
    pub origin: Option<String>,
    /// Require user verification at registration, so every key registered
    /// counts as two factors (R-AUTH-4).
    #[serde(default = "default_true")]
    pub require_user_verification: bool,
    /// Attestation CAs whose authenticators may be registered; empty
    /// accepts any authenticator (the policy may still restrict models).
    #[serde(default)]
    pub attestation_cas: Vec<AttestationCa>,
}

impl Default for Fido2Section {
    fn default() -> Self {
        Fido2Section {
            enabled: true,
            rp_id: None,
            origin: None,
            require_user_verification: true,
            attestation_cas: Vec::new(),
        }
    }
}

/// One attestation CA of `[fido2]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationCa {
    /// The CA certificate (PEM).
    pub pem: PathBuf,
    /// The models (AAGUIDs) accepted from it; empty accepts all its models.
    #[serde(default)]
    pub models: Vec<String>,
}

/// `[officer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfficerSection {
    /// Roles whose holders may use the officer API (with a ClinAuth ticket).
    #[serde(default = "default_officer_roles")]
    pub roles: Vec<String>,
}

impl Default for OfficerSection {
    fn default() -> Self {
        OfficerSection {
            roles: default_officer_roles(),
        }
    }
}

fn default_officer_roles() -> Vec<String> {
    vec!["security_officer".into()]
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// The name that goes into tickets as `iss`.
    pub name: String,
    /// Where the workstation API (mutual TLS) listens.
    #[serde(default = "default_workstation_listen")]
    pub workstation_listen: SocketAddr,
    /// Where the officer API and console listen.
    #[serde(default = "default_officer_listen")]
    pub officer_listen: SocketAddr,
    /// The most requests handled at once per listener.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_workstation_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8443))
}
fn default_officer_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8444))
}
fn default_max_connections() -> usize {
    1024
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `sqlite:///path/to/file.db` or `postgres://user@host/db`.
    #[serde(default = "default_database_url")]
    pub url: String,
    /// PostgreSQL pool size (SQLite always uses one connection).
    #[serde(default = "default_pool")]
    pub max_connections: u32,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        DatabaseSection {
            url: default_database_url(),
            max_connections: default_pool(),
        }
    }
}

fn default_database_url() -> String {
    "sqlite:///var/lib/clinauth/clinauth.db".into()
}
fn default_pool() -> u32 {
    16
}

/// `[keys]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// The directory holding the server's signing keys (mode 0700).
    pub dir: PathBuf,
}

/// `[policy]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// A policy file imported (validated, versioned, audited) at start when
    /// the database holds no active policy. Later changes go through
    /// `clinauthctl policy activate`.
    pub initial: Option<PathBuf>,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// How long a challenge from begin stays usable.
    #[serde(default = "default_challenge_ttl")]
    pub challenge_ttl: Seconds,
    /// How long a ticket is valid after it is issued.
    #[serde(default = "default_ticket_ttl")]
    pub ticket_ttl: Seconds,
    /// The most Argon2id hashes computed at once (19 MiB each): bounds
    /// memory under a login storm.
    #[serde(default = "default_max_hashes")]
    pub max_concurrent_hashes: usize,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            challenge_ttl: default_challenge_ttl(),
            ticket_ttl: default_ticket_ttl(),
            max_concurrent_hashes: default_max_hashes(),
        }
    }
}

fn default_challenge_ttl() -> Seconds {
    Seconds(120)
}
fn default_ticket_ttl() -> Seconds {
    Seconds(300)
}
fn default_max_hashes() -> usize {
    4
}

/// `[smartcard]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmartcardSection {
    /// CA certificates (PEM) that card certificates must chain to: the
    /// hospital's card CA, the HPKI CAs.
    #[serde(default)]
    pub trust_anchors: Vec<PathBuf>,
    /// CRLs (DER or PEM) of those CAs; a stale CRL makes its CA's cards
    /// fail (fail closed).
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// Require a current CRL for every trust anchor (default true). Set
    /// false only for a CA that publishes none, knowing revoked cards then
    /// pass until they expire.
    #[serde(default = "default_true")]
    pub require_crl: bool,
}

fn default_true() -> bool {
    true
}

impl Default for SmartcardSection {
    fn default() -> Self {
        SmartcardSection {
            trust_anchors: Vec::new(),
            crls: Vec::new(),
            require_crl: true,
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Larger than any configuration may be.
    #[error("{0} is larger than 256 KiB")]
    TooLarge(PathBuf),
    /// Not valid TOML for this format (the message names the line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parses configuration text.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge(path.to_owned()));
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.server.name.is_empty() || self.server.name.len() > 253 {
            return bad("server.name must be 1 to 253 bytes");
        }
        if !(10..=600).contains(&self.auth.challenge_ttl.0) {
            return bad("auth.challenge_ttl must be from 10s to 10m");
        }
        if !(10..=3600).contains(&self.auth.ticket_ttl.0) {
            return bad("auth.ticket_ttl must be from 10s to 1h");
        }
        if !(1..=256).contains(&self.auth.max_concurrent_hashes) {
            return bad("auth.max_concurrent_hashes must be from 1 to 256");
        }
        if self.server.max_connections == 0 {
            return bad("server.max_connections must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_documents_every_option() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/server.toml"
        ));
        let text = std::fs::read_to_string(path).unwrap();
        let config = Config::from_toml(&text, path).unwrap();
        assert_eq!(config.auth.challenge_ttl, Seconds(120));
        // Every key the format knows appears in the example.
        for key in [
            "name",
            "workstation_listen",
            "officer_listen",
            "max_connections",
            "url",
            "dir",
            "initial",
            "challenge_ttl",
            "ticket_ttl",
            "max_concurrent_hashes",
            "trust_anchors",
            "crls",
        ] {
            assert!(
                text.contains(&format!("{key} =")),
                "examples/server.toml lacks {key}"
            );
        }
    }

    #[test]
    fn minimal_config_takes_defaults_and_unknown_keys_fail() {
        let p = Path::new("t.toml");
        let tls = "[tls]\ncert = \"/c\"\nkey = \"/k\"\nworkstation_ca = \"/ca\"\n";
        let c = Config::from_toml(
            &format!("[server]\nname = \"s\"\n[keys]\ndir = \"/k\"\n{tls}"),
            p,
        )
        .unwrap();
        assert_eq!(c.database.url, "sqlite:///var/lib/clinauth/clinauth.db");
        assert_eq!(c.auth.max_concurrent_hashes, 4);
        let err = Config::from_toml(
            "[server]\nname = \"s\"\nnmae = 1\n[keys]\ndir = \"/k\"\n",
            p,
        );
        assert!(matches!(err, Err(ConfigError::Parse { .. })));
        let err = Config::from_toml(
            &format!(
                "[server]\nname = \"s\"\n[keys]\ndir = \"/k\"\n{tls}[auth]\nticket_ttl = \"2d\"\n"
            ),
            p,
        );
        assert!(matches!(err, Err(ConfigError::Invalid(_))));
    }
}
