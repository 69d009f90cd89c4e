//! Nothing panics on hostile input: arbitrary and mutated bytes into every
//! public verifier return an error (or, for a mutation that keeps the value
//! valid, a result), never a panic.

use clinauth_factors::at_rest::{open, DataKey};
use clinauth_factors::card::{CardPublicKey, CardTrust, CrlRule, KeyUse};
use clinauth_factors::pin::{check_new_pin, verify_pin, SecretPin};
use clinauth_factors::totp::{verify, TotpSecret};
use clinauth_policy::UnixTime;
use proptest::prelude::*;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CustomExtension, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use std::sync::OnceLock;
use zeroize::Zeroizing;

const NOW: UnixTime = UnixTime(1_748_736_000);

/// A root and a card certificate carrying an hcRole extension.
fn fixture() -> &'static (Vec<u8>, Vec<u8>) {
    static F: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    F.get_or_init(|| {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root_cert = root.self_signed(&root_key).unwrap();
        let issuer = rcgen::Issuer::new(root, root_key);
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.not_before = date_time_ymd(2025, 1, 1);
        leaf.not_after = date_time_ymd(2026, 1, 1);
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.custom_extensions.push(CustomExtension::from_oid_content(
            &[2, 5, 29, 9],
            hex("303430320606288185420001312831263024a0223120a00c060a2a830886910f01060101a2100c0e4d65646963616c20446f63746f72"),
        ));
        let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        (root_cert.der().to_vec(), leaf_cert.der().to_vec())
    })
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn trust() -> CardTrust {
    let mut t = CardTrust::new();
    t.add_anchor(&fixture().0, CrlRule::IfPresent).unwrap();
    t
}

#[test]
fn fixture_verifies() {
    let card = trust()
        .verify(&fixture().1, &[], KeyUse::Authentication, NOW)
        .unwrap();
    assert_eq!(card.qualification.as_deref(), Some("Medical Doctor"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_certificate_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(trust().verify(&bytes, &[], KeyUse::Authentication, NOW).is_err());
        let mut t = CardTrust::new();
        let _ = t.add_anchor(&bytes, CrlRule::Required);
        let _ = t.add_crl(&bytes);
        let _ = CardPublicKey::from_spki_der(&bytes);
    }

    #[test]
    fn mutated_card_certificate(at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut leaf = fixture().1.clone();
        let i = at.index(leaf.len());
        leaf[i] ^= xor;
        // Any change to a signed certificate must fail (the signature covers
        // everything but the outer signature itself, and that is checked).
        prop_assert!(trust().verify(&leaf, &[], KeyUse::Authentication, NOW).is_err());
    }

    #[test]
    fn truncated_card_certificate(cut in 0usize..600) {
        let leaf = &fixture().1;
        let cut = cut.min(leaf.len() - 1);
        prop_assert!(trust().verify(&leaf[..cut], &[], KeyUse::Authentication, NOW).is_err());
    }

    #[test]
    fn arbitrary_sealed_values(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let key = DataKey::from_bytes(&[3; 32]).unwrap();
        prop_assert!(open(&[key], &bytes, b"totp:u").is_err());
    }

    #[test]
    fn arbitrary_totp_codes(code in ".{0,40}", now in any::<i64>(), last in any::<Option<u64>>()) {
        let secret = TotpSecret::from_bytes(Zeroizing::new(vec![1; 20])).unwrap();
        let _ = verify(&secret, &code, now, last);
    }

    #[test]
    fn arbitrary_phc_strings(phc in "\\$argon2id\\$v=19\\$[a-z=,0-9]{0,30}\\$[A-Za-z0-9+/]{0,30}\\$[A-Za-z0-9+/]{0,50}|.{0,80}") {
        let pin = SecretPin::from_text("4711").unwrap();
        prop_assert!(verify_pin(&pin, &phc).is_err());
    }

    #[test]
    fn arbitrary_new_pins(bytes in proptest::collection::vec(any::<u8>(), 0..100), user in ".{0,20}") {
        let pin = SecretPin::new(Zeroizing::new(bytes)).unwrap();
        let _ = check_new_pin(&pin, &user);
    }
}

#[test]
fn every_single_byte_change_to_a_card_certificate_is_refused() {
    // Including the unsigned outer framing (tags of the outer SEQUENCE, the
    // outer signatureAlgorithm and the signature BIT STRING), which
    // x509-parser alone reads leniently.
    let base = &fixture().1;
    let trust = trust();
    for i in 0..base.len() {
        for xor in [0x01, 0x20, 0x80, 0xff] {
            let mut leaf = base.clone();
            leaf[i] ^= xor;
            assert!(
                trust
                    .verify(&leaf, &[], KeyUse::Authentication, NOW)
                    .is_err(),
                "byte {i} ^ {xor:#04x} still verifies"
            );
        }
    }
}
