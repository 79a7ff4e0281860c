//! The browser call demo (`signaling/web/`): a page, a script and a style sheet, built
//! into the binary so `turnpike serve` serves it at `/` from a fresh clone with no
//! front-end build. It signs in with dev login, so it is useful only where
//! `dev_login` is on; elsewhere the page says sign-in failed.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE_CSS: &str = include_str!("../web/style.css");

/// Our own files only: no inline script, no third-party origins. `connect-src 'self'`
/// covers the WebSocket to the same host and port in current browsers.
const CSP: &str = "default-src 'self'; connect-src 'self'; media-src 'self' blob:; \
                   img-src 'self' data:; object-src 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, CSP),
            // Embedded in the binary: a new build may change them, so revalidate.
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `GET /`, `/index.html`, `/app.js`, `/style.css`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/index.html",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}
