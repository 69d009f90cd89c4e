//! The HPKI qualification (ISO 17090 hcRole) in a card certificate (R-SIG-1).
//!
//! Japanese HPKI certificates (MHLW "保健医療福祉分野PKI認証局 証明書ポリシ")
//! carry the holder's national qualification in the subjectDirectoryAttributes
//! extension (2.5.29.9) as the ISO 17090 `hcRole` attribute:
//!
//! ```text
//! SubjectDirectoryAttributes ::= SEQUENCE OF Attribute
//! Attribute ::= SEQUENCE { type OBJECT IDENTIFIER, values SET OF ANY }
//!   -- type = id-hcpki-at-healthcareactor (hcRole) = 1.0.17090.0.1
//! HCActorData ::= SET OF HCActor
//! HCActor ::= SEQUENCE {
//!     codedData            [0] EXPLICIT CodedData OPTIONAL,
//!     regionalHCActorData  [1] EXPLICIT SEQUENCE OF RegionalData OPTIONAL }
//! CodedData ::= SET {
//!     codingSchemeReference [0] EXPLICIT OBJECT IDENTIFIER,
//!     codeDataValue         [1] EXPLICIT UTF8String OPTIONAL,
//!     codeDataFreeText      [2] EXPLICIT DirectoryString OPTIONAL }
//! ```
//!
//! In Japanese HPKI the coding scheme is 1.2.392.100495.1.6.1.1 and the
//! qualification is the English name in `codeDataFreeText`, e.g.
//! "Medical Doctor", "Pharmacist", "Director of Hospital". This layout was
//! checked byte for byte against a MEDIS HPKI test certificate (issuer
//! "HPKI-01-MedisSignCA2-forNonRepudiation", 2022), whose extension reads
//! `1.0.17090.0.1 → SET { SET { SEQUENCE { [0] SET { [0] OID 1.2.392.100495.1.6.1.1,
//! [2] UTF8String "Medical Doctor" } } } }`.

use crate::card::CardError;
use crate::der::{self, tag};
use x509_parser::prelude::X509Certificate;

/// hcRole attribute type, `id-hcpki-at-healthcareactor` = 1.0.17090.0.1 (ISO 17090-3).
pub const HCROLE_ATTRIBUTE_OID: &str = "1.0.17090.0.1";
/// The Japanese HPKI coding scheme for qualifications, 1.2.392.100495.1.6.1.1
/// (MHLW HPKI certificate policy; seen in issued MEDIS HPKI certificates).
pub const JP_HPKI_QUALIFICATION_SCHEME_OID: &str = "1.2.392.100495.1.6.1.1";

/// DER content octets of 2.5.29.9 (subjectDirectoryAttributes).
const SUBJECT_DIRECTORY_ATTRIBUTES: &[u8] = &[0x55, 0x1d, 0x09];
/// DER content octets of 1.0.17090.0.1.
const HCROLE: &[u8] = &[0x28, 0x81, 0x85, 0x42, 0x00, 0x01];
/// DER content octets of 1.2.392.100495.1.6.1.1.
const JP_HPKI_SCHEME: &[u8] = &[0x2a, 0x83, 0x08, 0x86, 0x91, 0x0f, 0x01, 0x06, 0x01, 0x01];

/// Longest qualification name accepted, in bytes.
const MAX_QUALIFICATION_LEN: usize = 128;

/// Whether `oid_der` (content octets) is subjectDirectoryAttributes.
pub(crate) fn is_subject_directory_attributes(oid_der: &[u8]) -> bool {
    oid_der == SUBJECT_DIRECTORY_ATTRIBUTES
}

/// The first qualification in the certificate's hcRole attribute that uses
/// the Japanese HPKI scheme, or `None` when the certificate has none.
/// A present but malformed attribute is an error (fail closed).
pub(crate) fn qualification(cert: &X509Certificate<'_>) -> Result<Option<String>, CardError> {
    for ext in cert.extensions() {
        if is_subject_directory_attributes(ext.oid.as_bytes()) {
            return qualification_from_extension(ext.value);
        }
    }
    Ok(None)
}

/// Parses the extension value (the DER `SubjectDirectoryAttributes`).
pub(crate) fn qualification_from_extension(value: &[u8]) -> Result<Option<String>, CardError> {
    let bad = || CardError::MalformedHcRole;
    let attributes = der::read_one(value).ok_or_else(bad)?;
    if attributes.tag != tag::SEQUENCE {
        return Err(bad());
    }
    for attribute in der::read_all(attributes.value).ok_or_else(bad)? {
        let [kind, values] = expect_n::<2>(attribute, tag::SEQUENCE)?;
        if kind.tag != tag::OID || kind.value != HCROLE {
            continue; // another directory attribute (e.g. dateOfBirth)
        }
        if values.tag != tag::SET {
            return Err(bad());
        }
        for actor_data in der::read_all(values.value).ok_or_else(bad)? {
            if actor_data.tag != tag::SET {
                return Err(bad());
            }
            for actor in der::read_all(actor_data.value).ok_or_else(bad)? {
                if let Some(found) = from_actor(actor)? {
                    return Ok(Some(found));
                }
            }
        }
    }
    Ok(None)
}

/// One `HCActor`: returns its qualification if it is coded in the JP scheme.
fn from_actor(actor: der::Tlv<'_>) -> Result<Option<String>, CardError> {
    let bad = || CardError::MalformedHcRole;
    if actor.tag != tag::SEQUENCE {
        return Err(bad());
    }
    let Some(coded) = der::read_all(actor.value)
        .ok_or_else(bad)?
        .into_iter()
        .find(|t| t.tag == tag::explicit(0))
    else {
        return Ok(None); // regional data only
    };
    let coded_set = der::read_one(coded.value).ok_or_else(bad)?;
    if coded_set.tag != tag::SET {
        return Err(bad());
    }
    let mut scheme = None;
    let mut value = None;
    let mut free_text = None;
    for field in der::read_all(coded_set.value).ok_or_else(bad)? {
        let inner = der::read_one(field.value).ok_or_else(bad)?;
        match field.tag {
            t if t == tag::explicit(0) && inner.tag == tag::OID => scheme = Some(inner.value),
            t if t == tag::explicit(1) && inner.tag == tag::UTF8_STRING => {
                value = Some(inner.value)
            }
            t if t == tag::explicit(2)
                && (inner.tag == tag::UTF8_STRING || inner.tag == tag::PRINTABLE_STRING) =>
            {
                free_text = Some(inner.value)
            }
            _ => return Err(bad()),
        }
    }
    if scheme.ok_or_else(bad)? != JP_HPKI_SCHEME {
        return Ok(None);
    }
    let text = free_text.or(value).ok_or_else(bad)?;
    if text.is_empty() || text.len() > MAX_QUALIFICATION_LEN {
        return Err(bad());
    }
    let text = std::str::from_utf8(text).map_err(|_| bad())?;
    if text.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(Some(text.to_owned()))
}

/// The `N` elements of a constructed value with tag `expected`.
fn expect_n<const N: usize>(
    tlv: der::Tlv<'_>,
    expected: u8,
) -> Result<[der::Tlv<'_>; N], CardError> {
    if tlv.tag != expected {
        return Err(CardError::MalformedHcRole);
    }
    der::read_all(tlv.value)
        .and_then(|items| <[der::Tlv<'_>; N]>::try_from(items).ok())
        .ok_or(CardError::MalformedHcRole)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subjectDirectoryAttributes value of the MEDIS HPKI test certificate.
    const MEDIS_SAMPLE: &str = "303430320606288185420001312831263024a0223120a00c060a2a830886910f01060101a2100c0e4d65646963616c20446f63746f72";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn r_sig_1_reads_medis_hpki_sample() {
        assert_eq!(
            qualification_from_extension(&hex(MEDIS_SAMPLE)),
            Ok(Some("Medical Doctor".to_owned()))
        );
    }

    #[test]
    fn other_scheme_is_not_a_qualification() {
        let mut other = hex(MEDIS_SAMPLE);
        // last arc of the scheme OID: ...1.6.1.1 -> ...1.6.1.9
        let at = other
            .windows(JP_HPKI_SCHEME.len())
            .position(|w| w == JP_HPKI_SCHEME)
            .unwrap();
        other[at + JP_HPKI_SCHEME.len() - 1] = 9;
        assert_eq!(qualification_from_extension(&other), Ok(None));
    }

    #[test]
    fn malformed_attribute_is_refused_not_ignored() {
        let good = hex(MEDIS_SAMPLE);
        for cut in 1..good.len() {
            assert!(
                qualification_from_extension(&good[..cut]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut control = good.clone();
        let last = control.len() - 1;
        control[last] = 0x07; // BEL inside the name
        assert_eq!(
            qualification_from_extension(&control),
            Err(CardError::MalformedHcRole)
        );
    }
}
