//! A whole ClinAuth site on loopback for end-to-end tests: the real auth
//! server (SQLite, a local PKI, the hospital example policy, a test card
//! CA as trust anchor) and real agents with their sockets, in this process.
//! The cards come from the private pcscd ([`crate::pcscd`]) and the
//! virtual cards of this crate.
//!
//! Everything lives under one temporary directory, removed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clinauth_agent::config::Config as AgentConfig;
use clinauth_agent::daemon::Daemon;
use clinauth_agent::readers::Readers;
use clinauth_factors::pin::SecretPin;
use clinauth_server::config::Config as ServerConfig;
use clinauth_server::credentials::Enroller;
use clinauth_server::keys::Keys;
use clinauth_server::officer::Officer;
use clinauth_server::{clock, pki, run};
use tokio::runtime::Runtime;

use crate::testpki::TestCa;

/// Why the stack could not do something.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StackError(pub String);

macro_rules! try_to {
    ($what:expr, $e:expr) => {
        $e.map_err(|e| StackError(format!("{}: {e}", $what)))
    };
}

/// The site: the server and what it trusts.
pub struct Site {
    dir: PathBuf,
    /// The runtime the server and agents run on.
    pub rt: Arc<Runtime>,
    server: Option<run::Running>,
    /// The workstation API's address (kept across restarts).
    pub addr: SocketAddr,
    /// The local PKI (server and workstation certificates).
    pub pki_dir: PathBuf,
    /// The CA of the users' cards.
    pub card_ca: TestCa,
    /// The server's ticket public key (Ed25519, raw).
    pub ticket_key: Vec<u8>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.stop());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server_config(dir: &Path, pki_dir: &Path, listen: SocketAddr) -> String {
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    );
    format!(
        r#"
[server]
name = "clinauth.test"
workstation_listen = "{listen}"
officer_listen = "127.0.0.1:0"
[database]
url = "sqlite://{d}/clinauth.db"
[keys]
dir = "{d}/keys"
[policy]
initial = "{policy}"
[smartcard]
trust_anchors = ["{d}/card-ca.pem"]
require_crl = false
[tls]
cert = "{p}/server.pem"
key = "{p}/server-key.pem"
workstation_ca = "{p}/ca.pem"
crl = "{p}/crl.pem"
"#,
        d = dir.display(),
        p = pki_dir.display()
    )
}

impl Site {
    /// Makes the PKI, keys and database and starts the server.
    pub fn start(tag: &str) -> Result<Site, StackError> {
        let dir = try_to!("temporary directory", crate::tempdir::unique_dir(tag))?;
        let rt = Arc::new(try_to!(
            "runtime",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        )?);
        let pki_dir = dir.join("pki");
        let options = pki::InitOptions {
            site: "Test Hospital".into(),
            server_names: vec![],
            force: false,
        };
        try_to!("pki init", pki::init(&pki_dir, &options, clock::now_ms()))?;
        try_to!("keys", Keys::create_missing(&dir.join("keys")))?;
        let card_ca = try_to!("card CA", TestCa::generate("ClinAuth Test Card CA"))?;
        try_to!(
            "card CA file",
            std::fs::write(dir.join("card-ca.pem"), card_ca.cert_pem())
        )?;
        let mut site = Site {
            dir,
            rt,
            server: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            pki_dir,
            card_ca,
            ticket_key: Vec::new(),
        };
        site.start_server()?;
        Ok(site)
    }

    /// The site's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the server (again), on the same port after the first start.
    pub fn start_server(&mut self) -> Result<(), StackError> {
        if self.server.is_some() {
            return Ok(());
        }
        let text = server_config(&self.dir, &self.pki_dir, self.addr);
        let config = try_to!(
            "server config",
            ServerConfig::from_toml(&text, Path::new("test-server.toml"))
        )?;
        let running = try_to!("server start", self.rt.block_on(run::start(config)))?;
        self.addr = running.workstation_addr;
        self.ticket_key = {
            use ring::signature::KeyPair;
            running.auth.keys.ticket.public_key().as_ref().to_vec()
        };
        self.server = Some(running);
        Ok(())
    }

    /// Stops the server (the database stays).
    pub fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.stop());
        }
    }

    fn running(&self) -> Result<&run::Running, StackError> {
        self.server
            .as_ref()
            .ok_or_else(|| StackError("the server is stopped".into()))
    }

    /// The running server (for direct checks: audit, store).
    pub fn server(&self) -> Option<&run::Running> {
        self.server.as_ref()
    }

    /// Adds a user with `roles`.
    pub fn add_user(&self, id: &str, roles: &[&str]) -> Result<(), StackError> {
        let server = self.running()?;
        let officer = Officer {
            store: &server.auth.store,
            key: &server.auth.keys.audit,
            actor: "root@test",
        };
        let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
        try_to!(
            "add user",
            self.rt
                .block_on(officer.add_user(id, id, &roles, clock::now_ms()))
        )?;
        Ok(())
    }

    fn enroller<'a>(server: &'a run::Running) -> Enroller<'a> {
        Enroller {
            store: &server.auth.store,
            audit: &server.auth.keys.audit,
            data: &server.auth.keys.data[0],
            actor: "root@test",
        }
    }

    /// Enrolls a server PIN.
    pub fn enroll_pin(&self, user: &str, pin: &str) -> Result<(), StackError> {
        let server = self.running()?;
        let pin = SecretPin::from_text(pin).map_err(|e| StackError(format!("pin: {e}")))?;
        try_to!(
            "enroll pin",
            self.rt
                .block_on(Self::enroller(server).pin(user, &pin, clock::now_ms()))
        )
    }

    /// Enrolls a card's authentication certificate (PIN-protected key).
    pub fn enroll_card(&self, user: &str, cert_der: &[u8]) -> Result<(), StackError> {
        let server = self.running()?;
        try_to!(
            "enroll card",
            self.rt.block_on(Self::enroller(server).card(
                user,
                cert_der,
                &server.auth.verifiers.card_trust,
                true,
                clock::now_ms()
            ))
        )
    }

    /// Registers a badge.
    pub fn register_badge(&self, user: &str, uid: &[u8]) -> Result<(), StackError> {
        let server = self.running()?;
        let officer = Officer {
            store: &server.auth.store,
            key: &server.auth.keys.audit,
            actor: "root@test",
        };
        try_to!(
            "register badge",
            self.rt
                .block_on(officer.register_badge(user, uid, clock::now_ms()))
        )?;
        Ok(())
    }

    /// Issues a workstation certificate and registers the workstation in
    /// `group`.
    pub fn add_workstation(&self, name: &str, group: &str) -> Result<pki::Issued, StackError> {
        let server = self.running()?;
        let issued = try_to!(
            "issue workstation",
            pki::issue_workstation(&self.pki_dir, name, None, false, clock::now_ms())
        )?;
        let officer = Officer {
            store: &server.auth.store,
            key: &server.auth.keys.audit,
            actor: "root@test",
        };
        try_to!(
            "add workstation",
            self.rt.block_on(officer.add_workstation(
                name,
                &issued.sha256,
                group,
                "test",
                clock::now_ms()
            ))
        )?;
        Ok(issued)
    }

    /// An agent configuration for workstation `ws`, its socket and state
    /// under the site's directory; `extra` is appended (more sections).
    pub fn agent_config(&self, ws: &pki::Issued, extra: &str) -> Result<AgentConfig, StackError> {
        let dir = self.dir.join(format!("agent-{}", ws.name));
        try_to!("agent dir", std::fs::create_dir_all(&dir))?;
        let text = format!(
            r#"
[agent]
workstation = "{name}"
socket = "{d}/agent.sock"
state_dir = "{d}/state"
conversation_timeout = "20s"
log_format = "text"
[server]
address = "{addr}"
server_name = "localhost"
ca = "{p}/ca.pem"
certificate = "{cert}"
key = "{key}"
connect_timeout = "2s"
request_timeout = "5s"
retries = 1
[card]
apdu_timeout = "5s"
insert_timeout = "3s"
{extra}
"#,
            name = ws.name,
            d = dir.display(),
            addr = self.addr,
            p = self.pki_dir.display(),
            cert = ws.cert.display(),
            key = ws.key.display(),
        );
        try_to!(
            "agent config",
            AgentConfig::from_toml(&text, Path::new("test-agent.toml"))
        )
    }

    /// Starts an agent with `config`, watching `readers` (PC/SC names).
    pub fn start_agent(
        &self,
        config: AgentConfig,
        readers: Vec<String>,
    ) -> Result<Agent, StackError> {
        let socket = config.agent.socket.clone();
        let max = config.agent.max_connections;
        let watcher = Readers::start(readers);
        // Inside the runtime: the daemon starts its tasks (event upload).
        let _guard = self.rt.enter();
        let daemon = Arc::new(try_to!("agent", Daemon::new(config, watcher.clone()))?);
        let listener = try_to!("agent socket", clinauth_agent::socket::bind(&socket))?;
        let task = self
            .rt
            .spawn(clinauth_agent::socket::serve(listener, daemon.clone(), max));
        Ok(Agent {
            socket,
            readers: watcher,
            task,
            daemon,
        })
    }
}

/// A running agent; stopped on drop.
pub struct Agent {
    /// Its socket.
    pub socket: PathBuf,
    /// Its view of the readers.
    pub readers: Readers,
    /// The daemon (for checks).
    pub daemon: Arc<Daemon>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
        self.readers.stop();
        let _ = std::fs::remove_file(&self.socket);
    }
}
