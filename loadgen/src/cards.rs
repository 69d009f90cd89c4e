//! Simulated smartcards: a card CA (with an empty CRL, so the server can
//! require one), card certificates with ECDSA P-256 keys, and the
//! challenge signature a card makes (`clinauth_factors::card::challenge_message`).

use crate::Error;
use clinauth_policy::Purpose;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertifiedIssuer, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

/// The current calendar year (close enough for validity windows of years).
fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(56)
}

fn named(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

/// A card-issuing CA.
pub struct CardCa {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// One card: its certificate (DER) and its key.
pub struct Card {
    /// The authentication certificate, DER.
    pub cert: Vec<u8>,
    /// The key as PKCS#8 DER (kept to write a fixture file).
    pub pkcs8: Vec<u8>,
    signer: EcdsaKeyPair,
}

impl CardCa {
    /// A new self-signed P-256 CA.
    pub fn new(name: &str) -> Result<CardCa, Error> {
        let year = this_year();
        let mut p = named(name);
        p.not_before = date_time_ymd(year - 2, 1, 1);
        p.not_after = date_time_ymd(year + 10, 1, 1);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::ctx("CA key"))?;
        let ca = CertifiedIssuer::self_signed(p, key).map_err(Error::ctx("CA certificate"))?;
        Ok(CardCa { ca })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.ca.pem()
    }

    /// An empty CRL, current for a year either side of today (DER).
    pub fn crl_der(&self) -> Result<Vec<u8>, Error> {
        let year = this_year();
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(year - 1, 1, 1),
            next_update: date_time_ymd(year + 2, 1, 1),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: vec![],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)
        .map_err(Error::ctx("CRL"))?;
        Ok(crl.der().to_vec())
    }

    /// Issues a card (P-256 key, digitalSignature) to `cn` with `serial`.
    pub fn issue(&self, cn: &str, serial: u64) -> Result<Card, Error> {
        let year = this_year();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(Error::ctx("card key"))?;
        let mut p = named(cn);
        p.not_before = date_time_ymd(year - 1, 1, 1);
        p.not_after = date_time_ymd(year + 3, 1, 1);
        let mut serial_bytes = vec![0x20];
        serial_bytes.extend_from_slice(&serial.to_be_bytes());
        p.serial_number = Some(SerialNumber::from_slice(&serial_bytes));
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p
            .signed_by(&key, &self.ca)
            .map_err(Error::ctx("card certificate"))?
            .der()
            .to_vec();
        Card::from_parts(cert, key.serialize_der())
    }
}

impl Card {
    /// A card from its certificate and PKCS#8 key.
    pub fn from_parts(cert: Vec<u8>, pkcs8: Vec<u8>) -> Result<Card, Error> {
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(Error::ctx("card key"))?;
        Ok(Card {
            cert,
            pkcs8,
            signer,
        })
    }

    /// What the card returns for a challenge: an ECDSA P-256 (DER)
    /// signature over the challenge message.
    pub fn sign(
        &self,
        rng: &SystemRandom,
        nonce: &[u8],
        user: &str,
        workstation: &str,
        purpose: Purpose,
    ) -> Result<Vec<u8>, Error> {
        let nonce: &[u8; 32] = nonce
            .try_into()
            .map_err(|_| Error("the nonce is not 32 bytes".into()))?;
        let message = clinauth_factors::card::challenge_message(nonce, user, workstation, purpose)
            .map_err(Error::ctx("challenge message"))?;
        Ok(self
            .signer
            .sign(rng, &message)
            .map_err(Error::ctx("card signature"))?
            .as_ref()
            .to_vec())
    }
}
