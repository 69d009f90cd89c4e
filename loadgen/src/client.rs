//! A minimal HTTP/1.1 client over TLS: one request at a time on a
//! connection, kept alive between requests (the server's hyper keeps
//! HTTP/1.1 connections open) or closed after each when asked.

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The largest response accepted.
const MAX_RESPONSE: usize = 256 * 1024;

/// Why a request failed below HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// TCP connect failed.
    Connect(String),
    /// The TLS handshake failed.
    Tls(String),
    /// Reading or writing failed, or the server closed mid-response.
    Io(String),
    /// The response is not HTTP/1.1 as expected.
    Protocol(String),
}

impl ClientError {
    /// A short kind for the error table.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect(_) => "connect",
            ClientError::Tls(_) => "tls",
            ClientError::Io(_) => "io",
            ClientError::Protocol(_) => "protocol",
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(m)
            | ClientError::Tls(m)
            | ClientError::Io(m)
            | ClientError::Protocol(m) => write!(f, "{}: {m}", self.kind()),
        }
    }
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// One TLS connection to the server.
pub struct Connection {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Connection {
    /// Connects and completes the TLS handshake.
    pub async fn open(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Connection, ClientError> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one POST with a JSON body and reads the whole response.
    /// `close`: ask the server to close the connection afterwards.
    pub async fn post(
        &mut self,
        path: &str,
        body: &[u8],
        close: bool,
    ) -> Result<Response, ClientError> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        request.extend_from_slice(body);
        let io = |e: std::io::Error| ClientError::Io(e.to_string());
        self.stream.write_all(&request).await.map_err(io)?;
        self.stream.flush().await.map_err(io)?;
        self.read_response().await
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.buf.len() > MAX_RESPONSE {
            return Err(ClientError::Protocol("response too large".into()));
        }
        let mut chunk = [0u8; 8192];
        let n = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        if n == 0 {
            return Err(ClientError::Io("connection closed by the server".into()));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    async fn read_response(&mut self) -> Result<Response, ClientError> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ClientError::Protocol(format!("bad status line {status_line:?}")))?;
        let mut length = None;
        let mut close = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| ClientError::Protocol("bad content-length".into()))?,
                );
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(ClientError::Protocol(format!(
                    "transfer-encoding {value} is not supported"
                )));
            }
        }
        let length = length
            .ok_or_else(|| ClientError::Protocol("response without content-length".into()))?;
        if length > MAX_RESPONSE {
            return Err(ClientError::Protocol("response too large".into()));
        }
        let start = head_end + 4;
        while self.buf.len() < start + length {
            self.fill().await?;
        }
        let body = self.buf[start..start + length].to_vec();
        self.buf.drain(..start + length);
        Ok(Response {
            status,
            body,
            close,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
