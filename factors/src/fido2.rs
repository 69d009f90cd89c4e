//! FIDO2 (WebAuthn) factor: registering authenticators and verifying
//! assertions, on top of [`webauthn_rs`] (MPL-2.0).
//!
//! # What a verified assertion proves (R-AUTH-4)
//!
//! [`Fido2Verifier::finish_authentication`] proves that one of the user's
//! registered authenticators signed *this* WebAuthn challenge for *this*
//! relying party and origin, with user presence, and reports whether the
//! authenticator also verified the user (UV: PIN or biometric on the
//! authenticator). [`Fido2Assertion::into_factor`] turns it into
//! [`clinauth_policy::Factor::Fido2`]`{ user_verified, aaguid }`: with UV it
//! is possession plus knowledge/inherence, without UV only the weak
//! possession of a "USB token" (R-AUTH-2, R-AUTH-4). The policy engine, not
//! this module, decides what that is worth and enforces a rule's
//! `fido2_aaguids`.
//!
//! Authentication asks for UV "preferred", so both UV-capable and
//! presence-only keys can answer. A credential that performed UV when it was
//! registered (or was registered with UV required) must perform UV at every
//! assertion: webauthn-rs refuses a downgrade with
//! [`Fido2Error::UserNotVerified`].
//!
//! # Models (attestation)
//!
//! The AAGUID (authenticator model) is reported only when the registration
//! was attested by a CA on the configured [`AttestationTrust`]; otherwise it
//! is `None`, because an unattested AAGUID is whatever the client claims. A
//! policy rule that lists `fido2_aaguids` therefore never accepts an
//! unattested key.
//!
//! # Challenge binding and single use
//!
//! webauthn-rs draws the 32-byte WebAuthn challenge itself (from the
//! operating system's generator, via `rand`) and offers no way to supply it,
//! so the ClinAuth nonce cannot be the WebAuthn challenge. Instead the
//! server keeps the serialised state returned by
//! [`Fido2Verifier::start_authentication`] *inside its single-use challenge
//! row* (the row of the ClinAuth nonce); consuming the row consumes the
//! WebAuthn challenge. The state holds the challenge and the user's
//! credentials at start; it is server-side data and must never be sent to
//! the client (anyone holding a state could replay an old assertion against
//! it). As a second line, [`Fido2Verifier::finish_authentication`] takes the
//! user's credentials as stored *now* and refuses an assertion whose
//! signature counter is not above the stored one ([`Fido2Error::CounterRegressed`]:
//! a replay after the counter was stored, or a cloned authenticator), or
//! whose credential has been removed since the start.
//!
//! # Deviations from the crate's "no clock, no randomness" rule
//!
//! webauthn-rs draws challenges from its own generator and checks
//! attestation certificates' validity against the system clock. `now` is
//! still used for the state's expiry and the evidence time.
//!
//! # Limits
//!
//! Every input has a size limit ([`MAX_ASSERTION_LEN`],
//! [`MAX_REGISTRATION_RESPONSE_LEN`], [`MAX_CREDENTIAL_LEN`],
//! [`MAX_STATE_LEN`], [`MAX_CREDENTIALS`], [`MAX_USER_NAME_LEN`]) and every
//! failure is a [`Fido2Error`]; nothing panics on input.

mod attestation;

pub use attestation::{AttestationTrust, MAX_ATTESTATION_CAS, MAX_CA_PEM_LEN, MAX_MODELS_PER_CA};

use clinauth_policy::{Aaguid, Evidence, Factor, Seconds, UnixTime};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use webauthn_rs::prelude::{
    AttestationCaList, AttestationMetadata, AttestedPasskeyRegistration, AuthenticationResult,
    Credential, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey,
    SecurityKeyAuthentication, SecurityKeyRegistration, Url, Uuid, WebauthnError,
};
use webauthn_rs::{Webauthn, WebauthnBuilder};

/// Longest assertion (`PublicKeyCredential` JSON) accepted.
pub const MAX_ASSERTION_LEN: usize = 16 * 1024;
/// Longest registration response (`RegisterPublicKeyCredential` JSON)
/// accepted; larger than an assertion because it carries the attestation
/// certificate chain (TPM chains run to several KiB).
pub const MAX_REGISTRATION_RESPONSE_LEN: usize = 32 * 1024;
/// Longest stored credential (JSON) accepted.
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;
/// Longest serialised state accepted (it holds the user's credentials, or
/// the attestation CA list).
pub const MAX_STATE_LEN: usize = 256 * 1024;
/// Most credentials one user may present to one ceremony.
pub const MAX_CREDENTIALS: usize = 16;
/// Longest user name or display name, in bytes.
pub const MAX_USER_NAME_LEN: usize = 256;
/// Default time between start and finish of a ceremony (the WebAuthn
/// recommendation; shorter timeouts are hard for some users to meet).
pub const DEFAULT_CEREMONY_TIMEOUT: Seconds = Seconds(300);
/// Longest ceremony timeout accepted in the configuration.
pub const MAX_CEREMONY_TIMEOUT: Seconds = Seconds(600);

const STATE_VERSION: u8 = 1;
const CREDENTIAL_VERSION: u8 = 1;

/// Why a FIDO2 registration or assertion was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fido2Error {
    /// An input is larger than its limit.
    #[error("{what} is too large ({len} bytes, at most {max})")]
    TooLarge {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A required input is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// An input is not the JSON (or PEM) it should be.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// More items than allowed.
    #[error("too many {what} (at most {max})")]
    TooMany {
        /// Which items.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The verifier's configuration is invalid.
    #[error("invalid FIDO2 configuration: {0}")]
    Configuration(&'static str),
    /// The ceremony's state is past its expiry.
    #[error("the {0} has expired")]
    Expired(&'static str),
    /// The response was made for another challenge (or another ceremony type).
    #[error("the response answers another challenge")]
    ChallengeMismatch,
    /// The response was collected by a page of another origin.
    #[error("the response comes from an origin that is not allowed")]
    OriginMismatch,
    /// The authenticator signed for another relying party ID.
    #[error("the response is for another relying party")]
    RpIdMismatch,
    /// The authenticator did not report user presence.
    #[error("the authenticator did not report user presence")]
    UserNotPresent,
    /// User verification was required (by the request or by the
    /// credential's registration) and the authenticator did not report it.
    #[error("the authenticator did not verify the user, and this credential requires it")]
    UserNotVerified,
    /// The credential is not one of the user's (current) credentials.
    #[error("the credential is not registered to this user")]
    UnknownCredential,
    /// The assertion's signature does not verify.
    #[error("the assertion signature does not verify")]
    BadSignature,
    /// The signature counter did not increase: a replayed assertion or a
    /// cloned authenticator. The server should flag the device (R-DEV-1).
    #[error("the signature counter did not increase: replay or possible cloned authenticator")]
    CounterRegressed,
    /// The registration is not attested by an allowed CA, or the model is
    /// not allowed for that CA (R-AUTH-4).
    #[error("the authenticator's attestation is not from an allowed CA and model")]
    AttestationNotTrusted,
    /// The authenticator already holds one of the user's credentials.
    #[error("the authenticator is already registered to this user")]
    AlreadyRegistered,
    /// Another WebAuthn check failed; the text names it, for the audit log.
    #[error("WebAuthn verification failed: {0}")]
    Rejected(String),
}

impl From<WebauthnError> for Fido2Error {
    fn from(e: WebauthnError) -> Fido2Error {
        match e {
            WebauthnError::MismatchedChallenge | WebauthnError::InvalidClientDataType => {
                Fido2Error::ChallengeMismatch
            }
            WebauthnError::InvalidRPOrigin | WebauthnError::CredentialCrossOrigin => {
                Fido2Error::OriginMismatch
            }
            WebauthnError::InvalidRPIDHash => Fido2Error::RpIdMismatch,
            WebauthnError::UserNotPresent => Fido2Error::UserNotPresent,
            WebauthnError::UserNotVerified => Fido2Error::UserNotVerified,
            WebauthnError::CredentialNotFound => Fido2Error::UnknownCredential,
            WebauthnError::AuthenticationFailure => Fido2Error::BadSignature,
            WebauthnError::CredentialPossibleCompromise => Fido2Error::CounterRegressed,
            WebauthnError::AttestationNotVerifiable
            | WebauthnError::AttestationUntrustedAaguid
            | WebauthnError::AttestationFormatMissingAaguid
            | WebauthnError::AttestationChainNotTrusted(_)
            | WebauthnError::AttestationTrustFailure
            | WebauthnError::AttestationCertificateTrustStoreEmpty
            | WebauthnError::AttestationNotSupported
            | WebauthnError::MissingAttestationCaList => Fido2Error::AttestationNotTrusted,
            WebauthnError::CredentialExcludedFromRequest
            | WebauthnError::CredentialAlreadyExists => Fido2Error::AlreadyRegistered,
            WebauthnError::ParseJSONFailure(_)
            | WebauthnError::ParseBase64Failure(_)
            | WebauthnError::ParseCBORFailure(_)
            | WebauthnError::ParseNOMFailure
            | WebauthnError::ParseInsufficientBytesAvailable => {
                Fido2Error::Malformed("WebAuthn response")
            }
            other => Fido2Error::Rejected(other.to_string()),
        }
    }
}

/// Where the verifier runs: the relying party and its web origin.
#[derive(Debug, Clone)]
pub struct Fido2Config {
    /// The relying party ID credentials are bound to, e.g.
    /// `clinauth.example-hospital.jp`. Changing it later orphans every
    /// registered credential.
    pub rp_id: String,
    /// The origin clients report, e.g. `https://clinauth.example-hospital.jp`;
    /// its host must be `rp_id` or a subdomain of it.
    pub origin: String,
    /// Name shown to the user by some clients; defaults to `rp_id`.
    pub rp_name: Option<String>,
    /// Time allowed between start and finish of a ceremony.
    pub ceremony_timeout: Seconds,
    /// When set, registrations must be attested by one of these CAs (and models).
    pub attestation: Option<AttestationTrust>,
}

impl Fido2Config {
    /// A configuration for `rp_id` and `origin`, with the default timeout
    /// and no attestation requirement.
    pub fn new(rp_id: &str, origin: &str) -> Fido2Config {
        Fido2Config {
            rp_id: rp_id.to_owned(),
            origin: origin.to_owned(),
            rp_name: None,
            ceremony_timeout: DEFAULT_CEREMONY_TIMEOUT,
            attestation: None,
        }
    }
}

/// The user an authenticator is registered for.
#[derive(Debug, Clone, Copy)]
pub struct Fido2User<'a> {
    /// The WebAuthn user handle: 16 random bytes stored with the user, never
    /// the login name or employee number (authenticators may store and
    /// reveal it; WebAuthn forbids personal data in it).
    pub handle: [u8; 16],
    /// The login name, shown by some authenticators.
    pub name: &'a str,
    /// The person's name, shown by some authenticators.
    pub display_name: &'a str,
}

/// What to send to the client and what to keep, from a ceremony's start.
#[derive(Debug, Clone)]
pub struct Fido2Challenge {
    /// JSON for the client: a `CreationChallengeResponse` (registration) or
    /// a `RequestChallengeResponse` (authentication), i.e. `{"publicKey": …}`
    /// for `navigator.credentials.create/get` or a CTAP client.
    pub client_options: String,
    /// The serialised state, for the server's single-use challenge row only.
    pub state: String,
}

/// A registered authenticator credential, as the server stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fido2Credential {
    v: u8,
    key: SecurityKey,
    /// The model, only when attested by an allowed CA.
    attested_aaguid: Option<Uuid>,
    attested: bool,
    user_verified_at_registration: bool,
}

impl Fido2Credential {
    /// The stored form.
    pub fn to_json(&self) -> Result<String, Fido2Error> {
        serde_json::to_string(self).map_err(|_| Fido2Error::Malformed("credential"))
    }

    /// Reads the stored form.
    pub fn from_json(text: &str) -> Result<Fido2Credential, Fido2Error> {
        let cred: Fido2Credential = parse_json("credential", text, MAX_CREDENTIAL_LEN)?;
        if cred.v != CREDENTIAL_VERSION {
            return Err(Fido2Error::Malformed("credential (unknown version)"));
        }
        Ok(cred)
    }

    /// The credential ID (what the server indexes credentials by).
    pub fn credential_id(&self) -> &[u8] {
        self.key.cred_id().as_slice()
    }

    /// The authenticator model, when the registration was attested by an
    /// allowed CA.
    pub fn aaguid(&self) -> Option<Aaguid> {
        self.attested_aaguid.map(|u| Aaguid(u.into_bytes()))
    }

    /// The registration was attested by a CA on the allow-list.
    pub fn attested_by_allowed_ca(&self) -> bool {
        self.attested
    }

    /// The authenticator verified the user when it was registered; every
    /// assertion of this credential must then verify the user too.
    pub fn user_verified_at_registration(&self) -> bool {
        self.user_verified_at_registration
    }

    /// The last signature counter accepted (0 for authenticators without one).
    pub fn counter(&self) -> u32 {
        Credential::from(self.key.clone()).counter
    }
}

/// The outcome of a successful registration.
#[derive(Debug, Clone)]
pub struct RegisteredCredential {
    /// What to store (see [`Fido2Credential::to_json`]).
    pub credential: Fido2Credential,
    /// Its credential ID.
    pub credential_id: Vec<u8>,
    /// The authenticator model, when attested by an allowed CA.
    pub aaguid: Option<[u8; 16]>,
    /// The authenticator verified the user during registration.
    pub user_verified_at_registration: bool,
    /// The attestation chains to a CA on the allow-list (and the model is allowed).
    pub attested_by_allowed_ca: bool,
}

/// A verified assertion.
#[derive(Debug, Clone)]
pub struct Fido2Assertion {
    /// The credential that signed.
    pub credential_id: Vec<u8>,
    /// The authenticator verified the user (UV flag): R-AUTH-4.
    pub user_verified: bool,
    /// The authenticator's signature counter in this assertion.
    pub counter: u32,
    /// The credential's model, when its registration was attested.
    pub aaguid: Option<Aaguid>,
    /// When it was verified.
    pub verified_at: UnixTime,
    result: AuthenticationResult,
}

impl Fido2Assertion {
    /// Advances the stored credential (signature counter, backup state).
    /// Returns whether it changed (then store it again). Refuses another
    /// credential than the one that signed.
    pub fn update_credential(&self, credential: &mut Fido2Credential) -> Result<bool, Fido2Error> {
        credential
            .key
            .update_credential(&self.result)
            .ok_or(Fido2Error::UnknownCredential)
    }

    /// The policy evidence: `Factor::Fido2 { user_verified, aaguid }`.
    pub fn into_factor(self) -> Factor {
        Factor::Fido2 {
            user_verified: self.user_verified,
            aaguid: self.aaguid,
        }
    }

    /// The policy evidence with its verification time.
    pub fn into_evidence(self) -> Evidence {
        let at = self.verified_at;
        Evidence::new(self.into_factor(), at)
    }
}

#[derive(Serialize, Deserialize)]
enum RegistrationFlow {
    /// UV preferred, optional attestation.
    SecurityKey(SecurityKeyRegistration),
    /// UV required, no attestation.
    Passkey(PasskeyRegistration),
    /// UV required, attestation required.
    AttestedPasskey(AttestedPasskeyRegistration),
}

#[derive(Serialize, Deserialize)]
struct RegistrationStateV1 {
    v: u8,
    expires_at: UnixTime,
    require_uv: bool,
    attested: bool,
    flow: RegistrationFlow,
}

#[derive(Serialize, Deserialize)]
struct AuthenticationStateV1 {
    v: u8,
    expires_at: UnixTime,
    inner: SecurityKeyAuthentication,
}

/// Registers authenticators and verifies assertions for one relying party.
#[derive(Debug, Clone)]
pub struct Fido2Verifier {
    webauthn: Webauthn,
    attestation: Option<AttestationCaList>,
    timeout: Seconds,
}

impl Fido2Verifier {
    /// A verifier for `config`. Refuses an origin that is not `https://`,
    /// an `rp_id` its host does not end with, a timeout of 0 or above
    /// [`MAX_CEREMONY_TIMEOUT`], and an empty attestation allow-list.
    pub fn new(config: Fido2Config) -> Result<Fido2Verifier, Fido2Error> {
        if config.rp_id.is_empty() || config.rp_id.len() > 253 {
            return Err(Fido2Error::Configuration("rp_id must be a host name"));
        }
        let origin = Url::parse(&config.origin)
            .map_err(|_| Fido2Error::Configuration("origin is not a URL"))?;
        if origin.scheme() != "https" {
            return Err(Fido2Error::Configuration("origin must be https://"));
        }
        if config.ceremony_timeout.0 == 0 || config.ceremony_timeout > MAX_CEREMONY_TIMEOUT {
            return Err(Fido2Error::Configuration(
                "ceremony timeout must be between 1 and 600 seconds",
            ));
        }
        let attestation = match config.attestation {
            Some(trust) if trust.is_empty() => {
                return Err(Fido2Error::Configuration(
                    "attestation is required but no CA is allowed",
                ))
            }
            Some(trust) => Some(trust.into_list()),
            None => None,
        };
        let mut builder = WebauthnBuilder::new(&config.rp_id, &origin).map_err(|_| {
            Fido2Error::Configuration("rp_id must be the origin's host or a parent domain of it")
        })?;
        if let Some(name) = config.rp_name.as_deref() {
            builder = builder.rp_name(name);
        }
        let webauthn = builder
            .timeout(Duration::from_secs(u64::from(config.ceremony_timeout.0)))
            .build()
            .map_err(|_| Fido2Error::Configuration("rejected by webauthn-rs"))?;
        Ok(Fido2Verifier {
            webauthn,
            attestation,
            timeout: config.ceremony_timeout,
        })
    }

    /// Registration requires attestation by an allowed CA.
    pub fn requires_attestation(&self) -> bool {
        self.attestation.is_some()
    }

    /// Starts registering an authenticator for `user`. `exclude` are the
    /// user's credentials already registered (the client refuses to register
    /// the same authenticator twice). With `require_user_verification`, the
    /// authenticator must verify the user (a key without a PIN is asked to
    /// set one), so the credential will always assert with UV.
    pub fn start_registration(
        &self,
        user: &Fido2User<'_>,
        exclude: &[Fido2Credential],
        require_user_verification: bool,
        now: UnixTime,
    ) -> Result<Fido2Challenge, Fido2Error> {
        check_name("user name", user.name)?;
        check_name("display name", user.display_name)?;
        check_count(exclude.len())?;
        let handle = Uuid::from_bytes(user.handle);
        let exclude: Option<Vec<_>> = if exclude.is_empty() {
            None
        } else {
            Some(exclude.iter().map(|c| c.key.cred_id().clone()).collect())
        };
        let name = user.name;
        let display = user.display_name;
        let (ccr, flow) = match (require_user_verification, &self.attestation) {
            (false, cas) => {
                let (ccr, st) = self.webauthn.start_securitykey_registration(
                    handle,
                    name,
                    display,
                    exclude,
                    cas.clone(),
                    None,
                )?;
                (ccr, RegistrationFlow::SecurityKey(st))
            }
            (true, None) => {
                let (ccr, st) = self
                    .webauthn
                    .start_passkey_registration(handle, name, display, exclude)?;
                (ccr, RegistrationFlow::Passkey(st))
            }
            (true, Some(cas)) => {
                let (ccr, st) = self.webauthn.start_attested_passkey_registration(
                    handle,
                    name,
                    display,
                    exclude,
                    cas.clone(),
                    None,
                )?;
                (ccr, RegistrationFlow::AttestedPasskey(st))
            }
        };
        let state = RegistrationStateV1 {
            v: STATE_VERSION,
            expires_at: self.expiry(now),
            require_uv: require_user_verification,
            attested: self.attestation.is_some(),
            flow,
        };
        Ok(Fido2Challenge {
            client_options: to_json("registration options", &ccr)?,
            state: to_json("registration state", &state)?,
        })
    }

    /// Finishes a registration: `state` from [`Self::start_registration`],
    /// `response` the client's `RegisterPublicKeyCredential` JSON.
    pub fn finish_registration(
        &self,
        state: &str,
        response: &str,
        now: UnixTime,
    ) -> Result<RegisteredCredential, Fido2Error> {
        let state: RegistrationStateV1 = parse_json("registration state", state, MAX_STATE_LEN)?;
        if state.v != STATE_VERSION {
            return Err(Fido2Error::Malformed(
                "registration state (unknown version)",
            ));
        }
        if now > state.expires_at {
            return Err(Fido2Error::Expired("registration state"));
        }
        let response: RegisterPublicKeyCredential = parse_json(
            "registration response",
            response,
            MAX_REGISTRATION_RESPONSE_LEN,
        )?;
        let credential: Credential = match &state.flow {
            RegistrationFlow::SecurityKey(st) => self
                .webauthn
                .finish_securitykey_registration(&response, st)?
                .into(),
            RegistrationFlow::Passkey(st) => self
                .webauthn
                .finish_passkey_registration(&response, st)?
                .into(),
            RegistrationFlow::AttestedPasskey(st) => self
                .webauthn
                .finish_attested_passkey_registration(&response, st)?
                .into(),
        };
        let user_verified = credential.user_verified;
        if state.require_uv && !user_verified {
            return Err(Fido2Error::UserNotVerified);
        }
        let aaguid = if state.attested {
            match &credential.attestation.metadata {
                AttestationMetadata::Packed { aaguid }
                | AttestationMetadata::Tpm { aaguid, .. } => Some(*aaguid),
                _ => None,
            }
        } else {
            None
        };
        let key = SecurityKey::from(credential);
        let credential_id = key.cred_id().clone();
        Ok(RegisteredCredential {
            credential: Fido2Credential {
                v: CREDENTIAL_VERSION,
                key,
                attested_aaguid: aaguid,
                attested: state.attested,
                user_verified_at_registration: user_verified,
            },
            credential_id,
            aaguid: aaguid.map(Uuid::into_bytes),
            user_verified_at_registration: user_verified,
            attested_by_allowed_ca: state.attested,
        })
    }

    /// Starts an authentication with the user's registered `credentials`
    /// (user verification "preferred": UV and presence-only keys can answer).
    /// Keep [`Fido2Challenge::state`] in the challenge row; send
    /// [`Fido2Challenge::client_options`] to the workstation.
    pub fn start_authentication(
        &self,
        credentials: &[Fido2Credential],
        now: UnixTime,
    ) -> Result<Fido2Challenge, Fido2Error> {
        if credentials.is_empty() {
            return Err(Fido2Error::Empty("credential list"));
        }
        check_count(credentials.len())?;
        let keys: Vec<SecurityKey> = credentials.iter().map(|c| c.key.clone()).collect();
        let (rcr, inner) = self.webauthn.start_securitykey_authentication(&keys)?;
        let state = AuthenticationStateV1 {
            v: STATE_VERSION,
            expires_at: self.expiry(now),
            inner,
        };
        Ok(Fido2Challenge {
            client_options: to_json("authentication options", &rcr)?,
            state: to_json("authentication state", &state)?,
        })
    }

    /// Finishes an authentication: `state` from [`Self::start_authentication`]
    /// (taken from the single-use challenge row), `response` the client's
    /// `PublicKeyCredential` JSON, `credentials` the user's credentials as
    /// stored now. Then call [`Fido2Assertion::update_credential`] and store
    /// the credential with its new counter.
    pub fn finish_authentication(
        &self,
        state: &str,
        response: &str,
        credentials: &[Fido2Credential],
        now: UnixTime,
    ) -> Result<Fido2Assertion, Fido2Error> {
        check_count(credentials.len())?;
        let state: AuthenticationStateV1 =
            parse_json("authentication state", state, MAX_STATE_LEN)?;
        if state.v != STATE_VERSION {
            return Err(Fido2Error::Malformed(
                "authentication state (unknown version)",
            ));
        }
        if now > state.expires_at {
            return Err(Fido2Error::Expired("authentication state"));
        }
        let response: PublicKeyCredential = parse_json("assertion", response, MAX_ASSERTION_LEN)?;
        let result = self
            .webauthn
            .finish_securitykey_authentication(&response, &state.inner)?;
        let current = credentials
            .iter()
            .find(|c| c.key.cred_id() == result.cred_id())
            .ok_or(Fido2Error::UnknownCredential)?;
        // WebAuthn §7.2 step 22, against the counter stored now (the state
        // holds the counter at start; the server may have stored a newer one).
        let stored = current.counter();
        let presented = result.counter();
        if (presented > 0 || stored > 0) && presented <= stored {
            return Err(Fido2Error::CounterRegressed);
        }
        Ok(Fido2Assertion {
            credential_id: result.cred_id().clone(),
            user_verified: result.user_verified(),
            counter: presented,
            aaguid: current.aaguid(),
            verified_at: now,
            result,
        })
    }

    fn expiry(&self, now: UnixTime) -> UnixTime {
        UnixTime(now.0.saturating_add(self.timeout.as_i64()))
    }
}

pub(crate) fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), Fido2Error> {
    if len > max {
        Err(Fido2Error::TooLarge { what, len, max })
    } else {
        Ok(())
    }
}

fn check_count(n: usize) -> Result<(), Fido2Error> {
    if n > MAX_CREDENTIALS {
        Err(Fido2Error::TooMany {
            what: "credentials",
            max: MAX_CREDENTIALS,
        })
    } else {
        Ok(())
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), Fido2Error> {
    if name.is_empty() {
        return Err(Fido2Error::Empty(what));
    }
    check_len(what, name.len(), MAX_USER_NAME_LEN)?;
    if name.chars().any(char::is_control) {
        return Err(Fido2Error::Malformed(what));
    }
    Ok(())
}

fn parse_json<T: DeserializeOwned>(
    what: &'static str,
    text: &str,
    max: usize,
) -> Result<T, Fido2Error> {
    if text.is_empty() {
        return Err(Fido2Error::Empty(what));
    }
    check_len(what, text.len(), max)?;
    serde_json::from_str(text).map_err(|_| Fido2Error::Malformed(what))
}

fn to_json<T: Serialize>(what: &'static str, value: &T) -> Result<String, Fido2Error> {
    serde_json::to_string(value).map_err(|_| Fido2Error::Malformed(what))
}
