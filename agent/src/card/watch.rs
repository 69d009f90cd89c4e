//! Reader events: cards inserted (with their identity) and removed, readers
//! attached and detached.
//!
//! [`Watcher::wait`] blocks in `SCardGetStatusChange` (no polling loop of
//! its own): pcscd wakes it when a reader's state changes, so a removal is
//! seen within one pcscd poll of the reader (R-SESS-2, tap-out). The event
//! counter pcsc-lite keeps per reader catches a card removed and inserted
//! again between two calls (reported as a removal, then an insertion). A
//! [`WatcherCanceller`] ends a blocked `wait` from another thread
//! (`SCardCancel`).
//!
//! On insertion the watcher identifies the card (shared access, short
//! deadline, never reset): the SHA-256 fingerprint of a PIV card's 9A
//! certificate, else a badge's UID (`FF CA`), else its ATR.

use std::ffi::CString;
use std::time::{Duration, Instant};

use pcsc::{Context, ReaderState, Scope, State};

use super::badge::{read_uid, BadgeUid};
use super::piv::{CardSession, PivSlot};
use super::{CardError, ConnectOptions, PcscTransport};

/// How long identifying an inserted card may take per exchange.
pub const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// What a card in a reader is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardIdentity {
    /// A PIV card: SHA-256 of its 9A certificate.
    Piv {
        /// The certificate fingerprint.
        fingerprint: [u8; 32],
    },
    /// A contactless badge.
    Badge(BadgeUid),
    /// Something else, known by its ATR.
    Unknown {
        /// The answer to reset.
        atr: Vec<u8>,
    },
    /// The card could not be read (mute, busy, misbehaving).
    Unreadable(String),
}

/// A change seen by the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    /// A card is in the reader (also reported for cards present when the
    /// watcher starts).
    Inserted {
        /// The reader.
        reader: String,
        /// What the card is.
        identity: CardIdentity,
    },
    /// The card left the reader.
    Removed {
        /// The reader.
        reader: String,
    },
    /// A reader appeared.
    ReaderAttached(String),
    /// A reader disappeared (its card, if any, is gone too).
    ReaderDetached(String),
}

/// Ends a [`Watcher::wait`] blocked in another thread.
#[derive(Clone)]
pub struct WatcherCanceller(Context);

impl std::fmt::Debug for WatcherCanceller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatcherCanceller")
    }
}

impl WatcherCanceller {
    /// Makes the blocked `wait` return [`CardError::Cancelled`].
    pub fn cancel(&self) -> Result<(), CardError> {
        self.0
            .cancel()
            .map_err(|e| CardError::pcsc("SCardCancel", e))
    }
}

struct Watched {
    name: String,
    /// pcsc-lite's event counter when last seen (upper 16 bits).
    count: u32,
    present: bool,
}

/// Watches readers for card insertion and removal.
pub struct Watcher {
    ctx: Context,
    /// One per watched reader, then the PnP entry when following readers.
    states: Vec<ReaderState>,
    readers: Vec<Watched>,
    /// Watch only these readers; `None`: all, and follow attach/detach.
    only: Option<Vec<String>>,
    identify: bool,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field(
                "readers",
                &self.readers.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Watches every reader, and readers attached later.
    pub fn new() -> Result<Self, CardError> {
        Self::build(None)
    }

    /// Watches only the named readers.
    pub fn for_readers(names: &[&str]) -> Result<Self, CardError> {
        Self::build(Some(names.iter().map(|s| (*s).to_owned()).collect()))
    }

    fn build(only: Option<Vec<String>>) -> Result<Self, CardError> {
        let ctx = Context::establish(Scope::User)
            .map_err(|e| CardError::pcsc("SCardEstablishContext", e))?;
        let mut states = Vec::new();
        if only.is_none() {
            states.push(ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE));
        }
        let mut me = Self {
            ctx,
            states,
            readers: Vec::new(),
            only,
            identify: true,
        };
        me.refresh_readers()?;
        Ok(me)
    }

    /// Whether inserted cards are identified (on by default). Without it,
    /// insertions report [`CardIdentity::Unknown`] with the ATR.
    pub fn identify_cards(mut self, on: bool) -> Self {
        self.identify = on;
        self
    }

    /// A handle that cancels a blocked [`Watcher::wait`].
    pub fn canceller(&self) -> WatcherCanceller {
        WatcherCanceller(self.ctx.clone())
    }

    /// The readers being watched.
    pub fn readers(&self) -> Vec<String> {
        self.readers.iter().map(|r| r.name.clone()).collect()
    }

    /// Adds readers that appeared (their state comes with the next call).
    fn refresh_readers(&mut self) -> Result<Vec<ReaderEvent>, CardError> {
        let names: Vec<CString> = match &self.only {
            Some(only) => only
                .iter()
                .map(|n| CString::new(n.as_str()).map_err(|_| CardError::ReaderName))
                .collect::<Result<_, _>>()?,
            None => match self.ctx.list_readers_owned() {
                Ok(names) => names,
                Err(pcsc::Error::NoReadersAvailable) => Vec::new(),
                Err(e) => return Err(CardError::pcsc("SCardListReaders", e)),
            },
        };
        let mut events = Vec::new();
        for name in names {
            let text = name.to_string_lossy().into_owned();
            if self.readers.iter().any(|r| r.name == text) {
                continue;
            }
            if self.only.is_none() {
                events.push(ReaderEvent::ReaderAttached(text.clone()));
            }
            // Before the PnP entry, which stays last.
            let at = self.readers.len();
            self.states
                .insert(at, ReaderState::new(name, State::UNAWARE));
            self.readers.push(Watched {
                name: text,
                count: 0,
                present: false,
            });
        }
        Ok(events)
    }

    /// Waits for changes and returns them; an empty list when `timeout`
    /// passes without one (`None`: wait for ever). The first call reports
    /// the cards already present.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Vec<ReaderEvent>, CardError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.states.is_empty() {
                return Err(CardError::Unsupported("no reader to watch"));
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.ctx.get_status_change(left, &mut self.states) {
                Ok(()) => {}
                Err(pcsc::Error::Timeout) => return Ok(Vec::new()),
                Err(e) => return Err(CardError::pcsc("SCardGetStatusChange", e)),
            }
            let mut events = Vec::new();
            let mut detached = Vec::new();
            let mut pnp_changed = false;
            let n = self.readers.len();
            for (i, s) in self.states.iter_mut().enumerate() {
                let ev = s.event_state();
                if !ev.contains(State::CHANGED) {
                    continue;
                }
                let atr = s.atr().to_vec();
                let count = s.event_count();
                s.sync_current_state();
                let Some(r) = self.readers.get_mut(i).filter(|_| i < n) else {
                    pnp_changed = true;
                    continue;
                };
                let now_present = ev.contains(State::PRESENT);
                if ev.intersects(State::UNKNOWN | State::UNAVAILABLE) {
                    if r.present {
                        events.push(ReaderEvent::Removed {
                            reader: r.name.clone(),
                        });
                    }
                    if ev.contains(State::UNKNOWN) && self.only.is_none() {
                        detached.push(i);
                        events.push(ReaderEvent::ReaderDetached(r.name.clone()));
                    }
                    r.present = false;
                    r.count = count;
                    continue;
                }
                // Removed and inserted again between two calls.
                let cycled = r.present && now_present && count != r.count;
                if r.present && (!now_present || cycled) {
                    events.push(ReaderEvent::Removed {
                        reader: r.name.clone(),
                    });
                }
                if now_present && (!r.present || cycled) {
                    let identity = if ev.contains(State::MUTE) {
                        CardIdentity::Unreadable("the card does not answer (mute)".into())
                    } else if self.identify {
                        identify(&r.name, &atr)
                    } else {
                        CardIdentity::Unknown { atr }
                    };
                    events.push(ReaderEvent::Inserted {
                        reader: r.name.clone(),
                        identity,
                    });
                }
                r.present = now_present;
                r.count = count;
            }
            for i in detached.into_iter().rev() {
                if i < self.readers.len() {
                    self.readers.remove(i);
                    self.states.remove(i);
                }
            }
            if pnp_changed {
                events.extend(self.refresh_readers()?);
            }
            if !events.is_empty() {
                return Ok(events);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Vec::new());
            }
        }
    }
}

/// Identifies the card in `reader`: PIV certificate fingerprint, else badge
/// UID, else the ATR.
pub fn identify(reader: &str, atr: &[u8]) -> CardIdentity {
    let opts = ConnectOptions {
        timeout: IDENTIFY_TIMEOUT,
        exclusive: false,
        reset_on_close: false,
    };
    let mut t = match PcscTransport::connect(reader, opts) {
        Ok(t) => t,
        Err(e) => return CardIdentity::Unreadable(e.to_string()),
    };
    let atr = if t.atr().is_empty() {
        atr.to_vec()
    } else {
        t.atr().to_vec()
    };
    match CardSession::open(&mut t) {
        Ok(mut s) => match s.certificate(PivSlot::Authentication) {
            Ok(c) => {
                return CardIdentity::Piv {
                    fingerprint: c.fingerprint(),
                }
            }
            Err(CardError::NoCertificate(_)) => return CardIdentity::Unknown { atr },
            Err(e) => return CardIdentity::Unreadable(e.to_string()),
        },
        Err(CardError::NotPiv(_)) => {}
        Err(e) => return CardIdentity::Unreadable(e.to_string()),
    }
    match read_uid(&mut t) {
        Ok(uid) => CardIdentity::Badge(uid),
        Err(CardError::Status { .. } | CardError::Malformed(_)) => CardIdentity::Unknown { atr },
        Err(e) => CardIdentity::Unreadable(e.to_string()),
    }
}
