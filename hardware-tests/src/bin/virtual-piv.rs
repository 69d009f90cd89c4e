//! Runs the virtual PIV card by hand against a vpcd reader.
//!
//! ```text
//! virtual-piv [--host 127.0.0.1] [--port 35963] [--pin 123456] [--puk 12345678]
//!             [--user alice] [--key-dir DIR]
//! ```
//!
//! With `--key-dir`, the slot keys and certificates are read from
//! `DIR/9a.key`, `DIR/9a.crt`, `DIR/9c.key`, `DIR/9c.crt` (PKCS#8 keys and
//! X.509 certificates, PEM or DER). Missing ones are generated (9A: ECDSA
//! P-256, 9C: RSA-2048, issued by a fresh test CA whose certificate goes to
//! `DIR/ca.crt`) and written there. Without `--key-dir` everything is
//! generated and kept in memory. The card reconnects when the reader goes
//! away (pcscd restarted); stop it with Ctrl-C.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clinauth_hardware_tests::piv::keys::{Algorithm, SlotCredential};
use clinauth_hardware_tests::testpki::TestCa;
use clinauth_hardware_tests::vpcd::DEFAULT_PORT;
use clinauth_hardware_tests::{CardConfig, PivApplet, SlotId, VirtualCard};

struct Args {
    host: String,
    port: u16,
    pin: String,
    puk: String,
    user: String,
    key_dir: Option<PathBuf>,
}

const USAGE: &str =
    "usage: virtual-piv [--host H] [--port P] [--pin PIN] [--puk PUK] [--user CN] [--key-dir DIR]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        host: "127.0.0.1".into(),
        port: DEFAULT_PORT,
        pin: "123456".into(),
        puk: "12345678".into(),
        user: "alice".into(),
        key_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--host" => args.host = value,
            "--port" => args.port = value.parse().map_err(|_| format!("bad port {value}"))?,
            "--pin" => args.pin = value,
            "--puk" => args.puk = value,
            "--user" => args.user = value,
            "--key-dir" => args.key_dir = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(contents)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn slot_credential(
    dir: Option<&Path>,
    name: &str,
    alg: Algorithm,
    signature: bool,
    user: &str,
    ca: &mut Option<TestCa>,
) -> Result<SlotCredential, String> {
    if let Some(dir) = dir {
        let (key, crt) = (
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}.crt")),
        );
        if key.exists() && crt.exists() {
            eprintln!("slot {name}: {} and {}", key.display(), crt.display());
            return SlotCredential::load(&key, &crt).map_err(|e| e.to_string());
        }
    }
    if ca.is_none() {
        let new_ca = TestCa::generate("ClinAuth Test CA").map_err(|e| e.to_string())?;
        if let Some(dir) = dir {
            let path = dir.join("ca.crt");
            if !path.exists() {
                write_file(&path, new_ca.cert_pem().as_bytes(), false)?;
            }
        }
        *ca = Some(new_ca);
    }
    let ca = ca.as_ref().ok_or("no CA")?;
    let cred = ca
        .generate_credential(user, alg, signature)
        .map_err(|e| e.to_string())?;
    eprintln!("slot {name}: generated {alg:?} key, certificate CN={user}");
    if let Some(dir) = dir {
        let pem = cred.key.to_pkcs8_pem().map_err(|e| e.to_string())?;
        write_file(&dir.join(format!("{name}.key")), pem.as_bytes(), true)?;
        let crt = clinauth_hardware_tests::piv::keys::pem_encode("CERTIFICATE", &cred.cert_der);
        write_file(&dir.join(format!("{name}.crt")), crt.as_bytes(), false)?;
    }
    Ok(cred)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    if let Some(dir) = &args.key_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let dir = args.key_dir.as_deref();
    let mut ca = None;
    let a = slot_credential(dir, "9a", Algorithm::EccP256, false, &args.user, &mut ca)?;
    let c = slot_credential(dir, "9c", Algorithm::Rsa2048, true, &args.user, &mut ca)?;
    let config = CardConfig::new(&args.pin, &args.puk)
        .and_then(|cfg| cfg.with_slot(SlotId::Authentication, a))
        .and_then(|cfg| cfg.with_slot(SlotId::Signature, c))
        .map_err(|e| e.to_string())?;
    let addr: SocketAddr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", args.host))?
        .next()
        .ok_or_else(|| format!("{}: no address", args.host))?;
    let mut card = VirtualCard::new(PivApplet::new(config), addr);
    loop {
        match card.insert() {
            Ok(()) => eprintln!("card inserted into the vpcd reader at {addr}"),
            Err(e) => eprintln!("cannot reach the vpcd reader at {addr}: {e}; retrying"),
        }
        while card.is_inserted() {
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Err(e) = card.remove() {
            eprintln!("connection ended: {e}");
        } else {
            eprintln!("the reader closed the connection");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
