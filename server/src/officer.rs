//! Officer operations: the directory, devices, unlocks and the audit trail.
//! Each change and its audit entry commit together (R-LOG-1), and every
//! entry names the officer who made it. `clinauthctl` on the server host and
//! the officer API both call these.

use crate::audit::{self, AuditKey, Event};
use crate::auth::evidence::badge_device_id;
use crate::auth::throttle;
use crate::directory::{
    self, DeviceKind, DeviceState, DirectoryError, NewDevice, User, UserState, Workstation,
};
use crate::store::{Store, StoreError};
use serde_json::{json, Value};

/// Why an officer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OfficerError {
    /// The directory refused it (bad input, duplicate, not found).
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Storage or audit failed.
    #[error("storage: {0}")]
    Store(String),
    /// Input refused.
    #[error("{0}")]
    Invalid(String),
}

impl From<StoreError> for OfficerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(_) | StoreError::NotFound(_) => {
                OfficerError::Directory(DirectoryError::Store(e))
            }
            other => OfficerError::Store(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for OfficerError {
    fn from(e: sqlx::Error) -> Self {
        OfficerError::Store(e.to_string())
    }
}

impl From<audit::AuditError> for OfficerError {
    fn from(e: audit::AuditError) -> Self {
        OfficerError::Store(e.to_string())
    }
}

/// Who is acting, and with which key their actions are signed into the log.
pub struct Officer<'a> {
    /// The database.
    pub store: &'a Store,
    /// The audit key.
    pub key: &'a AuditKey,
    /// The officer's user ID (or `root@<host>` for bootstrap on the server host).
    pub actor: &'a str,
}

impl Officer<'_> {
    fn event(&self, action: &str, target: &str, detail: Value, now_ms: i64) -> Event {
        Event {
            at_ms: now_ms,
            actor: self.actor.to_owned(),
            workstation: None,
            action: action.to_owned(),
            target: Some(target.to_owned()),
            outcome: "ok".to_owned(),
            detail,
        }
    }

    async fn log(
        &self,
        tx: &mut crate::store::Tx,
        action: &str,
        target: &str,
        detail: Value,
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        audit::append(
            tx,
            self.store.backend(),
            self.key,
            &self.event(action, target, detail, now_ms),
        )
        .await?;
        Ok(())
    }

    /// Records a refused operation in a transaction of its own (the refused
    /// one rolled back), so every admin action is in the log with its result.
    async fn refused<T>(
        &self,
        action: &str,
        target: &str,
        now_ms: i64,
        result: Result<T, OfficerError>,
    ) -> Result<T, OfficerError> {
        if let Err(e) = &result {
            let mut event = self.event(action, target, json!({ "error": e.to_string() }), now_ms);
            event.outcome = "refused".into();
            audit::record(self.store, self.key, &event).await?;
        }
        result
    }

    /// Adds a user.
    pub async fn add_user(
        &self,
        id: &str,
        display_name: &str,
        roles: &[String],
        now_ms: i64,
    ) -> Result<User, OfficerError> {
        let result = self.add_user_inner(id, display_name, roles, now_ms).await;
        self.refused("user.add", id, now_ms, result).await
    }

    async fn add_user_inner(
        &self,
        id: &str,
        display_name: &str,
        roles: &[String],
        now_ms: i64,
    ) -> Result<User, OfficerError> {
        let mut tx = self.store.begin().await?;
        let user = directory::create_user(&mut tx, id, display_name, roles, now_ms).await?;
        self.log(
            &mut tx,
            "user.add",
            id,
            json!({ "roles": roles, "display_name": display_name }),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Suspends, disables or reactivates a user.
    pub async fn set_user_state(
        &self,
        id: &str,
        state: UserState,
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        let result = self.set_user_state_inner(id, state, now_ms).await;
        self.refused("user.state", id, now_ms, result).await
    }

    async fn set_user_state_inner(
        &self,
        id: &str,
        state: UserState,
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        let mut tx = self.store.begin().await?;
        directory::set_user_state(&mut tx, id, state, now_ms).await?;
        self.log(&mut tx, "user.state", id, json!({ "state": state }), now_ms)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a user's roles.
    pub async fn set_user_roles(
        &self,
        id: &str,
        roles: &[String],
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        let result = self.set_user_roles_inner(id, roles, now_ms).await;
        self.refused("user.roles", id, now_ms, result).await
    }

    async fn set_user_roles_inner(
        &self,
        id: &str,
        roles: &[String],
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        let mut tx = self.store.begin().await?;
        directory::set_user_roles(&mut tx, id, roles, now_ms).await?;
        self.log(&mut tx, "user.roles", id, json!({ "roles": roles }), now_ms)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Lifts a lockout and clears the user's failure counters (R-RATE-1).
    pub async fn unlock_user(&self, id: &str, now_ms: i64) -> Result<(), OfficerError> {
        let result = self.unlock_user_inner(id, now_ms).await;
        self.refused("user.unlock", id, now_ms, result).await
    }

    async fn unlock_user_inner(&self, id: &str, now_ms: i64) -> Result<(), OfficerError> {
        if directory::user(self.store, id).await?.is_none() {
            return Err(StoreError::NotFound(format!("user {id}")).into());
        }
        let mut tx = self.store.begin().await?;
        let before = throttle::read(&mut tx, &throttle::user_key(id)).await?;
        throttle::clear(&mut tx, &throttle::user_key(id)).await?;
        self.log(
            &mut tx,
            "user.unlock",
            id,
            json!({ "failures": before.failures, "was_locked": before.locked }),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Registers a workstation by its certificate fingerprint (R-TLS-2).
    pub async fn add_workstation(
        &self,
        id: &str,
        cert_sha256: &str,
        group: &str,
        location: &str,
        now_ms: i64,
    ) -> Result<Workstation, OfficerError> {
        let result = self
            .add_workstation_inner(id, cert_sha256, group, location, now_ms)
            .await;
        self.refused("workstation.add", id, now_ms, result).await
    }

    async fn add_workstation_inner(
        &self,
        id: &str,
        cert_sha256: &str,
        group: &str,
        location: &str,
        now_ms: i64,
    ) -> Result<Workstation, OfficerError> {
        let mut tx = self.store.begin().await?;
        let ws = directory::create_workstation(&mut tx, id, cert_sha256, group, location, now_ms)
            .await?;
        self.log(
            &mut tx,
            "workstation.add",
            id,
            json!({ "cert_sha256": ws.cert_sha256, "group": group, "location": location }),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(ws)
    }

    /// Suspends, decommissions or reactivates a workstation (R-DEV-1).
    pub async fn set_workstation_state(
        &self,
        id: &str,
        state: DeviceState,
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        let result = self.set_workstation_state_inner(id, state, now_ms).await;
        self.refused("workstation.state", id, now_ms, result).await
    }

    async fn set_workstation_state_inner(
        &self,
        id: &str,
        state: DeviceState,
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        let mut tx = self.store.begin().await?;
        directory::set_workstation_state(&mut tx, id, state, now_ms).await?;
        self.log(
            &mut tx,
            "workstation.state",
            id,
            json!({ "state": state }),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        // Connections that cached the row read it again (R-TLS-2).
        crate::api::workstation::invalidate_workstations();
        Ok(())
    }

    /// Registers a contactless badge's UID to a user (a weak possession factor).
    pub async fn register_badge(
        &self,
        user: &str,
        uid: &[u8],
        now_ms: i64,
    ) -> Result<String, OfficerError> {
        let result = self.register_badge_inner(user, uid, now_ms).await;
        self.refused("device.register", user, now_ms, result).await
    }

    async fn register_badge_inner(
        &self,
        user: &str,
        uid: &[u8],
        now_ms: i64,
    ) -> Result<String, OfficerError> {
        if !matches!(uid.len(), 4 | 7 | 10) {
            return Err(OfficerError::Invalid(
                "a badge UID is 4, 7 or 10 bytes".into(),
            ));
        }
        let id = badge_device_id(uid);
        let mut tx = self.store.begin().await?;
        directory::create_device(
            &mut tx,
            &NewDevice {
                id: &id,
                kind: DeviceKind::Badge,
                owner: Some(user),
                description: "staff badge",
                public_key: None,
                attributes: json!({}),
            },
            now_ms,
        )
        .await?;
        self.log(
            &mut tx,
            "device.register",
            &id,
            json!({ "kind": "badge", "owner": user }),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Registers a biometric reader with its signing key (R-BIO-3).
    pub async fn register_reader(
        &self,
        id: &str,
        public_key: &[u8],
        protection: &str,
        presentation_attack_detection: bool,
        description: &str,
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        let result = self
            .register_reader_inner(
                id,
                public_key,
                protection,
                presentation_attack_detection,
                description,
                now_ms,
            )
            .await;
        self.refused("device.register", id, now_ms, result).await
    }

    async fn register_reader_inner(
        &self,
        id: &str,
        public_key: &[u8],
        protection: &str,
        presentation_attack_detection: bool,
        description: &str,
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        if !matches!(protection, "match_on_reader" | "sealed_template") {
            return Err(OfficerError::Invalid(
                "a reader's protection is match_on_reader or sealed_template (R-BIO-1)".into(),
            ));
        }
        let attributes = json!({ "protection": protection, "pad": presentation_attack_detection });
        let mut tx = self.store.begin().await?;
        directory::create_device(
            &mut tx,
            &NewDevice {
                id,
                kind: DeviceKind::BiometricReader,
                owner: None,
                description,
                public_key: Some(public_key),
                attributes: attributes.clone(),
            },
            now_ms,
        )
        .await?;
        self.log(
            &mut tx,
            "device.register",
            id,
            json!({ "kind": "biometric_reader", "attributes": attributes }),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Suspends, decommissions or reactivates a device (R-DEV-1).
    pub async fn set_device_state(
        &self,
        id: &str,
        state: DeviceState,
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        let result = self.set_device_state_inner(id, state, now_ms).await;
        self.refused("device.state", id, now_ms, result).await
    }

    async fn set_device_state_inner(
        &self,
        id: &str,
        state: DeviceState,
        now_ms: i64,
    ) -> Result<(), OfficerError> {
        let mut tx = self.store.begin().await?;
        let detail = if id.starts_with("fido2:") {
            // A FIDO2 key: its state lives on its credential (suspended
            // after a sign-counter regression, re-enabled here).
            let before = crate::credentials::set_fido2_state(&mut tx, id, state)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("device {id}")))?;
            json!({ "state": state, "kind": "fido2_token", "previous": before })
        } else {
            directory::set_device_state(&mut tx, id, state, now_ms).await?;
            json!({ "state": state })
        };
        self.log(&mut tx, "device.state", id, detail, now_ms)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Officer<'_> {
    /// Closes a pending break-glass review item with an outcome and a note
    /// (R-EMERG-1). Refused, and audited as refused, for the officer's own
    /// break-glass access, an item already closed, or a bad note.
    pub async fn close_review(
        &self,
        id: &str,
        outcome: crate::review::Outcome,
        note: &str,
        now_ms: i64,
    ) -> Result<crate::review::Review, ReviewCloseError> {
        let result = self.close_review_inner(id, outcome, note, now_ms).await;
        if let Err(e) = &result {
            let mut event = self.event(
                "review.close",
                &id.chars().take(64).collect::<String>(),
                json!({ "error": e.to_string(), "outcome": outcome.as_str() }),
                now_ms,
            );
            event.outcome = "refused".into();
            audit::record(self.store, self.key, &event)
                .await
                .map_err(|e| ReviewCloseError::Store(e.to_string()))?;
        }
        result
    }

    async fn close_review_inner(
        &self,
        id: &str,
        outcome: crate::review::Outcome,
        note: &str,
        now_ms: i64,
    ) -> Result<crate::review::Review, ReviewCloseError> {
        let mut tx = self.store.begin().await?;
        let item = crate::review::close(&mut tx, id, self.actor, outcome, note, now_ms).await?;
        audit::append(
            &mut tx,
            self.store.backend(),
            self.key,
            &self.event(
                "review.close",
                id,
                json!({
                    "outcome": outcome.as_str(),
                    "note": note,
                    "user": item.user,
                    "workstation": item.workstation,
                    "purpose": item.purpose,
                    "audit_seq": item.audit_seq,
                }),
                now_ms,
            ),
        )
        .await
        .map_err(|e| ReviewCloseError::Store(e.to_string()))?;
        tx.commit().await.map_err(StoreError::Db)?;
        Ok(item)
    }
}

/// Why a review could not be closed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewCloseError {
    /// Refused: not found, closed, own access, bad note.
    #[error(transparent)]
    Review(#[from] crate::review::ReviewError),
    /// Storage or audit failed.
    #[error("storage: {0}")]
    Store(String),
}

impl From<StoreError> for ReviewCloseError {
    fn from(e: StoreError) -> Self {
        ReviewCloseError::Review(crate::review::ReviewError::Store(e))
    }
}

/// Every device for the officer's listing (R-DEV-1): registered devices
/// (readers, badges) and FIDO2 keys (kind `fido2_token`, ID `fido2:<hex>`,
/// with the state of their credential), in ID order.
pub async fn device_listing(store: &Store) -> Result<Vec<directory::Device>, StoreError> {
    let mut list = directory::devices(store).await?;
    list.extend(crate::credentials::fido2_devices(store).await?);
    list.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(list)
}

/// Audit entries as JSON Lines (one entry per line), from `after` on.
pub async fn export_audit(
    store: &Store,
    after: i64,
    out: &mut impl std::io::Write,
) -> Result<u64, OfficerError> {
    let mut count = 0u64;
    let mut cursor = after;
    loop {
        let page = audit::page(store, cursor, 1000).await?;
        let Some(last) = page.last() else {
            break;
        };
        cursor = last.seq;
        for entry in &page {
            let line =
                serde_json::to_string(entry).map_err(|e| OfficerError::Store(e.to_string()))?;
            writeln!(out, "{line}").map_err(|e| OfficerError::Store(e.to_string()))?;
            count += 1;
        }
    }
    Ok(count)
}
