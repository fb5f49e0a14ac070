//! The REST chat endpoints: a smoke test of the queue, the error mapping of
//! ids, and one session walked from first message to rating.

use anyhow::Result;
use chrono::Utc;
use io_domain::types::{FencingToken, UserId};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::*;

async fn onboarded(app: &TestApp, email: &str, gender: &str) -> Result<(String, UserId)> {
    let signed = app.sign_in(email).await?;
    let token = signed["accessToken"].as_str().unwrap().to_owned();
    let id: Uuid = signed["user"]["id"].as_str().unwrap().parse()?;
    let r = app
        .put_auth(
            "/api/users/profile",
            &token,
            json!({ "gender": gender, "seeking": "any", "realName": format!("Real {gender}") }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    Ok((token, UserId(id)))
}

#[tokio::test]
async fn find_match_and_cancel_search() -> Result<()> {
    let app = TestApp::spawn().await?;
    let token = app.access_token("solo@example.org").await?;

    // No gender yet: the domain says which field is missing.
    let r = app
        .post_auth("/api/chat/find-match", &token, json!({}))
        .await?;
    let (status, _, field) = error_of(r).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(field.as_deref(), Some("gender"));

    app.put_auth("/api/users/profile", &token, json!({ "gender": "dude" }))
        .await?;
    // An empty body is as good as `{}`.
    let r = app
        .http
        .post(app.url("/api/chat/find-match"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.json::<Value>().await?, json!({ "status": "searching" }));
    let counts: Value = app
        .get_auth("/api/users/online-count", &token)
        .await?
        .json()
        .await?;
    assert_eq!(counts["waiting"]["dude"], 1);

    let r = app
        .post_auth("/api/chat/find-match", &token, json!({ "now": true }))
        .await?;
    assert_eq!(error_of(r).await?.2.as_deref(), Some("now"));

    // Saving the profile without changing whom to pair keeps the place in
    // the queue; a change of gender queues the user as they now are.
    let queued = || async { Ok::<_, anyhow::Error>(app.bus.queue_snapshot().await?.0) };
    let before = queued().await?;
    for same in [
        json!({ "alias": "Renamed_1" }),
        json!({ "gender": "dude", "seeking": "girl" }),
    ] {
        let r = app.put_auth("/api/users/profile", &token, same).await?;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(queued().await?, before, "no change of whom to pair");
    }
    let r = app
        .put_auth("/api/users/profile", &token, json!({ "gender": "girl" }))
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let counts: Value = app
        .get_auth("/api/users/online-count", &token)
        .await?
        .json()
        .await?;
    assert_eq!(counts["waiting"], json!({ "dude": 0, "girl": 1 }));

    let r = app
        .post_auth("/api/chat/cancel-search", &token, json!({}))
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await?, json!({ "status": "idle" }));
    let counts: Value = app
        .get_auth("/api/users/online-count", &token)
        .await?
        .json()
        .await?;
    assert_eq!(counts["waiting"], json!({ "dude": 0, "girl": 0 }));

    let cur: Value = app
        .get_auth("/api/chat/current-session", &token)
        .await?
        .json()
        .await?;
    assert_eq!(cur, json!({ "session": null }));
    Ok(())
}

#[tokio::test]
async fn ids_are_validated_and_foreign_sessions_are_not_found() -> Result<()> {
    let app = TestApp::spawn().await?;
    let token = app.access_token("ids@example.org").await?;
    let r = app
        .get_auth("/api/chat/sessions/not-a-uuid/messages", &token)
        .await?;
    let (status, code, field) = error_of(r).await?;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "VALIDATION_ERROR")
    );
    assert_eq!(field.as_deref(), Some("id"));

    let random = Uuid::new_v4();
    let r = app
        .get_auth(&format!("/api/chat/sessions/{random}/messages"), &token)
        .await?;
    assert_eq!(error_of(r).await?.1, "NOT_FOUND");
    let r = app
        .get_auth(
            &format!("/api/chat/sessions/{random}/messages?after=abc"),
            &token,
        )
        .await?;
    assert_eq!(error_of(r).await?.2.as_deref(), Some("after"));

    for (path, body) in [
        (
            "/api/chat/send-message",
            json!({ "sessionId": "x", "content": "hi", "clientMsgId": "1" }),
        ),
        ("/api/chat/reveal-request", json!({ "sessionId": 5 })),
        ("/api/chat/reveal-respond", json!({ "accept": true })),
        ("/api/chat/end-session", json!({ "sessionId": "" })),
        (
            "/api/chat/rate-session",
            json!({ "sessionId": "nope", "rating": 3 }),
        ),
    ] {
        let r = app.post_auth(path, &token, body).await?;
        let (status, _, field) = error_of(r).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(field.as_deref(), Some("sessionId"), "{path}");
    }
    let r = app
        .post_auth(
            "/api/chat/end-session",
            &token,
            json!({ "sessionId": random }),
        )
        .await?;
    assert_eq!(error_of(r).await?.1, "NOT_FOUND");
    Ok(())
}

#[tokio::test]
async fn a_session_from_first_message_to_rating() -> Result<()> {
    let app = TestApp::spawn().await?;
    let (dude, dude_id) = onboarded(&app, "d@example.org", "dude").await?;
    let (girl, girl_id) = onboarded(&app, "g@example.org", "girl").await?;
    let (outsider, _) = onboarded(&app, "o@example.org", "girl").await?;
    // The matcher's step, done directly.
    let session = app
        .db
        .store
        .create_session(FencingToken(1), dude_id, girl_id, Utc::now())
        .await?;
    let sid = session.id.0;

    let r = app
        .post_auth("/api/chat/find-match", &dude, json!({}))
        .await?;
    assert_eq!(error_of(r).await?.1, "CONFLICT");

    let cur: Value = app
        .get_auth("/api/chat/current-session", &dude)
        .await?
        .json()
        .await?;
    assert_eq!(cur["session"]["id"], sid.to_string());
    assert_eq!(cur["session"]["status"], "active");
    assert_eq!(cur["session"]["partner"]["gender"], "girl");
    assert!(cur["session"]["partner"].get("email").is_none());

    let r = app
        .post_auth(
            "/api/chat/send-message",
            &dude,
            json!({ "sessionId": sid, "content": "  hello  ", "clientMsgId": "c1" }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    let m: Value = r.json().await?;
    assert_eq!(m["message"]["content"], "hello");
    assert_eq!(m["message"]["seq"], 1);
    assert_eq!(m["message"]["isMe"], true);
    let r = app
        .post_auth(
            "/api/chat/send-message",
            &dude,
            json!({ "sessionId": sid, "content": "   ", "clientMsgId": "c2" }),
        )
        .await?;
    assert_eq!(error_of(r).await?.2.as_deref(), Some("content"));

    let page: Value = app
        .get_auth(&format!("/api/chat/sessions/{sid}/messages?after=0"), &girl)
        .await?
        .json()
        .await?;
    assert_eq!(page["messages"][0]["isMe"], false);
    let r = app
        .get_auth(&format!("/api/chat/sessions/{sid}/messages"), &outsider)
        .await?;
    assert_eq!(error_of(r).await?.1, "NOT_FOUND");

    let r = app
        .post_auth(
            "/api/chat/reveal-request",
            &dude,
            json!({ "sessionId": sid }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    let req: Value = r.json().await?;
    assert_eq!(req["revealRequest"]["status"], "pending");
    assert_eq!(req["revealRequest"]["requestedBy"], "me");
    let r = app
        .post_auth(
            "/api/chat/reveal-respond",
            &girl,
            json!({ "sessionId": sid, "accept": true }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let resp: Value = r.json().await?;
    assert_eq!(resp["revealRequest"]["status"], "accepted");
    assert_eq!(
        resp["revealRequest"]["identities"]["partner"]["realName"],
        "Real dude"
    );

    let r = app
        .post_auth(
            "/api/chat/rate-session",
            &girl,
            json!({ "sessionId": sid, "rating": 4 }),
        )
        .await?;
    assert_eq!(error_of(r).await?.1, "CONFLICT");
    let r = app
        .post_auth("/api/chat/end-session", &girl, json!({ "sessionId": sid }))
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let ended: Value = r.json().await?;
    assert_eq!(ended["session"]["status"], "ended");
    for bad in [json!(0), json!(5), json!(2.5), json!("3")] {
        let r = app
            .post_auth(
                "/api/chat/rate-session",
                &girl,
                json!({ "sessionId": sid, "rating": bad }),
            )
            .await?;
        assert_eq!(error_of(r).await?.2.as_deref(), Some("rating"), "{bad}");
    }
    let r = app
        .post_auth(
            "/api/chat/rate-session",
            &girl,
            json!({ "sessionId": sid, "rating": 4 }),
        )
        .await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    let rated: Value = r.json().await?;
    assert_eq!(rated["rating"]["rating"], 4);
    assert_eq!(rated["rating"]["sessionId"], sid.to_string());
    Ok(())
}
