//! The agent facing a server that misbehaves: one that accepts the mutual
//! TLS connection and then never answers, and one that answers garbage.
//! Each gets a clear error to the caller, in bounded time, and never an
//! allow. (The misbehaving server is a stand-in by necessity: the real one
//! does neither; it holds the site's real server certificate.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use clinauth_hardware_tests::stack::Site;
use clinauth_policy::Purpose;
use clinauth_proto::agent::{ErrorCode, Reply, Request};
use clinauth_proto::{AgentClient, ClientError, Label, UserName};
use clinauth_server::{pki, tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy)]
enum Misbehaviour {
    Hang,
    Garbage,
}

/// A TLS listener on 127.0.0.1 with the site's server certificate that
/// requires a client certificate and misbehaves after the handshake.
fn bad_server(site: &Site, how: Misbehaviour) -> std::net::SocketAddr {
    let certs = tls::load_certs(&site.pki_dir.join(pki::SERVER_CERT)).unwrap();
    let key = tls::load_private_key(&site.pki_dir.join(pki::SERVER_KEY)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in tls::load_certs(&site.pki_dir.join(pki::CA_CERT)).unwrap() {
        roots.add(ca).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = site
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    site.rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                let _ = stream.read(&mut buf).await;
                match how {
                    Misbehaviour::Hang => {
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                    Misbehaviour::Garbage => {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"options\":\"all\"}",
                            )
                            .await;
                        let _ = stream.flush().await;
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                }
            });
        }
    });
    addr
}

fn authenticate_against(how: Misbehaviour) -> (Result<Reply, ClientError>, Duration) {
    let site = Site::start("agent-bad-server").unwrap();
    let addr = bad_server(&site, how);
    let ws = pki::issue_workstation(
        &site.pki_dir,
        "ward3-ws09",
        None,
        false,
        clinauth_server::clock::now_ms(),
    )
    .unwrap();
    let mut config = site.agent_config(&ws, "").unwrap();
    config.server.address = addr.to_string();
    config.card.enabled = false;
    let agent = site.start_agent(config, Vec::new()).unwrap();
    let mut client = AgentClient::connect(&agent.socket, Duration::from_secs(60)).unwrap();
    let started = Instant::now();
    let reply = client.call(&Request::Authenticate {
        user: UserName::new("nurse.abe").unwrap(),
        purpose: Purpose::Login,
        service: Label::new("test").unwrap(),
        tty: None,
        rhost: None,
    });
    (reply, started.elapsed())
}

#[test]
fn a_server_that_never_answers_times_out_and_lets_nobody_in() {
    let (reply, took) = authenticate_against(Misbehaviour::Hang);
    match reply {
        Err(ClientError::AgentError { code, message }) => {
            assert_eq!(code, ErrorCode::ServerUnreachable, "{message}");
            assert!(message.contains("did not answer in time"), "{message}");
        }
        other => panic!("expected server_unreachable, got {other:?}"),
    }
    // request_timeout 5 s in the test config; no retry once connected.
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn a_server_answering_garbage_is_an_error_not_an_allow() {
    let (reply, _) = authenticate_against(Misbehaviour::Garbage);
    match reply {
        Err(ClientError::AgentError { code, message }) => {
            assert_eq!(code, ErrorCode::Internal, "{message}");
            assert!(message.contains("server"), "{message}");
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
}
