//! The agent's biometric reader client (`login::biometric`) against the
//! reader emulator served over the reader protocol (Unix socket and
//! loopback TCP): sealed templates and match-on-reader decisions relayed as
//! opaque bytes that the server's code (`clinauth_biometric::open`,
//! `verify_decision`) accepts, and everything malformed, oversized,
//! misbound or late refused.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clinauth_agent::conversation::{Conversation, Exchange};
use clinauth_agent::login::biometric::{Biometric, BiometricSettings};
use clinauth_agent::login::{Attempt, LoginError};
use clinauth_biometric::envelope::{open, verify_decision, Expected, SignedDecision};
use clinauth_biometric::{verify, MatcherKey, SyntheticFinger};
use clinauth_hardware_tests::bio_reader::{BioReader, Misbehaviour, Protection, ReaderService};
use clinauth_policy::{Purpose, Seconds};
use clinauth_proto::workstation::{BeginResponse, EvidenceItem, B64};
use clinauth_proto::UserName;

const USER: &str = "nurse.tanaka";
const READER: &str = "ward3-bio-1";

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "clinauth-agent-bio-{}-{}",
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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn reader(protection: Protection) -> BioReader {
    BioReader::new(READER, &[7; 32], protection).unwrap()
}

fn unix_service(dir: &TempDir, protection: Protection) -> ReaderService {
    ReaderService::unix(reader(protection), &dir.0.join("bioreader.sock")).unwrap()
}

fn settings(service: &ReaderService) -> BiometricSettings {
    BiometricSettings {
        reader: Some(service.address()),
        reader_id: Some(READER.into()),
        capture_timeout: Seconds(5),
        ..BiometricSettings::default()
    }
}

fn begin(matcher: &MatcherKey, nonce: [u8; 32]) -> BeginResponse {
    BeginResponse {
        challenge_id: "c1".into(),
        nonce: B64(nonce.to_vec()),
        expires_at: 0,
        options: vec![vec!["biometric_sealed".into(), "server_pin".into()]],
        matcher_public_key: Some(B64(matcher.public_key().as_bytes().to_vec())),
        webauthn: None,
    }
}

fn expected(nonce: [u8; 32]) -> Expected {
    Expected {
        nonce,
        reader_id: READER.into(),
        user_id: USER.into(),
        now: now(),
        max_age_secs: 60,
        max_future_secs: 5,
    }
}

/// Runs `capture` for `factor` as the login flow does; returns the result
/// and the infos shown. A prompt is a failure: a reader asks nothing.
async fn capture(
    settings: &BiometricSettings,
    begin: &BeginResponse,
    factor: &str,
) -> (Result<EvidenceItem, LoginError>, Vec<String>) {
    settings.check().unwrap();
    let bio = Biometric::from_settings(settings);
    assert!(bio.has_reader());
    assert!(!bio.has_fprintd());
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
    let user = UserName::new(USER).unwrap();
    let attempt = Attempt {
        user: &user,
        purpose: Purpose::Login,
        workstation: "ward3-ws01",
        begin,
        conv: &conv,
        apdu_timeout: Duration::from_secs(5),
        operation: None,
    };
    let result = bio.capture(&attempt, factor).await;
    drop(conv);
    caller.await.unwrap();
    let shown = shown.lock().unwrap().clone();
    (result, shown)
}

fn device_error(result: Result<EvidenceItem, LoginError>) -> String {
    match result {
        Err(LoginError::Device(m)) => m,
        other => panic!("expected a device error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_bio_1_sealed_capture_is_relayed_and_opens_only_at_the_server() {
    let dir = TempDir::new();
    let svc = Arc::new(unix_service(&dir, Protection::SealedTemplate));
    let matcher = MatcherKey::generate(&ring::rand::SystemRandom::new()).unwrap();
    let enrolled = SyntheticFinger::new(42).capture(1000);
    let nonce = [3; 32];

    // The finger arrives while the agent waits.
    let later = svc.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        later.place_finger(SyntheticFinger::new(42));
    });
    let (result, shown) =
        capture(&settings(&svc), &begin(&matcher, nonce), "biometric_sealed").await;
    t.join().unwrap();
    assert_eq!(shown, ["Place your finger on the reader."]);
    let EvidenceItem::BiometricSealed { capture: sealed } = result.unwrap() else {
        panic!("sealed")
    };
    // What the server does with it: signature, binding, HPKE open, 1:1 match.
    let probe = open(&matcher, &svc.public_key(), &expected(nonce), &sealed.0).unwrap();
    assert!(verify(&enrolled, &probe).matched);
    // The agent asked for this user, nonce, matcher key and reader.
    let asked = &svc.requests()[0];
    assert_eq!(asked.nonce, nonce);
    assert_eq!(asked.user_id, USER);
    assert_eq!(asked.reader_id, READER);
    assert_eq!(&asked.matcher_public_key, matcher.public_key().as_bytes());
    // Not bound to another nonce (R-BIO-3).
    assert!(open(&matcher, &svc.public_key(), &expected([4; 32]), &sealed.0).is_err());
    // And the relayed bytes hold no plaintext template.
    for plain in svc.plaintext_templates() {
        assert!(!contains_window(&sealed.0, &plain, 16));
    }
}

/// Whether any `w`-byte window of `needle` occurs in `hay`.
fn contains_window(hay: &[u8], needle: &[u8], w: usize) -> bool {
    needle
        .windows(w.min(needle.len()))
        .any(|win| hay.windows(win.len()).any(|h| h == win))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r_bio_1_match_on_reader_decision_is_relayed_over_loopback_tcp() {
    let service = ReaderService::tcp(reader(Protection::MatchOnReader)).unwrap();
    assert!(service.address().starts_with("tcp:127.0.0.1:"));
    let matcher = MatcherKey::generate(&ring::rand::SystemRandom::new()).unwrap();
    service.enroll(&SyntheticFinger::new(42));
    service.place_finger(SyntheticFinger::new(42));
    for factor in ["biometric_on_reader", "biometric"] {
        let nonce = [5; 32];
        let (result, _) = capture(&settings(&service), &begin(&matcher, nonce), factor).await;
        let EvidenceItem::BiometricDecision { decision } = result.unwrap() else {
            panic!("decision")
        };
        let d = SignedDecision::from_bytes(&decision.0).unwrap();
        assert_eq!(
            verify_decision(&service.public_key(), &expected(nonce), &d),
            Ok(true)
        );
    }
    // Another finger: the reader's signed "no match" is relayed too; the
    // server decides.
    service.place_finger(SyntheticFinger::new(77));
    let (result, _) = capture(&settings(&service), &begin(&matcher, [6; 32]), "biometric").await;
    let EvidenceItem::BiometricDecision { decision } = result.unwrap() else {
        panic!("decision")
    };
    let d = SignedDecision::from_bytes(&decision.0).unwrap();
    assert_eq!(
        verify_decision(&service.public_key(), &expected([6; 32]), &d),
        Ok(false)
    );
    // A match-on-reader device cannot give a sealed template.
    let m = device_error(
        capture(
            &settings(&service),
            &begin(&matcher, [6; 32]),
            "biometric_sealed",
        )
        .await
        .0,
    );
    assert!(m.contains("cannot do what the policy asks"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbound_malformed_oversized_and_late_answers_are_refused() {
    let dir = TempDir::new();
    let service = unix_service(&dir, Protection::SealedTemplate);
    let matcher = MatcherKey::generate(&ring::rand::SystemRandom::new()).unwrap();
    let b = begin(&matcher, [8; 32]);
    service.set_max_wait(Duration::from_millis(100));

    // No finger in time.
    let m = device_error(capture(&settings(&service), &b, "biometric_sealed").await.0);
    assert!(m.contains("no finger"), "{m}");
    service.place_finger(SyntheticFinger::new(42));

    // Another reader than the one configured.
    let mut other = settings(&service);
    other.reader_id = Some("ward3-bio-2".into());
    let m = device_error(capture(&other, &b, "biometric_sealed").await.0);
    assert!(m.contains("cannot do what the policy asks"), "{m}");

    let cases: Vec<(Misbehaviour, &str)> = vec![
        (Misbehaviour::OtherNonce, "another challenge"),
        (Misbehaviour::OtherUser, "another user"),
        (Misbehaviour::WrongKind, "sent a match decision"),
        (
            Misbehaviour::AnnounceLength(16 * 1024 * 1024),
            "bytes announced",
        ),
        (Misbehaviour::AnnounceLength(u32::MAX), "bytes announced"),
        (Misbehaviour::Truncated, "truncated"),
        (Misbehaviour::Payload(b"garbage".to_vec()), "not valid"),
        (Misbehaviour::Payload(Vec::new()), "not valid"),
        // A well-formed response whose evidence is not a sealed capture.
        (
            Misbehaviour::Payload({
                let mut p = b"CABP\x01\x00\x01".to_vec();
                p.extend_from_slice(&4u16.to_be_bytes());
                p.extend_from_slice(b"CABS");
                p
            }),
            "malformed",
        ),
    ];
    for (how, want) in cases {
        service.misbehave(Some(how.clone()));
        let m = device_error(capture(&settings(&service), &b, "biometric_sealed").await.0);
        assert!(m.contains(want), "{how:?}: {m}");
    }

    // A reader that never answers: refused at the capture timeout (+2 s).
    service.misbehave(Some(Misbehaviour::Silent));
    let started = Instant::now();
    let m = device_error(capture(&settings(&service), &b, "biometric_sealed").await.0);
    assert!(m.contains("did not answer in time"), "{m}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(service);

    // No reader there at all.
    let mut gone = settings(&unix_service(&dir, Protection::SealedTemplate));
    gone.reader = Some(format!("unix:{}", dir.0.join("nobody.sock").display()));
    let m = device_error(capture(&gone, &b, "biometric_sealed").await.0);
    assert!(m.contains("cannot be reached"), "{m}");

    // A host-matched biometric is never attempted.
    let m = device_error(
        capture(
            &settings(&unix_service(&dir, Protection::SealedTemplate)),
            &b,
            "biometric_host_match",
        )
        .await
        .0,
    );
    assert!(m.contains("never counts"), "{m}");
}
