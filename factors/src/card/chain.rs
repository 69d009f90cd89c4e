//! Card certificate verification: chain, validity, constraints, revocation.
//!
//! Trust anchors and configured intermediates are held as DER and parsed on
//! each verification (parsing is cheap next to the signature checks, and it
//! keeps [`CardTrust`] free of borrowed lifetimes); the chain is verified on
//! every call.
//!
//! CRLs are parsed and their signatures checked once, when added (or when
//! their issuer is added after them): [`CardTrust`] keeps only the issuer
//! name, thisUpdate/nextUpdate, scope, the revoked serials and which
//! configured CA keys signed it, so a verification only compares dates and
//! looks the serial up. A CRL that no configured CA key signed is kept as DER
//! and its signature checked on each use, against the issuer on the path (an
//! intermediate the card presents); see [`CardTrust::unauthenticated_crls`].

use crate::card::{hpki, CardError, CardPublicKey, MAX_CERTIFICATE_LEN, MAX_CRL_LEN};
use crate::der;
use clinauth_policy::{Factor, UnixTime};
use ring::signature::{self, UnparsedPublicKey};
use x509_parser::oid_registry::{
    Oid, OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
};
use x509_parser::prelude::{
    AlgorithmIdentifier, CertificateRevocationList, FromDer, ParsedExtension, SubjectPublicKeyInfo,
    X509Certificate, X509Extension,
};
use x509_parser::x509::X509Version;

/// Most CA certificates (anchors plus intermediates) in one [`CardTrust`].
pub const MAX_CAS: usize = 64;
/// Most CRLs in one [`CardTrust`].
pub const MAX_CRLS: usize = 64;
/// Most intermediates a card may present with its certificate.
pub const MAX_PRESENTED_INTERMEDIATES: usize = 4;
/// Most CA certificates between the card certificate and its anchor, anchor included.
pub const MAX_CHAIN_DEPTH: usize = 6;
/// Most extensions in one certificate.
const MAX_EXTENSIONS: usize = 32;

const LEAF: &str = "card certificate";
const INTERMEDIATE: &str = "intermediate CA certificate";
const ANCHOR: &str = "trust anchor";

/// Whether the issuer of a certificate must publish a CRL we hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlRule {
    /// A current CRL signed by this CA must be configured; without one every
    /// certificate it issued is refused (fail closed).
    Required,
    /// Check a CRL if one is configured; accept without one.
    IfPresent,
}

/// What the card key is used for, which decides the key usage required of
/// the card certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// Login, unlock, step-up: `digitalSignature` (PIV 9A, HPKI 認証用).
    Authentication,
    /// Document signatures: `nonRepudiation` (HPKI 署名用, R-SIG-1).
    NonRepudiation,
}

impl KeyUse {
    fn name(self) -> &'static str {
        match self {
            KeyUse::Authentication => "digitalSignature",
            KeyUse::NonRepudiation => "nonRepudiation",
        }
    }
}

/// A card certificate that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCard {
    /// The subject distinguished name (RFC 4514 style).
    pub subject: String,
    /// The serial number, lowercase hex.
    pub serial: String,
    /// The card key, of an accepted type.
    pub public_key: CardPublicKey,
    /// HPKI qualification (ISO 17090 hcRole), e.g. "Medical Doctor".
    pub qualification: Option<String>,
    /// The certificate's notAfter (an offline bundle must not outlive it).
    pub not_after: UnixTime,
}

impl VerifiedCard {
    /// The policy evidence for a challenge signature by this card, once
    /// [`crate::card::verify_challenge`] succeeded. `pin_protected_key` comes
    /// from enrollment (the PIV slot's PIN policy, attested when enrolled).
    pub fn into_factor(self, pin_protected_key: bool) -> Factor {
        Factor::Smartcard {
            pin_protected_key,
            qualification: self.qualification,
        }
    }
}

#[derive(Debug, Clone)]
struct TrustedCa {
    der: Vec<u8>,
    anchor: bool,
    crl: CrlRule,
}

/// A CRL as kept by [`CardTrust::add_crl`]: checked and parsed once.
#[derive(Debug, Clone)]
struct TrustedCrl {
    /// The issuer Name, DER.
    issuer: Vec<u8>,
    /// thisUpdate, Unix seconds.
    this_update: i64,
    /// nextUpdate, Unix seconds (without one the CRL is never current).
    next_update: Option<i64>,
    /// Whether its scope ([`crl_covers`]) covers CA certificates.
    covers_ca: bool,
    /// Whether its scope covers end-entity certificates.
    covers_end_entity: bool,
    /// Revoked serial numbers, leading zeros stripped, sorted, deduplicated.
    revoked: Vec<Vec<u8>>,
    /// SubjectPublicKeyInfo (DER) of every configured CA key whose
    /// signature over this CRL verified.
    signers: Vec<Vec<u8>>,
    /// The DER, kept only while no configured CA key has verified the CRL:
    /// it may be signed by an intermediate the card presents, so its
    /// signature is then checked on each use against the issuer on the path.
    unverified_der: Option<Vec<u8>>,
}

impl TrustedCrl {
    fn new(crl: &CertificateRevocationList<'_>, der: &[u8]) -> TrustedCrl {
        let mut revoked: Vec<Vec<u8>> = crl
            .iter_revoked_certificates()
            .map(|r| strip_leading_zeros(r.raw_serial()).to_vec())
            .collect();
        revoked.sort_unstable();
        revoked.dedup();
        TrustedCrl {
            issuer: crl.issuer().as_raw().to_vec(),
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            covers_ca: crl_covers(crl, true),
            covers_end_entity: crl_covers(crl, false),
            revoked,
            signers: Vec::new(),
            unverified_der: Some(der.to_vec()),
        }
    }

    /// Checks the signature with a configured CA certificate of the
    /// issuer's name; on success remembers its key and drops the DER.
    fn authenticate_with(&mut self, ca: &X509Certificate<'_>) {
        if ca.subject().as_raw() != self.issuer.as_slice() {
            return;
        }
        let key = ca.public_key();
        if self.signers.iter().any(|s| s.as_slice() == key.raw) {
            return;
        }
        let signed = match self.unverified_der.as_deref().map(parse_crl) {
            Some(Ok(crl)) => crl_signed_by(&crl, key),
            _ => false,
        };
        if signed {
            self.signers.push(key.raw.to_vec());
            self.unverified_der = None;
        }
    }

    /// Whether `key` signed this CRL: a configured key verified when the
    /// CRL (or the CA) was added, or, for a CRL no configured key signed,
    /// a signature check now.
    fn signed_by(&self, key: &SubjectPublicKeyInfo<'_>) -> bool {
        if self.signers.iter().any(|s| s.as_slice() == key.raw) {
            return true;
        }
        match self.unverified_der.as_deref().map(parse_crl) {
            Some(Ok(crl)) => crl_signed_by(&crl, key),
            _ => false,
        }
    }

    fn lists(&self, serial: &[u8]) -> bool {
        self.revoked
            .binary_search_by(|s| s.as_slice().cmp(serial))
            .is_ok()
    }
}

/// Whether `key` made the CRL's signature (with an allowed algorithm).
fn crl_signed_by(crl: &CertificateRevocationList<'_>, key: &SubjectPublicKeyInfo<'_>) -> bool {
    crl.signature_algorithm == crl.tbs_cert_list.signature
        && verify_signed(
            key,
            &crl.signature_algorithm,
            &crl.signature_value.data,
            crl.signature_value.unused_bits,
            crl.tbs_cert_list.as_ref(),
            "CRL",
        )
        .is_ok()
}

/// The configured trust: anchors, intermediates and CRLs.
#[derive(Debug, Clone, Default)]
pub struct CardTrust {
    cas: Vec<TrustedCa>,
    crls: Vec<TrustedCrl>,
}

/// A CA certificate candidate during path building.
struct Candidate<'a> {
    cert: X509Certificate<'a>,
    anchor: bool,
    crl: CrlRule,
}

impl CardTrust {
    /// No anchors: nothing verifies until anchors are added.
    pub fn new() -> CardTrust {
        CardTrust::default()
    }

    /// Adds a trust anchor (a CA certificate, DER). `crl` says whether
    /// certificates it issues need a current CRL.
    pub fn add_anchor(&mut self, der: &[u8], crl: CrlRule) -> Result<(), CardError> {
        self.add_ca(der, true, crl)
    }

    /// Adds an intermediate CA certificate (DER) that chains to an anchor.
    pub fn add_intermediate(&mut self, der: &[u8], crl: CrlRule) -> Result<(), CardError> {
        self.add_ca(der, false, crl)
    }

    fn add_ca(&mut self, der: &[u8], anchor: bool, crl: CrlRule) -> Result<(), CardError> {
        if self.cas.len() >= MAX_CAS {
            return Err(CardError::TooMany {
                what: "CA certificates",
                max: MAX_CAS,
            });
        }
        let what = if anchor { ANCHOR } else { INTERMEDIATE };
        let cert = parse_certificate(der, what)?;
        check_is_ca(&cert)?;
        // CRLs added before their issuer are checked now.
        for crl in &mut self.crls {
            crl.authenticate_with(&cert);
        }
        self.cas.push(TrustedCa {
            der: der.to_vec(),
            anchor,
            crl,
        });
        Ok(())
    }

    /// Adds a CRL (DER). It is parsed and its signature checked here, with
    /// the configured CAs of its issuer name (and with CAs added later);
    /// only the parsed result is kept. A CRL that no configured CA key signed
    /// is kept too, unauthenticated: it counts only if the issuer on a
    /// verification path (an intermediate the card presents) signed it,
    /// checked on each use, and is otherwise ignored (and reported as
    /// [`CardError::CrlSignatureInvalid`] when a CRL is required). Its dates
    /// are checked at each verification.
    pub fn add_crl(&mut self, der: &[u8]) -> Result<(), CardError> {
        if self.crls.len() >= MAX_CRLS {
            return Err(CardError::TooMany {
                what: "CRLs",
                max: MAX_CRLS,
            });
        }
        let parsed = parse_crl(der)?;
        let mut crl = TrustedCrl::new(&parsed, der);
        for ca in &self.cas {
            let what = if ca.anchor { ANCHOR } else { INTERMEDIATE };
            if let Ok(cert) = parse_certificate(&ca.der, what) {
                crl.authenticate_with(&cert);
            }
        }
        self.crls.push(crl);
        Ok(())
    }

    /// How many CRLs no configured CA key has signed (so far). Each is
    /// either from an intermediate that cards present (its signature is then
    /// checked at every use) or not authentic (it is never used); a
    /// deployment that configures every CA that issues CRLs has none.
    pub fn unauthenticated_crls(&self) -> usize {
        self.crls
            .iter()
            .filter(|crl| crl.unverified_der.is_some())
            .count()
    }

    /// Verifies a card certificate (DER) at `now`: chain to an anchor
    /// (through configured intermediates or up to
    /// [`MAX_PRESENTED_INTERMEDIATES`] presented by the card), signatures,
    /// validity, CA constraints, key usage for `usage`, revocation, key type;
    /// and reads the HPKI qualification.
    pub fn verify(
        &self,
        card_certificate: &[u8],
        presented_intermediates: &[&[u8]],
        usage: KeyUse,
        now: UnixTime,
    ) -> Result<VerifiedCard, CardError> {
        if presented_intermediates.len() > MAX_PRESENTED_INTERMEDIATES {
            return Err(CardError::TooMany {
                what: "presented intermediates",
                max: MAX_PRESENTED_INTERMEDIATES,
            });
        }
        let leaf = parse_certificate(card_certificate, LEAF)?;
        check_validity(&leaf, LEAF, now)?;
        check_leaf(&leaf, usage)?;
        let public_key = CardPublicKey::from_spki(leaf.public_key())?;
        let qualification = hpki::qualification(&leaf)?;

        // Anchors first, so a path ends as soon as it can.
        let mut candidates = Vec::with_capacity(self.cas.len() + presented_intermediates.len());
        for anchor_first in [true, false] {
            for ca in self.cas.iter().filter(|ca| ca.anchor == anchor_first) {
                let what = if ca.anchor { ANCHOR } else { INTERMEDIATE };
                candidates.push(Candidate {
                    cert: parse_certificate(&ca.der, what)?,
                    anchor: ca.anchor,
                    crl: ca.crl,
                });
            }
        }
        for der in presented_intermediates {
            candidates.push(Candidate {
                cert: parse_certificate(der, INTERMEDIATE)?,
                anchor: false,
                // An issuer we were not configured with gets the strict rule.
                crl: CrlRule::Required,
            });
        }

        let path = build_path(&leaf, &candidates, now)?;

        // pathLenConstraint: path[i] has i intermediates below it.
        for (below, index) in path.iter().enumerate() {
            let issuer = candidates.get(*index).ok_or(CardError::NotACa)?;
            if let Some(limit) = path_len_constraint(&issuer.cert)? {
                if below > limit as usize {
                    return Err(CardError::PathTooLong);
                }
            }
        }

        // Revocation of every certificate below the anchor.
        let mut subject = &leaf;
        let mut subject_name = LEAF;
        for index in &path {
            let issuer = candidates.get(*index).ok_or(CardError::NotACa)?;
            self.check_revocation(subject, subject_name, issuer, now)?;
            subject = &issuer.cert;
            subject_name = INTERMEDIATE;
            if issuer.anchor {
                break;
            }
        }

        Ok(VerifiedCard {
            subject: leaf.subject().to_string(),
            serial: hex(strip_leading_zeros(leaf.raw_serial())),
            public_key,
            qualification,
            not_after: UnixTime(leaf.validity().not_after.timestamp()),
        })
    }

    /// Refuses `cert` if an authentic CRL from `issuer` lists it, or if the
    /// issuer's rule requires a current CRL and there is none.
    fn check_revocation(
        &self,
        cert: &X509Certificate<'_>,
        what: &'static str,
        issuer: &Candidate<'_>,
        now: UnixTime,
    ) -> Result<(), CardError> {
        let is_ca = cert.is_ca();
        let serial = strip_leading_zeros(cert.raw_serial());
        let issuer_may_sign_crls = match issuer.cert.key_usage() {
            Ok(Some(ku)) => ku.value.crl_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        let mut current = false;
        let mut stale = false;
        let mut bad_signature = false;
        for crl in &self.crls {
            if crl.issuer.as_slice() != issuer.cert.subject().as_raw() {
                continue;
            }
            let covers = if is_ca {
                crl.covers_ca
            } else {
                crl.covers_end_entity
            };
            if !covers {
                continue;
            }
            if !issuer_may_sign_crls || !crl.signed_by(issuer.cert.public_key()) {
                bad_signature = true;
                continue;
            }
            // Authentic: a listed serial is revoked whatever the dates say.
            if crl.lists(serial) {
                return Err(CardError::Revoked(what));
            }
            match crl.next_update {
                Some(next) if crl.this_update <= now.0 && now.0 <= next => current = true,
                _ => stale = true,
            }
        }
        if current || issuer.crl == CrlRule::IfPresent {
            return Ok(());
        }
        Err(if stale {
            CardError::CrlStale(what)
        } else if bad_signature {
            CardError::CrlSignatureInvalid(what)
        } else {
            CardError::CrlMissing(what)
        })
    }
}

/// Whether a CRL's scope (issuingDistributionPoint) covers a certificate.
/// CRLs with features we do not process (indirect, partitioned by reason,
/// delta, unknown critical extensions) cover nothing, so a required CRL
/// must be a plain full CRL.
fn crl_covers(crl: &CertificateRevocationList<'_>, is_ca: bool) -> bool {
    for ext in crl.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::IssuingDistributionPoint(idp)
                if idp.indirect_crl
                    || idp.only_some_reasons.is_some()
                    || idp.only_contains_attribute_certs
                    || (idp.only_contains_ca_certs && !is_ca)
                    || (idp.only_contains_user_certs && is_ca) =>
            {
                return false;
            }
            ParsedExtension::IssuingDistributionPoint(_) => {}
            ParsedExtension::CRLNumber(_) | ParsedExtension::AuthorityKeyIdentifier(_) => {}
            _ if ext.critical => return false,
            _ => {}
        }
    }
    true
}

/// Finds issuers from `leaf` up to an anchor; returns candidate indexes,
/// nearest issuer first, ending with the anchor.
fn build_path(
    leaf: &X509Certificate<'_>,
    candidates: &[Candidate<'_>],
    now: UnixTime,
) -> Result<Vec<usize>, CardError> {
    let mut path: Vec<usize> = Vec::new();
    let mut current = leaf;
    let mut current_name = LEAF;
    for _ in 0..MAX_CHAIN_DEPTH {
        let mut failure = CardError::UnknownIssuer(current_name);
        let mut found = None;
        for (index, candidate) in candidates.iter().enumerate() {
            if path.contains(&index)
                || candidate.cert.subject().as_raw() != current.issuer().as_raw()
            {
                continue;
            }
            match check_issuer(current, current_name, candidate, now) {
                Ok(()) => {
                    found = Some(index);
                    break;
                }
                Err(e) => failure = e,
            }
        }
        let index = found.ok_or(failure)?;
        path.push(index);
        let issuer = candidates.get(index).ok_or(CardError::NotACa)?;
        if issuer.anchor {
            return Ok(path);
        }
        current = &issuer.cert;
        current_name = INTERMEDIATE;
    }
    Err(CardError::PathTooLong)
}

/// Whether `issuer` issued `cert` and may issue certificates at `now`.
fn check_issuer(
    cert: &X509Certificate<'_>,
    cert_name: &'static str,
    issuer: &Candidate<'_>,
    now: UnixTime,
) -> Result<(), CardError> {
    verify_signed(
        issuer.cert.public_key(),
        &cert.signature_algorithm,
        &cert.signature_value.data,
        cert.signature_value.unused_bits,
        cert.tbs_certificate.as_ref(),
        cert_name,
    )
    .map_err(|e| match e {
        CardError::BadSignature => CardError::ChainSignatureInvalid(cert_name),
        other => other,
    })?;
    let issuer_name = if issuer.anchor { ANCHOR } else { INTERMEDIATE };
    check_validity(&issuer.cert, issuer_name, now)?;
    check_is_ca(&issuer.cert)
}

/// basicConstraints CA:TRUE, keyCertSign if keyUsage is present, and no
/// unknown critical extension.
fn check_is_ca(cert: &X509Certificate<'_>) -> Result<(), CardError> {
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        _ => return Err(CardError::NotACa),
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => return Err(CardError::NotACa),
        Ok(_) => {}
        Err(_) => return Err(CardError::NotACa),
    }
    check_critical_extensions(cert, "CA certificate")
}

fn path_len_constraint(cert: &X509Certificate<'_>) -> Result<Option<u32>, CardError> {
    match cert.basic_constraints() {
        Ok(Some(bc)) => Ok(bc.value.path_len_constraint),
        _ => Err(CardError::NotACa),
    }
}

/// The card certificate: v3, not a CA, has the key usage for `usage`.
fn check_leaf(cert: &X509Certificate<'_>, usage: KeyUse) -> Result<(), CardError> {
    if cert.version() != X509Version::V3 {
        return Err(CardError::MalformedCertificate {
            what: LEAF,
            reason: "not an X.509 v3 certificate",
        });
    }
    if let Ok(Some(bc)) = cert.basic_constraints() {
        if bc.value.ca {
            return Err(CardError::LeafIsCa);
        }
    }
    let has_usage = match cert.key_usage() {
        Ok(Some(ku)) => match usage {
            KeyUse::Authentication => ku.value.digital_signature(),
            KeyUse::NonRepudiation => ku.value.non_repudiation(),
        },
        _ => false,
    };
    if !has_usage {
        return Err(CardError::KeyUsage(usage.name()));
    }
    check_critical_extensions(cert, LEAF)
}

/// Refuses critical extensions this verifier does not process (RFC 5280 §4.2).
fn check_critical_extensions(
    cert: &X509Certificate<'_>,
    what: &'static str,
) -> Result<(), CardError> {
    for ext in cert.extensions() {
        if ext.critical && !processed(ext) {
            return Err(CardError::UnknownCriticalExtension(what));
        }
    }
    Ok(())
}

fn processed(ext: &X509Extension<'_>) -> bool {
    matches!(
        ext.parsed_extension(),
        ParsedExtension::BasicConstraints(_)
            | ParsedExtension::KeyUsage(_)
            | ParsedExtension::CertificatePolicies(_)
            | ParsedExtension::ExtendedKeyUsage(_)
            | ParsedExtension::SubjectAlternativeName(_)
    ) || hpki::is_subject_directory_attributes(ext.oid.as_bytes())
}

fn check_validity(
    cert: &X509Certificate<'_>,
    what: &'static str,
    now: UnixTime,
) -> Result<(), CardError> {
    let validity = cert.validity();
    if now.0 < validity.not_before.timestamp() {
        return Err(CardError::NotYetValid(what));
    }
    if now.0 > validity.not_after.timestamp() {
        return Err(CardError::Expired(what));
    }
    Ok(())
}

/// Parses a whole DER certificate and applies the structural checks.
fn parse_certificate<'a>(
    der: &'a [u8],
    what: &'static str,
) -> Result<X509Certificate<'a>, CardError> {
    let malformed = |reason| CardError::MalformedCertificate { what, reason };
    if der.is_empty() {
        return Err(CardError::Empty(what));
    }
    if der.len() > MAX_CERTIFICATE_LEN {
        return Err(CardError::TooLarge {
            what,
            len: der.len(),
            max: MAX_CERTIFICATE_LEN,
        });
    }
    if !strict_signed_framing(der, false) {
        return Err(malformed("not DER X.509"));
    }
    let (rest, cert) = X509Certificate::from_der(der).map_err(|_| malformed("not DER X.509"))?;
    if !rest.is_empty() {
        return Err(malformed("trailing bytes"));
    }
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(malformed("signature algorithm differs from the signed one"));
    }
    let extensions = cert.extensions();
    if extensions.len() > MAX_EXTENSIONS {
        return Err(malformed("too many extensions"));
    }
    for (i, ext) in extensions.iter().enumerate() {
        if ext.parsed_extension().error().is_some() {
            return Err(malformed("unparsable extension"));
        }
        if extensions
            .iter()
            .skip(i + 1)
            .any(|other| other.oid == ext.oid)
        {
            return Err(malformed("duplicate extension"));
        }
    }
    Ok(cert)
}

fn parse_crl(der: &[u8]) -> Result<CertificateRevocationList<'_>, CardError> {
    if der.is_empty() {
        return Err(CardError::Empty("CRL"));
    }
    if der.len() > MAX_CRL_LEN {
        return Err(CardError::TooLarge {
            what: "CRL",
            len: der.len(),
            max: MAX_CRL_LEN,
        });
    }
    if !strict_signed_framing(der, true) {
        return Err(CardError::MalformedCrl("not DER X.509 CRL"));
    }
    let (rest, crl) = CertificateRevocationList::from_der(der)
        .map_err(|_| CardError::MalformedCrl("not DER X.509 CRL"))?;
    if !rest.is_empty() {
        return Err(CardError::MalformedCrl("trailing bytes"));
    }
    Ok(crl)
}

/// Checks the unsigned outer framing that x509-parser reads leniently:
/// `SEQUENCE { tbs SEQUENCE, signatureAlgorithm SEQUENCE, signature BIT STRING }`
/// with nothing after it, and the outer signatureAlgorithm byte-identical to
/// the one inside the signed part. Without this, bytes outside the signature
/// could be changed and the certificate would still verify (malleability).
fn strict_signed_framing(der: &[u8], is_crl: bool) -> bool {
    let Some(outer) = der::read_one(der) else {
        return false;
    };
    if outer.tag != der::tag::SEQUENCE {
        return false;
    }
    let Some([tbs, algorithm, signature]) =
        der::read_all(outer.value).and_then(|items| <[der::Tlv<'_>; 3]>::try_from(items).ok())
    else {
        return false;
    };
    if tbs.tag != der::tag::SEQUENCE
        || algorithm.tag != der::tag::SEQUENCE
        || signature.tag != der::tag::BIT_STRING
    {
        return false;
    }
    let Some(fields) = der::read_all(tbs.value) else {
        return false;
    };
    // Certificate: [0] version, serial INTEGER, signature AlgorithmIdentifier.
    // CRL: optional version INTEGER, signature AlgorithmIdentifier.
    let inner = if is_crl {
        match fields.first() {
            Some(first) if first.tag == der::tag::INTEGER => fields.get(1),
            first => first,
        }
    } else {
        let serial_at = match fields.first() {
            Some(first) if first.tag == der::tag::explicit(0) => 1,
            _ => 0,
        };
        match fields.get(serial_at) {
            Some(serial) if serial.tag == der::tag::INTEGER => fields.get(serial_at + 1),
            _ => None,
        }
    };
    inner.is_some_and(|inner| *inner == algorithm)
}

/// Verifies a certificate or CRL signature with the issuer's key, allowing
/// only RSA PKCS#1 v1.5 with SHA-256/384/512 (RSA 2048..8192) and ECDSA
/// with SHA-256/384 on P-256/P-384. SHA-1, RSA-PSS and others are refused.
fn verify_signed(
    issuer_key: &SubjectPublicKeyInfo<'_>,
    algorithm: &AlgorithmIdentifier<'_>,
    signature: &[u8],
    unused_bits: u8,
    signed: &[u8],
    what: &'static str,
) -> Result<(), CardError> {
    let unsupported = CardError::UnsupportedSignatureAlgorithm(what);
    if unused_bits != 0 || issuer_key.subject_public_key.unused_bits != 0 {
        return Err(CardError::BadSignature);
    }
    let key_algorithm = &issuer_key.algorithm.algorithm;
    let sig = &algorithm.algorithm;
    let verification: &dyn signature::VerificationAlgorithm =
        if *key_algorithm == OID_PKCS1_RSAENCRYPTION {
            if sig == &OID_PKCS1_SHA256WITHRSA {
                &signature::RSA_PKCS1_2048_8192_SHA256
            } else if sig == &OID_PKCS1_SHA384WITHRSA {
                &signature::RSA_PKCS1_2048_8192_SHA384
            } else if sig == &OID_PKCS1_SHA512WITHRSA {
                &signature::RSA_PKCS1_2048_8192_SHA512
            } else {
                return Err(unsupported);
            }
        } else if *key_algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve: Oid<'_> = issuer_key
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or(CardError::MalformedKey)?;
            let sha384 = if sig == &OID_SIG_ECDSA_WITH_SHA256 {
                false
            } else if sig == &OID_SIG_ECDSA_WITH_SHA384 {
                true
            } else {
                return Err(unsupported);
            };
            if curve == OID_EC_P256 {
                if sha384 {
                    &signature::ECDSA_P256_SHA384_ASN1
                } else {
                    &signature::ECDSA_P256_SHA256_ASN1
                }
            } else if curve == OID_NIST_EC_P384 {
                if sha384 {
                    &signature::ECDSA_P384_SHA384_ASN1
                } else {
                    &signature::ECDSA_P384_SHA256_ASN1
                }
            } else {
                return Err(unsupported);
            }
        } else {
            return Err(unsupported);
        };
    UnparsedPublicKey::new(verification, &issuer_key.subject_public_key.data)
        .verify(signed, signature)
        .map_err(|_| CardError::BadSignature)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "00".to_owned();
    }
    hex::encode(bytes)
}
