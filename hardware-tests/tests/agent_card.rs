//! The agent's smartcard driver (`clinauth_agent::card`) through the real
//! pcscd: against the virtual PIV card, badge and misbehaving cards of this
//! crate (private pcscd, the default), or with `CLINAUTH_HW=1` against the
//! system pcscd and the real cards present, each test skipped with a reason
//! when its device is absent (see `clinauth_hardware_tests::hw`).

use std::ffi::CString;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clinauth_agent::card::{
    self, CardError, CardIdentity, CardSession, ConnectOptions, LastTry, Pin, PinStatus, PivSlot,
    ReaderEvent, Watcher,
};
use clinauth_factors::card::{verify_challenge, CardPublicKey};
use clinauth_hardware_tests::faulty::{
    INS_GENERAL_AUTHENTICATE, INS_GET_DATA, INS_SELECT, INS_VERIFY,
};
use clinauth_hardware_tests::hw::{self, Inventory, Mode, Requirement, Target};
use clinauth_hardware_tests::pcscd::{Pcscd, PcscdOptions, VpcdReader, SOCKET_ENV};
use clinauth_hardware_tests::piv::keys::{Algorithm, SlotKey};
use clinauth_hardware_tests::testpki::TestCa;
use clinauth_hardware_tests::vpcd::VirtualIcc;
use clinauth_hardware_tests::{
    CardConfig, Fault, FaultyCard, PivApplet, SlotId, VirtualBadge, VirtualCard,
};
use clinauth_policy::Purpose;
use libtest_mimic::{Arguments, Failed, Trial};
use pcsc::{Context, ReaderState, Scope, State};

const PIN: &str = "123456";
const PUK: &str = "87654321";
const USER: &str = "alice";
const WORKSTATION: &str = "ward-3-ws-07";
/// pcscd 1.9.9 polls a reader without its own event thread every 400 ms.
const PCSCD_POLL: Duration = Duration::from_millis(400);

type TestResult = Result<(), Failed>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

fn err(e: impl std::fmt::Display) -> Failed {
    e.to_string().into()
}

// ------------------------------------------------------------ the test bed

/// The readers of the private pcscd, lent to one test at a time.
struct Bed {
    mode: Mode,
    readers: Mutex<Vec<VpcdReader>>,
    freed: Condvar,
}

struct Lent {
    reader: VpcdReader,
    bed: Arc<Bed>,
    /// Not given back: vpcd 3.3 keeps reporting a card that left in the
    /// middle of a command as present, so the reader is unusable afterwards.
    retired: bool,
}

impl Drop for Lent {
    fn drop(&mut self) {
        if self.retired {
            eprintln!("{}: retired for the rest of the run", self.reader.name);
            return;
        }
        let _ = wait_for(&self.reader.name, false, Duration::from_secs(10));
        if let Ok(mut free) = self.bed.readers.lock() {
            free.push(self.reader.clone());
            self.bed.freed.notify_one();
        }
    }
}

impl Bed {
    fn borrow(self: &Arc<Self>) -> Result<Lent, Failed> {
        let mut free = self.readers.lock().map_err(|_| "pool poisoned")?;
        loop {
            if let Some(reader) = free.pop() {
                return Ok(Lent {
                    reader,
                    bed: Arc::clone(self),
                    retired: false,
                });
            }
            free = self.freed.wait(free).map_err(|_| "pool poisoned")?;
        }
    }

    /// Inserts `icc` into a free reader and waits until pcscd sees it. The
    /// card leaves the reader before the reader goes back to the pool.
    fn insert<C: VirtualIcc + 'static>(self: &Arc<Self>, icc: C) -> Result<Inserted<C>, Failed> {
        let lent = self.borrow()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], lent.reader.port));
        let mut card = VirtualCard::new(icc, addr);
        card.insert().map_err(err)?;
        wait_for(&lent.reader.name, true, Duration::from_secs(10))?;
        Ok(Inserted { card, lent })
    }
}

struct Inserted<C: VirtualIcc + 'static> {
    card: VirtualCard<C>,
    lent: Lent,
}

impl<C: VirtualIcc + 'static> Inserted<C> {
    fn reader(&self) -> &str {
        &self.lent.reader.name
    }
}

/// A PIV card of the test CA: its applet and the certificates.
struct PivCard {
    applet: PivApplet,
    cert_9a: Vec<u8>,
    cert_9c: Vec<u8>,
}

fn rsa_key() -> Result<SlotKey, Failed> {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    let der = DER.get_or_init(|| {
        SlotKey::generate(Algorithm::Rsa2048)
            .and_then(|k| k.to_pkcs8_der())
            .map(|d| d.to_vec())
            .unwrap_or_default()
    });
    SlotKey::from_pkcs8_der(der).map_err(err)
}

fn key(alg: Algorithm) -> Result<SlotKey, Failed> {
    match alg {
        Algorithm::Rsa2048 => rsa_key(),
        Algorithm::EccP256 => SlotKey::generate(alg).map_err(err),
    }
}

fn piv_card(alg_9a: Algorithm, alg_9c: Algorithm) -> Result<PivCard, Failed> {
    let ca = TestCa::generate("ClinAuth Test CA").map_err(err)?;
    let a = ca.credential(USER, key(alg_9a)?, false).map_err(err)?;
    let c = ca.credential(USER, key(alg_9c)?, true).map_err(err)?;
    let (cert_9a, cert_9c) = (a.cert_der.clone(), c.cert_der.clone());
    let config = CardConfig::new(PIN, PUK)
        .and_then(|cfg| cfg.with_slot(SlotId::Authentication, a))
        .and_then(|cfg| cfg.with_slot(SlotId::Signature, c))
        .map_err(err)?;
    Ok(PivCard {
        applet: PivApplet::new(config),
        cert_9a,
        cert_9c,
    })
}

/// Waits with SCardGetStatusChange until the reader has (or has no) card.
fn wait_for(reader: &str, present: bool, timeout: Duration) -> TestResult {
    let ctx = Context::establish(Scope::User).map_err(err)?;
    let name = CString::new(reader).map_err(err)?;
    let mut states = [ReaderState::new(name, State::UNAWARE)];
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ctx.get_status_change(left, &mut states) {
            Ok(()) => {}
            Err(pcsc::Error::Timeout) => {
                return Err(format!("{reader}: present != {present} after {timeout:?}").into())
            }
            Err(e) => return Err(format!("SCardGetStatusChange: {e}").into()),
        }
        if states[0].event_state().contains(State::PRESENT) == present {
            return Ok(());
        }
        states[0].sync_current_state();
    }
}

fn opts(timeout: Duration) -> ConnectOptions {
    ConnectOptions {
        timeout,
        ..ConnectOptions::default()
    }
}

fn pin() -> Result<Pin, Failed> {
    Pin::new(PIN.as_bytes()).map_err(err)
}

/// The test context: the bed (virtual mode) and the target.
struct Ctx {
    bed: Arc<Bed>,
    target: Target,
}

impl Ctx {
    fn real_reader(&self) -> Option<&str> {
        match &self.target {
            Target::Reader(r) => Some(r),
            _ => None,
        }
    }
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    for (i, b) in n.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0x5C;
    }
    n
}

// ---------------------------------------------------------------- tests

/// Signs the card challenge and checks it with ring (against the
/// certificate's key) and with the server's `verify_challenge`.
fn sign_and_check(session: &mut CardSession, user: &str) -> TestResult {
    let n = nonce();
    let signed = session
        .sign_challenge(&n, user, WORKSTATION, Purpose::Login)
        .map_err(err)?;
    let cert = session
        .certificate(PivSlot::Authentication)
        .map_err(err)?
        .clone();
    ensure!(signed.certificate_der == cert.der(), "certificate differs");
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).map_err(err)?;
    let spki = parsed.public_key();
    let raw_key = spki.subject_public_key.data.to_vec();
    let key = CardPublicKey::from_spki_der(spki.raw).map_err(err)?;
    verify_challenge(
        &key,
        &n,
        user,
        WORKSTATION,
        Purpose::Login,
        &signed.signature,
    )
    .map_err(|e| format!("verify_challenge: {e}"))?;
    let message = clinauth_factors::card::challenge_message(&n, user, WORKSTATION, Purpose::Login)
        .map_err(err)?;
    let alg: &dyn ring::signature::VerificationAlgorithm = match cert.algorithm().map_err(err)? {
        card::KeyAlgorithm::EcdsaP256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
        card::KeyAlgorithm::Rsa { .. } => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
    };
    ring::signature::UnparsedPublicKey::new(alg, raw_key)
        .verify(&message, &signed.signature)
        .map_err(|_| "ring: signature does not verify")?;
    // Bound to the purpose and the workstation (R-AUTH-3).
    ensure!(
        verify_challenge(
            &key,
            &n,
            user,
            WORKSTATION,
            Purpose::Unlock,
            &signed.signature
        )
        .is_err(),
        "signature accepted for another purpose"
    );
    ensure!(
        verify_challenge(
            &key,
            &n,
            user,
            "ward-4-ws-01",
            Purpose::Login,
            &signed.signature
        )
        .is_err(),
        "signature accepted for another workstation"
    );
    Ok(())
}

fn r_auth_3_ecdsa_card_signs_the_server_challenge(c: &Ctx) -> TestResult {
    if let Some(reader) = c.real_reader() {
        return real_card_signs(reader);
    }
    let card = piv_card(Algorithm::EccP256, Algorithm::EccP256)?;
    let ins = c.bed.insert(card.applet)?;
    let mut s = CardSession::connect(ins.reader(), opts(Duration::from_secs(5))).map_err(err)?;
    ensure!(
        matches!(
            s.sign_challenge(&nonce(), USER, WORKSTATION, Purpose::Login),
            Err(CardError::PinRequired)
        ),
        "signed without the PIN"
    );
    s.verify_pin(&pin()?, LastTry::Refuse).map_err(err)?;
    sign_and_check(&mut s, USER)?;
    ensure!(
        s.certificate(PivSlot::Authentication).map_err(err)?.der() == card.cert_9a,
        "9A certificate"
    );
    Ok(())
}

fn real_card_signs(reader: &str) -> TestResult {
    let digits = std::env::var(hw::HW_PIN_ENV).map_err(err)?;
    let pin = Pin::new(digits.as_bytes()).map_err(err)?;
    let mut s = CardSession::connect(reader, ConnectOptions::default()).map_err(err)?;
    s.verify_pin(&pin, LastTry::Refuse).map_err(err)?;
    sign_and_check(&mut s, "hardware-test")
}

fn r_auth_3_rsa_card_signs_the_server_challenge(c: &Ctx) -> TestResult {
    let card = piv_card(Algorithm::Rsa2048, Algorithm::EccP256)?;
    let ins = c.bed.insert(card.applet)?;
    let mut s = CardSession::connect(ins.reader(), opts(Duration::from_secs(5))).map_err(err)?;
    s.verify_pin(&pin()?, LastTry::Refuse).map_err(err)?;
    sign_and_check(&mut s, USER)
}

/// A card briefly held by another (as the agent's own watcher does when a
/// card is inserted) is waited for; one held for longer is `Busy`, and the
/// exclusive login never shares it.
fn busy_card_is_waited_for_then_refused(c: &Ctx) -> TestResult {
    let card = piv_card(Algorithm::EccP256, Algorithm::EccP256)?;
    let ins = c.bed.insert(card.applet)?;
    let holder = CardSession::connect(ins.reader(), opts(Duration::from_secs(5))).map_err(err)?;
    ensure!(
        matches!(
            CardSession::connect(ins.reader(), opts(Duration::from_secs(5))),
            Err(CardError::Busy)
        ),
        "a held card was shared"
    );
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(holder);
    });
    let started = Instant::now();
    let mut s =
        CardSession::connect_when_free(ins.reader(), opts(Duration::from_secs(5))).map_err(err)?;
    ensure!(
        started.elapsed() >= Duration::from_millis(250),
        "connected while the card was held"
    );
    release.join().map_err(|_| "release thread")?;
    s.verify_pin(&pin()?, LastTry::Refuse).map_err(err)?;
    sign_and_check(&mut s, USER)?;
    // Held for longer than the wait: a clear Busy, after about BUSY_WAIT.
    let started = Instant::now();
    ensure!(
        matches!(
            CardSession::connect_when_free(ins.reader(), opts(Duration::from_secs(5))),
            Err(CardError::Busy)
        ),
        "a held card was shared"
    );
    ensure!(
        started.elapsed() >= card::piv::BUSY_WAIT - Duration::from_millis(100),
        "gave up after {:?}",
        started.elapsed()
    );
    drop(s);
    Ok(())
}

fn read_certificates_of_both_slots(c: &Ctx) -> TestResult {
    if let Some(reader) = c.real_reader() {
        let mut s = CardSession::connect(reader, ConnectOptions::default()).map_err(err)?;
        let cert = s.certificate(PivSlot::Authentication).map_err(err)?;
        eprintln!("9A certificate {}", cert.fingerprint_hex());
        return Ok(());
    }
    let card = piv_card(Algorithm::EccP256, Algorithm::Rsa2048)?;
    let ins = c.bed.insert(card.applet)?;
    let mut s = CardSession::connect(ins.reader(), opts(Duration::from_secs(5))).map_err(err)?;
    let a = s.certificate(PivSlot::Authentication).map_err(err)?.clone();
    let b = s.certificate(PivSlot::Signature).map_err(err)?.clone();
    ensure!(a.der() == card.cert_9a, "9A certificate differs");
    ensure!(b.der() == card.cert_9c, "9C certificate differs");
    ensure!(
        a.algorithm().map_err(err)? == card::KeyAlgorithm::EcdsaP256,
        "9A algorithm"
    );
    ensure!(
        b.algorithm().map_err(err)? == card::KeyAlgorithm::Rsa { modulus_len: 256 },
        "9C algorithm"
    );
    Ok(())
}

fn r_auth_pin_good(c: &Ctx) -> TestResult {
    let card = piv_card(Algorithm::EccP256, Algorithm::EccP256)?;
    let ins = c.bed.insert(card.applet)?;
    let mut s = CardSession::connect(ins.reader(), opts(Duration::from_secs(5))).map_err(err)?;
    ensure!(
        s.pin_status().map_err(err)? == PinStatus::TriesLeft(3),
        "fresh card"
    );
    s.verify_pin(&pin()?, LastTry::Refuse).map_err(err)?;
    ensure!(
        s.pin_status().map_err(err)? == PinStatus::Verified,
        "verified"
    );
    Ok(())
}

fn r_auth_pin_bad_reports_tries_and_never_spends_the_last_silently(c: &Ctx) -> TestResult {
    let card = piv_card(Algorithm::EccP256, Algorithm::EccP256)?;
    let ins = c.bed.insert(card.applet)?;
    let mut s = CardSession::connect(ins.reader(), opts(Duration::from_secs(5))).map_err(err)?;
    let wrong = Pin::new(b"000000").map_err(err)?;
    for left in [2u8, 1] {
        match s.verify_pin(&wrong, LastTry::Refuse) {
            Err(CardError::WrongPin { tries_left }) if tries_left == left => {}
            other => return Err(format!("expected {left} tries left: {other:?}").into()),
        }
    }
    // One try left: refused without sending VERIFY, even the right PIN.
    match s.verify_pin(&pin()?, LastTry::Refuse) {
        Err(CardError::LastTryNeedsConfirmation {
            tries_left: Some(1),
        }) => {}
        other => return Err(format!("last try spent silently: {other:?}").into()),
    }
    ensure!(
        ins.card.with_card(|a| a.pin_tries_left()) == 1,
        "the card lost a try"
    );
    // Confirmed: the right PIN works and resets the counter.
    s.verify_pin(&pin()?, LastTry::Spend).map_err(err)?;
    ensure!(
        ins.card.with_card(|a| a.pin_tries_left()) == 3,
        "counter reset"
    );
    Ok(())
}

fn r_auth_pin_blocked(c: &Ctx) -> TestResult {
    let card = piv_card(Algorithm::EccP256, Algorithm::EccP256)?;
    let ins = c.bed.insert(card.applet)?;
    let mut s = CardSession::connect(ins.reader(), opts(Duration::from_secs(5))).map_err(err)?;
    let wrong = Pin::new(b"000000").map_err(err)?;
    let _ = s.verify_pin(&wrong, LastTry::Refuse);
    let _ = s.verify_pin(&wrong, LastTry::Refuse);
    match s.verify_pin(&wrong, LastTry::Spend) {
        Err(CardError::PinBlocked) => {}
        other => return Err(format!("expected blocked: {other:?}").into()),
    }
    ensure!(
        s.pin_status().map_err(err)? == PinStatus::Blocked,
        "status blocked"
    );
    match s.verify_pin(&pin()?, LastTry::Spend) {
        Err(CardError::PinBlocked) => {}
        other => return Err(format!("right PIN on a blocked card: {other:?}").into()),
    }
    match s.sign_challenge(&nonce(), USER, WORKSTATION, Purpose::Login) {
        Err(CardError::PinRequired) => Ok(()),
        other => Err(format!("signed on a blocked card: {other:?}").into()),
    }
}

fn r_sig_1_signature_key_needs_the_pin_each_time(c: &Ctx) -> TestResult {
    let card = piv_card(Algorithm::EccP256, Algorithm::Rsa2048)?;
    let ins = c.bed.insert(card.applet)?;
    let mut s = CardSession::connect(ins.reader(), opts(Duration::from_secs(5))).map_err(err)?;
    let doc = b"order 4711 confirmed by dr. alice";
    // VERIFY, then a certificate read, then the signature: too late.
    s.verify_pin(&pin()?, LastTry::Refuse).map_err(err)?;
    match s.sign_message(PivSlot::Signature, doc) {
        Err(CardError::PinRequired) => {}
        other => return Err(format!("PIN not right before: {other:?}").into()),
    }
    let sig = s
        .sign_with_pin(PivSlot::Signature, doc, &pin()?, LastTry::Refuse)
        .map_err(err)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&card.cert_9c).map_err(err)?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &cert.public_key().subject_public_key.data,
    )
    .verify(doc, &sig)
    .map_err(|_| "9C signature does not verify")?;
    s.sign_with_pin(PivSlot::Signature, doc, &pin()?, LastTry::Refuse)
        .map_err(err)?;
    match s.sign_message(PivSlot::Signature, doc) {
        Err(CardError::PinRequired) => Ok(()),
        other => Err(format!("second signature without the PIN: {other:?}").into()),
    }
}

fn r_sess_2_card_removal_seen_within_one_poll(c: &Ctx) -> TestResult {
    if let Some(reader) = c.real_reader() {
        let mut w = Watcher::for_readers(&[reader]).map_err(err)?;
        let _ = w.wait(Some(Duration::from_secs(5))).map_err(err)?;
        eprintln!("remove the card from {reader} within 30 s");
        let ev = w.wait(Some(Duration::from_secs(30))).map_err(err)?;
        ensure!(
            ev.iter().any(|e| matches!(e, ReaderEvent::Removed { .. })),
            "no removal: {ev:?}"
        );
        return Ok(());
    }
    let card = piv_card(Algorithm::EccP256, Algorithm::EccP256)?;
    let mut ins = c.bed.insert(card.applet)?;
    let reader = ins.reader().to_owned();
    let mut w = Watcher::for_readers(&[&reader]).map_err(err)?;
    let first = w.wait(Some(Duration::from_secs(10))).map_err(err)?;
    let fingerprint = clinauth_factors::card::sha256(&card.cert_9a);
    ensure!(
        first
            == vec![ReaderEvent::Inserted {
                reader: reader.clone(),
                identity: CardIdentity::Piv { fingerprint },
            }],
        "initial events: {first:?}"
    );
    // Nothing happens: the watcher blocks and times out.
    let quiet = w.wait(Some(Duration::from_millis(300))).map_err(err)?;
    ensure!(quiet.is_empty(), "events without a change: {quiet:?}");

    let watcher = std::thread::spawn(move || {
        let r = w.wait(Some(Duration::from_secs(10)));
        (r, Instant::now(), w)
    });
    std::thread::sleep(Duration::from_millis(300));
    let removed_at = Instant::now();
    ins.card.remove().map_err(err)?;
    let (events, seen_at, mut w) = watcher.join().map_err(|_| "watcher panicked")?;
    let events = events.map_err(err)?;
    let took = seen_at.duration_since(removed_at);
    ensure!(
        events
            == vec![ReaderEvent::Removed {
                reader: reader.clone()
            }],
        "events: {events:?}"
    );
    // One pcscd poll, plus scheduling slack.
    ensure!(
        took <= PCSCD_POLL + Duration::from_millis(250),
        "removal seen after {took:?} (one poll is {PCSCD_POLL:?})"
    );
    eprintln!("removal seen after {took:?}");

    // Back in: seen again with the same identity.
    ins.card.insert().map_err(err)?;
    let again = w.wait(Some(Duration::from_secs(10))).map_err(err)?;
    ensure!(
        again
            == vec![ReaderEvent::Inserted {
                reader,
                identity: CardIdentity::Piv { fingerprint },
            }],
        "after reinsertion: {again:?}"
    );
    Ok(())
}

fn watcher_can_be_cancelled(c: &Ctx) -> TestResult {
    let card = piv_card(Algorithm::EccP256, Algorithm::EccP256)?;
    let ins = c.bed.insert(card.applet)?;
    let mut w = Watcher::for_readers(&[ins.reader()])
        .map_err(err)?
        .identify_cards(false);
    let _ = w.wait(Some(Duration::from_secs(5))).map_err(err)?;
    let cancel = w.canceller();
    let t = std::thread::spawn(move || w.wait(None));
    std::thread::sleep(Duration::from_millis(200));
    cancel.cancel().map_err(err)?;
    match t.join().map_err(|_| "watcher panicked")? {
        Err(CardError::Cancelled) => Ok(()),
        other => Err(format!("expected cancelled: {other:?}").into()),
    }
}

fn badge(c: &Ctx, uid: &[u8]) -> TestResult {
    if let Some(reader) = c.real_reader() {
        let uid = card::read_badge_uid(reader, Duration::from_secs(5)).map_err(err)?;
        eprintln!("badge UID {uid}");
        return Ok(());
    }
    let mut ins = c.bed.insert(VirtualBadge::new(uid).map_err(err)?)?;
    let reader = ins.reader().to_owned();
    let read = card::read_badge_uid(&reader, Duration::from_secs(5)).map_err(err)?;
    ensure!(read.as_bytes() == uid, "UID {read}");
    // A PIV session on a badge: a clear "not PIV".
    match CardSession::connect(&reader, opts(Duration::from_secs(5))) {
        Err(CardError::NotPiv(0x6E00)) => {}
        other => return Err(format!("PIV on a badge: {other:?}").into()),
    }
    let mut w = Watcher::for_readers(&[&reader]).map_err(err)?;
    let ev = w.wait(Some(Duration::from_secs(5))).map_err(err)?;
    let expected = card::BadgeUid::new(uid).map_err(err)?;
    ensure!(
        ev == vec![ReaderEvent::Inserted {
            reader: reader.clone(),
            identity: CardIdentity::Badge(expected),
        }],
        "watcher: {ev:?}"
    );
    ins.card.remove().map_err(err)?;
    let ev = w.wait(Some(Duration::from_secs(5))).map_err(err)?;
    ensure!(
        ev == vec![ReaderEvent::Removed { reader }],
        "watcher: {ev:?}"
    );
    Ok(())
}

fn badge_uid_4_bytes(c: &Ctx) -> TestResult {
    badge(c, &[0xDE, 0xAD, 0xBE, 0xEF])
}

fn badge_uid_7_bytes(c: &Ctx) -> TestResult {
    badge(c, &[0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66])
}

// ------------------------------------------------------------- faults

/// What the faulty card's step should end in.
type Expect = fn(&CardError) -> bool;

/// Inserts a card with `fault` on `ins`, runs the usual sequence (connect,
/// certificate, PIN, signature) and checks that it stops with the expected
/// error, quickly, without a panic.
fn fault_case(c: &Ctx, alg: Algorithm, ins_byte: u8, fault: Fault, expect: Expect) -> TestResult {
    let card = piv_card(alg, Algorithm::EccP256)?;
    let timeout = Duration::from_millis(1500);
    let mut ins = c
        .bed
        .insert(FaultyCard::new(card.applet, ins_byte, fault.clone()))?;
    let reader = ins.reader().to_owned();
    let start = Instant::now();
    let outcome = (|| -> Result<(), CardError> {
        let mut s = CardSession::connect(&reader, opts(timeout))?;
        s.certificate(PivSlot::Authentication)?;
        s.verify_pin(&Pin::new(PIN.as_bytes())?, LastTry::Refuse)?;
        s.sign_challenge(&nonce(), USER, WORKSTATION, Purpose::Login)?;
        Ok(())
    })();
    let took = start.elapsed();
    // A mute card is released by removal (pcscd is still waiting on it).
    ins.card.remove().map_err(err)?;
    if fault == Fault::HangUp {
        ins.lent.retired = true;
    }
    match outcome {
        Ok(()) => Err(format!("{fault:?}: the faulty card was accepted").into()),
        Err(e) if expect(&e) => {
            ensure!(
                took < timeout * 3,
                "{fault:?}: took {took:?} (timeout {timeout:?})"
            );
            eprintln!("{fault:?} on INS {ins_byte:02X}: {e} ({took:?})");
            Ok(())
        }
        Err(e) => Err(format!("{fault:?} on INS {ins_byte:02X}: unexpected error {e:?}").into()),
    }
}

fn fault_short_response_to_select(c: &Ctx) -> TestResult {
    fault_case(
        c,
        Algorithm::EccP256,
        INS_SELECT,
        Fault::ShortResponse,
        |e| matches!(e, CardError::Malformed(_)),
    )
}

fn fault_odd_status_word_to_select(c: &Ctx) -> TestResult {
    fault_case(
        c,
        Algorithm::EccP256,
        INS_SELECT,
        Fault::StatusWord(0x9FFF),
        |e| matches!(e, CardError::NotPiv(0x9FFF)),
    )
}

fn fault_broken_tlv_in_certificate(c: &Ctx) -> TestResult {
    fault_case(c, Algorithm::EccP256, INS_GET_DATA, Fault::BrokenTlv, |e| {
        matches!(e, CardError::Malformed(_))
    })
}

fn fault_truncated_certificate(c: &Ctx) -> TestResult {
    fault_case(
        c,
        Algorithm::EccP256,
        INS_GET_DATA,
        Fault::TruncateData(300),
        |e| matches!(e, CardError::Malformed(_)),
    )
}

fn fault_endless_get_response(c: &Ctx) -> TestResult {
    fault_case(
        c,
        Algorithm::EccP256,
        INS_GET_DATA,
        Fault::EndlessGetResponse,
        |e| matches!(e, CardError::Malformed(_)),
    )
}

fn fault_odd_status_word_to_pin_status_never_spends_a_try(c: &Ctx) -> TestResult {
    fault_case(
        c,
        Algorithm::EccP256,
        INS_VERIFY,
        Fault::StatusWord(0x6F00),
        |e| matches!(e, CardError::LastTryNeedsConfirmation { tries_left: None }),
    )
}

fn fault_truncated_rsa_signature(c: &Ctx) -> TestResult {
    fault_case(
        c,
        Algorithm::Rsa2048,
        INS_GENERAL_AUTHENTICATE,
        Fault::TruncateData(100),
        |e| matches!(e, CardError::Malformed(_)),
    )
}

fn fault_corrupt_signature_is_caught_by_the_driver(c: &Ctx) -> TestResult {
    fault_case(
        c,
        Algorithm::EccP256,
        INS_GENERAL_AUTHENTICATE,
        Fault::CorruptData,
        |e| {
            matches!(
                e,
                CardError::Certificate(clinauth_factors::card::CardError::BadSignature)
                    | CardError::Malformed(_)
            )
        },
    )
}

fn fault_card_stops_answering_mid_command(c: &Ctx) -> TestResult {
    fault_case(
        c,
        Algorithm::Rsa2048,
        INS_GENERAL_AUTHENTICATE,
        Fault::Mute,
        |e| matches!(e, CardError::Timeout(_)),
    )
}

fn fault_card_leaves_mid_command(c: &Ctx) -> TestResult {
    fault_case(
        c,
        Algorithm::EccP256,
        INS_GENERAL_AUTHENTICATE,
        Fault::HangUp,
        |e| {
            // vpcd hands pcscd an empty answer when the card leaves.
            matches!(
                e,
                CardError::CardRemoved
                    | CardError::Pcsc { .. }
                    | CardError::SessionBroken
                    | CardError::Malformed(_)
            )
        },
    )
}

fn after_a_timeout_the_session_is_broken(c: &Ctx) -> TestResult {
    let card = piv_card(Algorithm::EccP256, Algorithm::EccP256)?;
    let mut ins = c
        .bed
        .insert(FaultyCard::new(card.applet, INS_VERIFY, Fault::Mute))?;
    let reader = ins.reader().to_owned();
    let mut s = CardSession::connect(&reader, opts(Duration::from_millis(800))).map_err(err)?;
    let r1 = s.pin_status();
    let r2 = s.certificate(PivSlot::Authentication);
    ins.card.remove().map_err(err)?;
    ensure!(matches!(r1, Err(CardError::Timeout(_))), "first: {r1:?}");
    ensure!(matches!(r2, Err(CardError::SessionBroken)), "then: {r2:?}");
    Ok(())
}

// ------------------------------------------------------------- main

type TestFn = fn(&Ctx) -> TestResult;

fn tests() -> Vec<(&'static str, Requirement, TestFn)> {
    use Requirement::{Badge, PivCard, PivCardInteractive, PivCardWithPin, VirtualOnly};
    const OWN_CA: &str = "needs a card of the test's own CA";
    const BLOCKS: &str = "spends or blocks PIN tries";
    const FAULT: &str = "fault injection";
    vec![
        (
            "r_auth_3_ecdsa_card_signs_the_server_challenge",
            PivCardWithPin,
            r_auth_3_ecdsa_card_signs_the_server_challenge as TestFn,
        ),
        (
            "r_auth_3_rsa_card_signs_the_server_challenge",
            VirtualOnly(OWN_CA),
            r_auth_3_rsa_card_signs_the_server_challenge,
        ),
        (
            "busy_card_is_waited_for_then_refused",
            VirtualOnly(OWN_CA),
            busy_card_is_waited_for_then_refused,
        ),
        (
            "read_certificates_of_both_slots",
            PivCard,
            read_certificates_of_both_slots,
        ),
        ("r_auth_pin_good", VirtualOnly(OWN_CA), r_auth_pin_good),
        (
            "r_auth_pin_bad_reports_tries_and_never_spends_the_last_silently",
            VirtualOnly(BLOCKS),
            r_auth_pin_bad_reports_tries_and_never_spends_the_last_silently,
        ),
        (
            "r_auth_pin_blocked",
            VirtualOnly(BLOCKS),
            r_auth_pin_blocked,
        ),
        (
            "r_sig_1_signature_key_needs_the_pin_each_time",
            VirtualOnly(OWN_CA),
            r_sig_1_signature_key_needs_the_pin_each_time,
        ),
        (
            "r_sess_2_card_removal_seen_within_one_poll",
            PivCardInteractive,
            r_sess_2_card_removal_seen_within_one_poll,
        ),
        (
            "watcher_can_be_cancelled",
            VirtualOnly(OWN_CA),
            watcher_can_be_cancelled,
        ),
        ("badge_uid_4_bytes", Badge, badge_uid_4_bytes),
        (
            "badge_uid_7_bytes",
            VirtualOnly("a second badge"),
            badge_uid_7_bytes,
        ),
        (
            "fault_short_response_to_select",
            VirtualOnly(FAULT),
            fault_short_response_to_select,
        ),
        (
            "fault_odd_status_word_to_select",
            VirtualOnly(FAULT),
            fault_odd_status_word_to_select,
        ),
        (
            "fault_broken_tlv_in_certificate",
            VirtualOnly(FAULT),
            fault_broken_tlv_in_certificate,
        ),
        (
            "fault_truncated_certificate",
            VirtualOnly(FAULT),
            fault_truncated_certificate,
        ),
        (
            "fault_endless_get_response",
            VirtualOnly(FAULT),
            fault_endless_get_response,
        ),
        (
            "fault_odd_status_word_to_pin_status_never_spends_a_try",
            VirtualOnly(FAULT),
            fault_odd_status_word_to_pin_status_never_spends_a_try,
        ),
        (
            "fault_truncated_rsa_signature",
            VirtualOnly(FAULT),
            fault_truncated_rsa_signature,
        ),
        (
            "fault_corrupt_signature_is_caught_by_the_driver",
            VirtualOnly(FAULT),
            fault_corrupt_signature_is_caught_by_the_driver,
        ),
        (
            "fault_card_stops_answering_mid_command",
            VirtualOnly(FAULT),
            fault_card_stops_answering_mid_command,
        ),
        (
            "fault_card_leaves_mid_command",
            VirtualOnly(FAULT),
            fault_card_leaves_mid_command,
        ),
        (
            "after_a_timeout_the_session_is_broken",
            VirtualOnly(FAULT),
            after_a_timeout_the_session_is_broken,
        ),
    ]
}

/// Real devices on the system pcscd: which readers hold a PIV card or a
/// badge (identified by the agent's own watcher logic).
fn hardware_inventory() -> Inventory {
    let mut inv = Inventory {
        pin_given: std::env::var_os(hw::HW_PIN_ENV).is_some(),
        interactive: std::env::var(hw::HW_INTERACTIVE_ENV).is_ok_and(|v| v == "1"),
        fprintd_error: Some("not probed by this suite".into()),
        ..Inventory::default()
    };
    let mut w = match Watcher::new() {
        Ok(w) => w,
        Err(e) => {
            inv.pcscd_error = Some(e.to_string());
            return inv;
        }
    };
    match w.wait(Some(Duration::from_secs(3))) {
        Ok(events) => {
            for e in events {
                if let ReaderEvent::Inserted { reader, identity } = e {
                    match identity {
                        CardIdentity::Piv { .. } => inv.piv_readers.push(reader),
                        CardIdentity::Badge(_) => inv.badge_readers.push(reader),
                        other => eprintln!("{reader}: {other:?} (not used)"),
                    }
                }
            }
        }
        Err(e) => inv.pcscd_error = Some(e.to_string()),
    }
    inv
}

fn main() {
    let args = Arguments::from_args();
    let mode = Mode::from_env();
    let bed = Arc::new(Bed {
        mode,
        readers: Mutex::new(Vec::new()),
        freed: Condvar::new(),
    });
    let mut pcscd = None;
    let mut keepalive = None;
    let mut inventory = Inventory::default();
    if mode == Mode::Virtual && !args.list {
        let opts = PcscdOptions {
            debug: std::env::var_os("CLINAUTH_PCSCD_DEBUG").is_some(),
            auto_exit: true,
        };
        let started = match Pcscd::start(&opts) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("cannot start a private pcscd: {e}\n(set CLINAUTH_SKIP_PCSCD=1 to skip)");
                std::process::exit(101);
            }
        };
        // Before any other thread exists: libpcsclite reads this once.
        std::env::set_var(SOCKET_ENV, started.socket_path());
        if let Ok(mut free) = bed.readers.lock() {
            free.extend(started.readers().iter().cloned());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let names: Vec<String> = started.readers().iter().map(|r| r.name.clone()).collect();
        loop {
            let listed: Vec<String> = Context::establish(Scope::User)
                .and_then(|c| c.list_readers_owned())
                .unwrap_or_default()
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            if names.iter().all(|n| listed.contains(n)) {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "pcscd lists {listed:?}, expected {names:?}\n{}",
                    started.log()
                );
                std::process::exit(101);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        keepalive = Context::establish(Scope::User).ok();
        pcscd = Some(started);
    } else if mode == Mode::Hardware && !args.list {
        inventory = hardware_inventory();
    }

    let trials = tests()
        .into_iter()
        .map(|(name, req, f)| {
            let selected = hw::select(bed.mode, req, &inventory);
            if let Err(skip) = &selected {
                if !args.list && mode != Mode::Skip {
                    eprintln!("{name}: {skip}");
                }
            }
            let ignored = selected.is_err();
            let ctx = Ctx {
                bed: Arc::clone(&bed),
                target: selected.unwrap_or(Target::Virtual),
            };
            Trial::test(name, move || f(&ctx)).with_ignored_flag(ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        if let Some(p) = &pcscd {
            eprintln!("--- pcscd log ---\n{}", p.log());
        }
    }
    drop(keepalive);
    drop(pcscd);
    conclusion.exit();
}
