//! FIDO2 and the sealed fingerprint end to end: the real server (a
//! [`Site`]), the real agent daemon and its socket, a client conversing as
//! the PAM module does, and the devices the agent talks to (a soft FIDO2
//! token in a file; the reader emulator on its socket). No pcscd needed:
//! the agents run without card readers.
//!
//! - `r_auth_4_fido2_uv_login_through_the_agent`: a SoftToken registered
//!   with the server's `Enroller` logs in as `fido2_uv` through the agent,
//!   and again after an agent restart.
//! - `r_bio_1_sealed_fingerprint_login_and_no_plaintext_anywhere`: a login
//!   with a sealed fingerprint and a PIN, with a recording TLS relay
//!   between the agent and the server (it holds the server's certificate
//!   and the workstation's, as the two ends do), the agent's logs at TRACE,
//!   the socket replies and the agent's state directory all searched for
//!   every template the reader captured: raw, base64 (any variant), hex,
//!   and as a Rust byte list. None is found, and the search finds a
//!   template where one is planted.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use clinauth_agent::config::Config as AgentConfig;
use clinauth_agent::daemon::Daemon;
use clinauth_agent::login::fido2::soft;
use clinauth_agent::readers::Readers;
use clinauth_biometric::SyntheticFinger;
use clinauth_hardware_tests::bio_reader::{BioReader, Protection, ReaderService};
use clinauth_hardware_tests::conversation::{self, converse};
use clinauth_hardware_tests::stack::Site;
use clinauth_policy::Purpose;
use clinauth_proto::agent::{Outcome, Reply};
use clinauth_proto::client::AgentClient;
use clinauth_server::credentials::Enroller;
use clinauth_server::officer::Officer;
use clinauth_server::{clock, pki};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const NURSE: &str = "nurse.tanaka";
const PIN: &str = "482913";
const READER: &str = "ward3-bio-1";
/// The server's WebAuthn origin (`server.name` is `clinauth.test`).
const ORIGIN: &str = "https://clinauth.test";

// ------------------------------------------------------------------ logs

/// Everything the agent logs in this process, at TRACE.
fn log_buffer() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        Mutex::new(Vec::new())
    })
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ----------------------------------------------------------------- agent

struct RunningAgent {
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// An agent for `ws` without card readers, with `extra` config sections,
/// talking to `server` (default: the site's server).
fn start_agent(
    site: &Site,
    ws: &pki::Issued,
    extra: &str,
    server: Option<SocketAddr>,
) -> RunningAgent {
    let mut config: AgentConfig = site.agent_config(ws, extra).unwrap();
    config.card.enabled = false;
    if let Some(addr) = server {
        config.server.address = addr.to_string();
    }
    let socket = config.agent.socket.clone();
    let max = config.agent.max_connections;
    let _rt = site.rt.enter();
    let daemon = Arc::new(Daemon::new(config, Readers::new()).unwrap());
    let listener = clinauth_agent::socket::bind(&socket).unwrap();
    let task = site
        .rt
        .spawn(clinauth_agent::socket::serve(listener, daemon, max));
    RunningAgent { socket, task }
}

/// Logs `user` in through the agent's socket, answering every prompt with
/// `answer`. Returns every reply, the last one ending the conversation.
fn login(socket: &Path, user: &str, answer: &str) -> Vec<Reply> {
    let mut client = AgentClient::connect(socket, Duration::from_secs(30)).unwrap();
    let request = conversation::authenticate(user, Purpose::Login, "e2e-test").unwrap();
    converse(&mut client, &request, |_| Some(answer.to_owned()))
        .unwrap()
        .replies
}

fn allowed_factors(replies: &[Reply]) -> Vec<String> {
    match replies.last() {
        Some(Reply::AuthResult {
            outcome: Outcome::Allow,
            factors,
            ..
        }) => factors.iter().map(|f| f.as_str().to_owned()).collect(),
        other => panic!("not allowed: {other:?}\nall: {replies:?}"),
    }
}

fn officer(site: &Site) -> Officer<'_> {
    let server = site.server().unwrap();
    Officer {
        store: &server.auth.store,
        key: &server.auth.keys.audit,
        actor: "root@test",
    }
}

fn enroller(site: &Site) -> Enroller<'_> {
    let server = site.server().unwrap();
    Enroller {
        store: &server.auth.store,
        audit: &server.auth.keys.audit,
        data: &server.auth.keys.data[0],
        actor: "root@test",
    }
}

// ----------------------------------------------------------------- FIDO2

#[test]
fn r_auth_4_fido2_uv_login_through_the_agent() {
    let site = Site::start("agent-fido2").unwrap();
    site.add_user(NURSE, &["nurse"]).unwrap();
    let ws = site.add_workstation("ward3-ws01", "ward").unwrap();

    // The officer registers the nurse's key (here: a soft token file).
    let token = site.dir().join("nurse-token.cbor");
    soft::create(&token, true).unwrap();
    let server = site.server().unwrap();
    let verifier = server.auth.verifiers.fido2.as_ref().unwrap();
    let (enrollment, options) = site
        .rt
        .block_on(enroller(&site).fido2_begin(verifier, NURSE, "田中", true, clock::now_ms()))
        .unwrap();
    let options: serde_json::Value = serde_json::from_str(&options).unwrap();
    let response = soft::register(&token, ORIGIN, &options, true).unwrap();
    let registered = site
        .rt
        .block_on(enroller(&site).fido2_finish(
            verifier,
            NURSE,
            &enrollment,
            &response.to_string(),
            clock::now_ms(),
        ))
        .unwrap();
    assert!(registered.user_verified_at_registration);

    let extra = format!(
        "[fido2]\ntransport = \"soft\"\nsoft_token = \"{}\"\nrp_id = \"clinauth.test\"\n",
        token.display()
    );
    let agent = start_agent(&site, &ws, &extra, None);
    let replies = login(&agent.socket, NURSE, "unused");
    assert_eq!(allowed_factors(&replies), ["fido2_uv"]);
    assert!(
        replies.iter().any(
            |r| matches!(r, Reply::Info { text, .. } if text.as_str() == "Touch your security key.")
        ),
        "{replies:?}"
    );
    assert!(!replies.iter().any(|r| matches!(r, Reply::Prompt { .. })));

    // The agent restarts; the token (and its counter) come from the file.
    drop(agent);
    let agent = start_agent(&site, &ws, &extra, None);
    let replies = login(&agent.socket, NURSE, "unused");
    assert_eq!(allowed_factors(&replies), ["fido2_uv"]);
}

// ------------------------------------------------------------- biometric

/// A TLS relay that terminates the agent's TLS with the server's
/// certificate and opens its own to the server with the workstation's
/// certificate, recording both directions in plaintext.
struct Recorder {
    addr: SocketAddr,
    to_server: Arc<Mutex<Vec<u8>>>,
    to_agent: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn client_tls(site: &Site, ws: &pki::Issued) -> Arc<rustls::ClientConfig> {
    use clinauth_server::tls;
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::load_certs(&site.pki_dir.join(pki::CA_CERT)).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                tls::load_certs(&ws.cert).unwrap(),
                tls::load_private_key(&ws.key).unwrap(),
            )
            .unwrap(),
    )
}

fn server_tls(site: &Site) -> Arc<rustls::ServerConfig> {
    let settings = clinauth_server::tls::TlsSettings {
        cert: site.pki_dir.join("server.pem"),
        key: site.pki_dir.join("server-key.pem"),
        workstation_ca: vec![site.pki_dir.join(pki::CA_CERT)],
        crl: vec![],
        allow_tls12: false,
        handshake_timeout: clinauth_policy::Seconds(10),
    };
    clinauth_server::tls::workstation_server_config(&settings).unwrap()
}

async fn pump<R, W>(mut from: R, mut to: W, log: Arc<Mutex<Vec<u8>>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn recorder(site: &Site, ws: &pki::Issued) -> Recorder {
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls(site));
    let connector = tokio_rustls::TlsConnector::from(client_tls(site, ws));
    let upstream = site.addr;
    let _rt = site.rt.enter();
    let listener = site
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let to_server = Arc::new(Mutex::new(Vec::new()));
    let to_agent = Arc::new(Mutex::new(Vec::new()));
    let (ts, ta) = (to_server.clone(), to_agent.clone());
    let task = site.rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, connector) = (acceptor.clone(), connector.clone());
            let (ts, ta) = (ts.clone(), ta.clone());
            tokio::spawn(async move {
                let Ok(agent_side) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(up) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let Ok(server_side) = connector.connect(name, up).await else {
                    return;
                };
                let (ar, aw) = tokio::io::split(agent_side);
                let (sr, sw) = tokio::io::split(server_side);
                tokio::join!(pump(ar, sw, ts), pump(sr, aw, ta));
            });
        }
    });
    Recorder {
        addr,
        to_server,
        to_agent,
        task,
    }
}

/// Every decoding of `text`'s base64-looking tokens (standard or URL-safe,
/// padded or not).
fn base64_decodings(text: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let is_b64 =
        |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_' | b'=');
    let mut out = Vec::new();
    for token in text.split(|c| !is_b64(c)).filter(|t| t.len() >= 16) {
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            // Any alignment: the template may start anywhere in the token.
            for skip in 0..4 {
                if let Some(t) = token.get(skip..) {
                    let end = t.len() - t.len() % 4;
                    if let Ok(bytes) = engine.decode(&t[..end]) {
                        out.push(bytes);
                    }
                    if let Ok(bytes) = engine.decode(t) {
                        out.push(bytes);
                    }
                }
            }
        }
    }
    out
}

const WINDOW: usize = 16;

/// Where (if anywhere) a `WINDOW`-byte piece of `template` appears in
/// `hay`: raw, in a base64 token, in hex, or as a Rust byte list.
fn find_template(hay: &[u8], template: &[u8]) -> Option<&'static str> {
    let windows: Vec<&[u8]> = template.windows(WINDOW).collect();
    let raw = |h: &[u8]| windows.iter().any(|w| h.windows(WINDOW).any(|x| x == *w));
    if raw(hay) {
        return Some("raw");
    }
    if base64_decodings(hay).iter().any(|d| raw(d)) {
        return Some("base64");
    }
    let text = String::from_utf8_lossy(hay).to_lowercase();
    for w in &windows {
        let hex: String = w.iter().map(|b| format!("{b:02x}")).collect();
        if text.contains(&hex) {
            return Some("hex");
        }
        let list = format!("{:?}", w);
        if text.contains(list.trim_start_matches('[').trim_end_matches(']')) {
            return Some("byte list");
        }
    }
    None
}

fn files_under(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            files_under(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
}

#[test]
fn r_bio_1_sealed_fingerprint_login_and_no_plaintext_anywhere() {
    let _ = log_buffer();
    let mut site = Site::start("agent-bio").unwrap();
    // The hospital policy with "badge + biometric" on wards replaced by a
    // combination this test can present without a card reader.
    let policy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    ))
    .unwrap();
    let line =
        r#"["badge", "biometric"],      # match-on-reader or sealed template only (R-BIO-1)"#;
    assert!(policy.contains(line), "the example policy changed");
    let policy = policy
        .replacen(line, r#"["biometric_sealed", "server_pin"],"#, 1)
        .replacen("\nversion = ", "\nversion = 1", 1);
    {
        let server = site.server().unwrap();
        site.rt
            .block_on(server.auth.policy.activate(
                &server.auth.store,
                &server.auth.keys.audit,
                &policy,
                "root@test",
                clock::now_ms(),
            ))
            .unwrap();
    }
    site.add_user(NURSE, &["nurse"]).unwrap();
    site.enroll_pin(NURSE, PIN).unwrap();
    let ws = site.add_workstation("ward3-ws01", "ward").unwrap();

    // The reader: registered with its key, the nurse's finger enrolled.
    let service = ReaderService::unix(
        BioReader::new(READER, &[7; 32], Protection::SealedTemplate).unwrap(),
        &site.dir().join("bioreader.sock"),
    )
    .unwrap();
    site.rt
        .block_on(officer(&site).register_reader(
            READER,
            service.public_key().as_bytes(),
            "sealed_template",
            false,
            "ward 3 reader",
            clock::now_ms(),
        ))
        .unwrap();
    let enrolled = SyntheticFinger::new(42).capture(1000);
    site.rt
        .block_on(enroller(&site).template(NURSE, 1, &enrolled, clock::now_ms()))
        .unwrap();

    let relay = recorder(&site, &ws);
    let extra = format!(
        "[biometric]\nreader = \"{}\"\nreader_id = \"{READER}\"\n",
        service.address()
    );
    let agent = start_agent(&site, &ws, &extra, Some(relay.addr));
    service.place_finger(SyntheticFinger::new(42));
    let replies = login(&agent.socket, NURSE, PIN);
    let mut factors = allowed_factors(&replies);
    factors.sort();
    assert_eq!(factors, ["biometric_sealed", "server_pin"], "{replies:?}");
    // A wrong finger is refused by the server (the agent relays anyway).
    service.place_finger(SyntheticFinger::new(43));
    let refused = login(&agent.socket, NURSE, PIN);
    assert!(
        matches!(
            refused.last(),
            Some(Reply::AuthResult {
                outcome: Outcome::Deny,
                ..
            })
        ),
        "{refused:?}"
    );
    drop(agent);
    site.stop_server();

    // What the agent had anything to do with.
    let mut places: Vec<(String, Vec<u8>)> = vec![
        (
            "agent → server".into(),
            relay.to_server.lock().unwrap().clone(),
        ),
        (
            "server → agent".into(),
            relay.to_agent.lock().unwrap().clone(),
        ),
        (
            "process logs (agent and server)".into(),
            log_buffer().lock().unwrap().clone(),
        ),
        (
            "socket replies".into(),
            serde_json::to_vec(&replies.iter().chain(&refused).collect::<Vec<_>>()).unwrap(),
        ),
        ("reader → agent".into(), service.responses().concat()),
    ];
    let mut files = Vec::new();
    files_under(&site.dir().join("agent-ward3-ws01"), &mut files);
    for (path, bytes) in files {
        places.push((path.display().to_string(), bytes));
    }
    for (place, bytes) in &places {
        eprintln!("searched {place}: {} bytes", bytes.len());
    }
    // The relay did see the login (so the search is over real traffic).
    let sent = String::from_utf8_lossy(&places[0].1).to_string();
    assert!(
        sent.contains("biometric_sealed"),
        "no sealed capture went to the server"
    );
    assert!(!places[2].1.is_empty(), "no logs captured");

    // Both captures the reader sealed, and the template enrolled at the server.
    let mut templates = service.plaintext_templates();
    assert_eq!(templates.len(), 2, "two captures");
    templates.push(enrolled.encode().to_vec());
    for template in &templates {
        for (place, bytes) in &places {
            assert_eq!(
                find_template(bytes, template),
                None,
                "a plaintext template was found in {place}"
            );
        }
        // The search does find one where it is.
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let planted = format!(
            "evidence {{\"capture\":\"{}\"}}",
            URL_SAFE_NO_PAD.encode(template)
        );
        assert_eq!(find_template(planted.as_bytes(), template), Some("base64"));
        assert_eq!(
            find_template(format!("x {template:?} y").as_bytes(), template),
            Some("byte list")
        );
        let hex: String = template.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(find_template(hex.as_bytes(), template), Some("hex"));
        assert_eq!(find_template(template, template), Some("raw"));
    }
}
