//! The software authenticator: webauthn-authenticator-rs's `SoftToken`,
//! kept in a file so that a key registered once keeps working across agent
//! restarts (tests and the demo; `[fido2] transport = "soft"`).
//!
//! The file is the token's own CBOR form (`SoftToken::to_cbor`): its
//! attestation CA and intermediate, every credential's private key, and the
//! signature counter. The crate warns that this form may change between its
//! versions; a token file is only good for the version that wrote it.
//!
//! - Each assertion reads the file, signs, and writes the file back
//!   (atomically: a temporary file, fsync, rename, fsync of the directory)
//!   **before** the assertion leaves the agent, so that the counter the
//!   server stores is never ahead of the one on disk (a regressed counter
//!   is refused as a possible clone). Assertions are serialised.
//! - The file must be readable by its owner only (mode 0600); anything
//!   wider is refused. It holds private keys in the clear: this is a test
//!   double, not a security key.
//! - The token has no PIN. Created with `user_verification = true` it
//!   reports user verification whenever the client asks for it
//!   ("required"), as a key with a built-in fingerprint sensor would; with
//!   `false` it never does (a touch-only key).
//!
//! [`create`] and [`register`] make and register such a file (tests, the
//! demo's setup).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use webauthn_authenticator_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RequestChallengeResponse, Url,
    WebauthnAuthenticator,
};
use webauthn_authenticator_rs::softtoken::SoftToken;
use zeroize::Zeroizing;

use crate::login::LoginError;

/// The largest token file read.
pub const MAX_TOKEN_FILE_LEN: u64 = 1024 * 1024;

/// Why the soft token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SoftTokenError {
    /// Reading or writing the file failed.
    #[error("soft token {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others may read or write the file.
    #[error("soft token {path}: mode {mode:o} lets others read it; chmod 600")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not a file, too large, or not a token.
    #[error("soft token {path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The token refused (no credential for this request, bad options).
    #[error("the soft token refused: {0}")]
    Refused(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SoftTokenError + '_ {
    move |source| SoftTokenError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads the token at `path`.
pub fn load(path: &Path) -> Result<SoftToken, SoftTokenError> {
    let invalid = |why: &str| SoftTokenError::Invalid {
        path: path.to_owned(),
        why: why.to_owned(),
    };
    let mut file = File::open(path).map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    if !meta.is_file() {
        return Err(invalid("not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SoftTokenError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MAX_TOKEN_FILE_LEN {
        return Err(invalid("larger than 1 MiB"));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    (&mut file)
        .take(MAX_TOKEN_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    SoftToken::from_cbor(&bytes).map_err(|_| invalid("not a soft token (CBOR)"))
}

/// Writes `token` to `path` atomically (mode 0600).
pub fn save(path: &Path, token: &SoftToken) -> Result<(), SoftTokenError> {
    let bytes = Zeroizing::new(
        token
            .to_cbor()
            .map_err(|e| SoftTokenError::Refused(format!("encoding: {e}")))?,
    );
    let name = path
        .file_name()
        .ok_or_else(|| SoftTokenError::Invalid {
            path: path.to_owned(),
            why: "no file name".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io(&tmp))?;
    file.write_all(&bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// Creates a new token file at `path` (refuses to replace one). With
/// `user_verification`, the token reports UV when asked for it.
pub fn create(path: &Path, user_verification: bool) -> Result<(), SoftTokenError> {
    if path.exists() {
        return Err(SoftTokenError::Invalid {
            path: path.to_owned(),
            why: "exists already".into(),
        });
    }
    let (token, _ca) =
        SoftToken::new(user_verification).map_err(|e| SoftTokenError::Refused(e.to_string()))?;
    save(path, &token)
}

/// Answers a registration: `options` is the server's
/// `CreationChallengeResponse` JSON (`{"publicKey": …}`), `origin` the
/// relying party's origin. With `user_verification` the token is asked to
/// verify the user (it must have been created so). Saves the token and
/// returns the `RegisterPublicKeyCredential` JSON for the server.
pub fn register(
    path: &Path,
    origin: &str,
    options: &serde_json::Value,
    user_verification: bool,
) -> Result<serde_json::Value, SoftTokenError> {
    let origin = Url::parse(origin).map_err(|_| SoftTokenError::Refused("bad origin".into()))?;
    let mut v = options.clone();
    if user_verification {
        v["publicKey"]["authenticatorSelection"]["userVerification"] = "required".into();
    }
    let ccr: CreationChallengeResponse = serde_json::from_value(v)
        .map_err(|e| SoftTokenError::Refused(format!("registration options: {e}")))?;
    let mut token = load(path)?;
    let response = token
        .do_registration(origin, ccr)
        .map_err(|e| SoftTokenError::Refused(e.to_string()))?;
    save(path, &token)?;
    serde_json::to_value(&response).map_err(|e| SoftTokenError::Refused(e.to_string()))
}

/// The token file the agent signs with.
#[derive(Debug, Clone)]
pub struct SoftKey {
    path: PathBuf,
    busy: Arc<tokio::sync::Mutex<()>>,
}

impl SoftKey {
    /// The token in `path`.
    pub fn new(path: PathBuf) -> SoftKey {
        SoftKey {
            path,
            busy: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is there.
    pub fn exists(&self) -> bool {
        self.path.is_file()
    }

    /// Signs `request` for `origin`, saving the advanced counter first.
    pub async fn assert(
        &self,
        origin: Url,
        request: RequestChallengeResponse,
        timeout: Duration,
    ) -> Result<PublicKeyCredential, LoginError> {
        // Held by the blocking task to its end, even if the wait below
        // gives up: the next assertion reads what this one wrote.
        let busy = self.busy.clone().lock_owned().await;
        let path = self.path.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _busy = busy;
            let mut token = load(&path)?;
            let credential = token
                .do_authentication(origin, request)
                .map_err(|e| SoftTokenError::Refused(e.to_string()))?;
            save(&path, &token)?;
            Ok::<_, SoftTokenError>(credential)
        });
        match tokio::time::timeout(timeout, task).await {
            Err(_) => Err(LoginError::Device(
                "the security key did not answer in time".into(),
            )),
            Ok(Err(_)) => Err(LoginError::Internal("the FIDO2 task failed".into())),
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "soft token");
                Err(LoginError::Device(e.to_string()))
            }
            Ok(Ok(Ok(credential))) => Ok(credential),
        }
    }
}
