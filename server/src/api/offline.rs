//! `POST /v1/offline/bundle` (R-OFF-1): after an online login the agent
//! presents the ticket it has just been issued and gets a server-signed
//! offline bundle for that user at that workstation (see
//! `clinauth_proto::offline` and `docs/agent-protocol.md`).
//!
//! The ticket must be this server's, issued to this workstation, online,
//! at most [`TICKET_MAX_AGE_S`] old, and not used for a bundle before (the
//! `offline_bundles` table keeps each ticket's `jti` once). The user must
//! still be active. The bundle holds only what the policy allows offline
//! for the user's roles at the workstation's group: the rules with
//! `[rule.offline] allowed`, each with its combinations that can be
//! verified offline (card + card PIN, FIDO2 with UV), and the user's
//! currently valid cards and active FIDO2 credentials. Rules that require an
//! HPKI qualification are left out (the agent does not check it offline).
//! With nothing to allow the answer has no bundle, and the agent forgets
//! any it holds. Issue and refusal are audited (`offline.bundle`).

use super::workstation::{auth_error, workstation, PeerFingerprint, WorkstationApi};
use super::{parse_json, read_body, ApiError};
use crate::audit::{self, Event};
use crate::auth::{AuthError, AuthService};
use crate::directory::{self, UserState, Workstation};
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use clinauth_factors::card::KeyUse;
use clinauth_policy::{Policy, Purpose, UnixTime};
use clinauth_proto::offline::{
    self, BundleCard, BundleClaims, BundleFido2, BundleRequest, BundleResponse, OfflineRule,
    BUNDLE_VERSION, MAX_BUNDLE_CARDS, MAX_BUNDLE_FIDO2, MAX_BUNDLE_REQUEST_BYTES,
    MAX_FIDO2_CREDENTIAL_LEN,
};
use clinauth_proto::ticket;
use clinauth_proto::workstation::B64;
use ring::signature::KeyPair;
use serde_json::json;
use sqlx::Row;

/// The oldest ticket that gets a bundle, seconds.
pub const TICKET_MAX_AGE_S: i64 = 300;

/// The routes, merged into the workstation router.
pub fn routes() -> Router<WorkstationApi> {
    Router::new().route("/v1/offline/bundle", post(bundle))
}

fn refused(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

async fn bundle(
    State(api): State<WorkstationApi>,
    peer: Option<Extension<PeerFingerprint>>,
    body: Body,
) -> Result<Json<BundleResponse>, ApiError> {
    let ws = workstation(&api, peer.as_ref().map(|e| &e.0), "offline.bundle").await?;
    let now_ms = api.auth.clock.now_ms();
    let mut user = None;
    let result = async {
        let body = read_body(body, MAX_BUNDLE_REQUEST_BYTES).await?;
        let req: BundleRequest = parse_json(&body)?;
        issue(&api.auth, &ws, &req.ticket, now_ms, &mut user).await
    }
    .await;
    match result {
        Ok(answer) => Ok(Json(answer)),
        Err(e) => {
            if e.status != StatusCode::INTERNAL_SERVER_ERROR {
                let event = Event {
                    at_ms: now_ms,
                    actor: user.unwrap_or_else(|| "unknown".into()),
                    workstation: Some(ws.id.clone()),
                    action: "offline.bundle".into(),
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

/// The rules of `policy` that let a user with `roles` work offline at
/// `group`, each with its combinations that can be verified offline.
pub fn offline_rules(
    policy: &Policy,
    roles: clinauth_policy::RoleSet,
    group: &str,
) -> Vec<OfflineRule> {
    let Some(group) = policy.group_id(group) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rule in policy.rules() {
        let Some(limits) = rule.offline else { continue };
        if !rule.groups.contains(group)
            || !rule.roles.intersects(roles)
            || !rule.qualifications.is_empty()
        {
            continue;
        }
        let combinations: Vec<Vec<String>> = rule
            .combinations
            .iter()
            .map(|c| c.factors().iter().map(|k| k.name().to_owned()).collect())
            .filter(|c: &Vec<String>| offline::is_offline_combination(c))
            .collect();
        let purposes: Vec<Purpose> = Purpose::ALL
            .into_iter()
            .filter(|p| rule.purposes.contains(*p))
            .collect();
        if combinations.is_empty() || purposes.is_empty() {
            continue;
        }
        out.push(OfflineRule {
            name: rule.name.clone(),
            purposes,
            combinations,
            max_age: limits.max_age.0,
            idle_lock: rule.session.idle_lock.0,
            review: rule.review,
            fido2_aaguids: rule.fido2_aaguids.iter().map(|a| a.to_string()).collect(),
        });
        if out.len() == offline::MAX_BUNDLE_RULES {
            break;
        }
    }
    out
}

async fn cards(auth: &AuthService, user: &str, now_s: i64) -> Result<Vec<BundleCard>, ApiError> {
    let rows = sqlx::query(
        "SELECT public_data, counter FROM credentials WHERE user_id = $1 AND kind = 'card' AND state = 'active' ORDER BY id",
    )
    .bind(user)
    .fetch_all(auth.store.reader())
    .await
    .map_err(store_error)?;
    let mut out = Vec::new();
    for row in rows {
        let der: Option<Vec<u8>> = row.try_get("public_data").map_err(store_error)?;
        let pin: i64 = row.try_get("counter").map_err(store_error)?;
        let Some(der) = der else { continue };
        // Only a card that would pass online now: chain, validity, revocation.
        if let Err(e) =
            auth.verifiers
                .card_trust
                .verify(&der, &[], KeyUse::Authentication, UnixTime(now_s))
        {
            tracing::info!(user, error = %e, "card left out of the offline bundle");
            continue;
        }
        let Some(certificate) = B64::new(der) else {
            continue;
        };
        out.push(BundleCard {
            certificate,
            pin_protected: pin == 1,
        });
        if out.len() == MAX_BUNDLE_CARDS {
            break;
        }
    }
    Ok(out)
}

async fn fido2(
    auth: &AuthService,
    user: &str,
    now_s: i64,
) -> Result<(Vec<BundleFido2>, Option<String>), ApiError> {
    let Some(verifier) = auth.verifiers.fido2.as_ref() else {
        return Ok((Vec::new(), None));
    };
    let stored = crate::credentials::fido2_credentials(&auth.store, user)
        .await
        .map_err(store_error)?;
    let mut keys = Vec::new();
    let mut out = Vec::new();
    for (_, credential) in stored.into_iter().take(MAX_BUNDLE_FIDO2) {
        let Ok(text) = credential.to_json() else {
            continue;
        };
        if text.len() > MAX_FIDO2_CREDENTIAL_LEN {
            continue;
        }
        out.push(BundleFido2 {
            credential: text,
            aaguid: credential.aaguid().map(|a| a.to_string()),
        });
        keys.push(credential);
    }
    if keys.is_empty() {
        return Ok((Vec::new(), None));
    }
    // The relying party ID, as the verifier puts it in its requests.
    let rp_id = verifier
        .start_authentication(&keys, UnixTime(now_s))
        .ok()
        .and_then(|c| serde_json::from_str::<serde_json::Value>(&c.client_options).ok())
        .and_then(|v| v["publicKey"]["rpId"].as_str().map(str::to_owned));
    match rp_id {
        Some(rp_id) => Ok((out, Some(rp_id))),
        None => Ok((Vec::new(), None)),
    }
}

async fn issue(
    auth: &AuthService,
    ws: &Workstation,
    token: &str,
    now_ms: i64,
    who: &mut Option<String>,
) -> Result<BundleResponse, ApiError> {
    let now_s = now_ms / 1000;
    let kid = auth.keys.ticket_kid.clone();
    let invalid = |m: &str| refused(StatusCode::FORBIDDEN, "ticket_invalid", m);
    let claims = ticket::verify(token, auth.keys.ticket.public_key().as_ref(), now_s)
        .map_err(|e| invalid(&e.to_string()))?;
    *who = Some(claims.sub.chars().take(64).collect());
    if claims.iss != auth.settings.issuer || claims.offline {
        return Err(invalid("the ticket is not an online ticket of this server"));
    }
    if claims.ws != ws.id {
        return Err(invalid("the ticket was issued to another workstation"));
    }
    if now_s.saturating_sub(claims.iat) > TICKET_MAX_AGE_S {
        return Err(invalid("the ticket is too old to get an offline bundle"));
    }
    let user = match directory::user(&auth.store, &claims.sub)
        .await
        .map_err(store_error)?
    {
        Some(u) if u.state == UserState::Active => u,
        _ => {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "user_refused",
                "the user is unknown, suspended or disabled",
            ))
        }
    };
    let policy = auth
        .policy
        .get()
        .ok_or_else(|| auth_error(AuthError::NoPolicy))?;
    let rules = offline_rules(&policy, policy.role_set(&user.roles), &ws.group);
    let wants = |f: &str| {
        rules
            .iter()
            .flat_map(|r| r.combinations.iter())
            .any(|c| c.iter().any(|x| x == f))
    };
    let cards = if wants("smartcard") {
        cards(auth, &user.id, now_s).await?
    } else {
        Vec::new()
    };
    let (fido2, fido2_rp_id) = if wants("fido2_uv") {
        fido2(auth, &user.id, now_s).await?
    } else {
        (Vec::new(), None)
    };
    let none = |reason: &str| BundleResponse {
        bundle: None,
        reason: Some(reason.to_owned()),
        kid: kid.clone(),
    };
    let answer_none = if rules.is_empty() {
        Some(none(
            "no rule allows this user offline use at this workstation",
        ))
    } else if cards.is_empty() && fido2.is_empty() {
        Some(none(
            "the user has no enrolled card or FIDO2 key that can be used offline",
        ))
    } else {
        None
    };
    if let Some(answer) = answer_none {
        let event = Event {
            at_ms: now_ms,
            actor: user.id.clone(),
            workstation: Some(ws.id.clone()),
            action: "offline.bundle".into(),
            target: None,
            outcome: "none".into(),
            detail: json!({ "ticket": claims.jti, "reason": answer.reason }),
        };
        audit::record(&auth.store, &auth.keys.audit, &event)
            .await
            .map_err(store_error)?;
        return Ok(answer);
    }
    let longest = rules
        .iter()
        .map(|r| i64::from(r.max_age))
        .max()
        .unwrap_or(0);
    let bundle = BundleClaims {
        v: BUNDLE_VERSION,
        iss: auth.settings.issuer.clone(),
        sub: user.id.clone(),
        ws: ws.id.clone(),
        // Offline age counts from the online login, as the policy says.
        iat: claims.iat,
        exp: claims.iat.saturating_add(longest),
        ticket_jti: claims.jti.clone(),
        policy_version: policy.version(),
        policy_digest: policy.digest().to_string(),
        cards,
        fido2,
        fido2_rp_id,
        rules,
    };
    let signed = offline::sign(&bundle, &auth.keys.ticket, &kid)
        .map_err(|e| store_error(format!("signing the offline bundle: {e}")))?;

    let mut tx = auth.store.begin().await.map_err(store_error)?;
    let inserted = sqlx::query(
        "INSERT INTO offline_bundles (ticket_jti, user_id, workstation, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&claims.jti)
    .bind(&user.id)
    .bind(&ws.id)
    .bind(now_ms)
    .bind(bundle.exp.saturating_mul(1000))
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return Err(refused(
                    StatusCode::CONFLICT,
                    "ticket_used",
                    "this ticket has already been used for an offline bundle",
                ));
            }
        }
        return Err(store_error(e));
    }
    // Row lock before the audit lock (see auth::service).
    directory::touch_workstation_in(&mut tx, &ws.id, now_ms)
        .await
        .map_err(store_error)?;
    audit::append(
        &mut tx,
        auth.store.backend(),
        &auth.keys.audit,
        &Event {
            at_ms: now_ms,
            actor: user.id.clone(),
            workstation: Some(ws.id.clone()),
            action: "offline.bundle".into(),
            target: None,
            outcome: "issued".into(),
            detail: json!({
                "ticket": claims.jti,
                "rules": bundle.rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
                "cards": bundle.cards.len(),
                "fido2": bundle.fido2.len(),
                "expires_at": bundle.exp,
                "policy_digest": bundle.policy_digest,
            }),
        },
    )
    .await
    .map_err(store_error)?;
    tx.commit().await.map_err(store_error)?;
    Ok(BundleResponse {
        bundle: Some(signed),
        reason: None,
        kid,
    })
}
