//! Everything the api serves that is not JSON: the static web client with
//! its single-page fallback, the dev mailbox page, and the OpenAPI document.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::error::HttpError;
use crate::mail::escape_html;
use crate::Shared;

/// The OpenAPI 3.0 description of `/api`, kept by hand beside the crate.
pub(crate) const OPENAPI: &str = include_str!("../openapi.json");

/// Where the static client lives.
pub(crate) struct WebFiles {
    pub dir: PathBuf,
    pub index: PathBuf,
}

impl WebFiles {
    pub fn new(dir: PathBuf) -> Self {
        let index = dir.join("index.html");
        if !index.is_file() {
            tracing::warn!(dir = %dir.display(), "web client not found: pages will be 404");
        }
        WebFiles { dir, index }
    }
}

/// `GET /api/openapi.json`.
pub(crate) async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

/// Whether the last path segment names a file (`app.js`), as opposed to a
/// client-side route (`/chat`, `/auth/verify`).
fn names_a_file(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
}

/// Every request no route took: an unknown `/api` path is a JSON 404; any
/// other GET is a file of the web client, or `index.html` for client-side
/// routes so deep links and reloads work. A missing *file* (`/js/nope.js`)
/// stays a 404: answering it with HTML would only hide the mistake.
pub(crate) async fn fallback(State(state): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/api" || path.starts_with("/api/") {
        return HttpError::not_found().into_response();
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut response = HttpError::for_status(StatusCode::METHOD_NOT_ALLOWED).into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut index_req = Request::new(Body::empty());
    *index_req.method_mut() = req.method().clone();
    *index_req.headers_mut() = req.headers().clone();

    // A name no file can have is not found; asked for, the file system
    // would fail (ENAMETOOLONG) and the file service answer 500.
    let response = if can_name_a_file(&state.web.dir, &path) {
        let Ok(response) = ServeDir::new(&state.web.dir).oneshot(req).await;
        response.map(Body::new)
    } else {
        StatusCode::NOT_FOUND.into_response()
    };
    let response = if response.status() == StatusCode::NOT_FOUND && !names_a_file(&path) {
        let Ok(index) = ServeFile::new(&state.web.index).oneshot(index_req).await;
        index.map(Body::new)
    } else {
        response
    };
    with_cache_policy(response)
}

/// Whether `path` (as requested, percent-encoded) can name a file under
/// `dir`: decoded as the file service decodes it, each name at most 255
/// bytes and the whole, `dir` included, under 4,096 (Linux's NAME_MAX and
/// PATH_MAX, which counts the final NUL).
fn can_name_a_file(dir: &std::path::Path, path: &str) -> bool {
    const NAME_MAX: usize = 255;
    const PATH_MAX: usize = 4096;
    let decoded = percent_encoding::percent_decode_str(path).collect::<Vec<u8>>();
    decoded
        .split(|&b| b == b'/')
        .all(|name| name.len() <= NAME_MAX)
        && dir.as_os_str().len() + decoded.len() < PATH_MAX
}

/// HTML and the ES modules it imports revalidate on every load (cheap: a
/// 304 by `Last-Modified`), because file names carry no content hash and a
/// page must never run a mix of old and new modules. Other assets (images,
/// fonts) rarely change and may be cached for a day.
fn with_cache_policy(mut response: Response) -> Response {
    if !(response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let revalidate = ["text/html", "javascript", "text/css", "json"]
        .iter()
        .any(|t| content_type.contains(t));
    let policy = if revalidate || content_type.is_empty() {
        "no-cache"
    } else {
        "public, max-age=86400"
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    response
}

/// `GET /dev/mailbox`: the dev mailer's latest links, newest first. Exists
/// only in dev-mailer mode; with SMTP configured it is a 404, so links are
/// never shown to the world.
pub(crate) async fn dev_mailbox(State(state): State<Shared>) -> Response {
    let Some(mailbox) = state.mailer.dev_mailbox() else {
        return (
            StatusCode::NOT_FOUND,
            Html("<!doctype html><title>Not found</title>"),
        )
            .into_response();
    };
    let mut items = String::new();
    for mail in mailbox.latest() {
        let link = escape_html(&mail.link);
        items.push_str(&format!(
            "<li><time datetime=\"{at}\">{at}</time> to <span class=\"to\">{to}</span>: \
             <a class=\"link\" href=\"{link}\">{link}</a></li>\n",
            at = escape_html(&mail.at.to_rfc3339()),
            to = escape_html(&mail.to),
        ));
    }
    if items.is_empty() {
        items.push_str("<li>No sign-in links yet.</li>\n");
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <title>IO dev mailbox</title></head>\n<body>\n<h1>Dev mailbox</h1>\n\
         <p>No SMTP server is configured, so sign-in links land here (newest first, \
         the last 50).</p>\n<ul>\n{items}</ul>\n</body>\n</html>\n"
    );
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(page),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_json() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    }

    #[test]
    fn file_paths_and_client_routes() {
        assert!(names_a_file("/js/app.js"));
        assert!(names_a_file("/favicon.ico"));
        assert!(!names_a_file("/auth/verify"));
        assert!(!names_a_file("/"));
        assert!(!names_a_file("/chat"));
    }
}
