//! Magic-link sign-in, refresh rotation, logout and access-token checks.

use std::time::Duration;

use anyhow::Result;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::*;

async fn full_flow(backend: Backend) -> Result<()> {
    let app = TestApp::with(Options {
        backend,
        ..Options::default()
    })
    .await?;
    let email = "Ada.Lovelace@Example.org";

    // Request a link; the mail is a friendly multipart with the link twice.
    let r = app
        .post("/api/auth/send-magic-link", json!({ "email": email }))
        .await?;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mail = app
        .sink()
        .wait_for_mail("ada.lovelace@example.org", 1)
        .await?;
    assert_eq!(mail["multipart"], "multipart/alternative");
    assert_eq!(mail["subject"], "Your IO sign-in link");
    let text = mail["text"].as_str().unwrap();
    let html = mail["html"].as_str().unwrap();
    assert!(
        text.contains("http://localhost:8080/auth/verify#token="),
        "{text}"
    );
    let token = token_in(text).unwrap();
    assert!(html.contains(&token), "the HTML part carries the same link");
    assert_eq!(URL_SAFE_NO_PAD.decode(&token)?.len(), 32, "256-bit token");

    // Verify: tokens and a new user with a generated alias.
    let r = app
        .post("/api/auth/verify-token", json!({ "token": token }))
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let signed: Value = r.json().await?;
    let access = signed["accessToken"].as_str().unwrap().to_owned();
    let refresh1 = signed["refreshToken"].as_str().unwrap().to_owned();
    assert_eq!(signed["expiresIn"], 900);
    let user = &signed["user"];
    assert_eq!(user["email"], "ada.lovelace@example.org");
    assert!(user["gender"].is_null());
    let alias = user["alias"].as_str().unwrap();
    assert!((3..=24).contains(&alias.len()), "{alias}");
    let user_id = user["id"].as_str().unwrap().to_owned();

    // The link worked once.
    let r = app
        .post("/api/auth/verify-token", json!({ "token": token }))
        .await?;
    assert_eq!(error_of(r).await?.1, "UNAUTHORIZED");

    // me
    let me: Value = app.get_auth("/api/auth/me", &access).await?.json().await?;
    assert_eq!(me["user"]["id"], user_id.as_str());
    assert_eq!(me["user"]["email"], "ada.lovelace@example.org");

    // Profile update.
    let r = app
        .put_auth(
            "/api/users/profile",
            &access,
            json!({
                "alias": "Countess_42",
                "gender": "girl",
                "seeking": "any",
                "realName": "Ada Lovelace",
                "details": "Analytical engines.\nPoetical science.",
                "revealEmail": true
            }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let profile: Value = r.json().await?;
    let p = &profile["profile"];
    assert_eq!(p["alias"], "Countess_42");
    assert_eq!(p["gender"], "girl");
    assert_eq!(p["seeking"], "any");
    assert_eq!(p["realName"], "Ada Lovelace");
    assert_eq!(p["revealEmail"], true);
    let got: Value = app
        .get_auth("/api/users/profile", &access)
        .await?
        .json()
        .await?;
    assert_eq!(got["profile"], profile["profile"]);
    // null clears a card text; other fields stay.
    let cleared: Value = app
        .put_auth("/api/users/profile", &access, json!({ "realName": null }))
        .await?
        .json()
        .await?;
    assert!(cleared["profile"]["realName"].is_null());
    assert_eq!(cleared["profile"]["alias"], "Countess_42");

    // Refresh rotates.
    let r = app
        .post("/api/auth/refresh", json!({ "refreshToken": refresh1 }))
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let rotated: Value = r.json().await?;
    let refresh2 = rotated["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh1);
    let access2 = rotated["accessToken"].as_str().unwrap();
    assert_eq!(
        app.get_auth("/api/auth/me", access2).await?.status(),
        StatusCode::OK
    );

    // Presented again at once (two requests racing, a retry after a lost
    // answer), the spent token gets the same successor: one chain.
    let r = app
        .post("/api/auth/refresh", json!({ "refreshToken": refresh1 }))
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let raced: Value = r.json().await?;
    assert_eq!(raced["refreshToken"], refresh2.as_str());

    // Later, reusing the spent token revokes the whole family: the fresh
    // one dies too.
    tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
    let r = app
        .post("/api/auth/refresh", json!({ "refreshToken": refresh1 }))
        .await?;
    assert_eq!(error_of(r).await?.1, "UNAUTHORIZED");
    let r = app
        .post("/api/auth/refresh", json!({ "refreshToken": refresh2 }))
        .await?;
    assert_eq!(error_of(r).await?.1, "UNAUTHORIZED");

    // A second sign-in is the same user, in a new family; logout ends it.
    let again = app.sign_in("ada.lovelace@example.org").await?;
    assert_eq!(again["user"]["id"], user_id.as_str());
    assert_eq!(again["user"]["alias"], "Countess_42");
    let access3 = again["accessToken"].as_str().unwrap();
    let refresh3 = again["refreshToken"].as_str().unwrap();
    let r = app
        .post_auth(
            "/api/auth/logout",
            access3,
            json!({ "refreshToken": refresh3 }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .post("/api/auth/refresh", json!({ "refreshToken": refresh3 }))
        .await?;
    assert_eq!(error_of(r).await?.1, "UNAUTHORIZED");
    Ok(())
}

#[tokio::test]
async fn full_sign_in_flow_on_sqlite() -> Result<()> {
    full_flow(Backend::Sqlite).await
}

#[tokio::test]
async fn full_sign_in_flow_on_postgres() -> Result<()> {
    full_flow(Backend::Postgres).await
}

#[tokio::test]
async fn logout_with_only_a_refresh_token_and_everywhere() -> Result<()> {
    let app = TestApp::spawn().await?;
    let a = app.sign_in("grace@example.org").await?;
    let b = app.sign_in("grace@example.org").await?;

    // No access token (it may have expired): the refresh token suffices.
    let r = app
        .post(
            "/api/auth/logout",
            json!({ "refreshToken": a["refreshToken"] }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .post(
            "/api/auth/refresh",
            json!({ "refreshToken": a["refreshToken"] }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The other sign-in is untouched...
    let r = app
        .post(
            "/api/auth/refresh",
            json!({ "refreshToken": b["refreshToken"] }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let b2: Value = r.json().await?;

    // ...until a logout without a refresh token ends every sign-in.
    let r = app
        .http
        .post(app.url("/api/auth/logout"))
        .bearer_auth(b2["accessToken"].as_str().unwrap())
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .post(
            "/api/auth/refresh",
            json!({ "refreshToken": b2["refreshToken"] }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Neither credential: 401.
    let r = app.post("/api/auth/logout", json!({})).await?;
    assert_eq!(error_of(r).await?.1, "UNAUTHORIZED");
    Ok(())
}

#[tokio::test]
async fn expired_link_is_refused() -> Result<()> {
    let app = TestApp::with(Options {
        magic_link_ttl: Duration::from_secs(1),
        ..Options::default()
    })
    .await?;
    let token = app.request_link("late@example.org").await?;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let r = app
        .post("/api/auth/verify-token", json!({ "token": token }))
        .await?;
    let (status, code, _) = error_of(r).await?;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    Ok(())
}

#[tokio::test]
async fn unknown_token_and_bad_bodies() -> Result<()> {
    let app = TestApp::spawn().await?;
    let r = app
        .post(
            "/api/auth/verify-token",
            json!({ "token": "not-a-real-token" }),
        )
        .await?;
    assert_eq!(error_of(r).await?.1, "UNAUTHORIZED");
    let r = app.post("/api/auth/verify-token", json!({})).await?;
    let (status, code, field) = error_of(r).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code, "VALIDATION_ERROR");
    assert_eq!(field.as_deref(), Some("token"));
    let r = app
        .post("/api/auth/send-magic-link", json!({ "email": "nope" }))
        .await?;
    let (status, _, field) = error_of(r).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(field.as_deref(), Some("email"));
    let r = app
        .post(
            "/api/auth/send-magic-link",
            json!({ "email": "a@example.org", "admin": true }),
        )
        .await?;
    let (status, _, field) = error_of(r).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(field.as_deref(), Some("admin"));
    Ok(())
}

#[tokio::test]
async fn other_domains_get_the_same_answer_and_no_mail() -> Result<()> {
    let app = TestApp::with(Options {
        allowed_domains: vec!["Campus.EDU".into()],
        ..Options::default()
    })
    .await?;
    let outsider = app
        .post(
            "/api/auth/send-magic-link",
            json!({ "email": "eve@elsewhere.org" }),
        )
        .await?;
    let insider = app
        .post(
            "/api/auth/send-magic-link",
            json!({ "email": "bob@campus.edu" }),
        )
        .await?;
    assert_eq!(outsider.status(), StatusCode::ACCEPTED);
    assert_eq!(insider.status(), StatusCode::ACCEPTED);
    assert_eq!(outsider.text().await?, insider.text().await?);
    // The insider's mail arrives; by then the outsider's request (queued
    // first) has long been dropped.
    app.sink().wait_for_mail("bob@campus.edu", 1).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.sink().mails_to("eve@elsewhere.org").is_empty());
    assert_eq!(app.sink().mails().len(), 1);
    Ok(())
}

#[tokio::test]
async fn sign_in_is_rate_limited_with_retry_after() -> Result<()> {
    let app = TestApp::with(Options {
        limits: io_api::AuthLimits::default(),
        ..Options::default()
    })
    .await?;
    // 3 per hour per email.
    for _ in 0..3 {
        let r = app
            .post(
                "/api/auth/send-magic-link",
                json!({ "email": "spam@example.org" }),
            )
            .await?;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let r = app
        .post(
            "/api/auth/send-magic-link",
            json!({ "email": "spam@example.org" }),
        )
        .await?;
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()?
        .parse()?;
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(error_of(r).await?.1, "RATE_LIMITED");

    // 20 per hour per IP (4 used so far, the refused one included).
    let mut statuses = Vec::new();
    for i in 0..17 {
        let r = app
            .post(
                "/api/auth/send-magic-link",
                json!({ "email": format!("user{i}@example.org") }),
            )
            .await?;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        16,
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429));

    // 10 verifications per hour per IP, good or bad.
    for _ in 0..10 {
        let r = app
            .post("/api/auth/verify-token", json!({ "token": "guess" }))
            .await?;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = app
        .post("/api/auth/verify-token", json!({ "token": "guess" }))
        .await?;
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_of(r).await?.1, "RATE_LIMITED");
    Ok(())
}

#[tokio::test]
async fn mail_server_down_is_503_for_every_address_then_recovers() -> Result<()> {
    let port = free_port();
    let app = TestApp::with(Options {
        mail: Mail::Down(port),
        allowed_domains: vec!["campus.edu".into()],
        ..Options::default()
    })
    .await?;
    for email in ["someone@campus.edu", "someone@elsewhere.org"] {
        let r = app
            .post("/api/auth/send-magic-link", json!({ "email": email }))
            .await?;
        let (status, code, _) = error_of(r).await?;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code, "SERVICE_UNAVAILABLE");
    }
    // The server comes back on that port: the health probe notices.
    let sink = SmtpSink::start(port)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = app
            .post(
                "/api/auth/send-magic-link",
                json!({ "email": "someone@campus.edu" }),
            )
            .await?;
        if r.status() == StatusCode::ACCEPTED {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "mail never recovered");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    sink.wait_for_mail("someone@campus.edu", 1).await?;
    Ok(())
}

#[tokio::test]
async fn dev_mailer_shows_links_at_dev_mailbox() -> Result<()> {
    let app = TestApp::with(Options {
        mail: Mail::Dev,
        ..Options::default()
    })
    .await?;
    // Markup in an address is shown as text, never as markup.
    let r = app
        .post(
            "/api/auth/send-magic-link",
            json!({ "email": "dev+<b>@example.org" }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let token = loop {
        let page = app.http.get(app.url("/dev/mailbox")).send().await?;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.headers()["content-type"]
            .to_str()?
            .starts_with("text/html"));
        let html = page.text().await?;
        if let Some(t) = token_in(&html) {
            assert!(html.contains("dev+&lt;b&gt;@example.org"), "{html}");
            assert!(!html.contains("<b>"), "{html}");
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no link in the mailbox"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let r = app
        .post("/api/auth/verify-token", json!({ "token": token }))
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn dev_mailbox_is_absent_with_smtp() -> Result<()> {
    let app = TestApp::spawn().await?;
    let r = app.http.get(app.url("/dev/mailbox")).send().await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    Ok(())
}

#[derive(Clone, serde::Serialize)]
struct Claims<'a> {
    sub: String,
    iss: &'a str,
    aud: &'a str,
    typ: &'a str,
    iat: i64,
    exp: i64,
}

/// The `kid` io-auth gives a secret.
fn kid(secret: &[u8]) -> String {
    let digest = Sha256::digest([b"io-kid:".as_slice(), secret].concat());
    URL_SAFE_NO_PAD.encode(&digest[..9])
}

fn sign(secret: &[u8], kid_of: &[u8], claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid(kid_of));
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
}

#[tokio::test]
async fn bad_access_tokens_are_401() -> Result<()> {
    let app = TestApp::spawn().await?;
    let signed = app.sign_in("mallory@example.org").await?;
    let sub = signed["user"]["id"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now().timestamp();
    let good = Claims {
        sub: sub.clone(),
        iss: "io",
        aud: "io-chat",
        typ: "access",
        iat: now,
        exp: now + 600,
    };
    // Sanity: a token built this way is accepted.
    let ok = sign(SECRET, SECRET, &good);
    assert_eq!(
        app.get_auth("/api/auth/me", &ok).await?.status(),
        StatusCode::OK
    );

    let forged = sign(b"another-secret-another-secret-!!", SECRET, &good);
    let expired = sign(
        SECRET,
        SECRET,
        &Claims {
            iat: now - 7200,
            exp: now - 3600,
            ..good.clone()
        },
    );
    let wrong_aud = sign(
        SECRET,
        SECRET,
        &Claims {
            aud: "someone-else",
            ..good.clone()
        },
    );
    let wrong_typ = sign(
        SECRET,
        SECRET,
        &Claims {
            typ: "refresh",
            ..good.clone()
        },
    );
    let wrong_iss = sign(
        SECRET,
        SECRET,
        &Claims {
            iss: "evil",
            ..good.clone()
        },
    );
    for (what, token) in [
        ("forged", forged.as_str()),
        ("expired", &expired),
        ("wrong audience", &wrong_aud),
        ("wrong typ", &wrong_typ),
        ("wrong issuer", &wrong_iss),
        ("garbage", "not.a.jwt"),
    ] {
        let r = app.get_auth("/api/users/profile", token).await?;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{what}");
        assert_eq!(error_of(r).await?.1, "UNAUTHORIZED", "{what}");
    }
    // No header at all, and a non-bearer scheme.
    let r = app.http.get(app.url("/api/auth/me")).send().await?;
    assert_eq!(error_of(r).await?.1, "UNAUTHORIZED");
    let r = app
        .http
        .get(app.url("/api/auth/me"))
        .basic_auth("a", Some("b"))
        .send()
        .await?;
    assert_eq!(error_of(r).await?.1, "UNAUTHORIZED");
    Ok(())
}
