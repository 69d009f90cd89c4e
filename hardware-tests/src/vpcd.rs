//! The vpcd protocol (vsmartcard's virtual reader driver for pcscd) and a
//! virtual card that plugs into it.
//!
//! The card is a TCP client of the reader's port. Every message, both ways,
//! is a 2-byte big-endian length and a payload. A 1-byte payload from the
//! reader is a control byte (0 power off, 1 power on, 2 reset, 4 "send your
//! ATR", answered with the ATR); a longer one is a command APDU, answered with
//! the response APDU. Connecting inserts the card, closing removes it.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::piv::PivApplet;

/// Control byte: power off.
pub const CTRL_OFF: u8 = 0;
/// Control byte: power on.
pub const CTRL_ON: u8 = 1;
/// Control byte: reset.
pub const CTRL_RESET: u8 = 2;
/// Control byte: send the ATR.
pub const CTRL_ATR: u8 = 4;

/// The first port of the stock vpcd configuration (reader "Virtual PCD 00 00").
pub const DEFAULT_PORT: u16 = 35963;

/// How long [`VirtualCard::insert`] keeps trying to reach the reader.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the vpcd link.
#[derive(Debug, Error)]
pub enum VpcdError {
    /// Socket trouble.
    #[error("vpcd I/O: {0}")]
    Io(#[from] io::Error),
    /// A zero-length message, or a response too long for the framing.
    #[error("vpcd protocol: {0}")]
    Protocol(&'static str),
    /// The connection thread panicked.
    #[error("the card thread panicked")]
    ThreadPanicked,
}

/// Something that behaves like a smart card behind a reader.
pub trait VirtualIcc: Send {
    /// The answer to reset.
    fn atr(&self) -> Vec<u8>;
    /// Power off, power on or reset: the session ends.
    fn power_event(&mut self, ctrl: u8);
    /// A command APDU in, the response APDU out.
    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8>;
    /// A command APDU in, what the card does: by default it answers
    /// [`VirtualIcc::transmit`]. Misbehaving cards (see `faulty`) can fall
    /// silent or leave the reader mid-command instead.
    fn reply(&mut self, apdu: &[u8]) -> Reply {
        Reply::Response(self.transmit(apdu))
    }
}

/// What a card does with a command APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answers this response APDU.
    Response(Vec<u8>),
    /// Never answers (the reader waits until the card is removed).
    Silence,
    /// Closes the connection: the card leaves the reader mid-command.
    HangUp,
}

impl VirtualIcc for PivApplet {
    fn atr(&self) -> Vec<u8> {
        PivApplet::atr(self)
    }

    fn power_event(&mut self, _ctrl: u8) {
        self.reset_session();
    }

    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.process(apdu)
    }
}

/// Reads one message; `Ok(None)` at a clean end of stream.
pub fn read_message(r: &mut impl Read) -> Result<Option<Vec<u8>>, VpcdError> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 {
        return Err(VpcdError::Protocol("empty message"));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some(payload))
}

/// Writes one message.
pub fn write_message(w: &mut impl Write, payload: &[u8]) -> Result<(), VpcdError> {
    let len = u16::try_from(payload.len()).map_err(|_| VpcdError::Protocol("message too long"))?;
    if len == 0 {
        return Err(VpcdError::Protocol("empty message"));
    }
    let mut buf = Vec::with_capacity(payload.len() + 2);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the card down with it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves one connection until the reader closes it (or it breaks).
pub fn serve<S, C>(stream: &mut S, card: &Mutex<C>) -> Result<(), VpcdError>
where
    S: Read + Write,
    C: VirtualIcc + ?Sized,
{
    while let Some(msg) = read_message(stream)? {
        match msg.as_slice() {
            [CTRL_ATR] => {
                let atr = lock(card).atr();
                write_message(stream, &atr)?;
            }
            [ctrl @ (CTRL_OFF | CTRL_ON | CTRL_RESET)] => lock(card).power_event(*ctrl),
            // Unknown control bytes have no answer in the protocol.
            [_] => {}
            apdu => {
                let reply = lock(card).reply(apdu);
                match reply {
                    Reply::Response(response) => write_message(stream, &response)?,
                    Reply::Silence => {}
                    Reply::HangUp => return Ok(()),
                }
            }
        }
    }
    Ok(())
}

/// The card's side of the TCP connection.
///
/// vpcd sends a message's length and payload in separate writes without
/// `TCP_NODELAY`, so its payload waits for our ACK of the length, which
/// Linux delays by up to 40 ms: every APDU would take that long.
/// `TCP_QUICKACK` before each read sends the ACK at once. (The option does
/// not stick, hence before every read.)
struct QuickAckStream(TcpStream);

impl Read for QuickAckStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
        self.0.read(buf)
    }
}

impl Write for QuickAckStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

struct Connection {
    stream: TcpStream,
    thread: JoinHandle<Result<(), VpcdError>>,
}

/// A card that tests insert into and remove from a vpcd reader at will.
///
/// The card (its keys, PIN and counters) outlives insertions, like a real
/// one; removal powers it off.
pub struct VirtualCard<C: VirtualIcc + 'static = PivApplet> {
    card: Arc<Mutex<C>>,
    addr: SocketAddr,
    connection: Option<Connection>,
}

impl<C: VirtualIcc + 'static> std::fmt::Debug for VirtualCard<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualCard")
            .field("addr", &self.addr)
            .field("inserted", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl<C: VirtualIcc + 'static> VirtualCard<C> {
    /// A card for the reader whose vpcd port is at `addr` (not inserted yet).
    pub fn new(card: C, addr: SocketAddr) -> Self {
        Self {
            card: Arc::new(Mutex::new(card)),
            addr,
            connection: None,
        }
    }

    /// The reader address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Inserts the card: connects to the reader (retrying while the reader
    /// is not listening yet) and serves it from a thread.
    pub fn insert(&mut self) -> Result<(), VpcdError> {
        if self.is_inserted() {
            return Ok(());
        }
        // A finished earlier connection: collect it.
        self.remove()?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let stream = loop {
            match TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_nodelay(true)?;
        let mut served = QuickAckStream(stream.try_clone()?);
        let card = Arc::clone(&self.card);
        let thread = std::thread::Builder::new()
            .name(format!("vpcd-card-{}", self.addr.port()))
            .spawn(move || {
                let result = serve(&mut served, &card);
                // Ends the connection also when the card hung up by itself
                // (the other handle of the socket stays open until removal).
                let _ = served.0.shutdown(Shutdown::Both);
                lock(&card).power_event(CTRL_OFF);
                result
            })?;
        self.connection = Some(Connection { stream, thread });
        Ok(())
    }

    /// Whether the card is in the reader (its connection is open).
    pub fn is_inserted(&self) -> bool {
        self.connection
            .as_ref()
            .is_some_and(|c| !c.thread.is_finished())
    }

    /// Removes the card: closes the connection and waits for its thread.
    /// Returns the error that ended the connection, if one did; an error
    /// caused by the removal itself is not one.
    pub fn remove(&mut self) -> Result<(), VpcdError> {
        let Some(conn) = self.connection.take() else {
            return Ok(());
        };
        let was_open = !conn.thread.is_finished();
        // Shutting down wakes the thread blocked in read.
        let _ = conn.stream.shutdown(Shutdown::Both);
        let result = conn.thread.join().map_err(|_| VpcdError::ThreadPanicked)?;
        match result {
            Err(VpcdError::Io(_)) if was_open => Ok(()),
            other => other,
        }
    }

    /// Runs `f` with the card (to inspect or change its state).
    pub fn with_card<R>(&self, f: impl FnOnce(&mut C) -> R) -> R {
        f(&mut lock(&self.card))
    }
}

impl<C: VirtualIcc + 'static> Drop for VirtualCard<C> {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    struct Echo;

    impl VirtualIcc for Echo {
        fn atr(&self) -> Vec<u8> {
            vec![0x3B, 0x00]
        }
        fn power_event(&mut self, _ctrl: u8) {}
        fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
            let mut r = apdu.to_vec();
            r.extend_from_slice(&[0x90, 0x00]);
            r
        }
    }

    struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn framing() {
        let input = vec![
            0, 1, CTRL_ON, // power on: no answer
            0, 1, CTRL_ATR, // ATR
            0, 4, 0, 0xA4, 4, 0, // APDU
            0, 1, 9, // unknown control: ignored
        ];
        let mut s = Duplex {
            input: Cursor::new(input),
            output: Vec::new(),
        };
        serve(&mut s, &Mutex::new(Echo)).unwrap();
        assert_eq!(
            s.output,
            vec![0, 2, 0x3B, 0x00, 0, 6, 0, 0xA4, 4, 0, 0x90, 0x00]
        );
    }

    #[test]
    fn broken_framing_is_an_error_not_a_panic() {
        for input in [vec![0, 0], vec![0, 5, 1, 2], vec![0]] {
            let mut s = Duplex {
                input: Cursor::new(input.clone()),
                output: Vec::new(),
            };
            let r = serve(&mut s, &Mutex::new(Echo));
            // A lone byte is a clean end (EOF inside the length is EOF).
            if input.len() > 1 {
                assert!(r.is_err(), "{input:?}");
            }
        }
    }
}
