//! Test credentials: a small CA (ECDSA P-256, made with rcgen) that issues
//! the card's PIV authentication (9A) and digital signature (9C)
//! certificates, subject CN = the user.

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use thiserror::Error;

use crate::piv::keys::{Algorithm, KeyError, SlotCredential, SlotKey};

/// Errors making test credentials.
#[derive(Debug, Error)]
pub enum PkiError {
    /// rcgen refused.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// Key generation or encoding.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A test certificate authority.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A fresh self-signed CA named `name`.
    pub fn generate(name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "ClinAuth test");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2044, 1, 1);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `key` with subject CN = `user`, for slot 9A
    /// (`signature == false`: digital signature, client authentication) or
    /// 9C (`signature == true`: digital signature and non-repudiation).
    pub fn issue(&self, user: &str, key: &SlotKey, signature: bool) -> Result<Vec<u8>, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, user);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "ClinAuth test");
        params.is_ca = IsCa::ExplicitNoCa;
        params.not_before = date_time_ymd(2024, 1, 1);
        params.not_after = date_time_ymd(2044, 1, 1);
        if signature {
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::ContentCommitment,
            ];
        } else {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key.public_key()?, &self.issuer)?;
        Ok(cert.der().to_vec())
    }

    /// Makes a slot credential around an existing key.
    pub fn credential(
        &self,
        user: &str,
        key: SlotKey,
        signature: bool,
    ) -> Result<SlotCredential, PkiError> {
        let cert_der = self.issue(user, &key, signature)?;
        Ok(SlotCredential { key, cert_der })
    }

    /// Generates a key of `alg` and certifies it.
    pub fn generate_credential(
        &self,
        user: &str,
        alg: Algorithm,
        signature: bool,
    ) -> Result<SlotCredential, PkiError> {
        self.credential(user, SlotKey::generate(alg)?, signature)
    }
}
