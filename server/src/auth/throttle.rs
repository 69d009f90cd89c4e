//! Throttling of failed attempts (R-RATE-1, R-BIO-4).
//!
//! The user's counter: each consecutive failure doubles the wait before the
//! user's next attempt is accepted (the rule's `backoff_base` up to
//! `backoff_max`); after the rule's `max_consecutive` failures (at most 100)
//! the user is locked until an officer unlocks them. A success clears it.
//!
//! The workstation's bucket is what keeps one attacker from locking every
//! user out: failures from one workstation, whoever the users, may come in a
//! burst of [`WS_BURST`] and then only one per [`WS_DRAIN_MS`]. A ward's
//! ordinary typing never reaches that; an attacker cycling through accounts
//! gets one guess per 6 seconds per workstation, so locking a thousand users
//! at 20 failures each takes more than a day of audited, alarming failures,
//! and a success (their own login) does not refill the bucket.

use crate::store::{StoreError, Tx};
use clinauth_policy::FailureLimits;
use sqlx::Row;

/// Failures a workstation may produce in a burst.
pub const WS_BURST: u32 = 10;
/// After the burst, one more failure per this many milliseconds.
pub const WS_DRAIN_MS: i64 = 6_000;

/// A counter as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    /// Consecutive failures.
    pub failures: u32,
    /// Consecutive biometric failures (R-BIO-4).
    pub biometric_failures: u32,
    /// When the last failure happened, ms since the epoch.
    pub last_failure_ms: i64,
    /// Locked until an officer unlocks.
    pub locked: bool,
}

impl Counter {
    /// Milliseconds until the next attempt is accepted; 0 when it is now.
    pub fn wait_ms(&self, limits: &FailureLimits, now_ms: i64) -> i64 {
        let wait = i64::from(limits.backoff_after(self.failures).0) * 1000;
        (self.last_failure_ms.saturating_add(wait) - now_ms).max(0)
    }

    /// For a workstation bucket: milliseconds until another failure may be
    /// attempted; 0 when the bucket has room.
    pub fn bucket_wait_ms(&self, now_ms: i64) -> i64 {
        let level = self.bucket_level(now_ms);
        if level < i64::from(WS_BURST) {
            0
        } else {
            (level - i64::from(WS_BURST) + 1) * WS_DRAIN_MS
        }
    }

    /// The bucket's level after draining since the last failure.
    fn bucket_level(&self, now_ms: i64) -> i64 {
        let drained = (now_ms - self.last_failure_ms).max(0) / WS_DRAIN_MS;
        (i64::from(self.failures) - drained).max(0)
    }

    /// Whether biometrics are barred until another factor succeeds.
    pub fn biometric_barred(&self, limits: &FailureLimits) -> bool {
        self.biometric_failures >= limits.biometric_max
    }
}

/// The key of a user's counter.
pub fn user_key(user: &str) -> String {
    format!("user:{user}")
}

/// The key of a workstation's counter.
pub fn workstation_key(workstation: &str) -> String {
    format!("ws:{workstation}")
}

/// Reads a counter (zero if absent).
pub async fn read(tx: &mut Tx, key: &str) -> Result<Counter, StoreError> {
    let row = sqlx::query(
        "SELECT failures, biometric_failures, last_failure, locked FROM throttle WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?;
    match row {
        Some(row) => counter_from_row(&row),
        None => Ok(Counter::default()),
    }
}

fn counter_from_row(row: &sqlx::any::AnyRow) -> Result<Counter, StoreError> {
    let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Ok(Counter {
        failures: clamp(row.try_get("failures")?),
        biometric_failures: clamp(row.try_get("biometric_failures")?),
        last_failure_ms: row.try_get("last_failure")?,
        locked: row.try_get::<i64, _>("locked")? != 0,
    })
}

/// Reads two counters (a user's and a workstation's) in one statement,
/// zero where absent. A plain read for the checks before verification:
/// pass [`crate::store::Store::reader`]; the decision's transaction reads
/// again what it updates.
pub async fn read_pair<'e, E>(
    db: E,
    first: &str,
    second: &str,
) -> Result<(Counter, Counter), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let rows = sqlx::query(
        "SELECT key, failures, biometric_failures, last_failure, locked FROM throttle WHERE key IN ($1, $2)",
    )
    .bind(first)
    .bind(second)
    .fetch_all(db)
    .await?;
    let (mut a, mut b) = (Counter::default(), Counter::default());
    for row in &rows {
        let key: String = row.try_get("key")?;
        if key == first {
            a = counter_from_row(row)?;
        }
        if key == second {
            b = counter_from_row(row)?;
        }
    }
    Ok((a, b))
}

async fn write(tx: &mut Tx, key: &str, c: &Counter) -> Result<(), StoreError> {
    // Portable upsert: both engines support ON CONFLICT … DO UPDATE.
    sqlx::query(
        "INSERT INTO throttle (key, failures, biometric_failures, last_failure, locked) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (key) DO UPDATE SET failures = $2, biometric_failures = $3, last_failure = $4, locked = $5",
    )
    .bind(key)
    .bind(i64::from(c.failures))
    .bind(i64::from(c.biometric_failures))
    .bind(c.last_failure_ms)
    .bind(i64::from(c.locked))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Records a failure; returns the counter after it.
pub async fn fail(
    tx: &mut Tx,
    key: &str,
    biometric: bool,
    limits: &FailureLimits,
    now_ms: i64,
) -> Result<Counter, StoreError> {
    let c = read(tx, key)
        .await?
        .after_failure(key, biometric, limits, now_ms);
    write(tx, key, &c).await?;
    Ok(c)
}

impl Counter {
    /// The counter `key` after one more failure (see [`fail`]).
    pub fn after_failure(
        mut self,
        key: &str,
        biometric: bool,
        limits: &FailureLimits,
        now_ms: i64,
    ) -> Counter {
        self.failures = self.failures.saturating_add(1);
        if biometric {
            self.biometric_failures = self.biometric_failures.saturating_add(1);
        }
        self.last_failure_ms = now_ms;
        if key.starts_with("user:") && self.failures >= limits.max_consecutive {
            self.locked = true;
        }
        self
    }

    /// A workstation's bucket after one more failure (see [`fill_bucket`]).
    pub fn after_fill(mut self, now_ms: i64) -> Counter {
        let level = self.bucket_level(now_ms);
        self.failures = u32::try_from(level + 1).unwrap_or(u32::MAX);
        self.last_failure_ms = now_ms;
        self
    }
}

/// Adds a failure to a workstation's bucket, draining it first.
pub async fn fill_bucket(tx: &mut Tx, key: &str, now_ms: i64) -> Result<Counter, StoreError> {
    let c = read(tx, key).await?.after_fill(now_ms);
    write(tx, key, &c).await?;
    Ok(c)
}

/// Clears a counter after a success (or an officer's unlock).
pub async fn clear(tx: &mut Tx, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM throttle WHERE key = $1")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
