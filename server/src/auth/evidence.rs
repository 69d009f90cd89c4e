//! Turning what a workstation sends into verified evidence for the policy.
//!
//! Each item is checked on its own against the challenge (nonce, user,
//! workstation, purpose) and the user's enrolled credentials. An item that
//! fails does not count and is reported with its reason; it never makes the
//! whole request fail open or closed by itself: the policy decides on what
//! was proven.

use super::challenge::Challenge;
use super::service::AuthService;
use crate::credentials;
use crate::directory::{self, Device, DeviceKind, DeviceState, User, Workstation};
use crate::store::{StoreError, Tx};
use clinauth_biometric::envelope::{
    self, Expected, ReaderPublicKey, SealedCapture, SignedDecision,
};
use clinauth_factors::pin::SecretPin;
use clinauth_factors::totp;
use clinauth_policy::{BiometricProtection, Evidence, Factor, UnixTime};
use clinauth_proto::workstation::EvidenceItem;
use clinauth_proto::SecretString;
use serde::Serialize;

/// How old a biometric capture may be when it reaches the server, and how
/// far a reader's clock may run ahead.
const CAPTURE_MAX_AGE_S: u32 = 120;
const CAPTURE_MAX_FUTURE_S: u32 = 30;

/// Configuration the verifiers need beyond the database and the keys.
#[derive(Debug, Default)]
pub struct Verifiers {
    /// The CAs (and CRLs) card certificates must chain to.
    pub card_trust: clinauth_factors::card::CardTrust,
    /// FIDO2 (WebAuthn), when enabled.
    pub fido2: Option<clinauth_factors::fido2::Fido2Verifier>,
}

/// An item that did not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The item's type.
    pub kind: &'static str,
    /// Why, for the audit log and the user (never a secret).
    pub reason: String,
}

/// A counter to advance when the decision commits (TOTP step, FIDO2 count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterUpdate {
    /// The credential.
    pub credential: String,
    /// Its new value.
    pub value: i64,
    /// The credential's new stored form (FIDO2), if it changes with the counter.
    pub public_data: Option<Vec<u8>>,
}

/// The outcome of checking every item.
#[derive(Debug, Default)]
pub struct Verified {
    /// What counts, for the policy.
    pub evidence: Vec<Evidence>,
    /// The item types presented, in order.
    pub presented: Vec<&'static str>,
    /// The items that did not count, and why.
    pub rejected: Vec<Rejected>,
    /// A biometric was presented and did not match (R-BIO-4).
    pub biometric_failed: bool,
    /// Counters to advance with the decision.
    pub counters: Vec<CounterUpdate>,
}

fn kind_name(item: &EvidenceItem) -> &'static str {
    match item {
        EvidenceItem::Card { .. } => "card",
        EvidenceItem::ServerPin { .. } => "server_pin",
        EvidenceItem::Totp { .. } => "totp",
        EvidenceItem::Badge { .. } => "badge",
        EvidenceItem::Fido2 { .. } => "fido2",
        EvidenceItem::BiometricSealed { .. } => "biometric_sealed",
        EvidenceItem::BiometricDecision { .. } => "biometric_decision",
    }
}

/// The device ID a badge UID is registered under.
pub fn badge_device_id(uid: &[u8]) -> String {
    format!("badge-{}", crate::hex::encode(uid))
}

/// Checks every item.
pub async fn verify_all(
    service: &AuthService,
    user: &User,
    ws: &Workstation,
    challenge: &Challenge,
    items: &[EvidenceItem],
    biometric_barred: bool,
    now_ms: i64,
) -> Verified {
    let mut out = Verified::default();
    let now = UnixTime(now_ms / 1000);
    for item in items {
        let kind = kind_name(item);
        out.presented.push(kind);
        let result = match item {
            EvidenceItem::Badge { uid } => badge(service, user, &uid.0, now_ms).await,
            EvidenceItem::Card {
                certificate,
                chain,
                signature,
                pin_protected_key,
            } => {
                let chain: Vec<&[u8]> = chain.iter().map(|c| c.0.as_slice()).collect();
                card(
                    service,
                    user,
                    challenge,
                    &certificate.0,
                    &chain,
                    &signature.0,
                    *pin_protected_key,
                    now_ms,
                )
                .await
            }
            EvidenceItem::ServerPin { value } => server_pin(service, user, value).await,
            EvidenceItem::Totp { code } => match totp_code(service, user, code, now_ms).await {
                Ok(update) => {
                    out.counters.push(update);
                    Ok(Factor::Totp)
                }
                Err(e) => Err(e),
            },
            EvidenceItem::BiometricSealed { .. } | EvidenceItem::BiometricDecision { .. }
                if biometric_barred =>
            {
                Err("too many biometric failures: use another factor (R-BIO-4)".to_owned())
            }
            EvidenceItem::BiometricSealed { capture } => {
                match sealed_biometric(service, user, challenge, &capture.0, now_ms).await {
                    Ok(Some(factor)) => Ok(factor),
                    Ok(None) => {
                        out.biometric_failed = true;
                        Err("the fingerprint did not match".to_owned())
                    }
                    Err(e) => Err(e),
                }
            }
            EvidenceItem::BiometricDecision { decision } => {
                match reader_decision(service, user, challenge, &decision.0, now_ms).await {
                    Ok(Some(factor)) => Ok(factor),
                    Ok(None) => {
                        out.biometric_failed = true;
                        Err("the reader reported no match".to_owned())
                    }
                    Err(e) => Err(e),
                }
            }
            EvidenceItem::Fido2 { assertion } => {
                match fido2(service, user, challenge, assertion, now_ms).await {
                    Ok((factor, update)) => {
                        out.counters.push(update);
                        Ok(factor)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let _ = ws;
        match result {
            Ok(factor) => out.evidence.push(Evidence::new(factor, now)),
            Err(reason) => out.rejected.push(Rejected { kind, reason }),
        }
    }
    out
}

async fn badge(
    service: &AuthService,
    user: &User,
    uid: &[u8],
    now_ms: i64,
) -> Result<Factor, String> {
    if !matches!(uid.len(), 4 | 7 | 10) {
        return Err("a badge UID is 4, 7 or 10 bytes".into());
    }
    let id = badge_device_id(uid);
    let device = directory::device(&service.store, &id)
        .await
        .map_err(|_| "badge lookup failed".to_owned())?
        .ok_or_else(|| "badge is not registered".to_owned())?;
    if device.kind != DeviceKind::Badge || device.owner.as_deref() != Some(user.id.as_str()) {
        return Err("badge is registered to someone else".into());
    }
    if device.state != DeviceState::Active {
        return Err(format!("badge is {}", device.state));
    }
    let _ = directory::touch_device(&service.store, &id, now_ms).await;
    Ok(Factor::Badge)
}

/// A card signature over the challenge message: the certificate chains to
/// a configured CA and is not revoked, the card is enrolled to this user,
/// and the signature covers this nonce, user, workstation and purpose.
#[allow(clippy::too_many_arguments)]
async fn card(
    service: &AuthService,
    user: &User,
    challenge: &Challenge,
    certificate: &[u8],
    chain: &[&[u8]],
    signature: &[u8],
    pin_reported: bool,
    now_ms: i64,
) -> Result<Factor, String> {
    use clinauth_factors::card::{self, KeyUse};
    let now = UnixTime(now_ms / 1000);
    let verified = service
        .verifiers
        .card_trust
        .verify(certificate, chain, KeyUse::Authentication, now)
        .map_err(|e| e.to_string())?;
    let enrolled = credentials::card(&service.store, certificate)
        .await
        .map_err(|_| "card lookup failed".to_owned())?
        .ok_or_else(|| "the card is not enrolled".to_owned())?;
    if enrolled.user != user.id {
        return Err("the card is enrolled to someone else".into());
    }
    card::verify_challenge(
        &verified.public_key,
        &challenge.nonce,
        &user.id,
        &challenge.workstation,
        challenge.purpose,
        signature,
    )
    .map_err(|e| e.to_string())?;
    // The card's PIN protection as enrolled by an officer; a workstation
    // may report less, never more.
    Ok(verified.into_factor(enrolled.pin_protected && pin_reported))
}

async fn server_pin(
    service: &AuthService,
    user: &User,
    value: &SecretString,
) -> Result<Factor, String> {
    let pin = SecretPin::from_text(value.expose()).map_err(|e| e.to_string())?;
    let stored = credentials::pin_hash(&service.store, &user.id)
        .await
        .map_err(|_| "PIN lookup failed".to_owned())?;
    let enrolled = stored.is_some();
    // Bounded, off the async threads, on a reused block (auth::hashing).
    let checked = service
        .hashing
        .verify(pin, stored)
        .await
        .map_err(|e| e.to_string())?;
    match checked {
        Ok(()) if enrolled => Ok(Factor::ServerPin),
        _ if !enrolled => Err("no PIN is enrolled".to_owned()),
        _ => Err("wrong PIN".to_owned()),
    }
}

async fn totp_code(
    service: &AuthService,
    user: &User,
    code: &SecretString,
    now_ms: i64,
) -> Result<CounterUpdate, String> {
    let (secret, last) = credentials::totp_secret(&service.store, &service.keys.data, &user.id)
        .await
        .map_err(|_| "TOTP lookup failed".to_owned())?
        .ok_or_else(|| "no TOTP device is enrolled".to_owned())?;
    let step =
        totp::verify(&secret, code.expose(), now_ms / 1000, last).map_err(|e| e.to_string())?;
    Ok(CounterUpdate {
        credential: credentials::totp_id(&user.id),
        value: i64::try_from(step).map_err(|_| "TOTP step out of range".to_owned())?,
        public_data: None,
    })
}

/// The registered, active reader a capture names, and the protection it
/// was registered with; the key comes from the registry, never the request.
async fn reader(
    service: &AuthService,
    id: &str,
    protection: &str,
) -> Result<(Device, ReaderPublicKey), String> {
    let device = directory::device(&service.store, id)
        .await
        .map_err(|_| "reader lookup failed".to_owned())?
        .ok_or_else(|| "the reader is not registered (R-BIO-3)".to_owned())?;
    if device.kind != DeviceKind::BiometricReader {
        return Err("the device is not a biometric reader".into());
    }
    if device.state != DeviceState::Active {
        return Err(format!("the reader is {} (R-DEV-1)", device.state));
    }
    if device.attributes["protection"] != protection {
        return Err(format!(
            "the reader is not registered as {protection} (R-BIO-1)"
        ));
    }
    let key = device
        .public_key
        .as_deref()
        .ok_or_else(|| "the reader has no registered key".to_owned())
        .and_then(|k| ReaderPublicKey::from_bytes(k).map_err(|e| e.to_string()))?;
    Ok((device, key))
}

fn expected(challenge: &Challenge, reader_id: &str, user: &User, now_ms: i64) -> Expected {
    Expected {
        nonce: challenge.nonce,
        reader_id: reader_id.to_owned(),
        user_id: user.id.clone(),
        now: now_ms / 1000,
        max_age_secs: CAPTURE_MAX_AGE_S,
        max_future_secs: CAPTURE_MAX_FUTURE_S,
    }
}

fn pad(device: &Device) -> bool {
    device.attributes["pad"] == true
}

/// Opens a sealed capture (signature, binding, HPKE) and matches it 1:1
/// against the user's enrolled templates. `Ok(None)`: a genuine capture
/// that does not match.
async fn sealed_biometric(
    service: &AuthService,
    user: &User,
    challenge: &Challenge,
    bytes: &[u8],
    now_ms: i64,
) -> Result<Option<Factor>, String> {
    let capture = SealedCapture::from_bytes(bytes).map_err(|e| e.to_string())?;
    let reader_id = capture.context().reader_id.clone();
    let (device, key) = reader(service, &reader_id, "sealed_template").await?;
    let probe = envelope::open(
        &service.keys.matcher,
        &key,
        &expected(challenge, &reader_id, user, now_ms),
        bytes,
    )
    .map_err(|e| e.to_string())?;
    let references = credentials::templates(&service.store, &service.keys.data, &user.id)
        .await
        .map_err(|_| "template lookup failed".to_owned())?;
    if references.is_empty() {
        return Err("no fingerprint is enrolled".into());
    }
    let _ = directory::touch_device(&service.store, &reader_id, now_ms).await;
    // 1:1 against the claimed user's own references only (R-BIO-2).
    let matched = references
        .iter()
        .any(|reference| clinauth_biometric::verify(reference, &probe).matched);
    Ok(matched.then_some(Factor::Biometric {
        protection: BiometricProtection::SealedTemplate,
        presentation_attack_detection: pad(&device),
    }))
}

async fn reader_decision(
    service: &AuthService,
    user: &User,
    challenge: &Challenge,
    bytes: &[u8],
    now_ms: i64,
) -> Result<Option<Factor>, String> {
    let decision = SignedDecision::from_bytes(bytes).map_err(|e| e.to_string())?;
    let reader_id = decision.context.reader_id.clone();
    let (device, key) = reader(service, &reader_id, "match_on_reader").await?;
    let matched = envelope::verify_decision(
        &key,
        &expected(challenge, &reader_id, user, now_ms),
        &decision,
    )
    .map_err(|e| e.to_string())?;
    let _ = directory::touch_device(&service.store, &reader_id, now_ms).await;
    Ok(matched.then_some(Factor::Biometric {
        protection: BiometricProtection::MatchOnReader,
        presentation_attack_detection: pad(&device),
    }))
}

/// A WebAuthn assertion against the state this challenge's begin issued,
/// for one of the user's registered keys. The key's new sign counter is
/// stored with the decision; a counter that went backwards (a cloned key)
/// is refused and named in the audit log.
async fn fido2(
    service: &AuthService,
    user: &User,
    challenge: &Challenge,
    assertion: &serde_json::Value,
    now_ms: i64,
) -> Result<(Factor, CounterUpdate), String> {
    use clinauth_factors::fido2::Fido2Error;
    let verifier = service
        .verifiers
        .fido2
        .as_ref()
        .ok_or_else(|| "FIDO2 is not enabled on this server".to_owned())?;
    let state = challenge.webauthn.as_deref().ok_or_else(|| {
        "no FIDO2 request was issued for this login (no key registered)".to_owned()
    })?;
    let mut keys = credentials::fido2_credentials(&service.store, &user.id)
        .await
        .map_err(|_| "FIDO2 key lookup failed".to_owned())?;
    let list: Vec<_> = keys.iter().map(|(_, c)| c.clone()).collect();
    let response = assertion.to_string();
    let verified = verifier
        .finish_authentication(state, &response, &list, UnixTime(now_ms / 1000))
        .map_err(|e| match e {
            Fido2Error::CounterRegressed => {
                "the key's sign counter went backwards: possibly a cloned key (R-DEV-1)".to_owned()
            }
            other => other.to_string(),
        })?;
    let (row_id, credential) = keys
        .iter_mut()
        .find(|(_, c)| c.credential_id() == verified.credential_id.as_slice())
        .ok_or_else(|| "the key is not registered to this user".to_owned())?;
    verified
        .update_credential(credential)
        .map_err(|e| e.to_string())?;
    let json = credential.to_json().map_err(|e| e.to_string())?;
    let update = CounterUpdate {
        credential: row_id.clone(),
        value: i64::from(credential.counter()),
        public_data: Some(json.into_bytes()),
    };
    Ok((verified.into_factor(), update))
}

/// A one-time value was used by a concurrent request first.
#[derive(Debug, thiserror::Error)]
#[error("a one-time code was already used")]
pub struct Reused;

/// Advances the counters of the credentials used, in the decision's
/// transaction. A counter that another request advanced first means the
/// same one-time code was used twice: the whole decision fails.
pub async fn commit_counters(
    tx: &mut Tx,
    verified: &Verified,
) -> Result<Result<(), Reused>, StoreError> {
    for update in &verified.counters {
        let done =
            sqlx::query("UPDATE credentials SET counter = $1 WHERE id = $2 AND counter < $1")
                .bind(update.value)
                .bind(&update.credential)
                .execute(&mut **tx)
                .await?;
        if done.rows_affected() != 1 {
            return Ok(Err(Reused));
        }
    }
    Ok(Ok(()))
}
