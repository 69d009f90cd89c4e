//! Challenges, throttling, policy activation and keys, on both engines.

mod support;

use clinauth_policy::{FailureLimits, Purpose, Seconds};
use clinauth_server::audit::{self, AuditKey};
use clinauth_server::auth::challenge::{self, ChallengeError};
use clinauth_server::auth::throttle::{self, WS_BURST, WS_DRAIN_MS};
use clinauth_server::keys::{KeyError, Keys};
use clinauth_server::policy_store::{self, ActivePolicy, PolicyStoreError};
use support::TestDb;

const T0: i64 = 1_800_000_000_000;

async fn single_use(db: &TestDb) {
    let store = db.open().await;
    let mut tx = store.begin().await.unwrap();
    let c = challenge::issue(&mut tx, "alice", "ws1", Purpose::Login, None, T0, 120_000)
        .await
        .unwrap();
    let expired = challenge::issue(&mut tx, "alice", "ws1", Purpose::Login, None, T0, 1_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(c.id.len(), 32);

    let mut tx = store.begin().await.unwrap();
    let other = challenge::consume(&mut tx, &c.id, "ws2", T0 + 10).await;
    assert!(
        matches!(other, Err(ChallengeError::OtherWorkstation)),
        "{other:?}"
    );
    let got = challenge::consume(&mut tx, &c.id, "ws1", T0 + 10)
        .await
        .unwrap();
    assert_eq!(
        (got.nonce, got.user.as_str(), got.purpose),
        (c.nonce, "alice", Purpose::Login)
    );
    let again = challenge::consume(&mut tx, &c.id, "ws1", T0 + 20).await;
    assert!(matches!(again, Err(ChallengeError::Used)), "{again:?}");
    let late = challenge::consume(&mut tx, &expired.id, "ws1", T0 + 2_000).await;
    assert!(matches!(late, Err(ChallengeError::Expired)), "{late:?}");
    for bad in ["", "zz", &"0".repeat(32), "'; DROP TABLE challenges; --"] {
        let r = challenge::consume(&mut tx, bad, "ws1", T0).await;
        assert!(matches!(r, Err(ChallengeError::Unknown)), "{bad}: {r:?}");
    }
    assert_eq!(challenge::purge(&mut tx, T0 + 200_000).await.unwrap(), 2);
    tx.commit().await.unwrap();

    // Purged: issued and expired before the cut-off; kept: still valid, or
    // issued after it.
    let mut tx = store.begin().await.unwrap();
    let long = challenge::issue(&mut tx, "alice", "ws1", Purpose::Login, None, T0, 600_000)
        .await
        .unwrap();
    let short = challenge::issue(&mut tx, "alice", "ws1", Purpose::Login, None, T0, 1_000)
        .await
        .unwrap();
    let after = challenge::issue(&mut tx, "bob", "ws1", Purpose::Login, None, T0 + 300_000, 1)
        .await
        .unwrap();
    assert_eq!(challenge::purge(&mut tx, T0 + 200_000).await.unwrap(), 1);
    let gone = challenge::consume(&mut tx, &short.id, "ws1", T0 + 200_001).await;
    assert!(matches!(gone, Err(ChallengeError::Unknown)), "{gone:?}");
    challenge::consume(&mut tx, &long.id, "ws1", T0 + 200_001)
        .await
        .unwrap();
    assert_eq!(challenge::purge(&mut tx, T0 + 300_000).await.unwrap(), 0);
    assert_eq!(challenge::purge(&mut tx, T0 + 300_002).await.unwrap(), 1);
    let gone = challenge::consume(&mut tx, &after.id, "ws1", T0 + 300_003).await;
    assert!(matches!(gone, Err(ChallengeError::Unknown)), "{gone:?}");
    assert_eq!(challenge::purge(&mut tx, T0 + 600_001).await.unwrap(), 1);
    tx.commit().await.unwrap();
}
on_both_engines!(
    challenge_is_single_use_and_bound_to_its_workstation,
    single_use
);

async fn replicas_race(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let mut tx = a.begin().await.unwrap();
    let c = challenge::issue(&mut tx, "alice", "ws1", Purpose::Login, None, T0, 120_000)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone(), a.clone(), b.clone(), a, b] {
        let id = c.id.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            let r = challenge::consume(&mut tx, &id, "ws1", T0 + 5).await;
            tx.commit().await.unwrap();
            r.is_ok()
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap());
    }
    assert_eq!(wins, 1, "exactly one replica may use a challenge");
}
on_both_engines!(challenge_used_once_across_replicas, replicas_race);

fn limits() -> FailureLimits {
    FailureLimits {
        max_consecutive: 5,
        backoff_base: Seconds(1),
        backoff_max: Seconds(60),
        biometric_max: 3,
        presentation_attack_detection: false,
    }
}

async fn user_backoff(db: &TestDb) {
    let store = db.open().await;
    let key = throttle::user_key("alice");
    let mut tx = store.begin().await.unwrap();
    let mut waits = Vec::new();
    for i in 0..5 {
        let c = throttle::fail(&mut tx, &key, i < 3, &limits(), T0)
            .await
            .unwrap();
        waits.push(c.wait_ms(&limits(), T0));
        assert_eq!(c.locked, i == 4, "locked only at the limit");
    }
    assert_eq!(waits, vec![1_000, 2_000, 4_000, 8_000, 16_000]);
    let c = throttle::read(&mut tx, &key).await.unwrap();
    assert!(
        c.biometric_barred(&limits()),
        "R-BIO-4: barred after 3 biometric failures"
    );
    assert_eq!(c.wait_ms(&limits(), T0 + 16_000), 0);
    throttle::clear(&mut tx, &key).await.unwrap();
    assert_eq!(
        throttle::read(&mut tx, &key).await.unwrap(),
        throttle::Counter::default()
    );
    tx.commit().await.unwrap();
}
on_both_engines!(
    r_rate_1_user_backoff_doubles_and_locks_at_the_limit,
    user_backoff
);

async fn workstation_bucket(db: &TestDb) {
    let store = db.open().await;
    let key = throttle::workstation_key("ws1");
    let mut tx = store.begin().await.unwrap();
    for _ in 0..WS_BURST - 1 {
        let c = throttle::fill_bucket(&mut tx, &key, T0).await.unwrap();
        assert_eq!(c.bucket_wait_ms(T0), 0);
    }
    let c = throttle::fill_bucket(&mut tx, &key, T0).await.unwrap();
    assert_eq!(
        c.bucket_wait_ms(T0),
        WS_DRAIN_MS,
        "a full bucket makes the workstation wait"
    );
    assert_eq!(
        c.bucket_wait_ms(T0 + WS_DRAIN_MS),
        0,
        "and drains at one per interval"
    );
    // An attacker cycling through users gets one failure per interval.
    let mut t = T0 + WS_DRAIN_MS;
    for _ in 0..5 {
        let c = throttle::fill_bucket(&mut tx, &key, t).await.unwrap();
        assert_eq!(c.bucket_wait_ms(t), WS_DRAIN_MS);
        t += WS_DRAIN_MS;
    }
    tx.commit().await.unwrap();
}
on_both_engines!(
    r_rate_1_one_workstation_cannot_lock_out_everyone_quickly,
    workstation_bucket
);

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../examples/policy/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn activation(db: &TestDb) {
    let store = db.open().await;
    let (key, _) = AuditKey::generate().unwrap();
    let active = ActivePolicy::default();
    assert!(active.reload(&store).await.unwrap().is_none());

    let weak = active
        .activate(&store, &key, &example("weak.toml"), "officer.ito", T0)
        .await;
    assert!(
        matches!(weak, Err(PolicyStoreError::Invalid(_))),
        "R-POL-1: refused before it takes effect"
    );
    assert!(policy_store::history(&store).await.unwrap().is_empty());

    let text = example("hospital.toml");
    let p = active
        .activate(&store, &key, &text, "officer.ito", T0)
        .await
        .unwrap();
    assert_eq!(p.version(), 3);

    // Another replica picks it up from the database.
    let replica = ActivePolicy::default();
    let seen = replica.reload(&store).await.unwrap().unwrap();
    assert_eq!(seen.digest(), p.digest());

    let older = text
        .replace("version = 3", "version = 2")
        .replace("idle_lock = \"3m\"", "idle_lock = \"4m\"");
    assert!(matches!(
        active
            .activate(&store, &key, &older, "officer.ito", T0 + 1)
            .await,
        Err(PolicyStoreError::Version {
            given: 2,
            active: 3
        })
    ));
    let newer = text
        .replace("version = 3", "version = 4")
        .replace("idle_lock = \"3m\"", "idle_lock = \"4m\"");
    let p4 = active
        .activate(&store, &key, &newer, "officer.sato", T0 + 2)
        .await
        .unwrap();
    assert_eq!(active.get().unwrap().version(), 4);
    assert_ne!(p4.digest(), p.digest());

    let history = policy_store::history(&store).await.unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[0].active && !history[1].active);
    assert_eq!(history[0].created_by, "officer.sato");

    let all = audit::page(&store, 0, 10).await.unwrap();
    let refused: Vec<&str> = all
        .iter()
        .filter(|e| e.outcome == "refused")
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "the weak policy and the older version: {refused:#?}"
    );
    assert!(refused[0].contains("R-AUTH-2"), "{}", refused[0]);
    let entries: Vec<_> = all.into_iter().filter(|e| e.outcome == "ok").collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].action, "policy.activate");
    assert!(
        entries[1].detail.contains(r#"+idle_lock = \"4m\""#),
        "{}",
        entries[1].detail
    );
    assert!(
        entries[1].detail.contains(r#"-idle_lock = \"3m\""#),
        "{}",
        entries[1].detail
    );
    assert!(audit::verify(&store, key.public_key())
        .await
        .unwrap()
        .is_intact());
}
on_both_engines!(
    r_pol_1_policies_are_validated_versioned_and_audited,
    activation
);

#[test]
fn keys_are_created_private_and_refused_when_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = support::TempDir::new("keys");
    let made = Keys::create_missing(&dir.0).unwrap();
    assert_eq!(made.len(), 4);
    assert!(
        Keys::create_missing(&dir.0).unwrap().is_empty(),
        "never replaces a key"
    );
    for path in &made {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let keys = Keys::load(&dir.0).unwrap();
    assert_eq!(keys.ticket_kid.len(), 16);
    assert!(!format!("{keys:?}").contains("PRIVATE"));
    std::fs::set_permissions(&made[0], std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(Keys::load(&dir.0), Err(KeyError::Permissions(_))));
    std::fs::set_permissions(&made[0], std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&made[1], b"not a key").unwrap();
    assert!(matches!(Keys::load(&dir.0), Err(KeyError::Invalid(_))));
}

#[test]
fn challenge_ids_sort_by_issue_time_and_never_repeat() {
    let mut ids = Vec::new();
    for step in 0..200i64 {
        // Two per millisecond: the random part keeps them apart.
        for _ in 0..2 {
            ids.push(challenge::new_id(T0 + step).unwrap());
        }
    }
    assert!(ids
        .iter()
        .all(|id| id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))));
    // The first 12 digits are the issue time: later IDs sort after earlier ones.
    assert_eq!(ids[0][..12], format!("{T0:012x}"));
    for pair in ids.windows(2) {
        assert!(pair[0][..12] <= pair[1][..12], "{pair:?}");
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len());
    // Before the epoch (a clock gone wrong) still gives a valid ID.
    assert_eq!(challenge::new_id(-5).unwrap()[..12], *"000000000000");
}
