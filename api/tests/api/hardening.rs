//! Security headers, CORS, the JSON shape of axum's own rejections, the
//! static client with its single-page fallback, and the OpenAPI document.

use anyhow::Result;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' ws: wss:; base-uri 'none'; frame-ancestors 'none'";

fn assert_security_headers(r: &reqwest::Response, what: &str) {
    let h = r.headers();
    assert_eq!(h["content-security-policy"], CSP, "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
}

#[tokio::test]
async fn every_response_carries_security_headers() -> Result<()> {
    let web = TempDir::new("site");
    std::fs::write(web.0.join("index.html"), "<!doctype html><title>IO</title>")?;
    let app = TestApp::with(Options {
        web_dir: Some(web.0.clone()),
        ..Options::default()
    })
    .await?;
    for (method, path) in [
        (Method::GET, "/api/openapi.json"),
        (Method::GET, "/api/auth/me"),
        (Method::GET, "/api/nope"),
        (Method::POST, "/api/auth/refresh"),
        (Method::GET, "/"),
        (Method::GET, "/chat"),
        (Method::GET, "/missing.js"),
        (Method::GET, "/dev/mailbox"),
    ] {
        let r = app
            .http
            .request(method.clone(), app.url(path))
            .send()
            .await?;
        assert_security_headers(&r, &format!("{method} {path} → {}", r.status()));
    }
    Ok(())
}

#[tokio::test]
async fn cors_allows_only_configured_origins() -> Result<()> {
    let app = TestApp::spawn().await?;
    let preflight = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, app.url("/api/auth/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let r = preflight(ORIGIN).await?;
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], ORIGIN);
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()?
        .to_owned();
    assert!(
        methods.contains("GET") && methods.contains("PUT"),
        "{methods}"
    );
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()?
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");

    let r = preflight("https://evil.example").await?;
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // A simple cross-origin request gets the header too, and can read
    // Retry-After.
    let r = app
        .http
        .get(app.url("/api/openapi.json"))
        .header("origin", ORIGIN)
        .send()
        .await?;
    assert_eq!(r.headers()["access-control-allow-origin"], ORIGIN);
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()?
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
    Ok(())
}

#[tokio::test]
async fn axum_rejections_are_json_errors() -> Result<()> {
    let app = TestApp::spawn().await?;
    let token = app.access_token("strict@example.org").await?;
    let url = app.url("/api/users/profile");

    // Malformed JSON.
    let r = app
        .http
        .put(&url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"alias\": ")
        .send()
        .await?;
    let (status, code, _) = error_of(r).await?;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
    );

    // Not an object.
    let r = app
        .put_auth("/api/users/profile", &token, json!([1, 2]))
        .await?;
    assert_eq!(error_of(r).await?.0, StatusCode::BAD_REQUEST);

    // Wrong content type.
    let r = app
        .http
        .put(&url)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("{\"alias\":\"Someone\"}")
        .send()
        .await?;
    let (status, code, _) = error_of(r).await?;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
    );

    // Too large (64 KiB limit).
    let big = json!({ "details": "x".repeat(80 * 1024) });
    let r = app.put_auth("/api/users/profile", &token, big).await?;
    let (status, code, _) = error_of(r).await?;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
    );

    // Unknown route, wrong method (with Allow).
    let r = app.http.get(app.url("/api/nope")).send().await?;
    let (status, code, _) = error_of(r).await?;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let r = app.http.delete(app.url("/api/auth/me")).send().await?;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.headers().contains_key("allow"));
    assert_eq!(error_of(r).await?.1, "METHOD_NOT_ALLOWED");

    // Missing auth on a protected route with a body.
    let r = app.post("/api/chat/find-match", json!({})).await?;
    assert_eq!(error_of(r).await?.1, "UNAUTHORIZED");

    // API answers are never cached.
    let r = app.get_auth("/api/auth/me", &token).await?;
    assert_eq!(r.headers()["cache-control"], "no-store");
    Ok(())
}

#[tokio::test]
async fn web_client_with_spa_fallback() -> Result<()> {
    let web = TempDir::new("site");
    std::fs::create_dir_all(web.0.join("js"))?;
    std::fs::write(web.0.join("index.html"), "<!doctype html><title>IO</title>")?;
    std::fs::write(web.0.join("js/app.js"), "export const x = 1;")?;
    let app = TestApp::with(Options {
        web_dir: Some(web.0.clone()),
        ..Options::default()
    })
    .await?;
    for path in ["/", "/chat", "/auth/verify"] {
        let r = app.http.get(app.url(path)).send().await?;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.headers()["content-type"]
            .to_str()?
            .starts_with("text/html"));
        assert_eq!(r.headers()["cache-control"], "no-cache", "{path}");
        assert!(r.text().await?.contains("<title>IO</title>"));
    }
    let r = app.http.get(app.url("/js/app.js")).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str()?.contains("javascript"));
    assert_eq!(r.text().await?, "export const x = 1;");
    let r = app.http.get(app.url("/js/missing.js")).send().await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Traversal stays inside the web dir.
    let r = app
        .http
        .get(app.url("/..%2f..%2fetc%2fpasswd"))
        .send()
        .await?;
    assert_ne!(r.status(), StatusCode::OK);
    // A name longer than any file's is bad input, not a server error: a
    // client route gets the page, a file name 404.
    let long = "a".repeat(256);
    let wide = "%E4%B8%80".repeat(86);
    for (path, status) in [
        (format!("/{long}"), StatusCode::OK),
        (format!("/{wide}"), StatusCode::OK),
        (format!("/{long}/x"), StatusCode::OK),
        (format!("/js/{long}.js"), StatusCode::NOT_FOUND),
        (format!("/{}", "a/".repeat(2100)), StatusCode::OK),
        // Every name short, the whole just at the limit with the folder.
        (format!("/{}a", "a/".repeat(2047)), StatusCode::OK),
        // Not a valid escape: three bytes a name, on disk.
        (format!("/{}", "%zz".repeat(100)), StatusCode::OK),
    ] {
        let r = app.http.get(app.url(&path)).send().await?;
        assert_eq!(r.status(), status, "{} bytes", path.len());
    }
    Ok(())
}

#[tokio::test]
async fn openapi_document_lists_every_endpoint() -> Result<()> {
    let app = TestApp::spawn().await?;
    let r = app.http.get(app.url("/api/openapi.json")).send().await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()?
        .starts_with("application/json"));
    let doc: Value = r.json().await?;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
    for (path, method) in [
        ("/api/auth/send-magic-link", "post"),
        ("/api/auth/verify-token", "post"),
        ("/api/auth/refresh", "post"),
        ("/api/auth/me", "get"),
        ("/api/auth/logout", "post"),
        ("/api/users/profile", "get"),
        ("/api/users/profile", "put"),
        ("/api/users/alias-suggestion", "get"),
        ("/api/users/online-count", "get"),
        ("/api/chat/find-match", "post"),
        ("/api/chat/cancel-search", "post"),
        ("/api/chat/current-session", "get"),
        ("/api/chat/sessions/{id}/messages", "get"),
        ("/api/chat/send-message", "post"),
        ("/api/chat/reveal-request", "post"),
        ("/api/chat/reveal-respond", "post"),
        ("/api/chat/end-session", "post"),
        ("/api/chat/rate-session", "post"),
        ("/api/openapi.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    Ok(())
}
