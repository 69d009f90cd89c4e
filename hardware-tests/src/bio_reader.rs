//! A biometric reader emulator: a device with its own signing key
//! ([`ReaderKey`], registered with the server by an officer), a reader ID
//! and a protection mode, that "captures" from a seeded [`SyntheticFinger`]
//! and produces the evidence the server verifies (R-BIO-1..3):
//!
//! - [`Protection::SealedTemplate`]: the capture's template is sealed inside
//!   the reader to the server's matcher key (HPKE) with the nonce, reader ID
//!   and user ID as associated data, and signed ([`SealedCapture`]).
//! - [`Protection::MatchOnReader`]: the reader holds the enrolled template,
//!   matches 1:1 itself and signs a [`SignedDecision`]; no template leaves it.
//!
//! [`ReaderService`] serves a reader over the agent's reader protocol
//! (`clinauth_agent::login::biometric::protocol`: one framed request and
//! response per connection, on a Unix socket or loopback TCP), as a
//! vendor's bridge would serve a real one: a thread accepts connections,
//! waits for a finger the test places, and answers with the reader's
//! signed bytes. For the tests that prove the agent never holds a template
//! (R-BIO-1), it keeps the plaintext of every template it captured
//! ([`ReaderService::plaintext_templates`]), which a real reader never
//! reveals, and can misbehave on purpose ([`Misbehaviour`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clinauth_agent::login::biometric::protocol::{
    self, Kind, Request, Response, Status, Want, MAX_REQUEST_LEN,
};
use clinauth_biometric::envelope::NONCE_LEN;
use clinauth_biometric::template::Template;
use clinauth_biometric::{
    seal, verify, CaptureContext, EnvelopeError, MatcherPublicKey, ReaderKey, ReaderPublicKey,
    SealedCapture, SignedDecision, SyntheticFinger,
};
use zeroize::Zeroizing;

/// How the reader protects the biometric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Seals the template to the server's matcher.
    SealedTemplate,
    /// Matches on the reader and signs the decision.
    MatchOnReader,
}

/// What the reader hands the agent for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// A sealed, signed template.
    Sealed(SealedCapture),
    /// A signed match decision.
    Decision(SignedDecision),
}

impl Evidence {
    /// The wire form the agent relays as opaque bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Sealed(s) => s.to_bytes(),
            Self::Decision(d) => d.to_bytes(),
        }
    }
}

/// Why a capture failed.
#[derive(Debug, thiserror::Error)]
pub enum BioReaderError {
    /// No finger on the sensor.
    #[error("no finger on the sensor")]
    NoFinger,
    /// A match-on-reader device without an enrolled template.
    #[error("nothing enrolled on the reader")]
    NotEnrolled,
    /// Sealing or signing failed.
    #[error("envelope: {0}")]
    Envelope(#[from] EnvelopeError),
}

/// The emulated reader.
pub struct BioReader {
    id: String,
    key: ReaderKey,
    protection: Protection,
    enrolled: Option<Template>,
    finger: Option<SyntheticFinger>,
    captures: u64,
    pad: bool,
    plaintexts: Vec<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for BioReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BioReader")
            .field("id", &self.id)
            .field("protection", &self.protection)
            .field("enrolled", &self.enrolled.is_some())
            .finish_non_exhaustive()
    }
}

impl BioReader {
    /// A reader with ID `id` and the signing key derived from `key_seed`.
    pub fn new(
        id: &str,
        key_seed: &[u8; 32],
        protection: Protection,
    ) -> Result<Self, BioReaderError> {
        Ok(Self {
            id: id.to_owned(),
            key: ReaderKey::from_seed(key_seed)?,
            protection,
            enrolled: None,
            finger: None,
            captures: 0,
            pad: true,
            plaintexts: Vec::new(),
        })
    }

    /// The reader's ID.
    pub fn reader_id(&self) -> &str {
        &self.id
    }

    /// The public key an officer registers for this reader.
    pub fn public_key(&self) -> ReaderPublicKey {
        self.key.public_key()
    }

    /// The protection mode.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// Whether presentation attack detection judges samples bona fide
    /// (reported in a match-on-reader decision).
    pub fn set_pad(&mut self, bona_fide: bool) {
        self.pad = bona_fide;
    }

    /// Enrolls `finger` on the reader (match-on-reader devices).
    pub fn enroll(&mut self, finger: &SyntheticFinger) {
        self.enrolled = Some(finger.capture(0xE1));
    }

    /// Puts a finger on the sensor.
    pub fn place_finger(&mut self, finger: SyntheticFinger) {
        self.finger = Some(finger);
    }

    /// Lifts it.
    pub fn lift_finger(&mut self) {
        self.finger = None;
    }

    /// Whether a finger is on the sensor.
    pub fn has_finger(&self) -> bool {
        self.finger.is_some()
    }

    /// The encoded plaintext of every template captured so far, and of the
    /// enrolled one (match on reader). Test only: what a real reader never
    /// lets out (R-BIO-1), for tests that search for it elsewhere.
    pub fn plaintext_templates(&self) -> Vec<Vec<u8>> {
        self.plaintexts
            .iter()
            .map(|p| p.to_vec())
            .chain(self.enrolled.iter().map(|t| t.encode().to_vec()))
            .collect()
    }

    /// Captures the finger on the sensor (a fresh impression each time) and
    /// produces the evidence for the server's `nonce`, `user_id` and
    /// `matcher` key, at `now` (seconds since the epoch, the reader's clock).
    pub fn capture(
        &mut self,
        nonce: &[u8; NONCE_LEN],
        user_id: &str,
        matcher: &MatcherPublicKey,
        now: i64,
    ) -> Result<Evidence, BioReaderError> {
        let finger = self.finger.as_ref().ok_or(BioReaderError::NoFinger)?;
        self.captures = self.captures.wrapping_add(1);
        let probe = finger.capture(self.captures);
        self.plaintexts.push(probe.encode());
        let context = CaptureContext {
            nonce: *nonce,
            reader_id: self.id.clone(),
            user_id: user_id.to_owned(),
            captured_at: now,
        };
        match self.protection {
            Protection::SealedTemplate => {
                let rng = ring::rand::SystemRandom::new();
                Ok(Evidence::Sealed(seal(
                    matcher, &probe, &context, &self.key, &rng,
                )?))
            }
            Protection::MatchOnReader => {
                let enrolled = self.enrolled.as_ref().ok_or(BioReaderError::NotEnrolled)?;
                let result = verify(enrolled, &probe);
                Ok(Evidence::Decision(SignedDecision::sign(
                    &self.key,
                    context,
                    result.matched,
                    result.score,
                    self.pad,
                )?))
            }
        }
    }
}

// ------------------------------------------------------- served over a socket

/// How a served reader misbehaves, for the agent's refusal tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Announces a response of this many bytes and sends nothing more.
    AnnounceLength(u32),
    /// Sends these bytes as the response payload.
    Payload(Vec<u8>),
    /// Announces 100 bytes, sends 10, closes.
    Truncated,
    /// Reads the request and never answers (keeps the connection open
    /// until the service stops).
    Silent,
    /// Captures for another nonce than the one asked (a replayed capture).
    OtherNonce,
    /// Captures for another user than the one asked.
    OtherUser,
    /// Answers a sealed capture with kind "decision".
    WrongKind,
}

/// The mutable part of a served reader.
#[derive(Debug)]
struct Served {
    reader: BioReader,
    requests: Vec<Request>,
    sent: Vec<Vec<u8>>,
    misbehaviour: Option<Misbehaviour>,
    max_wait: Duration,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<Served>,
    finger: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Served> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener, SocketAddr),
}

trait Conn: Read + Write + Send {
    fn set_timeouts(&self, t: Duration) -> io::Result<()>;
}

impl Conn for UnixStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl Conn for TcpStream {
    fn set_timeouts(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }
}

impl Listener {
    fn accept(&self) -> io::Result<Box<dyn Conn>> {
        Ok(match self {
            Listener::Unix(l, _) => Box::new(l.accept()?.0),
            Listener::Tcp(l, _) => Box::new(l.accept()?.0),
        })
    }

    /// Wakes a blocked `accept`; `false` if it could not (the socket file
    /// was removed under it).
    fn poke(&self) -> bool {
        match self {
            Listener::Unix(_, path) => UnixStream::connect(path).is_ok(),
            Listener::Tcp(_, addr) => TcpStream::connect(addr).is_ok(),
        }
    }
}

/// A [`BioReader`] served over the reader protocol by a thread, until
/// dropped.
pub struct ReaderService {
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ReaderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReaderService")
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

impl ReaderService {
    /// Serves `reader` on a Unix socket at `path` (replacing a stale one).
    pub fn unix(reader: BioReader, path: &Path) -> io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        Ok(Self::start(
            reader,
            Listener::Unix(listener, path.to_owned()),
        ))
    }

    /// Serves `reader` on 127.0.0.1 (an ephemeral port).
    pub fn tcp(reader: BioReader) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        Ok(Self::start(reader, Listener::Tcp(listener, addr)))
    }

    fn start(reader: BioReader, listener: Listener) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(Served {
                reader,
                requests: Vec::new(),
                sent: Vec::new(),
                misbehaviour: None,
                max_wait: Duration::from_secs(60),
            }),
            finger: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let listener = Arc::new(listener);
        let (s, l) = (shared.clone(), listener.clone());
        let thread = std::thread::spawn(move || serve(&s, &l));
        Self {
            shared,
            listener,
            thread: Some(thread),
        }
    }

    /// The address for the agent's `[biometric] reader`.
    pub fn address(&self) -> String {
        match &*self.listener {
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
            Listener::Tcp(_, addr) => format!("tcp:{addr}"),
        }
    }

    /// Puts a finger on the sensor (a waiting capture goes on).
    pub fn place_finger(&self, finger: SyntheticFinger) {
        self.shared.lock().reader.place_finger(finger);
        self.shared.finger.notify_all();
    }

    /// Lifts it.
    pub fn lift_finger(&self) {
        self.shared.lock().reader.lift_finger();
    }

    /// Enrolls `finger` on the reader (match on reader).
    pub fn enroll(&self, finger: &SyntheticFinger) {
        self.shared.lock().reader.enroll(finger);
    }

    /// Caps how long a capture waits for a finger (default 60 s; the
    /// request's own wait applies when shorter).
    pub fn set_max_wait(&self, wait: Duration) {
        self.shared.lock().max_wait = wait;
    }

    /// Misbehaves from the next request on (`None`: behaves).
    pub fn misbehave(&self, how: Option<Misbehaviour>) {
        self.shared.lock().misbehaviour = how;
    }

    /// The requests received, decoded.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// Every response payload sent.
    pub fn responses(&self) -> Vec<Vec<u8>> {
        self.shared.lock().sent.clone()
    }

    /// See [`BioReader::plaintext_templates`].
    pub fn plaintext_templates(&self) -> Vec<Vec<u8>> {
        self.shared.lock().reader.plaintext_templates()
    }

    /// The reader's public key.
    pub fn public_key(&self) -> ReaderPublicKey {
        self.shared.lock().reader.public_key()
    }
}

impl Drop for ReaderService {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.finger.notify_all();
        // Never hang a test's teardown: a thread that cannot be woken is
        // left to end with the process.
        if self.listener.poke() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
        if let Listener::Unix(_, path) = &*self.listener {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn serve(shared: &Shared, listener: &Listener) {
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok(mut conn) = listener.accept() else {
            continue;
        };
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let _ = handle(shared, conn.as_mut());
    }
}

fn read_frame(conn: &mut dyn Conn, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload)?;
    Ok(payload)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn refused(status: Status, message: &str) -> Response {
    Response::Refused {
        status,
        message: message.to_owned(),
    }
}

fn handle(shared: &Shared, conn: &mut dyn Conn) -> io::Result<()> {
    conn.set_timeouts(Duration::from_secs(5))?;
    let payload = read_frame(conn, MAX_REQUEST_LEN)?;
    let request = match Request::decode(&payload) {
        Ok(r) => r,
        Err(e) => {
            let answer = refused(Status::Failure, &e.to_string());
            return send(shared, conn, &answer);
        }
    };
    let mut state = shared.lock();
    state.requests.push(request.clone());
    let misbehaviour = state.misbehaviour.clone();
    match &misbehaviour {
        Some(Misbehaviour::AnnounceLength(n)) => {
            drop(state);
            return conn.write_all(&n.to_be_bytes());
        }
        Some(Misbehaviour::Payload(bytes)) => {
            state.sent.push(bytes.clone());
            drop(state);
            return conn.write_all(&protocol::frame(bytes));
        }
        Some(Misbehaviour::Truncated) => {
            drop(state);
            let mut out = 100u32.to_be_bytes().to_vec();
            out.extend_from_slice(&[0u8; 10]);
            return conn.write_all(&out);
        }
        Some(Misbehaviour::Silent) => {
            while !shared.stop.load(Ordering::SeqCst) {
                state = shared
                    .finger
                    .wait_timeout(state, Duration::from_millis(200))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            return Ok(());
        }
        _ => {}
    }
    let answer = {
        let reader_id = state.reader.reader_id().to_owned();
        let protection = state.reader.protection();
        let kind_ok = match (request.want, protection) {
            (Want::Either, _) => true,
            (Want::Sealed, p) => p == Protection::SealedTemplate,
            (Want::Decision, p) => p == Protection::MatchOnReader,
        };
        if !request.reader_id.is_empty() && request.reader_id != reader_id {
            refused(Status::Unsupported, &format!("this is reader {reader_id}"))
        } else if !kind_ok {
            refused(Status::Unsupported, "this reader does not make that")
        } else {
            // Wait for a finger, as long as the request and the cap allow.
            let wait = Duration::from_millis(u64::from(request.wait_ms)).min(state.max_wait);
            let deadline = Instant::now() + wait;
            while !state.reader.has_finger() && !shared.stop.load(Ordering::SeqCst) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                state = shared
                    .finger
                    .wait_timeout(state, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            let mut nonce = request.nonce;
            let mut user = request.user_id.clone();
            match &misbehaviour {
                Some(Misbehaviour::OtherNonce) => nonce[0] ^= 1,
                Some(Misbehaviour::OtherUser) => user.push_str(".other"),
                _ => {}
            }
            let matcher = MatcherPublicKey::from_bytes(&request.matcher_public_key);
            match matcher {
                Err(_) => refused(Status::Failure, "bad matcher key"),
                Ok(matcher) => match state.reader.capture(&nonce, &user, &matcher, now_secs()) {
                    Ok(evidence) => {
                        let kind = match (&evidence, &misbehaviour) {
                            (Evidence::Sealed(_), Some(Misbehaviour::WrongKind)) => Kind::Decision,
                            (Evidence::Sealed(_), _) => Kind::Sealed,
                            (Evidence::Decision(_), _) => Kind::Decision,
                        };
                        Response::Evidence {
                            kind,
                            bytes: evidence.to_bytes(),
                        }
                    }
                    Err(BioReaderError::NoFinger) => refused(Status::NoFinger, "no finger"),
                    Err(BioReaderError::NotEnrolled) => {
                        refused(Status::NotEnrolled, "nothing enrolled")
                    }
                    Err(e) => refused(Status::Failure, &e.to_string()),
                },
            }
        }
    };
    drop(state);
    send(shared, conn, &answer)
}

fn send(shared: &Shared, conn: &mut dyn Conn, answer: &Response) -> io::Result<()> {
    let payload = answer
        .encode()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    shared.lock().sent.push(payload.clone());
    conn.write_all(&protocol::frame(&payload))?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clinauth_biometric::{open_capture, verify_decision, Expected, MatcherKey};

    fn expected(nonce: [u8; 32], reader: &str) -> Expected {
        Expected {
            nonce,
            reader_id: reader.into(),
            user_id: "alice".into(),
            now: 1_700_000_000,
            max_age_secs: 60,
            max_future_secs: 5,
        }
    }

    #[test]
    fn r_bio_1_sealed_template_opens_only_at_the_server_and_matches() {
        let rng = ring::rand::SystemRandom::new();
        let matcher = MatcherKey::generate(&rng).unwrap();
        let mut reader =
            BioReader::new("ward3-bio-1", &[7; 32], Protection::SealedTemplate).unwrap();
        let finger = SyntheticFinger::new(42);
        let enrolled = finger.capture(1000);
        assert!(matches!(
            reader.capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000),
            Err(BioReaderError::NoFinger)
        ));
        reader.place_finger(finger);
        let ev = reader
            .capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000)
            .unwrap();
        let Evidence::Sealed(sc) = ev else {
            panic!("sealed")
        };
        let probe = open_capture(
            &matcher,
            &reader.public_key(),
            &expected([1; 32], "ward3-bio-1"),
            &sc,
        )
        .unwrap();
        assert!(verify(&enrolled, &probe).matched);
        // Another nonce (R-BIO-3) or reader: refused.
        assert!(open_capture(
            &matcher,
            &reader.public_key(),
            &expected([2; 32], "ward3-bio-1"),
            &sc
        )
        .is_err());
        assert!(open_capture(
            &matcher,
            &reader.public_key(),
            &expected([1; 32], "other"),
            &sc
        )
        .is_err());
        // Another finger does not match.
        reader.place_finger(SyntheticFinger::new(43));
        let Evidence::Sealed(sc) = reader
            .capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000)
            .unwrap()
        else {
            panic!("sealed")
        };
        let probe = open_capture(
            &matcher,
            &reader.public_key(),
            &expected([1; 32], "ward3-bio-1"),
            &sc,
        )
        .unwrap();
        assert!(!verify(&enrolled, &probe).matched);
    }

    #[test]
    fn r_bio_1_match_on_reader_signs_its_decision() {
        let rng = ring::rand::SystemRandom::new();
        let matcher = MatcherKey::generate(&rng).unwrap();
        let mut reader =
            BioReader::new("ward3-bio-2", &[9; 32], Protection::MatchOnReader).unwrap();
        reader.place_finger(SyntheticFinger::new(42));
        assert!(matches!(
            reader.capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000),
            Err(BioReaderError::NotEnrolled)
        ));
        reader.enroll(&SyntheticFinger::new(42));
        let exp = expected([1; 32], "ward3-bio-2");
        let Evidence::Decision(d) = reader
            .capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000)
            .unwrap()
        else {
            panic!("decision")
        };
        assert!(verify_decision(&reader.public_key(), &exp, &d).unwrap());
        reader.place_finger(SyntheticFinger::new(77));
        let Evidence::Decision(d) = reader
            .capture(&[1; 32], "alice", &matcher.public_key(), 1_700_000_000)
            .unwrap()
        else {
            panic!("decision")
        };
        assert!(!verify_decision(&reader.public_key(), &exp, &d).unwrap());
        // Another reader's key does not verify it.
        let other = BioReader::new("ward3-bio-2", &[10; 32], Protection::MatchOnReader).unwrap();
        assert!(verify_decision(&other.public_key(), &exp, &d).is_err());
    }
}
