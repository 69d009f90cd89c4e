//! The `subscribe` stream: cards inserted and removed (from the reader
//! watcher), sessions locked and unlocked and users switched (from the
//! tap-out task), so that an EHR can hide a chart the moment the clinician
//! walks away with their card.
//!
//! Both sources are broadcast channels; a subscriber that reads too slowly
//! loses the oldest events and gets one `lagged` event saying so, never a
//! stale picture presented as complete.

use clinauth_proto::agent::{AgentEvent, EventKind};
use clinauth_proto::Label;
use tokio::sync::broadcast::{self, error::RecvError};

use crate::card::ReaderEvent;
use crate::clock;

/// One subscriber's sources.
pub struct Subscription {
    readers: broadcast::Receiver<ReaderEvent>,
    sessions: broadcast::Receiver<AgentEvent>,
    readers_open: bool,
    sessions_open: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}

fn card_event(kind: EventKind, reader: &str) -> AgentEvent {
    AgentEvent {
        kind,
        at_ms: clock::now_ms(),
        reader: Label::new(reader).ok(),
        user: None,
        session: None,
    }
}

fn lagged() -> AgentEvent {
    AgentEvent {
        kind: EventKind::Lagged,
        at_ms: clock::now_ms(),
        reader: None,
        user: None,
        session: None,
    }
}

impl Subscription {
    /// Subscribes to both sources from now on.
    pub fn new(
        readers: broadcast::Receiver<ReaderEvent>,
        sessions: broadcast::Receiver<AgentEvent>,
    ) -> Subscription {
        Subscription {
            readers,
            sessions,
            readers_open: true,
            sessions_open: true,
        }
    }

    /// The next event; pending for ever once both sources are closed.
    pub async fn next(&mut self) -> AgentEvent {
        loop {
            if !self.readers_open && !self.sessions_open {
                return std::future::pending().await;
            }
            tokio::select! {
                r = self.readers.recv(), if self.readers_open => match r {
                    Ok(ReaderEvent::Inserted { reader, .. }) => {
                        return card_event(EventKind::CardInserted, &reader)
                    }
                    Ok(ReaderEvent::Removed { reader }) | Ok(ReaderEvent::ReaderDetached(reader)) => {
                        return card_event(EventKind::CardRemoved, &reader)
                    }
                    Ok(ReaderEvent::ReaderAttached(_)) => continue,
                    Err(RecvError::Lagged(_)) => return lagged(),
                    Err(RecvError::Closed) => self.readers_open = false,
                },
                s = self.sessions.recv(), if self.sessions_open => match s {
                    Ok(event) => return event,
                    Err(RecvError::Lagged(_)) => return lagged(),
                    Err(RecvError::Closed) => self.sessions_open = false,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn card_and_session_events_in_order_and_lag_reported() {
        let (readers_tx, readers_rx) = broadcast::channel(4);
        let (sessions_tx, sessions_rx) = broadcast::channel(4);
        let mut sub = Subscription::new(readers_rx, sessions_rx);
        readers_tx
            .send(ReaderEvent::Removed {
                reader: "Virtual PCD 00 00".into(),
            })
            .unwrap();
        let e = sub.next().await;
        assert_eq!(e.kind, EventKind::CardRemoved);
        assert_eq!(e.reader.unwrap().as_str(), "Virtual PCD 00 00");
        sessions_tx
            .send(AgentEvent {
                kind: EventKind::SessionLocked,
                at_ms: 1,
                reader: None,
                user: None,
                session: Label::new("c2").ok(),
            })
            .unwrap();
        assert_eq!(sub.next().await.kind, EventKind::SessionLocked);
        readers_tx
            .send(ReaderEvent::ReaderAttached("new".into()))
            .unwrap();
        for _ in 0..6 {
            readers_tx
                .send(ReaderEvent::Removed { reader: "r".into() })
                .unwrap();
        }
        assert_eq!(sub.next().await.kind, EventKind::Lagged);
        assert_eq!(sub.next().await.kind, EventKind::CardRemoved);
        drop(readers_tx);
        drop(sessions_tx);
        // Drained and closed: nothing more, and no busy loop.
        for _ in 0..3 {
            let _ = tokio::time::timeout(std::time::Duration::from_millis(20), sub.next()).await;
        }
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), sub.next())
                .await
                .is_err()
        );
    }
}
