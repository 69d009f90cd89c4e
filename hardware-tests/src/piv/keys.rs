//! The card's private keys: ECDSA P-256 (PIV algorithm `11`) and RSA-2048
//! (algorithm `07`), loaded from PKCS#8 files (PEM or DER) or generated.
//!
//! Why these crates: a PIV card signs what it is given. For ECDSA that is a
//! digest computed by the host, so the key must sign a *pre-hashed* value;
//! `ring` only signs whole messages, so `p256`'s `PrehashSigner` (RustCrypto,
//! Apache-2.0/MIT) does it. For RSA the card applies the raw private-key
//! operation to a block the host has already padded; `ring` has no raw RSA and
//! cannot generate RSA keys, so the `rsa` crate (RustCrypto, Apache-2.0/MIT)
//! does both. Version 0.10 is used because its arithmetic is constant-time
//! (`crypto-bigint`), unlike 0.9 which carries the Marvin timing advisory.

use std::fmt;
use std::path::Path;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use thiserror::Error;
use zeroize::Zeroizing;

/// Size of an RSA-2048 modulus, signature and input block in bytes.
pub const RSA_2048_BYTES: usize = 256;
/// Size of a P-256 field element and of the longest digest it signs.
pub const P256_BYTES: usize = 32;
/// Largest key or certificate file read from disk.
pub const MAX_FILE_LEN: u64 = 64 * 1024;

/// Key algorithms of SP 800-78-4 that this card implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSA with a 2048-bit modulus, algorithm identifier `07`.
    Rsa2048,
    /// ECDSA on P-256, algorithm identifier `11`.
    EccP256,
}

impl Algorithm {
    /// The PIV algorithm identifier (P1 of GENERAL AUTHENTICATE).
    pub fn id(self) -> u8 {
        match self {
            Self::Rsa2048 => 0x07,
            Self::EccP256 => 0x11,
        }
    }
}

/// Errors around keys.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The bytes are no PKCS#8 key of a supported algorithm and size.
    #[error("not a PKCS#8 ECDSA P-256 or RSA-2048 private key")]
    UnsupportedKey,
    /// PEM data without the expected block.
    #[error("PEM data has no {0} block")]
    Pem(&'static str),
    /// Key generation or encoding failed.
    #[error("key generation or encoding failed: {0}")]
    Crypto(String),
    /// The input to sign has the wrong size or value.
    #[error("input to sign has the wrong size or value")]
    BadInput,
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_FILE_LEN`].
    #[error("{0} is too large")]
    FileTooLarge(String),
}

/// A private key held in a card slot.
pub enum SlotKey {
    /// ECDSA P-256.
    EccP256(p256::ecdsa::SigningKey),
    /// RSA-2048.
    Rsa2048(Box<rsa::RsaPrivateKey>),
}

impl fmt::Debug for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotKey({:?}, <secret>)", self.algorithm())
    }
}

impl SlotKey {
    /// A fresh key. RSA-2048 generation is slow in debug builds (seconds);
    /// tests generate it once and share it.
    pub fn generate(alg: Algorithm) -> Result<Self, KeyError> {
        let mut rng = getrandom::SysRng;
        match alg {
            Algorithm::EccP256 => {
                use p256::elliptic_curve::Generate;
                p256::ecdsa::SigningKey::try_generate_from_rng(&mut rng)
                    .map(Self::EccP256)
                    .map_err(|e| KeyError::Crypto(e.to_string()))
            }
            // This rsa release wants an infallible RNG; the OS RNG only
            // fails when the OS cannot provide randomness at all.
            Algorithm::Rsa2048 => {
                rsa::RsaPrivateKey::new(&mut getrandom::rand_core::UnwrapErr(rng), 2048)
                    .map(|k| Self::Rsa2048(Box::new(k)))
                    .map_err(|e| KeyError::Crypto(e.to_string()))
            }
        }
    }

    /// Parses a PKCS#8 `PrivateKeyInfo` in DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
            return Ok(Self::EccP256(k));
        }
        match rsa::RsaPrivateKey::from_pkcs8_der(der) {
            Ok(k) if k.size() == RSA_2048_BYTES => Ok(Self::Rsa2048(Box::new(k))),
            _ => Err(KeyError::UnsupportedKey),
        }
    }

    /// Parses a PKCS#8 key in PEM (`BEGIN PRIVATE KEY`) or DER.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.first() == Some(&0x30) {
            return Self::from_pkcs8_der(bytes);
        }
        let der =
            PrivatePkcs8KeyDer::from_pem_slice(bytes).map_err(|_| KeyError::Pem("PRIVATE KEY"))?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// Reads a PKCS#8 key file (PEM or DER).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(read_limited(path)?);
        Self::from_pem_or_der(&bytes)
    }

    /// The key as PKCS#8 DER.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let doc = match self {
            Self::EccP256(k) => k.to_pkcs8_der(),
            Self::Rsa2048(k) => k.to_pkcs8_der(),
        }
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let der = self.to_pkcs8_der()?;
        Ok(Zeroizing::new(pem_encode("PRIVATE KEY", &der)))
    }

    /// The algorithm of this key.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::EccP256(_) => Algorithm::EccP256,
            Self::Rsa2048(_) => Algorithm::Rsa2048,
        }
    }

    /// The public key as an X.509 `SubjectPublicKeyInfo` in DER.
    pub fn spki_der(&self) -> Result<Vec<u8>, KeyError> {
        let doc = match self {
            Self::EccP256(k) => k.verifying_key().to_public_key_der(),
            Self::Rsa2048(k) => k.to_public_key().to_public_key_der(),
        }
        .map_err(|e| KeyError::Crypto(e.to_string()))?;
        Ok(doc.as_bytes().to_vec())
    }

    /// The public key in the form rcgen needs to certify it.
    pub fn public_key(&self) -> Result<CertifiablePublicKey, KeyError> {
        match self {
            Self::EccP256(k) => Ok(CertifiablePublicKey {
                alg: &rcgen::PKCS_ECDSA_P256_SHA256,
                raw: k.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
            }),
            Self::Rsa2048(k) => {
                use rsa::pkcs1::EncodeRsaPublicKey;
                let doc = k
                    .to_public_key()
                    .to_pkcs1_der()
                    .map_err(|e| KeyError::Crypto(e.to_string()))?;
                Ok(CertifiablePublicKey {
                    alg: &rcgen::PKCS_RSA_SHA256,
                    raw: doc.as_bytes().to_vec(),
                })
            }
        }
    }

    /// What the card computes in GENERAL AUTHENTICATE.
    ///
    /// ECDSA P-256: `input` is a digest of at most 32 bytes, signed as is (a
    /// shorter digest is read as a big-endian integer, i.e. left-padded with
    /// zeros, as ECDSA prescribes); the answer is a DER `ECDSA-Sig-Value`.
    /// RSA-2048: `input` is a 256-byte block, already padded by the host,
    /// smaller than the modulus; the answer is `input^d mod n`, 256 bytes.
    pub fn sign_raw(&self, input: &[u8]) -> Result<Vec<u8>, KeyError> {
        match self {
            Self::EccP256(k) => {
                if input.is_empty() || input.len() > P256_BYTES {
                    return Err(KeyError::BadInput);
                }
                let mut digest = [0u8; P256_BYTES];
                let start = P256_BYTES - input.len();
                digest
                    .get_mut(start..)
                    .ok_or(KeyError::BadInput)?
                    .copy_from_slice(input);
                let sig: p256::ecdsa::DerSignature =
                    k.sign_prehash(&digest).map_err(|_| KeyError::BadInput)?;
                Ok(sig.as_bytes().to_vec())
            }
            Self::Rsa2048(k) => {
                if input.len() != RSA_2048_BYTES {
                    return Err(KeyError::BadInput);
                }
                let c = rsa::BoxedUint::from_be_slice(input, k.n_bits_precision())
                    .map_err(|_| KeyError::BadInput)?;
                // Blinded and checked (m^e == c) private operation; it
                // refuses c >= n.
                let m = rsa::hazmat::rsa_decrypt_and_check(
                    k.as_ref(),
                    Some(&mut getrandom::SysRng),
                    &c,
                )
                .map_err(|_| KeyError::BadInput)?;
                let bytes = Zeroizing::new(m.to_be_bytes());
                let mut out = vec![0u8; RSA_2048_BYTES];
                let n = bytes.len().min(RSA_2048_BYTES);
                let (src, dst) = (
                    bytes.get(bytes.len() - n..),
                    out.get_mut(RSA_2048_BYTES - n..),
                );
                match (src, dst) {
                    (Some(s), Some(d)) => d.copy_from_slice(s),
                    _ => return Err(KeyError::BadInput),
                }
                Ok(out)
            }
        }
    }
}

/// A public key with the algorithm rcgen writes into the certificate.
#[derive(Debug, Clone)]
pub struct CertifiablePublicKey {
    alg: &'static rcgen::SignatureAlgorithm,
    raw: Vec<u8>,
}

impl rcgen::PublicKeyData for CertifiablePublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// A slot's key and its X.509 certificate (DER).
#[derive(Debug)]
pub struct SlotCredential {
    /// The private key.
    pub key: SlotKey,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
}

impl SlotCredential {
    /// Reads a key file and a certificate file (each PEM or DER).
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<Self, KeyError> {
        let key = SlotKey::load(key_path)?;
        let cert_der = cert_from_pem_or_der(&read_limited(cert_path)?)?;
        Ok(Self { key, cert_der })
    }
}

/// A certificate in PEM (`BEGIN CERTIFICATE`) or DER, as DER.
pub fn cert_from_pem_or_der(bytes: &[u8]) -> Result<Vec<u8>, KeyError> {
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    CertificateDer::from_pem_slice(bytes)
        .map(|c| c.to_vec())
        .map_err(|_| KeyError::Pem("CERTIFICATE"))
}

/// PEM encoding with 64-character lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der))
}

fn read_limited(path: &Path) -> Result<Vec<u8>, KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_LEN {
        return Err(KeyError::FileTooLarge(path.display().to_string()));
    }
    std::fs::read(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_prehash_signature_verifies_with_ring() {
        let key = SlotKey::generate(Algorithm::EccP256).unwrap();
        let spki = key.spki_der().unwrap();
        let msg = b"nonce bound to workstation and purpose";
        let digest = ring::digest::digest(&ring::digest::SHA256, msg);
        let sig = key.sign_raw(digest.as_ref()).unwrap();
        // SPKI -> raw point: the last 65 bytes of a P-256 SPKI.
        let point = &spki[spki.len() - 65..];
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, point)
            .verify(msg, &sig)
            .unwrap();
        assert!(key.sign_raw(&[0; 33]).is_err());
        assert!(key.sign_raw(&[]).is_err());
    }

    #[test]
    fn pkcs8_round_trip_and_pem() {
        let key = SlotKey::generate(Algorithm::EccP256).unwrap();
        let pem = key.to_pkcs8_pem().unwrap();
        let again = SlotKey::from_pem_or_der(pem.as_bytes()).unwrap();
        assert_eq!(again.spki_der().unwrap(), key.spki_der().unwrap());
        assert!(SlotKey::from_pem_or_der(b"garbage").is_err());
        assert!(SlotKey::from_pkcs8_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    }
}
