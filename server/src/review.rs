//! The review queue of break-glass access (R-EMERG-1).
//!
//! Every allowed authentication whose rule is flagged `review = true` (every
//! `break_glass` rule must be) creates a pending item in the same transaction
//! as its audit entry, so there is never a break-glass login without its
//! item. An officer closes an item once, with an outcome (`justified` or
//! `unjustified`) and a note; nobody reviews their own break-glass access.
//! Closing is a conditional UPDATE: exactly one officer succeeds, on any
//! replica.

use crate::store::{Store, StoreError, Tx};
use serde::Serialize;
use sqlx::Row;
use std::fmt;
use std::str::FromStr;

/// The longest note an officer may write, in bytes.
pub const MAX_NOTE_BYTES: usize = 2000;
/// The most items one listing returns.
pub const MAX_LIST: i64 = 1000;

/// An item's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    /// Waiting for an officer.
    Pending,
    /// Closed with an outcome.
    Closed,
}

impl ReviewState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Pending => "pending",
            ReviewState::Closed => "closed",
        }
    }
}

impl FromStr for ReviewState {
    type Err = ReviewError;
    fn from_str(s: &str) -> Result<Self, ReviewError> {
        match s {
            "pending" => Ok(ReviewState::Pending),
            "closed" => Ok(ReviewState::Closed),
            _ => Err(ReviewError::Invalid(
                "state is pending, closed or all".into(),
            )),
        }
    }
}

/// What the reviewing officer concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The emergency access was justified.
    Justified,
    /// It was not: follow up under the hospital's procedure.
    Unjustified,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Justified => "justified",
            Outcome::Unjustified => "unjustified",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = ReviewError;
    fn from_str(s: &str) -> Result<Self, ReviewError> {
        match s {
            "justified" => Ok(Outcome::Justified),
            "unjustified" => Ok(Outcome::Unjustified),
            _ => Err(ReviewError::Invalid(
                "outcome is justified or unjustified".into(),
            )),
        }
    }
}

/// One item of the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Review {
    /// Its ID: the authentication's challenge ID (the ticket's `jti`).
    pub id: String,
    /// Who used break-glass access.
    pub user: String,
    /// Where.
    pub workstation: String,
    /// The purpose (`break_glass`, or another purpose of a rule flagged for review).
    pub purpose: String,
    /// The rule that allowed it.
    pub rule: String,
    /// The factors used.
    pub factors: Vec<String>,
    /// The audit entry of the decision.
    pub audit_seq: i64,
    /// When, ms since the epoch.
    pub created_at: i64,
    /// Pending or closed.
    pub state: ReviewState,
    /// The officer's conclusion, once closed.
    pub outcome: Option<String>,
    /// The officer's note, once closed.
    pub note: Option<String>,
    /// Who closed it.
    pub reviewed_by: Option<String>,
    /// When it was closed.
    pub reviewed_at: Option<i64>,
}

/// Why a review operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such item.
    #[error("review {0} not found")]
    NotFound(String),
    /// Already closed (by this or another officer).
    #[error("review {0} is already closed")]
    Closed(String),
    /// An officer may not review their own break-glass access.
    #[error("you may not review your own break-glass access")]
    Own,
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ReviewError {
    fn from(e: sqlx::Error) -> Self {
        ReviewError::Store(StoreError::Db(e))
    }
}

/// Checks a note: 1 to [`MAX_NOTE_BYTES`] bytes, no control characters
/// other than line breaks and tabs.
pub fn check_note(note: &str) -> Result<(), ReviewError> {
    if note.trim().is_empty() {
        return Err(ReviewError::Invalid("a note is required".into()));
    }
    if note.len() > MAX_NOTE_BYTES {
        return Err(ReviewError::Invalid(format!(
            "the note is longer than {MAX_NOTE_BYTES} bytes"
        )));
    }
    if note
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ReviewError::Invalid(
            "the note contains control characters".into(),
        ));
    }
    Ok(())
}

/// What a new item records.
#[derive(Debug, Clone)]
pub struct NewReview<'a> {
    /// The challenge ID (the ticket's `jti`).
    pub id: &'a str,
    /// The user.
    pub user: &'a str,
    /// The workstation.
    pub workstation: &'a str,
    /// The purpose.
    pub purpose: &'a str,
    /// The rule.
    pub rule: &'a str,
    /// The factors.
    pub factors: &'a [String],
    /// The decision's audit entry.
    pub audit_seq: i64,
}

/// Adds a pending item inside the decision's transaction.
pub async fn create(tx: &mut Tx, new: &NewReview<'_>, now_ms: i64) -> Result<(), StoreError> {
    let factors = serde_json::to_string(new.factors)
        .map_err(|_| StoreError::Corrupt("factors are not serialisable".into()))?;
    sqlx::query(
        "INSERT INTO reviews (id, user_id, workstation, purpose, rule, factors, audit_seq, created_at, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')",
    )
    .bind(new.id)
    .bind(new.user)
    .bind(new.workstation)
    .bind(new.purpose)
    .bind(new.rule)
    .bind(factors)
    .bind(new.audit_seq)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

const COLUMNS: &str = "id, user_id, workstation, purpose, rule, factors, audit_seq, created_at, state, outcome, note, reviewed_by, reviewed_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Review, StoreError> {
    let factors: String = row.try_get("factors")?;
    let state: String = row.try_get("state")?;
    Ok(Review {
        id: row.try_get("id")?,
        user: row.try_get("user_id")?,
        workstation: row.try_get("workstation")?,
        purpose: row.try_get("purpose")?,
        rule: row.try_get("rule")?,
        factors: serde_json::from_str(&factors)
            .map_err(|_| StoreError::Corrupt("review factors".into()))?,
        audit_seq: row.try_get("audit_seq")?,
        created_at: row.try_get("created_at")?,
        state: state
            .parse()
            .map_err(|_| StoreError::Corrupt("review state".into()))?,
        outcome: row.try_get("outcome")?,
        note: row.try_get("note")?,
        reviewed_by: row.try_get("reviewed_by")?,
        reviewed_at: row.try_get("reviewed_at")?,
    })
}

/// Items in a state (`None`: all), oldest first, at most `limit`.
pub async fn list(
    store: &Store,
    state: Option<ReviewState>,
    limit: i64,
) -> Result<Vec<Review>, StoreError> {
    let limit = limit.clamp(1, MAX_LIST);
    let rows = match state {
        Some(state) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM reviews WHERE state = $1 ORDER BY created_at, id LIMIT $2"
            )))
            .bind(state.as_str())
            .bind(limit)
            .fetch_all(store.pool())
            .await?
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM reviews ORDER BY created_at, id LIMIT $1"
            )))
            .bind(limit)
            .fetch_all(store.pool())
            .await?
        }
    };
    rows.iter().map(from_row).collect()
}

/// One item.
pub async fn get(store: &Store, id: &str) -> Result<Option<Review>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM reviews WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(store.pool())
    .await?;
    row.as_ref().map(from_row).transpose()
}

/// Closes a pending item inside the caller's transaction; refuses an
/// officer's own break-glass access and an item already closed. Returns
/// the item as it was.
pub async fn close(
    tx: &mut Tx,
    id: &str,
    reviewer: &str,
    outcome: Outcome,
    note: &str,
    now_ms: i64,
) -> Result<Review, ReviewError> {
    check_note(note)?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ReviewError::NotFound(id.chars().take(64).collect()));
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM reviews WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ReviewError::NotFound(id.to_owned()))?;
    let item = from_row(&row)?;
    if item.user == reviewer {
        return Err(ReviewError::Own);
    }
    let done = sqlx::query(
        "UPDATE reviews SET state = 'closed', outcome = $1, note = $2, reviewed_by = $3, reviewed_at = $4 \
         WHERE id = $5 AND state = 'pending'",
    )
    .bind(outcome.as_str())
    .bind(note)
    .bind(reviewer)
    .bind(now_ms)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(ReviewError::Closed(id.to_owned()));
    }
    Ok(item)
}
