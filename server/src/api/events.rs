//! `POST /v1/events`: the agent's spooled audit events (R-LOG-1, R-OFF-1),
//! stored exactly once in the server's audit log.
//!
//! Each event becomes one audit entry (action `agent.<kind>`, the
//! workstation from its certificate, the agent's time and sequence number
//! in the detail), appended in the same transaction as its row in
//! `agent_events`, whose key (workstation, stream, seq) makes a replay
//! impossible to store twice. Events at or below the highest sequence
//! number already stored for the stream are replays: ignored and
//! acknowledged. A gap (events the workstation lost) is accepted and
//! recorded as an `agent.events_gap` entry, so the loss is visible in the
//! log. The answer says the highest sequence number stored; the agent drops
//! its events up to it. Uploads of one workstation are serialised by its
//! row lock (PostgreSQL) or the single writer (SQLite).
//!
//! An offline decision flagged for review (break-glass) becomes a pending
//! review item, as an online one does.

use super::workstation::{auth_error, workstation, PeerFingerprint, WorkstationApi};
use super::{parse_json, read_body, ApiError};
use crate::audit::{self, Event};
use crate::auth::{AuthError, AuthService};
use crate::directory::{self, Workstation};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use clinauth_proto::events::{AgentEventRecord, EventAck, EventBatch, MAX_EVENTS_BODY_BYTES};
use serde_json::json;
use sqlx::Row;

/// The routes, merged into the workstation router.
pub fn routes() -> Router<WorkstationApi> {
    Router::new().route("/v1/events", post(upload))
}

async fn upload(
    State(api): State<WorkstationApi>,
    peer: Option<Extension<PeerFingerprint>>,
    body: Body,
) -> Result<Json<EventAck>, ApiError> {
    let ws = workstation(&api, peer.as_ref().map(|e| &e.0), "agent.events").await?;
    let now_ms = api.auth.clock.now_ms();
    let result = async {
        let body = read_body(body, MAX_EVENTS_BODY_BYTES).await?;
        let batch: EventBatch = parse_json(&body)?;
        batch
            .check()
            .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m))?;
        store_batch(&api.auth, &ws, &batch, now_ms).await
    }
    .await;
    match result {
        Ok(ack) => Ok(Json(ack)),
        Err(e) => {
            if e.status.is_client_error() && e.status != StatusCode::CONFLICT {
                let event = Event {
                    at_ms: now_ms,
                    actor: ws.id.clone(),
                    workstation: Some(ws.id.clone()),
                    action: "agent.events".into(),
                    target: None,
                    outcome: "refused".into(),
                    detail: json!({ "error": e.body.error, "message": e.body.message }),
                };
                if let Err(err) = audit::record(&api.auth.store, &api.auth.keys.audit, &event).await
                {
                    return Err(auth_error(AuthError::Store(err.to_string())));
                }
            }
            Err(e)
        }
    }
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    auth_error(AuthError::Store(e.to_string()))
}

fn entry_of(ws: &Workstation, stream: &str, e: &AgentEventRecord, now_ms: i64) -> Event {
    Event {
        at_ms: now_ms,
        actor: e
            .user
            .clone()
            .unwrap_or_else(|| format!("workstation:{}", ws.id)),
        workstation: Some(ws.id.clone()),
        action: format!("agent.{}", e.kind),
        target: None,
        outcome: e.outcome.clone(),
        detail: json!({
            "stream": stream,
            "seq": e.seq,
            "agent_at_ms": e.at_ms,
            "purpose": e.purpose,
            "peer": e.peer,
            "service": e.service,
            "detail": e.detail,
            "offline": e.offline,
            "rule": e.rule,
            "factors": e.factors,
            "review": e.review,
        }),
    }
}

/// Stores the new events of `batch` and returns the acknowledgement.
pub async fn store_batch(
    auth: &AuthService,
    ws: &Workstation,
    batch: &EventBatch,
    now_ms: i64,
) -> Result<EventAck, ApiError> {
    let mut tx = auth.store.begin().await.map_err(store_error)?;
    // The workstation's row lock first: it serialises this workstation's
    // uploads on PostgreSQL, and comes before the audit lock (auth::service).
    directory::touch_workstation_in(&mut tx, &ws.id, now_ms)
        .await
        .map_err(store_error)?;
    let high: i64 = sqlx::query(
        "SELECT COALESCE(MAX(seq), 0) AS high FROM agent_events WHERE workstation = $1 AND stream = $2",
    )
    .bind(&ws.id)
    .bind(&batch.stream)
    .fetch_one(&mut *tx)
    .await
    .and_then(|row| row.try_get("high"))
    .map_err(store_error)?;
    let high = u64::try_from(high).unwrap_or(0);
    let mut expected = high.saturating_add(1);
    let mut stored = 0u32;
    let mut top = high;
    for e in batch.events.iter().filter(|e| e.seq > high) {
        let seq = i64::try_from(e.seq).map_err(|_| store_error("seq out of range"))?;
        if e.seq > expected {
            audit::append(
                &mut tx,
                auth.store.backend(),
                &auth.keys.audit,
                &Event {
                    at_ms: now_ms,
                    actor: format!("workstation:{}", ws.id),
                    workstation: Some(ws.id.clone()),
                    action: "agent.events_gap".into(),
                    target: None,
                    outcome: "gap".into(),
                    detail: json!({
                        "stream": batch.stream,
                        "missing_from": expected,
                        "missing_to": e.seq - 1,
                    }),
                },
            )
            .await
            .map_err(store_error)?;
        }
        let entry = audit::append(
            &mut tx,
            auth.store.backend(),
            &auth.keys.audit,
            &entry_of(ws, &batch.stream, e, now_ms),
        )
        .await
        .map_err(store_error)?;
        let inserted = sqlx::query(
            "INSERT INTO agent_events (workstation, stream, seq, at_ms, received_at, audit_seq) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&ws.id)
        .bind(&batch.stream)
        .bind(seq)
        .bind(e.at_ms)
        .bind(now_ms)
        .bind(entry.seq)
        .execute(&mut *tx)
        .await;
        if let Err(err) = inserted {
            if let sqlx::Error::Database(db) = &err {
                if db.is_unique_violation() {
                    // Another upload of the same events won the race: the
                    // agent retries and gets the acknowledgement.
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "conflict",
                        "these events are being stored by another request; retry",
                    ));
                }
            }
            return Err(store_error(err));
        }
        if e.review && e.outcome == "allow" {
            if let (Some(user), Some(purpose), Some(rule)) = (&e.user, e.purpose, &e.rule) {
                let id = format!("offline:{}:{}:{}", ws.id, batch.stream, e.seq);
                crate::review::create(
                    &mut tx,
                    &crate::review::NewReview {
                        id: &id,
                        user,
                        workstation: &ws.id,
                        purpose: purpose.as_str(),
                        rule,
                        factors: &e.factors,
                        audit_seq: entry.seq,
                    },
                    now_ms,
                )
                .await
                .map_err(store_error)?;
            }
        }
        expected = e.seq.saturating_add(1);
        top = e.seq;
        stored += 1;
    }
    tx.commit().await.map_err(store_error)?;
    Ok(EventAck {
        stream: batch.stream.clone(),
        stored_up_to: top,
        stored,
    })
}
