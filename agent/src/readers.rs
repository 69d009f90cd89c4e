//! What is in the card readers now, and what changed: one thread blocked in
//! `SCardGetStatusChange` (through [`Watcher`]), no polling loop of the
//! agent's own. Flows read the present cards; tap-out and the app event
//! stream subscribe to the changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::card::{CardIdentity, ReaderEvent, Watcher, WatcherCanceller};

/// How long to wait before trying pcscd again after it failed.
const RESTART_PAUSE: Duration = Duration::from_secs(5);

/// The cards present, by reader.
pub type Present = BTreeMap<String, CardIdentity>;

/// The shared view of the readers. Cheap to clone.
#[derive(Clone)]
pub struct Readers {
    present: Arc<Mutex<Present>>,
    events: broadcast::Sender<ReaderEvent>,
    canceller: Arc<Mutex<Option<WatcherCanceller>>>,
    stopped: Arc<AtomicBool>,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers").finish_non_exhaustive()
    }
}

impl Default for Readers {
    fn default() -> Self {
        Readers::new()
    }
}

impl Readers {
    /// A view with no cards and no watcher (cards disabled, or tests).
    pub fn new() -> Readers {
        let (events, _) = broadcast::channel(64);
        Readers {
            present: Arc::new(Mutex::new(Present::new())),
            events,
            canceller: Arc::new(Mutex::new(None)),
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the watcher thread over `only` (every reader when empty).
    pub fn start(only: Vec<String>) -> Readers {
        let readers = Readers::new();
        let shared = readers.clone();
        let spawned = std::thread::Builder::new()
            .name("card-watcher".into())
            .spawn(move || shared.watch(&only));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the card watcher");
        }
        readers
    }

    fn watch(&self, only: &[String]) {
        while !self.stopped.load(Ordering::SeqCst) {
            let built = if only.is_empty() {
                Watcher::new()
            } else {
                let names: Vec<&str> = only.iter().map(String::as_str).collect();
                Watcher::for_readers(&names)
            };
            let mut watcher = match built {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "card readers unavailable (is pcscd running?)");
                    std::thread::sleep(RESTART_PAUSE);
                    continue;
                }
            };
            if let Ok(mut slot) = self.canceller.lock() {
                *slot = Some(watcher.canceller());
            }
            loop {
                match watcher.wait(None) {
                    Ok(events) => {
                        for event in events {
                            self.apply(event);
                        }
                    }
                    Err(_) if self.stopped.load(Ordering::SeqCst) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "card watcher stopped; restarting");
                        // Whatever was present is unknown now: report it gone
                        // (fail closed: a session bound to it locks).
                        let gone: Vec<String> = self.present().into_keys().collect();
                        for reader in gone {
                            self.apply(ReaderEvent::Removed { reader });
                        }
                        std::thread::sleep(RESTART_PAUSE);
                        break;
                    }
                }
            }
        }
    }

    /// Records an event and tells the subscribers. Public so that tests
    /// and other sources (a badge reader outside PC/SC) can feed it.
    pub fn apply(&self, event: ReaderEvent) {
        if let Ok(mut present) = self.present.lock() {
            match &event {
                ReaderEvent::Inserted { reader, identity } => {
                    present.insert(reader.clone(), identity.clone());
                }
                ReaderEvent::Removed { reader } | ReaderEvent::ReaderDetached(reader) => {
                    present.remove(reader);
                }
                ReaderEvent::ReaderAttached(_) => {}
            }
        }
        tracing::info!(event = ?LoggedEvent(&event), "reader event");
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// The cards present now.
    pub fn present(&self) -> Present {
        self.present.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReaderEvent> {
        self.events.subscribe()
    }

    /// Waits until a card or badge is present (or `timeout`), and returns
    /// what is present then.
    pub async fn wait_for_card(&self, timeout: Duration) -> Present {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let present = self.present();
            if present.values().any(usable) {
                return present;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return present,
            }
        }
    }

    /// Stops the watcher for good (at shutdown).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Ok(slot) = self.canceller.lock() {
            if let Some(c) = slot.as_ref() {
                let _ = c.cancel();
            }
        }
    }
}

/// A PIV card or a badge (not an unreadable or unknown card).
pub fn usable(identity: &CardIdentity) -> bool {
    matches!(identity, CardIdentity::Piv { .. } | CardIdentity::Badge(_))
}

/// Logs an event without a badge's UID (a badge UID is an identifier that
/// can be cloned onto another badge; it stays out of logs).
struct LoggedEvent<'a>(&'a ReaderEvent);

impl std::fmt::Debug for LoggedEvent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            ReaderEvent::Inserted { reader, identity } => {
                let kind = match identity {
                    CardIdentity::Piv { .. } => "piv card",
                    CardIdentity::Badge(_) => "badge",
                    CardIdentity::Unknown { .. } => "unknown card",
                    CardIdentity::Unreadable(_) => "unreadable card",
                };
                write!(f, "inserted {kind} in {reader:?}")
            }
            ReaderEvent::Removed { reader } => write!(f, "removed from {reader:?}"),
            ReaderEvent::ReaderAttached(r) => write!(f, "reader attached {r:?}"),
            ReaderEvent::ReaderDetached(r) => write!(f, "reader detached {r:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::BadgeUid;

    #[tokio::test]
    async fn wait_for_card_sees_an_insertion() {
        let readers = Readers::new();
        let feeder = readers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            feeder.apply(ReaderEvent::Inserted {
                reader: "R0".into(),
                identity: CardIdentity::Unreadable("mute".into()),
            });
            feeder.apply(ReaderEvent::Inserted {
                reader: "R1".into(),
                identity: CardIdentity::Badge(BadgeUid::new(&[4, 1, 2, 3]).unwrap()),
            });
        });
        let present = readers.wait_for_card(Duration::from_secs(5)).await;
        assert!(matches!(present.get("R1"), Some(CardIdentity::Badge(_))));
        readers.apply(ReaderEvent::Removed {
            reader: "R1".into(),
        });
        assert!(!readers.present().contains_key("R1"));
        let none = Readers::new()
            .wait_for_card(Duration::from_millis(20))
            .await;
        assert!(none.is_empty());
    }
}
