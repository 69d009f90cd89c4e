//! Commands run on the server host with direct access to the database and
//! the key directory (root): first set-up, bootstrap of the first officer,
//! and recovery. Each change is audited with the acting user
//! (`root@<host>` unless `--as` names an officer).

use super::Outcome;
use crate::audit;
use crate::config::Config;
use crate::directory::{self, DeviceState, UserState};
use crate::keys::Keys;
use crate::officer::{export_audit, Officer};
use crate::policy_store::{self, ActivePolicy};
use crate::store::Store;
use std::fmt::Write as _;
use std::path::Path;

/// The configuration, database and keys of this server host.
pub struct Host {
    /// The configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The keys.
    pub keys: Keys,
    /// Who is acting.
    pub actor: String,
}

/// Why a host command could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

fn err(e: impl std::fmt::Display) -> HostError {
    HostError(e.to_string())
}

/// The default actor: `root@<hostname>`.
pub fn default_actor() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("root@{host}")
}

impl Host {
    /// Opens the host's database and keys.
    pub async fn open(config_path: &Path, actor: Option<String>) -> Result<Host, HostError> {
        let config = Config::load(config_path).map_err(err)?;
        let keys = Keys::load(&config.keys.dir).map_err(err)?;
        let store = Store::open(&config.database.url, config.database.max_connections)
            .await
            .map_err(err)?;
        Ok(Host {
            config,
            store,
            keys,
            actor: actor.unwrap_or_else(default_actor),
        })
    }

    pub fn officer(&self) -> Officer<'_> {
        Officer {
            store: &self.store,
            key: &self.keys.audit,
            actor: &self.actor,
        }
    }
}

/// `clinauthctl init`: creates the key directory's missing keys, creates and
/// migrates the database, and imports `[policy] initial` if no policy is
/// active yet. Safe to run again: it never replaces a key or a policy.
pub async fn init(config_path: &Path, out: &mut String) -> Result<Outcome, HostError> {
    let config = Config::load(config_path).map_err(err)?;
    let made = Keys::create_missing(&config.keys.dir).map_err(err)?;
    for path in &made {
        let _ = writeln!(out, "created key {}", path.display());
    }
    if made.is_empty() {
        let _ = writeln!(out, "keys present in {}", config.keys.dir.display());
    }
    if let Some(dir) = config
        .database
        .url
        .strip_prefix("sqlite://")
        .and_then(|p| Path::new(p.split('?').next().unwrap_or(p)).parent())
    {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let host = Host::open(config_path, None).await?;
    let _ = writeln!(out, "database ready ({:?})", host.store.backend());
    let active = ActivePolicy::default();
    match active.reload(&host.store).await.map_err(err)? {
        Some(p) => {
            let _ = writeln!(
                out,
                "policy version {} active ({})",
                p.version(),
                p.digest()
            );
        }
        None => match &host.config.policy.initial {
            Some(path) => {
                let text = super::policy::read_policy_text(path).map_err(err)?;
                let p = active
                    .activate(
                        &host.store,
                        &host.keys.audit,
                        &text,
                        &host.actor,
                        crate::clock::now_ms(),
                    )
                    .await
                    .map_err(err)?;
                let _ = writeln!(
                    out,
                    "imported policy version {} ({})",
                    p.version(),
                    p.digest()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "no policy active: run clinauthctl policy activate FILE"
                );
            }
        },
    }
    let _ = writeln!(
        out,
        "audit public key: {}",
        audit::hex(host.keys.audit.public_key())
    );
    host.store.close().await;
    Ok(Outcome::Ok)
}

/// `clinauthctl user add`.
pub async fn user_add(
    host: &Host,
    id: &str,
    name: &str,
    roles: &[String],
    out: &mut String,
) -> Result<Outcome, HostError> {
    let user = host
        .officer()
        .add_user(id, name, roles, crate::clock::now_ms())
        .await
        .map_err(err)?;
    let _ = writeln!(
        out,
        "added user {} ({}) with roles {}",
        user.id,
        user.display_name,
        user.roles.join(", ")
    );
    Ok(Outcome::Ok)
}

/// `clinauthctl user pin`: sets the user's server PIN (checked against the
/// PIN policy; stored as an Argon2id hash).
pub async fn user_pin(
    host: &Host,
    id: &str,
    pin: &clinauth_factors::pin::SecretPin,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let data = host
        .keys
        .data
        .first()
        .ok_or_else(|| HostError("no data key".into()))?;
    crate::credentials::Enroller {
        store: &host.store,
        audit: &host.keys.audit,
        data,
        actor: &host.actor,
    }
    .pin(id, pin, crate::clock::now_ms())
    .await
    .map_err(err)?;
    let _ = writeln!(out, "PIN set for {id}");
    Ok(Outcome::Ok)
}

/// `clinauthctl user list`.
pub async fn user_list(host: &Host, out: &mut String) -> Result<Outcome, HostError> {
    for u in directory::users(&host.store).await.map_err(err)? {
        let _ = writeln!(
            out,
            "{:<24} {:<10} {:<24} {}",
            u.id,
            u.state,
            u.roles.join(","),
            u.display_name
        );
    }
    Ok(Outcome::Ok)
}

/// `clinauthctl user state`.
pub async fn user_state(
    host: &Host,
    id: &str,
    state: &str,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let state: UserState = state.parse().map_err(err)?;
    host.officer()
        .set_user_state(id, state, crate::clock::now_ms())
        .await
        .map_err(err)?;
    let _ = writeln!(out, "user {id} is now {state}");
    Ok(Outcome::Ok)
}

/// `clinauthctl user unlock`.
pub async fn user_unlock(host: &Host, id: &str, out: &mut String) -> Result<Outcome, HostError> {
    host.officer()
        .unlock_user(id, crate::clock::now_ms())
        .await
        .map_err(err)?;
    let _ = writeln!(out, "user {id} unlocked");
    Ok(Outcome::Ok)
}

/// `clinauthctl workstation add`.
pub async fn workstation_add(
    host: &Host,
    id: &str,
    fingerprint: &str,
    group: &str,
    location: &str,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let ws = host
        .officer()
        .add_workstation(id, fingerprint, group, location, crate::clock::now_ms())
        .await
        .map_err(err)?;
    let _ = writeln!(
        out,
        "registered workstation {} in group {} ({})",
        ws.id, ws.group, ws.cert_sha256
    );
    Ok(Outcome::Ok)
}

/// `clinauthctl workstation state`.
pub async fn workstation_state(
    host: &Host,
    id: &str,
    state: &str,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let state: DeviceState = state.parse().map_err(err)?;
    host.officer()
        .set_workstation_state(id, state, crate::clock::now_ms())
        .await
        .map_err(err)?;
    let _ = writeln!(out, "workstation {id} is now {state}");
    Ok(Outcome::Ok)
}

/// `clinauthctl review list`.
/// `clinauthctl record list`: records entered by proxy, oldest first, with
/// their state (R-REC-1: pending ones wait for their confirmer, however old).
pub async fn record_list(
    host: &Host,
    state: &str,
    confirmer: Option<&str>,
    out: &mut String,
) -> Result<Outcome, HostError> {
    use clinauth_proto::records::RecordState;
    let state = match state {
        "all" => None,
        other => Some(
            RecordState::parse(other)
                .ok_or_else(|| err("state is pending, confirmed, rejected or all"))?,
        ),
    };
    let items = match confirmer {
        Some(c) => crate::records::pending(&host.store, c)
            .await
            .map_err(err)?
            .0
            .into_iter()
            .filter(|r| state.is_none_or(|s| s == r.state))
            .collect(),
        None => crate::records::list(&host.store, state, 1000)
            .await
            .map_err(err)?,
    };
    if items.is_empty() {
        let _ = writeln!(out, "no records");
    }
    for r in items {
        let _ = writeln!(
            out,
            "{}\t{}\tentered {} by {} at {}\tconfirmer {}\t{}\t{}{}",
            r.id,
            r.state.as_str(),
            r.entered_at,
            r.inputter,
            r.entered_at_workstation,
            r.confirmer,
            r.digest,
            r.summary.as_str(),
            r.decided_at
                .map(|t| format!("\tdecided {t}"))
                .unwrap_or_default(),
        );
    }
    Ok(Outcome::Ok)
}

pub async fn review_list(host: &Host, state: &str, out: &mut String) -> Result<Outcome, HostError> {
    let state = match state {
        "all" => None,
        other => Some(other.parse::<crate::review::ReviewState>().map_err(err)?),
    };
    let items = crate::review::list(&host.store, state, crate::review::MAX_LIST)
        .await
        .map_err(err)?;
    if items.is_empty() {
        let _ = writeln!(out, "no review items");
    }
    for r in items {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\taudit #{}\t{}",
            r.id,
            r.state.as_str(),
            r.created_at,
            r.user,
            r.workstation,
            r.purpose,
            r.rule,
            r.audit_seq,
            match (&r.outcome, &r.reviewed_by) {
                (Some(o), Some(by)) => format!("{o} by {by}: {}", r.note.as_deref().unwrap_or("")),
                _ => "-".to_owned(),
            }
        );
    }
    Ok(Outcome::Ok)
}

/// `clinauthctl review close`: exit 1 when refused (own access, closed, unknown).
pub async fn review_close(
    host: &Host,
    id: &str,
    outcome: &str,
    note: &str,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let outcome: crate::review::Outcome = outcome.parse().map_err(err)?;
    match host
        .officer()
        .close_review(id, outcome, note, crate::clock::now_ms())
        .await
    {
        Ok(item) => {
            let _ = writeln!(
                out,
                "review {id} closed as {outcome} (break-glass by {} at {})",
                item.user, item.workstation
            );
            Ok(Outcome::Ok)
        }
        Err(crate::officer::ReviewCloseError::Review(e))
            if !matches!(e, crate::review::ReviewError::Store(_)) =>
        {
            let _ = writeln!(out, "refused: {e}");
            Ok(Outcome::Refused)
        }
        Err(e) => Err(err(e)),
    }
}

/// `clinauthctl device list`.
pub async fn device_list(host: &Host, out: &mut String) -> Result<Outcome, HostError> {
    for d in crate::officer::device_listing(&host.store)
        .await
        .map_err(err)?
    {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            d.id,
            d.kind,
            d.owner.as_deref().unwrap_or("-"),
            d.state,
            d.last_contact
                .map_or_else(|| "never".to_owned(), |t| t.to_string())
        );
    }
    Ok(Outcome::Ok)
}

/// `clinauthctl device state`.
pub async fn device_state(
    host: &Host,
    id: &str,
    state: &str,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let state: DeviceState = state.parse().map_err(err)?;
    host.officer()
        .set_device_state(id, state, crate::clock::now_ms())
        .await
        .map_err(err)?;
    let _ = writeln!(out, "device {id} is now {state}");
    Ok(Outcome::Ok)
}

/// `clinauthctl badge add`.
pub async fn badge_add(
    host: &Host,
    user: &str,
    uid_hex: &str,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let uid = crate::hex::decode(uid_hex, 10);
    let uid = uid.ok_or_else(|| HostError("the UID must be hex".into()))?;
    let id = host
        .officer()
        .register_badge(user, &uid, crate::clock::now_ms())
        .await
        .map_err(err)?;
    let _ = writeln!(out, "registered badge {id} to {user}");
    Ok(Outcome::Ok)
}

/// `clinauthctl policy activate`: validate, store, activate, audit.
pub async fn policy_activate(
    host: &Host,
    file: &Path,
    out: &mut String,
) -> Result<Outcome, HostError> {
    let text = super::policy::read_policy_text(file).map_err(err)?;
    let active = ActivePolicy::default();
    active.reload(&host.store).await.map_err(err)?;
    match active
        .activate(
            &host.store,
            &host.keys.audit,
            &text,
            &host.actor,
            crate::clock::now_ms(),
        )
        .await
    {
        Ok(p) => {
            let _ = writeln!(
                out,
                "policy version {} active ({})",
                p.version(),
                p.digest()
            );
            Ok(Outcome::Ok)
        }
        Err(policy_store::PolicyStoreError::Invalid(clinauth_policy::PolicyError::Invalid(v))) => {
            let _ = writeln!(
                out,
                "refused: {} violation(s); run clinauthctl policy check {}",
                v.len(),
                file.display()
            );
            for x in v.iter().take(20) {
                let _ = writeln!(out, "  {x}");
            }
            Ok(Outcome::Refused)
        }
        Err(e) => Err(err(e)),
    }
}

/// `clinauthctl policy history`.
pub async fn policy_history(host: &Host, out: &mut String) -> Result<Outcome, HostError> {
    for v in policy_store::history(&host.store).await.map_err(err)? {
        let _ = writeln!(
            out,
            "{} version {:<4} {} by {} at {}",
            if v.active { "*" } else { " " },
            v.version,
            v.digest,
            v.created_by,
            v.created_at
        );
    }
    Ok(Outcome::Ok)
}

/// `clinauthctl audit verify`: exit 0 intact, 1 broken (every break listed).
pub async fn audit_verify(host: &Host, out: &mut String) -> Result<Outcome, HostError> {
    let report = audit::verify(&host.store, host.keys.audit.public_key())
        .await
        .map_err(err)?;
    if report.is_intact() {
        let head = report
            .head
            .map(|(seq, hash)| format!("head {seq} {}", audit::hex(&hash)))
            .unwrap_or_else(|| "empty".into());
        let _ = writeln!(out, "audit log intact: {} entries, {head}", report.entries);
        Ok(Outcome::Ok)
    } else {
        let _ = writeln!(
            out,
            "audit log BROKEN: {} problem(s) in {} entries",
            report.breaks.len(),
            report.entries
        );
        for b in &report.breaks {
            let _ = writeln!(out, "  {b}");
        }
        Ok(Outcome::Refused)
    }
}

/// `clinauthctl audit export`: JSON Lines to the writer.
pub async fn audit_export(
    host: &Host,
    after: i64,
    w: &mut impl std::io::Write,
) -> Result<u64, HostError> {
    export_audit(&host.store, after, w).await.map_err(err)
}
