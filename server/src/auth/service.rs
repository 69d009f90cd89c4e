//! Begin and finish, the two calls of the workstation API.
//!
//! Each call is one read (`auth::lookup`: the user or the challenge with
//! its user, the failure counters and, for a card, its enrollment), then
//! verification (which may hash a PIN for 13 ms) and the decision, then one
//! [`commit::Plan`] of writes handed to the group-commit writer
//! (`auth::commit`), which uses the challenge (exactly once, on any
//! replica), updates the counters, records the workstation's contact and
//! appends the audit entry in one transaction with other requests' plans,
//! and answers only once that transaction is durable.

use super::challenge::{self, ChallengeError};
use super::evidence::{self, Verified};
use super::throttle;
use super::{commit, lookup, operation};
use crate::audit::{self, Event};
use crate::directory::{self, DeviceState, User, UserState, Workstation};
use crate::keys::Keys;
use crate::policy_store::ActivePolicy;
use crate::store::{Store, StoreError};
use clinauth_policy::{
    Connectivity, Context, Decision, Factor, FailureLimits, Policy, Purpose, UnixTime,
};
use clinauth_proto::records::Operation;
use clinauth_proto::ticket::{self, Claims};
use clinauth_proto::workstation::{
    BeginRequest, BeginResponse, EvidenceItem, FinishRequest, FinishResponse, B64, MAX_EVIDENCE,
};
use serde_json::json;
use std::sync::Arc;

/// Settings of the flow.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `iss` of tickets.
    pub issuer: String,
    /// Challenge lifetime, ms.
    pub challenge_ttl_ms: i64,
    /// Ticket lifetime, seconds.
    pub ticket_ttl_s: i64,
}

/// The flow's shared state.
#[derive(Clone)]
pub struct AuthService {
    /// Storage.
    pub store: Store,
    /// The policy every decision uses.
    pub policy: ActivePolicy,
    /// The server's keys.
    pub keys: Arc<Keys>,
    /// Settings.
    pub settings: Arc<AuthSettings>,
    /// Bounds Argon2id hashes in flight (memory under a login storm).
    pub hashing: Arc<super::hashing::Hashing>,
    /// Factor verifiers' configuration (trust anchors, matcher key, data keys).
    pub verifiers: Arc<evidence::Verifiers>,
    /// The group-commit writer every decision's writes go through.
    pub commits: commit::Committer,
    /// The clock the request handlers read.
    pub clock: crate::clock::Clock,
}

/// Why a call could not be answered with a decision. Every one of these is
/// a refusal: nothing here lets anyone in.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The workstation is not active (R-TLS-2, R-DEV-1).
    #[error("workstation {0} is not active")]
    Workstation(String),
    /// The request is malformed.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The user is unknown, suspended or disabled.
    #[error("user refused")]
    User,
    /// No policy is active.
    #[error("no active policy")]
    NoPolicy,
    /// No rule allows this purpose here for this user.
    #[error("no rule allows {0} for this user at this workstation")]
    NoRule(Purpose),
    /// Locked after too many failures (R-RATE-1); an officer can unlock.
    #[error("locked after too many failed attempts; ask a security officer")]
    Locked,
    /// Too soon after a failure (R-RATE-1).
    #[error("too many failed attempts; retry after {0} s")]
    RetryAfter(u32),
    /// The operation cannot be done by this user (a record that is not
    /// theirs to confirm, their own record, one already decided).
    #[error("{0}")]
    Operation(String),
    /// The challenge cannot be used.
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    /// Storage or audit failed.
    #[error("storage: {0}")]
    Store(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        AuthError::Store(e.to_string())
    }
}

impl From<sqlx::Error> for AuthError {
    fn from(e: sqlx::Error) -> Self {
        AuthError::Store(e.to_string())
    }
}

impl From<audit::AuditError> for AuthError {
    fn from(e: audit::AuditError) -> Self {
        AuthError::Store(e.to_string())
    }
}

impl AuthError {
    /// A stable code for the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Workstation(_) => "workstation_refused",
            AuthError::Invalid(_) => "invalid_request",
            AuthError::User => "user_refused",
            AuthError::NoPolicy => "no_policy",
            AuthError::NoRule(_) => "no_rule",
            AuthError::Locked => "locked",
            AuthError::RetryAfter(_) => "retry_later",
            AuthError::Operation(_) => "operation_refused",
            AuthError::Challenge(ChallengeError::Used) => "challenge_used",
            AuthError::Challenge(ChallengeError::Expired) => "challenge_expired",
            AuthError::Challenge(_) => "challenge_unknown",
            AuthError::Store(_) => "internal",
        }
    }
}

fn ms_to_s(ms: i64) -> u32 {
    u32::try_from((ms + 999) / 1000).unwrap_or(u32::MAX)
}

/// The failure limits that govern a user at a workstation for a purpose:
/// the first applicable rule's, or the built-in defaults.
fn limits_for(policy: &Policy, user: &User, group: &str, purpose: Purpose) -> FailureLimits {
    policy
        .applicable(policy.role_set(&user.roles), group, purpose)
        .next()
        .map(|r| r.failures)
        .unwrap_or(FailureLimits {
            max_consecutive: clinauth_policy::validate::builtin::MAX_CONSECUTIVE,
            backoff_base: clinauth_policy::validate::builtin::BACKOFF_BASE,
            backoff_max: clinauth_policy::validate::builtin::BACKOFF_MAX,
            biometric_max: clinauth_policy::validate::builtin::BIOMETRIC_MAX,
            presentation_attack_detection: false,
        })
}

impl AuthService {
    fn policy(&self) -> Result<Arc<Policy>, AuthError> {
        self.policy.get().ok_or(AuthError::NoPolicy)
    }

    async fn active_user(&self, id: &str) -> Result<User, AuthError> {
        directory::check_id("user", id).map_err(|e| AuthError::Invalid(e.to_string()))?;
        match directory::user(&self.store, id).await? {
            Some(user) if user.state == UserState::Active => Ok(user),
            _ => Err(AuthError::User),
        }
    }

    async fn throttled(
        &self,
        user: &User,
        ws: &Workstation,
        limits: &FailureLimits,
        now_ms: i64,
    ) -> Result<throttle::Counter, AuthError> {
        // A plain read: the decision's transaction reads again what it updates.
        let (counter, bucket) = throttle::read_pair(
            self.store.reader(),
            &throttle::user_key(&user.id),
            &throttle::workstation_key(&ws.id),
        )
        .await?;
        if counter.locked {
            return Err(AuthError::Locked);
        }
        let wait = counter
            .wait_ms(limits, now_ms)
            .max(bucket.bucket_wait_ms(now_ms));
        if wait > 0 {
            return Err(AuthError::RetryAfter(ms_to_s(wait)));
        }
        Ok(counter)
    }

    async fn audit_refusal(
        &self,
        ws: &Workstation,
        user: &str,
        action: &str,
        error: &AuthError,
        now_ms: i64,
    ) -> Result<(), AuthError> {
        let event = Event {
            at_ms: now_ms,
            actor: if user.is_empty() {
                "unknown".into()
            } else {
                user.chars().take(64).collect()
            },
            workstation: Some(ws.id.clone()),
            action: action.into(),
            target: None,
            outcome: "refused".into(),
            detail: json!({ "error": error.code(), "message": error.to_string() }),
        };
        // Through the group-commit writer, like every decision.
        self.commits
            .submit(commit::Plan::Audit(event), now_ms)
            .await
            .map_err(commit_error)?;
        Ok(())
    }

    /// `begin`: what the policy allows here for this user and purpose, with
    /// a fresh challenge. Every refusal is audited.
    pub async fn begin(
        &self,
        ws: &Workstation,
        req: &BeginRequest,
        now_ms: i64,
    ) -> Result<BeginResponse, AuthError> {
        match self.begin_inner(ws, req, now_ms).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.audit_refusal(ws, &req.user, "auth.begin", &e, now_ms)
                    .await?;
                Err(e)
            }
        }
    }

    /// `account`: whether `user` may authenticate here for `purpose` now
    /// (active, not locked out, a rule applies). Proves nothing and issues
    /// no challenge; a refusal is audited like one of begin.
    pub async fn account(
        &self,
        ws: &Workstation,
        req: &clinauth_proto::workstation::AccountRequest,
        now_ms: i64,
    ) -> Result<(), AuthError> {
        let result = async {
            if ws.state != DeviceState::Active {
                return Err(AuthError::Workstation(ws.id.clone()));
            }
            let user = self.active_user(&req.user).await?;
            let policy = self.policy()?;
            let roles = policy.role_set(&user.roles);
            let Some(first) = policy.applicable(roles, &ws.group, req.purpose).next() else {
                return Err(AuthError::NoRule(req.purpose));
            };
            self.throttled(&user, ws, &first.failures, now_ms)
                .await
                .map(|_| ())
        }
        .await;
        if let Err(e) = &result {
            self.audit_refusal(ws, &req.user, "auth.account", e, now_ms)
                .await?;
        }
        result
    }

    async fn begin_inner(
        &self,
        ws: &Workstation,
        req: &BeginRequest,
        now_ms: i64,
    ) -> Result<BeginResponse, AuthError> {
        if ws.state != DeviceState::Active {
            return Err(AuthError::Workstation(ws.id.clone()));
        }
        directory::check_id("user", &req.user).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if let Some(op) = &req.operation {
            op.check().map_err(|e| AuthError::Invalid(e.to_string()))?;
            if op.purpose() != req.purpose {
                return Err(AuthError::Invalid(format!(
                    "a {} operation needs the purpose {}",
                    op.purpose().as_str(),
                    op.purpose().as_str()
                )));
            }
            if let Operation::Sign { digest } = op {
                if digest.alg() != clinauth_proto::records::DigestAlg::Sha256 {
                    return Err(AuthError::Invalid(
                        "card signatures are over SHA-256 digests".into(),
                    ));
                }
            }
        }
        // One read: the user, both failure counters, whether FIDO2 keys exist.
        let view = lookup::for_begin(
            &self.store,
            &req.user,
            &throttle::user_key(&req.user),
            &throttle::workstation_key(&ws.id),
        )
        .await?;
        let user = match view.user {
            Some(user) if user.state == UserState::Active => user,
            _ => return Err(AuthError::User),
        };
        let policy = self.policy()?;
        let roles = policy.role_set(&user.roles);
        let rules: Vec<_> = policy.applicable(roles, &ws.group, req.purpose).collect();
        let Some(first) = rules.first() else {
            return Err(AuthError::NoRule(req.purpose));
        };
        check_throttle(&view.counter, &view.bucket, &first.failures, now_ms)?;
        // Nobody is asked for a PIN to decide a record they cannot decide.
        if let Some(Operation::Confirm { record, .. }) = &req.operation {
            crate::records::check_decidable(self, &user.id, record)
                .await
                .map_err(|e| match e {
                    crate::records::RecordError::Store(m) => AuthError::Store(m),
                    other => AuthError::Operation(other.to_string()),
                })?;
        }

        let mut options: Vec<Vec<String>> = Vec::new();
        for rule in &rules {
            for c in &rule.combinations {
                let names: Vec<String> = c.factors().iter().map(|k| k.name().to_owned()).collect();
                if !options.contains(&names) {
                    options.push(names);
                }
            }
        }

        // A WebAuthn request for the user's keys, when the policy offers FIDO2
        // here; its state stays in the challenge row, never with the client.
        let mut webauthn = None;
        let mut webauthn_state = None;
        let offers_fido2 = options
            .iter()
            .flatten()
            .any(|f| f == "fido2" || f == "fido2_uv");
        if let (true, true, Some(verifier)) =
            (offers_fido2, view.has_fido2, self.verifiers.fido2.as_ref())
        {
            let keys: Vec<_> = crate::credentials::fido2_credentials(&self.store, &user.id)
                .await
                .map_err(|e| AuthError::Store(e.to_string()))?
                .into_iter()
                .map(|(_, c)| c)
                .collect();
            if !keys.is_empty() {
                let started = verifier
                    .start_authentication(&keys, UnixTime(now_ms / 1000))
                    .map_err(|e| AuthError::Store(e.to_string()))?;
                webauthn = serde_json::from_str(&started.client_options).ok();
                webauthn_state = Some(started.state);
            }
        }

        let issued = challenge::fresh(
            &user.id,
            &ws.id,
            req.purpose,
            webauthn_state,
            now_ms,
            self.settings.challenge_ttl_ms,
        )?;
        let response = BeginResponse {
            challenge_id: issued.id.clone(),
            nonce: B64(issued.nonce.to_vec()),
            expires_at: issued.expires_at_ms / 1000,
            options,
            matcher_public_key: Some(B64(self.keys.matcher.public_key().as_bytes().to_vec())),
            webauthn,
        };
        let audit = Event {
            at_ms: now_ms,
            actor: user.id.clone(),
            workstation: Some(ws.id.clone()),
            action: "auth.begin".into(),
            target: None,
            outcome: "ok".into(),
            detail: json!({
                "purpose": req.purpose,
                "challenge": issued.id,
                "operation": req.operation,
                "policy_digest": policy.digest().to_string(),
            }),
        };
        // Stored before the challenge can be answered: a finish always finds
        // the operation its factors are bound to.
        if let Some(op) = &req.operation {
            operation::store(&self.store, &issued.id, op, now_ms).await?;
        }
        // The challenge, the workstation's contact time and the audit entry
        // commit together, with other requests' (group commit).
        self.commits
            .submit(
                commit::Plan::Begin {
                    challenge: issued,
                    audit,
                },
                now_ms,
            )
            .await
            .map_err(commit_error)?;
        Ok(response)
    }

    /// `finish`: verify the evidence, decide, and answer with a ticket or a
    /// denial that says what is missing. The challenge is consumed, the
    /// counters updated and the decision audited in one transaction.
    pub async fn finish(
        &self,
        ws: &Workstation,
        req: &FinishRequest,
        now_ms: i64,
    ) -> Result<FinishResponse, AuthError> {
        match self.finish_inner(ws, req, now_ms).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.audit_refusal(ws, "", "auth.finish", &e, now_ms)
                    .await?;
                Err(e)
            }
        }
    }

    async fn finish_inner(
        &self,
        ws: &Workstation,
        req: &FinishRequest,
        now_ms: i64,
    ) -> Result<FinishResponse, AuthError> {
        if ws.state != DeviceState::Active {
            return Err(AuthError::Workstation(ws.id.clone()));
        }
        if req.evidence.len() > MAX_EVIDENCE {
            return Err(AuthError::Invalid(format!(
                "at most {MAX_EVIDENCE} evidence items"
            )));
        }
        // One read: the challenge (without using it: verification needs the
        // nonce first; the writer uses it, once), its user and the counters.
        let card_id = evidence::Prefetched::card_id(&req.evidence);
        let view = lookup::for_finish(
            &self.store,
            &req.challenge_id,
            &ws.id,
            &throttle::workstation_key(&ws.id),
            card_id.as_deref(),
            now_ms,
        )
        .await?;
        let prefetched = evidence::Prefetched {
            card: card_id.map(|id| (id, view.card.clone())),
        };
        let peeked = view.challenge;
        let user = match view.user {
            Some(user) if user.state == UserState::Active => user,
            _ => return Err(AuthError::User),
        };
        let policy = self.policy()?;
        let limits = limits_for(&policy, &user, &ws.group, peeked.purpose);
        check_throttle(&view.counter, &view.bucket, &limits, now_ms)?;
        let counter = view.counter;

        let now = UnixTime(now_ms / 1000);
        // App operations only: a login's finish reads nothing more.
        let op = if matches!(
            peeked.purpose,
            Purpose::StepUp | Purpose::Confirm | Purpose::Sign
        ) {
            operation::load(&self.store, &peeked.id).await?
        } else {
            None
        };
        let mut verified: Verified = evidence::verify_all_with(
            self,
            &user,
            ws,
            &peeked,
            &req.evidence,
            counter.biometric_barred(&limits),
            now_ms,
            &prefetched,
        )
        .await;

        let ctx = Context {
            roles: policy.role_set(&user.roles),
            group: &ws.group,
            purpose: peeked.purpose,
            connectivity: Connectivity::Online,
            now,
            max_age: match &op {
                Some(Operation::StepUp { max_age, .. }) => Some(clinauth_policy::Seconds(*max_age)),
                _ => None,
            },
        };
        self.check_operation(&op, &user.id, &req.evidence, &mut verified, now_ms)
            .await;
        let decision = policy.decide(&ctx, &verified.evidence);

        // FIDO2 keys whose counter went backwards, per the policy (R-DEV-1).
        let setting = policy.counter_regression();
        let regressions: Vec<commit::Regression> = verified
            .regressed
            .iter()
            .map(|credential| commit::Regression {
                credential: credential.clone(),
                suspend: setting == clinauth_policy::CounterRegression::Suspend,
                event: Event {
                    at_ms: now_ms,
                    actor: "system".into(),
                    workstation: Some(ws.id.clone()),
                    action: "fido2.counter_regression".into(),
                    target: Some(credential.clone()),
                    outcome: "refused".into(),
                    detail: json!({
                        "user": user.id,
                        "credential": credential,
                        "policy": setting.as_str(),
                        "policy_digest": policy.digest().to_string(),
                    }),
                },
            })
            .collect();

        let challenge_id = peeked.id.clone();
        let user_key = throttle::user_key(&user.id);
        match &decision {
            Decision::Allow(allow) => {
                let factors: Vec<String> = allow
                    .combination
                    .factors()
                    .iter()
                    .map(|k| k.name().to_owned())
                    .collect();
                let claims = Claims {
                    iss: self.settings.issuer.clone(),
                    sub: user.id.clone(),
                    ws: ws.id.clone(),
                    purpose: peeked.purpose,
                    rule: allow.rule.name.clone(),
                    factors: factors.clone(),
                    policy_version: policy.version(),
                    policy_digest: policy.digest().to_string(),
                    iat: now.0,
                    exp: now.0
                        + match &op {
                            Some(Operation::StepUp { max_age, .. }) => {
                                self.settings.ticket_ttl_s.min(i64::from(*max_age))
                            }
                            _ => self.settings.ticket_ttl_s,
                        },
                    jti: challenge_id.clone(),
                    idle_lock: allow.rule.session.idle_lock.0,
                    offline: false,
                    review: allow.review,
                    op: op.clone(),
                };
                let token = ticket::sign(&claims, &self.keys.ticket, &self.keys.ticket_kid)
                    .map_err(|e| AuthError::Store(e.to_string()))?;
                let audit = Event {
                    at_ms: now_ms,
                    actor: user.id.clone(),
                    workstation: Some(ws.id.clone()),
                    action: "auth.finish".into(),
                    target: None,
                    outcome: "allow".into(),
                    detail: json!({
                        "purpose": peeked.purpose,
                        "challenge": challenge_id,
                        "rule": allow.rule.name,
                        "factors": factors,
                        "presented": verified.presented,
                        "rejected": verified.rejected,
                        "policy_version": policy.version(),
                        "policy_digest": policy.digest().to_string(),
                        "review": allow.review,
                        "operation": op,
                    }),
                };
                // Break-glass (R-EMERG-1): a pending review item in the same
                // commit as the decision's audit entry.
                let review = allow.review.then(|| commit::ReviewItem {
                    id: challenge_id.clone(),
                    user: user.id.clone(),
                    workstation: ws.id.clone(),
                    purpose: peeked.purpose.as_str().to_owned(),
                    rule: allow.rule.name.clone(),
                    factors: factors.clone(),
                });
                let plan = commit::FinishPlan {
                    challenge_id: challenge_id.clone(),
                    workstation: ws.id.clone(),
                    expect: (peeked.nonce, peeked.user.clone()),
                    counters: verified.counters.clone(),
                    // Nothing to clear when the check before verification found
                    // no counter: a failure committed since then stays (stricter).
                    clear: (counter != throttle::Counter::default()).then(|| user_key.clone()),
                    failure: None,
                    regressions,
                    audit: commit::FinishAudit::Event(audit),
                    review,
                };
                self.commits
                    .submit(commit::Plan::Finish(Box::new(plan)), now_ms)
                    .await
                    .map_err(commit_error)?;
                Ok(FinishResponse::Allow {
                    ticket: token,
                    rule: allow.rule.name.clone(),
                    factors,
                })
            }
            Decision::Deny(deny) => {
                let mut reason = deny.en();
                let mut reason_ja = deny.ja();
                if !verified.rejected.is_empty() {
                    let what: Vec<String> = verified
                        .rejected
                        .iter()
                        .map(|r| format!("{}: {}", r.kind, r.reason))
                        .collect();
                    reason = format!("{reason}; refused: {}", what.join("; "));
                    reason_ja = format!("{reason_ja}(不合格: {})", what.join("; "));
                }
                let audit = {
                    let actor = user.id.clone();
                    let ws_id = ws.id.clone();
                    let purpose = peeked.purpose;
                    let challenge = challenge_id.clone();
                    let reason = reason.clone();
                    let presented = verified.presented.clone();
                    let rejected = verified.rejected.clone();
                    let digest = policy.digest().to_string();
                    commit::FinishAudit::AfterFailure(Box::new(move |after, _bucket| Event {
                        at_ms: now_ms,
                        actor: actor.clone(),
                        workstation: Some(ws_id.clone()),
                        action: "auth.finish".into(),
                        target: None,
                        outcome: "deny".into(),
                        detail: json!({
                            "purpose": purpose,
                            "challenge": challenge,
                            "reason": reason,
                            "presented": presented,
                            "rejected": rejected,
                            "failures": after.failures,
                            "locked": after.locked,
                            "policy_digest": digest,
                        }),
                    }))
                };
                let plan = commit::FinishPlan {
                    challenge_id: challenge_id.clone(),
                    workstation: ws.id.clone(),
                    expect: (peeked.nonce, peeked.user.clone()),
                    counters: Vec::new(),
                    clear: None,
                    failure: Some(commit::Failure {
                        user_key,
                        ws_key: throttle::workstation_key(&ws.id),
                        biometric: verified.biometric_failed,
                        limits,
                    }),
                    regressions,
                    audit,
                    review: None,
                };
                let done = self
                    .commits
                    .submit(commit::Plan::Finish(Box::new(plan)), now_ms)
                    .await
                    .map_err(commit_error)?;
                let (after, bucket) = match done {
                    commit::Done::Finish(f) => f.failure.unwrap_or_default(),
                    commit::Done::Written => Default::default(),
                };
                Ok(FinishResponse::Deny {
                    reason,
                    reason_ja,
                    retry_after: ms_to_s(
                        after
                            .wait_ms(&limits, now_ms)
                            .max(bucket.bucket_wait_ms(now_ms)),
                    ),
                })
            }
        }
    }
}

impl AuthService {
    /// Binds the evidence to the operation: a `sign` operation's document
    /// signature is checked and its certificate's HPKI qualification is the
    /// one the rules see (R-SIG-1); a record that can no longer be decided
    /// by this user leaves nothing to count. A document signature without a
    /// `sign` operation does not count.
    async fn check_operation(
        &self,
        op: &Option<Operation>,
        user: &str,
        items: &[EvidenceItem],
        verified: &mut Verified,
        now_ms: i64,
    ) {
        let refuse_all = |verified: &mut Verified, kind: &'static str, reason: String| {
            verified.evidence.clear();
            verified.rejected.push(evidence::Rejected { kind, reason });
        };
        match op {
            Some(Operation::Sign { digest }) => {
                match evidence::document_signature(self, items, digest, now_ms) {
                    Ok(qualification) => {
                        for e in &mut verified.evidence {
                            if let Factor::Smartcard {
                                qualification: q, ..
                            } = &mut e.factor
                            {
                                q.clone_from(&qualification);
                            }
                        }
                    }
                    Err(reason) => refuse_all(verified, "document_signature", reason),
                }
            }
            Some(Operation::Confirm { record, .. }) => {
                if let Err(e) = crate::records::check_decidable(self, user, record).await {
                    refuse_all(verified, "record", e.to_string());
                }
            }
            _ => {
                if items
                    .iter()
                    .any(|i| matches!(i, EvidenceItem::DocumentSignature { .. }))
                {
                    verified.rejected.push(evidence::Rejected {
                        kind: "document_signature",
                        reason: "a document signature counts only for a sign operation".into(),
                    });
                }
            }
        }
    }
}

/// Refuses a locked user, or an attempt too soon after failures (R-RATE-1).
fn check_throttle(
    counter: &throttle::Counter,
    bucket: &throttle::Counter,
    limits: &FailureLimits,
    now_ms: i64,
) -> Result<(), AuthError> {
    if counter.locked {
        return Err(AuthError::Locked);
    }
    let wait = counter
        .wait_ms(limits, now_ms)
        .max(bucket.bucket_wait_ms(now_ms));
    if wait > 0 {
        return Err(AuthError::RetryAfter(ms_to_s(wait)));
    }
    Ok(())
}

fn commit_error(e: commit::CommitError) -> AuthError {
    match e {
        commit::CommitError::Challenge(c) => AuthError::Challenge(c),
        // Another request used the same one-time code first.
        commit::CommitError::Reused => AuthError::Challenge(ChallengeError::Used),
        commit::CommitError::Store(m) => AuthError::Store(m),
    }
}
