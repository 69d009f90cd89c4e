//! The workstation API's transport: mutual TLS (R-TLS-1, R-TLS-2).
//!
//! [`workstation_server_config`] builds the rustls server configuration from
//! the `[tls]` table of the server configuration ([`TlsSettings`]);
//! [`serve`] accepts TCP connections, runs the TLS handshake under a timeout
//! and a concurrency bound, and hands each connection to hyper with an
//! [`axum::Router`]. Every request carries the SHA-256 of the workstation's
//! certificate as a [`PeerFingerprint`] extension (and the peer address as
//! axum's [`ConnectInfo`]); the API layer looks the workstation up by it and
//! refuses unregistered, suspended and decommissioned ones.
//!
//! # Protocol versions
//!
//! TLS 1.3 only, unless `allow_tls12 = true` (for a peer that cannot do 1.3),
//! which adds TLS 1.2. rustls implements nothing older than TLS 1.2 at all, so
//! SSL 3.0, TLS 1.0 and TLS 1.1 are refused whatever the configuration (the
//! tests send a TLS 1.0/1.1 ClientHello and `openssl s_client -tls1_1` to
//! prove it). With TLS 1.2 the extended master secret (RFC 7627) is required.
//!
//! # Cipher suites and groups: the CRYPTREC high-security profile
//!
//! The reference is CRYPTREC's "TLS暗号設定ガイドライン" (TLS cipher
//! configuration guideline, CRYPTREC GL-3001, v3.0.1 of 2020-07, revised as
//! v3.1.0/3.1.1 in 2025; published by IPA and NICT,
//! <https://www.ipa.go.jp/security/vuln/ssl_crypt_config.html>) and its
//! 高セキュリティ型 (high-security) profile, which the MHLW guideline names
//! as the floor for TLS with client authentication between medical systems.
//! That profile allows only TLS 1.3 and TLS 1.2, only AEAD suites with
//! ephemeral (EC)DHE key exchange, 128/256-bit AES (or Camellia), and
//! (EC)DHE groups of at least 128-bit security (v3.1 names P-256 and
//! Curve25519 as examples). The algorithms themselves are taken from the
//! CRYPTREC Ciphers List (電子政府推奨暗号リスト, CRYPTREC LS-0001-2022,
//! <https://www.cryptrec.go.jp/list.html>): AES, GCM/CCM, ECDH/ECDSA on the
//! NIST curves, RSA, SHA-2.
//!
//! This server allows the intersection of that profile, the CRYPTREC Ciphers
//! List and what the `ring` provider implements:
//!
//! | TLS | suites (server preference order) |
//! |-----|----------------------------------|
//! | 1.3 | `TLS_AES_256_GCM_SHA384`, `TLS_AES_128_GCM_SHA256` |
//! | 1.2 | `TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384`, `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384`, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256` |
//!
//! Key exchange groups: `secp256r1` (P-256) and `secp384r1` (P-384).
//!
//! Left out on purpose:
//! - **ChaCha20-Poly1305** (TLS 1.3 and 1.2). The guideline tolerates it
//!   for interoperability, but it is not on the CRYPTREC Ciphers List; both
//!   ends here are ours and speak AES-GCM, so there is nothing to
//!   interoperate with. Leaving it out keeps every algorithm on the list an
//!   auditor checks against.
//! - **X25519**. Curve25519 meets the guideline's strength requirement (v3.1),
//!   but the CRYPTREC list's key agreement is ECDH over the NIST curves. A
//!   client that offers X25519 first (OpenSSL, rustls) is asked for P-256 by
//!   a HelloRetryRequest: one extra round trip per connection, no failure.
//!   Adding `X25519` to [`KX_GROUPS`] is the one-line change if a site's
//!   auditor accepts v3.1's wording.
//! - AES-CCM suites: ring does not implement them (they are on the list).
//! - CBC suites, static RSA key exchange, finite-field DHE, SHA-1: not in the
//!   profile; rustls does not implement them anyway.
//!
//! Certificate signatures are verified with ring's defaults: ECDSA P-256 /
//! P-384 with SHA-2, RSA (2048 bits or more, PKCS#1 v1.5 or PSS with SHA-2)
//! and Ed25519 (EdDSA joined the CRYPTREC list in 2023).
//!
//! # Client certificates and revocation
//!
//! A client certificate is REQUIRED: a client without one gets the TLS 1.3
//! `certificate_required` alert. It must chain to one of the configured
//! workstation CAs ([`WebPkiClientVerifier`]) and carry clientAuth. When CRLs
//! are configured they are checked for the end-entity certificate, and a
//! certificate whose issuer has no CRL among them is refused (fail closed).
//! Session resumption and tickets are turned off so that every connection
//! goes through a full handshake and the current CRL; a revoked workstation
//! cannot come back on an old session. [`ServerConfigHandle::replace`] swaps
//! in a configuration rebuilt after `clinauthctl pki revoke` (on SIGHUP, say)
//! without dropping the listener.

use crate::api::workstation::{ConnectionCache, PeerFingerprint};
use axum::extract::ConnectInfo;
use axum::Router;
use clinauth_policy::Seconds;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::crypto::{ring as ring_provider, CryptoProvider};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig, ServerConnection, SupportedCipherSuite};
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use serde::Deserialize;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The largest PEM file read (certificates, keys, CRLs). A CRL of a few
/// thousand workstations is far below it.
pub const MAX_PEM_BYTES: u64 = 4 * 1024 * 1024;

/// The TLS 1.3 suites allowed (see the module documentation).
pub static TLS13_SUITES: &[SupportedCipherSuite] = &[
    ring_provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ring_provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
];

/// The TLS 1.2 suites allowed when `allow_tls12` is set.
pub static TLS12_SUITES: &[SupportedCipherSuite] = &[
    ring_provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ring_provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ring_provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ring_provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// The key exchange groups allowed.
pub static KX_GROUPS: &[&dyn rustls::crypto::SupportedKxGroup] = &[
    ring_provider::kx_group::SECP256R1,
    ring_provider::kx_group::SECP384R1,
];

/// The `[tls]` table of the server configuration: the workstation API's
/// certificate, key and client trust.
///
/// ```toml
/// [tls]
/// cert = "/etc/clinauth/pki/server.pem"          # leaf first, then intermediates
/// key = "/etc/clinauth/pki/server-key.pem"
/// workstation_ca = ["/etc/clinauth/pki/ca.pem"]  # or a single string
/// crl = ["/etc/clinauth/pki/crl.pem"]            # optional
/// allow_tls12 = false                            # default
/// handshake_timeout = "10s"                      # default
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The server certificate chain (PEM): the server's certificate first,
    /// then any intermediate CA certificates.
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, SEC1 or PKCS#1, unencrypted).
    pub key: PathBuf,
    /// The CA certificate(s) that issue workstation certificates (PEM; a
    /// file may hold several).
    #[serde(deserialize_with = "one_or_many")]
    pub workstation_ca: Vec<PathBuf>,
    /// Certificate revocation lists of those CAs (PEM or DER). When any is
    /// given, every workstation certificate's issuer must have one here.
    #[serde(default, deserialize_with = "one_or_many")]
    pub crl: Vec<PathBuf>,
    /// Also accept TLS 1.2, for a peer that cannot do TLS 1.3.
    #[serde(default)]
    pub allow_tls12: bool,
    /// How long a client has to complete the TLS handshake.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: Seconds,
}

fn default_handshake_timeout() -> Seconds {
    Seconds(10)
}

fn one_or_many<'de, D>(de: D) -> Result<Vec<PathBuf>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(de)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_PEM_BYTES`].
    #[error("{path} is larger than {MAX_PEM_BYTES} bytes")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// A file is not valid PEM (bad base64, a section without its end line).
    #[error("{path} is not valid PEM: {detail}")]
    BadPem {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A file holds no PEM section of the expected kind.
    #[error("{path} holds no {expected}{found}")]
    WrongPem {
        /// The file.
        path: String,
        /// What was expected, e.g. "CERTIFICATE".
        expected: &'static str,
        /// What was found instead, e.g. " (found: PRIVATE KEY)".
        found: String,
    },
    /// The private key is encrypted; the server needs it in clear (mode 0600).
    #[error("{path} holds an encrypted private key; give the server an unencrypted key file readable only by it (mode 0600)")]
    EncryptedKey {
        /// The file.
        path: String,
    },
    /// A certificate could not be parsed or used as a trust anchor.
    #[error("{path}: {detail}")]
    BadCertificate {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key {key} does not match the certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// The key is of a kind the server cannot use.
    #[error("{path}: unusable private key: {detail}")]
    BadKey {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// No workstation CA is configured.
    #[error("no workstation CA is configured ([tls] workstation_ca)")]
    NoWorkstationCa,
    /// The client verifier could not be built (a bad CRL, typically).
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(String),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// Reads a whole file, refusing more than [`MAX_PEM_BYTES`] without reading
/// further. The bytes are wiped when dropped (keys pass through here).
pub fn read_limited(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, TlsError> {
    let file = std::fs::File::open(path).map_err(|source| TlsError::Io {
        path: shown(path),
        source,
    })?;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| TlsError::Io {
            path: shown(path),
            source,
        })?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge { path: shown(path) });
    }
    Ok(bytes)
}

fn kind_name(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "CERTIFICATE",
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        _ => "other",
    }
}

/// Every PEM section of a file, with a clear error for broken PEM.
fn pem_sections(path: &Path, bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: shown(path),
            detail: e.to_string(),
        })
}

fn found_instead(sections: &[(SectionKind, Vec<u8>)]) -> String {
    if sections.is_empty() {
        return " (no PEM section found)".to_owned();
    }
    let mut kinds: Vec<&str> = sections.iter().map(|(k, _)| kind_name(*k)).collect();
    kinds.dedup();
    format!(" (found: {})", kinds.join(", "))
}

/// Loads the certificates of a PEM file, in order. Other sections are an
/// error, so a key file given as a certificate is caught at start-up.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_limited(path)?;
    let sections = pem_sections(path, &bytes)?;
    let all_certs =
        !sections.is_empty() && sections.iter().all(|(k, _)| *k == SectionKind::Certificate);
    if !all_certs {
        return Err(TlsError::WrongPem {
            path: shown(path),
            expected: "CERTIFICATE",
            found: found_instead(&sections),
        });
    }
    let certs: Vec<CertificateDer<'static>> = sections
        .into_iter()
        .map(|(_, der)| CertificateDer::from(der))
        .collect();
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
            TlsError::BadCertificate {
                path: shown(path),
                detail: format!("not a valid X.509 certificate: {e}"),
            }
        })?;
    }
    Ok(certs)
}

/// Loads the one private key of a PEM file (PKCS#8, SEC1 or PKCS#1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_limited(path)?;
    if bytes
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        return Err(TlsError::EncryptedKey { path: shown(path) });
    }
    let sections = pem_sections(path, &bytes)?;
    let mut keys = sections.iter().filter(|(k, _)| {
        matches!(
            k,
            SectionKind::PrivateKey | SectionKind::EcPrivateKey | SectionKind::RsaPrivateKey
        )
    });
    let (Some((kind, der)), None) = (keys.next(), keys.next()) else {
        let count = sections
            .iter()
            .filter(|(k, _)| {
                matches!(
                    k,
                    SectionKind::PrivateKey
                        | SectionKind::EcPrivateKey
                        | SectionKind::RsaPrivateKey
                )
            })
            .count();
        if count > 1 {
            return Err(TlsError::BadKey {
                path: shown(path),
                detail: format!("{count} private keys in one file; give exactly one"),
            });
        }
        return Err(TlsError::WrongPem {
            path: shown(path),
            expected: "PRIVATE KEY",
            found: found_instead(&sections),
        });
    };
    PrivateKeyDer::from_pem(*kind, der.clone()).ok_or_else(|| TlsError::WrongPem {
        path: shown(path),
        expected: "PRIVATE KEY",
        found: found_instead(&sections),
    })
}

/// Loads the CRLs of a file: PEM (`X509 CRL` sections) or a single DER CRL.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read_limited(path)?;
    // DER: a SEQUENCE tag, no PEM armour.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes.to_vec())]);
    }
    let sections = pem_sections(path, &bytes)?;
    let all_crls = !sections.is_empty() && sections.iter().all(|(k, _)| *k == SectionKind::Crl);
    if !all_crls {
        return Err(TlsError::WrongPem {
            path: shown(path),
            expected: "X509 CRL",
            found: found_instead(&sections),
        });
    }
    Ok(sections
        .into_iter()
        .map(|(_, der)| CertificateRevocationListDer::from(der))
        .collect())
}

/// The crypto provider of the workstation API: ring, limited to the suites
/// and groups of the module documentation.
pub fn provider(allow_tls12: bool) -> CryptoProvider {
    let mut cipher_suites = TLS13_SUITES.to_vec();
    if allow_tls12 {
        cipher_suites.extend_from_slice(TLS12_SUITES);
    }
    CryptoProvider {
        cipher_suites,
        kx_groups: KX_GROUPS.to_vec(),
        ..ring_provider::default_provider()
    }
}

/// The protocol versions: TLS 1.3, and TLS 1.2 only when allowed.
pub fn protocol_versions(
    allow_tls12: bool,
) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static TLS13_AND_12: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    if allow_tls12 {
        TLS13_AND_12
    } else {
        TLS13_ONLY
    }
}

/// Builds the workstation API's server configuration from the settings,
/// reading every file named there.
pub fn workstation_server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs(&settings.cert)?;
    let key = load_private_key(&settings.key)?;

    if settings.workstation_ca.is_empty() {
        return Err(TlsError::NoWorkstationCa);
    }
    let mut roots = RootCertStore::empty();
    for path in &settings.workstation_ca {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::BadCertificate {
                path: shown(path),
                detail: format!("not usable as a trust anchor: {e}"),
            })?;
        }
    }
    let mut crls = Vec::new();
    for path in &settings.crl {
        crls.extend(load_crls(path)?);
    }

    let provider = Arc::new(provider(settings.allow_tls12));
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions(settings.allow_tls12))
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert: shown(&settings.cert),
                key: shown(&settings.key),
            },
            other => TlsError::BadKey {
                path: shown(&settings.key),
                detail: other.to_string(),
            },
        })?;
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection is a full handshake against the current CRL.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    if settings.allow_tls12 {
        config.require_ems = true;
    }
    Ok(Arc::new(config))
}

/// Lowercase hex SHA-256 of DER bytes: the workstation's registered
/// fingerprint when given its certificate.
pub fn sha256_hex(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    out
}

/// The SHA-256 (lowercase hex) of the certificate the peer presented, from
/// an established connection; `None` before the handshake or without one.
pub fn peer_fingerprint(conn: &ServerConnection) -> Option<String> {
    conn.peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| sha256_hex(leaf.as_ref()))
}

/// The server configuration in use, replaceable while the server runs (for
/// a CRL updated by `clinauthctl pki revoke`). New connections use the new
/// configuration; established ones keep theirs.
#[derive(Clone)]
pub struct ServerConfigHandle(Arc<RwLock<Arc<ServerConfig>>>);

impl ServerConfigHandle {
    /// A handle on this configuration.
    pub fn new(config: Arc<ServerConfig>) -> ServerConfigHandle {
        ServerConfigHandle(Arc::new(RwLock::new(config)))
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the configuration for connections accepted from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        match self.0.write() {
            Ok(mut guard) => *guard = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
    }

    /// Rebuilds the configuration from the settings (re-reading the files)
    /// and replaces it; on error the old one stays in use.
    pub fn reload(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        self.replace(workstation_server_config(settings)?);
        Ok(())
    }
}

/// What identifies a version of a file: its modification time and length.
type FileStamp = Option<(std::time::SystemTime, u64)>;

fn stamps(settings: &TlsSettings) -> Vec<FileStamp> {
    std::iter::once(&settings.cert)
        .chain(std::iter::once(&settings.key))
        .chain(&settings.workstation_ca)
        .chain(&settings.crl)
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Checks the files named in `settings` every `every` and, when one has
/// changed (a CRL rewritten by `clinauthctl pki revoke`, a renewed server
/// certificate), rebuilds the configuration and puts it in `handle`. A
/// configuration that does not build is logged and the old one stays in
/// use. Runs until dropped: spawn it beside [`serve`] and abort it on
/// shutdown.
pub async fn reload_on_change(handle: ServerConfigHandle, settings: TlsSettings, every: Duration) {
    let mut last = stamps(&settings);
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let now = stamps(&settings);
        if now == last {
            continue;
        }
        last = now;
        match handle.reload(&settings) {
            Ok(()) => tracing::info!("workstation API: TLS configuration reloaded"),
            Err(e) => tracing::error!(
                error = %e,
                "workstation API: TLS files changed but do not load; keeping the previous configuration"
            ),
        }
    }
}

impl From<Arc<ServerConfig>> for ServerConfigHandle {
    fn from(config: Arc<ServerConfig>) -> Self {
        ServerConfigHandle::new(config)
    }
}

/// Bounds on the work one listener takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections open at once (handshaking or serving). When reached, the
    /// listener stops accepting until one closes.
    pub max_connections: usize,
    /// Handshakes in progress at once (a subset of the connections).
    pub max_handshakes: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a request's headers to arrive.
    pub header_read_timeout: Duration,
    /// After this long a connection is asked to close (graceful: the request
    /// in flight is finished).
    pub max_connection_age: Duration,
    /// On shutdown, how long to wait for connections in flight.
    pub drain_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 1024,
            max_handshakes: 128,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            max_connection_age: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl ServeLimits {
    /// The defaults with the configuration's connection limit and handshake
    /// timeout.
    pub fn new(settings: &TlsSettings, max_connections: usize) -> ServeLimits {
        ServeLimits {
            max_connections: max_connections.max(1),
            max_handshakes: max_connections.clamp(1, 128),
            handshake_timeout: Duration::from_secs(u64::from(settings.handshake_timeout.0.max(1))),
            ..ServeLimits::default()
        }
    }
}

/// Binds a TCP listener (the workstation API's address from the
/// configuration; tests pass `127.0.0.1:0`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Binds `addr` and serves `router` over mutual TLS until `shutdown`
/// completes. See [`serve`].
pub async fn serve_tls<F>(
    addr: SocketAddr,
    config: ServerConfigHandle,
    router: Router,
    limits: ServeLimits,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let listener = bind(addr).await?;
    serve(listener, config, router, limits, shutdown).await;
    Ok(())
}

/// Accepts connections on `listener` until `shutdown` completes: TLS
/// handshake under [`ServeLimits::handshake_timeout`], then HTTP/1.1 by hyper
/// with `router`. Each request carries [`ConnectInfo<SocketAddr>`] and, when
/// the client presented a certificate (always, with
/// [`workstation_server_config`]), [`PeerFingerprint`] (its SHA-256) in its
/// extensions. A configuration without client authentication (the officer
/// API's) works too: its requests have no [`PeerFingerprint`].
///
/// A failed handshake, a slow client or an accept error is logged and never
/// ends the loop. On shutdown the listener closes and connections in flight
/// get [`ServeLimits::drain_timeout`] to finish.
pub async fn serve<F>(
    listener: TcpListener,
    config: ServerConfigHandle,
    router: Router,
    limits: ServeLimits,
    shutdown: F,
) where
    F: Future<Output = ()> + Send,
{
    // Semaphore::new panics beyond MAX_PERMITS; no server needs that many.
    let max_connections = limits.max_connections.clamp(1, 1 << 20);
    let connections = Arc::new(Semaphore::new(max_connections));
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes.clamp(1, 1 << 20)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Wait for a free connection slot first: a full server stops
        // accepting (the kernel backlog holds the rest) rather than
        // accepting and dropping.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait a little instead of spinning.
                tracing::warn!(error = %e, "TLS listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let config = config.current();
        let router = router.clone();
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(tcp, peer, config, router, handshakes, limits).await;
        });
    }
    drop(listener);
    // Wait for the connections in flight, for a bounded time.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.drain_timeout, connections.acquire_many(all)).await;
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    router: Router,
    handshakes: Arc<Semaphore>,
    limits: ServeLimits,
) {
    let _ = tcp.set_nodelay(true);
    let tls = {
        let Ok(_handshake) = handshakes.acquire_owned().await else {
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, "TLS handshake timed out");
                return;
            }
        }
    };
    // With the workstation configuration there is always a certificate (the
    // verifier requires one). A listener built without client
    // authentication (the officer API) serves requests without the
    // extension, and the workstation handlers refuse those.
    let fingerprint = peer_fingerprint(tls.get_ref().1);
    tracing::debug!(%peer, fingerprint = ?fingerprint, "TLS connection");

    // The connection's workstation row, reused for a short time.
    let cache = ConnectionCache::default();
    let service = tower::ServiceExt::map_request(
        router,
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            if let Some(fp) = &fingerprint {
                req.extensions_mut().insert(PeerFingerprint(fp.clone()));
                req.extensions_mut().insert(cache.clone());
            }
            req.extensions_mut().insert(ConnectInfo(peer));
            req
        },
    );
    let service = hyper_util::service::TowerToHyperService::new(service);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "TLS connection ended with an error");
            }
        }
        () = tokio::time::sleep(limits.max_connection_age) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.drain_timeout, conn.as_mut()).await;
        }
    }
}
