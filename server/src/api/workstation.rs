//! The workstation API (R-TLS-2): only a registered, active workstation,
//! identified by the certificate it presented in the mutual-TLS handshake,
//! may begin or finish an authentication.

use super::{method_not_allowed, not_found, parse_json, read_body, ApiError};
use crate::auth::{AuthError, AuthService};
use crate::directory::{self, DeviceState, Workstation};
use crate::metrics::Metrics;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use clinauth_proto::workstation::{
    AccountRequest, AccountResponse, BeginRequest, BeginResponse, FinishRequest, FinishResponse,
    MAX_BODY_BYTES,
};
use std::sync::Arc;

/// The SHA-256 (hex) of the client certificate of the connection, put into
/// every request's extensions by the TLS layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFingerprint(pub String);

/// How long a connection may reuse its workstation's directory row before
/// reading it again. A change made through this server (officer API,
/// `Officer`) takes effect at once (see [`invalidate_workstations`]); one
/// made on another replica or by `clinauthctl` within this time.
pub const WORKSTATION_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

static WORKSTATION_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Makes every connection read its workstation again before its next
/// request (after a workstation's state, group or registration changed).
pub fn invalidate_workstations() {
    WORKSTATION_GENERATION.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// The workstation row a TLS connection last read, when, and under which
/// generation; one per connection, put into every request's extensions by
/// the TLS layer. Keyed by the connection's certificate, which cannot
/// change during the connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionCache(Arc<std::sync::Mutex<Option<(Workstation, std::time::Instant, u64)>>>);

impl ConnectionCache {
    fn get(&self) -> Option<Workstation> {
        let generation = WORKSTATION_GENERATION.load(std::sync::atomic::Ordering::SeqCst);
        let slot = self.0.lock().ok()?;
        match slot.as_ref() {
            Some((ws, at, g)) if *g == generation && at.elapsed() < WORKSTATION_RECHECK => {
                Some(ws.clone())
            }
            _ => None,
        }
    }

    fn put(&self, ws: &Workstation, generation: u64) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((ws.clone(), std::time::Instant::now(), generation));
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct WorkstationApi {
    /// The flow.
    pub auth: AuthService,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
}

/// The router: `POST /v1/auth/begin`, `POST /v1/auth/finish`,
/// `POST /v1/auth/account`.
pub fn router(api: WorkstationApi) -> Router {
    Router::new()
        .route("/v1/auth/begin", post(begin))
        .route("/v1/auth/finish", post(finish))
        .route("/v1/auth/account", post(account))
        .merge(super::offline::routes())
        .merge(super::events::routes())
        .merge(super::records::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

pub(super) fn auth_error(e: AuthError) -> ApiError {
    let status = match &e {
        AuthError::Invalid(_) => StatusCode::BAD_REQUEST,
        AuthError::Workstation(_)
        | AuthError::User
        | AuthError::NoRule(_)
        | AuthError::Operation(_) => StatusCode::FORBIDDEN,
        AuthError::NoPolicy => StatusCode::SERVICE_UNAVAILABLE,
        AuthError::Locked => StatusCode::LOCKED,
        AuthError::RetryAfter(_) => StatusCode::TOO_MANY_REQUESTS,
        AuthError::Challenge(_) => StatusCode::CONFLICT,
        AuthError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = match &e {
        // Internal details go to the log, not to the client.
        AuthError::Store(detail) => {
            tracing::error!(error = %detail, "authentication failed on storage");
            "internal error".to_owned()
        }
        other => other.to_string(),
    };
    let mut err = ApiError::new(status, e.code(), message);
    if let AuthError::RetryAfter(s) = e {
        err.retry_after = Some(s);
    }
    err
}

/// The registered, active workstation of the connection; a refusal is
/// audited (R-LOG-1: every attempt, including from unknown machines).
pub(super) async fn workstation(
    api: &WorkstationApi,
    peer: Option<&PeerFingerprint>,
    action: &str,
) -> Result<Workstation, ApiError> {
    workstation_cached(api, peer, None, action).await
}

/// [`workstation`], reusing the row the connection read less than
/// [`WORKSTATION_RECHECK`] ago (and not invalidated since).
pub(crate) async fn workstation_cached(
    api: &WorkstationApi,
    peer: Option<&PeerFingerprint>,
    cache: Option<&ConnectionCache>,
    action: &str,
) -> Result<Workstation, ApiError> {
    if let (Some(_), Some(ws)) = (peer, cache.and_then(ConnectionCache::get)) {
        return Ok(ws);
    }
    let generation = WORKSTATION_GENERATION.load(std::sync::atomic::Ordering::SeqCst);
    let result = registered(api, peer).await;
    if let (Ok(ws), Some(cache)) = (&result, cache) {
        cache.put(ws, generation);
    }
    if let Err(e) = &result {
        if e.body.error == "workstation_refused" {
            let event = crate::audit::Event {
                at_ms: api.auth.clock.now_ms(),
                actor: "unknown".into(),
                workstation: Some(match peer {
                    Some(fp) => format!("cert:{}", fp.0.chars().take(64).collect::<String>()),
                    None => "no-certificate".into(),
                }),
                action: action.into(),
                target: None,
                outcome: "refused".into(),
                detail: serde_json::json!({ "error": "workstation_refused" }),
            };
            if let Err(err) =
                crate::audit::record(&api.auth.store, &api.auth.keys.audit, &event).await
            {
                tracing::error!(error = %err, "could not audit a refused workstation");
                return Err(auth_error(AuthError::Store(err.to_string())));
            }
        }
    }
    result
}

async fn registered(
    api: &WorkstationApi,
    peer: Option<&PeerFingerprint>,
) -> Result<Workstation, ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "workstation_refused",
            "this workstation certificate is not registered or not active",
        )
    };
    // No fingerprint means the connection did not come through mutual TLS:
    // refuse rather than guess.
    let peer = peer.ok_or_else(refused)?;
    let ws = directory::workstation_by_cert(&api.auth.store, &peer.0)
        .await
        .map_err(|e| auth_error(e.into()))?
        .ok_or_else(refused)?;
    if ws.state != DeviceState::Active {
        return Err(refused());
    }
    Ok(ws)
}

/// An account check: the refusals a login would meet (unknown, suspended or
/// locked-out user, no rule here) as an answer, not an error, so that PAM's
/// `acct_mgmt` can show the reason.
async fn account(
    State(api): State<WorkstationApi>,
    peer: Option<Extension<PeerFingerprint>>,
    cache: Option<Extension<ConnectionCache>>,
    body: Body,
) -> Result<Json<AccountResponse>, ApiError> {
    let ws = workstation_cached(
        &api,
        peer.as_ref().map(|e| &e.0),
        cache.as_ref().map(|e| &e.0),
        "auth.account",
    )
    .await?;
    let body = read_body(body, MAX_BODY_BYTES).await?;
    let req: AccountRequest = parse_json(&body)?;
    match api.auth.account(&ws, &req, api.auth.clock.now_ms()).await {
        Ok(()) => Ok(Json(AccountResponse {
            allowed: true,
            reason: None,
            reason_ja: None,
        })),
        Err(
            e @ (AuthError::User
            | AuthError::NoRule(_)
            | AuthError::Locked
            | AuthError::RetryAfter(_)),
        ) => {
            let (reason, reason_ja) = match &e {
                AuthError::User => (
                    "the user is unknown, suspended or disabled".to_owned(),
                    "利用者が存在しないか、無効です",
                ),
                AuthError::NoRule(_) => (
                    e.to_string(),
                    "この端末ではこの利用者に許可された認証方法がありません",
                ),
                _ => (e.to_string(), "失敗が続いたため一時的にロックされています"),
            };
            Ok(Json(AccountResponse {
                allowed: false,
                reason: Some(reason),
                reason_ja: Some(reason_ja.into()),
            }))
        }
        Err(e) => Err(auth_error(e)),
    }
}

async fn begin(
    State(api): State<WorkstationApi>,
    peer: Option<Extension<PeerFingerprint>>,
    cache: Option<Extension<ConnectionCache>>,
    body: Body,
) -> Result<Json<BeginResponse>, ApiError> {
    let result = async {
        let ws = workstation_cached(
            &api,
            peer.as_ref().map(|e| &e.0),
            cache.as_ref().map(|e| &e.0),
            "auth.begin",
        )
        .await?;
        let body = read_body(body, MAX_BODY_BYTES).await?;
        let req: BeginRequest = parse_json(&body)?;
        api.auth
            .begin(&ws, &req, api.auth.clock.now_ms())
            .await
            .map_err(auth_error)
    }
    .await;
    api.metrics.count_begin(result.is_ok());
    result.map(Json)
}

async fn finish(
    State(api): State<WorkstationApi>,
    peer: Option<Extension<PeerFingerprint>>,
    cache: Option<Extension<ConnectionCache>>,
    body: Body,
) -> Result<Json<FinishResponse>, ApiError> {
    let started = std::time::Instant::now();
    let result = async {
        let ws = workstation_cached(
            &api,
            peer.as_ref().map(|e| &e.0),
            cache.as_ref().map(|e| &e.0),
            "auth.finish",
        )
        .await?;
        let body = read_body(body, MAX_BODY_BYTES).await?;
        let req: FinishRequest = parse_json(&body)?;
        api.auth
            .finish(&ws, &req, api.auth.clock.now_ms())
            .await
            .map_err(auth_error)
    }
    .await;
    api.metrics.count_finish(&result, started.elapsed());
    result.map(Json)
}
