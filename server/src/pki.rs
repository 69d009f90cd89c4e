//! A small local PKI for the workstation API's mutual TLS (R-TLS-1/2):
//! `clinauthctl pki init | issue-workstation | revoke`.
//!
//! It is meant for a first installation, a pilot ward, and the tests. A real
//! site points `[tls]` of the server configuration at its own CA instead (the
//! hospital's private CA or HSM-backed PKI): `workstation_ca` is that CA's
//! certificate, `crl` its CRL, and `cert`/`key` a server certificate it
//! issued. Nothing in the server depends on this module.
//!
//! Layout of the directory (`--dir`), created mode 0700:
//!
//! | file | what | mode |
//! |------|------|------|
//! | `ca.pem` | the local CA: ECDSA P-256, 10 years, CA:TRUE pathlen 0, "ClinAuth Local CA <site>" | 0644 |
//! | `ca-key.pem` | its private key (PKCS#8) | 0600 |
//! | `server.pem` | the server certificate: serverAuth, SANs from `--server-name`, 2 years | 0644 |
//! | `server-key.pem` | its private key | 0600 |
//! | `crl.pem` | the CA's CRL, signed by it; starts empty | 0644 |
//! | `issued.tsv` | one line per issued workstation certificate: serial, name, SHA-256, not-after | 0644 |
//! | `workstations/<name>.pem`, `<name>-key.pem` | issued workstation certificates (default `--out`) | 0644 / 0600 |
//!
//! The CA key is kept in clear on disk, readable only by its owner: keep the
//! directory on the server host's root-only storage (or offline), never on a
//! workstation. Files are never overwritten unless `force` is given; a file
//! is written to a temporary name first and then linked into place, so a
//! crash leaves no half-written key.
//!
//! Validity starts from the `now` every function takes; the CLI reads the
//! clock at its edge. Workstation and server certificates start 5 minutes
//! before `now` to tolerate clock skew between hosts.

use crate::tls::{self, TlsError};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use zeroize::Zeroizing;

/// The CA certificate's file name.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name.
pub const CA_KEY: &str = "ca-key.pem";
/// The server certificate's file name.
pub const SERVER_CERT: &str = "server.pem";
/// The server key's file name.
pub const SERVER_KEY: &str = "server-key.pem";
/// The CRL's file name.
pub const CRL: &str = "crl.pem";
/// The issuance index's file name.
pub const INDEX: &str = "issued.tsv";
/// The default folder for issued workstation certificates.
pub const WORKSTATIONS: &str = "workstations";

/// Validity of the CA: 10 years.
pub const CA_DAYS: u64 = 3653;
/// Validity of the server certificate: 2 years.
pub const SERVER_DAYS: u64 = 731;
/// Validity of a workstation certificate: 1 year.
pub const WORKSTATION_DAYS: u64 = 365;
/// How long a CRL is declared valid. The server does not refuse an old CRL
/// (it uses the newest it was given), but other tools do: `pki revoke` with
/// no serial re-signs it.
pub const CRL_DAYS: u64 = 365;
/// Leaf certificates start this long before `now` (clock skew).
pub const BACKDATE_SECS: u64 = 300;

const DAY: u64 = 86_400;

/// An instant `secs` after the epoch, as rcgen wants it.
macro_rules! at {
    ($secs:expr) => {
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs($secs)
    };
}

/// Why a PKI command failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Files that would be overwritten (give `--force` to replace them).
    #[error("refusing to overwrite {}: give --force to replace", .paths.join(", "))]
    Exists {
        /// The files that exist.
        paths: Vec<String>,
    },
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A PEM file could not be loaded.
    #[error(transparent)]
    Load(#[from] TlsError),
    /// The CA directory is not usable (missing or inconsistent files).
    #[error("{0}")]
    Ca(String),
    /// An argument is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A serial number or name to revoke was never issued by this CA.
    #[error("{0} was not issued by this CA (see issued.tsv)")]
    Unknown(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// `now` is before 1970.
    #[error("the clock is before 1970")]
    Clock,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn now_secs(now_ms: i64) -> Result<u64, PkiError> {
    if now_ms < 0 {
        return Err(PkiError::Clock);
    }
    u64::try_from(now_ms / 1000).map_err(|_| PkiError::Clock)
}

/// What `init` is asked to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// The site, for the CA's name "ClinAuth Local CA <site>".
    pub site: String,
    /// The server certificate's names: DNS names or IP addresses. Empty
    /// means `localhost` and `127.0.0.1`.
    pub server_names: Vec<String>,
    /// Replace existing files.
    pub force: bool,
}

/// What `init` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// The files written.
    pub files: Vec<PathBuf>,
    /// The CA's subject common name.
    pub ca_name: String,
    /// SHA-256 of the CA certificate (hex).
    pub ca_sha256: String,
    /// The server certificate's names.
    pub server_names: Vec<String>,
    /// The CA's not-after, seconds since the epoch.
    pub ca_not_after: u64,
}

/// A workstation certificate that was issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The workstation's name (the certificate's CN).
    pub name: String,
    /// The serial number (lowercase hex), for `pki revoke --serial`.
    pub serial: String,
    /// SHA-256 of the certificate (lowercase hex), for `workstation add --fingerprint`.
    pub sha256: String,
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file (mode 0600).
    pub key: PathBuf,
    /// Not-after, seconds since the epoch.
    pub not_after: u64,
}

/// What to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// One certificate by serial number (hex, colons allowed).
    Serial(String),
    /// Every certificate issued to a workstation name.
    Name(String),
}

/// What `revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeReport {
    /// Newly revoked: (serial, workstation name).
    pub revoked: Vec<(String, String)>,
    /// Already on the CRL: (serial, workstation name).
    pub already: Vec<(String, String)>,
    /// Serial numbers on the CRL now.
    pub total: usize,
    /// The CRL's number.
    pub crl_number: u64,
    /// The CRL file.
    pub crl: PathBuf,
}

/// One line of `issued.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Workstation name.
    pub name: String,
    /// SHA-256 of the certificate.
    pub sha256: String,
    /// Not-after, seconds since the epoch.
    pub not_after: u64,
}

/// Checks a workstation name: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with
/// a letter or digit (it becomes a file name and the certificate's CN).
pub fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(PkiError::Invalid(format!(
            "invalid workstation name {name:?}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

/// Normalizes a serial number: lowercase hex without colons or leading zero
/// bytes.
pub fn normalize_serial(serial: &str) -> Result<String, PkiError> {
    let hex: String = serial
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.is_empty() || hex.len() > 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PkiError::Invalid(format!(
            "invalid serial number {serial:?}: give it in hex as `pki issue-workstation` printed it"
        )));
    }
    let hex = if !hex.len().is_multiple_of(2) {
        format!("0{hex}")
    } else {
        hex
    };
    let mut rest = hex.as_str();
    while rest.len() > 2 && rest.starts_with("00") {
        rest = &rest[2..];
    }
    Ok(rest.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn random_serial() -> Result<Vec<u8>, PkiError> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Ca("the system random number generator failed".to_owned()))?;
    // Positive, and exactly 16 bytes long (no leading zero to normalize).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(bytes)
}

/// Creates the folder (mode 0700) if it does not exist.
fn make_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Writes `contents` to `path` with `mode`: to a temporary file first, then
/// linked into place (no overwrite) or renamed over it (`force`).
fn write_file(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // The umask may have removed bits; set exactly `mode`.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_err(&tmp))?;
        file.write_all(contents).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        if force {
            std::fs::rename(&tmp, path).map_err(io_err(path))
        } else {
            match std::fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(PkiError::Exists {
                    paths: vec![path.display().to_string()],
                }),
                Err(e) => Err(PkiError::Io {
                    path: path.display().to_string(),
                    source: e,
                }),
            }
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn refuse_existing(paths: &[&Path]) -> Result<(), PkiError> {
    let existing: Vec<String> = paths
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.display().to_string())
        .collect();
    if existing.is_empty() {
        Ok(())
    } else {
        Err(PkiError::Exists { paths: existing })
    }
}

fn new_key() -> Result<KeyPair, PkiError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

fn key_pem(key: &KeyPair) -> Zeroizing<String> {
    Zeroizing::new(key.serialize_pem())
}

/// The CA loaded from a PKI directory.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
    not_after: u64,
}

fn load_ca(dir: &Path) -> Result<Ca, PkiError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    for p in [&cert_path, &key_path] {
        if !p.exists() {
            return Err(PkiError::Ca(format!(
                "{} is missing: run `clinauthctl pki init --dir {}` first",
                p.display(),
                dir.display()
            )));
        }
    }
    let certs = tls::load_certs(&cert_path)?;
    let [der] = certs.as_slice() else {
        return Err(PkiError::Ca(format!(
            "{} must hold exactly one certificate",
            cert_path.display()
        )));
    };
    let key_bytes = tls::read_limited(&key_path)?;
    let key_text = std::str::from_utf8(&key_bytes)
        .map_err(|_| PkiError::Ca(format!("{} is not PEM text", key_path.display())))?;
    let key = KeyPair::from_pem(key_text)
        .map_err(|e| PkiError::Ca(format!("{}: unusable CA key: {e}", key_path.display())))?;
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| PkiError::Ca(format!("{}: {e}", cert_path.display())))?;
    if x509.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(PkiError::Ca(format!(
            "the key {} does not match the CA certificate {}",
            key_path.display(),
            cert_path.display()
        )));
    }
    if !x509.is_ca() {
        return Err(PkiError::Ca(format!(
            "{} is not a CA certificate",
            cert_path.display()
        )));
    }
    let not_after = u64::try_from(x509.validity().not_after.timestamp()).unwrap_or(0);
    let issuer = Issuer::from_ca_cert_der(der, key)
        .map_err(|e| PkiError::Ca(format!("{}: {e}", cert_path.display())))?;
    Ok(Ca {
        issuer,
        der: der.as_ref().to_vec(),
        not_after,
    })
}

/// A revoked certificate: its serial number's bytes and the revocation time
/// (seconds since the epoch).
type CrlEntry = (Vec<u8>, u64);

/// Makes a CRL of the CA with these revoked entries.
fn sign_crl(ca: &Ca, entries: &[CrlEntry], number: u64, now: u64) -> Result<String, PkiError> {
    let revoked_certs = entries
        .iter()
        .map(|(serial, when)| RevokedCertParams {
            serial_number: SerialNumber::from_slice(serial),
            revocation_time: at!(*when),
            reason_code: None,
            invalidity_date: None,
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update: at!(now),
        next_update: at!(now + CRL_DAYS * DAY),
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(&ca.issuer)?.pem()?)
}

/// `pki init`: creates the CA, the server certificate, an empty CRL and an
/// empty index in `dir`.
pub fn init(dir: &Path, opts: &InitOptions, now_ms: i64) -> Result<InitReport, PkiError> {
    let now = now_secs(now_ms)?;
    let site = opts.site.trim();
    if site.is_empty() || site.len() > 48 || site.chars().any(char::is_control) {
        return Err(PkiError::Invalid(format!(
            "invalid site name {:?}: give 1-48 printable characters",
            opts.site
        )));
    }
    let server_names = if opts.server_names.is_empty() {
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
    } else {
        opts.server_names.clone()
    };
    let paths: Vec<PathBuf> = [CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, CRL, INDEX]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    if !opts.force {
        refuse_existing(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    }

    // The CA.
    let ca_name = format!("ClinAuth Local CA {site}");
    let ca_key = new_key()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "ClinAuth");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name.as_str());
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    ca_params.not_before = at!(now);
    ca_params.not_after = at!(now + CA_DAYS * DAY);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_issuer = Issuer::new(ca_params, ca_key);

    // The server certificate.
    let mut server_params = CertificateParams::new(server_names.clone()).map_err(|e| {
        PkiError::Invalid(format!(
            "invalid server name in {}: {e}",
            server_names.join(", ")
        ))
    })?;
    if server_params
        .subject_alt_names
        .iter()
        .any(|san| matches!(san, SanType::DnsName(n) if n.as_str().is_empty()))
    {
        return Err(PkiError::Invalid("empty server name".to_owned()));
    }
    server_params.distinguished_name = DistinguishedName::new();
    server_params
        .distinguished_name
        .push(DnType::OrganizationName, "ClinAuth");
    server_params
        .distinguished_name
        .push(DnType::CommonName, server_names[0].as_str());
    server_params.is_ca = IsCa::ExplicitNoCa;
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server_params.use_authority_key_identifier_extension = true;
    server_params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    server_params.not_before = at!(now.saturating_sub(BACKDATE_SECS));
    server_params.not_after = at!(now + SERVER_DAYS * DAY);
    let server_key = new_key()?;
    let server_cert = server_params.signed_by(&server_key, &ca_issuer)?;

    let ca = Ca {
        issuer: ca_issuer,
        der: ca_cert.der().as_ref().to_vec(),
        not_after: now + CA_DAYS * DAY,
    };
    let crl = sign_crl(&ca, &[], 1, now)?;

    make_dir(dir)?;
    let ca_key_pem = key_pem(ca.issuer.key());
    let server_key_pem = key_pem(&server_key);
    let ca_pem = ca_cert.pem();
    let server_pem = server_cert.pem();
    let contents: [(&str, &[u8], u32); 6] = [
        (CA_KEY, ca_key_pem.as_bytes(), 0o600),
        (SERVER_KEY, server_key_pem.as_bytes(), 0o600),
        (CA_CERT, ca_pem.as_bytes(), 0o644),
        (SERVER_CERT, server_pem.as_bytes(), 0o644),
        (CRL, crl.as_bytes(), 0o644),
        (INDEX, b"", 0o644),
    ];
    let mut files = Vec::new();
    for (name, bytes, mode) in contents {
        let path = dir.join(name);
        write_file(&path, bytes, mode, opts.force)?;
        files.push(path);
    }
    Ok(InitReport {
        files,
        ca_name,
        ca_sha256: tls::sha256_hex(&ca.der),
        server_names,
        ca_not_after: ca.not_after,
    })
}

/// Reads `issued.tsv` (missing means empty).
pub fn read_index(dir: &Path) -> Result<Vec<IndexEntry>, PkiError> {
    let path = dir.join(INDEX);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let parsed = match fields.as_slice() {
            [serial, name, sha256, not_after, ..] => {
                not_after.parse::<u64>().ok().map(|not_after| IndexEntry {
                    serial: (*serial).to_owned(),
                    name: (*name).to_owned(),
                    sha256: (*sha256).to_owned(),
                    not_after,
                })
            }
            _ => None,
        };
        let Some(entry) = parsed else {
            return Err(PkiError::Ca(format!(
                "{} line {}: not `serial<TAB>name<TAB>sha256<TAB>not_after`",
                path.display(),
                n + 1
            )));
        };
        entries.push(entry);
    }
    Ok(entries)
}

fn append_index(dir: &Path, entry: &IndexEntry) -> Result<(), PkiError> {
    let path = dir.join(INDEX);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(&path)
        .map_err(io_err(&path))?;
    writeln!(
        file,
        "{}\t{}\t{}\t{}",
        entry.serial, entry.name, entry.sha256, entry.not_after
    )
    .and_then(|()| file.sync_all())
    .map_err(io_err(&path))
}

/// `pki issue-workstation`: issues a client certificate (clientAuth, CN =
/// `name`, 1 year, never beyond the CA) signed by the CA in `dir`, writes it
/// and its key to `out` (default `dir/workstations`), and records it in
/// `issued.tsv`.
pub fn issue_workstation(
    dir: &Path,
    name: &str,
    out: Option<&Path>,
    force: bool,
    now_ms: i64,
) -> Result<Issued, PkiError> {
    let now = now_secs(now_ms)?;
    check_name(name)?;
    let ca = load_ca(dir)?;
    if ca.not_after <= now {
        return Err(PkiError::Ca(format!(
            "the CA in {} has expired; create a new one",
            dir.display()
        )));
    }
    let out = out.map_or_else(|| dir.join(WORKSTATIONS), Path::to_path_buf);
    let cert_path = out.join(format!("{name}.pem"));
    let key_path = out.join(format!("{name}-key.pem"));
    if !force {
        refuse_existing(&[&cert_path, &key_path])?;
    }

    let serial = random_serial()?;
    let not_after = (now + WORKSTATION_DAYS * DAY).min(ca.not_after);
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ClinAuth");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = at!(now.saturating_sub(BACKDATE_SECS));
    params.not_after = at!(not_after);
    let key = new_key()?;
    let cert = params.signed_by(&key, &ca.issuer)?;

    make_dir(&out)?;
    write_file(&key_path, key_pem(&key).as_bytes(), 0o600, force)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644, force)?;
    let issued = Issued {
        name: name.to_owned(),
        serial: hex(&serial),
        sha256: tls::sha256_hex(cert.der().as_ref()),
        cert: cert_path,
        key: key_path,
        not_after,
    };
    append_index(
        dir,
        &IndexEntry {
            serial: issued.serial.clone(),
            name: issued.name.clone(),
            sha256: issued.sha256.clone(),
            not_after,
        },
    )?;
    Ok(issued)
}

/// The entries and number of the CA's current CRL, after checking it is
/// signed by the CA. A missing CRL is empty with number 0.
fn current_crl(dir: &Path, ca: &Ca) -> Result<(Vec<CrlEntry>, u64), PkiError> {
    let path = dir.join(CRL);
    if !path.exists() {
        return Ok((Vec::new(), 0));
    }
    let crls = tls::load_crls(&path)?;
    let [der] = crls.as_slice() else {
        return Err(PkiError::Ca(format!(
            "{} must hold exactly one CRL",
            path.display()
        )));
    };
    let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
        .map_err(|e| PkiError::Ca(format!("{}: not a valid CRL: {e}", path.display())))?;
    let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca.der)
        .map_err(|e| PkiError::Ca(format!("the CA certificate: {e}")))?;
    crl.verify_signature(ca_x509.public_key()).map_err(|_| {
        PkiError::Ca(format!(
            "{} is not signed by the CA in {}",
            path.display(),
            dir.display()
        ))
    })?;
    let entries = crl
        .iter_revoked_certificates()
        .map(|r| {
            let serial = unhex(&normalize_serial(&hex(r.raw_serial()))?).unwrap_or_default();
            let when = u64::try_from(r.revocation_date.timestamp()).unwrap_or(0);
            Ok((serial, when))
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    let number = crl
        .crl_number()
        .and_then(|n| {
            n.to_u64_digits()
                .first()
                .copied()
                .filter(|_| n.bits() <= 64)
        })
        .unwrap_or(0);
    Ok((entries, number))
}

/// `pki revoke`: adds the targets to the CA's CRL and signs a new one (with
/// no target, just re-signs it). Every serial must be in `issued.tsv`.
pub fn revoke(dir: &Path, targets: &[RevokeTarget], now_ms: i64) -> Result<RevokeReport, PkiError> {
    let now = now_secs(now_ms)?;
    let ca = load_ca(dir)?;
    let index = read_index(dir)?;
    let (mut entries, number) = current_crl(dir, &ca)?;

    // Resolve every target before changing anything.
    let mut wanted: Vec<(String, String)> = Vec::new();
    for target in targets {
        match target {
            RevokeTarget::Serial(s) => {
                let serial = normalize_serial(s)?;
                let entry = index
                    .iter()
                    .find(|e| e.serial == serial)
                    .ok_or_else(|| PkiError::Unknown(format!("serial {serial}")))?;
                wanted.push((serial, entry.name.clone()));
            }
            RevokeTarget::Name(n) => {
                let found: Vec<_> = index.iter().filter(|e| &e.name == n).collect();
                if found.is_empty() {
                    return Err(PkiError::Unknown(format!("workstation {n:?}")));
                }
                wanted.extend(
                    found
                        .into_iter()
                        .map(|e| (e.serial.clone(), e.name.clone())),
                );
            }
        }
    }
    wanted.sort();
    wanted.dedup();

    let mut revoked = Vec::new();
    let mut already = Vec::new();
    for (serial, name) in wanted {
        let bytes = unhex(&serial).ok_or_else(|| PkiError::Unknown(format!("serial {serial}")))?;
        if entries.iter().any(|(s, _)| *s == bytes) {
            already.push((serial, name));
        } else {
            entries.push((bytes, now));
            revoked.push((serial, name));
        }
    }
    let crl_number = number + 1;
    let pem = sign_crl(&ca, &entries, crl_number, now)?;
    let path = dir.join(CRL);
    write_file(&path, pem.as_bytes(), 0o644, true)?;
    Ok(RevokeReport {
        revoked,
        already,
        total: entries.len(),
        crl_number,
        crl: path,
    })
}
