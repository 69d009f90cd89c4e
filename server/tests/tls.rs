//! The workstation API's mutual TLS (R-TLS-1, R-TLS-2), on 127.0.0.1 with
//! ephemeral ports: rustls clients in-process, and `openssl s_client` as a
//! real separate client. Certificates come from `clinauthctl pki`.

mod support;

use axum::routing::get;
use axum::{Extension, Router};
use clinauth_server::api::workstation::PeerFingerprint;
use clinauth_server::tls::{
    self, ServeLimits, ServerConfigHandle, TlsError, TlsSettings, MAX_PEM_BYTES,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------- set-up --

/// A test's own directory, removed when the test ends (pass or fail).
fn temp_dir(name: &str) -> support::TempDir {
    support::TempDir::new(name)
}

fn ctl(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_clinauthctl"))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap_or(-1), text)
}

/// A PKI made by `clinauthctl pki init` in `dir/pki`.
struct Pki {
    dir: PathBuf,
}

/// A workstation certificate made by `clinauthctl pki issue-workstation`.
#[derive(Clone)]
struct Workstation {
    cert: PathBuf,
    key: PathBuf,
    serial: String,
    sha256: String,
}

fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {out}"))
        .trim()
}

impl Pki {
    fn new(dir: &Path, site: &str) -> Pki {
        let pki = dir.join("pki");
        let (code, out) = ctl(&[
            "pki",
            "init",
            "--dir",
            pki.to_str().unwrap(),
            "--site",
            site,
        ]);
        assert_eq!(code, 0, "{out}");
        Pki { dir: pki }
    }

    fn issue(&self, name: &str) -> Workstation {
        let (code, out) = ctl(&[
            "pki",
            "issue-workstation",
            "--dir",
            self.dir.to_str().unwrap(),
            "--name",
            name,
        ]);
        assert_eq!(code, 0, "{out}");
        Workstation {
            cert: PathBuf::from(field(&out, "certificate:")),
            key: self
                .dir
                .join("workstations")
                .join(format!("{name}-key.pem")),
            serial: field(&out, "serial:").to_owned(),
            sha256: field(&out, "sha256:").to_owned(),
        }
    }

    fn revoke(&self, serial: &str) {
        let (code, out) = ctl(&[
            "pki",
            "revoke",
            "--dir",
            self.dir.to_str().unwrap(),
            "--serial",
            serial,
        ]);
        assert_eq!(code, 0, "{out}");
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn settings(&self, allow_tls12: bool) -> TlsSettings {
        TlsSettings {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server-key.pem"),
            workstation_ca: vec![self.ca()],
            crl: vec![self.dir.join("crl.pem")],
            allow_tls12,
            handshake_timeout: clinauth_policy::Seconds(5),
        }
    }
}

/// The handler of the tests: answers with the fingerprint the TLS layer put
/// into the request.
fn router() -> Router {
    Router::new().route(
        "/whoami",
        get(|Extension(fp): Extension<PeerFingerprint>| async move { format!("peer={}", fp.0) }),
    )
}

struct Server {
    addr: SocketAddr,
    handle: ServerConfigHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(settings: &TlsSettings, limits: ServeLimits) -> Server {
        let config = tls::workstation_server_config(settings).unwrap();
        let handle = ServerConfigHandle::new(config);
        let listener = tls::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tls::serve(
            listener,
            handle.clone(),
            router(),
            limits,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            addr,
            handle,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("serve ends on shutdown")
            .unwrap();
    }
}

fn limits() -> ServeLimits {
    ServeLimits {
        handshake_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(2),
        ..ServeLimits::default()
    }
}

// ------------------------------------------------------- rustls clients --

fn client_config(
    ca: &Path,
    client: Option<&Workstation>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some(ws) => {
            let chain = CertificateDer::pem_file_iter(&ws.cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&ws.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// What a rustls client got: the protocol and suite, and the HTTP response.
#[derive(Debug)]
struct Reply {
    version: rustls::ProtocolVersion,
    suite: rustls::CipherSuite,
    body: String,
}

async fn get_whoami(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<Reply, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    tls.write_all(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = Vec::new();
    tls.read_to_end(&mut body).await?;
    let (_, conn) = tls.get_ref();
    Ok(Reply {
        version: conn.protocol_version().unwrap(),
        suite: conn.negotiated_cipher_suite().unwrap().suite(),
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// ------------------------------------------------------ openssl s_client --

struct SClient {
    status: Option<i32>,
    output: String,
}

impl SClient {
    /// The server answered the HTTP request.
    fn served(&self) -> bool {
        self.output.contains("HTTP/1.1 200")
    }
}

/// Runs `openssl s_client` against the server with `args`, sends an HTTP
/// request, and returns what it printed. Runs on a blocking thread; killed
/// after 30 s.
async fn s_client(addr: SocketAddr, ca: &Path, args: &[&str]) -> SClient {
    let mut cmd = Command::new("openssl");
    cmd.arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-servername")
        .arg("localhost")
        .arg("-CAfile")
        .arg(ca)
        .arg("-verify_return_error")
        .arg("-ign_eof")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("openssl is installed");
        {
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin
                .write_all(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        SClient {
            status: out.status.code(),
            output: String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        }
    })
    .await
    .unwrap()
}

fn with_cert<'a>(ws: &'a Workstation, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "-cert",
        ws.cert.to_str().unwrap(),
        "-key",
        ws.key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

// ----------------------------------------------------------- R-TLS-1/2 --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_1_mutual_tls_1_3_succeeds_and_the_handler_sees_the_fingerprint() {
    let dir = temp_dir("mtls13");
    let pki = Pki::new(&dir, "Test Hospital");
    let ws = pki.issue("ws-ward3-01");
    let server = Server::start(&pki.settings(false), limits()).await;

    let reply = get_whoami(
        server.addr,
        client_config(&pki.ca(), Some(&ws), &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    assert_eq!(reply.version, rustls::ProtocolVersion::TLSv1_3);
    assert!(
        matches!(
            reply.suite,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
                | rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        ),
        "{:?}",
        reply.suite
    );
    assert!(reply.body.starts_with("HTTP/1.1 200"), "{}", reply.body);
    assert!(
        reply.body.ends_with(&format!("peer={}", ws.sha256)),
        "{}",
        reply.body
    );

    // The fingerprint is the one an officer computes with openssl.
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&ws.cert)
        .output()
        .unwrap();
    let openssl_fp = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_ascii_lowercase();
    assert_eq!(openssl_fp, ws.sha256);

    // A second workstation is told apart.
    let other = pki.issue("ws-ward3-02");
    let reply = get_whoami(
        server.addr,
        client_config(&pki.ca(), Some(&other), &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    assert!(reply.body.ends_with(&format!("peer={}", other.sha256)));
    assert_ne!(other.sha256, ws.sha256);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_1_tls_1_2_is_refused_by_default_and_accepted_when_allowed() {
    let dir = temp_dir("tls12");
    let pki = Pki::new(&dir, "Test Hospital");
    let ws = pki.issue("ws-old-01");
    let tls12_only = client_config(&pki.ca(), Some(&ws), &[&rustls::version::TLS12]);

    let strict = Server::start(&pki.settings(false), limits()).await;
    let refused = get_whoami(strict.addr, tls12_only.clone()).await;
    let err = refused.expect_err("TLS 1.2 must be refused by default");
    assert!(
        err.to_string().to_lowercase().contains("protocol version")
            || err.to_string().contains("ProtocolVersion"),
        "{err}"
    );
    strict.stop().await;

    let lenient = Server::start(&pki.settings(true), limits()).await;
    let reply = get_whoami(lenient.addr, tls12_only).await.unwrap();
    assert_eq!(reply.version, rustls::ProtocolVersion::TLSv1_2);
    assert!(
        matches!(
            reply.suite,
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        ),
        "{:?}",
        reply.suite
    );
    assert!(
        reply.body.ends_with(&format!("peer={}", ws.sha256)),
        "{}",
        reply.body
    );
    // TLS 1.3 is still preferred when both can.
    let both = client_config(
        &pki.ca(),
        Some(&ws),
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    let reply = get_whoami(lenient.addr, both).await.unwrap();
    assert_eq!(reply.version, rustls::ProtocolVersion::TLSv1_3);
    lenient.stop().await;
}

/// A ClientHello of an old protocol (no supported_versions extension),
/// offering AES128-SHA and ECDHE-RSA-AES128-SHA.
fn old_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00];
    handshake.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_1_nothing_older_than_tls_1_2_even_when_tls_1_2_is_allowed() {
    let dir = temp_dir("old");
    let pki = Pki::new(&dir, "Test Hospital");
    for allow_tls12 in [false, true] {
        let server = Server::start(&pki.settings(allow_tls12), limits()).await;
        for (name, version) in [
            ("SSL 3.0", [3, 0]),
            ("TLS 1.0", [3, 1]),
            ("TLS 1.1", [3, 2]),
        ] {
            let mut tcp = TcpStream::connect(server.addr).await.unwrap();
            tcp.write_all(&old_client_hello(version)).await.unwrap();
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
                .await
                .unwrap()
                .unwrap();
            // One alert record and nothing else (no ServerHello): fatal (2),
            // protocol_version (70) or, when no TLS 1.2 suite is enabled at
            // all, handshake_failure (40).
            assert_eq!(answer.len(), 7, "{name}: {answer:02x?}");
            assert_eq!(answer[0], 0x15, "{name}: {answer:02x?}");
            assert_eq!(answer[5], 2, "{name}: {answer:02x?}");
            assert!(matches!(answer[6], 40 | 70), "{name}: {answer:02x?}");
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_1_refuses_tls_1_1_from_openssl() {
    let dir = temp_dir("ossl11");
    let pki = Pki::new(&dir, "Test Hospital");
    let ws = pki.issue("ws-ward3-01");
    for allow_tls12 in [false, true] {
        let server = Server::start(&pki.settings(allow_tls12), limits()).await;
        // SECLEVEL=0 so that openssl really sends a TLS 1.1 ClientHello
        // (Debian's default configuration would not even try).
        let r = s_client(
            server.addr,
            &pki.ca(),
            &with_cert(&ws, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]),
        )
        .await;
        assert!(!r.served(), "{}", r.output);
        assert_ne!(r.status, Some(0), "{}", r.output);
        // openssl did send a TLS 1.1 ClientHello, and the only answer was one
        // 7-byte alert record: no ServerHello, no cipher.
        assert!(r.output.contains("Protocol  : TLSv1.1"), "{}", r.output);
        assert!(
            r.output.contains("SSL handshake has read 7 bytes"),
            "{}",
            r.output
        );
        assert!(r.output.contains("Cipher is (NONE)"), "{}", r.output);
        assert!(
            r.output.contains("alert protocol version")
                || r.output.contains("alert handshake failure"),
            "{}",
            r.output
        );
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_1_refuses_tls_1_2_from_openssl_by_default() {
    let dir = temp_dir("ossl12");
    let pki = Pki::new(&dir, "Test Hospital");
    let ws = pki.issue("ws-ward3-01");
    let server = Server::start(&pki.settings(false), limits()).await;
    let r = s_client(server.addr, &pki.ca(), &with_cert(&ws, &["-tls1_2"])).await;
    assert!(!r.served(), "{}", r.output);
    assert!(r.output.contains("alert protocol version"), "{}", r.output);
    server.stop().await;

    // Allowed: a good TLS 1.2 client gets in, with an AES-GCM ECDHE suite.
    let server = Server::start(&pki.settings(true), limits()).await;
    let r = s_client(server.addr, &pki.ca(), &with_cert(&ws, &["-tls1_2"])).await;
    assert!(r.served(), "{}", r.output);
    assert!(
        r.output.contains(&format!("peer={}", ws.sha256)),
        "{}",
        r.output
    );
    assert!(
        r.output.contains("ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{}",
        r.output
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_1_good_workstation_certificate_accepted_by_openssl_tls_1_3() {
    let dir = temp_dir("ossl13");
    let pki = Pki::new(&dir, "Test Hospital");
    let ws = pki.issue("ws-ward3-01");
    let server = Server::start(&pki.settings(false), limits()).await;
    let r = s_client(server.addr, &pki.ca(), &with_cert(&ws, &["-tls1_3"])).await;
    assert!(r.served(), "{}", r.output);
    assert!(
        r.output.contains("Verify return code: 0 (ok)"),
        "{}",
        r.output
    );
    assert!(r.output.contains("TLSv1.3"), "{}", r.output);
    assert!(
        r.output.contains(&format!("peer={}", ws.sha256)),
        "{}",
        r.output
    );
    // X25519 (OpenSSL's first key share) is not allowed: P-256 is asked for.
    assert!(
        r.output.contains("Server Temp Key: ECDH, prime256v1"),
        "{}",
        r.output
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_2_openssl_without_a_client_certificate_is_refused() {
    let dir = temp_dir("nocert");
    let pki = Pki::new(&dir, "Test Hospital");
    let server = Server::start(&pki.settings(false), limits()).await;
    let r = s_client(server.addr, &pki.ca(), &["-tls1_3"]).await;
    assert!(!r.served(), "{}", r.output);
    assert!(r.output.contains("certificate required"), "{}", r.output);

    // The rustls client sees CertificateRequired too.
    let err = get_whoami(
        server.addr,
        client_config(&pki.ca(), None, &[&rustls::version::TLS13]),
    )
    .await
    .expect_err("no client certificate");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_2_openssl_with_a_certificate_from_another_ca_is_refused() {
    let dir = temp_dir("otherca");
    let pki = Pki::new(&dir, "Test Hospital");
    let other_dir = temp_dir("otherca-2");

    let other = Pki::new(&other_dir, "Elsewhere");
    let stranger = other.issue("ws-ward3-01");
    let server = Server::start(&pki.settings(false), limits()).await;
    let r = s_client(server.addr, &pki.ca(), &with_cert(&stranger, &["-tls1_3"])).await;
    assert!(!r.served(), "{}", r.output);
    assert!(r.output.contains("alert unknown ca"), "{}", r.output);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_2_revoked_workstation_is_refused_after_pki_revoke() {
    let dir = temp_dir("revoke");
    let pki = Pki::new(&dir, "Test Hospital");
    let bad = pki.issue("ws-stolen-01");
    let good = pki.issue("ws-ward3-01");
    let settings = pki.settings(false);
    let server = Server::start(&settings, limits()).await;

    let r = s_client(server.addr, &pki.ca(), &with_cert(&bad, &["-tls1_3"])).await;
    assert!(r.served(), "before revocation: {}", r.output);

    pki.revoke(&bad.serial);
    server.handle.reload(&settings).unwrap();

    let r = s_client(server.addr, &pki.ca(), &with_cert(&bad, &["-tls1_3"])).await;
    assert!(!r.served(), "{}", r.output);
    assert!(
        r.output.contains("alert certificate revoked"),
        "{}",
        r.output
    );
    let r = s_client(server.addr, &pki.ca(), &with_cert(&good, &["-tls1_3"])).await;
    assert!(
        r.served(),
        "another workstation still gets in: {}",
        r.output
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_2_a_rewritten_crl_is_picked_up_without_restart() {
    let dir = temp_dir("watch");
    let pki = Pki::new(&dir, "Test Hospital");
    let ws = pki.issue("ws-ward3-01");
    let settings = pki.settings(false);
    let server = Server::start(&settings, limits()).await;
    let watcher = tokio::spawn(tls::reload_on_change(
        server.handle.clone(),
        settings.clone(),
        Duration::from_millis(50),
    ));
    let config = client_config(&pki.ca(), Some(&ws), &[&rustls::version::TLS13]);
    assert!(get_whoami(server.addr, config.clone()).await.is_ok());

    pki.revoke(&ws.serial);
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match get_whoami(server.addr, config.clone()).await {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(_) => panic!("the revoked certificate is still accepted"),
        }
    };
    assert!(err.to_string().contains("Revoked"), "{err}");
    watcher.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_1_cipher_suites_outside_the_cryptrec_profile_are_refused() {
    let dir = temp_dir("ciphers");
    let pki = Pki::new(&dir, "Test Hospital");
    let ws = pki.issue("ws-ward3-01");
    let server = Server::start(&pki.settings(true), limits()).await;
    for args in [
        // TLS 1.2, each offered alone.
        vec!["-tls1_2", "-cipher", "AES128-SHA"],
        vec!["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"],
        vec!["-tls1_2", "-cipher", "AES256-GCM-SHA384"],
        vec!["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
        // TLS 1.3 ChaCha20-Poly1305 alone.
        vec!["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"],
        // X25519 alone.
        vec!["-tls1_3", "-groups", "X25519"],
    ] {
        let r = s_client(server.addr, &pki.ca(), &with_cert(&ws, &args)).await;
        assert!(!r.served(), "{args:?}: {}", r.output);
        assert!(
            r.output.contains("alert handshake failure"),
            "{args:?}: {}",
            r.output
        );
    }
    // And an allowed one, alone, works.
    let r = s_client(
        server.addr,
        &pki.ca(),
        &with_cert(
            &ws,
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        ),
    )
    .await;
    assert!(r.served(), "{}", r.output);
    server.stop().await;
}

// ----------------------------------------------------- the accept loop --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_stalled_handshakes_never_stop_the_loop() {
    let dir = temp_dir("loop");
    let pki = Pki::new(&dir, "Test Hospital");
    let ws = pki.issue("ws-ward3-01");
    let server = Server::start(
        &pki.settings(false),
        ServeLimits {
            max_connections: 4,
            max_handshakes: 2,
            handshake_timeout: Duration::from_millis(500),
            ..limits()
        },
    )
    .await;

    // Garbage, a half ClientHello, and connections that say nothing.
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0xff, 0x01][..],
    ] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let _ = tcp.write_all(bytes).await;
    }
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // A silent client is dropped after the handshake timeout.
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), idle[0].read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Many refused clients in a row.
    for _ in 0..10 {
        let _ = get_whoami(
            server.addr,
            client_config(&pki.ca(), None, &[&rustls::version::TLS13]),
        )
        .await;
    }
    // A good one still gets in (once the stalled ones time out).
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        get_whoami(
            server.addr,
            client_config(&pki.ca(), Some(&ws), &[&rustls::version::TLS13]),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(reply.body.ends_with(&format!("peer={}", ws.sha256)));
    drop(idle);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let dir = temp_dir("limit");
    let pki = Pki::new(&dir, "Test Hospital");
    let ws = pki.issue("ws-ward3-01");
    let server = Server::start(
        &pki.settings(false),
        ServeLimits {
            max_connections: 1,
            max_handshakes: 1,
            handshake_timeout: Duration::from_millis(1500),
            ..limits()
        },
    )
    .await;
    // One silent connection holds the only slot until its handshake times out.
    let _idle = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let reply = get_whoami(
        server.addr,
        client_config(&pki.ca(), Some(&ws), &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    assert!(reply.body.ends_with(&format!("peer={}", ws.sha256)));
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "served after {:?}, before the slot was free",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_client_auth_serves_requests_without_a_fingerprint() {
    // The officer API's listener: server certificate only.
    let dir = temp_dir("noclientauth");
    let pki = Pki::new(&dir, "Test Hospital");
    let settings = pki.settings(false);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(tls::provider(false)))
        .with_protocol_versions(tls::protocol_versions(false))
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            tls::load_certs(&settings.cert).unwrap(),
            tls::load_private_key(&settings.key).unwrap(),
        )
        .unwrap();
    let listener = tls::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route(
        "/whoami",
        get(|peer: Option<Extension<PeerFingerprint>>| async move {
            match peer {
                Some(Extension(fp)) => format!("peer={}", fp.0),
                None => "no peer certificate".to_owned(),
            }
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tls::serve(
        listener,
        ServerConfigHandle::new(Arc::new(config)),
        router,
        limits(),
        async move {
            let _ = stopped.await;
        },
    ));
    let reply = get_whoami(
        addr,
        client_config(&pki.ca(), None, &[&rustls::version::TLS13]),
    )
    .await
    .unwrap();
    assert!(
        reply.body.ends_with("no peer certificate"),
        "{}",
        reply.body
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .unwrap()
        .unwrap();
}

// ------------------------------------------------ files and settings --

fn err_of(settings: &TlsSettings) -> String {
    match tls::workstation_server_config(settings) {
        Ok(_) => panic!("accepted {settings:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_wrong_and_malformed_files_give_clear_errors() {
    let dir = temp_dir("files");
    let pki = Pki::new(&dir, "Test Hospital");
    let ws = pki.issue("ws-ward3-01");
    let good = pki.settings(false);
    assert!(tls::workstation_server_config(&good).is_ok());

    // Missing file.
    let e = err_of(&TlsSettings {
        cert: dir.join("nope.pem"),
        ..good.clone()
    });
    assert!(e.contains("cannot read") && e.contains("nope.pem"), "{e}");

    // A key where the certificate should be, and the other way round.
    let e = err_of(&TlsSettings {
        cert: good.key.clone(),
        ..good.clone()
    });
    assert!(
        e.contains("holds no CERTIFICATE") && e.contains("found: PRIVATE KEY"),
        "{e}"
    );
    let e = err_of(&TlsSettings {
        key: good.cert.clone(),
        ..good.clone()
    });
    assert!(
        e.contains("holds no PRIVATE KEY") && e.contains("found: CERTIFICATE"),
        "{e}"
    );
    // A CRL given as the CA, a CA given as the CRL.
    let e = err_of(&TlsSettings {
        workstation_ca: good.crl.clone(),
        ..good.clone()
    });
    assert!(e.contains("found: X509 CRL"), "{e}");
    let e = err_of(&TlsSettings {
        crl: good.workstation_ca.clone(),
        ..good.clone()
    });
    assert!(e.contains("holds no X509 CRL"), "{e}");

    // The key of another certificate.
    let e = err_of(&TlsSettings {
        key: ws.key.clone(),
        ..good.clone()
    });
    assert!(e.contains("does not match the certificate"), "{e}");

    // Broken PEM, empty files, not PEM at all.
    let broken = dir.join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    let e = err_of(&TlsSettings {
        cert: broken.clone(),
        ..good.clone()
    });
    assert!(e.contains("not valid PEM"), "{e}");
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = err_of(&TlsSettings {
        workstation_ca: vec![empty.clone()],
        ..good.clone()
    });
    assert!(e.contains("no PEM section found"), "{e}");
    let text = dir.join("text.pem");
    std::fs::write(&text, "hello, this is not a certificate\n").unwrap();
    let e = err_of(&TlsSettings {
        key: text.clone(),
        ..good.clone()
    });
    assert!(e.contains("holds no PRIVATE KEY"), "{e}");
    // PEM armour around something that is not a certificate.
    let junk = dir.join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = err_of(&TlsSettings {
        cert: junk.clone(),
        ..good.clone()
    });
    assert!(e.contains("not a valid X.509 certificate"), "{e}");

    // An encrypted key.
    let encrypted = dir.join("encrypted.pem");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8=\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = err_of(&TlsSettings {
        key: encrypted,
        ..good.clone()
    });
    assert!(e.contains("encrypted private key"), "{e}");

    // Too large: refused without reading it all.
    let huge = dir.join("huge.pem");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_PEM_BYTES + 1)
        .unwrap();
    assert!(matches!(
        tls::load_certs(&huge),
        Err(TlsError::TooLarge { .. })
    ));

    // No workstation CA at all.
    let e = err_of(&TlsSettings {
        workstation_ca: vec![],
        ..good.clone()
    });
    assert!(e.contains("no workstation CA"), "{e}");
}

#[test]
fn settings_read_as_the_tls_table_of_the_configuration() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        tls: TlsSettings,
    }
    let file: File = toml::from_str(
        r#"
        [tls]
        cert = "/etc/clinauth/pki/server.pem"
        key = "/etc/clinauth/pki/server-key.pem"
        workstation_ca = "/etc/clinauth/pki/ca.pem"
        "#,
    )
    .unwrap();
    assert_eq!(
        file.tls.workstation_ca,
        vec![PathBuf::from("/etc/clinauth/pki/ca.pem")]
    );
    assert!(file.tls.crl.is_empty());
    assert!(!file.tls.allow_tls12, "TLS 1.2 is off unless asked for");
    assert_eq!(file.tls.handshake_timeout, clinauth_policy::Seconds(10));

    let file: File = toml::from_str(
        r#"
        [tls]
        cert = "s.pem"
        key = "k.pem"
        workstation_ca = ["a.pem", "b.pem"]
        crl = ["a.crl"]
        allow_tls12 = true
        handshake_timeout = "5s"
        "#,
    )
    .unwrap();
    assert_eq!(file.tls.workstation_ca.len(), 2);
    assert!(file.tls.allow_tls12);
    assert_eq!(file.tls.handshake_timeout, clinauth_policy::Seconds(5));

    let typo = toml::from_str::<File>(
        r#"
        [tls]
        cert = "s.pem"
        key = "k.pem"
        workstation_ca = "a.pem"
        allow_tls_12 = true
        "#,
    );
    assert!(typo.is_err(), "unknown keys are refused");
}

#[test]
fn the_provider_offers_only_the_cryptrec_suites_and_groups() {
    use rustls::CipherSuite as S;
    let strict: Vec<S> = tls::provider(false)
        .cipher_suites
        .iter()
        .map(|s| s.suite())
        .collect();
    assert_eq!(
        strict,
        [S::TLS13_AES_256_GCM_SHA384, S::TLS13_AES_128_GCM_SHA256]
    );
    let lenient: Vec<S> = tls::provider(true)
        .cipher_suites
        .iter()
        .map(|s| s.suite())
        .collect();
    assert_eq!(
        lenient,
        [
            S::TLS13_AES_256_GCM_SHA384,
            S::TLS13_AES_128_GCM_SHA256,
            S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ]
    );
    let groups: Vec<_> = tls::provider(true)
        .kx_groups
        .iter()
        .map(|g| g.name())
        .collect();
    assert_eq!(
        groups,
        [rustls::NamedGroup::secp256r1, rustls::NamedGroup::secp384r1]
    );
    assert_eq!(tls::protocol_versions(false), [&rustls::version::TLS13]);
    assert_eq!(
        tls::protocol_versions(true),
        [&rustls::version::TLS13, &rustls::version::TLS12]
    );
}

#[test]
fn sha256_hex_is_lowercase_hex() {
    assert_eq!(
        tls::sha256_hex(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
