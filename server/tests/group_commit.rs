//! Group commit (`auth::commit`): many requests' writes in one transaction,
//! with every guarantee of one transaction per request: a challenge is
//! used once even when presented many times in one batch, each decision has
//! its audit entry, and the chain stays one chain when two replicas write
//! at once.

mod support;

use clinauth_policy::Purpose;
use clinauth_proto::workstation::{BeginRequest, FinishRequest, FinishResponse};
use clinauth_server::audit;
use clinauth_server::auth::challenge::ChallengeError;
use clinauth_server::auth::{AuthError, AuthService};
use std::sync::Arc;
use support::fixture::{badge, fixture, T0};
use support::TestDb;

fn begin_req() -> BeginRequest {
    BeginRequest {
        user: "nurse.tanaka".into(),
        purpose: Purpose::Login,
        operation: None,
    }
}

async fn replay_race(db: &TestDb) {
    let f = fixture(db).await;
    let b = f.auth.begin(&f.ws, &begin_req(), T0).await.unwrap();
    // The same challenge presented 16 times at once: the writer sees them
    // in one or a few batches; exactly one is decided.
    let auth = Arc::new(f.auth.clone());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let auth = auth.clone();
        let ws = f.ws.clone();
        let id = b.challenge_id.clone();
        tasks.push(tokio::spawn(async move {
            auth.finish(
                &ws,
                &FinishRequest {
                    challenge_id: id,
                    evidence: vec![badge()],
                },
                T0 + 10,
            )
            .await
        }));
    }
    let mut decided = 0;
    let mut used = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(FinishResponse::Deny { .. }) => decided += 1,
            Ok(other) => panic!("badge alone must not be allowed: {other:?}"),
            Err(AuthError::Challenge(ChallengeError::Used)) => used += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((decided, used), (1, 15));
    let log = audit::page(&f.auth.store, 0, 10_000).await.unwrap();
    let decisions = log
        .iter()
        .filter(|e| e.action == "auth.finish" && e.outcome == "deny")
        .count();
    let refusals = log
        .iter()
        .filter(|e| e.action == "auth.finish" && e.outcome == "refused")
        .count();
    assert_eq!((decisions, refusals), (1, 15), "every attempt is audited");
    assert!(audit::verify(&f.auth.store, f.auth.keys.audit.public_key())
        .await
        .unwrap()
        .is_intact());
}
on_both_engines!(
    a_challenge_presented_many_times_at_once_is_used_once,
    replay_race
);

async fn begins(
    auth: AuthService,
    ws: clinauth_server::directory::Workstation,
    n: usize,
) -> Vec<String> {
    let auth = Arc::new(auth);
    let mut tasks = Vec::new();
    for i in 0..n {
        let auth = auth.clone();
        let ws = ws.clone();
        tasks.push(tokio::spawn(async move {
            auth.begin(&ws, &begin_req(), T0 + i as i64)
                .await
                .map(|b| b.challenge_id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap());
    }
    ids
}

async fn two_replicas(db: &TestDb) {
    let f = fixture(db).await;
    // A second replica: its own pool and writer, the same database and keys.
    let other_store = db.open().await;
    let other = AuthService {
        store: other_store.clone(),
        commits: clinauth_server::auth::commit::Committer::new(other_store, f.auth.keys.clone()),
        clock: Default::default(),
        ..f.auth.clone()
    };
    let (a, b) = tokio::join!(
        begins(f.auth.clone(), f.ws.clone(), 60),
        begins(other, f.ws.clone(), 60)
    );
    let mut all: Vec<String> = a.into_iter().chain(b).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 120, "every begin got its own challenge");
    let log = audit::page(&f.auth.store, 0, 10_000).await.unwrap();
    let begun = log.iter().filter(|e| e.action == "auth.begin").count();
    assert_eq!(begun, 120, "each begin has its audit entry");
    let report = audit::verify(&f.auth.store, f.auth.keys.audit.public_key())
        .await
        .unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    // Every challenge is stored and usable once.
    let last = all.last().unwrap().clone();
    let r = f
        .auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: last.clone(),
                evidence: vec![badge()],
            },
            T0 + 1_000,
        )
        .await;
    assert!(matches!(r, Ok(FinishResponse::Deny { .. })), "{r:?}");
}
on_both_engines!(two_replicas_writing_at_once_keep_one_chain, two_replicas);

async fn contact_times(db: &TestDb) {
    use clinauth_server::directory::{self, CONTACT_RESOLUTION_MS};
    let f = fixture(db).await;
    let seen = |store: clinauth_server::store::Store, id: String| async move {
        directory::workstations(&store)
            .await
            .unwrap()
            .into_iter()
            .find(|w| w.id == id)
            .unwrap()
            .last_contact
    };
    let store = f.auth.store.clone();
    // A begin records the workstation's contact; calls within the
    // resolution leave it; a later one moves it on.
    for (at, expected) in [
        (T0, T0),
        (T0 + 5, T0),
        (T0 + CONTACT_RESOLUTION_MS - 1, T0),
        (T0 + CONTACT_RESOLUTION_MS, T0 + CONTACT_RESOLUTION_MS),
    ] {
        f.auth.begin(&f.ws, &begin_req(), at).await.unwrap();
        assert_eq!(
            seen(store.clone(), f.ws.id.clone()).await,
            Some(expected),
            "after a begin at T0 + {}",
            at - T0
        );
    }
    // A finish too.
    let at = T0 + 3 * CONTACT_RESOLUTION_MS;
    let b = f.auth.begin(&f.ws, &begin_req(), at - 1).await.unwrap();
    f.auth
        .finish(
            &f.ws,
            &FinishRequest {
                challenge_id: b.challenge_id,
                evidence: vec![badge()],
            },
            at + CONTACT_RESOLUTION_MS,
        )
        .await
        .unwrap();
    assert_eq!(
        seen(store, f.ws.id.clone()).await,
        Some(at + CONTACT_RESOLUTION_MS)
    );
}
on_both_engines!(
    r_dev_1_logins_record_the_workstations_contact_time,
    contact_times
);
