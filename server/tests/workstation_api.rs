//! The workstation API's HTTP layer: statuses, JSON errors, limits, and the
//! registered-workstation check (R-TLS-2). TLS itself is tested in tls.rs.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use clinauth_proto::workstation::{BeginResponse, ErrorBody, FinishRequest, FinishResponse};
use clinauth_server::api::workstation::{router, PeerFingerprint, WorkstationApi};
use clinauth_server::metrics::Metrics;
use std::sync::Arc;
use support::fixture::{badge, fixture};
use support::{Engine, TestDb};
use tower::ServiceExt;

fn app(api: WorkstationApi, peer: Option<&str>) -> Router {
    let r = router(api);
    match peer {
        Some(fp) => r.layer(axum::Extension(PeerFingerprint(fp.to_owned()))),
        None => r,
    }
}

async fn call(
    app: Router,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>, Option<String>) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, bytes.to_vec(), retry)
}

fn error(body: &[u8]) -> ErrorBody {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not a JSON error ({e}): {}", String::from_utf8_lossy(body)))
}

async fn setup() -> (TestDb, support::fixture::Fixture, WorkstationApi, String) {
    let db = TestDb::new(Engine::Sqlite).await;
    let f = fixture(&db).await;
    let api = WorkstationApi {
        auth: f.auth.clone(),
        metrics: Arc::new(Metrics::default()),
    };
    let fp = f.ws.cert_sha256.clone();
    (db, f, api, fp)
}

#[tokio::test]
async fn r_tls_2_unregistered_or_missing_certificate_is_refused() {
    let (_db, f, api, _fp) = setup().await;
    let body = br#"{"user":"nurse.tanaka","purpose":"login"}"#.to_vec();
    for peer in [None, Some("00".repeat(32))] {
        let (status, bytes, _) = call(
            app(api.clone(), peer.as_deref()),
            "POST",
            "/v1/auth/begin",
            body.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error(&bytes).error, "workstation_refused");
    }
    // Both attempts are in the audit log (R-LOG-1).
    let log = clinauth_server::audit::page(&f.auth.store, 0, 100)
        .await
        .unwrap();
    let refused: Vec<&str> = log
        .iter()
        .filter(|e| e.outcome == "refused" && e.action == "auth.begin")
        .filter_map(|e| e.workstation.as_deref())
        .collect();
    assert_eq!(
        refused,
        vec!["no-certificate", &format!("cert:{}", "00".repeat(32))[..]]
    );
}

#[tokio::test]
async fn begin_and_finish_over_http() {
    let (_db, _f, api, fp) = setup().await;
    let (status, bytes, _) = call(
        app(api.clone(), Some(&fp)),
        "POST",
        "/v1/auth/begin",
        br#"{"user":"nurse.tanaka","purpose":"login"}"#.to_vec(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let begun: BeginResponse = serde_json::from_slice(&bytes).unwrap();
    let finish = FinishRequest {
        challenge_id: begun.challenge_id,
        evidence: vec![badge()],
    };
    let (status, bytes, _) = call(
        app(api.clone(), Some(&fp)),
        "POST",
        "/v1/auth/finish",
        serde_json::to_vec(&finish).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let decided: FinishResponse = serde_json::from_slice(&bytes).unwrap();
    assert!(
        matches!(decided, FinishResponse::Deny { .. }),
        "{decided:?}"
    );
    // Straight away again: the user must wait (R-RATE-1), said with Retry-After.
    let (status, bytes, retry) = call(
        app(api.clone(), Some(&fp)),
        "POST",
        "/v1/auth/begin",
        br#"{"user":"nurse.tanaka","purpose":"login"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(error(&bytes).error, "retry_later");
    assert_eq!(retry.as_deref(), Some("1"));
    let metrics = api.metrics.render();
    assert!(
        metrics.contains("clinauth_auth_finish_total{outcome=\"deny\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clinauth_auth_begin_total{outcome=\"refused\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_bodies_get_a_4xx_with_a_json_error() {
    let (_db, _f, api, fp) = setup().await;
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "POST",
            "/v1/auth/begin",
            b"{".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/auth/begin",
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/auth/begin",
            br#"{"user":"a","purpose":"login","x":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/auth/begin",
            br#"{"user":"a","purpose":"logon"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/auth/begin",
            vec![0xff, 0xfe],
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/auth/begin",
            br#"{"user":"bad user","purpose":"login"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/auth/begin",
            vec![b' '; 70 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "POST",
            "/v1/auth/finish",
            br#"{"challenge_id":"x","evidence":[{"type":"usb_token"}]}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/auth/finish",
            br#"{"challenge_id":"nope","evidence":[]}"#.to_vec(),
            StatusCode::CONFLICT,
            "challenge_unknown",
        ),
        (
            "GET",
            "/v1/auth/begin",
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "POST",
            "/v1/nothing",
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, path, body, want, code) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(40)
            .collect::<String>();
        let (status, bytes, _) = call(app(api.clone(), Some(&fp)), method, path, body).await;
        assert_eq!(status, want, "{method} {path} {shown:?}");
        assert_eq!(error(&bytes).error, code, "{method} {path} {shown:?}");
    }
    let too_many: Vec<String> = (0..9)
        .map(|_| r#"{"type":"totp","code":"123456"}"#.to_owned())
        .collect();
    let body = format!(
        r#"{{"challenge_id":"{}","evidence":[{}]}}"#,
        "0".repeat(32),
        too_many.join(",")
    );
    let (status, bytes, _) = call(
        app(api.clone(), Some(&fp)),
        "POST",
        "/v1/auth/finish",
        body.into_bytes(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
}
