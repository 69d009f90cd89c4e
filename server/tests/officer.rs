//! Officer operations: each change is audited with its officer, in the same
//! transaction; refused changes leave no trace but their refusal.

mod support;

use clinauth_policy::{FailureLimits, Seconds};
use clinauth_server::audit::{self, AuditKey};
use clinauth_server::auth::throttle;
use clinauth_server::directory::{self, DeviceState, UserState};
use clinauth_server::officer::{export_audit, Officer, OfficerError};
use support::TestDb;

const T0: i64 = 1_800_000_000_000;

async fn lifecycle(db: &TestDb) {
    let store = db.open().await;
    let (key, _) = AuditKey::generate().unwrap();
    let officer = Officer {
        store: &store,
        key: &key,
        actor: "officer.ito",
    };

    officer
        .add_user("nurse.tanaka", "田中", &["nurse".into()], T0)
        .await
        .unwrap();
    let dup = officer.add_user("nurse.tanaka", "again", &[], T0).await;
    assert!(matches!(dup, Err(OfficerError::Directory(_))), "{dup:?}");
    officer
        .set_user_roles(
            "nurse.tanaka",
            &["nurse".into(), "pharmacist".into()],
            T0 + 1,
        )
        .await
        .unwrap();
    officer
        .set_user_state("nurse.tanaka", UserState::Suspended, T0 + 2)
        .await
        .unwrap();
    assert!(officer
        .set_user_state("ghost", UserState::Active, T0)
        .await
        .is_err());

    let ws = officer
        .add_workstation("ward3-ws01", &"cd".repeat(32), "ward", "3F", T0 + 3)
        .await
        .unwrap();
    assert_eq!(ws.state, DeviceState::Active);
    officer
        .set_workstation_state("ward3-ws01", DeviceState::Decommissioned, T0 + 4)
        .await
        .unwrap();

    let badge = officer
        .register_badge("nurse.tanaka", &[4, 1, 2, 3], T0 + 5)
        .await
        .unwrap();
    assert_eq!(badge, "badge-04010203");
    assert!(officer
        .register_badge("nurse.tanaka", &[1, 2], T0)
        .await
        .is_err());
    assert!(officer
        .register_badge("ghost", &[1, 2, 3, 4], T0)
        .await
        .is_err());
    officer
        .set_device_state(&badge, DeviceState::Suspended, T0 + 6)
        .await
        .unwrap();

    assert!(matches!(
        officer
            .register_reader("reader-1", &[1; 32], "host_match", false, "", T0)
            .await,
        Err(OfficerError::Invalid(_))
    ));
    officer
        .register_reader(
            "reader-1",
            &[1; 32],
            "sealed_template",
            true,
            "ward 3",
            T0 + 7,
        )
        .await
        .unwrap();

    // Lockout and officer unlock (R-RATE-1).
    let limits = FailureLimits {
        max_consecutive: 2,
        backoff_base: Seconds(1),
        backoff_max: Seconds(1),
        biometric_max: 5,
        presentation_attack_detection: false,
    };
    let mut tx = store.begin().await.unwrap();
    throttle::fail(
        &mut tx,
        &throttle::user_key("nurse.tanaka"),
        false,
        &limits,
        T0,
    )
    .await
    .unwrap();
    let c = throttle::fail(
        &mut tx,
        &throttle::user_key("nurse.tanaka"),
        false,
        &limits,
        T0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(c.locked);
    officer.unlock_user("nurse.tanaka", T0 + 8).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(
        !throttle::read(&mut tx, &throttle::user_key("nurse.tanaka"))
            .await
            .unwrap()
            .locked
    );
    drop(tx);
    assert!(officer.unlock_user("ghost", T0).await.is_err());

    let user = directory::user(&store, "nurse.tanaka")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.state, UserState::Suspended);
    assert_eq!(
        user.roles,
        vec!["nurse".to_owned(), "pharmacist".to_owned()]
    );

    // The changes are logged, each with its officer; refusals are logged too.
    let log = audit::page(&store, 0, 100).await.unwrap();
    let refused: Vec<(&str, &str)> = log
        .iter()
        .filter(|e| e.outcome == "refused")
        .map(|e| (e.action.as_str(), e.target.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        refused,
        vec![
            ("user.add", "nurse.tanaka"),
            ("user.state", "ghost"),
            ("device.register", "nurse.tanaka"),
            ("device.register", "ghost"),
            ("device.register", "reader-1"),
            ("user.unlock", "ghost"),
        ]
    );
    let log: Vec<_> = log.into_iter().filter(|e| e.outcome == "ok").collect();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "user.add",
            "user.roles",
            "user.state",
            "workstation.add",
            "workstation.state",
            "device.register",
            "device.state",
            "device.register",
            "user.unlock",
        ]
    );
    assert!(log.iter().all(|e| e.actor == "officer.ito"));
    assert!(log.last().unwrap().detail.contains(r#""was_locked":true"#));

    let mut out = Vec::new();
    assert_eq!(export_audit(&store, 0, &mut out).await.unwrap(), 15);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 15);
    assert_eq!(lines[0]["action"], "user.add");
    assert_eq!(lines[0]["hash"].as_str().unwrap().len(), 64);
    assert!(audit::verify(&store, key.public_key())
        .await
        .unwrap()
        .is_intact());
}
on_both_engines!(
    r_log_1_officer_operations_are_audited_with_their_officer,
    lifecycle
);
