//! The authentication flow (begin → finish) called directly, on both engines.

mod support;

use clinauth_policy::Purpose;
use clinauth_proto::workstation::{BeginRequest, EvidenceItem, FinishRequest, FinishResponse, B64};
use clinauth_server::audit;
use clinauth_server::auth::AuthError;
use clinauth_server::directory::{self, DeviceState, UserState};
use support::fixture::{badge, fixture, T0};
use support::TestDb;

fn begin(user: &str) -> BeginRequest {
    BeginRequest {
        user: user.into(),
        purpose: Purpose::Login,
        operation: None,
    }
}

async fn begin_offers_policy_options(db: &TestDb) {
    let f = fixture(db).await;
    let r = f
        .auth
        .begin(&f.ws, &begin("nurse.tanaka"), T0)
        .await
        .unwrap();
    assert_eq!(r.challenge_id.len(), 32);
    assert_eq!(r.nonce.0.len(), 32);
    assert_eq!(r.expires_at, (T0 + 120_000) / 1000);
    assert!(
        r.options
            .contains(&vec!["smartcard".to_owned(), "card_pin".to_owned()]),
        "{:?}",
        r.options
    );
    assert!(r.options.contains(&vec!["fido2_uv".to_owned()]));
    let r2 = f
        .auth
        .begin(&f.ws, &begin("nurse.tanaka"), T0)
        .await
        .unwrap();
    assert_ne!(r.nonce, r2.nonce, "every challenge is fresh");
    let log = audit::page(&f.auth.store, 0, 100).await.unwrap();
    assert_eq!(log.iter().filter(|e| e.action == "auth.begin").count(), 2);
}
on_both_engines!(
    begin_offers_what_the_policy_allows_with_a_fresh_challenge,
    begin_offers_policy_options
);

async fn refusals(db: &TestDb) {
    let f = fixture(db).await;
    assert!(matches!(
        f.auth.begin(&f.ws, &begin("nobody"), T0).await,
        Err(AuthError::User)
    ));
    assert!(matches!(
        f.auth.begin(&f.ws, &begin("bad name!"), T0).await,
        Err(AuthError::Invalid(_))
    ));
    let sign = BeginRequest {
        user: "nurse.tanaka".into(),
        purpose: Purpose::Sign,
        operation: None,
    };
    assert!(matches!(
        f.auth.begin(&f.ws, &sign, T0).await,
        Err(AuthError::NoRule(Purpose::Sign))
    ));

    let mut tx = f.auth.store.begin().await.unwrap();
    directory::set_user_state(&mut tx, "nurse.tanaka", UserState::Suspended, T0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(
        f.auth.begin(&f.ws, &begin("nurse.tanaka"), T0).await,
        Err(AuthError::User)
    ));

    let mut gone = f.ws.clone();
    gone.state = DeviceState::Decommissioned;
    assert!(matches!(
        f.auth.begin(&gone, &begin("clerk.sato"), T0).await,
        Err(AuthError::Workstation(_))
    ));
    // Every refusal is in the audit log.
    let log = audit::page(&f.auth.store, 0, 100).await.unwrap();
    let refused: Vec<&str> = log
        .iter()
        .filter(|e| e.outcome == "refused")
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(refused.len(), 5, "{refused:#?}");
    assert!(refused.iter().any(|d| d.contains("user_refused")));
    assert!(refused.iter().any(|d| d.contains("workstation_refused")));
}
on_both_engines!(
    r_tls_2_and_r_log_1_refusals_are_refused_and_audited,
    refusals
);

async fn badge_alone(db: &TestDb) {
    let f = fixture(db).await;
    let b = f
        .auth
        .begin(&f.ws, &begin("nurse.tanaka"), T0)
        .await
        .unwrap();
    let finish = FinishRequest {
        challenge_id: b.challenge_id.clone(),
        evidence: vec![badge()],
    };
    let r = f.auth.finish(&f.ws, &finish, T0 + 1_000).await.unwrap();
    let FinishResponse::Deny {
        reason,
        reason_ja,
        retry_after,
    } = r
    else {
        panic!("a badge alone must be denied: {r:?}");
    };
    assert!(
        reason.starts_with("add one of: PIN or password, fingerprint"),
        "{reason}"
    );
    assert!(reason_ja.contains("次のいずれか"), "{reason_ja}");
    assert_eq!(
        retry_after, 1,
        "R-RATE-1: the first failure asks for a 1 s wait"
    );

    // The challenge is spent: a replay is refused, and audited.
    let again = f.auth.finish(&f.ws, &finish, T0 + 5_000).await;
    assert!(matches!(again, Err(AuthError::Challenge(_))), "{again:?}");
    let log = audit::page(&f.auth.store, 0, 100).await.unwrap();
    let deny = log
        .iter()
        .find(|e| e.action == "auth.finish" && e.outcome == "deny")
        .unwrap();
    assert_eq!(deny.actor, "nurse.tanaka");
    assert_eq!(deny.workstation.as_deref(), Some("ward3-ws01"));
    assert!(
        deny.detail.contains(r#""presented":["badge"]"#),
        "{}",
        deny.detail
    );
    assert!(log
        .iter()
        .any(|e| e.action == "auth.finish" && e.outcome == "refused"));
}
on_both_engines!(
    r_auth_3_badge_alone_is_denied_with_what_is_missing,
    badge_alone
);

async fn foreign_badge(db: &TestDb) {
    let f = fixture(db).await;
    let b = f.auth.begin(&f.ws, &begin("clerk.sato"), T0).await.unwrap();
    let r = f
        .auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: b.challenge_id,
                evidence: vec![badge()],
            },
            T0 + 1,
        )
        .await
        .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(
        reason.contains("badge: badge is registered to someone else"),
        "{reason}"
    );
    let b = f
        .auth
        .begin(&f.ws, &begin("nurse.tanaka"), T0 + 2_000)
        .await
        .unwrap();
    let unknown = EvidenceItem::Badge {
        uid: B64(vec![9, 9, 9, 9]),
    };
    let r = f
        .auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: b.challenge_id,
                evidence: vec![unknown],
            },
            T0 + 2_001,
        )
        .await
        .unwrap();
    let FinishResponse::Deny { reason, .. } = r else {
        panic!("{r:?}")
    };
    assert!(reason.contains("badge is not registered"), "{reason}");
}
on_both_engines!(r_auth_2_someone_elses_badge_does_not_count, foreign_badge);

async fn lockout(db: &TestDb) {
    let f = fixture(db).await;
    // The hospital policy locks after 20 consecutive failures (R-RATE-1).
    let mut now = T0;
    for i in 0..20 {
        let b = match f.auth.begin(&f.ws, &begin("nurse.tanaka"), now).await {
            Ok(b) => b,
            Err(e) => panic!("attempt {i}: {e}"),
        };
        let r = f
            .auth
            .finish(
                &f.ws,
                &FinishRequest {
                    challenge_id: b.challenge_id,
                    evidence: vec![badge()],
                },
                now,
            )
            .await
            .unwrap();
        let FinishResponse::Deny { retry_after, .. } = r else {
            panic!("{r:?}")
        };
        // Wait out both the user's backoff and the workstation's bucket.
        now += i64::from(retry_after.max(6)) * 1000 + 1;
    }
    assert!(matches!(
        f.auth.begin(&f.ws, &begin("nurse.tanaka"), now).await,
        Err(AuthError::Locked)
    ));
    // Another user at the same workstation is not locked out.
    assert!(f.auth.begin(&f.ws, &begin("clerk.sato"), now).await.is_ok());
}
on_both_engines!(
    r_rate_1_locks_after_the_policy_limit_but_not_others,
    lockout
);

async fn retry_after(db: &TestDb) {
    let f = fixture(db).await;
    let b = f
        .auth
        .begin(&f.ws, &begin("nurse.tanaka"), T0)
        .await
        .unwrap();
    f.auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: b.challenge_id,
                evidence: vec![badge()],
            },
            T0,
        )
        .await
        .unwrap();
    assert!(matches!(
        f.auth.begin(&f.ws, &begin("nurse.tanaka"), T0 + 500).await,
        Err(AuthError::RetryAfter(1))
    ));
    assert!(f
        .auth
        .begin(&f.ws, &begin("nurse.tanaka"), T0 + 1_000)
        .await
        .is_ok());
}
on_both_engines!(r_rate_1_backoff_is_enforced_at_begin, retry_after);
