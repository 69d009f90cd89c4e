//! The costs behind one authentication: the ECDSA P-256 verify the server
//! targets are relative to, the card checks, the policy decision, a PIN
//! check, the durable writes, and a whole card login (begin + finish)
//! called in-process on SQLite. Results and the load generator's figures
//! over mutual TLS are in docs/BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use clinauth_factors::card::{self, CardTrust, CrlRule, KeyUse};
use clinauth_factors::pin::{self, SecretPin};
use clinauth_policy::{Connectivity, Context, Evidence, Factor, Policy, Purpose, UnixTime};
use clinauth_proto::ticket::{self, Claims};
use clinauth_proto::workstation::{BeginRequest, EvidenceItem, FinishRequest, FinishResponse, B64};
use clinauth_server::audit::{self, Event};
use clinauth_server::auth::evidence::Verifiers;
use clinauth_server::auth::{AuthService, AuthSettings};
use clinauth_server::clock;
use clinauth_server::credentials::Enroller;
use clinauth_server::directory::{self, Workstation};
use clinauth_server::keys::Keys;
use clinauth_server::policy_store::ActivePolicy;
use clinauth_server::store::Store;
use criterion::{criterion_group, criterion_main, Criterion};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertifiedIssuer, DnType, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

const POLICY: &str = include_str!("../../examples/policy/hospital.toml");
const USER: &str = "nurse.bench";
const WS: &str = "ward3-bench";

fn named(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

/// A card CA with an empty CRL (required, as in production) and one card.
struct CardSetup {
    trust: CardTrust,
    cert: Vec<u8>,
    signer: EcdsaKeyPair,
}

fn card_setup() -> CardSetup {
    let mut p = named("Bench Card CA");
    p.not_before = date_time_ymd(2024, 1, 1);
    p.not_after = date_time_ymd(2040, 1, 1);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca =
        CertifiedIssuer::self_signed(p, KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap())
            .unwrap();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = named(USER);
    p.not_before = date_time_ymd(2025, 1, 1);
    p.not_after = date_time_ymd(2035, 1, 1);
    p.serial_number = Some(SerialNumber::from_slice(&[0x20, 1]));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = p.signed_by(&key, &ca).unwrap().der().to_vec();
    let crl = CertificateRevocationListParams {
        this_update: date_time_ymd(2025, 1, 1),
        next_update: date_time_ymd(2035, 1, 1),
        crl_number: SerialNumber::from_slice(&[1]),
        issuing_distribution_point: None,
        revoked_certs: vec![],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca)
    .unwrap();
    let mut trust = CardTrust::new();
    trust.add_anchor(ca.der(), CrlRule::Required).unwrap();
    trust.add_crl(crl.der()).unwrap();
    let signer = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &key.serialize_der(),
        &SystemRandom::new(),
    )
    .unwrap();
    CardSetup {
        trust,
        cert,
        signer,
    }
}

fn now() -> UnixTime {
    UnixTime(clock::now_ms() / 1000)
}

fn crypto(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let setup = card_setup();
    let nonce = [7u8; 32];
    let message = card::challenge_message(&nonce, USER, WS, Purpose::Login).unwrap();
    let sig = setup.signer.sign(&rng, &message).unwrap();

    // The reference: ring's ECDSA P-256 verify (key parsed per call, as
    // UnparsedPublicKey does), over the card challenge message.
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        setup.signer.public_key().as_ref().to_vec(),
    );
    c.bench_function("ecdsa_p256_verify_ring", |b| {
        b.iter(|| {
            public
                .verify(black_box(&message), black_box(sig.as_ref()))
                .unwrap()
        })
    });

    let verified = setup
        .trust
        .verify(&setup.cert, &[], KeyUse::Authentication, now())
        .unwrap();
    c.bench_function("card_verify_challenge", |b| {
        b.iter(|| {
            card::verify_challenge(
                &verified.public_key,
                black_box(&nonce),
                USER,
                WS,
                Purpose::Login,
                black_box(sig.as_ref()),
            )
            .unwrap()
        })
    });
    c.bench_function("card_certificate_chain_and_crl", |b| {
        b.iter(|| {
            setup
                .trust
                .verify(black_box(&setup.cert), &[], KeyUse::Authentication, now())
                .unwrap()
        })
    });

    let policy = Policy::from_toml(POLICY).unwrap();
    let t = now();
    let evidence = [Evidence::new(
        Factor::Smartcard {
            pin_protected_key: true,
            qualification: None,
        },
        t,
    )];
    c.bench_function("policy_decide_card_login", |b| {
        b.iter(|| {
            let ctx = Context {
                roles: policy.role_set(["nurse"]),
                group: "ward",
                purpose: Purpose::Login,
                connectivity: Connectivity::Online,
                now: t,
                max_age: None,
            };
            black_box(policy.decide(&ctx, black_box(&evidence)));
        })
    });

    let ticket_key = signature::Ed25519KeyPair::from_pkcs8(
        signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    let claims = Claims {
        iss: "clinauth.bench".into(),
        sub: USER.into(),
        ws: WS.into(),
        purpose: Purpose::Login,
        rule: "ward-login".into(),
        factors: vec!["smartcard".into(), "card_pin".into()],
        policy_version: 3,
        policy_digest: "0".repeat(64),
        iat: t.0,
        exp: t.0 + 300,
        jti: "0".repeat(32),
        idle_lock: 180,
        offline: false,
        review: false,
        op: None,
    };
    c.bench_function("ticket_sign_ed25519", |b| {
        b.iter(|| ticket::sign(black_box(&claims), &ticket_key, "kid").unwrap())
    });

    let pin = SecretPin::from_text("p00001q").unwrap();
    let phc = pin::hash_pin(&pin, &rng).unwrap();
    let mut group = c.benchmark_group("pin");
    group.sample_size(10);
    group.bench_function("argon2id_verify_owasp_min", |b| {
        b.iter(|| pin::verify_pin(black_box(&pin), &phc).unwrap())
    });
    group.finish();
}

struct Server {
    auth: AuthService,
    ws: Workstation,
    card: CardSetup,
    dir: PathBuf,
}

async fn server() -> Server {
    let dir = std::env::temp_dir().join(format!("clinauth-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&format!("sqlite://{}/clinauth.db", dir.display()), 1)
        .await
        .unwrap();
    Keys::create_missing(&dir.join("keys")).unwrap();
    let keys = Arc::new(Keys::load(&dir.join("keys")).unwrap());
    let now_ms = clock::now_ms();
    let policy = ActivePolicy::default();
    policy
        .activate(&store, &keys.audit, POLICY, "officer", now_ms)
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    directory::create_user(&mut tx, USER, "Bench Nurse", &["nurse".into()], now_ms)
        .await
        .unwrap();
    let ws = directory::create_workstation(&mut tx, WS, &"ab".repeat(32), "ward", "3F", now_ms)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let card = card_setup();
    Enroller {
        store: &store,
        audit: &keys.audit,
        data: &keys.data[0],
        actor: "officer",
    }
    .card(USER, &card.cert, &card.trust, true, now_ms)
    .await
    .unwrap();
    let commits = clinauth_server::auth::commit::Committer::new(store.clone(), keys.clone());
    let auth = AuthService {
        commits,
        clock: Default::default(),
        store,
        policy,
        keys,
        settings: Arc::new(AuthSettings {
            issuer: "clinauth.bench".into(),
            challenge_ttl_ms: 120_000,
            ticket_ttl_s: 300,
        }),
        hashing: Arc::new(clinauth_server::auth::hashing::Hashing::new(4)),
        verifiers: Arc::new(Verifiers {
            card_trust: card.trust.clone(),
            ..Verifiers::default()
        }),
    };
    Server {
        auth,
        ws,
        card,
        dir,
    }
}

async fn card_login(s: &Server, rng: &SystemRandom) {
    let now_ms = clock::now_ms();
    let begun = s
        .auth
        .begin(
            &s.ws,
            &BeginRequest {
                user: USER.into(),
                purpose: Purpose::Login,
                operation: None,
            },
            now_ms,
        )
        .await
        .unwrap();
    let nonce: [u8; 32] = begun.nonce.0.as_slice().try_into().unwrap();
    let message = card::challenge_message(&nonce, USER, WS, Purpose::Login).unwrap();
    let signature = s.card.signer.sign(rng, &message).unwrap();
    let r = s
        .auth
        .finish(
            &s.ws,
            &FinishRequest {
                challenge_id: begun.challenge_id,
                evidence: vec![EvidenceItem::Card {
                    certificate: B64(s.card.cert.clone()),
                    chain: vec![],
                    signature: B64(signature.as_ref().to_vec()),
                    pin_protected_key: true,
                }],
            },
            now_ms + 1,
        )
        .await
        .unwrap();
    assert!(matches!(r, FinishResponse::Allow { .. }), "{r:?}");
}

fn sqlite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(server());
    let rng = SystemRandom::new();
    let mut group = c.benchmark_group("sqlite");
    group.bench_function("card_login_begin_finish", |b| {
        b.iter(|| rt.block_on(card_login(&s, &rng)))
    });
    group.bench_function("audit_record_durable_commit", |b| {
        b.iter(|| {
            rt.block_on(audit::record(
                &s.auth.store,
                &s.auth.keys.audit,
                &Event {
                    at_ms: clock::now_ms(),
                    actor: USER.into(),
                    workstation: Some(WS.into()),
                    action: "bench".into(),
                    target: None,
                    outcome: "ok".into(),
                    detail: serde_json::json!({ "n": 1 }),
                },
            ))
            .unwrap()
        })
    });
    group.bench_function("touch_workstation_autocommit", |b| {
        b.iter(|| {
            rt.block_on(directory::touch_workstation(
                &s.auth.store,
                WS,
                clock::now_ms(),
            ))
            .unwrap()
        })
    });
    group.finish();
    rt.block_on(s.auth.store.close());
    let _ = std::fs::remove_dir_all(&s.dir);
}

criterion_group!(benches, crypto, sqlite);
criterion_main!(benches);
