//! Storage, directory and audit chain, on SQLite and on PostgreSQL.

mod support;

use clinauth_server::audit::{self, AuditKey, Break, Event};
use clinauth_server::directory::{self, DeviceKind, DeviceState, NewDevice, UserState};
use clinauth_server::store::{Store, StoreError};
use serde_json::json;
use sqlx::Executor;
use support::TestDb;

fn event(n: i64) -> Event {
    Event {
        at_ms: 1_800_000_000_000 + n,
        actor: format!("user{n}"),
        workstation: Some("ward-3-ws-01".into()),
        action: "auth.finish".into(),
        target: None,
        outcome: if n % 2 == 0 {
            "allow".into()
        } else {
            "deny".into()
        },
        detail: json!({ "n": n, "factors": ["smartcard", "card_pin"] }),
    }
}

async fn chain_of(store: &Store, key: &AuditKey, n: i64) {
    for i in 1..=n {
        audit::record(store, key, &event(i)).await.unwrap();
    }
}

async fn exec(store: &Store, sql: &str) {
    store
        .pool()
        .execute(sqlx::AssertSqlSafe(sql.to_owned()))
        .await
        .unwrap();
}

async fn migrations_are_idempotent(db: &TestDb) {
    let first = db.open().await;
    first.close().await;
    let second = db.open().await;
    assert!(directory::users(&second).await.unwrap().is_empty());
    exec(
        &second,
        "INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)",
    )
    .await;
    second.close().await;
    match Store::open(&db.url, 2).await {
        Err(StoreError::SchemaTooNew { found: 999, .. }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}
on_both_engines!(
    store_migrations_are_idempotent_and_refuse_newer_schema,
    migrations_are_idempotent
);

async fn intact_chain(db: &TestDb) {
    let store = db.open().await;
    let (key, _) = AuditKey::generate().unwrap();
    chain_of(&store, &key, 25).await;
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.entries, 25);
    assert_eq!(report.head.map(|(seq, _)| seq), Some(25));
    let first = audit::page(&store, 0, 1).await.unwrap();
    assert_eq!(first[0].prev_hash, audit::GENESIS);
    assert_eq!(
        first[0].detail,
        r#"{"factors":["smartcard","card_pin"],"n":1}"#
    );
}
on_both_engines!(r_log_1_intact_chain_verifies, intact_chain);

async fn detects_edit(db: &TestDb) {
    let store = db.open().await;
    let (key, _) = AuditKey::generate().unwrap();
    chain_of(&store, &key, 10).await;
    exec(
        &store,
        "UPDATE audit_log SET outcome = 'allow' WHERE seq = 5",
    )
    .await;
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert_eq!(report.breaks, vec![Break::Edited { seq: 5 }]);
    assert!(report.breaks[0].to_string().contains("entry 5 was edited"));
}
on_both_engines!(r_log_1_detects_an_edited_entry, detects_edit);

async fn detects_deletion(db: &TestDb) {
    let store = db.open().await;
    let (key, _) = AuditKey::generate().unwrap();
    chain_of(&store, &key, 10).await;
    exec(&store, "DELETE FROM audit_log WHERE seq IN (4, 5)").await;
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert_eq!(report.breaks, vec![Break::Deleted { from: 4, to: 5 }]);
    assert_eq!(report.entries, 8);
}
on_both_engines!(r_log_1_detects_deleted_entries, detects_deletion);

async fn detects_insertion(db: &TestDb) {
    let store = db.open().await;
    let (key, _) = AuditKey::generate().unwrap();
    chain_of(&store, &key, 6).await;
    // An intruder with database access but not the audit key rewrites the
    // tail so that a new entry sits at seq 4, chained and hashed correctly.
    let (intruder, _) = AuditKey::generate().unwrap();
    exec(&store, "DELETE FROM audit_log WHERE seq >= 4").await;
    audit::record(&store, &intruder, &event(99)).await.unwrap();
    audit::record(&store, &key, &event(5)).await.unwrap();
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert_eq!(
        report.breaks,
        vec![Break::Forged { seq: 4 }],
        "{:?}",
        report.breaks
    );

    // An entry moved in from elsewhere does not chain.
    exec(
        &store,
        "UPDATE audit_log SET prev_hash = hash WHERE seq = 2",
    )
    .await;
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert!(
        report.breaks.contains(&Break::Edited { seq: 2 }),
        "{:?}",
        report.breaks
    );
}
on_both_engines!(
    r_log_1_detects_inserted_and_forged_entries,
    detects_insertion
);

async fn wrong_key(db: &TestDb) {
    let store = db.open().await;
    let (key, _) = AuditKey::generate().unwrap();
    chain_of(&store, &key, 3).await;
    let (other, _) = AuditKey::generate().unwrap();
    let report = audit::verify(&store, other.public_key()).await.unwrap();
    assert_eq!(report.breaks.len(), 3);
}
on_both_engines!(r_log_1_verify_with_another_key_fails, wrong_key);

async fn atomic_with_change(db: &TestDb) {
    let store = db.open().await;
    let (key, _) = AuditKey::generate().unwrap();
    // A change whose audit entry is refused is rolled back with it.
    let mut tx = store.begin().await.unwrap();
    directory::create_user(&mut tx, "alice", "Alice", &["nurse".into()], 1)
        .await
        .unwrap();
    let mut big = event(1);
    big.detail = json!({ "x": "y".repeat(audit::MAX_DETAIL_BYTES) });
    assert!(audit::append(&mut tx, store.backend(), &key, &big)
        .await
        .is_err());
    drop(tx);
    assert!(directory::user(&store, "alice").await.unwrap().is_none());
    assert!(audit::page(&store, 0, 10).await.unwrap().is_empty());

    // And one that commits carries its entry.
    let mut tx = store.begin().await.unwrap();
    directory::create_user(&mut tx, "alice", "Alice", &["nurse".into()], 1)
        .await
        .unwrap();
    audit::append(&mut tx, store.backend(), &key, &event(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(directory::user(&store, "alice").await.unwrap().is_some());
    assert_eq!(audit::page(&store, 0, 10).await.unwrap().len(), 1);
}
on_both_engines!(
    r_log_1_entry_commits_or_rolls_back_with_its_change,
    atomic_with_change
);

async fn replicas(db: &TestDb) {
    // Two server processes on one database append concurrently; the chain
    // stays one chain (on SQLite the two pools share the file).
    let a = db.open().await;
    let b = db.open().await;
    let (key, _) = AuditKey::generate().unwrap();
    let key = std::sync::Arc::new(key);
    let mut tasks = Vec::new();
    for (i, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..15 {
                audit::record(&store, &key, &event(i as i64 * 100 + n))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = audit::verify(&a, key.public_key()).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.entries, 60);
}
on_both_engines!(r_log_1_concurrent_replicas_keep_one_chain, replicas);

async fn directory_lifecycle(db: &TestDb) {
    let store = db.open().await;
    let mut tx = store.begin().await.unwrap();
    let roles = vec!["physician".to_owned(), "officer".to_owned()];
    directory::create_user(&mut tx, "dr.sato", "佐藤 医師", &roles, 10)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A failed statement ends the transaction (PostgreSQL aborts it): use a new one.
    let mut tx = store.begin().await.unwrap();
    let dup = directory::create_user(&mut tx, "dr.sato", "again", &roles, 11).await;
    assert!(
        matches!(
            dup,
            Err(directory::DirectoryError::Store(StoreError::Exists(_)))
        ),
        "{dup:?}"
    );
    drop(tx);

    let user = directory::user(&store, "dr.sato").await.unwrap().unwrap();
    assert_eq!(user.display_name, "佐藤 医師");
    assert_eq!(user.roles, roles);
    assert_eq!(user.state, UserState::Active);

    let mut tx = store.begin().await.unwrap();
    directory::set_user_state(&mut tx, "dr.sato", UserState::Suspended, 20)
        .await
        .unwrap();
    assert!(
        directory::set_user_state(&mut tx, "nobody", UserState::Active, 20)
            .await
            .is_err()
    );
    let fp = "AB".repeat(32);
    directory::create_workstation(&mut tx, "ward3-ws01", &fp, "ward", "3F east", 20)
        .await
        .unwrap();
    directory::create_device(
        &mut tx,
        &NewDevice {
            id: "reader-0001",
            kind: DeviceKind::BiometricReader,
            owner: None,
            description: "fingerprint reader, ward 3",
            public_key: Some(&[4u8; 65]),
            attributes: json!({ "protection": "sealed_template", "pad": true }),
        },
        20,
    )
    .await
    .unwrap();
    let orphan = directory::create_device(
        &mut tx,
        &NewDevice {
            id: "token-1",
            kind: DeviceKind::Fido2Token,
            owner: Some("ghost"),
            description: "",
            public_key: None,
            attributes: json!({}),
        },
        20,
    )
    .await;
    assert!(orphan.is_err());
    drop(tx);
    // The failed insert aborted the transaction on PostgreSQL; redo the good part.
    let mut tx = store.begin().await.unwrap();
    directory::set_user_state(&mut tx, "dr.sato", UserState::Suspended, 20)
        .await
        .unwrap();
    directory::create_workstation(&mut tx, "ward3-ws01", &fp, "ward", "3F east", 20)
        .await
        .unwrap();
    directory::create_device(
        &mut tx,
        &NewDevice {
            id: "reader-0001",
            kind: DeviceKind::BiometricReader,
            owner: None,
            description: "fingerprint reader, ward 3",
            public_key: Some(&[4u8; 65]),
            attributes: json!({ "protection": "sealed_template", "pad": true }),
        },
        20,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(
        directory::user(&store, "dr.sato")
            .await
            .unwrap()
            .unwrap()
            .state,
        UserState::Suspended
    );
    // Certificates are looked up case-insensitively by fingerprint.
    let ws = directory::workstation_by_cert(&store, &fp.to_lowercase())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ws.group, "ward");
    assert_eq!(ws.last_contact, None);
    directory::touch_workstation(&store, "ward3-ws01", 500)
        .await
        .unwrap();
    directory::touch_workstation(&store, "ward3-ws01", 400)
        .await
        .unwrap();
    let ws = directory::workstation_by_cert(&store, &fp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ws.last_contact, Some(500), "last contact never goes back");
    // Recorded to within CONTACT_RESOLUTION_MS: a busy workstation does not
    // rewrite its row at every call.
    let later = 500 + directory::CONTACT_RESOLUTION_MS;
    for (at, expected) in [(later - 1, 500), (later, later)] {
        directory::touch_workstation(&store, "ward3-ws01", at)
            .await
            .unwrap();
        let ws = directory::workstation_by_cert(&store, &fp)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ws.last_contact, Some(expected), "touched at {at}");
    }

    let mut tx = store.begin().await.unwrap();
    directory::set_workstation_state(&mut tx, "ward3-ws01", DeviceState::Decommissioned, 600)
        .await
        .unwrap();
    directory::set_device_state(&mut tx, "reader-0001", DeviceState::Suspended, 600)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ws = directory::workstation_by_cert(&store, &fp)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ws.state, DeviceState::Decommissioned);
    let reader = directory::device(&store, "reader-0001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.state, DeviceState::Suspended);
    assert_eq!(reader.public_key.as_deref(), Some(&[4u8; 65][..]));
    assert_eq!(reader.attributes["protection"], "sealed_template");
    directory::touch_device(&store, "reader-0001", 700)
        .await
        .unwrap();
    assert_eq!(
        directory::device(&store, "reader-0001")
            .await
            .unwrap()
            .unwrap()
            .last_contact,
        Some(700)
    );
}
on_both_engines!(
    r_dev_1_users_workstations_devices_with_state_and_contact,
    directory_lifecycle
);

#[tokio::test]
async fn directory_refuses_malformed_input() {
    let db = TestDb::new(support::Engine::Sqlite).await;
    let store = db.open().await;
    let mut tx = store.begin().await.unwrap();
    for (id, name) in [
        ("", "x"),
        ("a b", "x"),
        (&"x".repeat(65)[..], "x"),
        ("ok", "bell\u{7}"),
    ] {
        assert!(
            directory::create_user(&mut tx, id, name, &[], 1)
                .await
                .is_err(),
            "{id:?} {name:?}"
        );
    }
    let too_many: Vec<String> = (0..33).map(|i| format!("r{i}")).collect();
    assert!(directory::create_user(&mut tx, "u", "U", &too_many, 1)
        .await
        .is_err());
    assert!(
        directory::create_workstation(&mut tx, "ws", "nothex", "ward", "", 1)
            .await
            .is_err()
    );
    assert!(directory::create_device(
        &mut tx,
        &NewDevice {
            id: "d",
            kind: DeviceKind::Badge,
            owner: None,
            description: "",
            public_key: Some(&[0u8; 9000]),
            attributes: json!({}),
        },
        1
    )
    .await
    .is_err());
    assert!("robot".parse::<DeviceKind>().is_err());
}

async fn one_signature_per_commit(db: &TestDb) {
    let store = db.open().await;
    let (key, _) = AuditKey::generate().unwrap();
    chain_of(&store, &key, 2).await;
    // A group commit's entries: one signature, on the last, covers them.
    let events: Vec<Event> = (3..=7).map(event).collect();
    let mut tx = store.begin().await.unwrap();
    let entries = audit::append_batch(&mut tx, store.backend(), &key, &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let signed: Vec<bool> = entries.iter().map(|e| !e.signature.is_empty()).collect();
    assert_eq!(signed, [false, false, false, false, true]);
    chain_of(&store, &key, 1).await;
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.entries, 8);

    // An unsigned entry edited and re-hashed no longer chains to the next.
    let mut e5 = audit::page(&store, 4, 1).await.unwrap().remove(0);
    e5.outcome = "allow-forged".into();
    let rehashed = audit::entry_hash(
        &e5.prev_hash,
        e5.seq,
        &audit::EntryFields {
            at_ms: e5.at_ms,
            actor: &e5.actor,
            workstation: e5.workstation.as_deref(),
            action: &e5.action,
            target: e5.target.as_deref(),
            outcome: &e5.outcome,
            detail: &e5.detail,
        },
    );
    sqlx::query("UPDATE audit_log SET outcome = $1, hash = $2 WHERE seq = 5")
        .bind(&e5.outcome)
        .bind(rehashed.to_vec())
        .execute(store.pool())
        .await
        .unwrap();
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert_eq!(report.breaks, vec![Break::Unchained { seq: 6 }]);

    // Entry 5 restored exactly as written: intact again.
    sqlx::query("UPDATE audit_log SET outcome = $1, hash = $2 WHERE seq = 5")
        .bind(&entries[2].outcome)
        .bind(entries[2].hash.to_vec())
        .execute(store.pool())
        .await
        .unwrap();
    assert!(audit::verify(&store, key.public_key())
        .await
        .unwrap()
        .is_intact());
    // Entries appended after the last signature, or a signature removed.
    sqlx::query("UPDATE audit_log SET signature = $1 WHERE seq = 8")
        .bind(Vec::<u8>::new())
        .execute(store.pool())
        .await
        .unwrap();
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert_eq!(report.breaks, vec![Break::Unsigned { from: 8, to: 8 }]);
    sqlx::query("UPDATE audit_log SET signature = $1 WHERE seq = 7")
        .bind(Vec::<u8>::new())
        .execute(store.pool())
        .await
        .unwrap();
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert_eq!(report.breaks, vec![Break::Unsigned { from: 3, to: 8 }]);
    assert!(report.breaks[0].to_string().contains("no signature"));
}
on_both_engines!(
    r_log_1_one_signature_per_commit_covers_its_entries,
    one_signature_per_commit
);

/// A database made before migration 7 (the audit log and the challenges
/// stored with fewer indexes) upgrades with every audit entry kept: the
/// chain still verifies and grows.
async fn upgrade_keeps_audit_chain(db: &TestDb) {
    let (key, _) = AuditKey::generate().unwrap();
    let old = Store::open_to_version(&db.url, 2, 6).await.unwrap();
    let sqlite = old.backend() == clinauth_server::store::Backend::Sqlite;
    // Entries as schema 6 stored them. (PostgreSQL's audit table is not
    // rebuilt, and this release appends there through a function that
    // migration 7 adds: its entries are written after the upgrade.)
    if sqlite {
        chain_of(&old, &key, 12).await;
    }
    exec(
        &old,
        "INSERT INTO challenges (id, nonce, user_id, workstation, purpose, webauthn, created_at, expires_at) \
         VALUES ('0000000000000000000000000000abcd', 'nonce-bytes', 'dr.sato', 'ward3-ws01', 'login', NULL, 1, 99)",
    )
    .await;
    old.close().await;

    let store = db.open().await;
    if !sqlite {
        chain_of(&store, &key, 12).await;
    }
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.entries, 12);
    audit::record(&store, &key, &event(13)).await.unwrap();
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert_eq!(report.entries, 13);
    // Challenges are short-lived and not carried over (the login is retried).
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM challenges")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);

    if sqlite {
        // seq is the row ID (no second index); challenges are keyed by id.
        let indexes: Vec<(String,)> = sqlx::query_as(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name IN ('audit_log', 'challenges') ORDER BY name",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert!(indexes.is_empty(), "{indexes:?}");
        let (sql,): (String,) =
            sqlx::query_as("SELECT sql FROM sqlite_schema WHERE name = 'challenges'")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert!(sql.contains("WITHOUT ROWID"), "{sql}");
    }
}
on_both_engines!(
    store_upgrade_to_7_keeps_the_audit_chain,
    upgrade_keeps_audit_chain
);

/// Pooled connections are checked only when they sat idle (a check is a
/// round trip): when PostgreSQL drops them while the server is quiet (a
/// restart, an administrator), the next use gets a new connection unseen;
/// when it drops them while they are busy, each fails closed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_recovers_when_postgres_drops_its_connections() {
    let db = TestDb::new(support::Engine::Postgres).await;
    let store = db.open().await;
    let admin = Store::open(&db.url, 1).await.unwrap();
    let drop_all = || async {
        let (dropped,): (i64,) = sqlx::query_as(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(admin.pool())
        .await
        .unwrap();
        assert!(dropped >= 1, "no connection of the store's to drop");
    };

    assert!(directory::users(&store).await.unwrap().is_empty());
    drop_all().await;
    tokio::time::sleep(
        clinauth_server::store::PING_AFTER_IDLE + std::time::Duration::from_millis(100),
    )
    .await;
    assert!(directory::users(&store).await.unwrap().is_empty());

    drop_all().await;
    let mut failures = 0;
    while directory::users(&store).await.is_err() {
        failures += 1;
        assert!(failures <= 8, "still failing after {failures} attempts");
    }
}

/// Begins are committed without waiting for the disk (auth::commit's
/// `Durability::Deferred`): on PostgreSQL for their transaction alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_transactions_alone_skip_the_wait_for_postgres_disk() {
    let db = TestDb::new(support::Engine::Postgres).await;
    let store = db.open().await;
    for (deferred, expected) in [(true, "off"), (false, "on"), (true, "off")] {
        let mut tx = if deferred {
            store.begin_deferred().await.unwrap()
        } else {
            store.begin().await.unwrap()
        };
        let (setting,): (String,) = sqlx::query_as("SELECT current_setting('synchronous_commit')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(setting, expected, "deferred: {deferred}");
        tx.commit().await.unwrap();
    }
    let (setting,): (String,) = sqlx::query_as("SELECT current_setting('synchronous_commit')")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(setting, "on");
}

/// Two transactions appending at once on PostgreSQL: the second waits for
/// the first's audit lock and then reads the head the first committed (the
/// lock and the read are one call, `clinauth_audit_head()`); a head read
/// before the lock was held would reuse the first's sequence number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_log_1_an_append_waiting_for_the_lock_reads_the_new_head() {
    let db = TestDb::new(support::Engine::Postgres).await;
    let store = db.open().await;
    let key = std::sync::Arc::new(AuditKey::generate().unwrap().0);
    let mut first = store.begin().await.unwrap();
    let a = audit::append(&mut first, store.backend(), &key, &event(1))
        .await
        .unwrap();
    let second = {
        let (store, key) = (store.clone(), key.clone());
        tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            let b = audit::append(&mut tx, store.backend(), &key, &event(2))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            b
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second append waits for the lock"
    );
    first.commit().await.unwrap();
    let b = second.await.unwrap();
    assert_eq!((a.seq, b.seq), (1, 2));
    assert_eq!(b.prev_hash, a.hash);
    let report = audit::verify(&store, key.public_key()).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
}
