//! Smartcard factor: challenge signatures (agent and server agree), the
//! certificate chain, revocation, and the HPKI qualification.
//!
//! Certificates are made with rcgen at fixed dates; "now" is 2025-06-01.
//! The RSA key is a fixed RSA-2048 test key (`tests/data/`), because neither
//! ring nor rcgen-with-ring can generate RSA keys.

use clinauth_factors::card::{
    challenge_message, pkcs1_v15_sha256_block, sha256, verify_challenge, verify_signature,
    CardError, CardKeyKind, CardPublicKey, CardTrust, CrlRule, KeyUse, VerifiedCard,
    HCROLE_ATTRIBUTE_OID, JP_HPKI_QUALIFICATION_SCHEME_OID, MAX_CERTIFICATE_LEN,
};
use clinauth_policy::{Factor, Purpose, UnixTime};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertifiedIssuer, CustomExtension, DnType, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SerialNumber, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use x509_parser::num_bigint::BigUint;

const RSA_TEST_KEY: &[u8] = include_bytes!("data/rsa2048-test-key.pk8.der");

/// 2025-06-01T00:00:00Z.
const NOW: UnixTime = UnixTime(1_748_736_000);
/// 2026-02-01, after the leaf's notAfter.
const AFTER_LEAF: UnixTime = UnixTime(1_769_904_000);
/// 2024-12-01, before the leaf's notBefore.
const BEFORE_LEAF: UnixTime = UnixTime(1_733_011_200);

const NONCE: [u8; 32] = [0x5a; 32];

// ---------------------------------------------------------------- test PKI

fn p256() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

fn rsa_key() -> KeyPair {
    let key = KeyPair::try_from(RSA_TEST_KEY).unwrap();
    assert!(key.is_compatible(&PKCS_RSA_SHA256));
    key
}

fn ca_params(
    cn: &str,
    from: (i32, u8, u8),
    to: (i32, u8, u8),
    path_len: Option<u8>,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CountryName, "JP");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = date_time_ymd(from.0, from.1, from.2);
    p.not_after = date_time_ymd(to.0, to.1, to.2);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn leaf_params(cn: &str, serial: u8, usages: Vec<KeyUsagePurpose>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CountryName, "JP");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = date_time_ymd(2025, 1, 1);
    p.not_after = date_time_ymd(2026, 1, 1);
    p.serial_number = Some(SerialNumber::from_slice(&[0x10, serial]));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = usages;
    p
}

fn crl(
    issuer: &Issuer<'_, KeyPair>,
    this: (i32, u8, u8),
    next: (i32, u8, u8),
    revoked: &[&[u8]],
) -> Vec<u8> {
    CertificateRevocationListParams {
        this_update: date_time_ymd(this.0, this.1, this.2),
        next_update: date_time_ymd(next.0, next.1, next.2),
        crl_number: SerialNumber::from_slice(&[1]),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|serial| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: date_time_ymd(2025, 4, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .unwrap()
    .der()
    .to_vec()
}

/// Root → intermediate, both P-256, with a current empty CRL from the intermediate.
struct Pki {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
    intermediate_params: CertificateParams,
}

impl Pki {
    fn new() -> Pki {
        Pki::with_root_path_len(None)
    }

    fn with_root_path_len(path_len: Option<u8>) -> Pki {
        let root = CertifiedIssuer::self_signed(
            ca_params("ClinAuth Test Root", (2020, 1, 1), (2040, 1, 1), path_len),
            p256(),
        )
        .unwrap();
        let intermediate_params =
            ca_params("ClinAuth Test Card CA", (2021, 1, 1), (2035, 1, 1), None);
        let intermediate =
            CertifiedIssuer::signed_by(intermediate_params.clone(), p256(), &root).unwrap();
        Pki {
            root,
            intermediate,
            intermediate_params,
        }
    }

    fn root_der(&self) -> Vec<u8> {
        self.root.der().to_vec()
    }

    fn intermediate_der(&self) -> Vec<u8> {
        self.intermediate.der().to_vec()
    }

    fn current_crl(&self, revoked: &[&[u8]]) -> Vec<u8> {
        crl(&self.intermediate, (2025, 5, 1), (2025, 7, 1), revoked)
    }

    /// Anchor + configured intermediate (CRL required) + a current CRL.
    fn trust(&self) -> CardTrust {
        let mut t = CardTrust::new();
        t.add_anchor(&self.root_der(), CrlRule::IfPresent).unwrap();
        t.add_intermediate(&self.intermediate_der(), CrlRule::Required)
            .unwrap();
        t.add_crl(&self.current_crl(&[])).unwrap();
        t
    }

    fn issue(&self, params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
        params
            .signed_by(key, &self.intermediate)
            .unwrap()
            .der()
            .to_vec()
    }
}

fn auth_leaf(pki: &Pki, key: &KeyPair) -> Vec<u8> {
    pki.issue(
        &leaf_params("SATO Hanako", 1, vec![KeyUsagePurpose::DigitalSignature]),
        key,
    )
}

fn verify(trust: &CardTrust, leaf: &[u8], now: UnixTime) -> Result<VerifiedCard, CardError> {
    trust.verify(leaf, &[], KeyUse::Authentication, now)
}

// ------------------------------------------------------- DER by hand (hcRole)

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// subjectDirectoryAttributes with one ISO 17090 hcRole in the JP HPKI scheme.
fn hcrole_extension(role: &str) -> CustomExtension {
    let hcrole_oid = [0x28, 0x81, 0x85, 0x42, 0x00, 0x01]; // 1.0.17090.0.1
    let scheme_oid = [0x2a, 0x83, 0x08, 0x86, 0x91, 0x0f, 0x01, 0x06, 0x01, 0x01]; // 1.2.392.100495.1.6.1.1
    let coded_data = tlv(
        0x31,
        &[
            tlv(0xa0, &tlv(0x06, &scheme_oid)),
            tlv(0xa2, &tlv(0x0c, role.as_bytes())),
        ]
        .concat(),
    );
    let hc_actor = tlv(0x30, &tlv(0xa0, &coded_data));
    let hc_actor_data = tlv(0x31, &hc_actor);
    let attribute = tlv(
        0x30,
        &[tlv(0x06, &hcrole_oid), tlv(0x31, &hc_actor_data)].concat(),
    );
    let attributes = tlv(0x30, &attribute);
    CustomExtension::from_oid_content(&[2, 5, 29, 9], attributes)
}

// ------------------------------------------------------------- signatures

fn ecdsa_signer(key: &KeyPair) -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.serialize_der(),
        &SystemRandom::new(),
    )
    .unwrap()
}

fn rsa_signer() -> RsaKeyPair {
    RsaKeyPair::from_pkcs8(RSA_TEST_KEY).unwrap()
}

fn card_key_from_ring_ecdsa(signer: &EcdsaKeyPair) -> CardPublicKey {
    // SubjectPublicKeyInfo for id-ecPublicKey / prime256v1, uncompressed point.
    let mut spki = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    spki.extend_from_slice(signer.public_key().as_ref());
    CardPublicKey::from_spki_der(&spki).unwrap()
}

fn card_key_from_rsa_test_key() -> CardPublicKey {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &rsa_key());
    verify(&pki.trust(), &leaf, NOW).unwrap().public_key
}

fn sign_ecdsa(signer: &EcdsaKeyPair, message: &[u8]) -> Vec<u8> {
    signer
        .sign(&SystemRandom::new(), message)
        .unwrap()
        .as_ref()
        .to_vec()
}

fn sign_rsa(signer: &RsaKeyPair, message: &[u8]) -> Vec<u8> {
    let mut sig = vec![0u8; signer.public().modulus_len()];
    signer
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            message,
            &mut sig,
        )
        .unwrap();
    sig
}

/// (n, e) of an RSAPublicKey DER: SEQUENCE { INTEGER n, INTEGER e }.
fn rsa_n_e(der: &[u8]) -> (BigUint, BigUint) {
    fn read(input: &[u8]) -> (&[u8], &[u8]) {
        let len_byte = input[1] as usize;
        let (len, start) = if len_byte < 0x80 {
            (len_byte, 2)
        } else {
            let n = len_byte & 0x7f;
            let len = input[2..2 + n]
                .iter()
                .fold(0usize, |a, &b| (a << 8) | b as usize);
            (len, 2 + n)
        };
        (&input[start..start + len], &input[start + len..])
    }
    let (seq, _) = read(der);
    let (n, rest) = read(seq);
    let (e, _) = read(rest);
    (BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
}

#[test]
fn rsa_agent_block_is_what_the_card_signs_raw() {
    // A PIV RSA card applies the raw private-key operation to the block the
    // agent sends. ring's RSA_PKCS1_SHA256 signature s satisfies
    // s^e mod n == EMSA-PKCS1-v1_5(message); so the agent's block must equal
    // s^e mod n, and then the card's output is exactly s.
    let signer = rsa_signer();
    let (n, e) = rsa_n_e(signer.public().as_ref());
    let message = challenge_message(&NONCE, "sato", "ward3-ws07", Purpose::Login).unwrap();
    let s = BigUint::from_bytes_be(&sign_rsa(&signer, &message));
    let em = s.modpow(&e, &n).to_bytes_be();
    let block = pkcs1_v15_sha256_block(&message, signer.public().modulus_len()).unwrap();
    // to_bytes_be drops the leading 0x00 of the block.
    assert_eq!(block[0], 0);
    assert_eq!(em, block[1..]);
    // And the server verifies that signature with the card's certificate key.
    let card_key = card_key_from_rsa_test_key();
    assert_eq!(card_key.rsa_modulus_len(), Some(256));
    let sig = sign_rsa(&signer, &message);
    assert_eq!(
        verify_challenge(
            &card_key,
            &NONCE,
            "sato",
            "ward3-ws07",
            Purpose::Login,
            &sig
        ),
        Ok(())
    );
}

#[test]
fn ecdsa_card_signature_over_message_verifies() {
    // The agent sends sha256(message); ring signs the message (hashing it
    // itself): both are ECDSA over SHA-256(message).
    let signer = ecdsa_signer(&p256());
    let card_key = card_key_from_ring_ecdsa(&signer);
    let message = challenge_message(&NONCE, "sato", "ward3-ws07", Purpose::Unlock).unwrap();
    assert_eq!(
        sha256(&message).as_slice(),
        ring::digest::digest(&ring::digest::SHA256, &message).as_ref()
    );
    let sig = sign_ecdsa(&signer, &message);
    assert_eq!(verify_signature(&card_key, &message, &sig), Ok(()));
    assert_eq!(
        verify_challenge(
            &card_key,
            &NONCE,
            "sato",
            "ward3-ws07",
            Purpose::Unlock,
            &sig
        ),
        Ok(())
    );
}

#[test]
fn r_auth_3_card_signature_bound_to_workstation_and_purpose() {
    let ec = ecdsa_signer(&p256());
    let rsa = rsa_signer();
    let keys = [
        (
            card_key_from_ring_ecdsa(&ec),
            Box::new(|m: &[u8]| sign_ecdsa(&ec, m)) as Box<dyn Fn(&[u8]) -> Vec<u8>>,
        ),
        (
            card_key_from_rsa_test_key(),
            Box::new(|m: &[u8]| sign_rsa(&rsa, m)),
        ),
    ];
    for (key, sign) in &keys {
        let message = challenge_message(&NONCE, "sato", "ward3-ws07", Purpose::Login).unwrap();
        let sig = sign(&message);
        let ok = verify_challenge(key, &NONCE, "sato", "ward3-ws07", Purpose::Login, &sig);
        assert_eq!(ok, Ok(()));
        let mut other_nonce = NONCE;
        other_nonce[31] ^= 1;
        for (nonce, user, ws, purpose) in [
            (other_nonce, "sato", "ward3-ws07", Purpose::Login),
            (NONCE, "suzuki", "ward3-ws07", Purpose::Login),
            (NONCE, "sato", "ward3-ws08", Purpose::Login),
            (NONCE, "sato", "ward3-ws07", Purpose::Sign),
            (NONCE, "sato", "ward3-ws07", Purpose::BreakGlass),
        ] {
            assert_eq!(
                verify_challenge(key, &nonce, user, ws, purpose, &sig),
                Err(CardError::BadSignature),
                "{user} {ws} {purpose}"
            );
        }
    }
}

#[test]
fn tampered_signature_refused() {
    let ec = ecdsa_signer(&p256());
    let ec_key = card_key_from_ring_ecdsa(&ec);
    let message = challenge_message(&NONCE, "sato", "ws", Purpose::Login).unwrap();
    let sig = sign_ecdsa(&ec, &message);
    for i in 0..sig.len() {
        let mut t = sig.clone();
        t[i] ^= 0x40;
        assert!(verify_signature(&ec_key, &message, &t).is_err(), "byte {i}");
    }
    let rsa_key = card_key_from_rsa_test_key();
    let sig = sign_rsa(&rsa_signer(), &message);
    for i in [0, 1, 100, 255] {
        let mut t = sig.clone();
        t[i] ^= 0x01;
        assert_eq!(
            verify_signature(&rsa_key, &message, &t),
            Err(CardError::BadSignature),
            "byte {i}"
        );
    }
    // An ECDSA signature is not an RSA one and vice versa.
    assert!(verify_signature(&rsa_key, &message, &sign_ecdsa(&ec, &message)).is_err());
}

#[test]
fn signature_inputs_are_size_limited() {
    let key = card_key_from_ring_ecdsa(&ecdsa_signer(&p256()));
    assert_eq!(
        verify_signature(&key, b"m", &[]),
        Err(CardError::Empty("signature"))
    );
    assert!(matches!(
        verify_signature(&key, b"m", &[0x30; 513]),
        Err(CardError::TooLarge {
            what: "signature",
            ..
        })
    ));
    assert!(matches!(
        verify_signature(&key, &vec![0; 64 * 1024 + 1], &[0x30; 8]),
        Err(CardError::TooLarge {
            what: "message",
            ..
        })
    ));
}

// ------------------------------------------------------------ certificates

#[test]
fn good_p256_chain_through_configured_intermediate() {
    let pki = Pki::new();
    let key = p256();
    let leaf = auth_leaf(&pki, &key);
    let card = verify(&pki.trust(), &leaf, NOW).unwrap();
    assert!(card.subject.contains("CN=SATO Hanako"), "{}", card.subject);
    assert_eq!(card.serial, "1001");
    assert_eq!(card.public_key.kind(), CardKeyKind::EcdsaP256);
    assert_eq!(card.qualification, None);
    assert_eq!(card.not_after, UnixTime(1_767_225_600)); // 2026-01-01
                                                         // The certificate's key verifies the card's challenge signature.
    let message = challenge_message(&NONCE, "sato", "ws", Purpose::Login).unwrap();
    let sig = sign_ecdsa(&ecdsa_signer(&key), &message);
    assert_eq!(
        verify_challenge(&card.public_key, &NONCE, "sato", "ws", Purpose::Login, &sig),
        Ok(())
    );
}

#[test]
fn good_rsa_leaf_chain() {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &rsa_key());
    let card = verify(&pki.trust(), &leaf, NOW).unwrap();
    assert_eq!(card.public_key.kind(), CardKeyKind::Rsa { bits: 2048 });
}

#[test]
fn rsa_signed_chain_verifies() {
    // An RSA root (sha256WithRSAEncryption) directly issuing the card certificate.
    let root = CertifiedIssuer::self_signed(
        ca_params("RSA Root", (2020, 1, 1), (2040, 1, 1), None),
        rsa_key(),
    )
    .unwrap();
    let mut trust = CardTrust::new();
    trust.add_anchor(root.der(), CrlRule::IfPresent).unwrap();
    let leaf = leaf_params("SATO Hanako", 1, vec![KeyUsagePurpose::DigitalSignature])
        .signed_by(&p256(), &root)
        .unwrap();
    assert!(verify(&trust, leaf.der(), NOW).is_ok());
}

#[test]
fn r_off_1_offline_bundle_key_round_trips_through_spki() {
    let pki = Pki::new();
    let key = p256();
    let card = verify(&pki.trust(), &auth_leaf(&pki, &key), NOW).unwrap();
    // The server caches the SPKI in the offline bundle; the agent re-reads it.
    let cached = CardPublicKey::from_spki_der(card.public_key.spki_der()).unwrap();
    assert_eq!(cached, card.public_key);
    let message = challenge_message(&NONCE, "sato", "ws", Purpose::Unlock).unwrap();
    let sig = sign_ecdsa(&ecdsa_signer(&key), &message);
    assert_eq!(
        verify_challenge(&cached, &NONCE, "sato", "ws", Purpose::Unlock, &sig),
        Ok(())
    );
    assert_eq!(
        CardPublicKey::from_spki_der(b"\x30\x03\x02\x01\x01"),
        Err(CardError::MalformedKey)
    );
    assert!(matches!(
        CardPublicKey::from_spki_der(&[0x30; 4096]),
        Err(CardError::TooLarge { .. })
    ));
}

#[test]
fn expired_and_not_yet_valid_refused() {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &p256());
    let trust = pki.trust();
    assert_eq!(
        verify(&trust, &leaf, AFTER_LEAF),
        Err(CardError::Expired("card certificate"))
    );
    assert_eq!(
        verify(&trust, &leaf, BEFORE_LEAF),
        Err(CardError::NotYetValid("card certificate"))
    );
}

#[test]
fn expired_intermediate_refused() {
    let pki = Pki::new();
    let short = ca_params("ClinAuth Test Card CA", (2021, 1, 1), (2025, 3, 1), None);
    let intermediate = CertifiedIssuer::signed_by(short, p256(), &pki.root).unwrap();
    let mut trust = CardTrust::new();
    trust
        .add_anchor(&pki.root_der(), CrlRule::IfPresent)
        .unwrap();
    trust
        .add_intermediate(intermediate.der(), CrlRule::IfPresent)
        .unwrap();
    let leaf = leaf_params("SATO Hanako", 1, vec![KeyUsagePurpose::DigitalSignature])
        .signed_by(&p256(), &intermediate)
        .unwrap();
    assert_eq!(
        verify(&trust, leaf.der(), NOW),
        Err(CardError::Expired("intermediate CA certificate"))
    );
}

#[test]
fn wrong_ca_refused() {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &p256());
    // A different PKI with different names: no issuer at all.
    let other = CertifiedIssuer::self_signed(
        ca_params("Other Root", (2020, 1, 1), (2040, 1, 1), None),
        p256(),
    )
    .unwrap();
    let mut trust = CardTrust::new();
    trust.add_anchor(other.der(), CrlRule::IfPresent).unwrap();
    assert_eq!(
        verify(&trust, &leaf, NOW),
        Err(CardError::UnknownIssuer("card certificate"))
    );
    // An impostor CA with the same name as the real intermediate.
    let impostor = CertifiedIssuer::self_signed(pki.intermediate_params.clone(), p256()).unwrap();
    let mut trust = CardTrust::new();
    trust
        .add_anchor(impostor.der(), CrlRule::IfPresent)
        .unwrap();
    assert_eq!(
        verify(&trust, &leaf, NOW),
        Err(CardError::ChainSignatureInvalid("card certificate"))
    );
    // No anchors at all.
    assert_eq!(
        verify(&CardTrust::new(), &leaf, NOW),
        Err(CardError::UnknownIssuer("card certificate"))
    );
}

#[test]
fn intermediate_alone_is_not_a_trust_anchor() {
    // Configured intermediates must themselves chain to an anchor.
    let pki = Pki::new();
    let mut trust = CardTrust::new();
    trust
        .add_intermediate(&pki.intermediate_der(), CrlRule::IfPresent)
        .unwrap();
    assert_eq!(
        verify(&trust, &auth_leaf(&pki, &p256()), NOW),
        Err(CardError::UnknownIssuer("intermediate CA certificate"))
    );
}

#[test]
fn presented_intermediate_needs_a_crl() {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &p256());
    let inter = pki.intermediate_der();
    let mut trust = CardTrust::new();
    trust
        .add_anchor(&pki.root_der(), CrlRule::IfPresent)
        .unwrap();
    // Not configured: an unknown issuer gets the strict rule.
    assert_eq!(
        trust.verify(&leaf, &[&inter], KeyUse::Authentication, NOW),
        Err(CardError::CrlMissing("card certificate"))
    );
    trust.add_crl(&pki.current_crl(&[])).unwrap();
    assert!(trust
        .verify(&leaf, &[&inter], KeyUse::Authentication, NOW)
        .is_ok());
    let five = [inter.as_slice(); 5];
    assert!(matches!(
        trust.verify(&leaf, &five, KeyUse::Authentication, NOW),
        Err(CardError::TooMany { .. })
    ));
}

#[test]
fn revoked_card_refused() {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &p256());
    let mut trust = CardTrust::new();
    trust
        .add_anchor(&pki.root_der(), CrlRule::IfPresent)
        .unwrap();
    trust
        .add_intermediate(&pki.intermediate_der(), CrlRule::Required)
        .unwrap();
    trust
        .add_crl(&pki.current_crl(&[&[0x10, 0x02], &[0x10, 0x01]]))
        .unwrap();
    assert_eq!(
        verify(&trust, &leaf, NOW),
        Err(CardError::Revoked("card certificate"))
    );
    // Another serial on the list does not affect this card.
    let mut trust = CardTrust::new();
    trust
        .add_anchor(&pki.root_der(), CrlRule::IfPresent)
        .unwrap();
    trust
        .add_intermediate(&pki.intermediate_der(), CrlRule::Required)
        .unwrap();
    trust.add_crl(&pki.current_crl(&[&[0x10, 0x02]])).unwrap();
    assert!(verify(&trust, &leaf, NOW).is_ok());
}

#[test]
fn revoked_intermediate_refused() {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &p256());
    let mut trust = pki.trust();
    let inter = x509_parser::parse_x509_certificate(pki.intermediate.der())
        .unwrap()
        .1
        .raw_serial()
        .to_vec();
    trust
        .add_crl(&crl(&pki.root, (2025, 5, 1), (2025, 7, 1), &[&inter]))
        .unwrap();
    assert_eq!(
        verify(&trust, &leaf, NOW),
        Err(CardError::Revoked("intermediate CA certificate"))
    );
}

#[test]
fn stale_or_missing_crl_fails_closed_when_required() {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &p256());
    let base = |rule| {
        let mut t = CardTrust::new();
        t.add_anchor(&pki.root_der(), CrlRule::IfPresent).unwrap();
        t.add_intermediate(&pki.intermediate_der(), rule).unwrap();
        t
    };
    // Missing.
    assert_eq!(
        verify(&base(CrlRule::Required), &leaf, NOW),
        Err(CardError::CrlMissing("card certificate"))
    );
    // Stale: nextUpdate (2025-04-01) before now.
    let stale = crl(&pki.intermediate, (2025, 3, 1), (2025, 4, 1), &[]);
    let mut t = base(CrlRule::Required);
    t.add_crl(&stale).unwrap();
    assert_eq!(
        verify(&t, &leaf, NOW),
        Err(CardError::CrlStale("card certificate"))
    );
    // From the future: thisUpdate after now.
    let future = crl(&pki.intermediate, (2025, 7, 1), (2025, 8, 1), &[]);
    let mut t = base(CrlRule::Required);
    t.add_crl(&future).unwrap();
    assert_eq!(
        verify(&t, &leaf, NOW),
        Err(CardError::CrlStale("card certificate"))
    );
    // A stale CRL next to a current one: the current one counts.
    t.add_crl(&pki.current_crl(&[])).unwrap();
    assert!(verify(&t, &leaf, NOW).is_ok());
    // Not required: accepted without a CRL, or with a stale one.
    assert!(verify(&base(CrlRule::IfPresent), &leaf, NOW).is_ok());
    let mut t = base(CrlRule::IfPresent);
    t.add_crl(&stale).unwrap();
    assert!(verify(&t, &leaf, NOW).is_ok());
    // Even a stale authentic CRL that lists the card revokes it.
    let mut t = base(CrlRule::IfPresent);
    t.add_crl(&crl(
        &pki.intermediate,
        (2025, 3, 1),
        (2025, 4, 1),
        &[&[0x10, 0x01]],
    ))
    .unwrap();
    assert_eq!(
        verify(&t, &leaf, NOW),
        Err(CardError::Revoked("card certificate"))
    );
}

#[test]
fn crl_signed_by_another_key_is_not_a_crl() {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &p256());
    let forger = Issuer::new(pki.intermediate_params.clone(), p256());
    let forged = crl(&forger, (2025, 5, 1), (2025, 7, 1), &[]);
    let mut t = CardTrust::new();
    t.add_anchor(&pki.root_der(), CrlRule::IfPresent).unwrap();
    t.add_intermediate(&pki.intermediate_der(), CrlRule::Required)
        .unwrap();
    t.add_crl(&forged).unwrap();
    assert_eq!(
        verify(&t, &leaf, NOW),
        Err(CardError::CrlSignatureInvalid("card certificate"))
    );
    // A forged CRL that "revokes" the card does not revoke it either (it is
    // ignored), but with a required CRL the verification still fails closed.
    let forged_revoking = crl(&forger, (2025, 5, 1), (2025, 7, 1), &[&[0x10, 0x01]]);
    let mut t = CardTrust::new();
    t.add_anchor(&pki.root_der(), CrlRule::IfPresent).unwrap();
    t.add_intermediate(&pki.intermediate_der(), CrlRule::IfPresent)
        .unwrap();
    t.add_crl(&forged_revoking).unwrap();
    assert!(verify(&t, &leaf, NOW).is_ok());
}

#[test]
fn crl_is_checked_once_when_added() {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &p256());
    let configured = || {
        let mut t = CardTrust::new();
        t.add_anchor(&pki.root_der(), CrlRule::IfPresent).unwrap();
        t.add_intermediate(&pki.intermediate_der(), CrlRule::Required)
            .unwrap();
        t
    };
    // The CRL's DER is dropped right after `add_crl`: only the checked,
    // parsed result is kept, and verifications use it.
    let mut t = configured();
    {
        let der = pki.current_crl(&[&[0x10, 0x02]]);
        t.add_crl(&der).unwrap();
    }
    assert_eq!(t.unauthenticated_crls(), 0);
    for _ in 0..3 {
        assert!(verify(&t, &leaf, NOW).is_ok());
    }
    // The dates are still checked against each call's `now`
    // (CRL 2025-05-01 .. 2025-07-01, leaf valid throughout 2025).
    let after_next_update = UnixTime(1_754_006_400); // 2025-08-01
    let before_this_update = UnixTime(1_744_675_200); // 2025-04-15
    for now in [after_next_update, before_this_update] {
        assert_eq!(
            verify(&t, &leaf, now),
            Err(CardError::CrlStale("card certificate"))
        );
    }
    assert!(verify(&t.clone(), &leaf, NOW).is_ok());
    // The revoked serials are kept (leading zeros do not matter).
    let mut t = configured();
    t.add_crl(&pki.current_crl(&[&[0x00, 0x10, 0x01]])).unwrap();
    assert_eq!(
        verify(&t, &leaf, NOW),
        Err(CardError::Revoked("card certificate"))
    );

    // A CRL added before its issuer is checked when the issuer is added.
    let mut t = CardTrust::new();
    t.add_crl(&pki.current_crl(&[])).unwrap();
    assert_eq!(t.unauthenticated_crls(), 1);
    t.add_anchor(&pki.root_der(), CrlRule::IfPresent).unwrap();
    assert_eq!(t.unauthenticated_crls(), 1, "the root did not sign it");
    t.add_intermediate(&pki.intermediate_der(), CrlRule::Required)
        .unwrap();
    assert_eq!(t.unauthenticated_crls(), 0);
    assert!(verify(&t, &leaf, NOW).is_ok());

    // A CRL under the intermediate's name but another key is never
    // authenticated, whatever is added later.
    let forger = Issuer::new(pki.intermediate_params.clone(), p256());
    let mut t = configured();
    t.add_crl(&crl(&forger, (2025, 5, 1), (2025, 7, 1), &[&[0x10, 0x01]]))
        .unwrap();
    assert_eq!(t.unauthenticated_crls(), 1);
    t.add_intermediate(&pki.intermediate_der(), CrlRule::Required)
        .unwrap();
    assert_eq!(t.unauthenticated_crls(), 1);
    assert_eq!(
        verify(&t, &leaf, NOW),
        Err(CardError::CrlSignatureInvalid("card certificate"))
    );

    // A CRL from an intermediate only the card presents stays
    // unauthenticated here and is checked against it when used.
    let mut t = CardTrust::new();
    t.add_anchor(&pki.root_der(), CrlRule::IfPresent).unwrap();
    t.add_crl(&pki.current_crl(&[])).unwrap();
    assert_eq!(t.unauthenticated_crls(), 1);
    let inter = pki.intermediate_der();
    assert!(t
        .verify(&leaf, &[&inter], KeyUse::Authentication, NOW)
        .is_ok());
}

#[test]
fn r_sig_1_reads_hcrole_from_hpki_certificate() {
    assert_eq!(HCROLE_ATTRIBUTE_OID, "1.0.17090.0.1");
    assert_eq!(JP_HPKI_QUALIFICATION_SCHEME_OID, "1.2.392.100495.1.6.1.1");
    let pki = Pki::new();
    let mut params = leaf_params("SATO Hanako", 1, vec![KeyUsagePurpose::ContentCommitment]);
    params
        .custom_extensions
        .push(hcrole_extension("Medical Doctor"));
    let leaf = pki.issue(&params, &p256());
    let card = pki
        .trust()
        .verify(&leaf, &[], KeyUse::NonRepudiation, NOW)
        .unwrap();
    assert_eq!(card.qualification.as_deref(), Some("Medical Doctor"));
    assert_eq!(
        card.into_factor(true),
        Factor::Smartcard {
            pin_protected_key: true,
            qualification: Some("Medical Doctor".to_owned())
        }
    );
}

#[test]
fn r_sig_1_malformed_hcrole_refused() {
    let pki = Pki::new();
    let mut params = leaf_params("SATO Hanako", 1, vec![KeyUsagePurpose::DigitalSignature]);
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &[2, 5, 29, 9],
            vec![0x30, 0x05, 0x30, 0x03, 0x06, 0x01],
        ));
    let leaf = pki.issue(&params, &p256());
    assert_eq!(
        verify(&pki.trust(), &leaf, NOW),
        Err(CardError::MalformedHcRole)
    );
}

#[test]
fn key_usage_must_match_the_use() {
    let pki = Pki::new();
    let trust = pki.trust();
    let signing_only = pki.issue(
        &leaf_params("SATO Hanako", 1, vec![KeyUsagePurpose::ContentCommitment]),
        &p256(),
    );
    assert_eq!(
        trust.verify(&signing_only, &[], KeyUse::Authentication, NOW),
        Err(CardError::KeyUsage("digitalSignature"))
    );
    assert!(trust
        .verify(&signing_only, &[], KeyUse::NonRepudiation, NOW)
        .is_ok());
    let auth_only = auth_leaf(&pki, &p256());
    assert_eq!(
        trust.verify(&auth_only, &[], KeyUse::NonRepudiation, NOW),
        Err(CardError::KeyUsage("nonRepudiation"))
    );
    let no_usage = pki.issue(&leaf_params("SATO Hanako", 1, vec![]), &p256());
    assert_eq!(
        verify(&trust, &no_usage, NOW),
        Err(CardError::KeyUsage("digitalSignature"))
    );
}

#[test]
fn ca_certificate_as_card_and_leaf_as_issuer_refused() {
    let pki = Pki::new();
    let trust = pki.trust();
    let mut ca_leaf = leaf_params("SATO Hanako", 1, vec![KeyUsagePurpose::DigitalSignature]);
    ca_leaf.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    assert_eq!(
        verify(&trust, &pki.issue(&ca_leaf, &p256()), NOW),
        Err(CardError::LeafIsCa)
    );
    // A card certificate (not a CA) used to issue another "card" certificate.
    let card_params = leaf_params(
        "Rogue Issuer",
        2,
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ],
    );
    let card_key = p256();
    let card = pki.issue(&card_params, &card_key);
    let rogue = Issuer::new(card_params, card_key);
    let victim = leaf_params("SUZUKI Ichiro", 3, vec![KeyUsagePurpose::DigitalSignature])
        .signed_by(&p256(), &rogue)
        .unwrap();
    assert_eq!(
        trust.verify(victim.der(), &[&card], KeyUse::Authentication, NOW),
        Err(CardError::NotACa)
    );
}

#[test]
fn path_length_constraint_enforced() {
    let pki = Pki::with_root_path_len(Some(0));
    let leaf = auth_leaf(&pki, &p256());
    let mut trust = CardTrust::new();
    trust
        .add_anchor(&pki.root_der(), CrlRule::IfPresent)
        .unwrap();
    trust
        .add_intermediate(&pki.intermediate_der(), CrlRule::IfPresent)
        .unwrap();
    assert_eq!(verify(&trust, &leaf, NOW), Err(CardError::PathTooLong));
}

#[test]
fn unsupported_card_keys_refused() {
    let pki = Pki::new();
    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    assert!(matches!(
        verify(&pki.trust(), &auth_leaf(&pki, &p384), NOW),
        Err(CardError::UnsupportedKey(_))
    ));
}

#[test]
fn unknown_critical_extension_refused() {
    let pki = Pki::new();
    let mut params = leaf_params("SATO Hanako", 1, vec![KeyUsagePurpose::DigitalSignature]);
    let mut ext =
        CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
    ext.set_criticality(true);
    params.custom_extensions.push(ext);
    assert_eq!(
        verify(&pki.trust(), &pki.issue(&params, &p256()), NOW),
        Err(CardError::UnknownCriticalExtension("card certificate"))
    );
}

#[test]
fn tampered_certificate_refused() {
    let pki = Pki::new();
    let leaf = auth_leaf(&pki, &p256());
    let trust = pki.trust();
    // Change one byte of the subject name (inside the signed part).
    let at = leaf
        .windows(b"SATO".len())
        .position(|w| w == b"SATO")
        .unwrap();
    let mut tampered = leaf.clone();
    tampered[at] = b'X';
    assert_eq!(
        verify(&trust, &tampered, NOW),
        Err(CardError::ChainSignatureInvalid("card certificate"))
    );
}

#[test]
fn malformed_der_refused() {
    let pki = Pki::new();
    let trust = pki.trust();
    let leaf = auth_leaf(&pki, &p256());
    assert_eq!(
        verify(&trust, &[], NOW),
        Err(CardError::Empty("card certificate"))
    );
    for bad in [
        b"not a certificate".to_vec(),
        leaf[..leaf.len() / 2].to_vec(),
        leaf[..leaf.len() - 1].to_vec(),
        [leaf.as_slice(), &[0]].concat(),
        vec![0x30, 0x80, 0x00, 0x00],
    ] {
        assert!(
            matches!(
                verify(&trust, &bad, NOW),
                Err(CardError::MalformedCertificate { .. })
            ),
            "{bad:02x?}"
        );
    }
    let mut t = CardTrust::new();
    assert!(t.add_anchor(b"junk", CrlRule::Required).is_err());
    assert!(t.add_crl(b"junk").is_err());
    assert!(t.add_crl(&[]).is_err());
    // A card certificate is not accepted as an anchor.
    assert_eq!(
        t.add_anchor(&leaf, CrlRule::Required),
        Err(CardError::NotACa)
    );
}

#[test]
fn oversized_input_refused() {
    let pki = Pki::new();
    let huge = vec![0x30; MAX_CERTIFICATE_LEN + 1];
    assert!(matches!(
        verify(&pki.trust(), &huge, NOW),
        Err(CardError::TooLarge { .. })
    ));
    let mut t = CardTrust::new();
    assert!(matches!(
        t.add_anchor(&huge, CrlRule::Required),
        Err(CardError::TooLarge { .. })
    ));
    assert!(matches!(
        t.add_crl(&vec![0x30; 8 * 1024 * 1024 + 1]),
        Err(CardError::TooLarge { .. })
    ));
}

#[test]
fn limits_on_trust_store_size() {
    let pki = Pki::new();
    let mut t = CardTrust::new();
    for _ in 0..64 {
        t.add_anchor(&pki.root_der(), CrlRule::IfPresent).unwrap();
    }
    assert!(matches!(
        t.add_anchor(&pki.root_der(), CrlRule::IfPresent),
        Err(CardError::TooMany { .. })
    ));
}
