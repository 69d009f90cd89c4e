//! Enrolled credentials: server PINs (Argon2id PHC strings), TOTP seeds and
//! biometric templates (both encrypted at rest with the data key, bound to
//! their row by the associated data, R-BIO-5), and smartcard certificates.
//!
//! Enrollment writes the credential and its audit entry in one transaction.

use crate::audit::{self, AuditKey, Event};
use crate::store::{Store, StoreError};
use clinauth_biometric::Template;
use clinauth_factors::at_rest::{self, DataKey};
use clinauth_factors::fido2::{Fido2Credential, Fido2User, Fido2Verifier, RegisteredCredential};
use clinauth_factors::pin::{self, SecretPin};
use clinauth_factors::totp::{self, TotpSecret};
use ring::rand::SystemRandom;
use serde_json::json;
use sqlx::Row;
use zeroize::Zeroizing;

/// Why a credential could not be enrolled or read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The PIN breaks the PIN policy.
    #[error("PIN refused: {0}")]
    PinPolicy(String),
    /// The user does not exist.
    #[error("user {0} not found")]
    NoUser(String),
    /// Cryptography failed (randomness, a stored value that will not open).
    #[error("{0}")]
    Crypto(String),
}

impl From<sqlx::Error> for CredentialError {
    fn from(e: sqlx::Error) -> Self {
        CredentialError::Store(StoreError::Db(e))
    }
}

impl From<audit::AuditError> for CredentialError {
    fn from(e: audit::AuditError) -> Self {
        CredentialError::Crypto(e.to_string())
    }
}

/// The credential row IDs.
pub fn pin_id(user: &str) -> String {
    format!("pin:{user}")
}

/// See [`pin_id`].
pub fn totp_id(user: &str) -> String {
    format!("totp:{user}")
}

/// Uses an enrollment ceremony once (any replica) and returns its state.
async fn consume_enrollment(
    store: &Store,
    id: &str,
    user: &str,
    kind: &str,
    now_ms: i64,
) -> Result<String, CredentialError> {
    let used = sqlx::query(
        "UPDATE enrollments SET used_at = $1 WHERE id = $2 AND user_id = $3 AND kind = $4 AND used_at IS NULL AND expires_at >= $1",
    )
    .bind(now_ms)
    .bind(id)
    .bind(user)
    .bind(kind)
    .execute(store.pool())
    .await?
    .rows_affected();
    if used != 1 {
        return Err(CredentialError::Crypto(
            "unknown, used or expired enrollment".into(),
        ));
    }
    Ok(
        sqlx::query_scalar("SELECT state FROM enrollments WHERE id = $1")
            .bind(id)
            .fetch_one(store.pool())
            .await?,
    )
}

/// The WebAuthn user handle: stable per user, not the login name.
pub fn fido2_user_handle(user: &str) -> [u8; 16] {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("clinauth-fido2-user\0{user}").as_bytes(),
    );
    let mut out = [0u8; 16];
    out.copy_from_slice(digest.as_ref().get(..16).unwrap_or(&[0u8; 16]));
    out
}

/// The credential row ID of a FIDO2 credential.
pub fn fido2_id(credential_id: &[u8]) -> String {
    format!("fido2:{}", crate::hex::encode(credential_id))
}

/// The user's FIDO2 credentials (row ID, credential).
pub async fn fido2_credentials(
    store: &Store,
    user: &str,
) -> Result<Vec<(String, Fido2Credential)>, CredentialError> {
    let rows = sqlx::query(
        "SELECT id, public_data FROM credentials WHERE user_id = $1 AND kind = 'fido2' AND state = 'active' ORDER BY id",
    )
    .bind(user)
    .fetch_all(store.reader())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let bytes: Vec<u8> = row.try_get("public_data")?;
        let text = String::from_utf8(bytes)
            .map_err(|_| CredentialError::Crypto("stored credential is not text".into()))?;
        let credential = Fido2Credential::from_json(&text)
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        out.push((row.try_get("id")?, credential));
    }
    Ok(out)
}

/// The state of a FIDO2 credential row and its owner, if it exists.
pub async fn fido2_state(
    store: &Store,
    row_id: &str,
) -> Result<Option<(String, String)>, CredentialError> {
    let row =
        sqlx::query("SELECT user_id, state FROM credentials WHERE id = $1 AND kind = 'fido2'")
            .bind(row_id)
            .fetch_optional(store.reader())
            .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((row.try_get("user_id")?, row.try_get("state")?)))
}

/// Changes the state of a FIDO2 credential (suspended after a counter
/// regression, re-enabled by an officer) inside the caller's transaction.
/// Returns the state it had, or `None` when there is no such credential.
pub async fn set_fido2_state(
    tx: &mut crate::store::Tx,
    row_id: &str,
    state: crate::directory::DeviceState,
) -> Result<Option<String>, StoreError> {
    let before: Option<String> =
        sqlx::query_scalar("SELECT state FROM credentials WHERE id = $1 AND kind = 'fido2'")
            .bind(row_id)
            .fetch_optional(&mut **tx)
            .await?;
    if before.is_some() {
        sqlx::query("UPDATE credentials SET state = $1 WHERE id = $2 AND kind = 'fido2'")
            .bind(state.as_str())
            .bind(row_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(before)
}

/// Every FIDO2 credential as a device of kind `fido2_token` (R-DEV-1), for
/// the officer's device listing: its ID is the credential row ID
/// (`fido2:<credential ID in hex>`), its state the credential's.
pub async fn fido2_devices(store: &Store) -> Result<Vec<crate::directory::Device>, StoreError> {
    use crate::directory::{Device, DeviceKind, DeviceState};
    let rows = sqlx::query(
        "SELECT id, user_id, public_data, counter, state, created_at, last_used FROM credentials WHERE kind = 'fido2' ORDER BY id",
    )
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let state: String = row.try_get("state")?;
        let bytes: Vec<u8> = row
            .try_get::<Option<Vec<u8>>, _>("public_data")?
            .unwrap_or_default();
        let credential = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| Fido2Credential::from_json(t).ok());
        let counter: i64 = row.try_get("counter")?;
        out.push(Device {
            id: row.try_get("id")?,
            kind: DeviceKind::Fido2Token,
            owner: Some(row.try_get("user_id")?),
            description: "FIDO2 authenticator".into(),
            public_key: None,
            attributes: json!({
                "counter": credential.as_ref().map(|c| i64::from(c.counter())).unwrap_or(counter),
                "aaguid": credential.as_ref().and_then(|c| c.aaguid()).map(|a| a.to_string()),
                "user_verified_at_registration": credential.as_ref().map(|c| c.user_verified_at_registration()),
            }),
            state: state
                .parse::<DeviceState>()
                .map_err(|e| StoreError::Corrupt(format!("credential state: {e}")))?,
            last_contact: row.try_get("last_used")?,
            created_at: row.try_get("created_at")?,
        });
    }
    Ok(out)
}

/// The credential ID of a card: its certificate's SHA-256.
pub fn card_id(certificate: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, certificate);
    format!("card:{}", crate::hex::encode(digest.as_ref()))
}

/// An enrolled card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledCard {
    /// Its owner.
    pub user: String,
    /// Its key needs the card PIN.
    pub pin_protected: bool,
}

/// The enrollment of a card certificate, if any.
pub async fn card(
    store: &Store,
    certificate: &[u8],
) -> Result<Option<EnrolledCard>, CredentialError> {
    let row = sqlx::query("SELECT user_id, counter FROM credentials WHERE id = $1 AND kind = 'card' AND state = 'active'")
        .bind(card_id(certificate))
        .fetch_optional(store.reader())
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(EnrolledCard {
        user: row.try_get("user_id")?,
        pin_protected: row.try_get::<i64, _>("counter")? == 1,
    }))
}

fn template_aad(user: &str) -> Vec<u8> {
    format!("clinauth-template:{user}").into_bytes()
}

fn totp_aad(user: &str) -> Vec<u8> {
    format!("clinauth-totp:{user}").into_bytes()
}

/// A credential row to write.
struct NewRow<'a> {
    id: &'a str,
    kind: &'a str,
    secret: Option<Vec<u8>>,
    public_data: Option<Vec<u8>>,
    counter: i64,
}

/// Who enrolls credentials, with which keys; each enrollment is audited
/// under `actor`.
pub struct Enroller<'a> {
    /// The database.
    pub store: &'a Store,
    /// The audit key.
    pub audit: &'a AuditKey,
    /// The data key that seals secrets at rest.
    pub data: &'a DataKey,
    /// The officer (or `root@<host>`).
    pub actor: &'a str,
}

async fn upsert(
    e: &Enroller<'_>,
    user: &str,
    row: NewRow<'_>,
    now_ms: i64,
) -> Result<(), CredentialError> {
    let (store, key, actor) = (e.store, e.audit, e.actor);
    let NewRow {
        id,
        kind,
        secret,
        public_data,
        counter,
    } = row;
    if crate::directory::user(store, user).await?.is_none() {
        return Err(CredentialError::NoUser(user.to_owned()));
    }
    let mut tx = store.begin().await?;
    sqlx::query("DELETE FROM credentials WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO credentials (id, user_id, kind, secret, public_data, meta, counter, state, created_at) \
         VALUES ($1, $2, $3, $4, $5, '{}', $6, 'active', $7)",
    )
    .bind(id)
    .bind(user)
    .bind(kind)
    .bind(secret)
    .bind(public_data)
    .bind(counter)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    audit::append(
        &mut tx,
        store.backend(),
        key,
        &Event {
            at_ms: now_ms,
            actor: actor.to_owned(),
            workstation: None,
            action: "credential.enroll".into(),
            target: Some(user.to_owned()),
            outcome: "ok".into(),
            detail: json!({ "kind": kind, "credential": id }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

impl Enroller<'_> {
    /// Sets (or replaces) a user's server PIN after checking the PIN policy.
    pub async fn pin(
        &self,
        user: &str,
        pin: &SecretPin,
        now_ms: i64,
    ) -> Result<(), CredentialError> {
        pin::check_new_pin(pin, user).map_err(|e| CredentialError::PinPolicy(e.to_string()))?;
        let phc = pin::hash_pin(pin, &SystemRandom::new())
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        let id = pin_id(user);
        let row = NewRow {
            id: &id,
            kind: "server_pin",
            secret: Some(phc.into_bytes()),
            public_data: None,
            counter: 0,
        };
        upsert(self, user, row, now_ms).await
    }

    /// Provisions a TOTP seed for the user: stores it encrypted and returns
    /// the `otpauth://` URI and a QR PNG for the user's authenticator app.
    pub async fn totp(
        &self,
        user: &str,
        now_ms: i64,
    ) -> Result<(Zeroizing<String>, Zeroizing<Vec<u8>>), CredentialError> {
        let rng = SystemRandom::new();
        let secret =
            TotpSecret::generate(&rng).map_err(|e| CredentialError::Crypto(e.to_string()))?;
        let sealed = at_rest::seal(self.data, secret.expose(), &totp_aad(user), &rng)
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        let uri = totp::provisioning_uri(&secret, user)
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        let png = totp::provisioning_qr_png(&secret, user)
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        let id = totp_id(user);
        // -1: no step used yet.
        let row = NewRow {
            id: &id,
            kind: "totp",
            secret: Some(sealed),
            public_data: None,
            counter: -1,
        };
        upsert(self, user, row, now_ms).await?;
        Ok((uri, png))
    }

    /// Enrolls a smartcard's authentication certificate to a user, after
    /// checking it against the trust store. `pin_protected`: the card's key
    /// needs its PIN (PIV slot 9A always does).
    pub async fn card(
        &self,
        user: &str,
        certificate: &[u8],
        trust: &clinauth_factors::card::CardTrust,
        pin_protected: bool,
        now_ms: i64,
    ) -> Result<(), CredentialError> {
        let verified = trust
            .verify(
                certificate,
                &[],
                clinauth_factors::card::KeyUse::Authentication,
                clinauth_policy::UnixTime(now_ms / 1000),
            )
            .map_err(|e| CredentialError::Crypto(format!("card certificate refused: {e}")))?;
        let id = card_id(certificate);
        let row = NewRow {
            id: &id,
            kind: "card",
            secret: None,
            public_data: Some(certificate.to_vec()),
            counter: i64::from(pin_protected),
        };
        let _ = verified;
        upsert(self, user, row, now_ms).await
    }

    /// Starts registering a FIDO2 authenticator: returns the enrollment's ID
    /// and the options for the client. The ceremony's state is kept in the
    /// database, usable once, for five minutes.
    pub async fn fido2_begin(
        &self,
        verifier: &Fido2Verifier,
        user: &str,
        display_name: &str,
        require_user_verification: bool,
        now_ms: i64,
    ) -> Result<(String, String), CredentialError> {
        if crate::directory::user(self.store, user).await?.is_none() {
            return Err(CredentialError::NoUser(user.to_owned()));
        }
        let existing: Vec<Fido2Credential> = fido2_credentials(self.store, user)
            .await?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let started = verifier
            .start_registration(
                &Fido2User {
                    handle: fido2_user_handle(user),
                    name: user,
                    display_name,
                },
                &existing,
                require_user_verification,
                clinauth_policy::UnixTime(now_ms / 1000),
            )
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        let mut id_bytes = [0u8; 16];
        ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut id_bytes)
            .map_err(|_| CredentialError::Crypto("no randomness".into()))?;
        let id = crate::hex::encode(&id_bytes);
        sqlx::query(
            "INSERT INTO enrollments (id, user_id, kind, state, created_at, expires_at) VALUES ($1, $2, 'fido2', $3, $4, $5)",
        )
        .bind(&id)
        .bind(user)
        .bind(&started.state)
        .bind(now_ms)
        .bind(now_ms + 300_000)
        .execute(self.store.pool())
        .await?;
        Ok((id, started.client_options))
    }

    /// Finishes a registration begun with [`Enroller::fido2_begin`], once.
    pub async fn fido2_finish(
        &self,
        verifier: &Fido2Verifier,
        user: &str,
        enrollment: &str,
        response: &str,
        now_ms: i64,
    ) -> Result<RegisteredCredential, CredentialError> {
        let state = consume_enrollment(self.store, enrollment, user, "fido2", now_ms).await?;
        let registered = verifier
            .finish_registration(&state, response, clinauth_policy::UnixTime(now_ms / 1000))
            .map_err(|e| CredentialError::Crypto(format!("registration refused: {e}")))?;
        let json = registered
            .credential
            .to_json()
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        let id = fido2_id(&registered.credential_id);
        let row = NewRow {
            id: &id,
            kind: "fido2",
            secret: None,
            public_data: Some(json.into_bytes()),
            counter: i64::from(registered.credential.counter()),
        };
        upsert(self, user, row, now_ms).await?;
        Ok(registered)
    }

    /// Starts enrolling a fingerprint: a fresh nonce, usable once for five
    /// minutes, that the registered reader binds the capture to (R-BIO-3).
    pub async fn biometric_begin(
        &self,
        user: &str,
        now_ms: i64,
    ) -> Result<(String, [u8; 32]), CredentialError> {
        if crate::directory::user(self.store, user).await?.is_none() {
            return Err(CredentialError::NoUser(user.to_owned()));
        }
        let rng = SystemRandom::new();
        let mut id_bytes = [0u8; 16];
        let mut nonce = [0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut id_bytes)
            .and_then(|()| ring::rand::SecureRandom::fill(&rng, &mut nonce))
            .map_err(|_| CredentialError::Crypto("no randomness".into()))?;
        let id = crate::hex::encode(&id_bytes);
        sqlx::query(
            "INSERT INTO enrollments (id, user_id, kind, state, created_at, expires_at) VALUES ($1, $2, 'biometric', $3, $4, $5)",
        )
        .bind(&id)
        .bind(user)
        .bind(crate::hex::encode(&nonce))
        .bind(now_ms)
        .bind(now_ms + 300_000)
        .execute(self.store.pool())
        .await?;
        Ok((id, nonce))
    }

    /// Finishes a fingerprint enrollment: the sealed capture must come from
    /// a registered, active sealed-template reader, bound to this
    /// enrollment's nonce and user; the template is stored encrypted.
    pub async fn biometric_finish(
        &self,
        matcher: &clinauth_biometric::MatcherKey,
        user: &str,
        enrollment: &str,
        slot: u8,
        capture: &[u8],
        now_ms: i64,
    ) -> Result<(), CredentialError> {
        use clinauth_biometric::envelope::{self, Expected, ReaderPublicKey, SealedCapture};
        let nonce_hex =
            consume_enrollment(self.store, enrollment, user, "biometric", now_ms).await?;
        let nonce: [u8; 32] = crate::hex::decode(&nonce_hex, 32)
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| {
                CredentialError::Store(StoreError::Corrupt("enrollment nonce".into()))
            })?;
        let sealed = SealedCapture::from_bytes(capture)
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        let reader_id = sealed.context().reader_id.clone();
        let device = crate::directory::device(self.store, &reader_id)
            .await?
            .filter(|d| {
                d.kind == crate::directory::DeviceKind::BiometricReader
                    && d.state == crate::directory::DeviceState::Active
                    && d.attributes["protection"] == "sealed_template"
            })
            .ok_or_else(|| {
                CredentialError::Crypto(
                    "the reader is not a registered, active sealed-template reader".into(),
                )
            })?;
        let key = device
            .public_key
            .as_deref()
            .ok_or_else(|| CredentialError::Crypto("the reader has no registered key".into()))
            .and_then(|k| {
                ReaderPublicKey::from_bytes(k).map_err(|e| CredentialError::Crypto(e.to_string()))
            })?;
        let expected = Expected {
            nonce,
            reader_id,
            user_id: user.to_owned(),
            now: now_ms / 1000,
            max_age_secs: 300,
            max_future_secs: 30,
        };
        let template = envelope::open(matcher, &key, &expected, capture)
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        self.template(user, slot, &template, now_ms).await
    }

    /// Stores a biometric reference template, encrypted (R-BIO-5). A user
    /// may have several (fingers); `slot` names which.
    pub async fn template(
        &self,
        user: &str,
        slot: u8,
        template: &Template,
        now_ms: i64,
    ) -> Result<(), CredentialError> {
        let encoded = template.encode();
        let sealed = at_rest::seal(
            self.data,
            &encoded,
            &template_aad(user),
            &SystemRandom::new(),
        )
        .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        let id = format!("bio:{user}:{slot}");
        let row = NewRow {
            id: &id,
            kind: "biometric_template",
            secret: Some(sealed),
            public_data: None,
            counter: 0,
        };
        upsert(self, user, row, now_ms).await
    }
}

/// The user's PIN hash, if enrolled.
pub async fn pin_hash(store: &Store, user: &str) -> Result<Option<String>, CredentialError> {
    let row = sqlx::query("SELECT secret FROM credentials WHERE id = $1 AND state = 'active'")
        .bind(pin_id(user))
        .fetch_optional(store.reader())
        .await?;
    let Some(row) = row else { return Ok(None) };
    let bytes: Vec<u8> = row.try_get("secret")?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| CredentialError::Store(StoreError::Corrupt("PIN hash is not text".into())))
}

/// The user's TOTP seed and last used step (`None` before first use).
pub async fn totp_secret(
    store: &Store,
    data: &[DataKey],
    user: &str,
) -> Result<Option<(TotpSecret, Option<u64>)>, CredentialError> {
    let row =
        sqlx::query("SELECT secret, counter FROM credentials WHERE id = $1 AND state = 'active'")
            .bind(totp_id(user))
            .fetch_optional(store.reader())
            .await?;
    let Some(row) = row else { return Ok(None) };
    let sealed: Vec<u8> = row.try_get("secret")?;
    let counter: i64 = row.try_get("counter")?;
    let plain = at_rest::open(data, &sealed, &totp_aad(user))
        .map_err(|e| CredentialError::Crypto(e.to_string()))?;
    let secret =
        TotpSecret::from_bytes(plain).map_err(|e| CredentialError::Crypto(e.to_string()))?;
    Ok(Some((secret, u64::try_from(counter).ok())))
}

/// The user's reference templates, decrypted; wiped when dropped.
pub async fn templates(
    store: &Store,
    data: &[DataKey],
    user: &str,
) -> Result<Vec<Template>, CredentialError> {
    let rows = sqlx::query(
        "SELECT secret FROM credentials WHERE user_id = $1 AND kind = 'biometric_template' AND state = 'active' ORDER BY id",
    )
    .bind(user)
    .fetch_all(store.reader())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let sealed: Vec<u8> = row.try_get("secret")?;
        let plain = at_rest::open(data, &sealed, &template_aad(user))
            .map_err(|e| CredentialError::Crypto(e.to_string()))?;
        out.push(Template::decode(&plain).map_err(|e| CredentialError::Crypto(e.to_string()))?);
    }
    Ok(out)
}
