//! The admin endpoint's read-only web page: `GET /` (HTML), `GET /ui.js` and `GET /ui.css`,
//! embedded in the binary. The script reads the JSON and text endpoints next to it (`/health`,
//! `/peers`, `/payments`, `/metrics`) and shows what `cocoon status` prints (earned, claimed,
//! unclaimed, channels, deposits, debts; as a client locked, paid, remaining, all in TON), the
//! request counters and an earnings chart it samples itself while open.
//!
//! The page has no form and sends nothing but `GET`s to its own origin. Its Content Security
//! Policy allows scripts, styles and fetches from the endpoint itself only, so nothing else can run
//! in it, and nothing can frame it.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page, its script and its style sheet.
const PAGE: &str = include_str!("admin_page.html");
const SCRIPT: &str = include_str!("admin_page.js");
const STYLE: &str = include_str!("admin_page.css");

/// Same-origin scripts, styles and fetches only; no plugins, frames, forms or base URL changes.
/// (The SVG chart is built with DOM calls and presentation attributes, which need no
/// `'unsafe-inline'`.)
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
        .route("/ui.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/ui.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

/// `body` as `content_type` with the page's security headers. The assets change only with the
/// binary, but a node upgraded in place must not serve an old script with a new page: no caching.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    async fn call(method: Method, path: &str) -> Response {
        let request = Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        routes::<()>().oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn assets_are_served_with_their_types_and_the_policy() {
        for (path, kind) in [("/", "text/html"), ("/ui.js", "text/javascript"), ("/ui.css", "text/css")] {
            let response = call(Method::GET, path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert!(headers[header::CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}");
            assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        }
    }

    #[tokio::test]
    async fn the_page_is_read_only() {
        assert_eq!(call(Method::POST, "/").await.status(), StatusCode::METHOD_NOT_ALLOWED);
        for needle in ["<form", "<input", "method=", "<script>", "style=", "http://", "https://"] {
            assert!(!PAGE.contains(needle), "the page contains {needle:?}");
        }
        // The script only reads: every fetch is a GET of a same-origin path.
        assert!(!SCRIPT.contains("method:") && !SCRIPT.contains("innerHTML"));
        assert!(PAGE.contains(r#"<script src="/ui.js""#) && PAGE.contains(r#"href="/ui.css""#));
    }
}
