//! `clinauth-virtual-devices`: the demo's hardware. Starts a private pcscd
//! with two vpcd readers, makes a card CA and a clinician's PIV card (slot
//! 9A key and certificate), and a contactless badge, then takes commands
//! on stdin, one a line:
//!
//! - `card in` / `card out`: the card enters or leaves the first reader;
//! - `badge in` / `badge out`: the badge on the second reader;
//! - `finger on` / `finger off`: the clinician's finger on the fingerprint
//!   reader; `other finger`: someone else's;
//! - `quit` (or end of input): stop pcscd and exit.
//!
//! The fingerprint reader seals each capture to the server's matcher key
//! (HPKE) and signs it, as a real sealing reader does; it is served on
//! `bioreader.sock` with the agent's reader protocol.
//!
//! Files in `--dir`: `card-ca.pem` (the trust anchor for the server),
//! `card.pem` (the card's certificate, to enroll), `reader.id` and
//! `reader.pub` (the fingerprint reader's ID and Ed25519 key, hex, to
//! register), `finger.template` (the clinician's enrolled template, as an
//! enrollment station would produce it), `pcscd.socket` (the path to give
//! the agent as `PCSCLITE_CSOCK_NAME`), and `state` (the last command done,
//! for scripts to wait on).
//!
//! For demos and tests only: vpcd listens on TCP, never install it on a
//! real workstation.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clinauth_biometric::SyntheticFinger;
use clinauth_hardware_tests::bio_reader::{BioReader, Protection, ReaderService};
use clinauth_hardware_tests::pcscd::{Pcscd, PcscdOptions};
use clinauth_hardware_tests::piv::keys::{Algorithm, SlotKey};
use clinauth_hardware_tests::testpki::TestCa;
use clinauth_hardware_tests::{CardConfig, PivApplet, SlotId, VirtualBadge, VirtualCard};

/// The clinician's finger (a seeded synthetic finger).
const FINGER_SEED: u64 = 42;

struct Args {
    dir: PathBuf,
    user: String,
    pin: String,
    badge: Vec<u8>,
}

fn usage() -> String {
    "usage: clinauth-virtual-devices --dir DIR --user USER --pin PIN --badge HEX".into()
}

fn parse_args() -> Result<Args, String> {
    let mut dir = None;
    let mut user = None;
    let mut pin = None;
    let mut badge = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(usage)?;
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(value)),
            "--user" => user = Some(value),
            "--pin" => pin = Some(value),
            "--badge" => badge = Some(value),
            _ => return Err(usage()),
        }
    }
    let badge = badge.ok_or_else(usage)?;
    let bytes: Result<Vec<u8>, _> = (0..badge.len())
        .step_by(2)
        .map(|i| {
            badge
                .get(i..i + 2)
                .ok_or(())
                .and_then(|h| u8::from_str_radix(h, 16).map_err(|_| ()))
        })
        .collect();
    Ok(Args {
        dir: dir.ok_or_else(usage)?,
        user: user.ok_or_else(usage)?,
        pin: pin.ok_or_else(usage)?,
        badge: bytes.map_err(|()| "--badge: hex digits".to_owned())?,
    })
}

fn run(args: Args) -> Result<(), String> {
    let e = |what: &'static str| move |err: String| format!("{what}: {err}");
    std::fs::create_dir_all(&args.dir).map_err(|x| e("dir")(x.to_string()))?;
    let pcscd = Pcscd::start(&PcscdOptions {
        debug: false,
        auto_exit: false,
    })
    .map_err(|x| e("pcscd")(x.to_string()))?;
    let (card_port, badge_port) = match pcscd.readers() {
        [a, b, ..] => (a.port, b.port),
        _ => return Err("pcscd has fewer than two vpcd readers".into()),
    };
    let ca = TestCa::generate("ClinAuth Demo Card CA").map_err(|x| e("CA")(x.to_string()))?;
    let key = SlotKey::generate(Algorithm::EccP256).map_err(|x| e("key")(x.to_string()))?;
    let cred = ca
        .credential(&args.user, key, false)
        .map_err(|x| e("certificate")(x.to_string()))?;
    let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", cred.cert_der.clone()));
    let config = CardConfig::new(&args.pin, "87654321")
        .and_then(|c| c.with_slot(SlotId::Authentication, cred))
        .map_err(|x| e("card")(x.to_string()))?;
    let mut card = VirtualCard::new(
        PivApplet::new(config),
        SocketAddr::from(([127, 0, 0, 1], card_port)),
    );
    let badge = VirtualBadge::new(&args.badge).map_err(|_| "--badge: 4, 7 or 10 bytes")?;
    let mut badge = VirtualCard::new(badge, SocketAddr::from(([127, 0, 0, 1], badge_port)));
    let write = |name: &str, text: &str| {
        std::fs::write(args.dir.join(name), text).map_err(|x| format!("{name}: {x}"))
    };
    // The fingerprint reader: its own signing key, the clinician's finger.
    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| "no randomness for the reader key")?;
    let reader = BioReader::new("demo-bio-1", &seed, Protection::SealedTemplate)
        .map_err(|x| e("reader")(x.to_string()))?;
    let service = ReaderService::unix(reader, &args.dir.join("bioreader.sock"))
        .map_err(|x| e("reader socket")(x.to_string()))?;
    let finger = SyntheticFinger::new(FINGER_SEED);
    let enrolled = finger.capture(1000);
    std::fs::write(
        args.dir.join("finger.template"),
        enrolled.encode().as_slice(),
    )
    .map_err(|x| e("finger.template")(x.to_string()))?;
    write("reader.id", "demo-bio-1")?;
    write(
        "reader.pub",
        &service
            .public_key()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )?;
    write("card-ca.pem", ca.cert_pem())?;
    write("card.pem", &cert_pem)?;
    write("pcscd.socket", &pcscd.socket_path().to_string_lossy())?;
    write("state", "ready\n")?;
    println!("ready: pcscd {}", pcscd.socket_path().display());
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(|x| e("stdin")(x.to_string()))?;
        let done = match line.trim() {
            "card in" => card.insert().map_err(|x| x.to_string()),
            "card out" => card.remove().map_err(|x| x.to_string()),
            "badge in" => badge.insert().map_err(|x| x.to_string()),
            "badge out" => badge.remove().map_err(|x| x.to_string()),
            "finger on" => {
                service.place_finger(SyntheticFinger::new(FINGER_SEED));
                Ok(())
            }
            "other finger" => {
                service.place_finger(SyntheticFinger::new(FINGER_SEED + 1));
                Ok(())
            }
            "finger off" => {
                service.lift_finger();
                Ok(())
            }
            "quit" => break,
            "" => continue,
            other => Err(format!("unknown command {other:?}")),
        };
        match done {
            Ok(()) => {
                println!("ok: {}", line.trim());
                write("state", &format!("{}\n", line.trim()))?;
            }
            Err(err) => println!("failed: {}: {err}", line.trim()),
        }
        let _ = std::io::stdout().flush();
    }
    drop(service);
    drop(card);
    drop(badge);
    drop(pcscd);
    Ok(())
}

fn main() -> ExitCode {
    match parse_args().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("clinauth-virtual-devices: {err}");
            ExitCode::FAILURE
        }
    }
}
