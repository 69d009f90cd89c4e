//! Turning what a workstation sends into verified evidence for the policy.
//!
//! Each item is checked on its own against the challenge (nonce, user,
//! workstation, purpose) and the user's enrolled credentials. An item that
//! fails does not count and is reported with its reason; it never makes the
//! whole request fail open or closed by itself: the policy decides on what
//! was proven.

use super::challenge::Challenge;
use super::service::AuthService;
use crate::directory::{self, DeviceKind, DeviceState, User, Workstation};
use crate::store::{StoreError, Tx};
use clinauth_policy::{Evidence, Factor, UnixTime};
use clinauth_proto::workstation::EvidenceItem;
use serde::Serialize;

/// Configuration the verifiers need beyond the database.
#[derive(Debug, Default)]
pub struct Verifiers {
    /// The HPKE public key biometric readers seal to, when a matcher is configured.
    matcher_public: Option<Vec<u8>>,
}

impl Verifiers {
    /// The matcher's public key, if one is configured.
    pub fn matcher_public_key(&self) -> Option<Vec<u8>> {
        self.matcher_public.clone()
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
    let hex: String = uid.iter().map(|b| format!("{b:02x}")).collect();
    format!("badge-{hex}")
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
            EvidenceItem::BiometricSealed { .. } | EvidenceItem::BiometricDecision { .. }
                if biometric_barred =>
            {
                Err("too many biometric failures: use another factor (R-BIO-4)".to_owned())
            }
            _ => Err(format!("{kind} is not enabled on this server")),
        };
        let _ = (ws, challenge);
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

/// Advances the counters of the credentials used, in the decision's transaction.
pub async fn commit_counters(tx: &mut Tx, verified: &Verified) -> Result<(), StoreError> {
    for update in &verified.counters {
        sqlx::query("UPDATE credentials SET counter = $1 WHERE id = $2 AND counter < $1")
            .bind(update.value)
            .bind(&update.credential)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
