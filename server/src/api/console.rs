//! The officer web console: one static page, its script and its style
//! sheet, embedded in the binary and served by the officer listener.
//!
//! The page holds no secret: the officer pastes a step-up ticket, which the
//! script keeps in `sessionStorage` and sends as `Authorization: Bearer` to
//! the officer API on the same origin. Every asset is served with a strict
//! Content Security Policy (`default-src 'self'`: no inline script or style,
//! no other origin), `nosniff`, no referrer and no caching.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The largest asset the console may embed; checked when compiling.
pub const MAX_ASSET_BYTES: usize = 64 * 1024;

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

const _: () = assert!(INDEX_HTML.len() <= MAX_ASSET_BYTES, "index.html too large");
const _: () = assert!(APP_JS.len() <= MAX_ASSET_BYTES, "app.js too large");
const _: () = assert!(APP_CSS.len() <= MAX_ASSET_BYTES, "app.css too large");

/// The console's routes, merged into the officer router: `/` (the page),
/// `/console/app.js` and `/console/app.css`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(style))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    (headers, body).into_response()
}

/// The page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The script.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The style sheet.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}
