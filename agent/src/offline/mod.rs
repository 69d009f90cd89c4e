//! Offline login (R-OFF-1) and the durable event spool.
//!
//! - [`bundle`]: the server-signed offline bundles kept per user, checked
//!   with the server's ticket key every time they are stored or read;
//! - [`login`]: card + card PIN, or FIDO2 with user verification, verified
//!   by the agent against the bundle when the server cannot be reached;
//! - [`spool`]: the append-only, checksummed, fsynced event spool that
//!   [`crate::audit`] writes and uploads;
//! - [`fsutil`]: private directories and atomic files.
//!
//! # Trust
//!
//! The agent verifies bundles with the server's ticket public key from a
//! file the installer puts on the workstation (`[offline] server_key`),
//! like the server CA: never a key learnt over the network. Without that
//! key offline login is off (the agent neither asks for nor keeps bundles)
//! and an unreachable server means no login. A bundle that does not verify,
//! is for another user or workstation, or has expired, counts as none.
//!
//! # Never fail open
//!
//! Offline, only a bundle rule that lists the purpose, is still within its
//! `max_age` since the online login, and whose combination was verified
//! here allows. Everything else is a refusal: the server-unreachable error
//! when no offline login is possible (no bundle, expired, purpose not
//! allowed offline), a denial when the card or key did not prove what the
//! bundle requires. An offline allow is answered only after its audit event
//! is durably in the spool.

pub mod bundle;
pub mod fsutil;
pub mod login;
pub mod spool;

use std::path::PathBuf;
use std::sync::Arc;

use clinauth_policy::Seconds;
use clinauth_proto::offline::{BundleRequest, BundleResponse};
use serde::Deserialize;

use crate::config::Config;
use crate::server_client::ServerClient;
use bundle::BundleStore;

/// `[offline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineSettings {
    /// The server's ticket public key (Ed25519; PEM `PUBLIC KEY`, or the 32
    /// raw bytes in base64 or hex), which signs offline bundles. Unset:
    /// offline login is off.
    #[serde(default)]
    pub server_key: Option<PathBuf>,
    /// Keep offline bundles and allow offline login (when `server_key` is
    /// set and the policy allows it).
    #[serde(default = "default_true")]
    pub login: bool,
    /// The event spool's size limit, in MiB (1 to 4096).
    #[serde(default = "default_spool_mib")]
    pub spool_max_mib: u32,
    /// The longest pause between upload attempts while the server is down.
    #[serde(default = "default_upload_backoff")]
    pub upload_max_backoff: Seconds,
}

impl Default for OfflineSettings {
    fn default() -> Self {
        OfflineSettings {
            server_key: None,
            login: true,
            spool_max_mib: default_spool_mib(),
            upload_max_backoff: default_upload_backoff(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_spool_mib() -> u32 {
    64
}
fn default_upload_backoff() -> Seconds {
    Seconds(300)
}

impl OfflineSettings {
    /// Checks the values.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=4096).contains(&self.spool_max_mib) {
            return Err("offline.spool_max_mib must be between 1 and 4096".into());
        }
        if !(1..=3600).contains(&self.upload_max_backoff.0) {
            return Err("offline.upload_max_backoff must be between 1s and 1h".into());
        }
        if self.server_key.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err("offline.server_key must be an absolute path".into());
        }
        Ok(())
    }
}

/// Offline login: the bundles of this workstation, when enabled.
#[derive(Debug, Clone, Default)]
pub struct Offline {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    store: BundleStore,
    workstation: String,
    fido2_origin: Option<String>,
}

impl Offline {
    /// From the configuration: on when `[offline] server_key` is set and
    /// `login` is true. A key that cannot be read stops the agent.
    pub fn new(config: &Config) -> Result<Offline, String> {
        let settings = &config.offline;
        settings.check()?;
        let (Some(key_path), true) = (&settings.server_key, settings.login) else {
            return Ok(Offline::default());
        };
        let key = bundle::load_server_key(key_path)?;
        let dir = config.agent.state_dir.join("offline");
        let store = BundleStore::open(&dir, key, &config.agent.workstation)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Offline {
            inner: Some(Arc::new(Inner {
                store,
                workstation: config.agent.workstation.clone(),
                fido2_origin: config.fido2.origin.clone(),
            })),
        })
    }

    /// Whether offline login is on.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// After an online allow: asks the server for `user`'s bundle against
    /// `ticket` and keeps it, or forgets the old one when the server says
    /// there is none (the policy or the user's credentials changed).
    /// Returns what happened, for the log; never fails a login.
    pub async fn refresh(
        &self,
        server: &ServerClient,
        user: &str,
        ticket: &str,
    ) -> Result<&'static str, String> {
        let Some(inner) = &self.inner else {
            return Ok("off");
        };
        let answer: BundleResponse = server
            .post(
                "/v1/offline/bundle",
                &BundleRequest {
                    ticket: ticket.to_owned(),
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let now_s = crate::clock::now_ms() / 1000;
        match answer.bundle {
            Some(token) => match inner.store.save(user, &token, now_s) {
                Ok(_) => Ok("stored"),
                Err(e) => {
                    // Whatever was kept stays only if it is still valid.
                    Err(format!(
                        "the server's offline bundle was refused (server key ID {}): {e}",
                        answer.kid
                    ))
                }
            },
            None => {
                inner
                    .store
                    .remove(user)
                    .map_err(|e| format!("forgetting the offline bundle: {e}"))?;
                Ok("none")
            }
        }
    }

    fn inner(&self) -> Option<&Inner> {
        self.inner.as_deref()
    }
}
