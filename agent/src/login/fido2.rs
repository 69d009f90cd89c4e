//! FIDO2 security keys: the agent is the WebAuthn client.
//!
//! The server's `begin` carries a WebAuthn request
//! (`RequestChallengeResponse` JSON: challenge, relying party ID, the user's
//! credential IDs). The agent checks it, has the authenticator sign it for
//! the relying party's origin (the client data, origin and RP ID checks
//! are `webauthn-authenticator-rs`'s, as a browser's would be), and relays
//! the `PublicKeyCredential` JSON as [`EvidenceItem::Fido2`]. The server
//! verifies everything that matters (signature, challenge, origin, RP ID,
//! user presence and verification, counter); the agent decides nothing.
//!
//! # Transports (`[fido2] transport`)
//!
//! - `none` (default): no authenticator; FIDO2 options are never chosen.
//! - `soft`: [`soft`], webauthn-authenticator-rs's `SoftToken` kept in a
//!   file (`soft_token`), for tests and the demo. Its keys are in that file:
//!   it is no security key, only a stand-in for one.
//! - `usb`: real keys over USB HID (CTAP2), with the `usb` cargo feature
//!   (it needs libudev and libclang to build, so it is off by default). The
//!   key's PIN, when it asks for one, is asked through the conversation.
//!
//! # User verification (R-AUTH-4)
//!
//! The server asks for UV "preferred", so that UV-capable and touch-only
//! keys can both answer. For the policy factor `fido2_uv` the agent, as the
//! client, asks for UV "required": a key that cannot verify the user then
//! fails here with a clear message instead of at the server. For `fido2`
//! the server's preference is passed on; the soft token, which only sets
//! the UV flag when asked for "required", is asked for it whenever the
//! server prefers it, as a real key with a PIN or fingerprint would verify.
//! Whatever the agent asks, only the flags signed by the authenticator
//! count at the server.

pub mod soft;
#[cfg(feature = "usb")]
mod usb;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clinauth_policy::Seconds;
use clinauth_proto::workstation::EvidenceItem;
use serde::Deserialize;
use webauthn_authenticator_rs::prelude::{PublicKeyCredential, RequestChallengeResponse, Url};

use super::{Attempt, LoginError};

/// The largest WebAuthn request accepted from the server (JSON bytes).
pub const MAX_REQUEST_LEN: usize = 16 * 1024;

/// The UV bit of the authenticator data's flags (WebAuthn §6.1).
const FLAG_UV: u8 = 0x04;

/// Which authenticator the agent talks to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// None: FIDO2 is not offered on this workstation.
    #[default]
    None,
    /// Security keys over USB HID (the `usb` cargo feature).
    Usb,
    /// The software token in `soft_token` (tests and the demo).
    Soft,
}

/// `[fido2]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fido2Settings {
    /// `none`, `usb` or `soft`.
    #[serde(default)]
    pub transport: TransportKind,
    /// The relying party ID the server must ask for (e.g.
    /// `clinauth.hospital.example`); unset: whatever the server asks.
    #[serde(default)]
    pub rp_id: Option<String>,
    /// The origin the client data reports, as the server's WebAuthn
    /// configuration has it; unset: `https://<rp_id>`.
    #[serde(default)]
    pub origin: Option<String>,
    /// How long the key may take (touch, PIN, user verification).
    #[serde(default = "default_timeout")]
    pub timeout: Seconds,
    /// The soft token's file (`transport = "soft"`).
    #[serde(default)]
    pub soft_token: Option<PathBuf>,
}

fn default_timeout() -> Seconds {
    Seconds(30)
}

impl Default for Fido2Settings {
    fn default() -> Self {
        Fido2Settings {
            transport: TransportKind::None,
            rp_id: None,
            origin: None,
            timeout: default_timeout(),
            soft_token: None,
        }
    }
}

fn valid_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl Fido2Settings {
    /// Checks the values (the config loader calls this).
    pub fn check(&self) -> Result<(), String> {
        if !(5..=120).contains(&self.timeout.0) {
            return Err("fido2.timeout must be between 5s and 120s".into());
        }
        if let Some(rp_id) = &self.rp_id {
            if !valid_host(rp_id) {
                return Err(format!("fido2.rp_id {rp_id:?} is not a host name"));
            }
        }
        if let Some(origin) = &self.origin {
            let url =
                Url::parse(origin).map_err(|_| format!("fido2.origin {origin:?} is not a URL"))?;
            let host = url.domain().unwrap_or_default();
            if url.scheme() != "https" || host.is_empty() {
                return Err(format!("fido2.origin {origin:?}: write https://<host>"));
            }
            if let Some(rp_id) = &self.rp_id {
                if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
                    return Err(format!(
                        "fido2.origin {origin:?} is not within fido2.rp_id {rp_id:?}"
                    ));
                }
            }
        }
        match (self.transport, &self.soft_token) {
            (TransportKind::Soft, None) => {
                return Err("fido2.transport = \"soft\" needs fido2.soft_token".into())
            }
            (TransportKind::Soft, Some(path)) if !path.is_absolute() => {
                return Err("fido2.soft_token must be an absolute path".into())
            }
            (TransportKind::Soft, Some(_)) => {}
            (_, Some(_)) => {
                return Err("fido2.soft_token is only used with transport = \"soft\"".into())
            }
            (_, None) => {}
        }
        if self.transport == TransportKind::Usb && !cfg!(feature = "usb") {
            return Err(
                "fido2.transport = \"usb\": this agent was built without the `usb` feature".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Backend {
    Soft(soft::SoftKey),
    #[cfg(feature = "usb")]
    Usb,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    rp_id: Option<String>,
    origin: Option<Url>,
    timeout: Duration,
}

/// The configured FIDO2 authenticator, if any. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Fido2 {
    inner: Option<Arc<Inner>>,
}

/// How much user verification the client asks of the authenticator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AskUv {
    /// `required` (the `fido2_uv` factor).
    Required,
    /// `preferred` becomes `required` (the soft token only verifies when
    /// asked for `required`; a real key verifies under `preferred`).
    WhenPreferred,
    /// As the server asked (real keys).
    #[cfg_attr(not(feature = "usb"), allow(dead_code))]
    AsAsked,
}

impl Fido2 {
    /// From the config. Settings [`Fido2Settings::check`] refuses leave
    /// FIDO2 off (the config loader has refused them already).
    pub fn from_settings(settings: &Fido2Settings) -> Fido2 {
        if let Err(e) = settings.check() {
            tracing::error!(error = %e, "FIDO2 is off");
            return Fido2::default();
        }
        let backend = match (settings.transport, &settings.soft_token) {
            (TransportKind::None, _) => return Fido2::default(),
            (TransportKind::Soft, Some(path)) => {
                tracing::warn!(
                    file = %path.display(),
                    "FIDO2 through a soft token: for tests and demonstrations only"
                );
                Backend::Soft(soft::SoftKey::new(path.clone()))
            }
            #[cfg(feature = "usb")]
            (TransportKind::Usb, _) => Backend::Usb,
            _ => return Fido2::default(),
        };
        Fido2 {
            inner: Some(Arc::new(Inner {
                backend,
                rp_id: settings.rp_id.clone(),
                origin: settings.origin.as_deref().and_then(|o| Url::parse(o).ok()),
                timeout: Duration::from_secs(u64::from(settings.timeout.0)),
            })),
        }
    }

    /// Whether an authenticator is configured (for the soft token: its
    /// file exists).
    pub fn is_configured(&self) -> bool {
        match self.inner.as_deref().map(|i| &i.backend) {
            None => false,
            Some(Backend::Soft(key)) => key.exists(),
            #[cfg(feature = "usb")]
            Some(Backend::Usb) => true,
        }
    }

    /// Has the authenticator answer the server's WebAuthn request for the
    /// policy factor `factor` (`fido2` or `fido2_uv`).
    pub async fn assert(
        &self,
        attempt: &Attempt<'_>,
        factor: &str,
    ) -> Result<EvidenceItem, LoginError> {
        let inner = self
            .inner
            .as_deref()
            .ok_or_else(|| LoginError::Device("no FIDO2 authenticator is configured".into()))?;
        let options = attempt
            .begin
            .webauthn
            .as_ref()
            .ok_or_else(|| LoginError::Server("the server sent no WebAuthn request".into()))?;
        let require_uv = factor == "fido2_uv";
        let ask = match (&inner.backend, require_uv) {
            (_, true) => AskUv::Required,
            (Backend::Soft(_), false) => AskUv::WhenPreferred,
            #[cfg(feature = "usb")]
            (Backend::Usb, false) => AskUv::AsAsked,
        };
        let (request, origin) = prepare(options, inner, ask)?;
        attempt
            .conv
            .info(
                "Touch your security key.",
                "セキュリティキーに触れてください。",
            )
            .await?;
        let credential = match &inner.backend {
            Backend::Soft(key) => key.assert(origin, request, inner.timeout).await?,
            #[cfg(feature = "usb")]
            Backend::Usb => usb::assert(attempt.conv, origin, request, inner.timeout).await?,
        };
        if require_uv && !user_verified(&credential) {
            return Err(LoginError::Device(
                "the security key did not verify the user (no PIN or fingerprint on the key)"
                    .into(),
            ));
        }
        let assertion = serde_json::to_value(&credential)
            .map_err(|e| LoginError::Internal(format!("encoding the assertion: {e}")))?;
        Ok(EvidenceItem::Fido2 { assertion })
    }
}

/// The authenticator data's UV flag.
fn user_verified(credential: &PublicKeyCredential) -> bool {
    credential
        .response
        .authenticator_data
        .get(32)
        .is_some_and(|flags| flags & FLAG_UV != 0)
}

/// Checks the server's request and turns it into what the authenticator
/// signs, with the origin to sign it for.
fn prepare(
    options: &serde_json::Value,
    inner: &Inner,
    ask: AskUv,
) -> Result<(RequestChallengeResponse, Url), LoginError> {
    let bad = |why: &str| LoginError::Server(format!("the WebAuthn request {why}"));
    let len = serde_json::to_vec(options)
        .map_err(|_| bad("cannot be encoded"))?
        .len();
    if len > MAX_REQUEST_LEN {
        return Err(bad(&format!("is too large ({len} bytes)")));
    }
    let mut v = options.clone();
    let public_key = v
        .get_mut("publicKey")
        .and_then(serde_json::Value::as_object_mut)
        .ok_or_else(|| bad("has no publicKey"))?;
    let rp_id = public_key
        .get("rpId")
        .and_then(serde_json::Value::as_str)
        .filter(|r| valid_host(r))
        .ok_or_else(|| bad("has no valid rpId"))?
        .to_owned();
    if let Some(want) = &inner.rp_id {
        if *want != rp_id {
            return Err(LoginError::Server(format!(
                "the server asked a key for relying party {rp_id:?}; this workstation is set up for {want:?}"
            )));
        }
    }
    let asked = public_key
        .get("userVerification")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("preferred");
    let uv = match ask {
        AskUv::Required => "required",
        AskUv::WhenPreferred if asked == "preferred" => "required",
        _ => asked,
    }
    .to_owned();
    public_key.insert("userVerification".into(), uv.into());
    let request: RequestChallengeResponse =
        serde_json::from_value(v).map_err(|e| bad(&format!("is not valid: {e}")))?;
    if request.public_key.allow_credentials.is_empty() {
        return Err(bad("names no credential"));
    }
    let origin = match &inner.origin {
        Some(origin) => origin.clone(),
        None => Url::parse(&format!("https://{rp_id}")).map_err(|_| bad("has no valid rpId"))?,
    };
    Ok((request, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner(rp_id: Option<&str>) -> Inner {
        Inner {
            backend: Backend::Soft(soft::SoftKey::new(PathBuf::from("/nonexistent"))),
            rp_id: rp_id.map(str::to_owned),
            origin: None,
            timeout: Duration::from_secs(5),
        }
    }

    fn request() -> serde_json::Value {
        serde_json::json!({
            "publicKey": {
                "challenge": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
                "timeout": 60000,
                "rpId": "clinauth.test",
                "allowCredentials": [{"type": "public-key", "id": "AQID"}],
                "userVerification": "preferred"
            }
        })
    }

    #[test]
    fn uv_is_asked_as_the_factor_needs() {
        let i = inner(None);
        let (r, origin) = prepare(&request(), &i, AskUv::Required).unwrap();
        assert_eq!(origin.as_str(), "https://clinauth.test/");
        let uv = serde_json::to_value(r.public_key.user_verification).unwrap();
        assert_eq!(uv, "required");
        let (r, _) = prepare(&request(), &i, AskUv::AsAsked).unwrap();
        let uv = serde_json::to_value(r.public_key.user_verification).unwrap();
        assert_eq!(uv, "preferred");
        let (r, _) = prepare(&request(), &i, AskUv::WhenPreferred).unwrap();
        let uv = serde_json::to_value(r.public_key.user_verification).unwrap();
        assert_eq!(uv, "required");
        let mut discouraged = request();
        discouraged["publicKey"]["userVerification"] = "discouraged".into();
        let (r, _) = prepare(&discouraged, &i, AskUv::WhenPreferred).unwrap();
        let uv = serde_json::to_value(r.public_key.user_verification).unwrap();
        assert_eq!(uv, "discouraged");
    }

    #[test]
    fn bad_requests_refused() {
        let i = inner(Some("clinauth.hospital.example"));
        assert!(matches!(
            prepare(&request(), &i, AskUv::Required),
            Err(LoginError::Server(m)) if m.contains("relying party")
        ));
        let i = inner(None);
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"publicKey": 3}),
            serde_json::json!({"publicKey": {"rpId": "clinauth.test"}}),
            {
                let mut r = request();
                r["publicKey"]["rpId"] = "https://evil/".into();
                r
            },
            {
                let mut r = request();
                r["publicKey"]["allowCredentials"] = serde_json::json!([]);
                r
            },
            {
                let mut r = request();
                r["publicKey"]["pad"] = "x".repeat(MAX_REQUEST_LEN).into();
                r
            },
        ] {
            assert!(
                matches!(
                    prepare(&bad, &i, AskUv::Required),
                    Err(LoginError::Server(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn settings_checked() {
        let ok = Fido2Settings {
            transport: TransportKind::Soft,
            soft_token: Some(PathBuf::from("/var/lib/clinauth/soft-token.cbor")),
            rp_id: Some("clinauth.hospital.example".into()),
            origin: Some("https://login.clinauth.hospital.example".into()),
            ..Fido2Settings::default()
        };
        ok.check().unwrap();
        Fido2Settings::default().check().unwrap();
        let cases = [
            Fido2Settings {
                soft_token: None,
                ..ok.clone()
            },
            Fido2Settings {
                soft_token: Some(PathBuf::from("soft.cbor")),
                ..ok.clone()
            },
            Fido2Settings {
                origin: Some("http://clinauth.hospital.example".into()),
                ..ok.clone()
            },
            Fido2Settings {
                origin: Some("https://evil.example".into()),
                ..ok.clone()
            },
            Fido2Settings {
                rp_id: Some("a b".into()),
                ..ok.clone()
            },
            Fido2Settings {
                timeout: Seconds(1),
                ..ok.clone()
            },
            Fido2Settings {
                transport: TransportKind::None,
                ..ok.clone()
            },
        ];
        for bad in cases {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        let usb = Fido2Settings {
            transport: TransportKind::Usb,
            ..Fido2Settings::default()
        };
        assert_eq!(usb.check().is_ok(), cfg!(feature = "usb"));
    }

    /// With the `usb` feature, on a machine without a key (this one has no
    /// USB at all): a clear error, no hang.
    #[cfg(feature = "usb")]
    #[tokio::test]
    async fn usb_without_a_key_is_a_clear_error() {
        let (conv, _rx) = crate::conversation::Conversation::new(Duration::from_secs(5));
        let i = inner(None);
        let (request, origin) = prepare(&request(), &i, AskUv::Required).unwrap();
        match usb::assert(&conv, origin, request, Duration::from_secs(10)).await {
            Err(LoginError::Device(m)) => assert!(!m.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unconfigured_is_off() {
        let f = Fido2::from_settings(&Fido2Settings::default());
        assert!(!f.is_configured());
        let missing = Fido2::from_settings(&Fido2Settings {
            transport: TransportKind::Soft,
            soft_token: Some(PathBuf::from("/nonexistent/soft.cbor")),
            ..Fido2Settings::default()
        });
        assert!(!missing.is_configured());
    }
}
