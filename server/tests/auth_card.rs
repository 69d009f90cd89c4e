//! Card + card PIN through begin → finish: the certificate chains to the
//! configured CA and is not revoked, the card is enrolled to the user, and
//! the signature covers this nonce, user, workstation and purpose.

mod support;

use clinauth_factors::card::challenge_message;
use clinauth_policy::Purpose;
use clinauth_proto::workstation::{BeginRequest, EvidenceItem, FinishRequest, FinishResponse, B64};
use clinauth_server::auth::card_trust;
use clinauth_server::auth::evidence::Verifiers;
use clinauth_server::config::SmartcardSection;
use clinauth_server::credentials::Enroller;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertifiedIssuer, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use support::fixture::{fixture_with, Fixture, T0};
use support::{Engine, TempDir, TestDb};

struct Card {
    cert: Vec<u8>,
    signer: EcdsaKeyPair,
}

impl Card {
    fn sign(&self, nonce: &[u8], user: &str, ws: &str, purpose: Purpose) -> Vec<u8> {
        let message = challenge_message(nonce.try_into().unwrap(), user, ws, purpose).unwrap();
        self.signer
            .sign(&SystemRandom::new(), &message)
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn evidence(&self, signature: Vec<u8>, pin: bool) -> EvidenceItem {
        EvidenceItem::Card {
            certificate: B64(self.cert.clone()),
            chain: vec![],
            signature: B64(signature),
            pin_protected_key: pin,
        }
    }
}

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: TempDir,
}

fn name(p: &mut CertificateParams, cn: &str) {
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
}

impl Pki {
    fn new() -> Pki {
        let mut p = CertificateParams::default();
        name(&mut p, "Hospital Card CA");
        p.not_before = date_time_ymd(2026, 1, 1);
        p.not_after = date_time_ymd(2036, 1, 1);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(
            p,
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        )
        .unwrap();
        Pki {
            ca,
            dir: TempDir::new("cardpki"),
        }
    }

    fn card(&self, cn: &str, serial: u8) -> Card {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        name(&mut p, cn);
        p.not_before = date_time_ymd(2026, 6, 1);
        p.not_after = date_time_ymd(2029, 6, 1);
        p.serial_number = Some(SerialNumber::from_slice(&[0x20, serial]));
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &self.ca).unwrap().der().to_vec();
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            &key.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        Card { cert, signer }
    }

    /// Writes the CA certificate (PEM) and a CRL revoking `revoked` serials.
    fn section(&self, revoked: &[u8]) -> SmartcardSection {
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2026, 12, 1),
            next_update: date_time_ymd(2027, 6, 1),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&[0x20, *s]),
                    revocation_time: date_time_ymd(2026, 11, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca)
        .unwrap();
        let ca_path = self.dir.0.join("ca.pem");
        let crl_path = self.dir.0.join("ca.crl");
        std::fs::write(&ca_path, self.ca.pem()).unwrap();
        std::fs::write(&crl_path, crl.der()).unwrap();
        SmartcardSection {
            trust_anchors: vec![ca_path],
            crls: vec![crl_path],
            require_crl: true,
        }
    }
}

async fn setup() -> (TestDb, Fixture, Pki, Card, Card) {
    let db = TestDb::new(Engine::Sqlite).await;
    let pki = Pki::new();
    let trust = card_trust::load(&pki.section(&[])).unwrap();
    let f = fixture_with(
        &db,
        Verifiers {
            card_trust: trust,
            fido2: None,
            ..Verifiers::default()
        },
    )
    .await;
    let tanaka = pki.card("nurse.tanaka", 1);
    let sato = pki.card("clerk.sato", 2);
    let enroller = Enroller {
        store: &f.auth.store,
        audit: &f.auth.keys.audit,
        data: &f.auth.keys.data[0],
        actor: "officer",
    };
    enroller
        .card(
            "nurse.tanaka",
            &tanaka.cert,
            &f.auth.verifiers.card_trust,
            true,
            T0,
        )
        .await
        .unwrap();
    enroller
        .card(
            "clerk.sato",
            &sato.cert,
            &f.auth.verifiers.card_trust,
            true,
            T0,
        )
        .await
        .unwrap();
    (db, f, pki, tanaka, sato)
}

static CLOCK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(T0);

/// One authentication, ten minutes after the previous one (past any backoff).
async fn attempt(
    f: &Fixture,
    user: &str,
    make: impl FnOnce(&[u8]) -> EvidenceItem,
) -> FinishResponse {
    let now = CLOCK.fetch_add(600_000, std::sync::atomic::Ordering::SeqCst);
    let b = f
        .auth
        .begin(
            &f.ws,
            &BeginRequest {
                user: user.into(),
                purpose: Purpose::Login,
                operation: None,
            },
            now,
        )
        .await
        .unwrap();
    let evidence = make(&b.nonce.0);
    f.auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: b.challenge_id,
                evidence: vec![evidence],
            },
            now + 10,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn r_auth_1_card_plus_card_pin_allows() {
    let (_db, f, _pki, card, _) = setup().await;
    let r = attempt(&f, "nurse.tanaka", |n| {
        card.evidence(
            card.sign(n, "nurse.tanaka", "ward3-ws01", Purpose::Login),
            true,
        )
    })
    .await;
    let FinishResponse::Allow { factors, rule, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(rule, "ward-login");
    assert_eq!(factors, vec!["smartcard", "card_pin"]);
}

#[tokio::test]
async fn r_auth_3_card_without_pin_protection_is_not_two_factors() {
    let (_db, f, _pki, card, _) = setup().await;
    let r = attempt(&f, "nurse.tanaka", |n| {
        card.evidence(
            card.sign(n, "nurse.tanaka", "ward3-ws01", Purpose::Login),
            false,
        )
    })
    .await;
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(reason.starts_with("add one of: card PIN"), "{reason}");
}

#[tokio::test]
async fn r_auth_3_signature_is_bound_to_workstation_purpose_and_user() {
    let (_db, f, _pki, card, _) = setup().await;
    for (user, ws, purpose) in [
        ("nurse.tanaka", "other-ws", Purpose::Login),
        ("nurse.tanaka", "ward3-ws01", Purpose::Unlock),
        ("clerk.sato", "ward3-ws01", Purpose::Login),
    ] {
        let r = attempt(&f, "nurse.tanaka", |n| {
            card.evidence(card.sign(n, user, ws, purpose), true)
        })
        .await;
        assert!(
            matches!(r, FinishResponse::Deny { .. }),
            "{user} {ws} {purpose}: {r:?}"
        );
    }
}

#[tokio::test]
async fn r_auth_2_someone_elses_card_does_not_count() {
    let (_db, f, _pki, _tanaka, sato) = setup().await;
    let r = attempt(&f, "nurse.tanaka", |n| {
        sato.evidence(
            sato.sign(n, "nurse.tanaka", "ward3-ws01", Purpose::Login),
            true,
        )
    })
    .await;
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("enrolled to someone else"), "{reason}");
}

#[tokio::test]
async fn revoked_unenrolled_and_foreign_cards_are_refused() {
    let (_db, mut f, pki, _tanaka, sato) = setup().await;
    // clerk.sato's card is revoked after enrollment: the new CRL is loaded.
    f.auth.verifiers = std::sync::Arc::new(Verifiers {
        card_trust: card_trust::load(&pki.section(&[2])).unwrap(),
        fido2: None,
        ..Verifiers::default()
    });
    let r = attempt(&f, "clerk.sato", |n| {
        sato.evidence(
            sato.sign(n, "clerk.sato", "ward3-ws01", Purpose::Login),
            true,
        )
    })
    .await;
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(
        reason.contains("card: the card certificate is revoked"),
        "{reason}"
    );
    // A card the CA issued but no officer enrolled.
    let stray = pki.card("nurse.tanaka", 9);
    let r = attempt(&f, "nurse.tanaka", |n| {
        stray.evidence(
            stray.sign(n, "nurse.tanaka", "ward3-ws01", Purpose::Login),
            true,
        )
    })
    .await;
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("not enrolled"), "{reason}");
    // A card from another CA.
    let other = Pki::new().card("nurse.tanaka", 1);
    let r = attempt(&f, "nurse.tanaka", |n| {
        other.evidence(
            other.sign(n, "nurse.tanaka", "ward3-ws01", Purpose::Login),
            true,
        )
    })
    .await;
    assert!(matches!(r, FinishResponse::Deny { .. }), "{r:?}");
}

#[tokio::test]
async fn enrolling_a_revoked_card_is_refused() {
    let (_db, f, pki, _tanaka, _sato) = setup().await;
    let trust = card_trust::load(&pki.section(&[7])).unwrap();
    let revoked = pki.card("nurse.tanaka", 7);
    let enroller = Enroller {
        store: &f.auth.store,
        audit: &f.auth.keys.audit,
        data: &f.auth.keys.data[0],
        actor: "officer",
    };
    let err = enroller
        .card("nurse.tanaka", &revoked.cert, &trust, true, T0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
}

#[test]
fn trust_store_refuses_missing_and_malformed_files() {
    let dir = TempDir::new("trust");
    let missing = SmartcardSection {
        trust_anchors: vec![dir.0.join("nope.pem")],
        crls: vec![],
        require_crl: true,
    };
    assert!(card_trust::load(&missing).is_err());
    std::fs::write(
        dir.0.join("junk.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let junk = SmartcardSection {
        trust_anchors: vec![dir.0.join("junk.pem")],
        crls: vec![],
        require_crl: true,
    };
    assert!(card_trust::load(&junk).is_err());
}
