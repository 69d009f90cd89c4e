//! The active policy: every version an officer submits is validated by
//! clinauth-policy before it is stored (R-POL-1), kept with its digest,
//! author and time, and activated in the same transaction as the audit
//! entry that records the change, with the diff.

use crate::audit::{self, AuditKey, Event};
use crate::store::{Store, StoreError};
use clinauth_policy::{Policy, PolicyError};
use serde::Serialize;
use serde_json::json;
use sqlx::Row;
use std::sync::{Arc, RwLock};

/// Why a policy could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    /// The text breaks the guideline or does not parse.
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    /// Its version is not above the active one.
    #[error("version {given} is not above the active version {active}")]
    Version {
        /// Submitted.
        given: u64,
        /// Active.
        active: u64,
    },
    /// Storage or audit failed.
    #[error("storage: {0}")]
    Store(String),
    /// No policy is active.
    #[error("no policy is active: import one with clinauthctl policy activate")]
    None,
}

impl From<StoreError> for PolicyStoreError {
    fn from(e: StoreError) -> Self {
        PolicyStoreError::Store(e.to_string())
    }
}

impl From<sqlx::Error> for PolicyStoreError {
    fn from(e: sqlx::Error) -> Self {
        PolicyStoreError::Store(e.to_string())
    }
}

/// A stored version.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyVersion {
    /// Officer's version number.
    pub version: u64,
    /// Canonical digest.
    pub digest: String,
    /// When stored, ms.
    pub created_at: i64,
    /// Who stored it.
    pub created_by: String,
    /// Whether it is the active one.
    pub active: bool,
}

/// The policy every decision uses, shared by all requests; swapped whole.
#[derive(Debug, Clone)]
pub struct ActivePolicy(Arc<RwLock<Option<Arc<Policy>>>>);

impl Default for ActivePolicy {
    fn default() -> Self {
        ActivePolicy(Arc::new(RwLock::new(None)))
    }
}

impl ActivePolicy {
    /// The current policy, if any.
    pub fn get(&self) -> Option<Arc<Policy>> {
        self.0.read().ok().and_then(|p| p.clone())
    }

    fn set(&self, policy: Arc<Policy>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(policy);
        }
    }

    /// Loads the active version from the database (at start, and when another
    /// replica may have changed it).
    pub async fn reload(&self, store: &Store) -> Result<Option<Arc<Policy>>, PolicyStoreError> {
        let row = sqlx::query("SELECT body, digest FROM policies WHERE active = 1")
            .fetch_optional(store.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let digest: String = row.try_get("digest")?;
        if self.get().is_some_and(|p| p.digest().to_string() == digest) {
            return Ok(self.get());
        }
        let body: String = row.try_get("body")?;
        let policy = Arc::new(Policy::from_toml(&body)?);
        if policy.digest().to_string() != digest {
            return Err(PolicyStoreError::Store(
                "stored policy does not match its digest".into(),
            ));
        }
        self.set(policy.clone());
        Ok(Some(policy))
    }

    /// Validates, stores and activates a policy text, recording who did it
    /// and the diff against the previous version in the audit log.
    pub async fn activate(
        &self,
        store: &Store,
        key: &AuditKey,
        text: &str,
        officer: &str,
        now_ms: i64,
    ) -> Result<Arc<Policy>, PolicyStoreError> {
        let result = self.activate_inner(store, key, text, officer, now_ms).await;
        if let Err(e) = &result {
            // The refused change rolled back; its refusal is logged on its own.
            let codes: Vec<&str> = match e {
                PolicyStoreError::Invalid(PolicyError::Invalid(v)) => {
                    v.iter().map(|x| x.code.as_str()).collect()
                }
                _ => Vec::new(),
            };
            audit::record(
                store,
                key,
                &Event {
                    at_ms: now_ms,
                    actor: officer.to_owned(),
                    workstation: None,
                    action: "policy.activate".into(),
                    target: None,
                    outcome: "refused".into(),
                    detail: json!({ "error": e.to_string(), "violations": codes }),
                },
            )
            .await
            .map_err(|e| PolicyStoreError::Store(e.to_string()))?;
        }
        result
    }

    async fn activate_inner(
        &self,
        store: &Store,
        key: &AuditKey,
        text: &str,
        officer: &str,
        now_ms: i64,
    ) -> Result<Arc<Policy>, PolicyStoreError> {
        let policy = Arc::new(Policy::from_toml(text)?);
        let digest = policy.digest().to_string();
        let mut tx = store.begin().await?;
        let previous = sqlx::query("SELECT version, digest, body FROM policies WHERE active = 1")
            .fetch_optional(&mut *tx)
            .await?;
        let (prev_version, prev_digest, prev_body) = match &previous {
            Some(row) => (
                u64::try_from(row.try_get::<i64, _>("version")?).unwrap_or(0),
                Some(row.try_get::<String, _>("digest")?),
                row.try_get::<String, _>("body")?,
            ),
            None => (0, None, String::new()),
        };
        if prev_digest.as_deref() == Some(digest.as_str()) {
            return Ok(policy);
        }
        if policy.version() <= prev_version {
            return Err(PolicyStoreError::Version {
                given: policy.version(),
                active: prev_version,
            });
        }
        let version = i64::try_from(policy.version()).map_err(|_| PolicyStoreError::Version {
            given: policy.version(),
            active: prev_version,
        })?;
        sqlx::query("UPDATE policies SET active = 0 WHERE active = 1")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO policies (digest, version, body, created_at, created_by, active) VALUES ($1, $2, $3, $4, $5, 1) \
             ON CONFLICT (digest) DO UPDATE SET active = 1",
        )
        .bind(&digest)
        .bind(version)
        .bind(text)
        .bind(now_ms)
        .bind(officer)
        .execute(&mut *tx)
        .await?;
        audit::append(
            &mut tx,
            store.backend(),
            key,
            &Event {
                at_ms: now_ms,
                actor: officer.to_owned(),
                workstation: None,
                action: "policy.activate".into(),
                target: Some(format!("version {}", policy.version())),
                outcome: "ok".into(),
                detail: json!({
                    "digest": digest,
                    "previous_digest": prev_digest,
                    "previous_version": prev_version,
                    "diff": line_diff(&prev_body, text, 200),
                }),
            },
        )
        .await
        .map_err(|e| PolicyStoreError::Store(e.to_string()))?;
        tx.commit().await?;
        self.set(policy.clone());
        Ok(policy)
    }
}

/// Every stored version, newest first.
pub async fn history(store: &Store) -> Result<Vec<PolicyVersion>, PolicyStoreError> {
    let rows = sqlx::query(
        "SELECT version, digest, created_at, created_by, active FROM policies ORDER BY version DESC",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PolicyVersion {
                version: u64::try_from(row.try_get::<i64, _>("version")?).unwrap_or(0),
                digest: row.try_get("digest")?,
                created_at: row.try_get("created_at")?,
                created_by: row.try_get("created_by")?,
                active: row.try_get::<i64, _>("active")? != 0,
            })
        })
        .collect()
}

/// A line diff (`-`/`+` lines), at most `max_lines` lines, for the audit
/// record of a policy change. Common prefix and suffix are skipped; the
/// middle is shown removed then added, which is enough to see what changed.
pub fn line_diff(old: &str, new: &str, max_lines: usize) -> Vec<String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
        .min(a.len().min(b.len()) - prefix);
    let removed = a.get(prefix..a.len() - suffix).unwrap_or_default();
    let added = b.get(prefix..b.len() - suffix).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    if prefix > 0 || suffix > 0 {
        out.push(format!("@@ line {} @@", prefix + 1));
    }
    out.extend(removed.iter().map(|l| format!("-{l}")));
    out.extend(added.iter().map(|l| format!("+{l}")));
    if out.len() > max_lines {
        let more = out.len() - max_lines;
        out.truncate(max_lines);
        out.push(format!("… {more} more lines"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn diff_shows_only_the_changed_middle() {
        let d = line_diff("a\nb\nc\nd", "a\nB\nc\nd", 10);
        assert_eq!(d, vec!["@@ line 2 @@", "-b", "+B"]);
        let d = line_diff("", "x\ny", 10);
        assert_eq!(d, vec!["+x", "+y"]);
        let d = line_diff("same", "same", 10);
        assert_eq!(d, vec!["@@ line 2 @@"]);
        let long: String = (0..50).map(|i| format!("{i}\n")).collect();
        assert_eq!(line_diff("", &long, 5).len(), 6);
    }
}
