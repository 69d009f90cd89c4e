//! A server with the hospital policy, a nurse with a badge, a clerk and a
//! ward workstation, on the given test database.

use super::TestDb;
use clinauth_proto::workstation::{EvidenceItem, B64};
use clinauth_server::auth::evidence::{badge_device_id, Verifiers};
use clinauth_server::auth::{AuthService, AuthSettings};
use clinauth_server::directory::{self, DeviceKind, NewDevice, Workstation};
use clinauth_server::keys::Keys;
use clinauth_server::policy_store::ActivePolicy;
use serde_json::json;
use std::sync::Arc;

pub const T0: i64 = 1_800_000_000_000;
pub const BADGE: [u8; 4] = [0x04, 0xA1, 0xB2, 0xC3];

pub struct Fixture {
    pub auth: AuthService,
    pub ws: Workstation,
    _keys_dir: super::TempDir,
}

pub async fn fixture(db: &TestDb) -> Fixture {
    fixture_with(db, Verifiers::default()).await
}

pub async fn fixture_with(db: &TestDb, verifiers: Verifiers) -> Fixture {
    let store = db.open().await;
    let keys_dir = super::TempDir::new("keys");
    Keys::create_missing(&keys_dir.0).unwrap();
    let keys = Arc::new(Keys::load(&keys_dir.0).unwrap());
    let policy = ActivePolicy::default();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/policy/hospital.toml"
    ))
    .unwrap();
    policy
        .activate(&store, &keys.audit, &text, "officer", T0)
        .await
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    directory::create_user(
        &mut tx,
        "nurse.tanaka",
        "田中 看護師",
        &["nurse".into()],
        T0,
    )
    .await
    .unwrap();
    directory::create_user(&mut tx, "clerk.sato", "佐藤", &["medical_clerk".into()], T0)
        .await
        .unwrap();
    let ws =
        directory::create_workstation(&mut tx, "ward3-ws01", &"ab".repeat(32), "ward", "3F", T0)
            .await
            .unwrap();
    directory::create_device(
        &mut tx,
        &NewDevice {
            id: &badge_device_id(&BADGE),
            kind: DeviceKind::Badge,
            owner: Some("nurse.tanaka"),
            description: "staff badge",
            public_key: None,
            attributes: json!({}),
        },
        T0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let commits = clinauth_server::auth::commit::Committer::new(store.clone(), keys.clone());
    let auth = AuthService {
        commits,
        clock: Default::default(),
        store,
        policy,
        keys,
        settings: Arc::new(AuthSettings {
            issuer: "clinauth.test".into(),
            challenge_ttl_ms: 120_000,
            ticket_ttl_s: 300,
        }),
        hashing: Arc::new(clinauth_server::auth::hashing::Hashing::new(2)),
        verifiers: Arc::new(verifiers),
    };
    Fixture {
        auth,
        ws,
        _keys_dir: keys_dir,
    }
}

pub fn badge() -> EvidenceItem {
    EvidenceItem::Badge {
        uid: B64(BADGE.to_vec()),
    }
}
