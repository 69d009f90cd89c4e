//! What the load generator needs to act as workstations and users: the
//! server's CA, one client certificate per workstation, and each user's
//! card (or badge and PIN). Written to `fixture.json` by `provision`, held
//! in memory for a fresh in-process server.

use crate::cards::Card;
use crate::{hex, unhex, Error, Factor};
use clinauth_server::tls;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file name of a fixture in its directory.
pub const FIXTURE_FILE: &str = "fixture.json";

/// A workstation's identity, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkstationEntry {
    /// Its registered name (the certificate's CN).
    pub name: String,
    /// Client certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
}

/// A user's credentials, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserEntry {
    /// The user ID.
    pub id: String,
    /// Card certificate (DER, hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_cert: Option<String>,
    /// Card key (PKCS#8 DER, hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_key: Option<String>,
    /// Badge UID (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge: Option<String>,
    /// Server PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<String>,
}

/// `fixture.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FixtureFile {
    /// The CA that issued the server's certificate (PEM).
    pub server_ca: PathBuf,
    /// The name the server's certificate carries.
    pub server_name: String,
    /// What the users present.
    pub factor: Factor,
    /// The workstations.
    pub workstations: Vec<WorkstationEntry>,
    /// The users.
    pub users: Vec<UserEntry>,
}

impl FixtureFile {
    /// Writes `dir/fixture.json`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, Error> {
        let path = dir.join(FIXTURE_FILE);
        let text = serde_json::to_string_pretty(self).map_err(Error::ctx("fixture"))?;
        std::fs::write(&path, text).map_err(Error::ctx("writing the fixture"))?;
        Ok(path)
    }

    /// Reads a fixture file (or `dir/fixture.json`).
    pub fn read(path: &Path) -> Result<FixtureFile, Error> {
        let path = if path.is_dir() {
            path.join(FIXTURE_FILE)
        } else {
            path.to_owned()
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| Error(format!("{}: {e}", path.display())))
    }
}

/// A simulated workstation: its name and its TLS client configuration.
pub struct Workstation {
    /// Registered name (what the card signs over).
    pub name: String,
    /// TLS 1.3, P-256 key exchange, its client certificate.
    pub tls: Arc<ClientConfig>,
}

/// A simulated user.
pub struct User {
    /// The user ID.
    pub id: String,
    /// The card, for [`Factor::Card`].
    pub card: Option<Card>,
    /// Badge UID, for [`Factor::Pin`].
    pub badge: Option<Vec<u8>>,
    /// Server PIN, for [`Factor::Pin`].
    pub pin: Option<String>,
}

/// Everything the driver needs.
pub struct Fixture {
    /// The server's certificate name.
    pub server_name: ServerName<'static>,
    /// What the users present.
    pub factor: Factor,
    /// The workstations.
    pub workstations: Vec<Workstation>,
    /// The users.
    pub users: Vec<User>,
}

/// The TLS client configuration of a workstation: TLS 1.3 only and P-256
/// first, as the server wants (no HelloRetryRequest), its certificate.
pub fn client_config(
    roots: &RootCertStore,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>, Error> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::SECP256R1];
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::ctx("TLS"))?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(
            tls::load_certs(cert).map_err(Error::ctx("workstation certificate"))?,
            tls::load_private_key(key).map_err(Error::ctx("workstation key"))?,
        )
        .map_err(Error::ctx("TLS client certificate"))?;
    Ok(Arc::new(config))
}

impl Fixture {
    /// Builds the in-memory fixture from its file form.
    pub fn load(file: &FixtureFile) -> Result<Fixture, Error> {
        let mut roots = RootCertStore::empty();
        for c in tls::load_certs(&file.server_ca).map_err(Error::ctx("server CA"))? {
            roots.add(c).map_err(Error::ctx("server CA"))?;
        }
        let workstations = file
            .workstations
            .iter()
            .map(|w| {
                Ok(Workstation {
                    name: w.name.clone(),
                    tls: client_config(&roots, &w.cert, &w.key)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let users = file
            .users
            .iter()
            .map(|u| {
                let card = match (&u.card_cert, &u.card_key) {
                    (Some(c), Some(k)) => Some(Card::from_parts(unhex(c)?, unhex(k)?)?),
                    _ => None,
                };
                let badge = u.badge.as_deref().map(unhex).transpose()?;
                Ok(User {
                    id: u.id.clone(),
                    card,
                    badge,
                    pin: u.pin.clone(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let server_name = ServerName::try_from(file.server_name.clone())
            .map_err(|_| Error(format!("invalid server name {:?}", file.server_name)))?;
        let fixture = Fixture {
            server_name,
            factor: file.factor,
            workstations,
            users,
        };
        fixture.check()?;
        Ok(fixture)
    }

    /// Every user has what the factor needs, and there is someone to drive.
    pub fn check(&self) -> Result<(), Error> {
        if self.workstations.is_empty() || self.users.is_empty() {
            return Err(Error(
                "the fixture needs at least one workstation and one user".into(),
            ));
        }
        for u in &self.users {
            let ok = match self.factor {
                Factor::Card => u.card.is_some(),
                Factor::Pin => u.badge.is_some() && u.pin.is_some(),
            };
            if !ok {
                return Err(Error(format!(
                    "user {} has no {} credentials in the fixture",
                    u.id, self.factor
                )));
            }
        }
        Ok(())
    }
}

/// A user entry with a card.
pub fn card_entry(id: &str, card: &Card) -> UserEntry {
    UserEntry {
        id: id.to_owned(),
        card_cert: Some(hex(&card.cert)),
        card_key: Some(hex(&card.pkcs8)),
        ..UserEntry::default()
    }
}
