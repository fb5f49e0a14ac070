//! The whole chat story against `io all` (SQLite, in-process bus), with one
//! user acting over WebSocket and the other over REST.

mod common;

use std::time::Duration;

use common::*;
use io_domain::model::SessionStatus;
use io_domain::types::{Gender, SessionId};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_chat_reveal_end_rate_over_ws_and_rest_on_sqlite() {
    story(App::start(&[]).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_chat_reveal_end_rate_over_ws_and_rest_on_postgres() {
    let db = io_store::testing::postgres().await;
    story(App::start_on(Some(&db.url), &[]).await).await;
}

async fn story(app: App) {
    let alice = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let bob = make_user(app.store.as_ref(), &app.tokens, Gender::Girl).await;
    let (mut a, connected) = Ws::join(&app.ws(), &alice.token).await;
    assert_eq!(connected["user"]["email"], alice.email);
    assert!(connected["session"].is_null());
    assert!(connected["onlineCount"].as_u64().unwrap() >= 1);
    // Bob acts over REST; his socket only watches.
    let (mut b, _) = Ws::join(&app.ws(), &bob.token).await;
    let bob_rest = Rest::new(&app.http(), &bob.token);

    a.send("find_match", json!({}), Some("f1")).await;
    let searching = a.next_frame().await;
    assert_eq!(searching["type"], "searching");
    assert_eq!(searching["ref"], "f1");
    let (status, body) = bob_rest.post("/api/chat/find-match", json!({})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "searching");
    b.expect("searching").await;

    let found = a.expect("match_found").await;
    assert_eq!(found["user"]["alias"], bob.alias);
    assert_eq!(found["user"]["gender"], "girl");
    let session_id = found["session"]["id"].as_str().unwrap().to_owned();
    assert_eq!(found["session"]["status"], "active");
    assert_eq!(found["session"]["reveal"]["state"], "none");
    b.expect("match_found").await;

    // find_match while in a session is a conflict, on both transports.
    a.send("find_match", json!({}), Some("f2")).await;
    let err = a.next_frame().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["data"]["code"], "CONFLICT");
    assert_eq!(err["ref"], "f2");
    assert_eq!(
        bob_rest.post("/api/chat/find-match", json!({})).await.0,
        409
    );
    // So is cancelling a search that already ended in this match: the
    // user is in a chat, not idle.
    a.send("cancel_search", json!({}), Some("c2")).await;
    let err = a.next_frame().await;
    assert_eq!(err["data"]["code"], "CONFLICT", "{err}");
    assert_eq!(err["ref"], "c2");
    assert_eq!(
        bob_rest.post("/api/chat/cancel-search", json!({})).await.0,
        409
    );

    // Chat both ways.
    a.send(
        "send_message",
        json!({"sessionId": session_id, "content": "  hi bob  ", "clientMsgId": "a-1"}),
        Some("m1"),
    )
    .await;
    let ack = a.next_frame().await;
    assert_eq!(ack["type"], "message_received");
    assert_eq!(ack["ref"], "m1");
    assert_eq!(ack["data"]["message"]["isMe"], true);
    assert_eq!(ack["data"]["message"]["content"], "hi bob");
    assert_eq!(ack["data"]["message"]["seq"], 1);
    let got = b.expect("message_received").await;
    assert_eq!(got["message"]["isMe"], false);
    assert_eq!(got["message"]["id"], ack["data"]["message"]["id"]);

    let (status, sent) = bob_rest
        .post(
            "/api/chat/send-message",
            json!({"sessionId": session_id, "content": "hey alice", "clientMsgId": "b-1"}),
        )
        .await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["message"]["seq"], 2);
    let got = a.expect("message_received").await;
    assert_eq!(got["message"]["content"], "hey alice");
    assert_eq!(got["message"]["isMe"], false);
    // Bob's own socket sees his REST message too (every socket of the user).
    assert_eq!(b.expect("message_received").await["message"]["isMe"], true);

    // A retried clientMsgId yields the same message, stored once.
    a.send(
        "send_message",
        json!({"sessionId": session_id, "content": "hi bob", "clientMsgId": "a-1"}),
        Some("m1-retry"),
    )
    .await;
    let retry = a.next_frame().await;
    assert_eq!(retry["data"]["message"]["id"], ack["data"]["message"]["id"]);
    let _ = b.next_frame().await; // at-least-once: the partner may see it again, same id
    let (_, history) = bob_rest
        .get(&format!("/api/chat/sessions/{session_id}/messages?after=0"))
        .await;
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{history}");
    assert_eq!(messages[0]["seq"], 1);
    assert_eq!(messages[1]["seq"], 2);
    let (_, page) = bob_rest
        .get(&format!("/api/chat/sessions/{session_id}/messages?after=1"))
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    // A key is its sender's: the partner may use the same one.
    let (status, same_key) = bob_rest
        .post(
            "/api/chat/send-message",
            json!({"sessionId": session_id, "content": "mine too", "clientMsgId": "a-1"}),
        )
        .await;
    assert_eq!(status, 201, "{same_key}");
    assert_eq!(same_key["message"]["seq"], 3, "{same_key}");
    assert_eq!(same_key["message"]["content"], "mine too");
    assert_eq!(a.expect("message_received").await["message"]["seq"], 3);
    assert_eq!(b.expect("message_received").await["message"]["isMe"], true);

    // Typing goes to the partner only.
    a.send("typing_start", json!({"sessionId": session_id}), None)
        .await;
    assert_eq!(b.expect("user_typing").await["sessionId"], session_id);
    a.send("typing_stop", json!({"sessionId": session_id}), None)
        .await;
    b.expect("user_stopped_typing").await;

    // Bob asks to reveal over REST; Alice declines over WS.
    let (status, rr) = bob_rest
        .post("/api/chat/reveal-request", json!({"sessionId": session_id}))
        .await;
    assert_eq!(status, 201, "{rr}");
    assert_eq!(rr["revealRequest"]["status"], "pending");
    let asked = a.expect("reveal_requested").await;
    assert_eq!(asked["requesterAlias"], bob.alias);
    // A second pending request is a conflict; the requester cannot answer.
    assert_eq!(
        bob_rest
            .post("/api/chat/reveal-request", json!({"sessionId": session_id}))
            .await
            .0,
        409
    );
    assert_eq!(
        bob_rest
            .post(
                "/api/chat/reveal-respond",
                json!({"sessionId": session_id, "accept": true})
            )
            .await
            .0,
        409
    );
    a.send(
        "reveal_respond",
        json!({"sessionId": session_id, "accept": false}),
        Some("r1"),
    )
    .await;
    let declined = a.next_frame().await;
    assert_eq!(declined["type"], "reveal_response");
    assert_eq!(declined["ref"], "r1");
    assert_eq!(declined["data"]["status"], "declined");
    assert!(declined["data"]["identities"].is_null());
    let told = b.expect("reveal_response").await;
    assert_eq!(told["status"], "declined");
    assert!(told["identities"].is_null());

    // Nothing identifying about the partner has been sent to either side.
    for (frames, partner) in [(&a.seen, &bob), (&b.seen, &alice)] {
        let t = transcript(frames);
        assert!(!t.contains(&partner.email), "email leaked: {t}");
        assert!(!t.contains(&partner.real_name), "real name leaked");
        assert!(!t.contains(&partner.id.to_string()), "id leaked");
    }
    let (_, current) = bob_rest.get("/api/chat/current-session").await;
    let current_text = current.to_string();
    assert!(!current_text.contains(&alice.email) && !current_text.contains(&alice.real_name));
    assert_eq!(current["session"]["partner"]["alias"], alice.alias);

    // Rating before the end is refused.
    assert_eq!(
        bob_rest
            .post(
                "/api/chat/rate-session",
                json!({"sessionId": session_id, "rating": 3})
            )
            .await
            .0,
        409
    );

    // Alice ends; both are told who ended it.
    a.send("end_session", json!({"sessionId": session_id}), Some("e1"))
        .await;
    let ended = a.next_frame().await;
    assert_eq!(ended["type"], "session_ended");
    assert_eq!(ended["data"]["endedBy"], "me");
    assert_eq!(b.expect("session_ended").await["endedBy"], "partner");
    // A later read of the session says so too (a reconnect's rating screen).
    let (_, current) = bob_rest.get("/api/chat/current-session").await;
    assert_eq!(current["session"]["endedBy"], "partner", "{current}");
    // Messages after the end are refused.
    let (status, _) = bob_rest
        .post(
            "/api/chat/send-message",
            json!({"sessionId": session_id, "content": "late", "clientMsgId": "b-late"}),
        )
        .await;
    assert_eq!(status, 409);
    // So is typing: a former partner hears nothing more.
    a.send(
        "typing_start",
        json!({"sessionId": session_id}),
        Some("t-late"),
    )
    .await;
    let late = a.next_frame().await;
    assert_eq!(late["ref"], "t-late", "{late}");
    assert_eq!(late["data"]["code"], "CONFLICT", "{late}");
    // A stop (a client tidying up) is no mistake: no error, no event.
    a.send(
        "typing_stop",
        json!({"sessionId": session_id}),
        Some("t-stop"),
    )
    .await;
    a.expect_silence(Duration::from_millis(300)).await;
    b.expect_silence(Duration::from_millis(300)).await;

    // Both rate, once each, 1–4.
    a.send(
        "rate_session",
        json!({"sessionId": session_id, "rating": 5}),
        Some("bad"),
    )
    .await;
    let bad = a.next_frame().await;
    assert_eq!(bad["data"]["code"], "VALIDATION_ERROR");
    assert_eq!(bad["data"]["field"], "rating", "{bad}");
    a.send(
        "rate_session",
        json!({"sessionId": session_id, "rating": 4}),
        Some("ok"),
    )
    .await;
    let rated = a.next_frame().await;
    assert_eq!(rated["type"], "session_rated");
    assert_eq!(rated["data"]["rating"], 4);
    let (status, rating) = bob_rest
        .post(
            "/api/chat/rate-session",
            json!({"sessionId": session_id, "rating": 2}),
        )
        .await;
    assert_eq!(status, 201, "{rating}");
    assert_eq!(rating["rating"]["rating"], 2);
    assert_eq!(b.expect("session_rated").await["rating"], 2);
    assert_eq!(
        bob_rest
            .post(
                "/api/chat/rate-session",
                json!({"sessionId": session_id, "rating": 2})
            )
            .await
            .0,
        409
    );
    let sid = SessionId(session_id.parse().unwrap());
    let stored = app.store.session(sid).await.unwrap().unwrap();
    assert_eq!(stored.status, SessionStatus::Rated);

    // They never meet again: with only the two of them searching, nothing happens.
    a.send("find_match", json!({}), None).await;
    a.expect("searching").await;
    bob_rest.post("/api/chat/find-match", json!({})).await;
    b.expect("searching").await;
    a.expect_silence(Duration::from_millis(1500)).await;

    // A new partner for Alice, and this time the reveal is accepted.
    let carol = make_user(app.store.as_ref(), &app.tokens, Gender::Girl).await;
    let (mut c, _) = Ws::join(&app.ws(), &carol.token).await;
    bob_rest.post("/api/chat/cancel-search", json!({})).await;
    c.send("find_match", json!({}), None).await;
    c.expect("searching").await;
    let found = a.expect("match_found").await;
    assert_eq!(found["user"]["alias"], carol.alias);
    let s2 = found["session"]["id"].as_str().unwrap().to_owned();
    c.expect("match_found").await;
    a.send("reveal_request", json!({"sessionId": s2}), None)
        .await;
    assert_eq!(
        c.expect("reveal_requested").await["requesterAlias"],
        alice.alias
    );
    c.send(
        "reveal_respond",
        json!({"sessionId": s2, "accept": true}),
        Some("yes"),
    )
    .await;
    let accepted = c.next_frame().await;
    assert_eq!(accepted["ref"], "yes");
    assert_eq!(accepted["data"]["status"], "accepted");
    assert_eq!(
        accepted["data"]["identities"]["partner"]["realName"],
        alice.real_name
    );
    assert_eq!(
        accepted["data"]["identities"]["partner"]["email"],
        alice.email
    );
    assert_eq!(
        accepted["data"]["identities"]["me"]["realName"],
        carol.real_name
    );
    let seen_by_alice = a.expect("reveal_response").await;
    assert_eq!(
        seen_by_alice["identities"]["partner"]["realName"],
        carol.real_name
    );
    assert_eq!(seen_by_alice["identities"]["me"]["alias"], alice.alias);
    // Bob, a third party, saw none of it.
    assert!(!transcript(&b.seen).contains(&carol.real_name));

    a.close().await;
    b.close().await;
    c.close().await;
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_user_cannot_read_or_act_on_a_session() {
    let app = App::start(&[]).await;
    let alice = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let bob = make_user(app.store.as_ref(), &app.tokens, Gender::Girl).await;
    let mallory = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let (mut a, _) = Ws::join(&app.ws(), &alice.token).await;
    let (mut b, _) = Ws::join(&app.ws(), &bob.token).await;
    let (mut m, _) = Ws::join(&app.ws(), &mallory.token).await;
    a.send("find_match", json!({}), None).await;
    a.expect("searching").await;
    b.send("find_match", json!({}), None).await;
    b.expect("searching").await;
    let sid = a.expect("match_found").await["session"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.expect("match_found").await;

    let rest = Rest::new(&app.http(), &mallory.token);
    let body = json!({"sessionId": sid});
    assert_eq!(
        rest.get(&format!("/api/chat/sessions/{sid}/messages"))
            .await
            .0,
        404
    );
    for (path, body) in [
        (
            "/api/chat/send-message",
            json!({"sessionId": sid, "content": "x", "clientMsgId": "m"}),
        ),
        ("/api/chat/reveal-request", body.clone()),
        (
            "/api/chat/reveal-respond",
            json!({"sessionId": sid, "accept": true}),
        ),
        ("/api/chat/end-session", body.clone()),
        (
            "/api/chat/rate-session",
            json!({"sessionId": sid, "rating": 1}),
        ),
    ] {
        let (status, err) = rest.post(path, body).await;
        assert_eq!(status, 404, "{path}: {err}");
        assert_eq!(err["error"]["code"], "NOT_FOUND");
    }
    for (kind, data) in [
        (
            "send_message",
            json!({"sessionId": sid, "content": "x", "clientMsgId": "m"}),
        ),
        ("typing_start", json!({"sessionId": sid})),
        ("reveal_request", json!({"sessionId": sid})),
        ("end_session", json!({"sessionId": sid})),
    ] {
        m.send(kind, data, Some(kind)).await;
        let err = m.next_frame().await;
        assert_eq!(err["type"], "error", "{kind}");
        assert_eq!(err["data"]["code"], "NOT_FOUND", "{kind}");
        assert_eq!(err["ref"], kind);
    }
    // The participants heard nothing of it.
    a.expect_silence(Duration::from_millis(500)).await;
    b.expect_silence(Duration::from_millis(200)).await;
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_keep_the_socket() {
    let app = App::start(&[]).await;
    let alice = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let (mut a, _) = Ws::join(&app.ws(), &alice.token).await;
    for (raw, reference, field) in [
        ("not json", None, None),
        (
            r#"{"type":"nope","data":{},"ref":"u"}"#,
            Some("u"),
            Some("type"),
        ),
        (
            r#"{"type":"send_message","data":{"sessionId":"x"},"ref":"w"}"#,
            Some("w"),
            Some("sessionId"),
        ),
        (
            r#"{"type":"typing_start","data":{"sessionId":"6f1c0b9e-0000-7000-8000-000000000000","extra":1},"ref":"e"}"#,
            Some("e"),
            Some("extra"),
        ),
    ] {
        a.send_raw(raw).await;
        let err = a.next_frame().await;
        assert_eq!(err["type"], "error", "{raw}");
        assert_eq!(err["data"]["code"], "VALIDATION_ERROR", "{raw}");
        assert_eq!(err["data"]["field"].as_str(), field, "{err}");
        if let Some(r) = reference {
            assert_eq!(err["ref"], r);
        }
    }
    // Empty and oversized content are validation errors naming no session leak.
    a.send(
        "send_message",
        json!({"sessionId": uuid::Uuid::now_v7(), "content": "   ", "clientMsgId": "c"}),
        Some("empty"),
    )
    .await;
    assert_eq!(a.next_frame().await["data"]["code"], "VALIDATION_ERROR");
    // Still alive.
    a.send("cancel_search", json!({}), Some("alive")).await;
    let ok = a.next_frame().await;
    assert_eq!(ok["type"], "search_cancelled");
    assert_eq!(ok["ref"], "alive");
    app.running.shutdown.cancel();
}

/// A burst of joins is answered in batches; every socket still gets its
/// own `connected`: its user, and its session or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_each_gets_its_own_connected() {
    let db = io_store::testing::postgres().await;
    let app = App::start_on(Some(&db.url), &[]).await;
    let mut expected = Vec::new();
    for _ in 0..8 {
        let dude = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
        let girl = make_user(app.store.as_ref(), &app.tokens, Gender::Girl).await;
        let (mut d, _) = Ws::join(&app.ws(), &dude.token).await;
        let (mut g, _) = Ws::join(&app.ws(), &girl.token).await;
        d.send("find_match", json!({}), None).await;
        d.expect("searching").await;
        g.send("find_match", json!({}), None).await;
        let sid = d.wait_for("match_found").await["data"]["session"]["id"].clone();
        assert!(sid.is_string(), "matched");
        g.wait_for("match_found").await;
        d.close().await;
        g.close().await;
        expected.push((dude.clone(), sid.clone(), Some(girl.alias.clone())));
        expected.push((girl, sid, Some(dude.alias)));
    }
    for i in 0..16 {
        let gender = if i % 2 == 0 {
            Gender::Dude
        } else {
            Gender::Girl
        };
        let idle = make_user(app.store.as_ref(), &app.tokens, gender).await;
        expected.push((idle, serde_json::Value::Null, None));
    }

    let url = app.ws();
    let joins = expected.iter().map(|(user, _, _)| {
        let (url, token) = (url.clone(), user.token.clone());
        tokio::spawn(async move { Ws::join(&url, &token).await })
    });
    let connected = futures::future::join_all(joins).await;
    for ((user, sid, partner), joined) in expected.iter().zip(connected) {
        let (ws, c) = joined.expect("join task");
        assert_eq!(c["user"]["id"], user.id.0.to_string(), "{}", user.alias);
        assert_eq!(c["session"]["id"], *sid, "{}", user.alias);
        if let Some(partner) = partner {
            assert_eq!(c["session"]["partner"]["alias"], partner.as_str());
        }
        ws.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_learns_whether_the_partner_is_still_there() {
    let app = App::start(&[]).await;
    let Pair { alice, a, b, .. } = Pair::matched(&app).await;

    // Alice drops and comes back while Bob is there...
    a.close().await;
    let (a, connected) = Ws::join(&app.ws(), &alice.token).await;
    assert_eq!(connected["session"]["partnerOnline"], true, "{connected}");

    // ...then Bob leaves while she is away: she must not think him present.
    a.close().await;
    b.close().await;
    let rest = Rest::new(&app.http(), &alice.token);
    eventually("Bob's presence to go", || async {
        let (_, body) = rest.get("/api/chat/current-session").await;
        body["session"]["partnerOnline"] == false
    })
    .await;
    let (a, connected) = Ws::join(&app.ws(), &alice.token).await;
    assert_eq!(connected["session"]["partnerOnline"], false, "{connected}");
    a.close().await;
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_to_reveal_while_the_partner_asks_is_a_yes() {
    let app = App::start(&[]).await;
    let Pair {
        alice,
        bob,
        mut a,
        mut b,
        sid,
    } = Pair::matched(&app).await;

    // Alice asks; Bob, who had not seen it yet, asks too.
    a.send("reveal_request", json!({"sessionId": sid}), None)
        .await;
    b.wait_for("reveal_requested").await;
    b.send("reveal_request", json!({"sessionId": sid}), Some("mine"))
        .await;
    let answer = b.next_frame().await;
    assert_eq!(answer["type"], "reveal_response", "{answer}");
    assert_eq!(answer["ref"], "mine");
    assert_eq!(answer["data"]["status"], "accepted");
    assert_eq!(
        answer["data"]["identities"]["partner"]["realName"],
        alice.real_name
    );
    let told = a.wait_for("reveal_response").await;
    assert_eq!(told["data"]["status"], "accepted");
    assert_eq!(
        told["data"]["identities"]["partner"]["realName"],
        bob.real_name
    );

    // Once revealed, asking again is a conflict.
    a.send("reveal_request", json!({"sessionId": sid}), Some("again"))
        .await;
    let again = a.next_frame().await;
    assert_eq!(again["data"]["code"], "CONFLICT", "{again}");
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_asks_to_reveal_and_then_it_is_up_to_the_partner() {
    let app = App::start(&[]).await;
    let Pair {
        alice,
        bob,
        mut a,
        mut b,
        sid,
    } = Pair::matched(&app).await;
    let (alice_rest, bob_rest) = (
        Rest::new(&app.http(), &alice.token),
        Rest::new(&app.http(), &bob.token),
    );
    // What each one's session view says of asks left (a reload reads it).
    async fn asks_left(rest: &Rest) -> serde_json::Value {
        let (_, body) = rest.get("/api/chat/current-session").await;
        body["session"]["reveal"]["asksLeft"].clone()
    }
    assert_eq!(asks_left(&alice_rest).await, json!(null));

    for asked in 1..=3 {
        a.send("reveal_request", json!({"sessionId": sid}), None)
            .await;
        b.wait_for("reveal_requested").await;
        b.send(
            "reveal_respond",
            json!({"sessionId": sid, "accept": false}),
            None,
        )
        .await;
        assert_eq!(
            b.wait_for("reveal_response").await["data"]["status"],
            "declined"
        );
        assert_eq!(
            a.wait_for("reveal_response").await["data"]["status"],
            "declined"
        );
        assert_eq!(asks_left(&alice_rest).await, json!(3 - asked));
        assert_eq!(
            asks_left(&bob_rest).await,
            json!(null),
            "only the asker's view"
        );
    }
    a.send("reveal_request", json!({"sessionId": sid}), Some("fourth"))
        .await;
    let refused = a.next_frame().await;
    assert_eq!(refused["data"]["code"], "CONFLICT", "{refused}");
    assert_eq!(refused["ref"], "fourth");
    b.expect_silence(Duration::from_millis(300)).await;

    // Bob may still ask; Alice asking then is her yes.
    b.send("reveal_request", json!({"sessionId": sid}), None)
        .await;
    a.wait_for("reveal_requested").await;
    a.send("reveal_request", json!({"sessionId": sid}), Some("yes"))
        .await;
    let answer = a.next_frame().await;
    assert_eq!(answer["ref"], "yes", "{answer}");
    assert_eq!(answer["data"]["status"], "accepted");
    app.running.shutdown.cancel();
}

/// Alice (a dude) and Bob (a girl), each on a socket of the app, matched.
struct Pair {
    alice: TestUser,
    bob: TestUser,
    a: Ws,
    b: Ws,
    sid: String,
}

impl Pair {
    async fn matched(app: &App) -> Pair {
        let alice = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
        let bob = make_user(app.store.as_ref(), &app.tokens, Gender::Girl).await;
        let (mut a, _) = Ws::join(&app.ws(), &alice.token).await;
        let (mut b, _) = Ws::join(&app.ws(), &bob.token).await;
        let sid = pair_up(&mut a, &mut b).await;
        Pair {
            alice,
            bob,
            a,
            b,
            sid,
        }
    }
}
