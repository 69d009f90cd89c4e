//! The whole server as it runs: configuration, local PKI, both listeners,
//! and an authentication over real mutual TLS on 127.0.0.1.

mod support;

use clinauth_factors::pin::SecretPin;
use clinauth_proto::workstation::{BeginResponse, FinishResponse};
use clinauth_server::credentials::Enroller;
use clinauth_server::officer::Officer;
use clinauth_server::{clock, pki, tls};
use ring::signature::KeyPair;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client_config(pki_dir: &Path, ws: Option<&pki::Issued>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::load_certs(&pki_dir.join(pki::CA_CERT)).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match ws {
        Some(ws) => builder
            .with_client_auth_cert(
                tls::load_certs(&ws.cert).unwrap(),
                tls::load_private_key(&ws.key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

/// One HTTP/1.1 request over TLS; returns (status, body).
async fn post(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    body: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let method = if body.is_empty() { "GET" } else { "POST" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8(response).unwrap();
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_tls_1_login_over_mutual_tls_with_the_running_server() {
    let dir = support::TempDir::new("e2e");
    let now = clock::now_ms();
    let (server, pki_dir) = support::server::start_local(&dir.0).await;
    let ws = pki::issue_workstation(&pki_dir, "ward3-ws01", None, false, now).unwrap();
    let stranger = pki::issue_workstation(&pki_dir, "not-registered", None, false, now).unwrap();

    // Bootstrap: a nurse with a badge and a PIN, the workstation registered.
    let store = &server.auth.store;
    let officer = Officer {
        store,
        key: &server.auth.keys.audit,
        actor: "root@test",
    };
    officer
        .add_user("nurse.tanaka", "田中", &["nurse".into()], now)
        .await
        .unwrap();
    officer
        .register_badge("nurse.tanaka", &[4, 1, 2, 3], now)
        .await
        .unwrap();
    officer
        .add_workstation("ward3-ws01", &ws.sha256, "ward", "3F", now)
        .await
        .unwrap();
    Enroller {
        store,
        audit: &server.auth.keys.audit,
        data: &server.auth.keys.data[0],
        actor: "root@test",
    }
    .pin(
        "nurse.tanaka",
        &SecretPin::from_text("482913").unwrap(),
        now,
    )
    .await
    .unwrap();

    let client = client_config(&pki_dir, Some(&ws));
    let (status, body) = post(
        server.workstation_addr,
        client.clone(),
        "/v1/auth/begin",
        r#"{"user":"nurse.tanaka","purpose":"login"}"#,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let begun: BeginResponse = serde_json::from_str(&body).unwrap();
    let finish = format!(
        r#"{{"challenge_id":"{}","evidence":[{{"type":"badge","uid":"BAECAw"}},{{"type":"server_pin","value":"482913"}}]}}"#,
        begun.challenge_id
    );
    let (status, body) = post(
        server.workstation_addr,
        client.clone(),
        "/v1/auth/finish",
        &finish,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let FinishResponse::Allow { ticket, .. } = serde_json::from_str(&body).unwrap() else {
        panic!("{body}")
    };
    let claims = clinauth_proto::ticket::verify(
        &ticket,
        server.auth.keys.ticket.public_key().as_ref(),
        now / 1000,
    )
    .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.ws.as_str()),
        ("nurse.tanaka", "ward3-ws01")
    );

    // A certificate from the same CA that no officer registered (R-TLS-2).
    let (status, body) = post(
        server.workstation_addr,
        client_config(&pki_dir, Some(&stranger)),
        "/v1/auth/begin",
        r#"{"user":"nurse.tanaka","purpose":"login"}"#,
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("workstation_refused"), "{body}");

    // The officer API answers over TLS without a client certificate, and
    // wants an officer's ticket.
    let (status, body) = post(
        server.officer_addr,
        client_config(&pki_dir, None),
        "/v1/users",
        "",
        None,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = post(
        server.officer_addr,
        client_config(&pki_dir, None),
        "/v1/users",
        "",
        Some(&ticket),
    )
    .await;
    assert_eq!(
        status, 401,
        "a login ticket does not open the officer API: {body}"
    );

    server.stop().await;
}
