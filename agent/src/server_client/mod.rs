//! The agent's client of the auth server's workstation API: HTTP/1.1 over
//! mutual TLS with the workstation's certificate (R-TLS-1/2).
//!
//! Every call has a connect and a request deadline. A call is retried
//! (a bounded number of times, with a short pause) only when no answer came
//! back at all: once the server has answered, the answer is final, so a
//! finish is never sent twice after the server saw it. Answers are read
//! with a size limit and decoded strictly; anything else is an error the
//! caller can show.
//!
//! The server limits cipher suites to the CRYPTREC profile; this client
//! offers ring's suites and only the protocol versions the config allows.

mod tls;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clinauth_proto::workstation::{
    AccountRequest, AccountResponse, BeginRequest, BeginResponse, ErrorBody, FinishRequest,
    FinishResponse,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

use crate::config::{duration, Config};

pub use tls::TlsSetupError;

/// The largest answer the agent reads.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No connection (refused, no route, TLS handshake failed) after every
    /// attempt.
    #[error("the auth server cannot be reached: {0}")]
    Unreachable(String),
    /// Connected, but no answer in time.
    #[error("the auth server did not answer in time")]
    Timeout,
    /// The server refused the request (4xx/5xx) with its reason.
    #[error("the auth server refused the request ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The answer was not what the API promises (garbage, too large).
    #[error("the auth server's answer is not valid: {0}")]
    BadAnswer(String),
}

impl ServerError {
    /// Whether the server could not be reached at all (offline login may
    /// apply), as opposed to the server answering.
    pub fn is_unreachable(&self) -> bool {
        match self {
            ServerError::Unreachable(_) | ServerError::Timeout => true,
            // A server that cannot serve (storage down, shutting down).
            ServerError::Refused { status, .. } => *status >= 500,
            ServerError::BadAnswer(_) => false,
        }
    }
}

/// The client. Cheap to clone.
#[derive(Clone)]
pub struct ServerClient {
    inner: Arc<Inner>,
}

struct Inner {
    connector: TlsConnector,
    address: String,
    server_name: rustls_pki_types::ServerName<'static>,
    connect_timeout: Duration,
    request_timeout: Duration,
    retries: u32,
    // One kept-alive connection; a login's begin and finish reuse it.
    idle: Mutex<Option<http1::SendRequest<Full<Bytes>>>>,
    reachable: AtomicBool,
    last_answer_ms: AtomicI64,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}

impl ServerClient {
    /// A client for the server of `config`, with the workstation's
    /// certificate and key loaded now (so a broken file stops the agent at
    /// start, not at the first login).
    pub fn new(config: &Config) -> Result<ServerClient, TlsSetupError> {
        let tls_config = tls::client_config(&config.server)?;
        let server_name =
            rustls_pki_types::ServerName::try_from(config.server_name().to_owned())
                .map_err(|_| TlsSetupError::ServerName(config.server_name().to_owned()))?;
        Ok(ServerClient {
            inner: Arc::new(Inner {
                connector: TlsConnector::from(Arc::new(tls_config)),
                address: config.server.address.clone(),
                server_name,
                connect_timeout: duration(config.server.connect_timeout),
                request_timeout: duration(config.server.request_timeout),
                retries: config.server.retries,
                idle: Mutex::new(None),
                reachable: AtomicBool::new(false),
                last_answer_ms: AtomicI64::new(0),
            }),
        })
    }

    /// Whether the last call got an answer.
    pub fn reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Relaxed)
    }

    /// `POST /v1/auth/begin`.
    pub async fn begin(&self, request: &BeginRequest) -> Result<BeginResponse, ServerError> {
        self.post("/v1/auth/begin", request).await
    }

    /// `POST /v1/auth/finish`.
    pub async fn finish(&self, request: &FinishRequest) -> Result<FinishResponse, ServerError> {
        self.post("/v1/auth/finish", request).await
    }

    /// `POST /v1/auth/account`.
    pub async fn account(&self, request: &AccountRequest) -> Result<AccountResponse, ServerError> {
        self.post("/v1/auth/account", request).await
    }

    /// POSTs `body` as JSON to `path` and decodes the JSON answer.
    pub async fn post<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
    ) -> Result<A, ServerError> {
        let json = serde_json::to_vec(body)
            .map_err(|e| ServerError::BadAnswer(format!("cannot encode the request: {e}")))?;
        let json = zeroize::Zeroizing::new(json);
        let mut attempt = 0;
        let (status, bytes) = loop {
            match self.exchange(path, &json).await {
                Ok(answer) => break answer,
                Err(Failure::NoAnswer(why)) if attempt < self.inner.retries => {
                    attempt += 1;
                    tracing::info!(path, attempt, error = %why, "retrying the auth server");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(Failure::NoAnswer(why)) => {
                    self.inner.reachable.store(false, Ordering::Relaxed);
                    return Err(ServerError::Unreachable(why));
                }
                Err(Failure::Timeout) => {
                    self.inner.reachable.store(false, Ordering::Relaxed);
                    return Err(ServerError::Timeout);
                }
                Err(Failure::Bad(why)) => return Err(ServerError::BadAnswer(why)),
            }
        };
        self.inner.reachable.store(true, Ordering::Relaxed);
        self.inner
            .last_answer_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ServerError::BadAnswer(format!("{path}: {e}")));
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => (body.error, body.message),
            Err(_) => (
                "unknown".into(),
                format!("HTTP {status} without an error body"),
            ),
        };
        Err(ServerError::Refused {
            status,
            code,
            message,
        })
    }

    async fn exchange(&self, path: &str, json: &[u8]) -> Result<(u16, Bytes), Failure> {
        let mut sender = self.sender().await?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, self.inner.address.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(json)))
            .map_err(|e| Failure::Bad(format!("cannot build the request: {e}")))?;
        let timeout = self.inner.request_timeout;
        let answer = tokio::time::timeout(timeout, async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| Failure::NoAnswer(e.to_string()))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| Failure::Bad(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, Failure>((status, body))
        })
        .await
        .map_err(|_| Failure::Timeout)??;
        // A server error may be this connection's server only (a replica
        // that lost its database, an instance shutting down): the next call
        // gets a fresh connection.
        if sender.is_ready() && answer.0 < 500 {
            *self.inner.idle.lock().await = Some(sender);
        }
        Ok(answer)
    }

    async fn sender(&self) -> Result<http1::SendRequest<Full<Bytes>>, Failure> {
        if let Some(mut sender) = self.inner.idle.lock().await.take() {
            // A kept-alive connection the server may have closed meanwhile.
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let inner = &self.inner;
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(inner.address.as_str())
                .await
                .map_err(|e| Failure::NoAnswer(format!("connect {}: {e}", inner.address)))?;
            let _ = tcp.set_nodelay(true);
            let tls = inner
                .connector
                .connect(inner.server_name.clone(), tcp)
                .await
                .map_err(|e| Failure::NoAnswer(format!("TLS with {}: {e}", inner.address)))?;
            let (sender, connection) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| Failure::NoAnswer(e.to_string()))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "server connection ended");
                }
            });
            Ok(sender)
        };
        match tokio::time::timeout(inner.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(Failure::NoAnswer(format!(
                "no connection to {} within {:?}",
                inner.address, inner.connect_timeout
            ))),
        }
    }
}

enum Failure {
    NoAnswer(String),
    Timeout,
    Bad(String),
}
