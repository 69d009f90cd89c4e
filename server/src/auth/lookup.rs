//! The reads of begin and finish, one statement each.
//!
//! begin needs the user, the user's failure counter, the workstation's
//! failure bucket and whether the user has FIDO2 keys; finish needs the
//! challenge, its user and the same counters. Each is one SELECT with joins
//! on the read pool (plain reads, no write lock): every check made here is
//! made again, or made unnecessary, by the conditional writes of the
//! decision (`auth::commit`).

use super::challenge::{Challenge, ChallengeError};
use super::throttle::Counter;
use crate::directory::{User, UserState};
use crate::store::{Store, StoreError};
use clinauth_policy::Purpose;
use sqlx::any::AnyRow;
use sqlx::Row;

/// What begin reads.
#[derive(Debug, Clone)]
pub struct BeginView {
    /// The user, if known.
    pub user: Option<User>,
    /// The user's failure counter.
    pub counter: Counter,
    /// The workstation's failure bucket.
    pub bucket: Counter,
    /// The user has active FIDO2 keys.
    pub has_fido2: bool,
}

/// What finish reads.
#[derive(Debug, Clone)]
pub struct FinishView {
    /// The challenge, usable now from this workstation.
    pub challenge: Challenge,
    /// Its user, if known.
    pub user: Option<User>,
    /// The user's failure counter.
    pub counter: Counter,
    /// The workstation's failure bucket.
    pub bucket: Counter,
    /// The card asked for (`card_id`), as enrolled: `None` when it is not
    /// an active card credential.
    pub card: Option<crate::credentials::EnrolledCard>,
}

const USER_COLUMNS: &str = "u.id AS u_id, u.display_name AS u_display_name, u.roles AS u_roles, u.state AS u_state, u.created_at AS u_created_at, u.updated_at AS u_updated_at";
const COUNTER_COLUMNS: &str = "tu.failures AS tu_failures, tu.biometric_failures AS tu_biometric_failures, tu.last_failure AS tu_last_failure, tu.locked AS tu_locked, \
     tw.failures AS tw_failures, tw.biometric_failures AS tw_biometric_failures, tw.last_failure AS tw_last_failure, tw.locked AS tw_locked";

fn user_of(row: &impl Columns) -> Result<Option<User>, StoreError> {
    let Some(id) = row.text("u_id")? else {
        return Ok(None);
    };
    let roles = required(row.text("u_roles")?, "user roles")?;
    let state = required(row.text("u_state")?, "user state")?;
    Ok(Some(User {
        id,
        display_name: required(row.text("u_display_name")?, "user name")?,
        roles: serde_json::from_str(&roles)
            .map_err(|_| StoreError::Corrupt("user roles are not a JSON list".into()))?,
        state: state
            .parse::<UserState>()
            .map_err(|e| StoreError::Corrupt(format!("user state: {e}")))?,
        created_at: required(row.int("u_created_at")?, "user creation time")?,
        updated_at: required(row.int("u_updated_at")?, "user update time")?,
    }))
}

fn counter_of(row: &impl Columns, prefix: &str) -> Result<Counter, StoreError> {
    let col = |name: &str| format!("{prefix}_{name}");
    let Some(failures) = row.int(&col("failures"))? else {
        return Ok(Counter::default());
    };
    let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    Ok(Counter {
        failures: clamp(failures),
        biometric_failures: clamp(row.int(&col("biometric_failures"))?.unwrap_or(0)),
        last_failure_ms: row.int(&col("last_failure"))?.unwrap_or(0),
        locked: row.int(&col("locked"))?.unwrap_or(0) != 0,
    })
}

/// begin's read. `user_key` and `ws_key` are the throttle keys. On a
/// SQLite file it runs in place ([`crate::store::FastReader`]).
pub async fn for_begin(
    store: &Store,
    user: &str,
    user_key: &str,
    ws_key: &str,
) -> Result<BeginView, StoreError> {
    match store.fast() {
        Some(fast) => fast.with(|conn| begin_local(conn, user, user_key, ws_key)),
        None => begin_sqlx(store.reader(), user, user_key, ws_key).await,
    }
}

fn begin_sql() -> String {
    format!(
        "SELECT {USER_COLUMNS}, {COUNTER_COLUMNS}, \
         (SELECT COUNT(*) FROM credentials c WHERE c.user_id = u.id AND c.kind = 'fido2' AND c.state = 'active') AS fido2_keys \
         FROM users u LEFT JOIN throttle tu ON tu.key = $2 LEFT JOIN throttle tw ON tw.key = $3 \
         WHERE u.id = $1"
    )
}

fn finish_sql() -> String {
    format!(
        "SELECT c.nonce AS c_nonce, c.user_id AS c_user_id, c.workstation AS c_workstation, c.purpose AS c_purpose, \
         c.webauthn AS c_webauthn, c.expires_at AS c_expires_at, c.used_at AS c_used_at, \
         {USER_COLUMNS}, {COUNTER_COLUMNS}, cr.user_id AS cr_user_id, cr.counter AS cr_counter \
         FROM challenges c LEFT JOIN users u ON u.id = c.user_id \
         LEFT JOIN throttle tu ON tu.key = 'user:' || c.user_id LEFT JOIN throttle tw ON tw.key = $2 \
         LEFT JOIN credentials cr ON cr.id = $3 AND cr.kind = 'card' AND cr.state = 'active' \
         WHERE c.id = $1"
    )
}

/// The columns both engines' rows are read through.
trait Columns {
    fn text(&self, name: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, name: &str) -> Result<Option<i64>, StoreError>;
    fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

impl Columns for AnyRow {
    fn text(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get::<Option<String>, _>(name)?)
    }
    fn int(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get::<Option<i64>, _>(name)?)
    }
    fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.try_get::<Option<Vec<u8>>, _>(name)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get::<_, Option<String>>(name)?)
    }
    fn int(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.get::<_, Option<i64>>(name)?)
    }
    fn blob(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get::<_, Option<Vec<u8>>>(name)?)
    }
}

fn required<T>(v: Option<T>, what: &str) -> Result<T, StoreError> {
    v.ok_or_else(|| StoreError::Corrupt(format!("{what} is NULL")))
}

fn begin_local(
    conn: &rusqlite::Connection,
    user: &str,
    user_key: &str,
    ws_key: &str,
) -> Result<BeginView, StoreError> {
    let mut stmt = conn.prepare_cached(&begin_sql())?;
    let mut rows =
        stmt.query(rusqlite::named_params! { "$1": user, "$2": user_key, "$3": ws_key })?;
    match rows.next()? {
        Some(row) => begin_view(row),
        None => Ok(BeginView {
            user: None,
            counter: Counter::default(),
            bucket: Counter::default(),
            has_fido2: false,
        }),
    }
}

fn begin_view(row: &impl Columns) -> Result<BeginView, StoreError> {
    Ok(BeginView {
        user: user_of(row)?,
        counter: counter_of(row, "tu")?,
        bucket: counter_of(row, "tw")?,
        has_fido2: row.int("fido2_keys")?.unwrap_or(0) > 0,
    })
}

async fn begin_sqlx<'e, E>(
    db: E,
    user: &str,
    user_key: &str,
    ws_key: &str,
) -> Result<BeginView, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(sqlx::AssertSqlSafe(begin_sql()))
        .bind(user)
        .bind(user_key)
        .bind(ws_key)
        .fetch_optional(db)
        .await?;
    let Some(row) = row else {
        return Ok(BeginView {
            user: None,
            counter: Counter::default(),
            bucket: Counter::default(),
            has_fido2: false,
        });
    };
    begin_view(&row)
}

/// finish's read: the challenge with the checks of
/// [`super::challenge::peek`], its user, the counters and the enrollment of
/// the card presented (`card_id`). `ws_key` is the workstation's throttle
/// key. On a SQLite file it runs in place ([`crate::store::FastReader`]).
pub async fn for_finish(
    store: &Store,
    challenge_id: &str,
    workstation: &str,
    ws_key: &str,
    card_id: Option<&str>,
    now_ms: i64,
) -> Result<FinishView, ChallengeError> {
    if challenge_id.len() != 32 || !challenge_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ChallengeError::Unknown);
    }
    match store.fast() {
        Some(fast) => {
            let card = card_id.unwrap_or("");
            let view = fast.with(|conn| {
                let mut stmt = conn.prepare_cached(&finish_sql())?;
                let mut rows = stmt.query(
                    rusqlite::named_params! { "$1": challenge_id, "$2": ws_key, "$3": card },
                )?;
                match rows.next()? {
                    Some(row) => finish_view(row, challenge_id, workstation, now_ms).map(Some),
                    None => Ok(None),
                }
            })?;
            view.ok_or(ChallengeError::Unknown)?
        }
        None => {
            finish_sqlx(
                store.reader(),
                challenge_id,
                workstation,
                ws_key,
                card_id,
                now_ms,
            )
            .await
        }
    }
}

async fn finish_sqlx<'e, E>(
    db: E,
    challenge_id: &str,
    workstation: &str,
    ws_key: &str,
    card_id: Option<&str>,
    now_ms: i64,
) -> Result<FinishView, ChallengeError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let row = sqlx::query(sqlx::AssertSqlSafe(finish_sql()))
        .bind(challenge_id)
        .bind(ws_key)
        .bind(card_id.unwrap_or(""))
        .fetch_optional(db)
        .await?
        .ok_or(ChallengeError::Unknown)?;
    finish_view(&row, challenge_id, workstation, now_ms)?
}

/// The view of a finish's row; `Err` (inside `Ok`) for a challenge that
/// cannot be used, with the reason.
fn finish_view(
    row: &impl Columns,
    challenge_id: &str,
    workstation: &str,
    now_ms: i64,
) -> Result<Result<FinishView, ChallengeError>, StoreError> {
    let owner = required(row.text("c_workstation")?, "challenge workstation")?;
    let used = row.int("c_used_at")?;
    let expires = required(row.int("c_expires_at")?, "challenge expiry")?;
    if owner != workstation {
        return Ok(Err(ChallengeError::OtherWorkstation));
    }
    if used.is_some() {
        return Ok(Err(ChallengeError::Used));
    }
    if expires < now_ms {
        return Ok(Err(ChallengeError::Expired));
    }
    let nonce = required(row.blob("c_nonce")?, "challenge nonce")?;
    let purpose = required(row.text("c_purpose")?, "challenge purpose")?;
    let challenge = Challenge {
        id: challenge_id.to_owned(),
        nonce: <[u8; 32]>::try_from(nonce.as_slice())
            .map_err(|_| StoreError::Corrupt("challenge nonce is not 32 bytes".into()))?,
        user: required(row.text("c_user_id")?, "challenge user")?,
        workstation: owner,
        purpose: purpose
            .parse::<Purpose>()
            .map_err(|_| StoreError::Corrupt("challenge purpose".into()))?,
        expires_at_ms: expires,
        webauthn: row.text("c_webauthn")?,
    };
    let card = match row.text("cr_user_id")? {
        Some(user) => Some(crate::credentials::EnrolledCard {
            user,
            pin_protected: row.int("cr_counter")? == Some(1),
        }),
        None => None,
    };
    Ok(Ok(FinishView {
        challenge,
        user: user_of(row)?,
        counter: counter_of(row, "tu")?,
        bucket: counter_of(row, "tw")?,
        card,
    }))
}
