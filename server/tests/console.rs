//! The officer web console in a real browser: the whole server on
//! 127.0.0.1 over TLS with the local PKI, and Debian's headless Chromium
//! loading the page with a ticket in the URL fragment and dumping the DOM
//! once the page has talked to the officer API.
//!
//! Chromium is required (scripts/install-deps.sh installs it; set
//! `CLINAUTH_CHROMIUM` to use another binary): without it these tests fail
//! with a message saying so, they never pass silently.

mod support;

use clinauth_policy::Purpose;
use clinauth_proto::ticket::{self, Claims};
use clinauth_server::officer::Officer;
use clinauth_server::{clock, pki, run, tls};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The browser: `CLINAUTH_CHROMIUM`, else `chromium` on PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CLINAUTH_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CLINAUTH_CHROMIUM={} is not a file",
            p.display()
        );
        return p;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the console tests need Debian's Chromium and it is not installed: \
             run scripts/install-deps.sh (or `apt-get install chromium`), \
             or set CLINAUTH_CHROMIUM to a Chromium binary"
        )
    })
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom` or
/// `--screenshot=…`) and returns its standard output.
fn browse(url: &str, action: &str) -> String {
    let browser = chromium();
    let profile = support::TempDir::new("chromium");
    let mut child = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--ignore-certificate-errors",
            "--lang=en-US",
            "--window-size=1280,900",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.0.display()))
        .arg(action)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", browser.display()));
    // Read both pipes on threads so a chatty browser never blocks.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within 25 s; stderr:\n{}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().unwrap();
    let err = err.join().unwrap();
    assert!(status.success(), "chromium failed ({status}):\n{err}");
    out
}

async fn browse_async(url: String, action: &'static str) -> String {
    tokio::task::spawn_blocking(move || browse(&url, action))
        .await
        .unwrap()
}

fn client_config(pki_dir: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::load_certs(&pki_dir.join(pki::CA_CERT)).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One GET over TLS; returns the response head (lowercased) and body.
async fn get(addr: SocketAddr, config: Arc<rustls::ClientConfig>, path: &str) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_owned())
}

fn officer_ticket(server: &run::Running, user: &str, purpose: Purpose) -> String {
    let now = clock::now().0;
    let claims = Claims {
        iss: "clinauth.test".into(),
        sub: user.into(),
        ws: "officer-desk-1".into(),
        purpose,
        rule: "officer-desk".into(),
        factors: vec!["smartcard".into(), "card_pin".into()],
        policy_version: 3,
        policy_digest: "sha256:00".into(),
        iat: now - 10,
        exp: now + 600,
        jti: "console-test".into(),
        idle_lock: 300,
        offline: false,
        review: false,
        op: None,
    };
    ticket::sign(
        &claims,
        &server.auth.keys.ticket,
        &server.auth.keys.ticket_kid,
    )
    .unwrap()
}

/// Whether markup has an attribute like ` onclick=`.
fn has_inline_handler(markup: &str) -> bool {
    markup.match_indices(" on").any(|(i, _)| {
        let rest = &markup[i + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

fn hospital_policy() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    ))
    .unwrap()
}

/// The server with the local PKI, an officer, two more users and a workstation.
async fn start(dir: &Path) -> (run::Running, PathBuf) {
    let now = clock::now_ms();
    let (server, pki_dir) = support::server::start_local(dir).await;
    let ws = pki::issue_workstation(&pki_dir, "ward3-ws01", None, false, now).unwrap();
    let officer = Officer {
        store: &server.auth.store,
        key: &server.auth.keys.audit,
        actor: "root@test",
    };
    officer
        .add_user("officer.ito", "伊藤", &["security_officer".into()], now)
        .await
        .unwrap();
    officer
        .add_user("nurse.tanaka", "田中 花子", &["nurse".into()], now)
        .await
        .unwrap();
    officer
        .add_user("dr.sato", "佐藤 <b>一郎</b>", &["physician".into()], now)
        .await
        .unwrap();
    // Enough audit entries for more than one page of the audit view.
    for n in 0..60 {
        officer
            .add_user(&format!("staff.{n:02}"), "職員", &["nurse".into()], now)
            .await
            .unwrap();
    }
    officer
        .register_badge("nurse.tanaka", &[4, 1, 2, 3], now)
        .await
        .unwrap();
    officer
        .add_workstation("ward3-ws01", &ws.sha256, "ward", "3F east", now)
        .await
        .unwrap();
    (server, pki_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_lists_users_shows_policy_history_and_api_errors_in_chromium() {
    chromium(); // fail first and clearly when the browser is missing
    let dir = support::TempDir::new("console");
    let (server, pki_dir) = start(&dir.0).await;
    let base = format!("https://127.0.0.1:{}/", server.officer_addr.port());
    let good = officer_ticket(&server, "officer.ito", Purpose::StepUp);

    // The page and its assets come from the server itself, with strict headers.
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        let (head, body) = get(server.officer_addr, client_config(&pki_dir), path).await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        for header in [
            format!("content-type: {kind}"),
            "content-security-policy: default-src 'self'".into(),
            "x-content-type-options: nosniff".into(),
            "referrer-policy: no-referrer".into(),
            "cache-control: no-store".into(),
        ] {
            assert!(head.contains(&header), "{path} lacks {header}: {head}");
        }
        assert!(!body.is_empty());
    }
    let (_, page) = get(server.officer_addr, client_config(&pki_dir), "/").await;
    assert!(!has_inline_handler(&page), "no inline event handlers");
    assert!(
        !page.contains("<style") && !page.contains("style="),
        "no inline style"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no other origin"
    );

    // A new policy version, so that the history has two entries.
    let v4 = hospital_policy()
        .replace("version = 3", "version = 4")
        .replace("idle_lock = \"3m\"", "idle_lock = \"2m\"");
    server
        .auth
        .policy
        .activate(
            &server.auth.store,
            &server.auth.keys.audit,
            &v4,
            "officer.ito",
            clock::now_ms(),
        )
        .await
        .unwrap();

    let entries = clinauth_server::audit::page(&server.auth.store, 0, 1000)
        .await
        .unwrap();
    let last = entries.last().unwrap().seq;
    assert!(last > 60, "{last}");

    // A break-glass access waiting for review, as the server records one.
    let review_id = "0123456789abcdef0123456789abcdef";
    {
        let store = &server.auth.store;
        let mut tx = store.begin().await.unwrap();
        let entry = clinauth_server::audit::append(
            &mut tx,
            store.backend(),
            &server.auth.keys.audit,
            &clinauth_server::audit::Event {
                at_ms: clock::now_ms(),
                actor: "dr.sato".into(),
                workstation: Some("ward3-ws01".into()),
                action: "auth.finish".into(),
                target: None,
                outcome: "allow".into(),
                detail: serde_json::json!({ "purpose": "break_glass", "review": true }),
            },
        )
        .await
        .unwrap();
        clinauth_server::review::create(
            &mut tx,
            &clinauth_server::review::NewReview {
                id: review_id,
                user: "dr.sato",
                workstation: "ward3-ws01",
                purpose: "break_glass",
                rule: "break-glass",
                factors: &["badge".into(), "server_pin".into()],
                audit_seq: entry.seq,
            },
            clock::now_ms(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let entries = clinauth_server::audit::page(&server.auth.store, 0, 1000)
        .await
        .unwrap();
    let last = entries.last().unwrap().seq;

    let login = officer_ticket(&server, "officer.ito", Purpose::Login);
    let reviews = browse_async(format!("{base}#ticket={good}&view=reviews"), "--dump-dom");
    let (users, policies, workstations, audit, devices, refused) = tokio::join!(
        browse_async(format!("{base}#ticket={good}&view=users"), "--dump-dom"),
        browse_async(format!("{base}#ticket={good}&view=policies"), "--dump-dom"),
        browse_async(
            format!("{base}#ticket={good}&view=workstations"),
            "--dump-dom"
        ),
        browse_async(format!("{base}#ticket={good}&view=audit"), "--dump-dom"),
        browse_async(format!("{base}#ticket={good}&view=devices"), "--dump-dom"),
        browse_async(format!("{base}#ticket={login}&view=users"), "--dump-dom"),
    );

    // Users: every user listed, names as text (never as markup).
    assert!(users.contains(r#"data-loaded="users""#), "{users}");
    for id in ["officer.ito", "nurse.tanaka", "dr.sato"] {
        assert!(
            users.contains(&format!(r#"data-user="{id}""#)),
            "{id}: {users}"
        );
    }
    assert!(users.contains("田中 花子"), "{users}");
    assert!(users.contains("佐藤 &lt;b&gt;一郎&lt;/b&gt;"), "{users}");
    assert!(!users.contains(&good), "the ticket never lands in the DOM");
    assert!(users.contains(r#"id="error" class="error" role="alert" hidden"#));

    // Policies: the history, newest first, who activated it.
    assert!(policies.contains(r#"data-loaded="policies""#), "{policies}");
    let v4_at = policies.find(r#"data-policy-version="4""#);
    let v3_at = policies.find(r#"data-policy-version="3""#);
    assert!(
        matches!((v4_at, v3_at), (Some(a), Some(b)) if a < b),
        "{policies}"
    );
    assert!(policies.contains("officer.ito"), "{policies}");
    assert!(policies.contains("system"), "{policies}");

    // Workstations with state and group.
    assert!(
        workstations.contains(r#"data-workstation="ward3-ws01""#),
        "{workstations}"
    );
    assert!(workstations.contains("3F east"), "{workstations}");

    // Devices with their kind, owner and state.
    assert!(devices.contains(r#"data-loaded="devices""#), "{devices}");
    assert!(
        devices.contains(r#"data-device="badge-04010203""#),
        "{devices}"
    );
    assert!(devices.contains("state-active"), "{devices}");

    // Audit: the newest entries, the user additions among them.
    assert!(audit.contains(r#"data-loaded="audit""#), "{audit}");
    assert!(audit.contains("user.add"), "{audit}");
    assert!(audit.contains("policy.activate"), "{audit}");
    // The newest page of 50: the last entry is found, older ones are not shown.
    assert!(audit.contains(&format!(r#"data-seq="{last}""#)), "{audit}");
    let oldest = last - 49;
    assert!(
        audit.contains(&format!(r#"data-seq="{oldest}""#)),
        "{audit}"
    );
    let older = last - 50;
    assert!(
        !audit.contains(&format!(r#"data-seq="{older}""#)),
        "{audit}"
    );
    assert_eq!(audit.matches("data-seq=").count(), 50, "{audit}");

    // Break-glass reviews: the pending item with an outcome, a note and a Close button.
    let reviews = reviews.await;
    assert!(reviews.contains(r#"data-loaded="reviews""#), "{reviews}");
    assert!(
        reviews.contains(&format!(r#"data-review="{review_id}""#)),
        "{reviews}"
    );
    assert!(reviews.contains("緊急アクセスの事後確認"), "{reviews}");
    assert!(reviews.contains(r#"value="unjustified""#), "{reviews}");
    assert!(reviews.contains(r#"class="close-review""#), "{reviews}");
    assert!(reviews.contains("badge + server_pin"), "{reviews}");

    // A ticket the API refuses: its message is shown to the officer.
    assert!(
        refused.contains("use a ticket from a step_up authentication"),
        "{refused}"
    );
    assert!(!refused.contains(r#"data-loaded="#), "{refused}");
    assert!(
        !refused.contains(r#"data-user="nurse.tanaka""#),
        "{refused}"
    );

    // For people: CLINAUTH_CONSOLE_SCREENSHOT=<dir> keeps screenshots.
    if let Some(out) = std::env::var_os("CLINAUTH_CONSOLE_SCREENSHOT") {
        let out = PathBuf::from(out);
        for (name, t, view) in [
            ("users", &good, "users"),
            ("policies", &good, "policies"),
            ("audit", &good, "audit"),
            ("reviews", &good, "reviews"),
            ("refused", &login, "users"),
        ] {
            let url = format!("{base}#ticket={t}&view={view}");
            let shot = out.join(format!("console-{name}.png"));
            let action = format!("--screenshot={}", shot.display());
            tokio::task::spawn_blocking(move || browse(&url, &action))
                .await
                .unwrap();
        }
    }

    server.stop().await;
}
