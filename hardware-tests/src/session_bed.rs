//! The bed for the agent's session tests and the tap-out latency benchmark:
//! the private pcscd with its two vpcd readers ([`crate::pcscd`]), the agent's
//! own reader watcher ([`Readers`]) on it, logind played by dbusmock
//! ([`crate::logind`]), and a current-thread tokio runtime on its own thread
//! for the agent's session code (as in the agent).
//!
//! [`SessionBed::start`] sets `PCSCLITE_CSOCK_NAME` (libpcsclite reads it
//! once): call it before the process starts other threads.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clinauth_agent::card::CardIdentity;
use clinauth_agent::readers::Readers;
use clinauth_agent::session::logind::BusAddress;
use clinauth_agent::session::{SessionSettings, Sessions};
use clinauth_agent::socket::peer::Peer;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::logind::LogindMock;
use crate::pcscd::{Pcscd, PcscdOptions, VpcdReader, SOCKET_ENV};
use crate::piv::keys::Algorithm;
use crate::testpki::TestCa;
use crate::{CardConfig, PivApplet, SlotId};

/// The PIN of the bed's PIV cards.
pub const PIN: &str = "123456";

/// pcscd, the readers, the logind mock and the agent's runtime.
#[derive(Debug)]
pub struct SessionBed {
    /// The agent's view of the readers.
    pub readers: Readers,
    /// logind.
    pub logind: LogindMock,
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<std::thread::JoinHandle<()>>,
    pcscd: Pcscd,
}

impl SessionBed {
    /// Starts pcscd (and points libpcsclite at it), the agent's reader
    /// watcher, the logind mock and the runtime.
    pub fn start() -> Result<SessionBed, String> {
        let opts = PcscdOptions {
            debug: std::env::var_os("CLINAUTH_PCSCD_DEBUG").is_some(),
            auto_exit: true,
        };
        let pcscd = Pcscd::start(&opts).map_err(|e| format!("private pcscd: {e}"))?;
        // Before any thread of libpcsclite's exists.
        std::env::set_var(SOCKET_ENV, pcscd.socket_path());
        let logind = LogindMock::start().map_err(|e| format!("logind mock: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("agent-runtime".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| format!("runtime thread: {e}"))?;
        let names: Vec<String> = pcscd.readers().iter().map(|r| r.name.clone()).collect();
        let readers = Readers::start(names.clone());
        let bed = SessionBed {
            readers,
            logind,
            handle,
            stop: Some(stop),
            runtime: Some(thread),
            pcscd,
        };
        Ok(bed)
    }

    /// Reader `i` (0 or 1).
    pub fn reader(&self, i: usize) -> Option<&VpcdReader> {
        self.pcscd.readers().get(i)
    }

    /// Where a virtual card connects to be in reader `i`.
    pub fn card_addr(&self, i: usize) -> Option<SocketAddr> {
        self.reader(i)
            .map(|r| SocketAddr::from(([127, 0, 0, 1], r.port)))
    }

    /// pcscd's log.
    pub fn pcscd_log(&self) -> String {
        self.pcscd.log()
    }

    /// Runs `f` on the agent's runtime and waits for its result.
    pub fn run<F>(&self, f: F) -> Result<F::Output, String>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle
            .block_on(self.handle.spawn(f))
            .map_err(|e| format!("agent task: {e}"))
    }

    /// Session settings with logind on the mock's bus.
    pub fn settings(&self) -> SessionSettings {
        SessionSettings {
            bus: BusAddress::Address(self.logind.bus_address().to_owned()),
            ..SessionSettings::default()
        }
    }

    /// The agent's session code with `settings`, the bed's readers, the
    /// real logind client and the system's user database.
    pub fn sessions(&self, settings: SessionSettings) -> Sessions {
        Sessions::new(settings, self.readers.clone(), Default::default())
    }

    /// Waits until the agent sees a card in `reader`, and returns it.
    pub fn wait_present(&self, reader: &str, timeout: Duration) -> Option<CardIdentity> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.readers.present().get(reader) {
                return Some(c.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the agent sees no card in `reader`.
    pub fn wait_absent(&self, reader: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.readers.present().contains_key(reader) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}

impl Drop for SessionBed {
    fn drop(&mut self) {
        self.readers.stop();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.runtime.take() {
            let _ = t.join();
        }
    }
}

/// A PIV card of a fresh test CA for `user` (ECDSA P-256 in 9A).
pub fn piv_card(user: &str) -> Result<PivApplet, String> {
    let ca = TestCa::generate("ClinAuth Session Test CA").map_err(|e| e.to_string())?;
    let cred = ca
        .generate_credential(user, Algorithm::EccP256, false)
        .map_err(|e| e.to_string())?;
    let config = CardConfig::new(PIN, "87654321")
        .and_then(|c| c.with_slot(SlotId::Authentication, cred))
        .map_err(|e| e.to_string())?;
    Ok(PivApplet::new(config))
}

/// The PAM stack calling from this process (root, this pid).
pub fn pam_peer() -> Peer {
    Peer {
        uid: 0,
        gid: 0,
        pid: i32::try_from(std::process::id()).ok(),
        name: Some("root".into()),
    }
}
