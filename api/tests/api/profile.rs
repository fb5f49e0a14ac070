//! Profile validation: every invalid field is a 400 that names it.

use anyhow::Result;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn every_invalid_profile_field_is_named() -> Result<()> {
    let app = TestApp::spawn().await?;
    let token = app.access_token("val@example.org").await?;
    let before: Value = app
        .get_auth("/api/users/profile", &token)
        .await?
        .json()
        .await?;
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "alias": "ab" }), "alias"),
        (json!({ "alias": &"a".repeat(25) }), "alias"),
        (json!({ "alias": "no spaces" }), "alias"),
        (json!({ "alias": 42 }), "alias"),
        (json!({ "alias": null }), "alias"),
        (json!({ "gender": "robot" }), "gender"),
        (json!({ "gender": null }), "gender"),
        (json!({ "seeking": "everyone" }), "seeking"),
        (json!({ "seeking": ["dude"] }), "seeking"),
        (json!({ "realName": "x".repeat(81) }), "realName"),
        (json!({ "realName": 7 }), "realName"),
        (json!({ "realName": "bell\u{7}" }), "realName"),
        (json!({ "details": "d".repeat(501) }), "details"),
        (json!({ "details": {} }), "details"),
        (json!({ "revealEmail": "yes" }), "revealEmail"),
        (json!({ "revealEmail": null }), "revealEmail"),
        (json!({ "age": 30 }), "age"),
        (
            json!({ "alias": "Fine_Alias", "email": "x@y.org" }),
            "email",
        ),
    ];
    for (body, field) in cases {
        let r = app
            .put_auth("/api/users/profile", &token, body.clone())
            .await?;
        let (status, code, named) = error_of(r).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(code, "VALIDATION_ERROR", "{body}");
        assert_eq!(named.as_deref(), Some(field), "{body}");
    }
    // Nothing of the refused updates was applied.
    let after: Value = app
        .get_auth("/api/users/profile", &token)
        .await?
        .json()
        .await?;
    assert_eq!(after, before);
    // Limits are in characters, not bytes, and inclusive.
    let r = app
        .put_auth(
            "/api/users/profile",
            &token,
            json!({ "realName": "é".repeat(80), "details": "ü".repeat(500) }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn alias_suggestion_and_online_count() -> Result<()> {
    let app = TestApp::spawn().await?;
    let token = app.access_token("count@example.org").await?;
    let s: Value = app
        .get_auth("/api/users/alias-suggestion", &token)
        .await?
        .json()
        .await?;
    let alias = s["alias"].as_str().unwrap();
    assert!(alias.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let r = app.get_auth("/api/users/online-count", &token).await?;
    assert_eq!(r.status(), StatusCode::OK);
    let c: Value = r.json().await?;
    assert_eq!(
        c,
        json!({ "count": 0, "waiting": { "dude": 0, "girl": 0 } })
    );
    let r = app
        .http
        .get(app.url("/api/users/online-count"))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}
