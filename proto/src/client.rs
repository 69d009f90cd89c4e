//! [`AgentClient`]: a small blocking client for the agent socket, std only,
//! for the PAM module (no async runtime inside a PAM stack).

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use thiserror::Error;

use crate::agent::{ErrorCode, Reply, Request};
use crate::envelope::{Envelope, UNCORRELATED_ID};
use crate::frame::{FrameError, FrameReader, WireError};

/// A call to the agent failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("agent socket: {0}")]
    Io(#[source] io::Error),
    /// The agent did not answer (or accept data) within the timeout.
    #[error("timed out waiting for the agent")]
    Timeout,
    /// The agent closed the connection, or an earlier error ended it.
    #[error("the connection to the agent is closed")]
    Closed,
    /// The agent sent something that is not a valid frame.
    #[error("bad frame from the agent: {0}")]
    Frame(#[from] FrameError),
    /// A valid message at the wrong moment (a reply with the wrong id, a
    /// reply when no request is outstanding).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The agent answered with an `error` reply.
    #[error("agent error {code}: {message}")]
    AgentError {
        /// The error's code.
        code: ErrorCode,
        /// The agent's explanation.
        message: String,
    },
}

impl ClientError {
    fn from_io(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
            // The agent closed while we were writing, or closed with our
            // unread bytes in its queue (Linux then reports a reset).
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ClientError::Closed,
            _ => ClientError::Io(err),
        }
    }
}

impl From<WireError> for ClientError {
    fn from(err: WireError) -> Self {
        match err {
            WireError::Io(e) => ClientError::from_io(e),
            WireError::Frame(e) => ClientError::Frame(e),
        }
    }
}

/// A connection to the agent.
///
/// One request is outstanding at a time: [`send`](Self::send) a request,
/// then [`recv`](Self::recv) replies until the one that ends it
/// (`auth_result`, `status_result`, `error`, or a `prompt` to answer).
///
/// Fails closed: after any error except an `error` reply that leaves the
/// connection open, every later call returns [`ClientError::Closed`].
#[derive(Debug)]
pub struct AgentClient {
    reader: FrameReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    outstanding: Option<u64>,
    broken: bool,
}

impl AgentClient {
    /// Connects to the agent socket at `path`; `timeout` bounds every later
    /// read and write (not the connect itself, which on a local socket
    /// either succeeds or fails at once).
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(ClientError::from_io)?;
        Self::from_stream(stream, timeout)
    }

    /// Uses an already connected stream (for tests, or socket activation).
    pub fn from_stream(stream: UnixStream, timeout: Duration) -> Result<Self, ClientError> {
        // A zero timeout is refused by std (InvalidInput): reported as Io.
        stream
            .set_read_timeout(Some(timeout))
            .map_err(ClientError::Io)?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(ClientError::Io)?;
        let reader = FrameReader::new(stream.try_clone().map_err(ClientError::Io)?);
        Ok(Self {
            reader,
            writer: stream,
            next_id: 1,
            outstanding: None,
            broken: false,
        })
    }

    /// Sends `request` with a fresh id and returns that id.
    ///
    /// The encoded frame (which may hold a PIN) is wiped after sending.
    pub fn send(&mut self, request: &Request) -> Result<u64, ClientError> {
        self.check_open()?;
        let id = self.next_id;
        let result = self.send_inner(id, request);
        if result.is_err() {
            self.broken = true;
        }
        result?;
        self.next_id = id.saturating_add(1);
        self.outstanding = Some(id);
        Ok(id)
    }

    fn send_inner(&mut self, id: u64, request: &Request) -> Result<(), ClientError> {
        let frame = Envelope::new(id, request).encode()?;
        self.writer
            .write_all(&frame)
            .and_then(|()| self.writer.flush())
            .map_err(ClientError::from_io)
    }

    /// Receives the next reply to the outstanding request.
    ///
    /// An `error` reply comes back as [`ClientError::AgentError`]; an
    /// error reply with id 0 is the agent refusing a frame it could not
    /// read, and is accepted whatever the outstanding id.
    pub fn recv(&mut self) -> Result<Reply, ClientError> {
        self.check_open()?;
        let result = self.recv_inner();
        let keep_open = match &result {
            Ok(_) => true,
            Err(ClientError::AgentError { code, .. }) => !code.closes_connection(),
            Err(_) => false,
        };
        if !keep_open {
            self.broken = true;
        }
        result
    }

    fn recv_inner(&mut self) -> Result<Reply, ClientError> {
        let Some(outstanding) = self.outstanding else {
            return Err(ClientError::Protocol(
                "receive with no request outstanding".into(),
            ));
        };
        let frame = self.reader.read_frame()?.ok_or(ClientError::Closed)?;
        let envelope = Envelope::<Reply>::decode(&frame)?;
        let uncorrelated_error =
            envelope.id == UNCORRELATED_ID && matches!(envelope.body, Reply::Error { .. });
        if envelope.id != outstanding && !uncorrelated_error {
            return Err(ClientError::Protocol(format!(
                "reply for request {} while request {outstanding} is outstanding",
                envelope.id
            )));
        }
        match envelope.body {
            Reply::Error { code, message } => Err(ClientError::AgentError {
                code,
                message: message.into_string(),
            }),
            reply => Ok(reply),
        }
    }

    /// Sends `request` and returns the first reply to it.
    pub fn call(&mut self, request: &Request) -> Result<Reply, ClientError> {
        self.send(request)?;
        self.recv()
    }

    fn check_open(&self) -> Result<(), ClientError> {
        if self.broken {
            Err(ClientError::Closed)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Outcome, PromptKind, PromptStyle};
    use crate::frame::write_frame;
    use crate::secret::SecretString;
    use crate::serve::{read_request, write_reply};
    use crate::text::{Label, Text, UserName};
    use clinauth_policy::Purpose;
    use std::io::Read;
    use std::thread;

    const T: Duration = Duration::from_secs(5);

    fn status_result() -> Reply {
        Reply::StatusResult {
            agent_version: Label::new("0.1.0").unwrap(),
            server_reachable: true,
            session_user: None,
            card_present: false,
        }
    }

    #[test]
    fn status_call() {
        let (client_end, agent_end) = UnixStream::pair().unwrap();
        let agent = thread::spawn(move || {
            let mut reader = FrameReader::new(agent_end.try_clone().unwrap());
            let mut writer = agent_end;
            let req = read_request(&mut reader).unwrap().unwrap();
            assert_eq!(req.body, Request::Status {});
            write_reply(&mut writer, req.id, &status_result()).unwrap();
            assert!(read_request(&mut reader).unwrap().is_none());
        });
        let mut client = AgentClient::from_stream(client_end, T).unwrap();
        assert_eq!(client.call(&Request::Status {}).unwrap(), status_result());
        drop(client);
        agent.join().unwrap();
    }

    #[test]
    fn conversation_with_prompt_and_answer() {
        let (client_end, agent_end) = UnixStream::pair().unwrap();
        let agent = thread::spawn(move || {
            let mut reader = FrameReader::new(agent_end.try_clone().unwrap());
            let mut writer = agent_end;
            let auth = read_request(&mut reader).unwrap().unwrap();
            assert!(matches!(auth.body, Request::Authenticate { .. }));
            let info = Reply::Info {
                text: Text::new("Card found").unwrap(),
                text_ja: Some(Text::new("カードを検出しました").unwrap()),
            };
            write_reply(&mut writer, auth.id, &info).unwrap();
            let prompt = Reply::Prompt {
                prompt_id: 1,
                style: PromptStyle::Secret,
                kind: PromptKind::CardPin,
                text: Text::new("PIN: ").unwrap(),
                text_ja: None,
            };
            write_reply(&mut writer, auth.id, &prompt).unwrap();
            let answer = read_request(&mut reader).unwrap().unwrap();
            match &answer.body {
                Request::Answer { prompt_id, value } => {
                    assert_eq!(*prompt_id, 1);
                    assert_eq!(value.expose(), "493817");
                }
                other => panic!("{other:?}"),
            }
            let result = Reply::AuthResult {
                outcome: Outcome::Allow,
                user: UserName::new("yamada").unwrap(),
                purpose: Purpose::Login,
                rule: Some(Label::new("ward").unwrap()),
                factors: vec![Label::new("smartcard").unwrap()],
                reason: None,
                ticket: None,
            };
            write_reply(&mut writer, answer.id, &result).unwrap();
        });
        let mut client = AgentClient::from_stream(client_end, T).unwrap();
        let auth_id = client
            .send(&Request::Authenticate {
                user: UserName::new("yamada").unwrap(),
                purpose: Purpose::Login,
                service: Label::new("login").unwrap(),
                tty: Some(Label::new("tty1").unwrap()),
                rhost: None,
            })
            .unwrap();
        assert!(matches!(client.recv().unwrap(), Reply::Info { .. }));
        assert!(matches!(
            client.recv().unwrap(),
            Reply::Prompt { prompt_id: 1, .. }
        ));
        let answer_id = client
            .send(&Request::Answer {
                prompt_id: 1,
                value: SecretString::new("493817").unwrap(),
            })
            .unwrap();
        assert!(answer_id > auth_id);
        match client.recv().unwrap() {
            Reply::AuthResult { outcome, .. } => assert_eq!(outcome, Outcome::Allow),
            other => panic!("{other:?}"),
        }
        agent.join().unwrap();
    }

    #[test]
    fn wrong_id_is_a_protocol_error_and_closes() {
        let (client_end, agent_end) = UnixStream::pair().unwrap();
        let agent = thread::spawn(move || {
            let mut reader = FrameReader::new(agent_end.try_clone().unwrap());
            let mut writer = agent_end;
            let req = read_request(&mut reader).unwrap().unwrap();
            write_reply(&mut writer, req.id + 100, &status_result()).unwrap();
        });
        let mut client = AgentClient::from_stream(client_end, T).unwrap();
        match client.call(&Request::Status {}) {
            Err(ClientError::Protocol(m)) => assert!(m.contains("outstanding"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(client.recv(), Err(ClientError::Closed)));
        assert!(matches!(
            client.send(&Request::Status {}),
            Err(ClientError::Closed)
        ));
        agent.join().unwrap();
    }

    #[test]
    fn recv_without_request_is_refused() {
        let (client_end, _agent_end) = UnixStream::pair().unwrap();
        let mut client = AgentClient::from_stream(client_end, T).unwrap();
        assert!(matches!(client.recv(), Err(ClientError::Protocol(_))));
    }

    #[test]
    fn non_closing_agent_error_keeps_the_connection() {
        let (client_end, agent_end) = UnixStream::pair().unwrap();
        let agent = thread::spawn(move || {
            let mut reader = FrameReader::new(agent_end.try_clone().unwrap());
            let mut writer = agent_end;
            let req = read_request(&mut reader).unwrap().unwrap();
            let err = Reply::Error {
                code: ErrorCode::UnknownUser,
                message: Text::new("no such user").unwrap(),
            };
            write_reply(&mut writer, req.id, &err).unwrap();
            let req = read_request(&mut reader).unwrap().unwrap();
            write_reply(&mut writer, req.id, &status_result()).unwrap();
        });
        let mut client = AgentClient::from_stream(client_end, T).unwrap();
        match client.call(&Request::Status {}) {
            Err(ClientError::AgentError { code, message }) => {
                assert_eq!(code, ErrorCode::UnknownUser);
                assert_eq!(message, "no such user");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(client.call(&Request::Status {}).unwrap(), status_result());
        agent.join().unwrap();
    }

    #[test]
    fn closing_agent_error_ends_the_client_even_if_the_socket_stays_open() {
        let (client_end, agent_end) = UnixStream::pair().unwrap();
        let mut client = AgentClient::from_stream(client_end, T).unwrap();
        let id = client.send(&Request::Status {}).unwrap();
        let mut writer = agent_end;
        let refusal = Envelope::new(
            UNCORRELATED_ID,
            Reply::Error {
                code: ErrorCode::Malformed,
                message: Text::new("bad").unwrap(),
            },
        );
        write_frame(&mut writer, &refusal).unwrap();
        // A misbehaving agent that keeps talking after a closing error.
        write_reply(&mut writer, id, &status_result()).unwrap();
        assert!(matches!(
            client.recv(),
            Err(ClientError::AgentError {
                code: ErrorCode::Malformed,
                ..
            })
        ));
        assert!(matches!(client.recv(), Err(ClientError::Closed)));
    }

    #[test]
    fn silent_agent_times_out() {
        let (client_end, mut agent_end) = UnixStream::pair().unwrap();
        let mut client = AgentClient::from_stream(client_end, Duration::from_millis(100)).unwrap();
        client.send(&Request::Status {}).unwrap();
        assert!(matches!(client.recv(), Err(ClientError::Timeout)));
        let mut got = [0u8; 64];
        let n = agent_end.read(&mut got).unwrap();
        assert!(got[..n].ends_with(b"\n"));
    }

    #[test]
    fn garbage_from_agent_is_a_frame_error() {
        let (client_end, mut agent_end) = UnixStream::pair().unwrap();
        let mut client = AgentClient::from_stream(client_end, T).unwrap();
        client.send(&Request::Status {}).unwrap();
        agent_end
            .write_all(b"{\"v\":1,\"id\":1,\"body\":{\"type\":\"status\"}}\n")
            .unwrap();
        // A request is not a reply.
        assert!(matches!(
            client.recv(),
            Err(ClientError::Frame(FrameError::Malformed(_)))
        ));
        let _ = write_frame(&mut agent_end, &status_result());
        assert!(matches!(client.recv(), Err(ClientError::Closed)));
    }

    #[test]
    fn zero_timeout_refused() {
        let (client_end, _agent_end) = UnixStream::pair().unwrap();
        assert!(matches!(
            AgentClient::from_stream(client_end, Duration::ZERO),
            Err(ClientError::Io(_))
        ));
    }
}
