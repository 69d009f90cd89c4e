//! The operation a step-up, confirmation or signature is for, kept beside
//! its challenge: written at `begin`, read back at `finish` by whichever
//! replica gets it, so that the factors are bound to exactly this action,
//! record and verdict, or document digest, and the ticket states it.

use clinauth_proto::records::Operation;
use sqlx::Row;

use crate::store::{Store, StoreError};

/// The largest stored operation, in bytes (a digest or a record ID: small).
const MAX_OPERATION_LEN: usize = 1024;

/// Stores `op` for the challenge `challenge_id`.
pub async fn store(
    store: &Store,
    challenge_id: &str,
    op: &Operation,
    now_ms: i64,
) -> Result<(), StoreError> {
    let text = serde_json::to_string(op).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO challenge_operations (challenge_id, operation, created_at) VALUES ($1, $2, $3)",
    )
    .bind(challenge_id)
    .bind(text)
    .bind(now_ms)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// The operation of the challenge `challenge_id`, if one was stored.
pub async fn load(store: &Store, challenge_id: &str) -> Result<Option<Operation>, StoreError> {
    let row = sqlx::query("SELECT operation FROM challenge_operations WHERE challenge_id = $1")
        .bind(challenge_id)
        .fetch_optional(store.pool())
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let text: String = row.try_get("operation")?;
    if text.len() > MAX_OPERATION_LEN {
        return Err(StoreError::Corrupt("stored operation is too large".into()));
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|_| StoreError::Corrupt("stored operation is malformed".into()))
}

/// Forgets operations older than `before_ms` (their challenges are gone).
pub async fn purge(store: &Store, before_ms: i64) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM challenge_operations WHERE created_at < $1")
            .bind(before_ms)
            .execute(store.pool())
            .await?
            .rows_affected(),
    )
}
