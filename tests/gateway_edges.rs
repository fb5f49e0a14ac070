//! Close codes, limits and the drain of a gateway (in-process `io all`).

mod common;

use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use io_domain::types::Gender;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_joins_are_closed_with_4401() {
    let app = App::start(&[]).await;
    // A forged token.
    let mut ws = Ws::open(&app.ws()).await;
    ws.send("join", json!({"token": "not-a-jwt"}), None).await;
    assert_eq!(ws.expect_close().await, 4401);
    // A token signed with another key.
    let other = io_auth::Tokens::new(
        b"another-secret-another-secret-xx",
        &[],
        io_auth::Tokens::DEFAULT_ACCESS_TTL,
    );
    let mut ws = Ws::open(&app.ws()).await;
    ws.send(
        "join",
        json!({"token": other.issue_access(io_domain::types::UserId::new())}),
        None,
    )
    .await;
    assert_eq!(ws.expect_close().await, 4401);
    // Any other first frame.
    let user = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let mut ws = Ws::open(&app.ws()).await;
    ws.send("find_match", json!({}), None).await;
    assert_eq!(ws.expect_close().await, 4401);
    // The right token still works afterwards.
    let (ws, connected) = Ws::join(&app.ws(), &user.token).await;
    assert_eq!(connected["user"]["id"], user.id.to_string());
    ws.close().await;
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_with_4408() {
    let app = App::start(&[]).await;
    let mut ws = Ws::open(&app.ws()).await;
    let started = std::time::Instant::now();
    let code = tokio::time::timeout(Duration::from_secs(15), ws.expect_close())
        .await
        .unwrap();
    assert_eq!(code, 4408);
    assert!(started.elapsed() >= Duration::from_secs(9));
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_closed_with_4413() {
    let app = App::start(&[]).await;
    let user = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let (mut ws, _) = Ws::join(&app.ws(), &user.token).await;
    let big = "x".repeat(70 * 1024);
    ws.send_raw(&format!(
        r#"{{"type":"typing_start","data":{{"sessionId":"{big}"}}}}"#
    ))
    .await;
    assert_eq!(ws.expect_close().await, 4413);
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_get_rate_limited_then_closed_with_4429() {
    // The bucket counts events as the socket's reader takes them, one at a
    // time. A low rate keeps this a flood even when a busy machine handles
    // each `cancel_search` slowly (at the default 20/s, handling slower
    // than 50 ms an event refills the bucket as fast as it drains).
    let app = App::start(&["--limit-socket-events-per-second", "2"]).await;
    let user = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let (mut ws, _) = Ws::join(&app.ws(), &user.token).await;
    for i in 0..200 {
        ws.send("cancel_search", json!({}), Some(&format!("c{i}")))
            .await;
    }
    let mut limited = 0;
    let code = loop {
        let msg = tokio::time::timeout(WAIT, ws_next(&mut ws))
            .await
            .expect("events");
        match msg {
            Some(v) if v["type"] == "error" => {
                assert_eq!(v["data"]["code"], "RATE_LIMITED");
                limited += 1;
            }
            Some(_) => {}
            None => break ws.expect_close().await,
        }
    };
    assert!(limited >= 1, "an error before the close");
    assert_eq!(code, 4429);
    app.running.shutdown.cancel();
}

/// The next text frame as JSON, or `None` when a close frame arrives.
async fn ws_next(ws: &mut Ws) -> Option<serde_json::Value> {
    ws.next_frame_or_close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_upgrades_are_refused() {
    let app = App::start(&[]).await;
    let mut req = app.ws().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    // The public URL's origin is allowed.
    let mut req = app.ws().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "http://localhost:8080".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    app.running.shutdown.cancel();
}

type RawWs = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A socket with a 4 KiB receive buffer, joined: the peer that stops reading.
async fn join_with_tiny_buffer(app: &App, token: &str) -> RawWs {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(common::addr_of(&app.http())).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(app.ws(), tcp)
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"type":"join","data":{"token": token}}).to_string(),
    ))
    .await
    .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_closed_with_4008() {
    let app = App::start(&[
        "--limit-messages-per-minute",
        "1000000",
        "--limit-message-burst",
        "100000",
        "--limit-socket-events-per-second",
        "100000",
    ])
    .await;
    let alice = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let bob = make_user(app.store.as_ref(), &app.tokens, Gender::Girl).await;
    let (mut a, _) = Ws::join(&app.ws(), &alice.token).await;
    // Bob's socket has a tiny receive buffer and will stop reading.
    let mut b = join_with_tiny_buffer(&app, &bob.token).await;
    b.send(Message::text(
        json!({"type":"find_match","data":{}}).to_string(),
    ))
    .await
    .unwrap();
    a.send("find_match", json!({}), None).await;
    a.expect("searching").await;
    let sid = a.expect("match_found").await["session"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Alice floods; Bob never reads.
    let text = "y".repeat(1900);
    for i in 0..3000 {
        a.send(
            "send_message",
            json!({"sessionId": sid, "content": text, "clientMsgId": format!("f{i}")}),
            None,
        )
        .await;
    }
    // Alice keeps being served; Bob gets closed with 4008 (seen once he
    // reads through what his socket already holds).
    a.wait_for("message_received").await;
    let metrics_url = format!("http://{}/metrics", app.running.metrics_addr);
    eventually("a slow-consumer close", || {
        let url = metrics_url.clone();
        async move {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            text.lines().any(|l| {
                l.starts_with("io_gateway_slow_consumer_closes_total") && !l.ends_with(" 0")
            })
        }
    })
    .await;
    let mut code = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while code.is_none() && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(30), b.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => code = Some(u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    assert_eq!(code, Some(4008));
    let metrics = reqwest::get(format!("http://{}/metrics", app.running.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("io_gateway_slow_consumer_closes_total"));
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_takes_nothing_for_the_write_timeout_is_dropped_as_too_slow() {
    let app = App::start(&[
        "--write-timeout-secs",
        "1",
        "--limit-socket-events-per-second",
        "100000",
    ])
    .await;
    let bob = make_user(app.store.as_ref(), &app.tokens, Gender::Girl).await;
    // A tiny receive buffer, and Bob never reads: answers pile up in the
    // server's socket buffer, not in his send queue (far below its 256).
    let mut b = join_with_tiny_buffer(&app, &bob.token).await;
    // Each answer echoes its 60 KiB `ref`: 60 of them are 3.6 MB.
    let big_ref = "r".repeat(60 * 1024);
    for _ in 0..60 {
        b.send(Message::text(
            json!({"type":"cancel_search","data":{},"ref": big_ref}).to_string(),
        ))
        .await
        .unwrap();
    }
    let metrics_url = format!("http://{}/metrics", app.running.metrics_addr);
    eventually("a slow-consumer drop", || {
        let url = metrics_url.clone();
        async move {
            let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
            let count = |name: &str, label: &str| {
                text.lines()
                    .filter(|l| l.starts_with(name) && l.contains(label))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
            };
            count("io_gateway_slow_consumer_closes_total", "") == 1.0
                && count("io_gateway_disconnects_total", "reason=\"slow_consumer\"") == 1.0
        }
    })
    .await;
    // Nothing could get through, the close frame neither: Bob reads what
    // his socket holds, then the connection just ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(20), b.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => panic!("no close frame expected: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_sockets_with_1012() {
    let app = App::start(&[]).await;
    let mut sockets = Vec::new();
    for g in [Gender::Dude, Gender::Girl, Gender::Dude] {
        let u = make_user(app.store.as_ref(), &app.tokens, g).await;
        sockets.push(Ws::join(&app.ws(), &u.token).await.0);
    }
    app.running.shutdown.cancel();
    for mut ws in sockets {
        assert_eq!(ws.expect_close().await, 1012);
    }
    tokio::time::timeout(Duration::from_secs(30), app.running.wait())
        .await
        .expect("the role exits within the drain bound");
}
