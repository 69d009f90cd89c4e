//! Records entered by proxy (代行入力) and their confirmation (R-AUTH-5,
//! R-REC-1, R-REC-2).
//!
//! - **register**: a workstation registers a record's digest with the
//!   inputter's ticket (the inputter is authenticated) and the intended
//!   confirmer. The record is `pending`.
//! - **pending / get**: what waits for a confirmer; one record.
//! - **decide**: the confirmer's fresh `confirm` ticket, whose `op` names the
//!   record and the verdict, turns the record `confirmed` or `rejected` and
//!   yields a confirmation signed with the ticket key, binding the digest,
//!   both persons, both times and the factors each used.
//!
//! Nothing else changes a record's state: no timer, housekeeping job,
//! setting or policy. Each change and its audit entry commit together; the
//! change is a conditional UPDATE, so a record is decided once, on any
//! replica. A confirmer who is also the inputter is refused unless the
//! policy's `[records] self_confirmation = "allow"`.

use clinauth_policy::{Purpose, SelfConfirmation};
use clinauth_proto::confirmation::{self, Party};
use clinauth_proto::records::{
    Digest, Operation, RecordId, RecordState, RecordView, Summary, Verdict, MAX_LISTED,
};
use clinauth_proto::ticket::{self, Claims};
use clinauth_proto::workstation::RegisterRecordRequest;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::KeyPair;
use serde_json::json;
use sqlx::Row;

use crate::audit::{self, Event};
use crate::auth::service::AuthService;
use crate::directory::{self, UserState, Workstation};
use crate::store::{Store, StoreError};

/// How old a confirmer's `confirm` ticket may be when it decides a record:
/// the confirmation follows the authentication at once.
pub const DECIDE_WITHIN_S: i64 = 300;

/// Why a record operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The ticket does not prove what the operation needs.
    #[error("ticket refused: {0}")]
    Ticket(String),
    /// A user named is unknown or not active.
    #[error("user {0} is unknown or not active")]
    User(String),
    /// No such record.
    #[error("no such record")]
    NotFound,
    /// The user is not the record's confirmer.
    #[error("only the record's confirmer may decide it")]
    NotConfirmer,
    /// The inputter tried to confirm their own record (R-AUTH-5).
    #[error("the person who entered a record cannot confirm it: another person must (R-AUTH-5)")]
    SelfConfirmation,
    /// Already confirmed or rejected.
    #[error("the record is already {0}")]
    Decided(&'static str),
    /// No policy is active.
    #[error("no policy is active")]
    NoPolicy,
    /// Storage failed.
    #[error("storage: {0}")]
    Store(String),
}

impl RecordError {
    /// A stable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            RecordError::Invalid(_) => "invalid_request",
            RecordError::Ticket(_) => "ticket_refused",
            RecordError::User(_) => "unknown_user",
            RecordError::NotFound => "not_found",
            RecordError::NotConfirmer => "not_confirmer",
            RecordError::SelfConfirmation => "self_confirmation",
            RecordError::Decided(_) => "already_decided",
            RecordError::NoPolicy => "no_policy",
            RecordError::Store(_) => "internal",
        }
    }
}

impl From<StoreError> for RecordError {
    fn from(e: StoreError) -> Self {
        RecordError::Store(e.to_string())
    }
}

impl From<sqlx::Error> for RecordError {
    fn from(e: sqlx::Error) -> Self {
        RecordError::Store(e.to_string())
    }
}

fn random_hex() -> Result<String, RecordError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RecordError::Store("no randomness available".into()))?;
    Ok(hex::encode(bytes))
}

const COLUMNS: &str = "id, digest, summary, inputter, confirmer, workstation, entered_at, state, \
                       decided_at, confirmation, inputter_auth";

fn from_row(row: &sqlx::any::AnyRow) -> Result<(RecordView, String), RecordError> {
    let bad = |what: &str| RecordError::Store(format!("stored record has a malformed {what}"));
    let id: String = row.try_get("id")?;
    let digest: String = row.try_get("digest")?;
    let summary: String = row.try_get("summary")?;
    let state: String = row.try_get("state")?;
    let decided_at: Option<i64> = row.try_get("decided_at")?;
    let entered_at: i64 = row.try_get("entered_at")?;
    let view = RecordView {
        id: RecordId::new(&id).map_err(|_| bad("ID"))?,
        digest: Digest::parse(&digest).map_err(|_| bad("digest"))?,
        summary: Summary::new(&summary).map_err(|_| bad("summary"))?,
        inputter: row.try_get("inputter")?,
        confirmer: row.try_get("confirmer")?,
        entered_at_workstation: row.try_get("workstation")?,
        entered_at: entered_at / 1000,
        state: RecordState::parse(&state).ok_or_else(|| bad("state"))?,
        decided_at: decided_at.map(|ms| ms / 1000),
        confirmation: row.try_get("confirmation")?,
    };
    Ok((view, row.try_get("inputter_auth")?))
}

/// Verifies one of this server's tickets for use at `ws` now.
fn verified_ticket(
    auth: &AuthService,
    ws: &Workstation,
    token: &str,
    now_s: i64,
) -> Result<Claims, RecordError> {
    let claims = ticket::verify(token, auth.keys.ticket.public_key().as_ref(), now_s)
        .map_err(|e| RecordError::Ticket(e.to_string()))?;
    if claims.iss != auth.settings.issuer {
        return Err(RecordError::Ticket("issued by another server".into()));
    }
    if claims.ws != ws.id {
        return Err(RecordError::Ticket("issued at another workstation".into()));
    }
    if claims.offline {
        return Err(RecordError::Ticket("decided offline".into()));
    }
    Ok(claims)
}

fn party(claims: &Claims) -> Party {
    Party {
        user: claims.sub.clone(),
        ws: claims.ws.clone(),
        auth_time: claims.iat,
        factors: claims.factors.clone(),
        rule: claims.rule.clone(),
        ticket: claims.jti.clone(),
    }
}

async fn active_user(auth: &AuthService, id: &str) -> Result<(), RecordError> {
    directory::check_id("user", id).map_err(|e| RecordError::Invalid(e.to_string()))?;
    match directory::user(&auth.store, id).await? {
        Some(user) if user.state == UserState::Active => Ok(()),
        _ => Err(RecordError::User(id.chars().take(64).collect())),
    }
}

fn self_confirmation(auth: &AuthService) -> Result<SelfConfirmation, RecordError> {
    Ok(auth
        .policy
        .get()
        .ok_or(RecordError::NoPolicy)?
        .self_confirmation())
}

/// Writes a refusal to the audit log (R-LOG-1: every attempt).
async fn audit_refusal(
    auth: &AuthService,
    ws: &Workstation,
    action: &str,
    actor: &str,
    target: Option<String>,
    error: &RecordError,
    now_ms: i64,
) -> Result<(), RecordError> {
    let event = Event {
        at_ms: now_ms,
        actor: if actor.is_empty() {
            ws.id.clone()
        } else {
            actor.to_owned()
        },
        workstation: Some(ws.id.clone()),
        action: action.into(),
        target,
        outcome: "refused".into(),
        detail: json!({ "error": error.code(), "message": error.to_string() }),
    };
    audit::record(&auth.store, &auth.keys.audit, &event)
        .await
        .map_err(|e| RecordError::Store(e.to_string()))?;
    Ok(())
}

/// Registers a record entered by the ticket's user on behalf of
/// `req.confirmer`. Refusals are audited.
pub async fn register(
    auth: &AuthService,
    ws: &Workstation,
    req: &RegisterRecordRequest,
    now_ms: i64,
) -> Result<RecordView, RecordError> {
    let claims = verified_ticket(auth, ws, &req.inputter_ticket, now_ms / 1000);
    // A refusal names the inputter when the ticket at least was good.
    let actor = claims.as_ref().map(|c| c.sub.clone()).unwrap_or_default();
    let result = match claims {
        Ok(claims) => register_inner(auth, ws, req, claims, now_ms).await,
        Err(e) => Err(e),
    };
    if let Err(e) = &result {
        let target = Some(req.confirmer.chars().take(64).collect());
        audit_refusal(auth, ws, "record.register", &actor, target, e, now_ms).await?;
    }
    result
}

async fn register_inner(
    auth: &AuthService,
    ws: &Workstation,
    req: &RegisterRecordRequest,
    claims: Claims,
    now_ms: i64,
) -> Result<RecordView, RecordError> {
    if !matches!(
        claims.purpose,
        Purpose::Login | Purpose::Unlock | Purpose::StepUp
    ) {
        return Err(RecordError::Ticket(format!(
            "a {} ticket does not authenticate an inputter",
            claims.purpose.as_str()
        )));
    }
    active_user(auth, &claims.sub).await?;
    active_user(auth, &req.confirmer).await?;
    if claims.sub == req.confirmer && self_confirmation(auth)? == SelfConfirmation::Refuse {
        return Err(RecordError::SelfConfirmation);
    }
    let inputter = party(&claims);
    let inputter_json =
        serde_json::to_string(&inputter).map_err(|e| RecordError::Store(e.to_string()))?;
    let id = random_hex()?;
    let mut tx = auth.store.begin().await?;
    sqlx::query(
        "INSERT INTO records (id, digest, summary, inputter, inputter_auth, confirmer, workstation, \
         entered_at, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')",
    )
    .bind(&id)
    .bind(req.digest.to_string())
    .bind(req.summary.as_str())
    .bind(&claims.sub)
    .bind(&inputter_json)
    .bind(&req.confirmer)
    .bind(&ws.id)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        auth.store.backend(),
        &auth.keys.audit,
        &Event {
            at_ms: now_ms,
            actor: claims.sub.clone(),
            workstation: Some(ws.id.clone()),
            action: "record.register".into(),
            target: Some(id.clone()),
            outcome: "ok".into(),
            detail: json!({
                "digest": req.digest.to_string(),
                "summary": req.summary.as_str(),
                "confirmer": req.confirmer,
                "inputter": inputter,
            }),
        },
    )
    .await
    .map_err(|e| RecordError::Store(e.to_string()))?;
    tx.commit().await?;
    Ok(RecordView {
        id: RecordId::new(&id).map_err(|e| RecordError::Store(e.0.into()))?,
        digest: req.digest.clone(),
        summary: req.summary.clone(),
        inputter: claims.sub,
        confirmer: req.confirmer.clone(),
        entered_at_workstation: ws.id.clone(),
        entered_at: now_ms / 1000,
        state: RecordState::Pending,
        decided_at: None,
        confirmation: None,
    })
}

/// The records waiting for `confirmer`, oldest first, and whether more wait.
pub async fn pending(
    store: &Store,
    confirmer: &str,
) -> Result<(Vec<RecordView>, bool), RecordError> {
    directory::check_id("user", confirmer).map_err(|e| RecordError::Invalid(e.to_string()))?;
    let limit = i64::try_from(MAX_LISTED + 1).unwrap_or(i64::MAX);
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM records WHERE confirmer = $1 AND state = 'pending' \
         ORDER BY entered_at, id LIMIT $2"
    )))
    .bind(confirmer)
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(from_row(row)?.0);
    }
    let truncated = out.len() > MAX_LISTED;
    out.truncate(MAX_LISTED);
    Ok((out, truncated))
}

/// Every record in `state` (all when `None`), oldest first, for officers.
pub async fn list(
    store: &Store,
    state: Option<RecordState>,
    limit: i64,
) -> Result<Vec<RecordView>, RecordError> {
    let limit = limit.clamp(1, 1000);
    let rows = match state {
        Some(state) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM records WHERE state = $1 ORDER BY entered_at, id LIMIT $2"
            )))
            .bind(state.as_str())
            .bind(limit)
            .fetch_all(store.pool())
            .await?
        }
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM records ORDER BY entered_at, id LIMIT $1"
            )))
            .bind(limit)
            .fetch_all(store.pool())
            .await?
        }
    };
    rows.iter().map(|r| from_row(r).map(|(v, _)| v)).collect()
}

/// One record.
pub async fn get(store: &Store, id: &RecordId) -> Result<RecordView, RecordError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM records WHERE id = $1"
    )))
    .bind(id.as_str())
    .fetch_optional(store.pool())
    .await?
    .ok_or(RecordError::NotFound)?;
    Ok(from_row(&row)?.0)
}

/// Whether `user` may decide `record` now: at `begin`, so that nobody is
/// asked for a PIN to decide what they cannot.
pub async fn check_decidable(
    auth: &AuthService,
    user: &str,
    record: &RecordId,
) -> Result<(), RecordError> {
    let view = get(&auth.store, record).await?;
    decidable(auth, &view, user)
}

fn decidable(auth: &AuthService, view: &RecordView, user: &str) -> Result<(), RecordError> {
    match view.state {
        RecordState::Pending => {}
        RecordState::Confirmed => return Err(RecordError::Decided("confirmed")),
        RecordState::Rejected => return Err(RecordError::Decided("rejected")),
    }
    if view.confirmer != user {
        return Err(RecordError::NotConfirmer);
    }
    if view.inputter == user && self_confirmation(auth)? == SelfConfirmation::Refuse {
        return Err(RecordError::SelfConfirmation);
    }
    Ok(())
}

/// Decides a record with the confirmer's fresh `confirm` ticket. Refusals
/// are audited.
pub async fn decide(
    auth: &AuthService,
    ws: &Workstation,
    token: &str,
    now_ms: i64,
) -> Result<RecordView, RecordError> {
    let result = decide_inner(auth, ws, token, now_ms).await;
    if let Err(e) = &result {
        // Named after the ticket's user and record when the ticket is good.
        let claims = verified_ticket(auth, ws, token, now_ms / 1000).ok();
        let actor = claims.as_ref().map(|c| c.sub.clone()).unwrap_or_default();
        let target = claims.and_then(|c| match c.op {
            Some(Operation::Confirm { record, .. }) => Some(record.to_string()),
            _ => None,
        });
        audit_refusal(auth, ws, "record.decide", &actor, target, e, now_ms).await?;
    }
    result
}

async fn decide_inner(
    auth: &AuthService,
    ws: &Workstation,
    token: &str,
    now_ms: i64,
) -> Result<RecordView, RecordError> {
    let now_s = now_ms / 1000;
    let claims = verified_ticket(auth, ws, token, now_s)?;
    let Some(Operation::Confirm { record, verdict }) = claims.op.clone() else {
        return Err(RecordError::Ticket(
            "not a confirm ticket for a record".into(),
        ));
    };
    if claims.purpose != Purpose::Confirm {
        return Err(RecordError::Ticket("not a confirm ticket".into()));
    }
    if now_s - claims.iat > DECIDE_WITHIN_S {
        return Err(RecordError::Ticket(
            "the confirmer's authentication is too old: authenticate again".into(),
        ));
    }
    active_user(auth, &claims.sub).await?;
    let policy = auth.policy.get().ok_or(RecordError::NoPolicy)?;

    let mut tx = auth.store.begin().await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM records WHERE id = $1"
    )))
    .bind(record.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(RecordError::NotFound)?;
    let (view, inputter_json) = from_row(&row)?;
    decidable(auth, &view, &claims.sub)?;
    let inputter: Party = serde_json::from_str(&inputter_json)
        .map_err(|_| RecordError::Store("stored inputter is malformed".into()))?;
    let confirmer = party(&claims);
    let statement = confirmation::Claims {
        iss: auth.settings.issuer.clone(),
        record: record.clone(),
        digest: view.digest.clone(),
        verdict,
        inputter: inputter.clone(),
        entered_at: view.entered_at,
        confirmer: confirmer.clone(),
        decided_at: now_s,
        policy_version: policy.version(),
        policy_digest: policy.digest().to_string(),
        jti: random_hex()?,
    };
    let signed = confirmation::sign(&statement, &auth.keys.ticket, &auth.keys.ticket_kid)
        .map_err(|e| RecordError::Store(e.to_string()))?;
    let state = match verdict {
        Verdict::Confirm => RecordState::Confirmed,
        Verdict::Reject => RecordState::Rejected,
    };
    let confirmer_json =
        serde_json::to_string(&confirmer).map_err(|e| RecordError::Store(e.to_string()))?;
    let done = sqlx::query(
        "UPDATE records SET state = $1, decided_at = $2, confirmer_auth = $3, confirmation = $4 \
         WHERE id = $5 AND state = 'pending'",
    )
    .bind(state.as_str())
    .bind(now_ms)
    .bind(&confirmer_json)
    .bind(&signed)
    .bind(record.as_str())
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(RecordError::Decided("decided"));
    }
    audit::append(
        &mut tx,
        auth.store.backend(),
        &auth.keys.audit,
        &Event {
            at_ms: now_ms,
            actor: claims.sub.clone(),
            workstation: Some(ws.id.clone()),
            action: format!("record.{}", verdict.as_str()),
            target: Some(record.to_string()),
            outcome: "ok".into(),
            detail: json!({
                "digest": view.digest.to_string(),
                "inputter": inputter,
                "confirmer": confirmer,
                "entered_at": view.entered_at,
                "confirmation": statement.jti,
                "policy_digest": statement.policy_digest,
            }),
        },
    )
    .await
    .map_err(|e| RecordError::Store(e.to_string()))?;
    tx.commit().await?;
    Ok(RecordView {
        state,
        decided_at: Some(now_s),
        confirmation: Some(signed),
        ..view
    })
}
