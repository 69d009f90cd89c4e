//! The agent's FIDO2 client (`login::fido2`, soft transport) against the
//! server's verifier (`clinauth_factors::fido2`, the code the server runs
//! in `finish`): a token registered with the verifier answers the agent's
//! `assert`, the verifier accepts it, and refuses replays, a token file
//! rolled back to an older copy, and user verification that did not happen.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clinauth_agent::conversation::{Conversation, Exchange};
use clinauth_agent::login::fido2::{soft, Fido2, Fido2Settings, TransportKind};
use clinauth_agent::login::{Attempt, LoginError};
use clinauth_factors::fido2::{
    Fido2Challenge, Fido2Config, Fido2Credential, Fido2Error, Fido2User, Fido2Verifier,
};
use clinauth_policy::{Purpose, UnixTime};
use clinauth_proto::workstation::{BeginResponse, EvidenceItem, B64};
use clinauth_proto::UserName;

const RP_ID: &str = "clinauth.test";
const ORIGIN: &str = "https://clinauth.test";

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "clinauth-agent-fido2-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now() -> UnixTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UnixTime(i64::try_from(secs).unwrap())
}

fn verifier() -> Fido2Verifier {
    Fido2Verifier::new(Fido2Config::new(RP_ID, ORIGIN)).unwrap()
}

fn user() -> Fido2User<'static> {
    Fido2User {
        handle: [7; 16],
        name: "nurse.tanaka",
        display_name: "田中",
    }
}

/// A token file at `dir/token.cbor`, registered with `v` (UV required at
/// registration when the token can verify the user).
fn enrolled(v: &Fido2Verifier, dir: &Path, can_verify_user: bool) -> (PathBuf, Fido2Credential) {
    let path = dir.join("token.cbor");
    soft::create(&path, can_verify_user).unwrap();
    let challenge = v
        .start_registration(&user(), &[], can_verify_user, now())
        .unwrap();
    let options: serde_json::Value = serde_json::from_str(&challenge.client_options).unwrap();
    let response = soft::register(&path, ORIGIN, &options, can_verify_user).unwrap();
    let registered = v
        .finish_registration(&challenge.state, &response.to_string(), now())
        .unwrap();
    assert_eq!(registered.user_verified_at_registration, can_verify_user);
    // As the server stores and reads it back.
    let stored = registered.credential.to_json().unwrap();
    (path, Fido2Credential::from_json(&stored).unwrap())
}

fn agent(path: &Path) -> Fido2 {
    let settings = Fido2Settings {
        transport: TransportKind::Soft,
        soft_token: Some(path.to_owned()),
        rp_id: Some(RP_ID.into()),
        ..Fido2Settings::default()
    };
    settings.check().unwrap();
    let f = Fido2::from_settings(&settings);
    assert!(f.is_configured());
    f
}

fn begin(challenge: &Fido2Challenge) -> BeginResponse {
    BeginResponse {
        challenge_id: "c1".into(),
        nonce: B64(vec![1; 32]),
        expires_at: 0,
        options: vec![vec!["fido2_uv".into()]],
        matcher_public_key: None,
        webauthn: Some(serde_json::from_str(&challenge.client_options).unwrap()),
    }
}

/// Runs `assert` for `factor` as the login flow does; returns the result
/// and the infos the person was shown. Any prompt is a failure: the soft
/// token asks nothing.
async fn assert_as_agent(
    fido2: &Fido2,
    begin: &BeginResponse,
    factor: &str,
) -> (Result<EvidenceItem, LoginError>, Vec<String>) {
    let (conv, mut rx) = Conversation::new(Duration::from_secs(5));
    let shown = Arc::new(Mutex::new(Vec::new()));
    let seen = shown.clone();
    let caller = tokio::spawn(async move {
        while let Some(exchange) = rx.recv().await {
            match exchange {
                Exchange::Info { text, .. } => seen.lock().unwrap().push(text.to_string()),
                Exchange::Prompt { text, .. } => panic!("unexpected prompt {text}"),
            }
        }
    });
    let name = UserName::new("nurse.tanaka").unwrap();
    let attempt = Attempt {
        user: &name,
        purpose: Purpose::Login,
        workstation: "ward3-ws01",
        begin,
        conv: &conv,
        apdu_timeout: Duration::from_secs(5),
        operation: None,
    };
    let result = fido2.assert(&attempt, factor).await;
    drop(conv);
    caller.await.unwrap();
    let shown = shown.lock().unwrap().clone();
    (result, shown)
}

fn assertion(item: EvidenceItem) -> String {
    match item {
        EvidenceItem::Fido2 { assertion } => assertion.to_string(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn r_auth_4_agent_assertion_with_uv_is_accepted_by_the_server_verifier() {
    let dir = TempDir::new();
    let v = verifier();
    let (path, mut cred) = enrolled(&v, &dir.0, true);

    let challenge = v
        .start_authentication(std::slice::from_ref(&cred), now())
        .unwrap();
    let (result, shown) = assert_as_agent(&agent(&path), &begin(&challenge), "fido2_uv").await;
    assert_eq!(shown, ["Touch your security key."]);
    let a = assertion(result.unwrap());
    let verified = v
        .finish_authentication(&challenge.state, &a, std::slice::from_ref(&cred), now())
        .unwrap();
    assert!(verified.user_verified, "R-AUTH-4: UV reported");
    assert!(verified.update_credential(&mut cred).unwrap());
    let counter = cred.counter();
    assert!(counter > 0);

    // The agent restarts (a new client from the same settings): the token
    // and its counter come back from the file, and the next login works.
    let challenge = v
        .start_authentication(std::slice::from_ref(&cred), now())
        .unwrap();
    let (result, _) = assert_as_agent(&agent(&path), &begin(&challenge), "fido2_uv").await;
    let verified = v
        .finish_authentication(
            &challenge.state,
            &assertion(result.unwrap()),
            std::slice::from_ref(&cred),
            now(),
        )
        .unwrap();
    assert!(verified.counter > counter);

    // The file stays private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn replayed_assertion_and_other_challenge_are_refused() {
    let dir = TempDir::new();
    let v = verifier();
    let (path, mut cred) = enrolled(&v, &dir.0, true);
    let fido2 = agent(&path);

    let first = v
        .start_authentication(std::slice::from_ref(&cred), now())
        .unwrap();
    let (result, _) = assert_as_agent(&fido2, &begin(&first), "fido2_uv").await;
    let a = assertion(result.unwrap());
    let ok = v
        .finish_authentication(&first.state, &a, std::slice::from_ref(&cred), now())
        .unwrap();
    ok.update_credential(&mut cred).unwrap();

    // The same assertion for a later challenge: wrong challenge.
    let second = v
        .start_authentication(std::slice::from_ref(&cred), now())
        .unwrap();
    assert_eq!(
        v.finish_authentication(&second.state, &a, std::slice::from_ref(&cred), now())
            .unwrap_err(),
        Fido2Error::ChallengeMismatch
    );
    // Replayed against its own challenge after the counter was stored.
    assert_eq!(
        v.finish_authentication(&first.state, &a, std::slice::from_ref(&cred), now())
            .unwrap_err(),
        Fido2Error::CounterRegressed
    );
}

#[tokio::test]
async fn a_token_file_rolled_back_is_refused_as_a_possible_clone() {
    let dir = TempDir::new();
    let v = verifier();
    let (path, mut cred) = enrolled(&v, &dir.0, true);
    let fido2 = agent(&path);
    let old = std::fs::read(&path).unwrap();

    let c = v
        .start_authentication(std::slice::from_ref(&cred), now())
        .unwrap();
    let (result, _) = assert_as_agent(&fido2, &begin(&c), "fido2_uv").await;
    let ok = v
        .finish_authentication(
            &c.state,
            &assertion(result.unwrap()),
            std::slice::from_ref(&cred),
            now(),
        )
        .unwrap();
    ok.update_credential(&mut cred).unwrap();

    // The file as it was before that login (a backup, a copy): its counter
    // is behind the one the server stored.
    std::fs::write(&path, &old).unwrap();
    let c = v
        .start_authentication(std::slice::from_ref(&cred), now())
        .unwrap();
    let (result, _) = assert_as_agent(&fido2, &begin(&c), "fido2_uv").await;
    assert_eq!(
        v.finish_authentication(&c.state, &assertion(result.unwrap()), &[cred], now())
            .unwrap_err(),
        Fido2Error::CounterRegressed
    );
}

#[tokio::test]
async fn r_auth_4_a_touch_only_token_is_fido2_but_never_fido2_uv() {
    let dir = TempDir::new();
    let v = verifier();
    let (path, cred) = enrolled(&v, &dir.0, false);
    let fido2 = agent(&path);

    // fido2_uv: the agent asks for UV, the token cannot; refused before
    // anything goes to the server.
    let c = v
        .start_authentication(std::slice::from_ref(&cred), now())
        .unwrap();
    let (result, _) = assert_as_agent(&fido2, &begin(&c), "fido2_uv").await;
    match result {
        Err(LoginError::Device(m)) => assert!(m.contains("did not verify the user"), "{m}"),
        other => panic!("{other:?}"),
    }

    // fido2 (a weak possession factor): accepted, without UV.
    let c = v
        .start_authentication(std::slice::from_ref(&cred), now())
        .unwrap();
    let (result, _) = assert_as_agent(&fido2, &begin(&c), "fido2").await;
    let verified = v
        .finish_authentication(&c.state, &assertion(result.unwrap()), &[cred], now())
        .unwrap();
    assert!(!verified.user_verified);
}

#[tokio::test]
async fn other_users_credentials_and_bad_files_are_refused() {
    let dir = TempDir::new();
    let v = verifier();
    let (path, cred) = enrolled(&v, &dir.0, true);

    // A request for credentials this token does not hold (another user's key).
    let other_dir = TempDir::new();
    let (_, other) = enrolled(&v, &other_dir.0, true);
    let c = v.start_authentication(&[other], now()).unwrap();
    let (result, _) = assert_as_agent(&agent(&path), &begin(&c), "fido2_uv").await;
    assert!(matches!(result, Err(LoginError::Device(_))), "{result:?}");

    // A token file others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = v
        .start_authentication(std::slice::from_ref(&cred), now())
        .unwrap();
    let (result, _) = assert_as_agent(&agent(&path), &begin(&c), "fido2_uv").await;
    match result {
        Err(LoginError::Device(m)) => assert!(m.contains("chmod 600"), "{m}"),
        other => panic!("{other:?}"),
    }

    // Not a token.
    std::fs::write(&path, b"not cbor").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (result, _) = assert_as_agent(&agent(&path), &begin(&c), "fido2_uv").await;
    assert!(matches!(result, Err(LoginError::Device(_))), "{result:?}");

    // No WebAuthn request from the server.
    let mut b = begin(&c);
    b.webauthn = None;
    let (result, shown) = assert_as_agent(&agent(&path), &b, "fido2_uv").await;
    assert!(matches!(result, Err(LoginError::Server(_))), "{result:?}");
    assert!(shown.is_empty());
}
