//! Shared helpers of the end-to-end tests: start real roles (in-process or
//! as `io` processes), make users, and talk to them over real sockets.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use io::config::{Cli, Role};
use io_auth::Tokens;
use io_domain::model::ProfileUpdate;
use io_domain::types::{Alias, CardText, Email, Gender, Seeking, UserId};
use io_domain::Store;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// `io all` started in this process on free ports with its own SQLite file.
pub struct App {
    pub running: io::app::Running,
    pub store: Arc<dyn Store>,
    pub tokens: Tokens,
    _dir: tempdir::TempDir,
}

pub mod tempdir {
    /// A directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("io-test-{}", uuid::Uuid::now_v7().simple()));
            std::fs::create_dir_all(&p).expect("temp dir");
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl App {
    /// Start `io all` (SQLite) with extra flags.
    pub async fn start(extra: &[&str]) -> App {
        App::start_on(None, extra).await
    }

    /// Start `io all` on the given database (`None`: a fresh SQLite file).
    pub async fn start_on(database_url: Option<&str>, extra: &[&str]) -> App {
        let dir = tempdir::TempDir::new();
        let db = match database_url {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}/io.db", dir.0.display()),
        };
        let mut args = vec![
            "io",
            "all",
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--database-url",
            &db,
            "--jwt-secret",
            SECRET,
            "--public-url",
            "http://localhost:8080",
        ];
        args.extend_from_slice(extra);
        let (role, settings) = Cli::try_parse_from(args).expect("valid flags").into_role();
        assert_eq!(role, Role::All);
        let running = io::app::start(role, settings).await.expect("io all starts");
        let store = io_store::connect(&db).await.expect("store");
        App {
            running,
            store,
            tokens: Tokens::new(SECRET.as_bytes(), &[], Tokens::DEFAULT_ACCESS_TTL),
            _dir: dir,
        }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.running.http_addr)
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/ws", self.running.http_addr)
    }
}

use clap::Parser;

/// Both users ask for a match and are paired with each other; the id of
/// their session once both have seen `match_found`.
pub async fn pair_up(a: &mut Ws, b: &mut Ws) -> String {
    a.send("find_match", json!({}), None).await;
    b.send("find_match", json!({}), None).await;
    let sid = a.wait_for("match_found").await["data"]["session"]["id"]
        .as_str()
        .expect("a session id")
        .to_owned();
    b.wait_for("match_found").await;
    sid
}

/// A signed-in user made directly in the store.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: UserId,
    pub email: String,
    pub alias: String,
    pub real_name: String,
    pub token: String,
}

pub async fn make_user(store: &dyn Store, tokens: &Tokens, gender: Gender) -> TestUser {
    let n = uuid::Uuid::now_v7().simple().to_string();
    let short = &n[n.len() - 10..];
    let email = Email::parse(&format!("u{short}@example.org")).unwrap();
    let alias = Alias::parse(&format!("A{short}")).unwrap();
    let now = chrono::Utc::now();
    let user = store.upsert_user(&email, &alias, now).await.expect("user");
    let real_name = format!("Real Name {short}");
    store
        .update_profile(
            user.id,
            &ProfileUpdate {
                gender: Some(gender),
                seeking: Some(Seeking::default_for(Some(gender))),
                real_name: Some(CardText::parse("realName", &real_name, 80).unwrap()),
                details: Some(
                    CardText::parse("details", &format!("details of {short}"), 500).unwrap(),
                ),
                reveal_email: Some(true),
                ..Default::default()
            },
            now,
        )
        .await
        .expect("profile");
    TestUser {
        id: user.id,
        email: email.to_string(),
        alias: alias.to_string(),
        real_name,
        token: tokens.issue_access(user.id),
    }
}

/// A WebSocket client that records every frame it saw.
pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every text frame received, in order.
    pub seen: Vec<Value>,
    /// The close code, once a close frame was read.
    pub last_close: Option<u16>,
}

pub const WAIT: Duration = Duration::from_secs(10);

impl Ws {
    pub async fn open(url: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        Ws {
            stream,
            seen: Vec::new(),
            last_close: None,
        }
    }

    /// Open and join; returns the client and the `connected` data.
    pub async fn join(url: &str, token: &str) -> (Ws, Value) {
        let mut ws = Ws::open(url).await;
        ws.send("join", json!({ "token": token }), None).await;
        let connected = ws.expect("connected").await;
        (ws, connected)
    }

    /// `send_message` in `session`, without a `ref`.
    pub async fn send_message(&mut self, session: &str, content: &str, client_msg_id: &str) {
        let data = json!({"sessionId": session, "content": content, "clientMsgId": client_msg_id});
        self.send("send_message", data, None).await;
    }

    pub async fn send(&mut self, kind: &str, data: Value, reference: Option<&str>) {
        let mut frame = json!({ "type": kind, "data": data });
        if let Some(r) = reference {
            frame["ref"] = json!(r);
        }
        self.send_raw(&frame.to_string()).await;
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .expect("ws send");
    }

    /// The next event that is not an `online_count`, with its full frame.
    pub async fn next_frame(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("an event within the wait")
                .expect("socket open")
                .expect("ws read");
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).expect("server sends JSON");
                self.seen.push(v.clone());
                if v["type"] != "online_count" {
                    return v;
                }
            }
        }
    }

    /// The next text frame (not `online_count`), or `None` once the server
    /// closed (`expect_close` then returns the code).
    pub async fn next_frame_or_close(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("an event within the wait");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).expect("server sends JSON");
                    self.seen.push(v.clone());
                    if v["type"] != "online_count" {
                        return Some(v);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    self.last_close = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                    return None;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    self.last_close = Some(1006);
                    return None;
                }
            }
        }
    }

    /// Wait for the next event; it must be of `kind`. Returns its data.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next_frame().await;
        assert_eq!(frame["type"], kind, "expected `{kind}`, got {frame}");
        frame["data"].clone()
    }

    /// Skip events until one of `kind` arrives. Returns its full frame.
    pub async fn wait_for(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Wait for the server to close; returns the close code.
    pub async fn expect_close(&mut self) -> u16 {
        if let Some(code) = self.last_close {
            return code;
        }
        loop {
            // Longer than any server-side timeout (the join timeout is 10 s).
            let msg = tokio::time::timeout(2 * WAIT, self.stream.next())
                .await
                .expect("close within the wait");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(Message::Text(t))) => {
                    self.seen
                        .push(serde_json::from_str(&t).unwrap_or(Value::Null));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return 1006,
            }
        }
    }

    /// No event other than `online_count` arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["type"], "online_count", "unexpected event {v}");
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("socket ended: {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self
            .stream
            .close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            }))
            .await;
    }
}

/// A REST client with a bearer token.
pub struct Rest {
    pub base: String,
    pub token: String,
    client: reqwest::Client,
}

impl Rest {
    pub fn new(base: &str, token: &str) -> Rest {
        Rest {
            base: base.to_owned(),
            token: token.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("http");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("http");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// Wait until `f` is true, polling.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every frame a user saw, as one string, to search for leaks.
pub fn transcript(frames: &[Value]) -> String {
    frames
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").parse().expect("addr")
}

/// The session's history holds every acknowledged message id, and its
/// `seq`s run 1, 2, 3… without a hole.
pub async fn assert_history_holds(rest: &Rest, session: &str, acked: &[String]) {
    let (status, history) = rest
        .get(&format!(
            "/api/chat/sessions/{session}/messages?after=0&limit=200"
        ))
        .await;
    assert_eq!(status, 200, "{history}");
    let messages = history["messages"].as_array().expect("a message list");
    let stored: Vec<&str> = messages.iter().map(|m| m["id"].as_str().unwrap()).collect();
    for id in acked {
        assert!(
            stored.contains(&id.as_str()),
            "acknowledged message {id} lost"
        );
    }
    let seqs: Vec<i64> = messages
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "no holes"
    );
}
