//! Challenges: 32 fresh random bytes per authentication, bound to the user,
//! the workstation and the purpose, valid for a short time and usable once.
//!
//! They live in the database so that any replica can finish what another
//! began, and "usable once" is one conditional UPDATE: whichever replica
//! flips `used_at` first wins; a replay finds it set and is refused.

use crate::store::{StoreError, Tx};
use clinauth_policy::Purpose;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::Row;
use std::fmt::Write as _;

/// A challenge as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Its identifier (hex of 128 bits: the issue time and 80 random bits,
    /// see [`new_id`]).
    pub id: String,
    /// The nonce the factors sign or seal.
    pub nonce: [u8; 32],
    /// The claimed user.
    pub user: String,
    /// The workstation it was issued to.
    pub workstation: String,
    /// The purpose.
    pub purpose: Purpose,
    /// Expiry, ms since the epoch.
    pub expires_at_ms: i64,
    /// A serialised WebAuthn authentication state, if one was started.
    pub webauthn: Option<String>,
}

/// Why a challenge could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// No such challenge.
    #[error("unknown challenge")]
    Unknown,
    /// Already used once (a replay).
    #[error("challenge already used")]
    Used,
    /// Past its expiry.
    #[error("challenge expired")]
    Expired,
    /// Issued to another workstation.
    #[error("challenge belongs to another workstation")]
    OtherWorkstation,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness.
    #[error("no randomness available")]
    Random,
}

impl From<sqlx::Error> for ChallengeError {
    fn from(e: sqlx::Error) -> Self {
        ChallengeError::Store(StoreError::Db(e))
    }
}

fn random<const N: usize>() -> Result<[u8; N], ChallengeError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| ChallengeError::Random)?;
    Ok(out)
}

/// A challenge ID: the issue time in milliseconds (48 bits, big-endian)
/// then 80 random bits, as 32 hex digits.
///
/// Time first so that IDs issued together sort together: each one goes to
/// the last leaf of the table's index instead of a random one, which would
/// cost a page written per begin. The ID names the challenge and is no
/// secret (the nonce is); 80 random bits keep IDs of the same millisecond
/// apart and unguessable.
pub fn new_id(now_ms: i64) -> Result<String, ChallengeError> {
    let mut bytes = [0u8; 16];
    let time = u64::try_from(now_ms.max(0)).unwrap_or(0).to_be_bytes();
    bytes[..6].copy_from_slice(&time[2..]);
    let random: [u8; 10] = random()?;
    bytes[6..].copy_from_slice(&random);
    Ok(hex::encode(bytes))
}

/// A fresh challenge, not yet stored (the group-commit writer stores it
/// with the begin's audit entry, `auth::commit`).
pub fn fresh(
    user: &str,
    workstation: &str,
    purpose: Purpose,
    webauthn: Option<String>,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Challenge, ChallengeError> {
    Ok(Challenge {
        id: new_id(now_ms)?,
        nonce: random()?,
        user: user.to_owned(),
        workstation: workstation.to_owned(),
        purpose,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        webauthn,
    })
}

/// Stores challenges from [`fresh`], several per statement.
pub async fn insert_many(
    tx: &mut Tx,
    challenges: &[(&Challenge, i64)],
) -> Result<(), ChallengeError> {
    for chunk in challenges.chunks(256) {
        let mut sql = String::from(
            "INSERT INTO challenges (id, nonce, user_id, workstation, purpose, webauthn, created_at, expires_at) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let b = i * 8;
            let _ = write!(
                sql,
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8
            );
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (c, created_at) in chunk {
            query = query
                .bind(c.id.clone())
                .bind(c.nonce.to_vec())
                .bind(c.user.clone())
                .bind(c.workstation.clone())
                .bind(c.purpose.as_str())
                .bind(c.webauthn.clone())
                .bind(*created_at)
                .bind(c.expires_at_ms);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Uses several challenges at once, each for its workstation: one
/// conditional UPDATE flips every usable one (exactly once, on any
/// replica) and returns them; the rest are refused with the reason
/// [`consume`] would give. The result is in the order of `wanted`; when
/// the same challenge is wanted twice, only the first gets it.
pub async fn consume_many(
    tx: &mut Tx,
    wanted: &[(&str, &str)],
    now_ms: i64,
) -> Result<Vec<Result<Challenge, ChallengeError>>, ChallengeError> {
    let valid = |id: &str| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let mut flipped: std::collections::HashMap<String, Challenge> =
        std::collections::HashMap::new();
    let asked: Vec<&(&str, &str)> = wanted.iter().filter(|(id, _)| valid(id)).collect();
    for chunk in asked.chunks(200) {
        let mut sql = String::from(
            "UPDATE challenges SET used_at = $1 WHERE used_at IS NULL AND expires_at >= $1 AND (",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            let _ = write!(
                sql,
                "(id = ${} AND workstation = ${})",
                2 + 2 * i,
                3 + 2 * i
            );
        }
        sql.push_str(") RETURNING id, nonce, user_id, workstation, purpose, webauthn, expires_at");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms);
        for (id, ws) in chunk {
            query = query.bind(id.to_string()).bind(ws.to_string());
        }
        for row in query.fetch_all(&mut **tx).await? {
            let id: String = row.try_get("id")?;
            let owner: String = row.try_get("workstation")?;
            let c = challenge_from_row(&id, owner, &row)?;
            flipped.insert(id, c);
        }
    }
    let mut out = Vec::with_capacity(wanted.len());
    for (id, ws) in wanted {
        match flipped.remove(*id) {
            Some(c) => out.push(Ok(c)),
            None if !valid(id) => out.push(Err(ChallengeError::Unknown)),
            None => out.push(Err(refusal(tx, id, ws, now_ms).await?)),
        }
    }
    Ok(out)
}

/// Why a challenge could not be used (read after the conditional UPDATE
/// did not flip it).
async fn refusal(
    tx: &mut Tx,
    id: &str,
    workstation: &str,
    now_ms: i64,
) -> Result<ChallengeError, ChallengeError> {
    let row = sqlx::query("SELECT workstation, expires_at, used_at FROM challenges WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(ChallengeError::Unknown);
    };
    let owner: String = row.try_get("workstation")?;
    let used: Option<i64> = row.try_get("used_at")?;
    let expires: i64 = row.try_get("expires_at")?;
    Ok(if owner != workstation {
        ChallengeError::OtherWorkstation
    } else if used.is_some() {
        ChallengeError::Used
    } else if expires < now_ms {
        ChallengeError::Expired
    } else {
        ChallengeError::Unknown
    })
}

/// Issues a challenge.
pub async fn issue(
    tx: &mut Tx,
    user: &str,
    workstation: &str,
    purpose: Purpose,
    webauthn: Option<String>,
    now_ms: i64,
    ttl_ms: i64,
) -> Result<Challenge, ChallengeError> {
    let id = new_id(now_ms)?;
    let nonce: [u8; 32] = random()?;
    let expires_at_ms = now_ms.saturating_add(ttl_ms);
    sqlx::query(
        "INSERT INTO challenges (id, nonce, user_id, workstation, purpose, webauthn, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(nonce.to_vec())
    .bind(user)
    .bind(workstation)
    .bind(purpose.as_str())
    .bind(webauthn.as_deref())
    .bind(now_ms)
    .bind(expires_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(Challenge {
        id,
        nonce,
        user: user.to_owned(),
        workstation: workstation.to_owned(),
        purpose,
        expires_at_ms,
        webauthn,
    })
}

/// Uses a challenge once: succeeds for exactly one caller, on any replica.
pub async fn consume(
    tx: &mut Tx,
    id: &str,
    workstation: &str,
    now_ms: i64,
) -> Result<Challenge, ChallengeError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ChallengeError::Unknown);
    }
    // One statement on success: the conditional UPDATE returns the row it
    // flipped (both engines support RETURNING). Only a refusal reads the
    // row again, to say why.
    let flipped = sqlx::query(
        "UPDATE challenges SET used_at = $1 \
         WHERE id = $2 AND used_at IS NULL AND expires_at >= $1 AND workstation = $3 \
         RETURNING nonce, user_id, workstation, purpose, webauthn, expires_at",
    )
    .bind(now_ms)
    .bind(id)
    .bind(workstation)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = flipped {
        let owner: String = row.try_get("workstation")?;
        return challenge_from_row(id, owner, &row);
    }
    let row = sqlx::query(
        "SELECT nonce, user_id, workstation, purpose, webauthn, expires_at, used_at FROM challenges WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(ChallengeError::Unknown)?;
    let owner: String = row.try_get("workstation")?;
    let used: Option<i64> = row.try_get("used_at")?;
    let expires: i64 = row.try_get("expires_at")?;
    Err(if owner != workstation {
        ChallengeError::OtherWorkstation
    } else if used.is_some() {
        ChallengeError::Used
    } else if expires < now_ms {
        ChallengeError::Expired
    } else {
        ChallengeError::Unknown
    })
}

/// Reads a challenge without using it, with the same checks as
/// [`consume`]: verification needs the nonce before the transaction that
/// uses the challenge. A plain read (no transaction, no write lock): pass
/// [`crate::store::Store::reader`]; [`consume`] decides.
pub async fn peek<'e, E>(
    db: E,
    id: &str,
    workstation: &str,
    now_ms: i64,
) -> Result<Challenge, ChallengeError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ChallengeError::Unknown);
    }
    let row = sqlx::query(
        "SELECT nonce, user_id, workstation, purpose, webauthn, expires_at, used_at FROM challenges WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or(ChallengeError::Unknown)?;
    let owner: String = row.try_get("workstation")?;
    let used: Option<i64> = row.try_get("used_at")?;
    let expires: i64 = row.try_get("expires_at")?;
    if owner != workstation {
        return Err(ChallengeError::OtherWorkstation);
    }
    if used.is_some() {
        return Err(ChallengeError::Used);
    }
    if expires < now_ms {
        return Err(ChallengeError::Expired);
    }
    challenge_from_row(id, owner, &row)
}

fn challenge_from_row(
    id: &str,
    workstation: String,
    row: &sqlx::any::AnyRow,
) -> Result<Challenge, ChallengeError> {
    let nonce: Vec<u8> = row.try_get("nonce")?;
    let purpose: String = row.try_get("purpose")?;
    Ok(Challenge {
        id: id.to_owned(),
        nonce: <[u8; 32]>::try_from(nonce.as_slice())
            .map_err(|_| StoreError::Corrupt("challenge nonce is not 32 bytes".into()))?,
        user: row.try_get("user_id")?,
        workstation,
        purpose: purpose
            .parse()
            .map_err(|_| StoreError::Corrupt("challenge purpose".into()))?,
        expires_at_ms: row.try_get("expires_at")?,
        webauthn: row.try_get("webauthn")?,
    })
}

/// The smallest identifier [`new_id`] gives at `now_ms`.
fn first_id_at(now_ms: i64) -> String {
    let time = u64::try_from(now_ms.max(0)).unwrap_or(0).to_be_bytes();
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&time[2..]);
    hex::encode(bytes)
}

/// Deletes challenges issued and expired before `before_ms`; returns how
/// many. Found through their identifiers, which start with the issue time:
/// no expiry index for every begin to write.
pub async fn purge(tx: &mut Tx, before_ms: i64) -> Result<u64, ChallengeError> {
    Ok(
        sqlx::query("DELETE FROM challenges WHERE id < $1 AND expires_at < $2")
            .bind(first_id_at(before_ms))
            .bind(before_ms)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
    )
}
