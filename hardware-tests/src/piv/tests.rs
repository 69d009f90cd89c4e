//! Unit tests of the applet without pcscd.

use std::sync::OnceLock;

use super::keys::{Algorithm, SlotKey};
use super::*;
use crate::testpki::TestCa;

const PIN: &str = "123456";
const PUK: &str = "12345678";

fn rsa_key_der() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        let t = std::time::Instant::now();
        let k = SlotKey::generate(Algorithm::Rsa2048).unwrap();
        eprintln!("RSA-2048 generation took {:?}", t.elapsed());
        k.to_pkcs8_der().unwrap().to_vec()
    })
}

fn applet() -> PivApplet {
    let ca = TestCa::generate("Test CA").unwrap();
    let a = ca
        .generate_credential("alice", Algorithm::EccP256, false)
        .unwrap();
    let c = ca
        .credential(
            "alice",
            SlotKey::from_pkcs8_der(rsa_key_der()).unwrap(),
            true,
        )
        .unwrap();
    let config = CardConfig::new(PIN, PUK)
        .unwrap()
        .with_slot(SlotId::Authentication, a)
        .unwrap()
        .with_slot(SlotId::Signature, c)
        .unwrap();
    let mut applet = PivApplet::new(config);
    applet.reset_session();
    applet
}

fn sw_of(resp: &[u8]) -> u16 {
    let n = resp.len();
    u16::from_be_bytes([resp[n - 2], resp[n - 1]])
}

fn padded(pin: &str) -> Vec<u8> {
    let mut v = pin.as_bytes().to_vec();
    v.resize(8, 0xFF);
    v
}

fn apdu(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![cla, ins, p1, p2];
    if !data.is_empty() {
        v.push(data.len() as u8);
        v.extend_from_slice(data);
    }
    v
}

const SELECT: [u8; 10] = [0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08];

#[test]
fn select_and_status() {
    let mut a = applet();
    // Nothing works before SELECT.
    assert_eq!(sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &[]))), 0x6D00);
    let r = a.process(&SELECT);
    assert_eq!(sw_of(&r), 0x9000);
    assert_eq!(r[0], 0x61);
    assert_eq!(sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &[]))), 0x63C3);
    // Wrong AID.
    assert_eq!(
        sw_of(&a.process(&apdu(0, 0xA4, 4, 0, &[0xA0, 0, 0, 0, 0x99]))),
        0x6A82
    );
}

#[test]
fn pin_counter_and_puk_reset() {
    let mut a = applet();
    a.process(&SELECT);
    let bad = padded("000000");
    assert_eq!(sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &bad))), 0x63C2);
    assert_eq!(sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &bad))), 0x63C1);
    // A good PIN resets the counter.
    assert_eq!(
        sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &padded(PIN)))),
        0x9000
    );
    assert_eq!(a.pin_tries_left(), 3);
    for expected in [0x63C2, 0x63C1, 0x63C0] {
        assert_eq!(sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &bad))), expected);
    }
    assert_eq!(
        sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &padded(PIN)))),
        0x6983
    );
    assert_eq!(sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &[]))), 0x6983);
    // Wrong PUK counts down too.
    let mut data = padded("87654321");
    data.extend(padded("654321"));
    assert_eq!(sw_of(&a.process(&apdu(0, 0x2C, 0, 0x80, &data))), 0x63C2);
    let mut data = padded(PUK);
    data.extend(padded("654321"));
    assert_eq!(sw_of(&a.process(&apdu(0, 0x2C, 0, 0x80, &data))), 0x9000);
    assert_eq!(a.puk_tries_left(), 3);
    assert_eq!(
        sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &padded("654321")))),
        0x9000
    );
    // CHANGE REFERENCE DATA.
    let mut data = padded("654321");
    data.extend(padded("11223344"));
    assert_eq!(sw_of(&a.process(&apdu(0, 0x24, 0, 0x80, &data))), 0x9000);
    assert_eq!(
        sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &padded("11223344")))),
        0x9000
    );
    // A new PIN must be 6-8 digits.
    let mut data = padded("11223344");
    data.extend(padded("12a456"));
    assert_eq!(sw_of(&a.process(&apdu(0, 0x24, 0, 0x80, &data))), 0x6A80);
}

#[test]
fn session_ends_on_reset() {
    let mut a = applet();
    a.process(&SELECT);
    assert_eq!(
        sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &padded(PIN)))),
        0x9000
    );
    assert_eq!(sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &[]))), 0x9000);
    a.reset_session();
    a.process(&SELECT);
    assert_eq!(sw_of(&a.process(&apdu(0, 0x20, 0, 0x80, &[]))), 0x63C3);
}

fn ga_template(challenge: &[u8]) -> Vec<u8> {
    let mut inner = vec![0x82, 0x00];
    tlv::write(&mut inner, 0x81, challenge).unwrap();
    tlv::encode(0x7C, &inner).unwrap()
}

/// Sends `data` with command chaining and collects GET RESPONSE chunks.
fn transmit_long(a: &mut PivApplet, ins: u8, p1: u8, p2: u8, data: &[u8]) -> (Vec<u8>, u16) {
    let chunks: Vec<&[u8]> = data.chunks(255).collect();
    let mut resp = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let cla = if i + 1 < chunks.len() { 0x10 } else { 0x00 };
        resp = a.process(&apdu(cla, ins, p1, p2, chunk));
        if cla == 0x10 {
            assert_eq!(sw_of(&resp), 0x9000);
        }
    }
    let mut out = Vec::new();
    loop {
        let status = sw_of(&resp);
        out.extend_from_slice(&resp[..resp.len() - 2]);
        if status >> 8 != 0x61 {
            return (out, status);
        }
        resp = a.process(&[0x00, 0xC0, 0x00, 0x00, status as u8]);
    }
}

#[test]
fn ecdsa_9a_needs_pin_once() {
    let mut a = applet();
    a.process(&SELECT);
    let digest = [0x5Au8; 32];
    let t = ga_template(&digest);
    assert_eq!(transmit_long(&mut a, 0x87, 0x11, 0x9A, &t).1, 0x6982);
    a.process(&apdu(0, 0x20, 0, 0x80, &padded(PIN)));
    let (r1, s1) = transmit_long(&mut a, 0x87, 0x11, 0x9A, &t);
    assert_eq!(s1, 0x9000);
    assert_eq!(r1[0], 0x7C);
    let (_, s2) = transmit_long(&mut a, 0x87, 0x11, 0x9A, &t);
    assert_eq!(s2, 0x9000);
    // Wrong algorithm for the slot.
    assert_eq!(transmit_long(&mut a, 0x87, 0x07, 0x9A, &t).1, 0x6A86);
}

#[test]
fn rsa_9c_needs_pin_every_time() {
    let mut a = applet();
    a.process(&SELECT);
    let mut block = vec![0x00, 0x01];
    block.resize(256 - 20, 0xFF);
    block.push(0x00);
    block.resize(256, 0x42);
    let t = ga_template(&block);
    assert_eq!(transmit_long(&mut a, 0x87, 0x07, 0x9C, &t).1, 0x6982);
    a.process(&apdu(0, 0x20, 0, 0x80, &padded(PIN)));
    let (r, s) = transmit_long(&mut a, 0x87, 0x07, 0x9C, &t);
    assert_eq!(s, 0x9000);
    // 7C 82 01 04 82 82 01 00 + 256 bytes.
    assert_eq!(r.len(), 264);
    assert_eq!(transmit_long(&mut a, 0x87, 0x07, 0x9C, &t).1, 0x6982);
    // Another command between VERIFY and the signature spends the PIN.
    a.process(&apdu(0, 0x20, 0, 0x80, &padded(PIN)));
    a.process(&apdu(0, 0xCB, 0x3F, 0xFF, &[0x5C, 0x03, 0x5F, 0xC1, 0x02]));
    assert_eq!(transmit_long(&mut a, 0x87, 0x07, 0x9C, &t).1, 0x6982);
    // A block not smaller than the modulus is refused.
    a.process(&apdu(0, 0x20, 0, 0x80, &padded(PIN)));
    let t = ga_template(&[0xFF; 256]);
    assert_eq!(transmit_long(&mut a, 0x87, 0x07, 0x9C, &t).1, 0x6A80);
}

#[test]
fn certificates_and_chuid() {
    let mut a = applet();
    a.process(&SELECT);
    for obj in [[0x5F, 0xC1, 0x05], [0x5F, 0xC1, 0x0A], [0x5F, 0xC1, 0x02]] {
        let mut d = vec![0x5C, 0x03];
        d.extend_from_slice(&obj);
        let (r, s) = transmit_long(&mut a, 0xCB, 0x3F, 0xFF, &d);
        assert_eq!(s, 0x9000);
        let (outer, rest) = tlv::parse_one(&r).unwrap();
        assert!(rest.is_empty());
        assert_eq!(outer.tag, 0x53);
        let inner = tlv::parse_all(outer.value).unwrap();
        if obj[2] != 0x02 {
            let cert = tlv::find(&inner, 0x70).unwrap();
            assert!(cert.len() > 256, "a certificate needs GET RESPONSE");
            assert_eq!(tlv::find(&inner, 0x71), Some(&[0u8][..]));
        } else {
            assert_eq!(tlv::find(&inner, 0x34).map(<[u8]>::len), Some(16));
        }
    }
    // Absent object.
    let (_, s) = transmit_long(&mut a, 0xCB, 0x3F, 0xFF, &[0x5C, 0x03, 0x5F, 0xC1, 0x01]);
    assert_eq!(s, 0x6A82);
}

/// Broken inputs produce error status words, never a panic.
#[test]
fn malformed_apdus() {
    let cases: &[(&[u8], u16)] = &[
        (&[], 0x6700),
        (&[0x00], 0x6700),
        (&[0x00, 0xA4, 0x04], 0x6700),
        (&[0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0], 0x6700),
        (&[0x00, 0xA4, 0x04, 0x00, 0x00, 0x05], 0x6700),
        (&[0x80, 0xA4, 0x04, 0x00], 0x6E00),
        (&[0x0C, 0xA4, 0x04, 0x00], 0x6E00),
        (&[0x00, 0xA4, 0x01, 0x00, 0x01, 0xA0], 0x6A86),
        (&[0x00, 0xA4, 0x04, 0x00, 0x02, 0xA0, 0x00], 0x6A82),
        (&[0x00, 0x12, 0x00, 0x00], 0x6D00),
        (&[0x00, 0xFF, 0x00, 0x00, 0x00], 0x6D00),
        (&[0x00, 0xC0, 0x00, 0x00, 0x00], 0x6985),
        (&[0x00, 0xCB, 0x3F, 0xFF, 0x02, 0x5C, 0x05], 0x6A80),
        (&[0x00, 0xCB, 0x3F, 0xFF, 0x02, 0x5C, 0x00], 0x6A80),
        (&[0x00, 0xCB, 0x3F, 0xFF, 0x03, 0x5C, 0x81, 0x01], 0x6A80),
        (
            &[0x00, 0xCB, 0x3F, 0xFF, 0x04, 0x5C, 0x80, 0x00, 0x00],
            0x6A80,
        ),
        (
            &[0x00, 0xCB, 0x3F, 0xFF, 0x06, 0x5C, 0x04, 1, 2, 3, 4],
            0x6A80,
        ),
        (
            &[0x00, 0xCB, 0x00, 0x00, 0x05, 0x5C, 0x03, 0x5F, 0xC1, 0x05],
            0x6A86,
        ),
        (&[0x00, 0x20, 0x00, 0x80, 0x03, 0x31, 0x32, 0x33], 0x6A80),
        (
            &[0x00, 0x20, 0x00, 0x81, 0x08, 1, 2, 3, 4, 5, 6, 7, 8],
            0x6A88,
        ),
        (&[0x00, 0x20, 0x01, 0x80], 0x6A86),
        (
            &[0x00, 0x24, 0x00, 0x80, 0x08, 1, 2, 3, 4, 5, 6, 7, 8],
            0x6A80,
        ),
        (&[0x00, 0x2C, 0x00, 0x80, 0x02, 1, 2], 0x6A80),
        (&[0x00, 0x2C, 0x00, 0x81, 0x02, 1, 2], 0x6A88),
        (&[0x00, 0x87, 0x11, 0x9A, 0x02, 0x7C, 0x05], 0x6A80),
        (&[0x00, 0x87, 0x11, 0x9A, 0x02, 0x7C, 0x00], 0x6A80),
        (
            &[0x00, 0x87, 0x11, 0x9A, 0x04, 0x7C, 0x02, 0x82, 0x00],
            0x6A80,
        ),
        (
            &[0x00, 0x87, 0x11, 0x9A, 0x05, 0x7C, 0x03, 0x81, 0x01, 0xAA],
            0x6A80,
        ),
        (&[0x00, 0x87, 0x11, 0x9B, 0x02, 0x7C, 0x00], 0x6A86),
        (&[0x00, 0x87, 0x14, 0x9A, 0x02, 0x7C, 0x00], 0x6A86),
        (&[0x00, 0x87, 0x11, 0x9A, 0x03, 0x7C, 0x84, 0x01], 0x6A80),
        (&[0x00, 0x87, 0x11, 0x9A], 0x6A80),
    ];
    let mut a = applet();
    a.process(&SELECT);
    // PIN verified, so GENERAL AUTHENTICATE fails on its template, not on
    // the security status.
    for (raw, expected) in cases {
        a.process(&apdu(0, 0x20, 0, 0x80, &padded(PIN)));
        a.process(&SELECT);
        let r = a.process(raw);
        assert_eq!(r.len(), 2, "{raw:02X?}");
        assert_eq!(sw_of(&r), *expected, "{raw:02X?} -> {r:02X?}");
    }
    // A chain that grows past the limit.
    let chunk = [0u8; 255];
    let mut last = 0;
    for _ in 0..(MAX_CHAINED_DATA / 255 + 2) {
        last = sw_of(&a.process(&apdu(0x10, 0x87, 0x11, 0x9A, &chunk)));
        if last != 0x9000 {
            break;
        }
    }
    assert_eq!(last, 0x6700);
    // A chain interrupted by another chained command.
    assert_eq!(
        sw_of(&a.process(&apdu(0x10, 0x87, 0x11, 0x9A, &[1]))),
        0x9000
    );
    assert_eq!(
        sw_of(&a.process(&apdu(0x10, 0xCB, 0x3F, 0xFF, &[1]))),
        0x6883
    );
}

/// Random bytes never panic and always answer with a status word.
#[test]
fn fuzz_does_not_panic() {
    let mut a = applet();
    let rng = ring::rand::SystemRandom::new();
    let mut buf = [0u8; 300];
    for i in 0..3000 {
        ring::rand::SecureRandom::fill(&rng, &mut buf).unwrap();
        let len = usize::from(buf[0]) + usize::from(buf[1] & 1) * 40;
        let mut raw = buf[2..2 + len.min(298)].to_vec();
        if i % 3 == 0 && raw.len() >= 4 {
            // Bias towards known instructions with CLA 00/10.
            raw[0] &= 0x10;
            raw[1] = [0xA4, 0xCB, 0x20, 0x24, 0x2C, 0x87, 0xC0][usize::from(raw[1]) % 7];
        }
        if i % 50 == 0 {
            a.process(&SELECT);
        }
        let r = a.process(&raw);
        assert!(r.len() >= 2);
    }
}

#[test]
fn atr_has_valid_checksum() {
    let atr = atr();
    assert_eq!(atr[0], 0x3B);
    assert_eq!(atr.iter().skip(1).fold(0, |acc, b| acc ^ b), 0);
    assert_eq!(usize::from(atr[1] & 0x0F), 8);
}

#[test]
fn config_rejects_bad_pins() {
    assert!(CardConfig::new("12345", PUK).is_err());
    assert!(CardConfig::new("123456789", PUK).is_err());
    assert!(CardConfig::new("12345a", PUK).is_err());
    assert!(CardConfig::new(PIN, "123").is_err());
    assert!(CardConfig::new(PIN, PUK)
        .unwrap()
        .with_retry_limits(0, 3)
        .is_err());
}
