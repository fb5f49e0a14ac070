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
    // A well-signed token of a user the database does not know.
    let mut ws = Ws::open(&app.ws()).await;
    let stranger = app.tokens.issue_access(io_domain::types::UserId::new());
    ws.send("join", json!({ "token": stranger }), None).await;
    assert_eq!(ws.expect_close().await, 4401);
    let (status, body) = Rest::new(&app.http(), &stranger)
        .get("/api/chat/current-session")
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("UNAUTHORIZED"))
    );
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

/// A WebSocket spoken byte by byte, to send what no client library would.
struct Wire {
    tcp: tokio::net::TcpStream,
    buf: Vec<u8>,
}

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const CONT: u8 = 0x0;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

impl Wire {
    async fn open(app: &App) -> Wire {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(common::addr_of(&app.http()))
            .await
            .unwrap();
        let request = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                       Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 1024];
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "upgrade answered");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        assert!(buf.starts_with(b"HTTP/1.1 101"), "upgraded");
        Wire {
            tcp,
            buf: buf.split_off(end),
        }
    }

    /// One frame: `head` is FIN/RSV bits and opcode; masked unless told.
    async fn frame(&mut self, head: u8, payload: &[u8], masked: bool) {
        use tokio::io::AsyncWriteExt;
        self.tcp
            .write_all(&Self::encode(head, payload, masked))
            .await
            .unwrap();
    }

    fn encode(head: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mask_bit = if masked { 0x80 } else { 0 };
        let mut out = vec![head];
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        if masked {
            let key = [0x12, 0x34, 0x56, 0x78];
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    /// The next frame from the server: (opcode, payload).
    async fn next(&mut self) -> (u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 2 {
                let (len, at) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    126 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let opcode = self.buf[0] & 0x0F;
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return (opcode, payload);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.tcp.read(&mut chunk))
                .await
                .expect("a frame within the wait")
                .unwrap();
            assert!(n > 0, "the server ended the stream without a close frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text frame as JSON, skipping `online_count`.
    async fn event(&mut self) -> serde_json::Value {
        loop {
            let (opcode, payload) = self.next().await;
            assert_eq!(opcode, TEXT, "a text frame");
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            if v["type"] != "online_count" {
                return v;
            }
        }
    }

    /// Read until the server's close frame; its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let (opcode, payload) = self.next().await;
            if opcode == CLOSE {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    }

    async fn join(app: &App, token: &str) -> Wire {
        let mut wire = Wire::open(app).await;
        let join = json!({"type": "join", "data": {"token": token}}).to_string();
        wire.frame(FIN | TEXT, join.as_bytes(), true).await;
        assert_eq!(wire.event().await["type"], "connected");
        wire
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_may_follow_pings_and_come_in_fragments() {
    let app = App::start(&[]).await;
    let user = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let mut wire = Wire::open(&app).await;
    wire.frame(FIN | PING, b"hello", true).await;
    assert_eq!(wire.next().await, (PONG, b"hello".to_vec()));
    wire.frame(FIN | PONG, b"", true).await;
    let join = json!({"type": "join", "data": {"token": user.token}, "ref": "j1"}).to_string();
    let (first, rest) = join.as_bytes().split_at(10);
    wire.frame(TEXT, first, true).await;
    wire.frame(FIN | CONT, rest, true).await;
    let connected = wire.event().await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(
        connected["ref"], "j1",
        "the answer to `join` carries its ref"
    );
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_break_the_protocol_are_closed_with_1002_or_1007() {
    let app = App::start(&[]).await;
    let user = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let ping = json!({"type": "cancel_search", "data": {}}).to_string();
    let cases: [(&str, Vec<Vec<u8>>, u16); 9] = [
        (
            "a reserved bit",
            vec![Wire::encode(FIN | 0x40 | TEXT, ping.as_bytes(), true)],
            1002,
        ),
        (
            "an unmasked frame",
            vec![Wire::encode(FIN | TEXT, ping.as_bytes(), false)],
            1002,
        ),
        (
            "a continuation of nothing",
            vec![Wire::encode(FIN | CONT, b"x", true)],
            1002,
        ),
        (
            "a new message inside a fragmented one",
            vec![
                Wire::encode(TEXT, b"{\"type\":", true),
                Wire::encode(FIN | TEXT, ping.as_bytes(), true),
            ],
            1002,
        ),
        (
            "text that is not UTF-8, in fragments",
            vec![
                Wire::encode(TEXT, b"\xff", true),
                Wire::encode(FIN | CONT, b"\xfe", true),
            ],
            1007,
        ),
        (
            "a close with a code no peer may send",
            vec![Wire::encode(FIN | CLOSE, &999u16.to_be_bytes(), true)],
            1002,
        ),
        (
            "a close whose reason is not UTF-8",
            vec![Wire::encode(FIN | CLOSE, b"\x03\xe8\xff", true)],
            1007,
        ),
        (
            "a pong over 125 bytes",
            vec![Wire::encode(FIN | PONG, &[b'x'; 126], true)],
            1002,
        ),
        (
            "an unmasked frame followed by more than the server will read",
            vec![
                Wire::encode(FIN | TEXT, ping.as_bytes(), false),
                vec![0x81; 256 * 1024],
            ],
            1002,
        ),
    ];
    for (what, frames, code) in cases {
        let mut wire = Wire::join(&app, &user.token).await;
        use tokio::io::AsyncWriteExt;
        wire.tcp.write_all(&frames.concat()).await.unwrap();
        assert_eq!(wire.close_code().await, code, "{what}");
    }
    // The user can still come back.
    let (ws, _) = Ws::join(&app.ws(), &user.token).await;
    ws.close().await;
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_binary_message_is_refused_once_and_the_socket_stays() {
    let app = App::start(&[]).await;
    let user = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let mut wire = Wire::join(&app, &user.token).await;
    wire.frame(BINARY, b"ab", true).await;
    wire.frame(CONT, b"cd", true).await;
    wire.frame(FIN | CONT, b"ef", true).await;
    let refused = wire.event().await;
    assert_eq!(refused["data"]["code"], "VALIDATION_ERROR", "{refused}");
    let cancel = json!({"type": "cancel_search", "data": {}, "ref": "after"}).to_string();
    wire.frame(FIN | TEXT, cancel.as_bytes(), true).await;
    let answer = wire.event().await;
    assert_eq!(answer["ref"], "after", "{answer}");
    // Its fragments together are held to the size limit as text is.
    let chunk = vec![b'x'; 40 * 1024];
    wire.frame(BINARY, &chunk, true).await;
    wire.frame(FIN | CONT, &chunk, true).await;
    assert_eq!(wire.close_code().await, 4413);
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_in_endless_fragments_is_refused() {
    let app = App::start(&[]).await;
    let user = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let mut wire = Wire::open(&app).await;
    let join = json!({"type": "join", "data": {"token": user.token}}).to_string();
    let mut frames = Wire::encode(TEXT, b"", true);
    for _ in 0..20 {
        frames.extend(Wire::encode(CONT, b"", true));
    }
    frames.extend(Wire::encode(FIN | CONT, join.as_bytes(), true));
    use tokio::io::AsyncWriteExt;
    wire.tcp.write_all(&frames).await.unwrap();
    assert_eq!(wire.close_code().await, 4401);
    app.running.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_pings_or_binary_frames_are_closed_with_4429() {
    let app = App::start(&["--limit-socket-events-per-second", "2"]).await;
    let user = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    for head in [FIN | PING, FIN | BINARY] {
        let mut wire = Wire::join(&app, &user.token).await;
        let flood: Vec<u8> = (0..300)
            .flat_map(|_| Wire::encode(head, b"x", true))
            .collect();
        use tokio::io::AsyncWriteExt;
        wire.tcp.write_all(&flood).await.unwrap();
        assert_eq!(wire.close_code().await, 4429, "flood of opcode {head:#x}");
    }
    app.running.shutdown.cancel();
}
