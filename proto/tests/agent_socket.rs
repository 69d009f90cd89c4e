//! The agent socket end to end: a real Unix socket, a tiny agent thread
//! built from `serve`, and `AgentClient`.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use clinauth_proto::agent::{ErrorCode, Reply, Request};
use clinauth_proto::frame::{write_frame, FrameReader, MAX_FRAME_LEN};
use clinauth_proto::serve::{read_request, rejection, write_reply};
use clinauth_proto::text::Label;
use clinauth_proto::{AgentClient, ClientError};

const TIMEOUT: Duration = Duration::from_secs(5);

fn status_result() -> Reply {
    Reply::StatusResult {
        agent_version: Label::new("test-agent").unwrap(),
        server_reachable: false,
        session_user: None,
        card_present: true,
    }
}

/// The agent's connection loop, as the daemon will run it: answer
/// `status`, and on a bad frame send the rejection and close.
/// Returns how many requests it answered.
fn serve_connection(stream: UnixStream) -> usize {
    let mut reader = FrameReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut answered = 0;
    loop {
        match read_request(&mut reader) {
            Ok(Some(request)) => {
                assert_eq!(request.body, Request::Status {});
                write_reply(&mut writer, request.id, &status_result()).unwrap();
                answered += 1;
            }
            Ok(None) => break,
            Err(err) => {
                if let Some(reply) = rejection(&err) {
                    write_frame(&mut writer, &reply).unwrap();
                }
                break;
            }
        }
    }
    // Dropping both halves closes the connection.
    answered
}

/// After the agent closed: the socket reads end of stream, or a reset when
/// the agent closed with our unread bytes still queued (Linux reports
/// ECONNRESET then). Either way, no more data.
fn assert_closed(raw: &mut UnixStream) {
    let mut buf = [0u8; 16];
    match raw.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection to be closed, got {other:?}"),
    }
}

#[test]
fn oversized_frame_gets_typed_error_and_connection_closes() {
    let (client_end, agent_end) = UnixStream::pair().unwrap();
    let agent = thread::spawn(move || serve_connection(agent_end));

    let mut raw = client_end.try_clone().unwrap();
    let mut client = AgentClient::from_stream(client_end, TIMEOUT).unwrap();

    // A valid request first: the connection works.
    assert_eq!(client.call(&Request::Status {}).unwrap(), status_result());

    // Then one line one byte over the limit, written raw: the client
    // itself refuses to encode such a frame. (The client still has request
    // 1 outstanding; the agent's refusal comes with the uncorrelated id 0.)
    let mut line = br#"{"v":1,"id":2,"body":{"type":"status","pad":""#.to_vec();
    line.resize(MAX_FRAME_LEN - 3, b'a');
    line.extend_from_slice(b"\"}}\n");
    assert_eq!(line.len(), MAX_FRAME_LEN + 1);
    raw.write_all(&line).unwrap();

    match client.recv() {
        Err(ClientError::AgentError { code, message }) => {
            assert_eq!(code, ErrorCode::FrameTooLarge);
            assert!(code.closes_connection());
            assert!(message.contains("65536"), "{message}");
        }
        other => panic!("expected frame_too_large, got {other:?}"),
    }
    assert_eq!(agent.join().unwrap(), 1);
    assert_closed(&mut raw);
    assert!(matches!(client.recv(), Err(ClientError::Closed)));
}

#[test]
fn exactly_max_frame_is_accepted_on_the_wire() {
    let (client_end, agent_end) = UnixStream::pair().unwrap();
    let agent = thread::spawn(move || {
        let mut reader = FrameReader::new(agent_end);
        let frame = reader.read_frame().unwrap().unwrap();
        let len = frame.len();
        assert!(reader.read_frame().unwrap().is_none());
        len
    });
    let mut raw = client_end;
    let mut line = vec![b' '; MAX_FRAME_LEN - 3];
    line.extend_from_slice(b"{}\n");
    assert_eq!(line.len(), MAX_FRAME_LEN);
    raw.write_all(&line).unwrap();
    drop(raw);
    assert_eq!(agent.join().unwrap(), MAX_FRAME_LEN - 1);
}

#[test]
fn malformed_and_wrong_version_close_the_connection() {
    for (bad, expected) in [
        (&b"not json\n"[..], ErrorCode::Malformed),
        (&b"\n"[..], ErrorCode::Malformed),
        (
            &b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"status\",\"x\":1}}\n"[..],
            ErrorCode::Malformed,
        ),
        (&b"\xff\xfe\n"[..], ErrorCode::Malformed),
        (
            &b"{\"v\":7,\"id\":1,\"body\":{\"type\":\"status\"}}\n"[..],
            ErrorCode::UnsupportedVersion,
        ),
    ] {
        let (client_end, agent_end) = UnixStream::pair().unwrap();
        let agent = thread::spawn(move || serve_connection(agent_end));
        let mut raw = client_end.try_clone().unwrap();
        let mut client = AgentClient::from_stream(client_end, TIMEOUT).unwrap();
        for _ in 0..2 {
            assert_eq!(client.call(&Request::Status {}).unwrap(), status_result());
        }
        raw.write_all(bad).unwrap();
        match client.recv() {
            Err(ClientError::AgentError { code, .. }) => assert_eq!(code, expected, "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
        assert_eq!(agent.join().unwrap(), 2);
        assert_closed(&mut raw);
    }
}

fn temp_socket_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clinauth-proto-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("agent.sock")
}

#[test]
fn connect_by_path() {
    let path = temp_socket_path("connect");
    let listener = UnixListener::bind(&path).unwrap();
    let agent = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        serve_connection(stream)
    });
    let mut client = AgentClient::connect(&path, TIMEOUT).unwrap();
    for _ in 0..3 {
        assert_eq!(client.call(&Request::Status {}).unwrap(), status_result());
    }
    drop(client);
    assert_eq!(agent.join().unwrap(), 3);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn connect_to_missing_socket_is_io_error() {
    let path = temp_socket_path("missing");
    match AgentClient::connect(&path, TIMEOUT) {
        Err(ClientError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn agent_gone_mid_request_is_closed_not_a_signal() {
    let (client_end, agent_end) = UnixStream::pair().unwrap();
    drop(agent_end);
    let mut client = AgentClient::from_stream(client_end, TIMEOUT).unwrap();
    // Writing to a socket whose peer is gone: EPIPE, reported as Closed
    // (std sends with MSG_NOSIGNAL, so no SIGPIPE even where SIGPIPE is
    // not ignored, as in a PAM host process).
    assert!(matches!(
        client.call(&Request::Status {}),
        Err(ClientError::Closed)
    ));
}
