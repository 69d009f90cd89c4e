//! The workstation API's record routes (R-AUTH-5, R-REC-1/2), over mutual
//! TLS like every workstation call; the flow is in [`crate::records`].
//!
//! - `POST /v1/records/register` ([`RegisterRecordRequest`]) → the record;
//! - `POST /v1/records/pending` ([`PendingRecordsRequest`]) → [`RecordList`];
//! - `POST /v1/records/get` ([`GetRecordRequest`]) → the record;
//! - `POST /v1/records/decide` ([`DecideRecordRequest`]) → the decided
//!   record with its signed confirmation.

use super::workstation::{workstation, PeerFingerprint, WorkstationApi};
use super::{parse_json, read_body, ApiError};
use crate::records::{self, RecordError};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use clinauth_proto::records::RecordView;
use clinauth_proto::workstation::{
    DecideRecordRequest, GetRecordRequest, PendingRecordsRequest, RecordList, RegisterRecordRequest,
};

/// The largest record request body (a ticket and a summary).
pub const MAX_RECORD_BODY_BYTES: usize = 32 * 1024;

/// The routes, merged into the workstation router.
pub fn routes() -> Router<WorkstationApi> {
    Router::new()
        .route("/v1/records/register", post(register))
        .route("/v1/records/pending", post(pending))
        .route("/v1/records/get", post(get))
        .route("/v1/records/decide", post(decide))
}

fn record_error(e: RecordError) -> ApiError {
    let status = match &e {
        RecordError::Invalid(_) => StatusCode::BAD_REQUEST,
        RecordError::Ticket(_) => StatusCode::UNAUTHORIZED,
        RecordError::User(_) | RecordError::NotConfirmer | RecordError::SelfConfirmation => {
            StatusCode::FORBIDDEN
        }
        RecordError::NotFound => StatusCode::NOT_FOUND,
        RecordError::Decided(_) => StatusCode::CONFLICT,
        RecordError::NoPolicy => StatusCode::SERVICE_UNAVAILABLE,
        RecordError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = match &e {
        RecordError::Store(detail) => {
            tracing::error!(error = %detail, "record operation failed on storage");
            "internal error".to_owned()
        }
        other => other.to_string(),
    };
    ApiError::new(status, e.code(), message)
}

async fn register(
    State(api): State<WorkstationApi>,
    peer: Option<Extension<PeerFingerprint>>,
    body: Body,
) -> Result<Json<RecordView>, ApiError> {
    let ws = workstation(&api, peer.as_ref().map(|e| &e.0), "record.register").await?;
    let body = read_body(body, MAX_RECORD_BODY_BYTES).await?;
    let req: RegisterRecordRequest = parse_json(&body)?;
    records::register(&api.auth, &ws, &req, api.auth.clock.now_ms())
        .await
        .map(Json)
        .map_err(record_error)
}

async fn pending(
    State(api): State<WorkstationApi>,
    peer: Option<Extension<PeerFingerprint>>,
    body: Body,
) -> Result<Json<RecordList>, ApiError> {
    workstation(&api, peer.as_ref().map(|e| &e.0), "record.pending").await?;
    let body = read_body(body, MAX_RECORD_BODY_BYTES).await?;
    let req: PendingRecordsRequest = parse_json(&body)?;
    let (records, truncated) = records::pending(&api.auth.store, &req.confirmer)
        .await
        .map_err(record_error)?;
    Ok(Json(RecordList { records, truncated }))
}

async fn get(
    State(api): State<WorkstationApi>,
    peer: Option<Extension<PeerFingerprint>>,
    body: Body,
) -> Result<Json<RecordView>, ApiError> {
    workstation(&api, peer.as_ref().map(|e| &e.0), "record.get").await?;
    let body = read_body(body, MAX_RECORD_BODY_BYTES).await?;
    let req: GetRecordRequest = parse_json(&body)?;
    records::get(&api.auth.store, &req.record)
        .await
        .map(Json)
        .map_err(record_error)
}

async fn decide(
    State(api): State<WorkstationApi>,
    peer: Option<Extension<PeerFingerprint>>,
    body: Body,
) -> Result<Json<RecordView>, ApiError> {
    let ws = workstation(&api, peer.as_ref().map(|e| &e.0), "record.decide").await?;
    let body = read_body(body, MAX_RECORD_BODY_BYTES).await?;
    let req: DecideRecordRequest = parse_json(&body)?;
    records::decide(&api.auth, &ws, &req.ticket, api.auth.clock.now_ms())
        .await
        .map(Json)
        .map_err(record_error)
}
