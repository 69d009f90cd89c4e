//! The client side of mutual TLS: the server's CA, the workstation's
//! certificate and key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ServerSection;

/// Files larger than this are not certificates or keys.
const MAX_PEM_BYTES: u64 = 256 * 1024;

/// Why the TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the combination.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// Not a valid DNS name or IP address.
    #[error("server name {0:?} is not a DNS name or IP address")]
    ServerName(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    let fail = |message: String| TlsSetupError::File {
        path: path.to_owned(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(fail(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    std::fs::read(path).map_err(|e| fail(e.to_string()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let bytes = read(path)?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(TlsSetupError::File {
            path: path.to_owned(),
            message: "no CERTIFICATE in the file".into(),
        }),
        Err(e) => Err(TlsSetupError::File {
            path: path.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// The rustls client configuration of `[server]`.
pub fn client_config(server: &ServerSection) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(&server.ca)? {
        roots.add(ca)?;
    }
    let chain = certificates(&server.certificate)?;
    let key_bytes = zeroize::Zeroizing::new(read(&server.key)?);
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsSetupError::File {
        path: server.key.clone(),
        message: format!("no private key: {e}"),
    })?;
    let versions: &[&rustls::SupportedProtocolVersion] = if server.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
