//! Biometric readers: sealed templates and match-on-reader decisions
//! (R-BIO-1..3), relayed as opaque signed bytes.
//!
//! The agent asks the configured reader for a capture over the reader
//! protocol ([`protocol`]): the server's nonce and matcher key, the claimed
//! user, the reader expected. The reader captures, seals the template to
//! the server's key (or matches on itself) and signs; the agent gets the
//! signed bytes and relays them as [`EvidenceItem::BiometricSealed`] or
//! [`EvidenceItem::BiometricDecision`]. It never holds a plaintext
//! template: nothing it receives contains one. Before relaying, it parses
//! the evidence (never opens it) and refuses what is malformed, too large,
//! of the wrong kind, or bound to another nonce, user or reader; the server
//! verifies the signature, the binding and the match.
//!
//! fprintd ([`fprintd`]) is not a factor: it cannot give the server
//! anything to verify (no reader key, no nonce, no signature; R-BIO-3).
//! See docs/BIOMETRICS.md, "fprintd".

pub mod fprintd;
pub mod protocol;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clinauth_biometric::envelope::{SealedCapture, SignedDecision};
use clinauth_biometric::CaptureContext;
use clinauth_policy::Seconds;
use clinauth_proto::workstation::{EvidenceItem, B64};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Attempt, LoginError};
use protocol::{Kind, Request, Response, Status, Want, MAX_RESPONSE_LEN};

/// Where the reader listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderAddress {
    /// `unix:/run/clinauth/bioreader.sock`.
    Unix(PathBuf),
    /// `tcp:127.0.0.1:7300` (loopback only).
    Tcp(SocketAddr),
}

impl FromStr for ReaderAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "biometric.reader {s:?}: the socket path must be absolute"
                ));
            }
            Ok(ReaderAddress::Unix(path))
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| format!("biometric.reader {s:?}: write tcp:<ip>:<port>"))?;
            if !addr.ip().is_loopback() {
                // The capture crosses no network: a reader elsewhere would
                // be a reader anyone on that network can talk to.
                return Err(format!(
                    "biometric.reader {s:?}: only loopback addresses are allowed"
                ));
            }
            Ok(ReaderAddress::Tcp(addr))
        } else {
            Err(format!(
                "biometric.reader {s:?}: write unix:/path/to.sock or tcp:127.0.0.1:<port>"
            ))
        }
    }
}

/// `[biometric]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BiometricSettings {
    /// The reader (or its vendor bridge): `unix:/path` or
    /// `tcp:127.0.0.1:<port>`; unset: no reader.
    #[serde(default)]
    pub reader: Option<String>,
    /// The reader's ID as registered on the server; unset: whichever the
    /// reader is (the server still checks it is registered).
    #[serde(default)]
    pub reader_id: Option<String>,
    /// Connecting to the reader.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Seconds,
    /// The whole capture, finger included.
    #[serde(default = "default_capture_timeout")]
    pub capture_timeout: Seconds,
}

fn default_connect_timeout() -> Seconds {
    Seconds(3)
}

fn default_capture_timeout() -> Seconds {
    Seconds(30)
}

impl Default for BiometricSettings {
    fn default() -> Self {
        BiometricSettings {
            reader: None,
            reader_id: None,
            connect_timeout: default_connect_timeout(),
            capture_timeout: default_capture_timeout(),
        }
    }
}

impl BiometricSettings {
    /// Checks the values (the config loader calls this).
    pub fn check(&self) -> Result<(), String> {
        if let Some(reader) = &self.reader {
            ReaderAddress::from_str(reader)?;
        }
        if let Some(id) = &self.reader_id {
            if id.is_empty() || id.len() > protocol::MAX_ID_LEN || id.chars().any(char::is_control)
            {
                return Err("biometric.reader_id: 1 to 64 bytes, no control characters".into());
            }
            if self.reader.is_none() {
                return Err("biometric.reader_id is set but biometric.reader is not".into());
            }
        }
        if !(1..=30).contains(&self.connect_timeout.0) {
            return Err("biometric.connect_timeout must be between 1s and 30s".into());
        }
        if !(5..=300).contains(&self.capture_timeout.0) {
            return Err("biometric.capture_timeout must be between 5s and 300s".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct ReaderConfig {
    address: ReaderAddress,
    reader_id: Option<String>,
    connect_timeout: Duration,
    capture_timeout: Duration,
}

/// The configured biometric reader.
#[derive(Debug, Clone, Default)]
pub struct Biometric {
    reader: Option<ReaderConfig>,
}

/// Why talking to the reader failed.
#[derive(Debug, thiserror::Error)]
enum ReaderError {
    #[error("the biometric reader cannot be reached: {0}")]
    Connect(String),
    #[error("the biometric reader did not answer in time")]
    Timeout,
    #[error("the biometric reader's answer is not valid: {0}")]
    Bad(String),
}

impl Biometric {
    /// From the config. Settings [`BiometricSettings::check`] refuses
    /// leave the reader off (the config loader has refused them already).
    pub fn from_settings(settings: &BiometricSettings) -> Biometric {
        if let Err(e) = settings.check() {
            tracing::error!(error = %e, "the biometric reader is off");
            return Biometric::default();
        }
        let reader = settings
            .reader
            .as_deref()
            .and_then(|r| ReaderAddress::from_str(r).ok())
            .map(|address| ReaderConfig {
                address,
                reader_id: settings.reader_id.clone(),
                connect_timeout: Duration::from_secs(u64::from(settings.connect_timeout.0)),
                capture_timeout: Duration::from_secs(u64::from(settings.capture_timeout.0)),
            });
        Biometric { reader }
    }

    /// Whether a sealing or match-on-reader reader is configured.
    pub fn has_reader(&self) -> bool {
        self.reader.is_some()
    }

    /// Whether an fprintd device can prove a biometric factor: never. fprintd
    /// reports a match over D-Bus with nothing the server can verify (no
    /// reader key, no nonce binding, no signature: R-BIO-3), so the agent
    /// does not offer it as evidence (docs/BIOMETRICS.md, "fprintd").
    pub fn has_fprintd(&self) -> bool {
        false
    }

    /// Captures for `factor` (a biometric policy factor name).
    pub async fn capture(
        &self,
        attempt: &Attempt<'_>,
        factor: &str,
    ) -> Result<EvidenceItem, LoginError> {
        let reader = self.reader.as_ref().ok_or_else(|| {
            LoginError::Device(format!("no biometric reader is configured for {factor}"))
        })?;
        let want = match factor {
            "biometric" => Want::Either,
            "biometric_sealed" => Want::Sealed,
            "biometric_on_reader" => Want::Decision,
            other => {
                return Err(LoginError::Device(format!(
                    "{other} cannot be proven here (a host-matched biometric never counts, R-BIO-1)"
                )))
            }
        };
        let nonce: [u8; 32] = attempt
            .begin
            .nonce
            .0
            .as_slice()
            .try_into()
            .map_err(|_| LoginError::Server("the challenge nonce is not 32 bytes".into()))?;
        let matcher_public_key = match &attempt.begin.matcher_public_key {
            Some(k) => <[u8; 32]>::try_from(k.0.as_slice())
                .map_err(|_| LoginError::Server("the matcher key is not 32 bytes".into()))?,
            None if want == Want::Decision => [0; 32],
            None => {
                return Err(LoginError::Server(
                    "the server sent no matcher key to seal the template to".into(),
                ))
            }
        };
        let request = Request {
            want,
            nonce,
            matcher_public_key,
            user_id: attempt.user.as_str().to_owned(),
            reader_id: reader.reader_id.clone().unwrap_or_default(),
            wait_ms: u32::try_from(reader.capture_timeout.as_millis()).unwrap_or(u32::MAX),
        }
        .encode()
        .map_err(|e| LoginError::Device(e.to_string()))?;
        attempt
            .conv
            .info(
                "Place your finger on the reader.",
                "指を読取装置に置いてください。",
            )
            .await?;
        let answer = match ask(reader, &request).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(error = %e, "biometric reader");
                return Err(LoginError::Device(e.to_string()));
            }
        };
        let (kind, bytes) = match answer {
            Response::Evidence { kind, bytes } => (kind, bytes),
            Response::Refused { status, message } => {
                let what = match status {
                    Status::NoFinger => "no finger was placed on the reader in time",
                    Status::Busy => "the biometric reader is busy",
                    Status::NotEnrolled => "no fingerprint is enrolled on the reader",
                    Status::Unsupported => "the biometric reader cannot do what the policy asks",
                    Status::Failure => "the biometric reader failed",
                };
                tracing::info!(status = ?status, message = %message, "biometric reader refused");
                return Err(LoginError::Device(if message.is_empty() {
                    what.to_owned()
                } else {
                    format!("{what} ({message})")
                }));
            }
        };
        if !want.accepts(kind) {
            return Err(LoginError::Device(format!(
                "the biometric reader sent a {} for {factor}",
                match kind {
                    Kind::Sealed => "sealed template",
                    Kind::Decision => "match decision",
                }
            )));
        }
        let bad =
            |why: String| LoginError::Device(format!("the biometric reader's evidence {why}"));
        let context = evidence_context(kind, &bytes).map_err(bad)?;
        check_binding(
            &context,
            &nonce,
            attempt.user.as_str(),
            reader.reader_id.as_deref(),
        )
        .map_err(bad)?;
        tracing::debug!(reader = %context.reader_id, kind = ?kind, len = bytes.len(), "biometric evidence");
        match kind {
            Kind::Sealed => Ok(EvidenceItem::BiometricSealed {
                capture: B64::new(bytes).ok_or_else(|| bad("is too large".into()))?,
            }),
            Kind::Decision => Ok(EvidenceItem::BiometricDecision {
                decision: B64::new(bytes).ok_or_else(|| bad("is too large".into()))?,
            }),
        }
    }
}

/// The context the evidence claims (parsed strictly, not verified).
fn evidence_context(kind: Kind, bytes: &[u8]) -> Result<CaptureContext, String> {
    match kind {
        Kind::Sealed => SealedCapture::from_bytes(bytes)
            .map(|s| s.context().clone())
            .map_err(|e| format!("is malformed ({e})")),
        Kind::Decision => SignedDecision::from_bytes(bytes)
            .map(|d| d.context)
            .map_err(|e| format!("is malformed ({e})")),
    }
}

fn check_binding(
    context: &CaptureContext,
    nonce: &[u8; 32],
    user: &str,
    reader_id: Option<&str>,
) -> Result<(), String> {
    if context.nonce != *nonce {
        return Err("is bound to another challenge".into());
    }
    if context.user_id != user {
        return Err("is bound to another user".into());
    }
    if let Some(want) = reader_id {
        if context.reader_id != want {
            return Err(format!("comes from reader {:?}", context.reader_id));
        }
    }
    Ok(())
}

/// One request, one response, each within its deadline.
async fn ask(reader: &ReaderConfig, request: &[u8]) -> Result<Response, ReaderError> {
    let connect = async {
        match &reader.address {
            ReaderAddress::Unix(path) => tokio::net::UnixStream::connect(path)
                .await
                .map(Stream::Unix)
                .map_err(|e| ReaderError::Connect(format!("{}: {e}", path.display()))),
            ReaderAddress::Tcp(addr) => tokio::net::TcpStream::connect(addr)
                .await
                .map(Stream::Tcp)
                .map_err(|e| ReaderError::Connect(format!("{addr}: {e}"))),
        }
    };
    let stream = tokio::time::timeout(reader.connect_timeout, connect)
        .await
        .map_err(|_| ReaderError::Connect("no connection in time".into()))??;
    // The reader waits up to the capture timeout for the finger; a little
    // more for it to say so.
    let deadline = reader.capture_timeout + Duration::from_secs(2);
    tokio::time::timeout(deadline, async {
        match stream {
            Stream::Unix(s) => exchange(s, request).await,
            Stream::Tcp(s) => exchange(s, request).await,
        }
    })
    .await
    .map_err(|_| ReaderError::Timeout)?
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<Response, ReaderError> {
    let io = |e: std::io::Error| ReaderError::Connect(e.to_string());
    stream
        .write_all(&protocol::frame(request))
        .await
        .map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| ReaderError::Bad(format!("no answer ({e})")))?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_RESPONSE_LEN {
        // Never read (or allocate) what an oversized length announces.
        return Err(ReaderError::Bad(format!("{len} bytes announced")));
    }
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|e| ReaderError::Bad(format!("truncated ({e})")))?;
    Response::decode(&payload).map_err(|e| ReaderError::Bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_addresses() {
        assert_eq!(
            "unix:/run/clinauth/bioreader.sock".parse::<ReaderAddress>(),
            Ok(ReaderAddress::Unix("/run/clinauth/bioreader.sock".into()))
        );
        assert!(matches!(
            "tcp:127.0.0.1:7300".parse::<ReaderAddress>(),
            Ok(ReaderAddress::Tcp(_))
        ));
        assert!("tcp:[::1]:7300".parse::<ReaderAddress>().is_ok());
        for bad in [
            "unix:bioreader.sock",
            "tcp:10.0.0.5:7300",
            "tcp:reader:7300",
            "/run/x.sock",
            "",
        ] {
            assert!(bad.parse::<ReaderAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_checked() {
        BiometricSettings::default().check().unwrap();
        let ok = BiometricSettings {
            reader: Some("unix:/run/clinauth/bioreader.sock".into()),
            reader_id: Some("ward3-bio-1".into()),
            ..BiometricSettings::default()
        };
        ok.check().unwrap();
        assert!(Biometric::from_settings(&ok).has_reader());
        assert!(!Biometric::from_settings(&ok).has_fprintd());
        for bad in [
            BiometricSettings {
                reader: None,
                ..ok.clone()
            },
            BiometricSettings {
                reader_id: Some(String::new()),
                ..ok.clone()
            },
            BiometricSettings {
                capture_timeout: Seconds(1),
                ..ok.clone()
            },
            BiometricSettings {
                connect_timeout: Seconds(0),
                ..ok.clone()
            },
            BiometricSettings {
                reader: Some("tcp:192.0.2.1:1".into()),
                ..ok.clone()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
            assert!(!Biometric::from_settings(&bad).has_reader());
        }
    }

    #[test]
    fn binding_checked() {
        let c = CaptureContext {
            nonce: [1; 32],
            reader_id: "r1".into(),
            user_id: "alice".into(),
            captured_at: 0,
        };
        assert!(check_binding(&c, &[1; 32], "alice", Some("r1")).is_ok());
        assert!(check_binding(&c, &[1; 32], "alice", None).is_ok());
        assert!(check_binding(&c, &[2; 32], "alice", None).is_err());
        assert!(check_binding(&c, &[1; 32], "bob", None).is_err());
        assert!(check_binding(&c, &[1; 32], "alice", Some("r2")).is_err());
        assert!(evidence_context(Kind::Sealed, b"CABS").is_err());
        assert!(evidence_context(Kind::Decision, &[0; 100]).is_err());
    }
}
