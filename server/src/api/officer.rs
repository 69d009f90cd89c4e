//! The officer API: the directory, devices, policies and the audit trail,
//! for security officers.
//!
//! Officers authenticate with ClinAuth itself: a `step_up` authentication
//! at an officer workstation, decided by the policy like any login, gives a
//! signed ticket, which is sent as `Authorization: Bearer <ticket>`. The server accepts it
//! when the signature is its own, the ticket is unexpired, and the user is
//! active and holds one of the configured officer roles. The first officer
//! is created on the server host with `clinauthctl` (direct database access).

use super::{method_not_allowed, not_found, parse_json, read_body, ApiError};
use crate::audit;
use crate::auth::AuthService;
use crate::clock;
use crate::directory::{self, DeviceState, UserState};
use crate::metrics::Metrics;
use crate::officer::{Officer, OfficerError};
use crate::policy_store;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clinauth_proto::ticket;
use ring::signature::KeyPair;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// Bodies of the officer API are small; policies are the largest.
pub const MAX_OFFICER_BODY: usize = 1024 * 1024 + 4096;

/// What the handlers share.
#[derive(Clone)]
pub struct OfficerApi {
    /// The flow (store, keys, policy).
    pub auth: AuthService,
    /// Roles whose holders may use this API.
    pub officer_roles: Arc<Vec<String>>,
    /// FIDO2 keys must verify the user at registration.
    pub fido2_require_uv: bool,
    /// Counters for /metrics.
    pub metrics: Arc<Metrics>,
}

/// The router.
pub fn router(api: OfficerApi) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/users", get(list_users).post(add_user))
        .route("/v1/users/{id}/state", post(user_state))
        .route("/v1/users/{id}/roles", post(user_roles))
        .route("/v1/users/{id}/unlock", post(unlock))
        .route("/v1/users/{id}/badges", post(add_badge))
        .route("/v1/users/{id}/pin", post(set_pin))
        .route("/v1/users/{id}/totp", post(provision_totp))
        .route("/v1/users/{id}/cards", post(enroll_card))
        .route("/v1/users/{id}/biometric", post(biometric_begin))
        .route(
            "/v1/users/{id}/biometric/{enrollment}",
            post(biometric_finish),
        )
        .route("/v1/users/{id}/fido2", post(fido2_begin))
        .route("/v1/users/{id}/fido2/{enrollment}", post(fido2_finish))
        .route(
            "/v1/workstations",
            get(list_workstations).post(add_workstation),
        )
        .route("/v1/workstations/{id}/state", post(workstation_state))
        .route("/v1/devices", get(list_devices))
        .route("/v1/devices/{id}/state", post(device_state))
        .route("/v1/policies", get(policies).post(activate_policy))
        .route("/v1/audit", get(audit_page))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/officer/reviews", get(list_reviews))
        .route("/v1/officer/reviews/{id}", post(close_review))
        .merge(super::console::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

/// An authenticated officer.
struct Caller(String);

async fn caller(api: &OfficerApi, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("send Authorization: Bearer <ticket>"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| unauthorized("send Authorization: Bearer <ticket>"))?;
    let now = clock::now().0;
    let claims = ticket::verify(token, api.auth.keys.ticket.public_key().as_ref(), now)
        .map_err(|e| unauthorized(&e.to_string()))?;
    // Officer powers need a deliberate, fresh step-up (decided by the policy's
    // officer rule), not the ticket of an everyday login at a ward.
    if claims.purpose != clinauth_policy::Purpose::StepUp {
        return Err(unauthorized("use a ticket from a step_up authentication"));
    }
    let user = directory::user(&api.auth.store, &claims.sub)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        })?
        .filter(|u| u.state == UserState::Active)
        .ok_or_else(|| unauthorized("the ticket's user is not active"))?;
    if !user.roles.iter().any(|r| api.officer_roles.contains(r)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "not a security officer",
        ));
    }
    Ok(Caller(user.id))
}

fn officer_error(e: OfficerError) -> ApiError {
    use crate::store::StoreError;
    match e {
        OfficerError::Directory(crate::directory::DirectoryError::Invalid(i)) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", i.to_string())
        }
        OfficerError::Directory(crate::directory::DirectoryError::Store(StoreError::Exists(w))) => {
            ApiError::new(
                StatusCode::CONFLICT,
                "exists",
                format!("{w} already exists"),
            )
        }
        OfficerError::Directory(crate::directory::DirectoryError::Store(StoreError::NotFound(
            w,
        ))) => ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{w} not found")),
        OfficerError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m),
        other => {
            tracing::error!(error = %other, "officer operation failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "officer API failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

fn officer<'a>(api: &'a OfficerApi, who: &'a Caller) -> Officer<'a> {
    Officer {
        store: &api.auth.store,
        key: &api.auth.keys.audit,
        actor: &who.0,
    }
}

async fn body_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = read_body(body, MAX_OFFICER_BODY).await?;
    parse_json(&bytes)
}

async fn metrics(State(api): State<OfficerApi>, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&api, &headers).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
        .into_response())
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../../../docs/openapi.json"),
    )
        .into_response()
}

async fn list_users(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller(&api, &headers).await?;
    let users = directory::users(&api.auth.store).await.map_err(internal)?;
    Ok(Json(json!({ "users": users })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    id: String,
    display_name: String,
    #[serde(default)]
    roles: Vec<String>,
}

async fn add_user(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = caller(&api, &headers).await?;
    let req: NewUser = body_json(body).await?;
    let user = officer(&api, &who)
        .add_user(&req.id, &req.display_name, &req.roles, clock::now_ms())
        .await
        .map_err(officer_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "user": user }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    state: String,
}

async fn user_state(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let who = caller(&api, &headers).await?;
    let req: StateBody = body_json(body).await?;
    let state: UserState = req.state.parse().map_err(|e: directory::InvalidInput| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
    })?;
    officer(&api, &who)
        .set_user_state(&id, state, clock::now_ms())
        .await
        .map_err(officer_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<String>,
}

async fn user_roles(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let who = caller(&api, &headers).await?;
    let req: RolesBody = body_json(body).await?;
    officer(&api, &who)
        .set_user_roles(&id, &req.roles, clock::now_ms())
        .await
        .map_err(officer_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unlock(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let who = caller(&api, &headers).await?;
    officer(&api, &who)
        .unlock_user(&id, clock::now_ms())
        .await
        .map_err(officer_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BadgeBody {
    /// The UID in hex.
    uid: String,
}

async fn add_badge(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = caller(&api, &headers).await?;
    let req: BadgeBody = body_json(body).await?;
    let uid = crate::hex::decode(&req.uid, 10).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "uid must be hex",
        )
    })?;
    let device = officer(&api, &who)
        .register_badge(&id, &uid, clock::now_ms())
        .await
        .map_err(officer_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "device": device }))))
}

fn enroller<'a>(
    api: &'a OfficerApi,
    who: &'a Caller,
) -> Result<crate::credentials::Enroller<'a>, ApiError> {
    Ok(crate::credentials::Enroller {
        store: &api.auth.store,
        audit: &api.auth.keys.audit,
        data: api
            .auth
            .keys
            .data
            .first()
            .ok_or_else(|| internal("no data key"))?,
        actor: &who.0,
    })
}

fn credential_error(e: crate::credentials::CredentialError) -> ApiError {
    use crate::credentials::CredentialError;
    match e {
        CredentialError::PinPolicy(m) => ApiError::new(StatusCode::BAD_REQUEST, "pin_policy", m),
        CredentialError::NoUser(u) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("user {u} not found"),
        ),
        CredentialError::Crypto(m) if m.starts_with("card certificate refused") => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "card_refused", m)
        }
        other => internal(other),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    pin: clinauth_proto::SecretString,
}

/// Sets a user's server PIN (at an enrollment desk, typed by the user).
async fn set_pin(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let who = caller(&api, &headers).await?;
    let req: PinBody = body_json(body).await?;
    let pin = clinauth_factors::pin::SecretPin::from_text(req.pin.expose())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "pin_policy", e.to_string()))?;
    enroller(&api, &who)?
        .pin(&id, &pin, clock::now_ms())
        .await
        .map_err(credential_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Provisions a TOTP seed; the answer is the only time the secret is shown.
async fn provision_totp(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    use base64::Engine;
    let who = caller(&api, &headers).await?;
    let (uri, png) = enroller(&api, &who)?
        .totp(&id, clock::now_ms())
        .await
        .map_err(credential_error)?;
    let body = json!({
        "otpauth_uri": uri.as_str(),
        "qr_png_base64": base64::engine::general_purpose::STANDARD.encode(png.as_slice()),
    });
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CardBody {
    /// The PIV authentication certificate (slot 9A), DER, base64url.
    certificate: clinauth_proto::workstation::B64<16384>,
    /// The card key needs the card PIN (PIV 9A: always).
    #[serde(default = "yes")]
    pin_protected: bool,
}

fn yes() -> bool {
    true
}

/// Enrolls a smartcard certificate to a user after checking it chains to a
/// configured CA and is not revoked.
async fn enroll_card(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let who = caller(&api, &headers).await?;
    let req: CardBody = body_json(body).await?;
    enroller(&api, &who)?
        .card(
            &id,
            &req.certificate.0,
            &api.auth.verifiers.card_trust,
            req.pin_protected,
            clock::now_ms(),
        )
        .await
        .map_err(credential_error)?;
    Ok(StatusCode::CREATED)
}

/// Starts a fingerprint enrollment: the nonce and the matcher's public key
/// go to the registered reader, which seals the capture to them.
async fn biometric_begin(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    use base64::Engine;
    let who = caller(&api, &headers).await?;
    let (enrollment, nonce) = enroller(&api, &who)?
        .biometric_begin(&id, clock::now_ms())
        .await
        .map_err(credential_error)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "enrollment": enrollment,
            "nonce": b64.encode(nonce),
            "matcher_public_key": b64.encode(api.auth.keys.matcher.public_key().as_bytes()),
        })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BiometricBody {
    /// The reader's sealed capture (base64url).
    capture: clinauth_proto::workstation::B64<8192>,
    /// Which finger (0–9).
    #[serde(default)]
    slot: u8,
}

async fn biometric_finish(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path((id, enrollment)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let who = caller(&api, &headers).await?;
    let req: BiometricBody = body_json(body).await?;
    if req.slot > 9 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "slot is 0 to 9",
        ));
    }
    enroller(&api, &who)?
        .biometric_finish(
            &api.auth.keys.matcher,
            &id,
            &enrollment,
            req.slot,
            &req.capture.0,
            clock::now_ms(),
        )
        .await
        .map_err(|e| match e {
            crate::credentials::CredentialError::Crypto(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "biometric_refused", m)
            }
            other => credential_error(other),
        })?;
    Ok(StatusCode::CREATED)
}

fn fido2_verifier(api: &OfficerApi) -> Result<&clinauth_factors::fido2::Fido2Verifier, ApiError> {
    api.auth.verifiers.fido2.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "fido2_disabled",
            "FIDO2 is not enabled on this server",
        )
    })
}

/// Starts registering a FIDO2 key for a user: the options go to the
/// enrollment station's browser or client, which answers with the key's response.
async fn fido2_begin(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = caller(&api, &headers).await?;
    let verifier = fido2_verifier(&api)?;
    let user = directory::user(&api.auth.store, &id)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("user {id} not found"),
            )
        })?;
    let (enrollment, options) = enroller(&api, &who)?
        .fido2_begin(
            verifier,
            &user.id,
            &user.display_name,
            api.fido2_require_uv,
            clock::now_ms(),
        )
        .await
        .map_err(credential_error)?;
    let options: Value = serde_json::from_str(&options).map_err(internal)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "enrollment": enrollment, "options": options })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fido2FinishBody {
    /// The key's registration response (`RegisterPublicKeyCredential` JSON).
    response: Value,
}

async fn fido2_finish(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path((id, enrollment)): Path<(String, String)>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = caller(&api, &headers).await?;
    let verifier = fido2_verifier(&api)?;
    let req: Fido2FinishBody = body_json(body).await?;
    let registered = enroller(&api, &who)?
        .fido2_finish(
            verifier,
            &id,
            &enrollment,
            &req.response.to_string(),
            clock::now_ms(),
        )
        .await
        .map_err(|e| match e {
            crate::credentials::CredentialError::Crypto(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "fido2_refused", m)
            }
            other => credential_error(other),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "credential": crate::hex::encode(&registered.credential_id),
            "aaguid": registered.aaguid.map(|a| clinauth_policy::Aaguid(a).to_string()),
            "user_verified": registered.user_verified_at_registration,
            "attested": registered.attested_by_allowed_ca,
        })),
    ))
}

async fn list_workstations(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller(&api, &headers).await?;
    let list = directory::workstations(&api.auth.store)
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "workstations": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWorkstation {
    id: String,
    cert_sha256: String,
    group: String,
    #[serde(default)]
    location: String,
}

async fn add_workstation(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = caller(&api, &headers).await?;
    let req: NewWorkstation = body_json(body).await?;
    let ws = officer(&api, &who)
        .add_workstation(
            &req.id,
            &req.cert_sha256,
            &req.group,
            &req.location,
            clock::now_ms(),
        )
        .await
        .map_err(officer_error)?;
    Ok((StatusCode::CREATED, Json(json!({ "workstation": ws }))))
}

fn device_state_of(text: &str) -> Result<DeviceState, ApiError> {
    text.parse().map_err(|e: directory::InvalidInput| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
    })
}

async fn workstation_state(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let who = caller(&api, &headers).await?;
    let req: StateBody = body_json(body).await?;
    officer(&api, &who)
        .set_workstation_state(&id, device_state_of(&req.state)?, clock::now_ms())
        .await
        .map_err(officer_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_devices(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller(&api, &headers).await?;
    let list = crate::officer::device_listing(&api.auth.store)
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "devices": list })))
}

async fn device_state(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let who = caller(&api, &headers).await?;
    let req: StateBody = body_json(body).await?;
    officer(&api, &who)
        .set_device_state(&id, device_state_of(&req.state)?, clock::now_ms())
        .await
        .map_err(officer_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn policies(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller(&api, &headers).await?;
    let history = policy_store::history(&api.auth.store)
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "policies": history })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    /// The policy file's text (TOML).
    text: String,
}

async fn activate_policy(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = caller(&api, &headers).await?;
    let req: PolicyBody = body_json(body).await?;
    match api
        .auth
        .policy
        .activate(
            &api.auth.store,
            &api.auth.keys.audit,
            &req.text,
            &who.0,
            clock::now_ms(),
        )
        .await
    {
        Ok(p) => Ok((
            StatusCode::CREATED,
            Json(json!({ "version": p.version(), "digest": p.digest().to_string() })),
        )
            .into_response()),
        Err(policy_store::PolicyStoreError::Invalid(clinauth_policy::PolicyError::Invalid(v))) => {
            let violations: Vec<Value> = v
                .iter()
                .map(|x| {
                    json!({
                        "code": x.code.as_str(),
                        "rule": x.rule,
                        "combination": x.combination,
                        "en": x.en,
                        "ja": x.ja,
                    })
                })
                .collect();
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": "policy_refused",
                    "message": format!("the policy breaks {} rule(s)", violations.len()),
                    "violations": violations,
                })),
            )
                .into_response())
        }
        Err(policy_store::PolicyStoreError::Invalid(other)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_policy",
            other.to_string(),
        )),
        Err(e @ policy_store::PolicyStoreError::Version { .. }) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "version",
            e.to_string(),
        )),
        Err(e) => Err(internal(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

async fn audit_page(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller(&api, &headers).await?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = q.limit.clamp(1, 1000);
    let entries = audit::page(&api.auth.store, q.after.max(0), limit)
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "entries": entries })))
}

async fn audit_verify(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller(&api, &headers).await?;
    let report = audit::verify(&api.auth.store, api.auth.keys.audit.public_key())
        .await
        .map_err(internal)?;
    let breaks: Vec<String> = report.breaks.iter().map(|b| b.to_string()).collect();
    Ok(Json(json!({
        "intact": report.is_intact(),
        "entries": report.entries,
        "head": report.head.map(|(seq, hash)| json!({ "seq": seq, "hash": audit::hex(&hash) })),
        "breaks": breaks,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewQuery {
    /// `pending` (default), `closed` or `all`.
    #[serde(default = "pending")]
    state: String,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn pending() -> String {
    "pending".into()
}

/// The break-glass review queue (R-EMERG-1), oldest first.
async fn list_reviews(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    query: Result<Query<ReviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller(&api, &headers).await?;
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let state =
        match q.state.as_str() {
            "all" => None,
            other => Some(other.parse::<crate::review::ReviewState>().map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string())
            })?),
        };
    let items = crate::review::list(&api.auth.store, state, q.limit)
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "reviews": items })))
}

/// A review's body is small: an outcome and a note of at most 2,000 bytes.
const MAX_REVIEW_BODY: usize = 8 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    /// `justified` or `unjustified`.
    outcome: String,
    /// What the officer found.
    note: String,
}

/// Closes a pending review item.
async fn close_review(
    State(api): State<OfficerApi>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    use crate::officer::ReviewCloseError;
    use crate::review::ReviewError;
    let who = caller(&api, &headers).await?;
    let bytes = read_body(body, MAX_REVIEW_BODY).await?;
    let req: ReviewBody = parse_json(&bytes)?;
    let outcome: crate::review::Outcome = req.outcome.parse().map_err(|e: ReviewError| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
    })?;
    let item = officer(&api, &who)
        .close_review(&id, outcome, &req.note, clock::now_ms())
        .await
        .map_err(|e| match e {
            ReviewCloseError::Review(ReviewError::Invalid(m)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m)
            }
            ReviewCloseError::Review(e @ ReviewError::NotFound(_)) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
            }
            ReviewCloseError::Review(e @ ReviewError::Closed(_)) => {
                ApiError::new(StatusCode::CONFLICT, "review_closed", e.to_string())
            }
            ReviewCloseError::Review(e @ ReviewError::Own) => {
                ApiError::new(StatusCode::FORBIDDEN, "own_review", e.to_string())
            }
            other => internal(other),
        })?;
    let _ = item;
    let closed = crate::review::get(&api.auth.store, &id)
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "review": closed })))
}
