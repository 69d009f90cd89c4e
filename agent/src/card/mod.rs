//! The agent's smartcard driver, over PC/SC (`pcsc` crate, pcsc-lite's
//! libpcsclite on Linux).
//!
//! - [`piv`]: a [`CardSession`] with a PIV card: SELECT, the 9A/9C
//!   certificates (GET DATA with GET RESPONSE), VERIFY with the tries left
//!   (and never the last try without an explicit confirmation), GENERAL
//!   AUTHENTICATE over the server's card challenge
//!   ([`clinauth_factors::card::challenge_message`]).
//! - [`badge`]: a contactless badge's UID (PC/SC GET DATA `FF CA`).
//! - [`watch`]: a [`Watcher`] that blocks in `SCardGetStatusChange` and
//!   reports cards inserted (with their identity) and removed, per reader.
//! - [`apdu`]: command building, command chaining, `61 xx` / `6C xx`
//!   handling and a bounded BER-TLV reader.
//!
//! # Untrusted cards
//!
//! Everything a card says is untrusted input. Every length is bounded, every
//! parse returns a typed [`CardError`], and every exchange has a deadline:
//! the APDUs go through a worker thread ([`PcscTransport`]) and a card that
//! stops answering yields [`CardError::Timeout`] instead of a hung agent.
//! After a timeout the session is dead ([`CardError::SessionBroken`]); the
//! worker ends when pcscd gives up on the card (removal, reset).
//!
//! Tests: `hardware-tests/tests/agent_card.rs` drives this module through the
//! real pcscd with the project's virtual PIV card, badge and misbehaving
//! cards (and real devices with `CLINAUTH_HW=1`).

pub mod apdu;
pub mod badge;
pub mod piv;
pub mod watch;

use std::ffi::{CStr, CString};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use zeroize::Zeroizing;

pub use badge::{read_badge_uid, BadgeUid};
pub use piv::{
    CardCertificate, CardSession, KeyAlgorithm, LastTry, Pin, PinStatus, PivSlot, SignedChallenge,
};
pub use watch::{CardIdentity, ReaderEvent, Watcher, WatcherCanceller};

/// The default deadline of one APDU exchange (an RSA-2048 signature on a
/// slow card takes well under two seconds).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a card operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// PC/SC (pcscd) refused a call.
    #[error("PC/SC {call}: {error}")]
    Pcsc {
        /// The PC/SC function.
        call: &'static str,
        /// What pcsc-lite said.
        error: pcsc::Error,
    },
    /// The card was removed (or reset by another application).
    #[error("the card was removed or reset")]
    CardRemoved,
    /// Another application holds the card exclusively.
    #[error("the card is in use by another application")]
    Busy,
    /// The card did not answer within the deadline.
    #[error("the card did not answer within {0:?}")]
    Timeout(Duration),
    /// An earlier timeout or transport failure ended this session.
    #[error("the card session is broken by an earlier failure; reconnect")]
    SessionBroken,
    /// The card answered something that is not a valid response.
    #[error("malformed answer from the card: {0}")]
    Malformed(&'static str),
    /// The card answered a status word the driver did not expect.
    #[error("{command}: unexpected status word {sw:04X}")]
    Status {
        /// The command.
        command: &'static str,
        /// The status word.
        sw: u16,
    },
    /// The card has no PIV application.
    #[error("not a PIV card (SELECT answered {0:04X})")]
    NotPiv(u16),
    /// The slot has no certificate.
    #[error("no certificate in slot {0}")]
    NoCertificate(PivSlot),
    /// The certificate or its key is not one the product accepts.
    #[error("card certificate: {0}")]
    Certificate(#[from] clinauth_factors::card::CardError),
    /// Something the driver does not support (compressed certificate, ...).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// The PIN is not 6 to 8 digits.
    #[error("a PIN must be 6 to 8 digits")]
    PinFormat,
    /// The PIN was wrong.
    #[error("wrong PIN, {tries_left} tries left")]
    WrongPin {
        /// Tries left before the PIN blocks.
        tries_left: u8,
    },
    /// The PIN is blocked (the PUK or an officer must reset it).
    #[error("the PIN is blocked")]
    PinBlocked,
    /// Only one try is left (or the count is unknown) and the caller did not
    /// confirm spending it: no VERIFY was sent.
    #[error(
        "the next PIN try may be the last (tries left: {tries_left:?}): confirm before trying"
    )]
    LastTryNeedsConfirmation {
        /// Tries left, if the card told.
        tries_left: Option<u8>,
    },
    /// The key needs the PIN first (or again, for a "PIN always" key).
    #[error("the card wants the PIN verified first")]
    PinRequired,
    /// The reader name has a NUL byte.
    #[error("reader name contains a NUL byte")]
    ReaderName,
    /// The watcher was cancelled.
    #[error("cancelled")]
    Cancelled,
}

impl CardError {
    pub(crate) fn pcsc(call: &'static str, error: pcsc::Error) -> Self {
        match error {
            pcsc::Error::RemovedCard | pcsc::Error::ResetCard | pcsc::Error::NoSmartcard => {
                Self::CardRemoved
            }
            pcsc::Error::SharingViolation => Self::Busy,
            pcsc::Error::Cancelled => Self::Cancelled,
            error => Self::Pcsc { call, error },
        }
    }
}

/// Something that exchanges APDUs with a card: [`PcscTransport`], or a test
/// double.
pub trait Transport {
    /// Sends one command APDU, returns the response APDU (data and SW).
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError>;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        (**self).transmit(apdu)
    }
}

/// How to connect to a card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Deadline of each exchange (and of the connection itself).
    pub timeout: Duration,
    /// Exclusive access for the whole session, so that no other application
    /// can slip a command between VERIFY and GENERAL AUTHENTICATE. A card
    /// held by another application then gives [`CardError::Busy`].
    pub exclusive: bool,
    /// Reset the card when the session ends, so that a verified PIN does not
    /// outlive it for other applications.
    pub reset_on_close: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            exclusive: true,
            reset_on_close: true,
        }
    }
}

type Reply = Result<Vec<u8>, CardError>;

/// A PC/SC connection whose calls run on a worker thread, so that each has a
/// deadline. The worker owns its own PC/SC context and card handle: a call
/// stuck in pcscd blocks only the worker.
pub struct PcscTransport {
    reader: CString,
    atr: Vec<u8>,
    timeout: Duration,
    requests: Option<mpsc::Sender<Zeroizing<Vec<u8>>>>,
    replies: mpsc::Receiver<Reply>,
    worker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PcscTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcscTransport")
            .field("reader", &self.reader)
            .field("timeout", &self.timeout)
            .field("broken", &self.requests.is_none())
            .finish_non_exhaustive()
    }
}

/// Largest response APDU accepted from one exchange (short APDUs: 256 data
/// bytes and the status word).
pub const MAX_RESPONSE_APDU: usize = 258;

impl PcscTransport {
    /// Connects to the card in `reader`.
    pub fn connect(reader: &str, opts: ConnectOptions) -> Result<Self, CardError> {
        let reader = CString::new(reader).map_err(|_| CardError::ReaderName)?;
        Self::connect_cstr(&reader, opts)
    }

    /// Connects to the card in `reader`.
    pub fn connect_cstr(reader: &CStr, opts: ConnectOptions) -> Result<Self, CardError> {
        let (req_tx, req_rx) = mpsc::channel::<Zeroizing<Vec<u8>>>();
        let (rep_tx, rep_rx) = mpsc::channel::<Reply>();
        let name = reader.to_owned();
        let worker_name = name.clone();
        let worker = std::thread::Builder::new()
            .name("clinauth-card".into())
            .spawn(move || worker(&worker_name, opts, &req_rx, &rep_tx))
            .map_err(|_| CardError::Unsupported("cannot start the card worker thread"))?;
        let mut me = Self {
            reader: name,
            atr: Vec::new(),
            timeout: opts.timeout,
            requests: Some(req_tx),
            replies: rep_rx,
            worker: Some(worker),
        };
        // The first reply is the connection's outcome, with the ATR.
        me.atr = me.wait()?;
        Ok(me)
    }

    /// The reader's name.
    pub fn reader(&self) -> &CStr {
        &self.reader
    }

    /// The card's answer to reset.
    pub fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn wait(&mut self) -> Reply {
        match self.replies.recv_timeout(self.timeout) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                if matches!(e, CardError::CardRemoved) {
                    self.abandon();
                }
                Err(e)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.abandon();
                Err(CardError::Timeout(self.timeout))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.abandon();
                Err(CardError::SessionBroken)
            }
        }
    }

    /// Gives up on the worker: it ends by itself once its call returns.
    fn abandon(&mut self) {
        self.requests = None;
        // Detach: joining could block on a card that never answers.
        drop(self.worker.take());
    }
}

impl Transport for PcscTransport {
    fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
        let Some(tx) = &self.requests else {
            return Err(CardError::SessionBroken);
        };
        if tx.send(Zeroizing::new(apdu.to_vec())).is_err() {
            self.abandon();
            return Err(CardError::SessionBroken);
        }
        self.wait()
    }
}

impl Drop for PcscTransport {
    fn drop(&mut self) {
        // Closing the request channel ends the worker, which disconnects.
        self.requests = None;
        if let Some(worker) = self.worker.take() {
            // The worker is idle (no request pending), so this is quick.
            let _ = worker.join();
        }
    }
}

fn worker(
    reader: &CStr,
    opts: ConnectOptions,
    requests: &mpsc::Receiver<Zeroizing<Vec<u8>>>,
    replies: &mpsc::Sender<Reply>,
) {
    let connected = pcsc::Context::establish(pcsc::Scope::User)
        .map_err(|e| CardError::pcsc("SCardEstablishContext", e))
        .and_then(|ctx| {
            let mode = if opts.exclusive {
                pcsc::ShareMode::Exclusive
            } else {
                pcsc::ShareMode::Shared
            };
            let card = ctx
                .connect(reader, mode, pcsc::Protocols::ANY)
                .map_err(|e| CardError::pcsc("SCardConnect", e))?;
            let atr = card
                .status2_owned()
                .map(|s| s.atr().to_vec())
                .map_err(|e| CardError::pcsc("SCardStatus", e))?;
            Ok((ctx, card, atr))
        });
    let (ctx, card, atr) = match connected {
        Ok(c) => c,
        Err(e) => {
            let _ = replies.send(Err(e));
            return;
        }
    };
    if replies.send(Ok(atr)).is_err() {
        return;
    }
    // Room for a misbehaving card's over-long answer, which is then refused
    // as malformed rather than as a PC/SC buffer error.
    let mut buf = Zeroizing::new(vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED]);
    while let Ok(apdu) = requests.recv() {
        let reply = card
            .transmit(&apdu, &mut buf)
            .map(<[u8]>::to_vec)
            .map_err(|e| CardError::pcsc("SCardTransmit", e));
        let failed = reply.is_err();
        if replies.send(reply).is_err() || failed {
            break;
        }
    }
    let disposition = if opts.reset_on_close {
        pcsc::Disposition::ResetCard
    } else {
        pcsc::Disposition::LeaveCard
    };
    let _ = card.disconnect(disposition);
    drop(ctx);
}

#[cfg(test)]
pub(crate) mod mock {
    //! A scripted card for unit tests.
    use super::{CardError, Transport};
    use std::collections::VecDeque;

    /// Answers from a script, records what it was sent.
    #[derive(Debug, Default)]
    pub struct Scripted {
        pub answers: VecDeque<Result<Vec<u8>, CardError>>,
        pub sent: Vec<Vec<u8>>,
    }

    impl Scripted {
        pub fn new(answers: impl IntoIterator<Item = Vec<u8>>) -> Self {
            Self {
                answers: answers.into_iter().map(Ok).collect(),
                sent: Vec::new(),
            }
        }
    }

    impl Transport for Scripted {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, CardError> {
            self.sent.push(apdu.to_vec());
            self.answers
                .pop_front()
                .unwrap_or(Err(CardError::Timeout(std::time::Duration::ZERO)))
        }
    }
}
