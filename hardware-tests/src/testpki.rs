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
        self.issue_qualified(user, key, signature, None)
    }

    /// [`TestCa::issue`], with an HPKI qualification (ISO 17090 hcRole in
    /// subjectDirectoryAttributes, Japanese HPKI scheme) such as
    /// "Medical Doctor" when `qualification` is given.
    pub fn issue_qualified(
        &self,
        user: &str,
        key: &SlotKey,
        signature: bool,
        qualification: Option<&str>,
    ) -> Result<Vec<u8>, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        if let Some(q) = qualification {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    &[2, 5, 29, 9],
                    hcrole_extension(q),
                ));
        }
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

    /// [`TestCa::credential`] with an HPKI qualification.
    pub fn qualified_credential(
        &self,
        user: &str,
        key: SlotKey,
        signature: bool,
        qualification: Option<&str>,
    ) -> Result<SlotCredential, PkiError> {
        let cert_der = self.issue_qualified(user, &key, signature, qualification)?;
        Ok(SlotCredential { key, cert_der })
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

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xFF {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// The subjectDirectoryAttributes value carrying `qualification` as a
/// Japanese HPKI hcRole, laid out as in issued MEDIS HPKI certificates:
/// `SEQUENCE { SEQUENCE { OID 1.0.17090.0.1, SET { SET { SEQUENCE {
/// [0] SET { [0] OID 1.2.392.100495.1.6.1.1, [2] UTF8String } } } } } }`.
pub fn hcrole_extension(qualification: &str) -> Vec<u8> {
    const HCROLE: [u8; 6] = [0x28, 0x81, 0x85, 0x42, 0x00, 0x01];
    const SCHEME: [u8; 10] = [0x2a, 0x83, 0x08, 0x86, 0x91, 0x0f, 0x01, 0x06, 0x01, 0x01];
    let scheme = der(0xa0, &der(0x06, &SCHEME));
    let name = der(0xa2, &der(0x0c, qualification.as_bytes()));
    let coded = der(0x31, &[scheme, name].concat());
    let actor = der(0x30, &der(0xa0, &coded));
    let values = der(0x31, &der(0x31, &actor));
    let attribute = der(0x30, &[der(0x06, &HCROLE), values].concat());
    der(0x30, &attribute)
}

#[cfg(test)]
mod hcrole_tests {
    /// The same bytes as the MEDIS HPKI test certificate's extension.
    #[test]
    fn medis_layout() {
        let hex: String = super::hcrole_extension("Medical Doctor")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "303430320606288185420001312831263024a0223120a00c060a2a830886910f01060101a2100c0e4d65646963616c20446f63746f72"
        );
    }
}
