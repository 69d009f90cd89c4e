//! The virtual PIV card against the real pcscd, through the `pcsc` crate:
//! the path the agent takes to a card.
//!
//! `main` starts a private pcscd (see `clinauth_hardware_tests::pcscd`) with
//! two vpcd readers, points libpcsclite at it, and runs the tests in
//! parallel; each test borrows a reader, inserts its own card and gives the
//! reader back when done. Set `CLINAUTH_SKIP_PCSCD=1` to skip these tests on
//! a machine without pcscd (they fail otherwise, on purpose).

use std::ffi::{CStr, CString};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clinauth_hardware_tests::pcscd::{Pcscd, PcscdOptions, VpcdReader, SOCKET_ENV};
use clinauth_hardware_tests::piv::keys::{Algorithm, SlotKey};
use clinauth_hardware_tests::testpki::TestCa;
use clinauth_hardware_tests::{CardConfig, PivApplet, SlotId, VirtualCard};
use libtest_mimic::{Arguments, Failed, Trial};
use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};

const PIN: &str = "123456";
const PUK: &str = "87654321";
const USER: &str = "alice";
const SELECT_PIV: [u8; 10] = [0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08];
const SHA256_DIGEST_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

type TestResult = Result<(), Failed>;
type TestFn = fn(&Arc<Harness>) -> TestResult;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

macro_rules! ensure_eq {
    ($left:expr, $right:expr) => {{
        let (l, r) = (&$left, &$right);
        if l != r {
            return Err(format!(
                "{} = {:04X?}, expected {:04X?} (line {})",
                stringify!($left),
                l,
                r,
                line!()
            )
            .into());
        }
    }};
}

/// Readers of the private pcscd, lent to one test at a time.
struct Harness {
    readers: Mutex<Vec<VpcdReader>>,
    freed: Condvar,
}

impl Harness {
    fn borrow(self: &Arc<Self>) -> Result<Lent, Failed> {
        let mut free = self.readers.lock().map_err(|_| "reader pool poisoned")?;
        loop {
            if let Some(r) = free.pop() {
                return Ok(Lent {
                    reader: r,
                    harness: Arc::clone(self),
                });
            }
            free = self.freed.wait(free).map_err(|_| "reader pool poisoned")?;
        }
    }
}

/// A borrowed reader; going back to the pool once it is empty again.
struct Lent {
    reader: VpcdReader,
    harness: Arc<Harness>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        // The next borrower must find the reader empty.
        let _ = wait_for(&self.reader.name, false, Duration::from_secs(10));
        if let Ok(mut free) = self.harness.readers.lock() {
            free.push(self.reader.clone());
            self.harness.freed.notify_one();
        }
    }
}

/// A test's card in a borrowed reader. The card leaves the reader first.
struct TestCard {
    card: VirtualCard<PivApplet>,
    lent: Lent,
    ca: TestCa,
    cert_9a: Vec<u8>,
    cert_9c: Vec<u8>,
}

impl TestCard {
    fn reader(&self) -> CString {
        CString::new(self.lent.reader.name.clone()).unwrap_or_default()
    }
}

fn rsa_key() -> SlotKey {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    let der = DER.get_or_init(|| {
        SlotKey::generate(Algorithm::Rsa2048)
            .and_then(|k| k.to_pkcs8_der())
            .map(|d| d.to_vec())
            .unwrap_or_default()
    });
    SlotKey::from_pkcs8_der(der).unwrap_or_else(|e| panic!("RSA test key: {e}"))
}

fn key(alg: Algorithm) -> Result<SlotKey, Failed> {
    match alg {
        Algorithm::Rsa2048 => Ok(rsa_key()),
        Algorithm::EccP256 => SlotKey::generate(alg).map_err(|e| e.to_string().into()),
    }
}

/// Makes a card (9A and 9C keys of the given algorithms, certificates from a
/// fresh CA), inserts it into a free reader and waits until pcscd sees it.
fn card(h: &Arc<Harness>, alg_9a: Algorithm, alg_9c: Algorithm) -> Result<TestCard, Failed> {
    let ca = TestCa::generate("ClinAuth Test CA").map_err(|e| e.to_string())?;
    let a = ca
        .credential(USER, key(alg_9a)?, false)
        .map_err(|e| e.to_string())?;
    let c = ca
        .credential(USER, key(alg_9c)?, true)
        .map_err(|e| e.to_string())?;
    let (cert_9a, cert_9c) = (a.cert_der.clone(), c.cert_der.clone());
    let config = CardConfig::new(PIN, PUK)
        .and_then(|cfg| cfg.with_slot(SlotId::Authentication, a))
        .and_then(|cfg| cfg.with_slot(SlotId::Signature, c))
        .map_err(|e| e.to_string())?;
    let lent = h.borrow()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], lent.reader.port));
    let mut card = VirtualCard::new(PivApplet::new(config), addr);
    card.insert().map_err(|e| e.to_string())?;
    wait_for(&lent.reader.name, true, Duration::from_secs(10))?;
    Ok(TestCard {
        card,
        lent,
        ca,
        cert_9a,
        cert_9c,
    })
}

fn context() -> Result<Context, Failed> {
    Context::establish(Scope::User).map_err(|e| format!("SCardEstablishContext: {e}").into())
}

/// Waits with SCardGetStatusChange until the reader has (or has no) card.
fn wait_for(reader: &str, present: bool, timeout: Duration) -> TestResult {
    let ctx = context()?;
    let name = CString::new(reader).map_err(|e| e.to_string())?;
    let mut states = [ReaderState::new(name, State::UNAWARE)];
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ctx.get_status_change(left, &mut states) {
            Ok(()) => {}
            Err(pcsc::Error::Timeout) => {
                return Err(format!("{reader}: card present != {present} after {timeout:?}").into())
            }
            Err(e) => return Err(format!("SCardGetStatusChange: {e}").into()),
        }
        let state = states[0].event_state();
        if state.contains(State::PRESENT) == present && !state.contains(State::CHANGED) {
            return Ok(());
        }
        if state.contains(State::PRESENT) == present {
            return Ok(());
        }
        states[0].sync_current_state();
    }
}

/// A PC/SC connection to a card, with GET RESPONSE and command chaining.
struct Client {
    _ctx: Context,
    card: pcsc::Card,
}

impl Client {
    fn connect(reader: &CStr) -> Result<Self, Failed> {
        let ctx = context()?;
        let card = ctx
            .connect(reader, ShareMode::Shared, Protocols::ANY)
            .map_err(|e| format!("SCardConnect: {e}"))?;
        Ok(Self { _ctx: ctx, card })
    }

    /// One APDU; follows `61 xx` with GET RESPONSE.
    fn transmit(&self, apdu: &[u8]) -> Result<(Vec<u8>, u16), Failed> {
        let mut buf = [0u8; 258];
        let mut out = Vec::new();
        let mut resp = self
            .card
            .transmit(apdu, &mut buf)
            .map_err(|e| format!("SCardTransmit: {e}"))?
            .to_vec();
        loop {
            ensure!(resp.len() >= 2, "response without status word");
            let (data, swb) = resp.split_at(resp.len() - 2);
            out.extend_from_slice(data);
            let sw = u16::from_be_bytes([swb[0], swb[1]]);
            if sw >> 8 != 0x61 {
                return Ok((out, sw));
            }
            ensure!(out.len() < 65536, "endless GET RESPONSE");
            resp = self
                .card
                .transmit(&[0x00, 0xC0, 0x00, 0x00, sw as u8], &mut buf)
                .map_err(|e| format!("SCardTransmit: {e}"))?
                .to_vec();
        }
    }

    /// A command with any amount of data, chained in pieces of 255 bytes.
    fn command(&self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Result<(Vec<u8>, u16), Failed> {
        let pieces: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(255).collect()
        };
        for (i, piece) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            let mut apdu = vec![if last { 0x00 } else { 0x10 }, ins, p1, p2];
            if !piece.is_empty() {
                apdu.push(piece.len() as u8);
                apdu.extend_from_slice(piece);
            }
            if ins == 0xCB || ins == 0x87 || ins == 0xA4 {
                apdu.push(0x00);
            }
            let (resp, sw) = self.transmit(&apdu)?;
            if last {
                return Ok((resp, sw));
            }
            ensure_eq!(sw, 0x9000);
        }
        Err("no command sent".into())
    }

    fn select(&self) -> TestResult {
        let (_, sw) = self.transmit(&SELECT_PIV)?;
        ensure_eq!(sw, 0x9000);
        Ok(())
    }

    fn verify(&self, pin: &str) -> Result<u16, Failed> {
        Ok(self.command(0x20, 0x00, 0x80, &padded(pin))?.1)
    }

    fn pin_status(&self) -> Result<u16, Failed> {
        Ok(self.command(0x20, 0x00, 0x80, &[])?.1)
    }

    fn get_data(&self, object: [u8; 3]) -> Result<(Vec<u8>, u16), Failed> {
        let data = [0x5C, 0x03, object[0], object[1], object[2]];
        self.command(0xCB, 0x3F, 0xFF, &data)
    }

    /// GENERAL AUTHENTICATE; returns the signature from 7C { 82 sig }.
    fn sign(&self, alg: u8, slot: u8, challenge: &[u8]) -> Result<(Vec<u8>, u16), Failed> {
        let mut inner = vec![0x82, 0x00, 0x81];
        push_len(&mut inner, challenge.len());
        inner.extend_from_slice(challenge);
        let mut template = vec![0x7C];
        push_len(&mut template, inner.len());
        template.extend_from_slice(&inner);
        let (resp, sw) = self.command(0x87, alg, slot, &template)?;
        if sw != 0x9000 {
            return Ok((Vec::new(), sw));
        }
        let (outer, rest) = tlv(&resp)?;
        ensure!(outer.0 == 0x7C && rest.is_empty(), "not a 7C template");
        let (sig, _) = tlv(outer.1)?;
        ensure!(sig.0 == 0x82, "no 82 in the response");
        Ok((sig.1.to_vec(), sw))
    }
}

fn padded(pin: &str) -> Vec<u8> {
    let mut v = pin.as_bytes().to_vec();
    v.resize(8, 0xFF);
    v
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        _ => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
}

/// A tag and its value.
type Element<'a> = (u8, &'a [u8]);

/// A minimal independent BER-TLV reader (one-byte tags, or 5F xx tags).
fn tlv(input: &[u8]) -> Result<(Element<'_>, &[u8]), Failed> {
    let (&tag, rest) = input.split_first().ok_or("empty TLV")?;
    let (&l0, rest) = rest.split_first().ok_or("no length")?;
    let (len, rest) = match l0 {
        0..=0x7F => (usize::from(l0), rest),
        0x81 => (usize::from(*rest.first().ok_or("short")?), &rest[1..]),
        0x82 => {
            ensure!(rest.len() >= 2, "short length");
            (usize::from(rest[0]) << 8 | usize::from(rest[1]), &rest[2..])
        }
        _ => return Err("bad length".into()),
    };
    ensure!(rest.len() >= len, "truncated TLV");
    Ok(((tag, &rest[..len]), &rest[len..]))
}

/// The certificate inside a 53 { 70 cert 71 00 FE 00 } object.
fn cert_from_object(obj: &[u8]) -> Result<Vec<u8>, Failed> {
    let ((tag, value), rest) = tlv(obj)?;
    ensure!(tag == 0x53 && rest.is_empty(), "not a 53 object");
    let ((tag, cert), rest) = tlv(value)?;
    ensure!(tag == 0x70, "no 70 certificate");
    let ((tag, info), rest) = tlv(rest)?;
    ensure!(tag == 0x71 && info == [0x00], "no 71 00");
    let ((tag, lrc), rest) = tlv(rest)?;
    ensure!(tag == 0xFE && lrc.is_empty() && rest.is_empty(), "no FE 00");
    Ok(cert.to_vec())
}

/// The subject CN, issuer CN and raw subject public key of a certificate.
fn cert_info(der: &[u8]) -> Result<(String, String, Vec<u8>), Failed> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("certificate: {e}"))?;
    ensure!(rest.is_empty(), "trailing bytes after certificate");
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    Ok((
        cn(cert.subject()),
        cn(cert.issuer()),
        cert.public_key().subject_public_key.data.to_vec(),
    ))
}

fn pkcs1_v15_sha256_block(msg: &[u8]) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, msg);
    let t_len = SHA256_DIGEST_INFO.len() + digest.as_ref().len();
    let mut block = vec![0x00, 0x01];
    block.resize(256 - t_len - 1, 0xFF);
    block.push(0x00);
    block.extend_from_slice(&SHA256_DIGEST_INFO);
    block.extend_from_slice(digest.as_ref());
    block
}

// ---------------------------------------------------------------- tests

fn select(h: &Arc<Harness>) -> TestResult {
    let tc = card(h, Algorithm::EccP256, Algorithm::EccP256)?;
    let client = Client::connect(&tc.reader())?;
    let (apt, sw) = client.transmit(&SELECT_PIV)?;
    ensure_eq!(sw, 0x9000);
    ensure!(apt.first() == Some(&0x61), "application property template");
    // A foreign AID is not found.
    let (_, sw) = client.transmit(&[0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0, 0, 0, 0x62])?;
    ensure_eq!(sw, 0x6A82);
    // Unknown instruction.
    let (_, sw) = client.transmit(&[0x00, 0x42, 0x00, 0x00])?;
    ensure_eq!(sw, 0x6D00);
    Ok(())
}

fn read_certificates(h: &Arc<Harness>) -> TestResult {
    let tc = card(h, Algorithm::EccP256, Algorithm::Rsa2048)?;
    let client = Client::connect(&tc.reader())?;
    client.select()?;
    for (object, expected) in [
        ([0x5F, 0xC1, 0x05], &tc.cert_9a),
        ([0x5F, 0xC1, 0x0A], &tc.cert_9c),
    ] {
        let (obj, sw) = client.get_data(object)?;
        ensure_eq!(sw, 0x9000);
        let cert = cert_from_object(&obj)?;
        ensure!(
            &cert == expected,
            "certificate differs from the generated one"
        );
        let (subject, issuer, _) = cert_info(&cert)?;
        ensure_eq!(subject.as_str(), USER);
        ensure_eq!(issuer.as_str(), "ClinAuth Test CA");
        // Chains to the test CA.
        let ca = x509_parser::parse_x509_certificate(tc.ca.cert_der())
            .map_err(|e| e.to_string())?
            .1;
        let parsed = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| e.to_string())?
            .1;
        ensure!(
            parsed.verify_signature(Some(ca.public_key())).is_ok(),
            "certificate not signed by the CA"
        );
    }
    let (chuid, sw) = client.get_data([0x5F, 0xC1, 0x02])?;
    ensure_eq!(sw, 0x9000);
    ensure!(chuid.first() == Some(&0x53), "CHUID object");
    let (_, sw) = client.get_data([0x5F, 0xC1, 0x01])?;
    ensure_eq!(sw, 0x6A82);
    Ok(())
}

fn verify_good_pin(h: &Arc<Harness>) -> TestResult {
    let tc = card(h, Algorithm::EccP256, Algorithm::EccP256)?;
    let client = Client::connect(&tc.reader())?;
    client.select()?;
    ensure_eq!(client.pin_status()?, 0x63C3);
    ensure_eq!(client.verify(PIN)?, 0x9000);
    ensure_eq!(client.pin_status()?, 0x9000);
    Ok(())
}

fn bad_pin_blocks_and_puk_resets(h: &Arc<Harness>) -> TestResult {
    let tc = card(h, Algorithm::EccP256, Algorithm::EccP256)?;
    let client = Client::connect(&tc.reader())?;
    client.select()?;
    ensure_eq!(client.verify("000000")?, 0x63C2);
    ensure_eq!(client.verify("000000")?, 0x63C1);
    ensure_eq!(client.verify("000000")?, 0x63C0);
    // Blocked: even the right PIN is refused.
    ensure_eq!(client.verify(PIN)?, 0x6983);
    ensure_eq!(client.pin_status()?, 0x6983);
    // A wrong PUK counts down.
    let mut data = padded("11111111");
    data.extend(padded("246810"));
    ensure_eq!(client.command(0x2C, 0x00, 0x80, &data)?.1, 0x63C2);
    // The PUK sets a new PIN and unblocks.
    let mut data = padded(PUK);
    data.extend(padded("246810"));
    ensure_eq!(client.command(0x2C, 0x00, 0x80, &data)?.1, 0x9000);
    ensure_eq!(client.pin_status()?, 0x63C3);
    ensure_eq!(client.verify(PIN)?, 0x63C2);
    ensure_eq!(client.verify("246810")?, 0x9000);
    // CHANGE REFERENCE DATA.
    let mut data = padded("246810");
    data.extend(padded("13579135"));
    ensure_eq!(client.command(0x24, 0x00, 0x80, &data)?.1, 0x9000);
    ensure_eq!(client.verify("13579135")?, 0x9000);
    Ok(())
}

fn ecdsa_p256_signature(h: &Arc<Harness>) -> TestResult {
    let tc = card(h, Algorithm::EccP256, Algorithm::EccP256)?;
    let client = Client::connect(&tc.reader())?;
    client.select()?;
    let msg = b"server nonce | workstation ward-3 | purpose login";
    let digest = ring::digest::digest(&ring::digest::SHA256, msg);
    ensure_eq!(client.sign(0x11, 0x9A, digest.as_ref())?.1, 0x6982);
    ensure_eq!(client.verify(PIN)?, 0x9000);
    let (sig, sw) = client.sign(0x11, 0x9A, digest.as_ref())?;
    ensure_eq!(sw, 0x9000);
    let (_, _, public_key) = cert_info(&tc.cert_9a)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, public_key)
        .verify(msg, &sig)
        .map_err(|_| "ECDSA signature does not verify")?;
    // The PIN stays verified for 9A: a second signature works.
    ensure_eq!(client.sign(0x11, 0x9A, digest.as_ref())?.1, 0x9000);
    // The wrong algorithm for the slot.
    ensure_eq!(client.sign(0x07, 0x9A, digest.as_ref())?.1, 0x6A86);
    Ok(())
}

fn rsa_2048_signature(h: &Arc<Harness>) -> TestResult {
    let tc = card(h, Algorithm::Rsa2048, Algorithm::EccP256)?;
    let client = Client::connect(&tc.reader())?;
    client.select()?;
    ensure_eq!(client.verify(PIN)?, 0x9000);
    let msg = b"server nonce | workstation ward-3 | purpose login";
    // 256-byte block: needs command chaining in and GET RESPONSE out.
    let (sig, sw) = client.sign(0x07, 0x9A, &pkcs1_v15_sha256_block(msg))?;
    ensure_eq!(sw, 0x9000);
    ensure_eq!(sig.len(), 256);
    let (_, _, public_key) = cert_info(&tc.cert_9a)?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    )
    .verify(msg, &sig)
    .map_err(|_| "RSA signature does not verify")?;
    // A block of the wrong size.
    ensure_eq!(client.sign(0x07, 0x9A, &[0x01; 32])?.1, 0x6A80);
    Ok(())
}

fn signature_key_needs_pin_each_time(h: &Arc<Harness>) -> TestResult {
    let tc = card(h, Algorithm::EccP256, Algorithm::Rsa2048)?;
    let client = Client::connect(&tc.reader())?;
    client.select()?;
    let msg = b"order 4711 confirmed by dr. alice";
    let block = pkcs1_v15_sha256_block(msg);
    ensure_eq!(client.sign(0x07, 0x9C, &block)?.1, 0x6982);
    ensure_eq!(client.verify(PIN)?, 0x9000);
    let (sig, sw) = client.sign(0x07, 0x9C, &block)?;
    ensure_eq!(sw, 0x9000);
    let (_, _, public_key) = cert_info(&tc.cert_9c)?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    )
    .verify(msg, &sig)
    .map_err(|_| "RSA signature does not verify")?;
    // Once only.
    ensure_eq!(client.sign(0x07, 0x9C, &block)?.1, 0x6982);
    ensure_eq!(client.verify(PIN)?, 0x9000);
    ensure_eq!(client.sign(0x07, 0x9C, &block)?.1, 0x9000);
    Ok(())
}

fn removal_is_detected(h: &Arc<Harness>) -> TestResult {
    let mut tc = card(h, Algorithm::EccP256, Algorithm::EccP256)?;
    let reader = tc.reader();
    {
        let client = Client::connect(&reader)?;
        client.select()?;
        ensure_eq!(client.verify(PIN)?, 0x9000);
    }
    // Watch the reader the way the agent does, from another thread.
    let name = tc.lent.reader.name.clone();
    let watcher = std::thread::spawn(move || -> Result<Duration, String> {
        let ctx = Context::establish(Scope::User).map_err(|e| e.to_string())?;
        let name = CString::new(name).map_err(|e| e.to_string())?;
        let mut states = [ReaderState::new(name, State::UNAWARE)];
        ctx.get_status_change(Duration::from_secs(5), &mut states)
            .map_err(|e| e.to_string())?;
        if !states[0].event_state().contains(State::PRESENT) {
            return Err("card not present at the start".into());
        }
        states[0].sync_current_state();
        let start = Instant::now();
        ctx.get_status_change(Duration::from_secs(10), &mut states)
            .map_err(|e| format!("no change seen: {e}"))?;
        let s = states[0].event_state();
        if s.contains(State::EMPTY) && !s.contains(State::PRESENT) {
            Ok(start.elapsed())
        } else {
            Err(format!("state after removal: {s:?}"))
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    tc.card.remove().map_err(|e| e.to_string())?;
    let seen = watcher.join().map_err(|_| "watcher panicked")??;
    ensure!(seen < Duration::from_secs(5), "removal seen after {seen:?}");
    // Inserted again: a new session, the PIN is no longer verified, the
    // counters are the card's own.
    tc.card.insert().map_err(|e| e.to_string())?;
    wait_for(&tc.lent.reader.name, true, Duration::from_secs(10))?;
    let client = Client::connect(&reader)?;
    client.select()?;
    ensure_eq!(client.pin_status()?, 0x63C3);
    Ok(())
}

fn reset_ends_session(h: &Arc<Harness>) -> TestResult {
    let tc = card(h, Algorithm::EccP256, Algorithm::EccP256)?;
    let client = Client::connect(&tc.reader())?;
    client.select()?;
    ensure_eq!(client.verify(PIN)?, 0x9000);
    let Client { _ctx, mut card } = client;
    card.reconnect(ShareMode::Shared, Protocols::ANY, Disposition::ResetCard)
        .map_err(|e| format!("SCardReconnect: {e}"))?;
    let client = Client { _ctx, card };
    client.select()?;
    ensure_eq!(client.pin_status()?, 0x63C3);
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let skip = std::env::var_os("CLINAUTH_SKIP_PCSCD").is_some_and(|v| v == "1");

    let tests: [(&str, TestFn); 9] = [
        ("select", select),
        ("read_certificates", read_certificates),
        ("verify_good_pin", verify_good_pin),
        (
            "bad_pin_blocks_and_puk_resets",
            bad_pin_blocks_and_puk_resets,
        ),
        ("ecdsa_p256_signature", ecdsa_p256_signature),
        ("rsa_2048_signature", rsa_2048_signature),
        (
            "signature_key_needs_pin_each_time",
            signature_key_needs_pin_each_time,
        ),
        ("removal_is_detected", removal_is_detected),
        ("reset_ends_session", reset_ends_session),
    ];

    let listing = args.list;
    let mut pcscd = None;
    let mut keepalive = None;
    let harness = Arc::new(Harness {
        readers: Mutex::new(Vec::new()),
        freed: Condvar::new(),
    });
    if !skip && !listing {
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
        if let Ok(mut free) = harness.readers.lock() {
            free.extend(started.readers().iter().cloned());
        }
        // pcscd lists the readers once their drivers are up.
        let deadline = Instant::now() + Duration::from_secs(10);
        let names: Vec<String> = started.readers().iter().map(|r| r.name.clone()).collect();
        loop {
            let listed = Context::establish(Scope::User)
                .and_then(|c| c.list_readers_owned())
                .unwrap_or_default();
            let listed: Vec<String> = listed
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
                drop(started);
                std::process::exit(101);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Held for the whole run: should this process be killed, pcscd
        // (started with --auto-exit) quits a minute after it.
        keepalive = Context::establish(Scope::User).ok();
        pcscd = Some(started);
    }

    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let h = Arc::clone(&harness);
            Trial::test(name, move || f(&h)).with_ignored_flag(skip)
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
