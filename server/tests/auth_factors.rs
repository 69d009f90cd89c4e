//! Each factor through begin → finish, on both engines: PIN, TOTP, sealed
//! biometric templates and match-on-reader decisions, with tickets that
//! verify and replays that do not.

mod support;

use clinauth_biometric::envelope::{seal, CaptureContext, ReaderKey, SignedDecision};
use clinauth_biometric::{MatcherPublicKey, SyntheticFinger};
use clinauth_factors::pin::SecretPin;
use clinauth_policy::Purpose;
use clinauth_proto::ticket;
use clinauth_proto::workstation::{
    BeginRequest, BeginResponse, EvidenceItem, FinishRequest, FinishResponse, B64,
};
use clinauth_proto::SecretString;
use clinauth_server::auth::AuthError;
use clinauth_server::credentials;
use clinauth_server::directory::{self, DeviceState, Workstation};
use clinauth_server::officer::Officer;
use ring::rand::SystemRandom;
use ring::signature::KeyPair;
use support::fixture::{badge, fixture, Fixture, T0};
use support::TestDb;

fn pin(value: &str) -> EvidenceItem {
    EvidenceItem::ServerPin {
        value: SecretString::new(value).unwrap(),
    }
}

async fn begin(f: &Fixture, ws: &Workstation, user: &str, now: i64) -> BeginResponse {
    f.auth
        .begin(
            ws,
            &BeginRequest {
                user: user.into(),
                purpose: Purpose::Login,
                operation: None,
            },
            now,
        )
        .await
        .unwrap_or_else(|e| panic!("begin {user}: {e}"))
}

async fn finish(
    f: &Fixture,
    ws: &Workstation,
    challenge: &str,
    evidence: Vec<EvidenceItem>,
    now: i64,
) -> Result<FinishResponse, AuthError> {
    f.auth
        .finish(
            ws,
            &FinishRequest {
                challenge_id: challenge.into(),
                evidence,
            },
            now,
        )
        .await
}

fn enroller(f: &Fixture) -> credentials::Enroller<'_> {
    credentials::Enroller {
        store: &f.auth.store,
        audit: &f.auth.keys.audit,
        data: &f.auth.keys.data[0],
        actor: "officer",
    }
}

async fn enroll_pin(f: &Fixture, user: &str, value: &str) {
    enroller(f)
        .pin(user, &SecretPin::from_text(value).unwrap(), T0)
        .await
        .unwrap();
}

async fn badge_and_pin(db: &TestDb) {
    let f = fixture(db).await;
    enroll_pin(&f, "nurse.tanaka", "482913").await;

    let b = begin(&f, &f.ws, "nurse.tanaka", T0).await;
    let r = finish(
        &f,
        &f.ws,
        &b.challenge_id,
        vec![badge(), pin("000000")],
        T0 + 10,
    )
    .await
    .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("server_pin: wrong PIN"), "{reason}");

    let b = begin(&f, &f.ws, "nurse.tanaka", T0 + 2_000).await;
    let r = finish(
        &f,
        &f.ws,
        &b.challenge_id,
        vec![badge(), pin("482913")],
        T0 + 2_010,
    )
    .await
    .unwrap();
    let FinishResponse::Allow {
        ticket: token,
        rule,
        factors,
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(rule, "ward-login");
    assert_eq!(factors, vec!["badge", "server_pin"]);
    let claims = ticket::verify(
        &token,
        f.auth.keys.ticket.public_key().as_ref(),
        (T0 + 2_010) / 1000,
    )
    .unwrap();
    assert_eq!(claims.sub, "nurse.tanaka");
    assert_eq!(claims.ws, "ward3-ws01");
    assert_eq!(claims.idle_lock, 180, "the ward rule's 3 minute idle lock");
    assert_eq!(claims.policy_version, 3);
    assert_eq!(
        claims.policy_digest,
        f.auth.policy.get().unwrap().digest().to_string()
    );

    // The PIN never reaches the audit log.
    let log = clinauth_server::audit::page(&f.auth.store, 0, 100)
        .await
        .unwrap();
    assert!(log
        .iter()
        .all(|e| !e.detail.contains("482913") && !e.detail.contains("000000")));
    let allow = log.iter().find(|e| e.outcome == "allow").unwrap();
    assert!(
        allow.detail.contains(r#""rule":"ward-login""#),
        "{}",
        allow.detail
    );
}
on_both_engines!(
    r_auth_1_badge_plus_pin_allows_with_a_verifiable_ticket,
    badge_and_pin
);

async fn pin_without_enrollment(db: &TestDb) {
    let f = fixture(db).await;
    let b = begin(&f, &f.ws, "nurse.tanaka", T0).await;
    let r = finish(
        &f,
        &f.ws,
        &b.challenge_id,
        vec![badge(), pin("482913")],
        T0 + 10,
    )
    .await
    .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("no PIN is enrolled"), "{reason}");
}
on_both_engines!(r_auth_1_pin_must_be_enrolled, pin_without_enrollment);

async fn remote_workstation(f: &Fixture) -> Workstation {
    let mut tx = f.auth.store.begin().await.unwrap();
    let ws = directory::create_workstation(
        &mut tx,
        "remote-vdi-01",
        &"cd".repeat(32),
        "remote",
        "VPN",
        T0,
    )
    .await
    .unwrap();
    directory::create_user(&mut tx, "dr.sato", "佐藤 医師", &["physician".into()], T0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    ws
}

async fn totp_once(db: &TestDb) {
    let f = fixture(db).await;
    let ws = remote_workstation(&f).await;
    enroll_pin(&f, "dr.sato", "739184").await;
    let (uri, png) = enroller(&f).totp("dr.sato", T0).await.unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{}", *uri);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (secret, last) = credentials::totp_secret(&f.auth.store, &f.auth.keys.data, "dr.sato")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last, None);
    let now = T0 + 5_000;
    let code = rfc6238(secret.expose(), now / 1000);
    let totp = EvidenceItem::Totp {
        code: SecretString::new(code.clone()).unwrap(),
    };

    let b = begin(&f, &ws, "dr.sato", now).await;
    let r = finish(
        &f,
        &ws,
        &b.challenge_id,
        vec![totp.clone(), pin("739184")],
        now,
    )
    .await
    .unwrap();
    assert!(
        matches!(r, FinishResponse::Allow { ref rule, .. } if rule == "remote-access"),
        "{r:?}"
    );

    // The same code again, with a fresh challenge: refused (RFC 6238 §5.2).
    let b = begin(&f, &ws, "dr.sato", now + 1_000).await;
    let r = finish(
        &f,
        &ws,
        &b.challenge_id,
        vec![totp, pin("739184")],
        now + 1_000,
    )
    .await
    .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("a reused TOTP code must not count: {r:?}")
    };
    assert!(reason.contains("totp:"), "{reason}");

    // The seed is stored encrypted.
    let row: Vec<u8> =
        sqlx::query_scalar("SELECT secret FROM credentials WHERE id = 'totp:dr.sato'")
            .fetch_one(f.auth.store.pool())
            .await
            .unwrap();
    assert!(!row
        .windows(8)
        .any(|w| secret.expose().windows(8).any(|s| s == w)));
}
on_both_engines!(
    r_auth_1_totp_plus_pin_and_a_code_is_never_accepted_twice,
    totp_once
);

/// RFC 6238 (SHA-1, 6 digits, 30 s), written here independently of the
/// server's implementation.
fn rfc6238(secret: &[u8], unix: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = ring::hmac::sign(&key, &((unix / 30) as u64).to_be_bytes());
    let h = tag.as_ref();
    let o = (h[19] & 0x0f) as usize;
    let bin = (u32::from(h[o] & 0x7f) << 24)
        | (u32::from(h[o + 1]) << 16)
        | (u32::from(h[o + 2]) << 8)
        | u32::from(h[o + 3]);
    format!("{:06}", bin % 1_000_000)
}

struct Reader {
    key: ReaderKey,
    id: &'static str,
}

async fn register_reader(f: &Fixture, id: &'static str, protection: &str) -> Reader {
    let (key, _) = ReaderKey::generate(&SystemRandom::new()).unwrap();
    Officer {
        store: &f.auth.store,
        key: &f.auth.keys.audit,
        actor: "officer",
    }
    .register_reader(
        id,
        key.public_key().as_bytes(),
        protection,
        false,
        "ward 3",
        T0,
    )
    .await
    .unwrap();
    Reader { key, id }
}

fn sealed(
    f: &Fixture,
    reader: &Reader,
    finger: u64,
    capture: u64,
    nonce: &[u8],
    user: &str,
    at: i64,
) -> EvidenceItem {
    let template = SyntheticFinger::new(finger).capture(capture);
    let matcher =
        MatcherPublicKey::from_bytes(f.auth.keys.matcher.public_key().as_bytes()).unwrap();
    let ctx = CaptureContext {
        nonce: nonce.try_into().unwrap(),
        reader_id: reader.id.into(),
        user_id: user.into(),
        captured_at: at / 1000,
    };
    let capture = seal(&matcher, &template, &ctx, &reader.key, &SystemRandom::new()).unwrap();
    EvidenceItem::BiometricSealed {
        capture: B64(capture.to_bytes()),
    }
}

async fn sealed_fingerprint(db: &TestDb) {
    let f = fixture(db).await;
    let reader = register_reader(&f, "reader-ward3", "sealed_template").await;
    let reference = SyntheticFinger::new(7).capture(1);
    enroller(&f)
        .template("nurse.tanaka", 1, &reference, T0)
        .await
        .unwrap();

    let b = begin(&f, &f.ws, "nurse.tanaka", T0).await;
    let finger = sealed(&f, &reader, 7, 2, &b.nonce.0, "nurse.tanaka", T0);
    let r = finish(
        &f,
        &f.ws,
        &b.challenge_id,
        vec![badge(), finger.clone()],
        T0 + 10,
    )
    .await
    .unwrap();
    let FinishResponse::Allow { factors, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(factors, vec!["badge", "biometric"]);

    // The same capture replayed into another authentication is refused (R-BIO-3).
    let b2 = begin(&f, &f.ws, "nurse.tanaka", T0 + 1_000).await;
    let r = finish(
        &f,
        &f.ws,
        &b2.challenge_id,
        vec![badge(), finger],
        T0 + 1_010,
    )
    .await
    .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("biometric_sealed:"), "{reason}");

    // A capture sealed for another user does not open for this one.
    let b3 = begin(&f, &f.ws, "nurse.tanaka", T0 + 4_000).await;
    let other = sealed(&f, &reader, 7, 3, &b3.nonce.0, "clerk.sato", T0 + 4_000);
    let r = finish(
        &f,
        &f.ws,
        &b3.challenge_id,
        vec![badge(), other],
        T0 + 4_010,
    )
    .await
    .unwrap();
    assert!(matches!(r, FinishResponse::Deny { .. }), "{r:?}");

    // The template is stored encrypted (R-BIO-5).
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT secret FROM credentials WHERE id = 'bio:nurse.tanaka:1'")
            .fetch_one(f.auth.store.pool())
            .await
            .unwrap();
    let plain = reference.encode();
    assert!(!stored.windows(8).any(|w| plain.windows(8).any(|p| p == w)));
}
on_both_engines!(
    r_bio_1_badge_plus_sealed_fingerprint_matches_one_to_one,
    sealed_fingerprint
);

async fn impostor_limit(db: &TestDb) {
    let f = fixture(db).await;
    let reader = register_reader(&f, "reader-ward3", "sealed_template").await;
    enroller(&f)
        .template("nurse.tanaka", 1, &SyntheticFinger::new(7).capture(1), T0)
        .await
        .unwrap();
    let mut now = T0;
    // Five impostor fingers (R-BIO-4: 5 without presentation attack detection).
    for i in 0..5u64 {
        let b = begin(&f, &f.ws, "nurse.tanaka", now).await;
        let finger = sealed(&f, &reader, 100 + i, 1, &b.nonce.0, "nurse.tanaka", now);
        let r = finish(&f, &f.ws, &b.challenge_id, vec![badge(), finger], now)
            .await
            .unwrap();
        let FinishResponse::Deny {
            reason,
            retry_after,
            ..
        } = r
        else {
            panic!("impostor {i} matched: {r:?}")
        };
        assert!(reason.contains("did not match"), "{reason}");
        now += i64::from(retry_after.max(6)) * 1000 + 1;
    }
    // Now even the genuine finger is barred until another factor succeeds.
    let b = begin(&f, &f.ws, "nurse.tanaka", now).await;
    let genuine = sealed(&f, &reader, 7, 4, &b.nonce.0, "nurse.tanaka", now);
    let r = finish(&f, &f.ws, &b.challenge_id, vec![badge(), genuine], now)
        .await
        .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("R-BIO-4"), "{reason}");
}
on_both_engines!(r_bio_4_biometric_barred_after_five_failures, impostor_limit);

async fn match_on_reader(db: &TestDb) {
    let f = fixture(db).await;
    let on_reader = register_reader(&f, "reader-mor", "match_on_reader").await;
    let sealed_only = register_reader(&f, "reader-sealed", "sealed_template").await;
    let decision = |reader: &Reader, nonce: &[u8], matched: bool, at: i64| {
        let ctx = CaptureContext {
            nonce: nonce.try_into().unwrap(),
            reader_id: reader.id.into(),
            user_id: "nurse.tanaka".into(),
            captured_at: at / 1000,
        };
        let d = SignedDecision::sign(&reader.key, ctx, matched, 9000, false).unwrap();
        EvidenceItem::BiometricDecision {
            decision: B64(d.to_bytes()),
        }
    };
    let b = begin(&f, &f.ws, "nurse.tanaka", T0).await;
    let r = finish(
        &f,
        &f.ws,
        &b.challenge_id,
        vec![badge(), decision(&on_reader, &b.nonce.0, true, T0)],
        T0,
    )
    .await
    .unwrap();
    assert!(matches!(r, FinishResponse::Allow { .. }), "{r:?}");

    // A reader registered for sealed templates may not send decisions (R-BIO-1).
    let b = begin(&f, &f.ws, "nurse.tanaka", T0 + 10).await;
    let r = finish(
        &f,
        &f.ws,
        &b.challenge_id,
        vec![badge(), decision(&sealed_only, &b.nonce.0, true, T0)],
        T0 + 10,
    )
    .await
    .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(
        reason.contains("not registered as match_on_reader"),
        "{reason}"
    );

    // A suspended reader is refused (R-DEV-1).
    let mut tx = f.auth.store.begin().await.unwrap();
    directory::set_device_state(&mut tx, "reader-mor", DeviceState::Suspended, T0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let b = begin(&f, &f.ws, "nurse.tanaka", T0 + 2_000).await;
    let r = finish(
        &f,
        &f.ws,
        &b.challenge_id,
        vec![badge(), decision(&on_reader, &b.nonce.0, true, T0 + 2_000)],
        T0 + 2_000,
    )
    .await
    .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("suspended"), "{reason}");
}
on_both_engines!(
    r_bio_3_match_on_reader_decisions_from_registered_readers_only,
    match_on_reader
);

/// Two replicas share one PostgreSQL database: an authentication begun on
/// one is finished on the other, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_on_one_replica_finish_on_another() {
    let db = TestDb::new(support::Engine::Postgres).await;
    let a = fixture(&db).await;
    enroll_pin(&a, "nurse.tanaka", "482913").await;
    // Replica B: its own pool and state, the same database and keys.
    let mut b_auth = a.auth.clone();
    b_auth.store = db.open().await;
    b_auth.policy = clinauth_server::policy_store::ActivePolicy::default();
    b_auth.policy.reload(&b_auth.store).await.unwrap();

    let begun = begin(&a, &a.ws, "nurse.tanaka", T0).await;
    let request = FinishRequest {
        challenge_id: begun.challenge_id.clone(),
        evidence: vec![badge(), pin("482913")],
    };
    let r = b_auth.finish(&a.ws, &request, T0 + 10).await.unwrap();
    assert!(matches!(r, FinishResponse::Allow { .. }), "{r:?}");
    // And not a second time, on either replica.
    assert!(a.auth.finish(&a.ws, &request, T0 + 20).await.is_err());
    assert!(b_auth.finish(&a.ws, &request, T0 + 30).await.is_err());
}

async fn enroll_through_reader(db: &TestDb) {
    let f = fixture(db).await;
    let reader = register_reader(&f, "reader-enroll", "sealed_template").await;
    let (enrollment, nonce) = enroller(&f)
        .biometric_begin("nurse.tanaka", T0)
        .await
        .unwrap();
    // A capture sealed for another user does not enroll this one.
    let wrong = sealed(&f, &reader, 7, 1, &nonce, "clerk.sato", T0);
    let EvidenceItem::BiometricSealed { capture: wrong } = wrong else {
        unreachable!()
    };
    assert!(enroller(&f)
        .biometric_finish(
            &f.auth.keys.matcher,
            "nurse.tanaka",
            &enrollment,
            1,
            &wrong.0,
            T0 + 5
        )
        .await
        .is_err());
    // The enrollment was spent by that attempt; a new one is needed.
    let (enrollment, nonce) = enroller(&f)
        .biometric_begin("nurse.tanaka", T0 + 10)
        .await
        .unwrap();
    let good = sealed(&f, &reader, 7, 1, &nonce, "nurse.tanaka", T0 + 10);
    let EvidenceItem::BiometricSealed { capture: good } = good else {
        unreachable!()
    };
    enroller(&f)
        .biometric_finish(
            &f.auth.keys.matcher,
            "nurse.tanaka",
            &enrollment,
            1,
            &good.0,
            T0 + 20,
        )
        .await
        .unwrap();
    assert!(
        enroller(&f)
            .biometric_finish(
                &f.auth.keys.matcher,
                "nurse.tanaka",
                &enrollment,
                1,
                &good.0,
                T0 + 30
            )
            .await
            .is_err(),
        "single use"
    );

    let b = begin(&f, &f.ws, "nurse.tanaka", T0 + 1_000).await;
    let finger = sealed(&f, &reader, 7, 5, &b.nonce.0, "nurse.tanaka", T0 + 1_000);
    let r = finish(
        &f,
        &f.ws,
        &b.challenge_id,
        vec![badge(), finger],
        T0 + 1_010,
    )
    .await
    .unwrap();
    assert!(matches!(r, FinishResponse::Allow { .. }), "{r:?}");
}
on_both_engines!(
    r_bio_3_fingerprint_enrolled_through_a_registered_reader,
    enroll_through_reader
);
