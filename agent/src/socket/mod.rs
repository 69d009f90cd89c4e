//! The agent socket: a Unix stream socket speaking `clinauth-proto`
//! (NDJSON frames of at most 64 KiB), every caller identified by the
//! kernel's peer credentials (`SO_PEERCRED`).
//!
//! - [`peer`]: who the caller is and what they may ask;
//! - [`connection`]: one caller's requests, conversations and replies.

pub mod connection;
#[allow(unsafe_code)] // getpwuid_r, each call with a SAFETY comment
pub mod peer;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::Semaphore;

use crate::daemon::Daemon;
use peer::Peer;

/// Binds the socket at `path`: replaces a stale socket (never another kind
/// of file), creates the directory, and lets every local user connect (the
/// peer check decides what each may do).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Accepts connections until the listener fails.
pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let cred = match stream.peer_cred() {
            Ok(cred) => cred,
            Err(e) => {
                // Without the kernel's word on who it is, nobody is served.
                tracing::warn!(error = %e, "no peer credentials; connection refused");
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(uid = cred.uid(), "too many connections; refused");
            continue;
        };
        let peer = Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            name: peer::user_name(cred.uid()),
        };
        let daemon = daemon.clone();
        tokio::spawn(async move {
            connection::serve(stream, peer, daemon).await;
            drop(permit);
        });
    }
}
