//! The agent's audit events: every request on the socket and its outcome,
//! reader events, session locks and offline decisions (R-LOG-1). Each is
//! logged, appended to the durable event spool
//! ([`crate::offline::spool`]) and uploaded to the server, in order and
//! exactly once, by a background task (`POST /v1/events`).
//!
//! [`Audit::record`] appends without waiting for the disk (the event is
//! safe from an agent crash at once, from a power cut at the next sync);
//! [`Audit::record_durable`] returns only when the event is on disk, and is
//! what gates an offline allow. Records are synced before every upload, so
//! the server never holds an event the workstation could lose and number
//! again.
//!
//! The uploader sleeps while the spool is empty (no timer: no wake-ups
//! while idle). After a failed upload it waits 1 s, 2 s, 4 s … up to
//! `[offline] upload_max_backoff`, or until the daemon sees the server
//! answer again ([`Audit::server_reachable`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clinauth_policy::Purpose;
use clinauth_proto::events::{AgentEventRecord, EventAck};
use serde::Serialize;
use tokio::sync::Notify;

use crate::config::{duration, Config};
use crate::offline::spool::{Spool, SpoolError};
use crate::server_client::ServerClient;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentEvent {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// What happened (`authenticate`, `unauthorized`, `session_open`, …).
    pub kind: &'static str,
    /// The user concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The purpose, for authentications.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    /// `allow`, `deny`, `error`, `refused`, `done`.
    pub outcome: &'static str,
    /// The caller (`uid=… pid=…`), for socket requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The PAM service or app name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A sentence, never a secret.
    pub detail: String,
}

/// What an offline decision adds to its event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflineDetail {
    /// The bundle rule that decided.
    pub rule: Option<String>,
    /// The factors verified.
    pub factors: Vec<String>,
    /// Flagged for review (break-glass).
    pub review: bool,
}

/// Why an event could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// No spool is configured (an [`Audit::default`]).
    #[error("no event spool")]
    NoSpool,
    /// The blocking task failed.
    #[error("the spool task failed")]
    Task,
}

/// Where events go. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    shared: Arc<Shared>,
    server: Option<ServerClient>,
    max_backoff: Duration,
    started: AtomicBool,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut task) = self.task.lock() {
            if let Some(t) = task.take() {
                t.abort();
            }
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    spool: Option<Mutex<Spool>>,
    new_event: Notify,
    server_back: Notify,
    dropped: AtomicU64,
}

impl Shared {
    fn with_spool<T>(
        &self,
        f: impl FnOnce(&mut Spool) -> Result<T, SpoolError>,
    ) -> Result<T, AuditError> {
        let spool = self.spool.as_ref().ok_or(AuditError::NoSpool)?;
        // A panic elsewhere while holding the lock leaves the spool as it
        // was after its last complete operation: keep using it.
        let mut guard = spool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(f(&mut guard)?)
    }
}

fn to_record(event: &AgentEvent, offline: Option<&OfflineDetail>) -> AgentEventRecord {
    AgentEventRecord {
        seq: 0,
        at_ms: event.at_ms,
        kind: event.kind.to_owned(),
        outcome: event.outcome.to_owned(),
        user: event.user.clone().filter(|s| !s.is_empty()),
        purpose: event.purpose,
        peer: event.peer.clone().filter(|s| !s.is_empty()),
        service: event.service.clone().filter(|s| !s.is_empty()),
        detail: event.detail.clone(),
        offline: offline.is_some(),
        rule: offline
            .and_then(|o| o.rule.clone())
            .filter(|s| !s.is_empty()),
        factors: offline.map(|o| o.factors.clone()).unwrap_or_default(),
        review: offline.is_some_and(|o| o.review),
    }
}

fn log(event: &AgentEvent, offline: bool) {
    tracing::info!(
        target: "clinauth_agent::audit",
        kind = event.kind,
        user = event.user.as_deref().unwrap_or(""),
        purpose = event.purpose.map(|p| p.as_str()).unwrap_or(""),
        outcome = event.outcome,
        peer = event.peer.as_deref().unwrap_or(""),
        service = event.service.as_deref().unwrap_or(""),
        offline,
        detail = %event.detail,
        "audit"
    );
}

impl Audit {
    /// The spool in `<state_dir>/spool`, uploading through `server`. The
    /// uploader starts at once when called inside a tokio runtime, else
    /// with the first event (or [`Audit::start_uploader`]).
    pub fn open(config: &Config, server: Option<ServerClient>) -> Result<Audit, String> {
        let settings = &config.offline;
        settings.check()?;
        let dir = config.agent.state_dir.join("spool");
        let spool = Spool::open(&dir, u64::from(settings.spool_max_mib) * 1024 * 1024)
            .map_err(|e| e.to_string())?;
        if spool.pending() > 0 {
            tracing::info!(
                pending = spool.pending(),
                "events from before the restart are waiting for the server"
            );
        }
        let audit = Audit {
            inner: Arc::new(Inner {
                shared: Arc::new(Shared {
                    spool: Some(Mutex::new(spool)),
                    ..Shared::default()
                }),
                server,
                max_backoff: duration(settings.upload_max_backoff),
                started: AtomicBool::new(false),
                task: Mutex::new(None),
            }),
        };
        audit.start_uploader();
        Ok(audit)
    }

    /// Starts the uploader if it is not running and a runtime is at hand.
    pub fn start_uploader(&self) {
        let Some(server) = self.inner.server.clone() else {
            return;
        };
        if self.inner.shared.spool.is_none() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let task = handle.spawn(upload_loop(
            self.inner.shared.clone(),
            server,
            self.inner.max_backoff,
        ));
        if let Ok(mut slot) = self.inner.task.lock() {
            *slot = Some(task);
        }
    }

    /// Records `event`: logged, spooled (not yet synced), uploaded later.
    pub fn record(&self, event: AgentEvent) {
        self.append(event, None, false);
    }

    fn append(
        &self,
        event: AgentEvent,
        offline: Option<&OfflineDetail>,
        durable: bool,
    ) -> Option<u64> {
        log(&event, offline.is_some());
        let shared = &self.inner.shared;
        shared.spool.as_ref()?;
        let mut record = to_record(&event, offline);
        let result = shared.with_spool(|s| s.append(&mut record, durable));
        let seq = match result {
            Ok(seq) => Some(seq),
            Err(e) => {
                let dropped = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(error = %e, dropped, kind = event.kind, "an audit event could not be spooled");
                None
            }
        };
        shared.new_event.notify_one();
        self.start_uploader();
        seq
    }

    /// Records `event` and returns once it is on disk. An offline allow
    /// must not be answered before this succeeds.
    pub async fn record_durable(
        &self,
        event: AgentEvent,
        offline: Option<OfflineDetail>,
    ) -> Result<u64, AuditError> {
        log(&event, offline.is_some());
        let shared = self.inner.shared.clone();
        if shared.spool.is_none() {
            return Err(AuditError::NoSpool);
        }
        let mut record = to_record(&event, offline.as_ref());
        let result = tokio::task::spawn_blocking(move || {
            let r = shared.with_spool(|s| s.append(&mut record, true));
            if r.is_ok() {
                shared.new_event.notify_one();
            }
            r
        })
        .await
        .map_err(|_| AuditError::Task)?;
        self.start_uploader();
        if let Err(e) = &result {
            let dropped = self.inner.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::error!(error = %e, dropped, "an audit event could not be made durable");
        }
        result
    }

    /// The server answered: an upload waiting out its backoff goes now.
    pub fn server_reachable(&self) {
        self.inner.shared.server_back.notify_one();
    }

    /// Events not yet acknowledged by the server.
    pub fn pending(&self) -> u64 {
        self.inner
            .shared
            .with_spool(|s| Ok(s.pending()))
            .unwrap_or(0)
    }

    /// Events that could not be spooled since the start.
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// Stops the uploader (what is spooled stays for the next start).
    pub fn shutdown(&self) {
        if let Ok(mut task) = self.inner.task.lock() {
            if let Some(t) = task.take() {
                t.abort();
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, AuditError> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || shared.with_spool(f))
        .await
        .map_err(|_| AuditError::Task)?
}

async fn upload_loop(shared: Arc<Shared>, server: ServerClient, max_backoff: Duration) {
    let first = Duration::from_secs(1);
    let mut backoff = first;
    loop {
        let batch = match blocking(&shared, Spool::next_batch).await {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                // Idle: wait for the next event, no timer.
                shared.new_event.notified().await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading the event spool");
                wait(&shared, backoff).await;
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        let (first_seq, count) = (
            batch.events.first().map(|e| e.seq).unwrap_or(0),
            batch.events.len(),
        );
        let sent = server.post::<_, EventAck>("/v1/events", &batch).await;
        let failure = match sent {
            Ok(ack) if ack.stream == batch.stream => {
                let up_to = ack.stored_up_to;
                match blocking(&shared, move |s| s.ack(up_to)).await {
                    Ok(()) => {
                        tracing::debug!(
                            first_seq,
                            count,
                            up_to,
                            stored = ack.stored,
                            "events uploaded"
                        );
                        backoff = first;
                        continue;
                    }
                    Err(e) => format!("dropping acknowledged events: {e}"),
                }
            }
            Ok(ack) => format!("the server acknowledged stream {} instead", ack.stream),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %failure, first_seq, count, retry_in = ?backoff, "events not uploaded yet");
        wait(&shared, backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// Waits `pause`, or less when the server is seen to answer again.
async fn wait(shared: &Shared, pause: Duration) {
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        () = shared.server_back.notified() => {}
    }
}
