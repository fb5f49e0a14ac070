//! The layers around every route: request logging and RED metrics by route
//! template, the JSON error shape for whatever answers below the handlers,
//! security headers, CORS and a panic guard.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::HttpError;
use crate::ApiError;

/// A bounded label for the method (clients may send any token there).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// Log each request and record `io_http_requests_total{route,method,status}`
/// and `io_http_request_duration_seconds{route,method}`. Routes are labelled
/// by template (`/api/chat/sessions/{id}/messages`); requests no route took
/// are `api_unmatched` or `web`, never a raw path.
pub(crate) async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let path = req.uri().path().to_owned();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(m) => m.as_str().to_owned(),
        None if is_api(&path) => "api_unmatched".to_owned(),
        None => "web".to_owned(),
    };
    let response = next.run(req).await;
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    metrics::counter!(
        "io_http_requests_total",
        "route" => route.clone(),
        "method" => method,
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "io_http_request_duration_seconds",
        "route" => route.clone(),
        "method" => method
    )
    .record(elapsed.as_secs_f64());
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(method, %route, %path, status, latency_ms, "http request failed");
    } else {
        tracing::info!(method, %route, %path, status, latency_ms, "http request");
    }
    response
}

/// Under `/api`: no response is cached (they carry tokens and personal
/// data), and an error produced below the handlers (the router's 405, a
/// layer's rejection) gets the JSON error shape like every other.
pub(crate) async fn api_responses(req: Request, next: Next) -> Response {
    if !is_api(req.uri().path()) {
        return next.run(req).await;
    }
    let mut response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() >= 400 && !is_json {
        let mut replaced = HttpError::for_status(status).into_response();
        for name in [header::ALLOW, header::RETRY_AFTER] {
            if let Some(v) = response.headers().get(&name) {
                replaced.headers_mut().insert(name, v.clone());
            }
        }
        response = replaced;
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The headers every response carries. The CSP allows only our own
/// scripts, styles and sockets; framing is refused twice (CSP and
/// `X-Frame-Options`, for old browsers).
pub(crate) fn security_headers(https: bool) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; \
                 img-src 'self' data:; connect-src 'self' ws: wss:; \
                 base-uri 'none'; frame-ancestors 'none'",
            ),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    if https {
        headers.push((
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    headers
}

/// CORS for the configured origins only. Credentials are bearer tokens in
/// a header, never cookies, so no `Allow-Credentials`.
pub(crate) fn cors(origins: &[String]) -> Result<CorsLayer, ApiError> {
    let origins = origins
        .iter()
        .map(|o| {
            let o = o.trim().trim_end_matches('/');
            HeaderValue::from_str(o).map_err(|_| ApiError::Origin(o.to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PUT])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600)))
}

/// A panic in a handler is a bug: answer the JSON 500 and keep serving.
pub(crate) fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    HttpError::internal().into_response()
}
