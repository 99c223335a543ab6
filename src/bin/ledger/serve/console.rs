//! The console: a single-page application at `/ui/`, from files embedded
//! in the binary (`ui/` in the repository). It talks to the ledger only
//! through the public HTTP API, with the key the user gives it as the
//! bearer token.
//!
//! Any path under `/ui/` that is not one of its files answers the page
//! itself, so that a link to a view (`/ui/at/1234`,
//! `/ui/executions/ID?seq=56`) opens it. With `LEDGER_UI_DIR` set, the
//! files are read from that directory on every request instead (for
//! working on the console without rebuilding).

use axum::extract::Path as UrlPath;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The console's files: name, content type, embedded bytes.
const FILES: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../../../ui/app.css"),
    ),
];

/// What the page may load and reach: its own files and the API of the
/// server that served it, nothing else.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The console's routes: `/` and `/ui` lead to `/ui/`.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { file("index.html") }))
        .route(
            "/ui/{*path}",
            get(|UrlPath(path): UrlPath<String>| async move { file(&path) }),
        )
}

/// A file of the console, or the page for any other path.
fn file(path: &str) -> Response {
    let (name, kind, embedded) = FILES
        .iter()
        .find(|(name, ..)| *name == path)
        .unwrap_or(&FILES[0]);
    let body = match std::env::var_os("LEDGER_UI_DIR") {
        Some(dir) => match std::fs::read_to_string(std::path::Path::new(&dir).join(name)) {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(file = %name, error = %e, "cannot read the console's file from LEDGER_UI_DIR");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        },
        None => (*embedded).to_owned(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
