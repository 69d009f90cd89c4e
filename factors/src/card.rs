//! Smartcard factor (PIV, HPKI): the challenge the card signs, the card's
//! public key, signature verification, and the certificate checks.
//!
//! # What a verified card signature proves
//!
//! The server issues a fresh 32-byte nonce. The agent builds
//! [`challenge_message`] from the nonce, the user, the workstation and the
//! purpose, and has the card sign it (PIV GENERAL AUTHENTICATE, slot 9A):
//!
//! - **ECDSA P-256**: the agent sends [`sha256`]`(message)`; the card returns a
//!   DER ECDSA signature, which verifies as `ECDSA_P256_SHA256_ASN1` over
//!   `message`.
//! - **RSA 2048..4096**: the agent sends [`pkcs1_v15_sha256_block`]`(message, k)`
//!   and the card applies its raw private-key operation; the result is an
//!   ordinary RSASSA-PKCS1-v1_5 SHA-256 signature over `message`.
//!
//! [`verify_challenge`] then proves possession of the card key for exactly
//! that nonce, user, workstation and purpose (R-AUTH-3: a signature made for
//! one workstation or purpose is useless for another). The nonce's single use
//! is the server's job (it owns the challenge table).
//!
//! [`CardTrust::verify`] checks the card certificate: chain to a configured
//! trust anchor, validity at `now`, CA constraints, key usage, revocation
//! (fail closed when a CRL is required), the key type, and reads the HPKI
//! qualification (ISO 17090 hcRole, R-SIG-1). The result, with whether the
//! card key is PIN-protected (known from enrollment, not from the
//! certificate), becomes [`clinauth_policy::Factor::Smartcard`] through
//! [`VerifiedCard::into_factor`].

mod chain;
mod hpki;

pub use chain::{
    CardTrust, CrlRule, KeyUse, VerifiedCard, MAX_CAS, MAX_CHAIN_DEPTH, MAX_CRLS,
    MAX_PRESENTED_INTERMEDIATES,
};
pub use hpki::{HCROLE_ATTRIBUTE_OID, JP_HPKI_QUALIFICATION_SCHEME_OID};

use clinauth_policy::Purpose;
use ring::digest;
use ring::signature::{self, UnparsedPublicKey};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::{FromDer, SubjectPublicKeyInfo};
use x509_parser::public_key::PublicKey;

/// Domain separation prefix of the card challenge (version 1).
pub const CHALLENGE_DOMAIN: &[u8] = b"clinauth-card-challenge-v1\0";
/// Length of the server nonce.
pub const NONCE_LEN: usize = 32;
/// Longest user name accepted in a challenge, in bytes.
pub const MAX_USER_LEN: usize = 256;
/// Longest workstation ID accepted in a challenge, in bytes.
pub const MAX_WORKSTATION_LEN: usize = 256;
/// Longest signature accepted (RSA-4096 is 512 bytes; ECDSA P-256 DER at most 72).
pub const MAX_SIGNATURE_LEN: usize = 512;
/// Longest message [`verify_signature`] accepts.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Longest DER certificate accepted.
pub const MAX_CERTIFICATE_LEN: usize = 16 * 1024;
/// Longest DER CRL accepted.
pub const MAX_CRL_LEN: usize = 8 * 1024 * 1024;
/// Longest DER SubjectPublicKeyInfo accepted by [`CardPublicKey::from_spki_der`].
pub const MAX_SPKI_LEN: usize = 2048;

/// Why a card signature or certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// An input is larger than its limit.
    #[error("{what} is too large ({len} bytes, at most {max})")]
    TooLarge {
        /// Which input.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A required input is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
    /// More items than allowed (trust anchors, CRLs, presented intermediates).
    #[error("too many {what} (at most {max})")]
    TooMany {
        /// Which items.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The RSA modulus length is outside 2048..=4096 bits.
    #[error("RSA modulus of {0} bytes is not supported (256..=512)")]
    ModulusLength(usize),
    /// A certificate could not be parsed or breaks X.509 structure rules.
    #[error("malformed {what}: {reason}")]
    MalformedCertificate {
        /// Which certificate.
        what: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A CRL could not be parsed.
    #[error("malformed CRL: {0}")]
    MalformedCrl(&'static str),
    /// A public key could not be parsed.
    #[error("malformed public key")]
    MalformedKey,
    /// The card key is not ECDSA P-256 or RSA 2048..=4096.
    #[error("card key type not accepted: {0} (only ECDSA P-256 and RSA 2048..4096)")]
    UnsupportedKey(&'static str),
    /// A certificate or CRL is signed with an algorithm not on the allow-list.
    #[error("signature algorithm not accepted on {0}")]
    UnsupportedSignatureAlgorithm(&'static str),
    /// The card's signature over the challenge does not verify.
    #[error("card signature does not verify")]
    BadSignature,
    /// A certificate in the chain is past its notAfter.
    #[error("{0} has expired")]
    Expired(&'static str),
    /// A certificate in the chain is before its notBefore.
    #[error("{0} is not yet valid")]
    NotYetValid(&'static str),
    /// No configured or presented CA has the issuer's name.
    #[error("no trusted issuer found for the {0}")]
    UnknownIssuer(&'static str),
    /// A CA with the issuer's name exists but its key did not sign the certificate.
    #[error("the {0} is not signed by any trusted issuer of that name")]
    ChainSignatureInvalid(&'static str),
    /// An issuer lacks basicConstraints CA:TRUE, or keyCertSign.
    #[error("an issuer in the chain is not a CA")]
    NotACa,
    /// The chain is longer than allowed by the depth limit or a pathLenConstraint.
    #[error("certificate chain too long")]
    PathTooLong,
    /// The card certificate is itself a CA certificate.
    #[error("the card certificate is a CA certificate")]
    LeafIsCa,
    /// The card certificate lacks the key usage the purpose needs.
    #[error("the card certificate lacks key usage {0}")]
    KeyUsage(&'static str),
    /// A certificate carries a critical extension this verifier does not process.
    #[error("{0} has an unknown critical extension")]
    UnknownCriticalExtension(&'static str),
    /// A current, authentic CRL lists the certificate.
    #[error("the {0} is revoked")]
    Revoked(&'static str),
    /// The issuer must have a CRL and none was configured.
    #[error("no CRL for the issuer of the {0}, and one is required")]
    CrlMissing(&'static str),
    /// The issuer's only CRLs are outside thisUpdate..=nextUpdate at `now`.
    #[error("the CRL for the issuer of the {0} is stale, and a current one is required")]
    CrlStale(&'static str),
    /// A CRL with the issuer's name is not signed by the issuer.
    #[error("the CRL for the issuer of the {0} has an invalid signature")]
    CrlSignatureInvalid(&'static str),
    /// The HPKI hcRole attribute is present but malformed.
    #[error("malformed HPKI hcRole attribute")]
    MalformedHcRole,
}

/// The challenge the card signs, shared by server and agent:
///
/// `CHALLENGE_DOMAIN || nonce || lp(user) || lp(workstation) || lp(purpose)`,
/// where `lp(x)` is the 2-byte big-endian length of `x` followed by `x`.
///
/// Refuses an empty or over-long user or workstation (so the length prefixes
/// never overflow and the encoding stays unambiguous).
pub fn challenge_message(
    nonce: &[u8; NONCE_LEN],
    user: &str,
    workstation: &str,
    purpose: Purpose,
) -> Result<Vec<u8>, CardError> {
    let mut out = Vec::with_capacity(
        CHALLENGE_DOMAIN.len() + NONCE_LEN + 6 + user.len() + workstation.len() + 16,
    );
    out.extend_from_slice(CHALLENGE_DOMAIN);
    out.extend_from_slice(nonce);
    push_length_prefixed(&mut out, "user", user.as_bytes(), MAX_USER_LEN)?;
    push_length_prefixed(
        &mut out,
        "workstation",
        workstation.as_bytes(),
        MAX_WORKSTATION_LEN,
    )?;
    push_length_prefixed(&mut out, "purpose", purpose.as_str().as_bytes(), 64)?;
    Ok(out)
}

fn push_length_prefixed(
    out: &mut Vec<u8>,
    what: &'static str,
    field: &[u8],
    max: usize,
) -> Result<(), CardError> {
    if field.is_empty() {
        return Err(CardError::Empty(what));
    }
    let len = u16::try_from(field.len())
        .ok()
        .filter(|_| field.len() <= max)
        .ok_or(CardError::TooLarge {
            what,
            len: field.len(),
            max,
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
    Ok(())
}

/// SHA-256 of `message`: what the agent sends to an ECDSA card.
pub fn sha256(message: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, message).as_ref());
    out
}

/// DER `DigestInfo` prefix for SHA-256 (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// The EMSA-PKCS1-v1_5 block for SHA-256 (RFC 8017 §9.2) that the agent
/// sends to an RSA card for a raw private-key operation:
/// `0x00 0x01 0xFF.. 0x00 DigestInfo(SHA-256(message))`, `modulus_len` bytes.
///
/// `modulus_len` is the key size in bytes: 256..=512 (RSA 2048..4096).
pub fn pkcs1_v15_sha256_block(message: &[u8], modulus_len: usize) -> Result<Vec<u8>, CardError> {
    if !(256..=512).contains(&modulus_len) {
        return Err(CardError::ModulusLength(modulus_len));
    }
    let t_len = SHA256_DIGEST_INFO_PREFIX.len() + 32;
    // modulus_len >= 256 so the padding is far above the 8-byte minimum.
    let pad = modulus_len - 3 - t_len;
    let mut block = Vec::with_capacity(modulus_len);
    block.push(0x00);
    block.push(0x01);
    block.extend(std::iter::repeat_n(0xff, pad));
    block.push(0x00);
    block.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
    block.extend_from_slice(&sha256(message));
    Ok(block)
}

/// What the agent sends to the card's signature key to sign a document's
/// SHA-256 `digest` (R-SIG-1): the digest itself for ECDSA, the
/// EMSA-PKCS1-v1_5 block around it for RSA (`modulus_len` bytes).
pub fn digest_signature_input(kind: CardKeyKind, digest: &[u8; 32]) -> Result<Vec<u8>, CardError> {
    match kind {
        CardKeyKind::EcdsaP256 => Ok(digest.to_vec()),
        CardKeyKind::Rsa { bits } => {
            let modulus_len = usize::from(bits).div_ceil(8);
            if !(256..=512).contains(&modulus_len) {
                return Err(CardError::ModulusLength(modulus_len));
            }
            let t_len = SHA256_DIGEST_INFO_PREFIX.len() + 32;
            let pad = modulus_len - 3 - t_len;
            let mut block = Vec::with_capacity(modulus_len);
            block.push(0x00);
            block.push(0x01);
            block.extend(std::iter::repeat_n(0xff, pad));
            block.push(0x00);
            block.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
            block.extend_from_slice(digest);
            Ok(block)
        }
    }
}

/// Verifies a signature over a SHA-256 `digest` computed elsewhere (a
/// document's, R-SIG-1): ECDSA P-256 (DER) or RSA PKCS#1 v1.5 with the
/// SHA-256 DigestInfo.
pub fn verify_digest_signature(
    public_key: &CardPublicKey,
    digest: &[u8; 32],
    signature: &[u8],
) -> Result<(), CardError> {
    if signature.is_empty() {
        return Err(CardError::Empty("signature"));
    }
    if signature.len() > MAX_SIGNATURE_LEN {
        return Err(CardError::TooLarge {
            what: "signature",
            len: signature.len(),
            max: MAX_SIGNATURE_LEN,
        });
    }
    match public_key.kind {
        CardKeyKind::EcdsaP256 => {
            use p256::ecdsa::signature::hazmat::PrehashVerifier;
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&public_key.ring_key)
                .map_err(|_| CardError::MalformedKey)?;
            let sig =
                p256::ecdsa::Signature::from_der(signature).map_err(|_| CardError::BadSignature)?;
            key.verify_prehash(digest, &sig)
                .map_err(|_| CardError::BadSignature)
        }
        CardKeyKind::Rsa { .. } => {
            use rsa::pkcs1::DecodeRsaPublicKey;
            let key = rsa::RsaPublicKey::from_pkcs1_der(&public_key.ring_key)
                .map_err(|_| CardError::MalformedKey)?;
            // The unprefixed scheme compares the whole DigestInfo, prefix
            // included, as RFC 8017 §8.2.2 verifies: encode, then compare.
            let mut info = Vec::with_capacity(SHA256_DIGEST_INFO_PREFIX.len() + 32);
            info.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
            info.extend_from_slice(digest);
            key.verify(rsa::Pkcs1v15Sign::new_unprefixed(), &info, signature)
                .map_err(|_| CardError::BadSignature)
        }
    }
}

/// The kind of card key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardKeyKind {
    /// ECDSA on P-256, signatures DER-encoded, SHA-256.
    EcdsaP256,
    /// RSA with PKCS#1 v1.5 signatures, SHA-256.
    Rsa {
        /// Modulus size in bits (2048..=4096).
        bits: u16,
    },
}

/// A card's public key, checked to be of an accepted type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPublicKey {
    kind: CardKeyKind,
    /// The SubjectPublicKeyInfo, for caching (offline bundle) and display.
    spki_der: Vec<u8>,
    /// The key as ring expects it: uncompressed point or RSAPublicKey DER.
    ring_key: Vec<u8>,
}

impl CardPublicKey {
    /// Parses a DER SubjectPublicKeyInfo (as cached in the agent's offline
    /// bundle) and accepts only ECDSA P-256 and RSA 2048..=4096.
    pub fn from_spki_der(spki_der: &[u8]) -> Result<CardPublicKey, CardError> {
        if spki_der.len() > MAX_SPKI_LEN {
            return Err(CardError::TooLarge {
                what: "public key",
                len: spki_der.len(),
                max: MAX_SPKI_LEN,
            });
        }
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| CardError::MalformedKey)?;
        if !rest.is_empty() {
            return Err(CardError::MalformedKey);
        }
        CardPublicKey::from_spki(&spki)
    }

    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<CardPublicKey, CardError> {
        let key_bits = &spki.subject_public_key;
        if key_bits.unused_bits != 0 {
            return Err(CardError::MalformedKey);
        }
        let algorithm = &spki.algorithm.algorithm;
        let kind = if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or(CardError::MalformedKey)?;
            if curve != OID_EC_P256 {
                return Err(CardError::UnsupportedKey("elliptic curve other than P-256"));
            }
            if key_bits.data.len() != 65 || key_bits.data.first() != Some(&0x04) {
                return Err(CardError::UnsupportedKey("P-256 point not uncompressed"));
            }
            CardKeyKind::EcdsaP256
        } else if *algorithm == OID_PKCS1_RSAENCRYPTION {
            let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                return Err(CardError::MalformedKey);
            };
            let bits = significant_bits(rsa.modulus);
            if !(2048..=4096).contains(&bits) {
                return Err(CardError::UnsupportedKey(
                    "RSA modulus outside 2048..4096 bits",
                ));
            }
            let exponent = rsa.try_exponent().map_err(|_| CardError::MalformedKey)?;
            if exponent < 3 || exponent % 2 == 0 {
                return Err(CardError::UnsupportedKey("RSA public exponent"));
            }
            let bits = u16::try_from(bits).map_err(|_| CardError::MalformedKey)?;
            CardKeyKind::Rsa { bits }
        } else {
            return Err(CardError::UnsupportedKey("algorithm other than EC or RSA"));
        };
        Ok(CardPublicKey {
            kind,
            spki_der: spki.raw.to_vec(),
            ring_key: key_bits.data.to_vec(),
        })
    }

    /// The key type.
    pub fn kind(&self) -> CardKeyKind {
        self.kind
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// For RSA keys, the modulus length in bytes: the block length the agent
    /// passes to [`pkcs1_v15_sha256_block`].
    pub fn rsa_modulus_len(&self) -> Option<usize> {
        match self.kind {
            CardKeyKind::Rsa { bits } => Some(usize::from(bits).div_ceil(8)),
            CardKeyKind::EcdsaP256 => None,
        }
    }
}

/// Bits in a big-endian unsigned integer, ignoring leading zero bytes.
fn significant_bits(be: &[u8]) -> usize {
    let trimmed: &[u8] = match be.iter().position(|&b| b != 0) {
        Some(first) => be.get(first..).unwrap_or_default(),
        None => &[],
    };
    match trimmed.first() {
        Some(&top) => trimmed.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// Verifies a card signature over `message` with `public_key`:
/// ECDSA P-256 (DER) or RSA PKCS#1 v1.5, both with SHA-256.
pub fn verify_signature(
    public_key: &CardPublicKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), CardError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(CardError::TooLarge {
            what: "message",
            len: message.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    if signature.is_empty() {
        return Err(CardError::Empty("signature"));
    }
    if signature.len() > MAX_SIGNATURE_LEN {
        return Err(CardError::TooLarge {
            what: "signature",
            len: signature.len(),
            max: MAX_SIGNATURE_LEN,
        });
    }
    let algorithm: &dyn signature::VerificationAlgorithm = match public_key.kind {
        CardKeyKind::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
        CardKeyKind::Rsa { .. } => &signature::RSA_PKCS1_2048_8192_SHA256,
    };
    UnparsedPublicKey::new(algorithm, &public_key.ring_key)
        .verify(message, signature)
        .map_err(|_| CardError::BadSignature)
}

/// Builds the [`challenge_message`] and verifies the card's signature over it:
/// the signature proves the card key for exactly this nonce, user,
/// workstation and purpose (R-AUTH-3).
pub fn verify_challenge(
    public_key: &CardPublicKey,
    nonce: &[u8; NONCE_LEN],
    user: &str,
    workstation: &str,
    purpose: Purpose,
    signature: &[u8],
) -> Result<(), CardError> {
    let message = challenge_message(nonce, user, workstation, purpose)?;
    verify_signature(public_key, &message, signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_layout_is_length_prefixed() {
        let nonce = [7u8; 32];
        let m = challenge_message(&nonce, "u1", "ws-3", Purpose::Login).unwrap();
        let mut expected = CHALLENGE_DOMAIN.to_vec();
        expected.extend_from_slice(&nonce);
        expected.extend_from_slice(&[0, 2]);
        expected.extend_from_slice(b"u1");
        expected.extend_from_slice(&[0, 4]);
        expected.extend_from_slice(b"ws-3");
        expected.extend_from_slice(&[0, 5]);
        expected.extend_from_slice(b"login");
        assert_eq!(m, expected);
    }

    #[test]
    fn challenge_fields_cannot_be_shifted() {
        // Without length prefixes "ab"+"c" and "a"+"bc" would collide.
        let nonce = [0u8; 32];
        let a = challenge_message(&nonce, "ab", "c", Purpose::Login).unwrap();
        let b = challenge_message(&nonce, "a", "bc", Purpose::Login).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn challenge_refuses_empty_and_oversized_fields() {
        let nonce = [0u8; 32];
        assert_eq!(
            challenge_message(&nonce, "", "ws", Purpose::Login),
            Err(CardError::Empty("user"))
        );
        assert_eq!(
            challenge_message(&nonce, "u", "", Purpose::Login),
            Err(CardError::Empty("workstation"))
        );
        let long = "x".repeat(MAX_USER_LEN + 1);
        assert!(matches!(
            challenge_message(&nonce, &long, "ws", Purpose::Login),
            Err(CardError::TooLarge { what: "user", .. })
        ));
        let long = "x".repeat(70_000);
        assert!(matches!(
            challenge_message(&nonce, "u", &long, Purpose::Login),
            Err(CardError::TooLarge {
                what: "workstation",
                ..
            })
        ));
    }

    #[test]
    fn digest_signatures_verify_over_the_digest_only() {
        use ring::rand::SystemRandom;
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, doc.as_ref(), &rng).unwrap();
        let key = CardPublicKey {
            kind: CardKeyKind::EcdsaP256,
            spki_der: Vec::new(),
            ring_key: pair.public_key().as_ref().to_vec(),
        };
        let document = b"prescription: loxoprofen 60 mg";
        // ring hashes the document; the card signs the digest: the same.
        let sig = pair.sign(&rng, document).unwrap();
        let digest = sha256(document);
        verify_digest_signature(&key, &digest, sig.as_ref()).unwrap();
        let mut other = digest;
        other[0] ^= 1;
        assert!(matches!(
            verify_digest_signature(&key, &other, sig.as_ref()),
            Err(CardError::BadSignature)
        ));
        assert!(verify_digest_signature(&key, &digest, &[]).is_err());
        assert!(verify_digest_signature(&key, &digest, &[0x30, 0x02, 0x01]).is_err());
        assert!(verify_digest_signature(&key, &digest, &vec![0; 2000]).is_err());
        assert_eq!(
            digest_signature_input(CardKeyKind::EcdsaP256, &digest).unwrap(),
            digest
        );
        let block = digest_signature_input(CardKeyKind::Rsa { bits: 2048 }, &digest).unwrap();
        assert_eq!(block.len(), 256);
        assert_eq!(block, pkcs1_v15_sha256_block(document, 256).unwrap());
    }

    #[test]
    fn pkcs1_block_layout() {
        let block = pkcs1_v15_sha256_block(b"m", 256).unwrap();
        assert_eq!(block.len(), 256);
        assert_eq!(&block[..2], &[0x00, 0x01]);
        assert!(block[2..256 - 52].iter().all(|&b| b == 0xff));
        assert_eq!(block[256 - 52], 0x00);
        assert_eq!(&block[256 - 51..256 - 32], &SHA256_DIGEST_INFO_PREFIX);
        assert_eq!(&block[256 - 32..], &sha256(b"m"));
        assert_eq!(
            pkcs1_v15_sha256_block(b"m", 128),
            Err(CardError::ModulusLength(128))
        );
        assert_eq!(
            pkcs1_v15_sha256_block(b"m", 513),
            Err(CardError::ModulusLength(513))
        );
        assert_eq!(pkcs1_v15_sha256_block(b"m", 512).unwrap().len(), 512);
    }

    #[test]
    fn significant_bits_ignores_leading_zeros() {
        assert_eq!(significant_bits(&[]), 0);
        assert_eq!(significant_bits(&[0, 0]), 0);
        assert_eq!(significant_bits(&[0, 0x80, 0]), 16);
        assert_eq!(significant_bits(&[0x01, 0]), 9);
    }
}
