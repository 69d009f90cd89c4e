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
    /// Card certificates verified against `card_trust` recently.
    pub card_cache: CardCache,
}

/// How long a card certificate's verified chain is reused before it is
/// verified again (never past the certificate's notAfter).
pub const CARD_CACHE_SECONDS: i64 = 60;
/// The most certificates remembered; the cache is emptied when full.
pub const CARD_CACHE_ENTRIES: usize = 65_536;

/// Card certificates whose chain, signatures, usage and revocation were
/// verified against this [`Verifiers`]' trust store, by SHA-256 of the
/// certificate and the chain presented with it. Each login still verifies
/// the card's signature over its own challenge; only the certificate's
/// verification (one to three ECDSA or RSA verifies and the parsing) is
/// reused, for at most [`CARD_CACHE_SECONDS`]. The CRLs are loaded once at
/// start, so a revocation takes effect with a restart either way.
#[derive(Debug, Default)]
pub struct CardCache(
    std::sync::Mutex<
        std::collections::HashMap<[u8; 32], (clinauth_factors::card::VerifiedCard, i64)>,
    >,
);

impl CardCache {
    fn key(certificate: &[u8], chain: &[&[u8]]) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for part in std::iter::once(certificate).chain(chain.iter().copied()) {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// `trust.verify` for authentication, through the cache.
    fn verify(
        &self,
        trust: &clinauth_factors::card::CardTrust,
        certificate: &[u8],
        chain: &[&[u8]],
        now: UnixTime,
    ) -> Result<clinauth_factors::card::VerifiedCard, String> {
        use clinauth_factors::card::KeyUse;
        let key = CardCache::key(certificate, chain);
        if let Ok(map) = self.0.lock() {
            if let Some((card, until)) = map.get(&key) {
                if now.0 < *until {
                    return Ok(card.clone());
                }
            }
        }
        let verified = trust
            .verify(certificate, chain, KeyUse::Authentication, now)
            .map_err(|e| e.to_string())?;
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= CARD_CACHE_ENTRIES {
                map.clear();
            }
            let until = now
                .0
                .saturating_add(CARD_CACHE_SECONDS)
                .min(verified.not_after.0);
            map.insert(key, (verified.clone(), until));
        }
        Ok(verified)
    }
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
    /// The value may stay the same (a FIDO2 key without a counter, which
    /// always reports 0); otherwise it must go up (a TOTP step is used once).
    pub allow_equal: bool,
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
    /// FIDO2 credentials (row IDs) whose signature counter went backwards:
    /// handled per the policy's `fido2.counter_regression` in the decision's
    /// transaction.
    pub regressed: Vec<String>,
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
        EvidenceItem::DocumentSignature { .. } => "document_signature",
    }
}

/// The device ID a badge UID is registered under.
pub fn badge_device_id(uid: &[u8]) -> String {
    format!("badge-{}", crate::hex::encode(uid))
}

/// What the finish's read already fetched for the evidence, so that the
/// usual case costs no further query.
#[derive(Debug, Default, Clone)]
pub struct Prefetched {
    /// A card's credential ID and its enrollment (`None`: not enrolled).
    pub card: Option<(String, Option<credentials::EnrolledCard>)>,
}

impl Prefetched {
    /// The credential ID of the first card presented, to fetch with the challenge.
    pub fn card_id(items: &[EvidenceItem]) -> Option<String> {
        items.iter().find_map(|item| match item {
            EvidenceItem::Card { certificate, .. } => Some(credentials::card_id(&certificate.0)),
            _ => None,
        })
    }
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
    verify_all_with(
        service,
        user,
        ws,
        challenge,
        items,
        biometric_barred,
        now_ms,
        &Prefetched::default(),
    )
    .await
}

/// [`verify_all`] with what the finish's read fetched already.
#[allow(clippy::too_many_arguments)]
pub async fn verify_all_with(
    service: &AuthService,
    user: &User,
    ws: &Workstation,
    challenge: &Challenge,
    items: &[EvidenceItem],
    biometric_barred: bool,
    now_ms: i64,
    prefetched: &Prefetched,
) -> Verified {
    let mut out = Verified::default();
    let now = UnixTime(now_ms / 1000);
    for item in items {
        let kind = kind_name(item);
        out.presented.push(kind);
        let result = match item {
            // Not a factor: checked with its `sign` operation
            // ([`document_signature`]) once the card's evidence is in.
            EvidenceItem::DocumentSignature { .. } => continue,
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
                    prefetched,
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
                    Err(Fido2Refusal::Regressed { credential, reason }) => {
                        if !out.regressed.contains(&credential) {
                            out.regressed.push(credential);
                        }
                        Err(reason)
                    }
                    Err(Fido2Refusal::Other(e)) => Err(e),
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

/// The document signature of a `sign` operation (R-SIG-1): the signature
/// certificate chains to a configured CA with `nonRepudiation`, names the
/// same holder as the card certificate that signed the challenge, and the
/// signature covers `digest`. Returns the signature certificate's HPKI
/// qualification, which is the one the `sign` rules check.
pub fn document_signature(
    service: &AuthService,
    items: &[EvidenceItem],
    digest: &clinauth_proto::records::Digest,
    now_ms: i64,
) -> Result<Option<String>, String> {
    use clinauth_factors::card::{self, KeyUse};
    let now = UnixTime(now_ms / 1000);
    let mut signatures = items.iter().filter_map(|item| match item {
        EvidenceItem::DocumentSignature {
            certificate,
            chain,
            signature,
        } => Some((certificate, chain, signature)),
        _ => None,
    });
    let (Some((certificate, chain, signature)), None) = (signatures.next(), signatures.next())
    else {
        return Err("a signature needs exactly one document signature".into());
    };
    let mut cards = items.iter().filter_map(|item| match item {
        EvidenceItem::Card {
            certificate, chain, ..
        } => Some((certificate, chain)),
        _ => None,
    });
    let (Some((auth_cert, auth_chain)), None) = (cards.next(), cards.next()) else {
        return Err("a signature needs the card's challenge signature beside it".into());
    };
    let digest: &[u8; 32] = match digest.alg() {
        clinauth_proto::records::DigestAlg::Sha256 => digest
            .bytes()
            .try_into()
            .map_err(|_| "malformed digest".to_owned())?,
        _ => return Err("card signatures are over SHA-256 digests".into()),
    };
    let auth_chain: Vec<&[u8]> = auth_chain.iter().map(|c| c.0.as_slice()).collect();
    let holder = service.verifiers.card_cache.verify(
        &service.verifiers.card_trust,
        &auth_cert.0,
        &auth_chain,
        now,
    )?;
    let chain: Vec<&[u8]> = chain.iter().map(|c| c.0.as_slice()).collect();
    let signer = service
        .verifiers
        .card_trust
        .verify(&certificate.0, &chain, KeyUse::NonRepudiation, now)
        .map_err(|e| format!("signature certificate: {e}"))?;
    if signer.subject != holder.subject {
        return Err("the signature certificate names another holder than the card".into());
    }
    card::verify_digest_signature(&signer.public_key, digest, &signature.0)
        .map_err(|e| format!("document signature: {e}"))?;
    Ok(signer.qualification)
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
    prefetched: &Prefetched,
) -> Result<Factor, String> {
    use clinauth_factors::card;
    let now = UnixTime(now_ms / 1000);
    let verified = service.verifiers.card_cache.verify(
        &service.verifiers.card_trust,
        certificate,
        chain,
        now,
    )?;
    let id = credentials::card_id(certificate);
    let enrolled = match &prefetched.card {
        Some((fetched, enrolled)) if *fetched == id => enrolled.clone(),
        _ => credentials::card(&service.store, certificate)
            .await
            .map_err(|_| "card lookup failed".to_owned())?,
    }
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
        allow_equal: false,
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

/// Why a FIDO2 assertion did not count.
enum Fido2Refusal {
    /// The signature verified but the key's counter went backwards.
    Regressed {
        /// The credential's row ID.
        credential: String,
        /// For the audit log and the user.
        reason: String,
    },
    /// Anything else.
    Other(String),
}

impl From<String> for Fido2Refusal {
    fn from(e: String) -> Self {
        Fido2Refusal::Other(e)
    }
}

/// The credential ID an assertion names (`rawId`, else `id`; base64url).
/// Only trusted once webauthn-rs has verified the signature with that
/// credential's key.
fn assertion_credential_id(assertion: &serde_json::Value) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = assertion
        .get("rawId")
        .and_then(|v| v.as_str())
        .or_else(|| assertion.get("id").and_then(|v| v.as_str()))?;
    if text.len() > 2048 {
        return None;
    }
    let engines = [
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD,
    ];
    engines.iter().find_map(|e| e.decode(text).ok())
}

/// Why a key the assertion names is not usable, when it is the user's but
/// not active (suspended after a counter regression, or decommissioned).
async fn inactive_key(
    service: &AuthService,
    user: &User,
    assertion: &serde_json::Value,
) -> Option<String> {
    let raw = assertion_credential_id(assertion)?;
    let (owner, state) = credentials::fido2_state(&service.store, &credentials::fido2_id(&raw))
        .await
        .ok()??;
    (owner == user.id && state != "active")
        .then(|| format!("the key is {state} (R-DEV-1): a security officer must re-enable it"))
}

/// A WebAuthn assertion against the state this challenge's begin issued,
/// for one of the user's registered, active keys. The key's new sign
/// counter is stored with the decision; a counter that went backwards (a
/// cloned key) is refused, named in the audit log and handled per the
/// policy (`Verified::regressed`).
async fn fido2(
    service: &AuthService,
    user: &User,
    challenge: &Challenge,
    assertion: &serde_json::Value,
    now_ms: i64,
) -> Result<(Factor, CounterUpdate), Fido2Refusal> {
    use clinauth_factors::fido2::Fido2Error;
    let verifier = service
        .verifiers
        .fido2
        .as_ref()
        .ok_or_else(|| "FIDO2 is not enabled on this server".to_owned())?;
    let Some(state) = challenge.webauthn.as_deref() else {
        if let Some(reason) = inactive_key(service, user, assertion).await {
            return Err(reason.into());
        }
        return Err(
            "no FIDO2 request was issued for this login (no key registered)"
                .to_owned()
                .into(),
        );
    };
    let mut keys = credentials::fido2_credentials(&service.store, &user.id)
        .await
        .map_err(|_| "FIDO2 key lookup failed".to_owned())?;
    let list: Vec<_> = keys.iter().map(|(_, c)| c.clone()).collect();
    let response = assertion.to_string();
    let verified =
        match verifier.finish_authentication(state, &response, &list, UnixTime(now_ms / 1000)) {
            Ok(v) => v,
            Err(Fido2Error::CounterRegressed) => {
                let reason =
                    "the key's sign counter went backwards: possibly a cloned key (R-DEV-1)"
                        .to_owned();
                // The signature verified with the key the assertion names.
                let credential = assertion_credential_id(assertion)
                    .map(|raw| credentials::fido2_id(&raw))
                    .filter(|id| keys.iter().any(|(row, _)| row == id));
                return Err(match credential {
                    Some(credential) => Fido2Refusal::Regressed { credential, reason },
                    None => Fido2Refusal::Other(reason),
                });
            }
            Err(Fido2Error::UnknownCredential) => {
                if let Some(reason) = inactive_key(service, user, assertion).await {
                    return Err(reason.into());
                }
                return Err(Fido2Error::UnknownCredential.to_string().into());
            }
            Err(other) => return Err(other.to_string().into()),
        };
    let (row_id, credential) = keys
        .iter_mut()
        .find(|(_, c)| c.credential_id() == verified.credential_id.as_slice())
        .ok_or_else(|| "the key is not registered to this user".to_owned())?;
    verified
        .update_credential(credential)
        .map_err(|e| e.to_string())?;
    let json = credential.to_json().map_err(|e| e.to_string())?;
    let value = i64::from(credential.counter());
    let update = CounterUpdate {
        credential: row_id.clone(),
        value,
        public_data: Some(json.into_bytes()),
        allow_equal: value == 0,
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
    now_ms: i64,
) -> Result<Result<(), Reused>, StoreError> {
    for update in &verified.counters {
        let done = match (&update.public_data, update.allow_equal) {
            (Some(data), false) => sqlx::query(
                "UPDATE credentials SET counter = $1, public_data = $3, last_used = $4 WHERE id = $2 AND counter < $1",
            )
            .bind(update.value)
            .bind(&update.credential)
            .bind(data.clone())
            .bind(now_ms),
            (Some(data), true) => sqlx::query(
                "UPDATE credentials SET counter = $1, public_data = $3, last_used = $4 WHERE id = $2 AND counter <= $1",
            )
            .bind(update.value)
            .bind(&update.credential)
            .bind(data.clone())
            .bind(now_ms),
            (None, _) => sqlx::query(
                "UPDATE credentials SET counter = $1, last_used = $3 WHERE id = $2 AND counter < $1",
            )
            .bind(update.value)
            .bind(&update.credential)
            .bind(now_ms),
        }
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(Err(Reused));
        }
    }
    Ok(Ok(()))
}
