//! The directory: users, workstations, and devices (readers, tokens, cards,
//! badges), each with a state and, for machines, the time of last contact
//! (R-DEV-1). Writes take the caller's transaction so the audit entry that
//! records them commits with them.

use crate::store::{unique, Store, StoreError, Tx};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::fmt;
use std::str::FromStr;

/// The longest identifier (user, workstation, device).
pub const MAX_ID_LEN: usize = 64;
/// The longest display name, location or description.
pub const MAX_TEXT_LEN: usize = 256;
/// The most roles a user may hold.
pub const MAX_ROLES: usize = 32;
/// The largest device public key or attribute document.
pub const MAX_BLOB_LEN: usize = 8 * 1024;

/// Why directory input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// An identifier is empty, too long or has characters outside `[A-Za-z0-9._@-]`.
    #[error("{0}: 1 to 64 letters, digits, '.', '_', '@' or '-'")]
    Id(&'static str),
    /// A text field is too long.
    #[error("{0} is longer than 256 bytes")]
    Text(&'static str),
    /// Too many roles.
    #[error("a user may have at most 32 roles")]
    Roles,
    /// A value is not one of the allowed ones.
    #[error("{field}: unknown value {value:?}")]
    Value {
        /// The field.
        field: &'static str,
        /// What was given (truncated).
        value: String,
    },
    /// A key or attribute document is too large.
    #[error("{0} is larger than 8 KiB")]
    Blob(&'static str),
}

/// Checks an identifier.
pub fn check_id(what: &'static str, id: &str) -> Result<(), InvalidInput> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    ok.then_some(()).ok_or(InvalidInput::Id(what))
}

fn check_text(what: &'static str, text: &str) -> Result<(), InvalidInput> {
    (text.len() <= MAX_TEXT_LEN && !text.chars().any(char::is_control))
        .then_some(())
        .ok_or(InvalidInput::Text(what))
}

macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = InvalidInput;
            fn from_str(s: &str) -> Result<Self, InvalidInput> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(InvalidInput::Value {
                        field: stringify!($name),
                        value: s.chars().take(32).collect(),
                    }),
                }
            }
        }
    };
}

state_enum!(
    /// A user's state.
    UserState {
        /// May authenticate.
        Active = "active",
        /// Temporarily barred (leave, investigation).
        Suspended = "suspended",
        /// Left the hospital; kept for the audit trail.
        Disabled = "disabled",
    }
);

state_enum!(
    /// A workstation's or device's state (R-DEV-1).
    DeviceState {
        /// In use.
        Active = "active",
        /// Temporarily refused (lost, under repair).
        Suspended = "suspended",
        /// Permanently refused; kept for the audit trail.
        Decommissioned = "decommissioned",
    }
);

state_enum!(
    /// What kind of device.
    DeviceKind {
        /// A biometric reader with its own signing key (R-BIO-3).
        BiometricReader = "biometric_reader",
        /// A FIDO2 authenticator.
        Fido2Token = "fido2_token",
        /// A smartcard (PIV, HPKI).
        Smartcard = "smartcard",
        /// A contactless badge.
        Badge = "badge",
        /// A TOTP device or app.
        TotpDevice = "totp_device",
    }
);

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Login name.
    pub id: String,
    /// Name shown to people.
    pub display_name: String,
    /// Roles the policy selects on.
    pub roles: Vec<String>,
    /// State.
    pub state: UserState,
    /// Created, ms since the epoch.
    pub created_at: i64,
    /// Last changed, ms since the epoch.
    pub updated_at: i64,
}

/// A workstation, identified by its TLS client certificate (R-TLS-2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workstation {
    /// Its name.
    pub id: String,
    /// SHA-256 of its certificate (DER), hex.
    pub cert_sha256: String,
    /// The policy's workstation group.
    pub group: String,
    /// Where it stands.
    pub location: String,
    /// State.
    pub state: DeviceState,
    /// Last contact, ms since the epoch, to within [`CONTACT_RESOLUTION_MS`].
    pub last_contact: Option<i64>,
    /// Created, ms since the epoch.
    pub created_at: i64,
}

/// Last contact is recorded to within this much (R-DEV-1): a busy
/// workstation calls in many times a second, and rewriting its row's page
/// at each call was a sixth of the database writes of a login.
pub const CONTACT_RESOLUTION_MS: i64 = 10_000;

/// The contact times older than this are due for an update at `now_ms`.
pub fn contact_stale_before(now_ms: i64) -> i64 {
    now_ms.saturating_sub(CONTACT_RESOLUTION_MS)
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Its identifier (serial, reader ID, credential ID).
    pub id: String,
    /// What it is.
    pub kind: DeviceKind,
    /// The user it belongs to, if personal.
    pub owner: Option<String>,
    /// Free text.
    pub description: String,
    /// Its public key (reader signing key), if any.
    #[serde(skip)]
    pub public_key: Option<Vec<u8>>,
    /// Kind-specific attributes (JSON object).
    pub attributes: serde_json::Value,
    /// State.
    pub state: DeviceState,
    /// Last contact, ms since the epoch, to within [`CONTACT_RESOLUTION_MS`].
    pub last_contact: Option<i64>,
    /// Created, ms since the epoch.
    pub created_at: i64,
}

/// Directory errors.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Bad input.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DirectoryError {
    fn from(e: sqlx::Error) -> Self {
        DirectoryError::Store(StoreError::Db(e))
    }
}

fn corrupt(what: &str) -> impl FnOnce(InvalidInput) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// Sets `state` of the row `id` in `table` (a fixed name, never input).
async fn set_state(
    tx: &mut Tx,
    table: &'static str,
    what: &str,
    id: &str,
    state: &str,
    now_ms: i64,
) -> Result<(), DirectoryError> {
    let sql = match table {
        "users" => "UPDATE users SET state = $1, updated_at = $2 WHERE id = $3",
        "workstations" => "UPDATE workstations SET state = $1, updated_at = $2 WHERE id = $3",
        _ => "UPDATE devices SET state = $1, updated_at = $2 WHERE id = $3",
    };
    let done = sqlx::query(sql)
        .bind(state)
        .bind(now_ms)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("{what} {id}")).into());
    }
    Ok(())
}

/// Adds a user.
pub async fn create_user(
    tx: &mut Tx,
    id: &str,
    display_name: &str,
    roles: &[String],
    now_ms: i64,
) -> Result<User, DirectoryError> {
    check_id("user ID", id)?;
    check_text("display name", display_name)?;
    if roles.len() > MAX_ROLES {
        return Err(InvalidInput::Roles.into());
    }
    for role in roles {
        check_id("role", role)?;
    }
    let roles_json = serde_json::to_string(roles).map_err(|_| InvalidInput::Roles)?;
    sqlx::query(
        "INSERT INTO users (id, display_name, roles, state, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(id)
    .bind(display_name)
    .bind(roles_json)
    .bind(UserState::Active.as_str())
    .bind(now_ms)
    .execute(&mut **tx)
    .await
    .map_err(unique(format!("user {id}")))?;
    Ok(User {
        id: id.to_owned(),
        display_name: display_name.to_owned(),
        roles: roles.to_vec(),
        state: UserState::Active,
        created_at: now_ms,
        updated_at: now_ms,
    })
}

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User, StoreError> {
    let roles: String = row.try_get("roles")?;
    let state: String = row.try_get("state")?;
    Ok(User {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        roles: serde_json::from_str(&roles)
            .map_err(|_| StoreError::Corrupt("user roles are not a JSON list".into()))?,
        state: state.parse().map_err(corrupt("user state"))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Finds a user.
pub async fn user(store: &Store, id: &str) -> Result<Option<User>, StoreError> {
    let row = sqlx::query(
        "SELECT id, display_name, roles, state, created_at, updated_at FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// Lists users in ID order.
pub async fn users(store: &Store) -> Result<Vec<User>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, display_name, roles, state, created_at, updated_at FROM users ORDER BY id",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(user_from_row).collect()
}

/// Changes a user's state.
pub async fn set_user_state(
    tx: &mut Tx,
    id: &str,
    state: UserState,
    now_ms: i64,
) -> Result<(), DirectoryError> {
    set_state(tx, "users", "user", id, state.as_str(), now_ms).await
}

/// Changes a user's roles.
pub async fn set_user_roles(
    tx: &mut Tx,
    id: &str,
    roles: &[String],
    now_ms: i64,
) -> Result<(), DirectoryError> {
    if roles.len() > MAX_ROLES {
        return Err(InvalidInput::Roles.into());
    }
    for role in roles {
        check_id("role", role)?;
    }
    let roles_json = serde_json::to_string(roles).map_err(|_| InvalidInput::Roles)?;
    let done = sqlx::query("UPDATE users SET roles = $1, updated_at = $2 WHERE id = $3")
        .bind(roles_json)
        .bind(now_ms)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!("user {id}")).into());
    }
    Ok(())
}

/// Registers a workstation by its certificate's SHA-256 (hex).
pub async fn create_workstation(
    tx: &mut Tx,
    id: &str,
    cert_sha256: &str,
    group: &str,
    location: &str,
    now_ms: i64,
) -> Result<Workstation, DirectoryError> {
    check_id("workstation ID", id)?;
    check_id("workstation group", group)?;
    check_text("location", location)?;
    if cert_sha256.len() != 64 || !cert_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(InvalidInput::Value {
            field: "cert_sha256",
            value: cert_sha256.chars().take(32).collect(),
        }
        .into());
    }
    let fingerprint = cert_sha256.to_ascii_lowercase();
    sqlx::query(
        "INSERT INTO workstations (id, cert_sha256, group_name, location, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(id)
    .bind(&fingerprint)
    .bind(group)
    .bind(location)
    .bind(DeviceState::Active.as_str())
    .bind(now_ms)
    .execute(&mut **tx)
    .await
    .map_err(unique(format!("workstation {id} or its certificate")))?;
    Ok(Workstation {
        id: id.to_owned(),
        cert_sha256: fingerprint,
        group: group.to_owned(),
        location: location.to_owned(),
        state: DeviceState::Active,
        last_contact: None,
        created_at: now_ms,
    })
}

fn workstation_from_row(row: &sqlx::any::AnyRow) -> Result<Workstation, StoreError> {
    let state: String = row.try_get("state")?;
    Ok(Workstation {
        id: row.try_get("id")?,
        cert_sha256: row.try_get("cert_sha256")?,
        group: row.try_get("group_name")?,
        location: row.try_get("location")?,
        state: state.parse().map_err(corrupt("workstation state"))?,
        last_contact: row.try_get("last_contact")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Finds the workstation a TLS client certificate belongs to.
pub async fn workstation_by_cert(
    store: &Store,
    cert_sha256: &str,
) -> Result<Option<Workstation>, StoreError> {
    let row = sqlx::query(
        "SELECT id, cert_sha256, group_name, location, state, last_contact, created_at \
         FROM workstations WHERE cert_sha256 = $1",
    )
    .bind(cert_sha256.to_ascii_lowercase())
    .fetch_optional(store.reader())
    .await?;
    row.as_ref().map(workstation_from_row).transpose()
}

/// Lists workstations in ID order.
pub async fn workstations(store: &Store) -> Result<Vec<Workstation>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, cert_sha256, group_name, location, state, last_contact, created_at \
         FROM workstations ORDER BY id",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(workstation_from_row).collect()
}

/// Changes a workstation's state (suspend, decommission).
pub async fn set_workstation_state(
    tx: &mut Tx,
    id: &str,
    state: DeviceState,
    now_ms: i64,
) -> Result<(), DirectoryError> {
    set_state(
        tx,
        "workstations",
        "workstation",
        id,
        state.as_str(),
        now_ms,
    )
    .await
}

/// Records that a workstation called in, unless it did less than
/// [`CONTACT_RESOLUTION_MS`] ago. Only ever moves forward in time.
pub async fn touch_workstation(store: &Store, id: &str, now_ms: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE workstations SET last_contact = $1 WHERE id = $2 AND (last_contact IS NULL OR last_contact <= $3)",
    )
    .bind(now_ms)
    .bind(id)
    .bind(contact_stale_before(now_ms))
    .execute(store.pool())
    .await?;
    Ok(())
}

/// [`touch_workstation`] inside the caller's transaction, so that a
/// request's decision and its contact time cost one commit.
pub async fn touch_workstation_in(tx: &mut Tx, id: &str, now_ms: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE workstations SET last_contact = $1 WHERE id = $2 AND (last_contact IS NULL OR last_contact <= $3)",
    )
    .bind(now_ms)
    .bind(id)
    .bind(contact_stale_before(now_ms))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What a new device is.
#[derive(Debug, Clone)]
pub struct NewDevice<'a> {
    /// Identifier.
    pub id: &'a str,
    /// Kind.
    pub kind: DeviceKind,
    /// Owner, if personal.
    pub owner: Option<&'a str>,
    /// Free text.
    pub description: &'a str,
    /// Public key, if any.
    pub public_key: Option<&'a [u8]>,
    /// Kind-specific attributes (a JSON object).
    pub attributes: serde_json::Value,
}

/// Registers a device.
pub async fn create_device(
    tx: &mut Tx,
    new: &NewDevice<'_>,
    now_ms: i64,
) -> Result<Device, DirectoryError> {
    check_id("device ID", new.id)?;
    if let Some(owner) = new.owner {
        check_id("owner", owner)?;
    }
    check_text("description", new.description)?;
    if new.public_key.is_some_and(|k| k.len() > MAX_BLOB_LEN) {
        return Err(InvalidInput::Blob("public key").into());
    }
    if !new.attributes.is_object() {
        return Err(InvalidInput::Value {
            field: "attributes",
            value: "not an object".into(),
        }
        .into());
    }
    let attributes = new.attributes.to_string();
    if attributes.len() > MAX_BLOB_LEN {
        return Err(InvalidInput::Blob("attributes").into());
    }
    sqlx::query(
        "INSERT INTO devices (id, kind, owner, description, public_key, attributes, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(new.id)
    .bind(new.kind.as_str())
    .bind(new.owner)
    .bind(new.description)
    .bind(new.public_key.map(<[u8]>::to_vec))
    .bind(&attributes)
    .bind(DeviceState::Active.as_str())
    .bind(now_ms)
    .execute(&mut **tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            DirectoryError::Store(StoreError::NotFound(format!(
                "owner {}",
                new.owner.unwrap_or("")
            )))
        }
        _ => DirectoryError::Store(unique(format!("device {}", new.id))(e)),
    })?;
    Ok(Device {
        id: new.id.to_owned(),
        kind: new.kind,
        owner: new.owner.map(str::to_owned),
        description: new.description.to_owned(),
        public_key: new.public_key.map(<[u8]>::to_vec),
        attributes: new.attributes.clone(),
        state: DeviceState::Active,
        last_contact: None,
        created_at: now_ms,
    })
}

fn device_from_row(row: &sqlx::any::AnyRow) -> Result<Device, StoreError> {
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let attributes: String = row.try_get("attributes")?;
    Ok(Device {
        id: row.try_get("id")?,
        kind: kind.parse().map_err(corrupt("device kind"))?,
        owner: row.try_get("owner")?,
        description: row.try_get("description")?,
        public_key: row.try_get("public_key")?,
        attributes: serde_json::from_str(&attributes)
            .map_err(|_| StoreError::Corrupt("device attributes are not JSON".into()))?,
        state: state.parse().map_err(corrupt("device state"))?,
        last_contact: row.try_get("last_contact")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Finds a device.
pub async fn device(store: &Store, id: &str) -> Result<Option<Device>, StoreError> {
    let row = sqlx::query(
        "SELECT id, kind, owner, description, public_key, attributes, state, last_contact, created_at \
         FROM devices WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
    row.as_ref().map(device_from_row).transpose()
}

/// Lists devices in ID order.
pub async fn devices(store: &Store) -> Result<Vec<Device>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, kind, owner, description, public_key, attributes, state, last_contact, created_at \
         FROM devices ORDER BY id",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(device_from_row).collect()
}

/// Changes a device's state.
pub async fn set_device_state(
    tx: &mut Tx,
    id: &str,
    state: DeviceState,
    now_ms: i64,
) -> Result<(), DirectoryError> {
    set_state(tx, "devices", "device", id, state.as_str(), now_ms).await
}

/// Records that a device was used, unless it was less than
/// [`CONTACT_RESOLUTION_MS`] ago. Only ever moves forward in time.
pub async fn touch_device(store: &Store, id: &str, now_ms: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE devices SET last_contact = $1 WHERE id = $2 AND (last_contact IS NULL OR last_contact <= $3)",
    )
    .bind(now_ms)
    .bind(id)
    .bind(contact_stale_before(now_ms))
    .execute(store.pool())
    .await?;
    Ok(())
}
