//! The cluster as it runs in production: `io gateway` ×2, `io api` and
//! `io matcher` processes against the machine's Postgres and Redis. Users
//! on different nodes chat, a user's tabs on two nodes each get every
//! event, a killed gateway loses no acknowledged message, a gateway that
//! fell further behind its inbox than the inbox keeps reconnects its
//! sockets, and a killed or paused matcher leader is replaced.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use io_auth::Tokens;
use io_domain::model::Envelope;
use io_domain::ports::Bus;
use io_domain::types::{Gender, NodeId, UserId};
use serde_json::json;

struct Proc {
    name: String,
    child: Child,
    http: SocketAddr,
    metrics: SocketAddr,
}

impl Proc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {}", self.name);
    }

    fn ws(&self) -> String {
        format!("ws://{}/ws", self.http)
    }

    async fn metrics(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.metrics)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn redis_url() -> String {
    std::env::var("IO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

struct Cluster {
    db: io_store::testing::TestDb,
    prefix: String,
    tokens: Tokens,
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster {
            db: io_store::testing::postgres().await,
            prefix: format!("iotest-{}", uuid::Uuid::now_v7().simple()),
            tokens: Tokens::new(SECRET.as_bytes(), &[], Tokens::DEFAULT_ACCESS_TTL),
        }
    }

    async fn spawn(&self, role: &str, name: &str) -> Proc {
        let http = free_addr();
        let metrics = free_addr();
        let child = Command::new(env!("CARGO_BIN_EXE_io"))
            .arg(role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("IO_HTTP_ADDR", http.to_string())
            .env("IO_METRICS_ADDR", metrics.to_string())
            .env("IO_DATABASE_URL", &self.db.url)
            .env("IO_REDIS_URL", redis_url())
            .env("IO_REDIS_PREFIX", &self.prefix)
            .env("IO_JWT_SECRET", SECRET)
            .env("IO_NODE_ID", name)
            .env("IO_MATCHER_LEASE_MS", "2000")
            .env("IO_DATABASE_POOL", "4")
            .env("IO_LIMIT_MESSAGES_PER_MINUTE", "6000")
            .env("IO_LIMIT_MESSAGE_BURST", "200")
            .env("IO_WEB_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/web"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn io");
        let p = Proc {
            name: name.into(),
            child,
            http,
            metrics,
        };
        let url = format!("http://{http}/readyz");
        eventually(&format!("{name} ready"), || {
            let url = url.clone();
            async move { matches!(reqwest::get(&url).await, Ok(r) if r.status() == 200) }
        })
        .await;
        p
    }
}

async fn is_leader(p: &Proc) -> bool {
    p.metrics()
        .await
        .lines()
        .any(|l| l.starts_with("io_matcher_is_leader") && l.trim_end().ends_with(" 1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_different_nodes_chat_and_every_tab_gets_every_event() {
    let c = Cluster::new().await;
    let g1 = c.spawn("gateway", "gw-1").await;
    let g2 = c.spawn("gateway", "gw-2").await;
    let api = c.spawn("api", "api-1").await;
    let _m = c.spawn("matcher", "matcher-1").await;
    let alice = make_user(c.db.store.as_ref(), &c.tokens, Gender::Dude).await;
    let bob = make_user(c.db.store.as_ref(), &c.tokens, Gender::Girl).await;

    let (mut a1, hello) = Ws::join(&g1.ws(), &alice.token).await;
    assert_eq!(hello["node"], "gw-1");
    let (mut a2, hello) = Ws::join(&g2.ws(), &alice.token).await; // a second tab, other node
    assert_eq!(hello["node"], "gw-2");
    let (mut b, _) = Ws::join(&g2.ws(), &bob.token).await;

    a1.send("find_match", json!({}), None).await;
    a1.expect("searching").await;
    a2.expect("searching").await;
    b.send("find_match", json!({}), None).await;
    b.expect("searching").await;
    let sid = a1.expect("match_found").await["session"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(a2.expect("match_found").await["session"]["id"], sid);
    assert_eq!(b.expect("match_found").await["session"]["id"], sid);

    for i in 0..20 {
        a1.send(
            "send_message",
            json!({"sessionId": sid, "content": format!("a{i}"), "clientMsgId": format!("a{i}")}),
            Some("r"),
        )
        .await;
        let ack = a1.expect("message_received").await;
        assert_eq!(ack["message"]["isMe"], true);
        assert_eq!(
            a2.expect("message_received").await["message"]["id"],
            ack["message"]["id"]
        );
        assert_eq!(
            b.expect("message_received").await["message"]["content"],
            format!("a{i}")
        );
        b.send_message(&sid, &format!("b{i}"), &format!("b{i}"))
            .await;
        b.expect("message_received").await;
        assert_eq!(
            a1.expect("message_received").await["message"]["content"],
            format!("b{i}")
        );
        assert_eq!(
            a2.expect("message_received").await["message"]["content"],
            format!("b{i}")
        );
    }
    b.send("typing_start", json!({"sessionId": sid}), None)
        .await;
    a1.expect("user_typing").await;
    a2.expect("user_typing").await;

    let rest = Rest::new(&format!("http://{}", api.http), &alice.token);
    let (status, history) = rest
        .get(&format!(
            "/api/chat/sessions/{sid}/messages?after=0&limit=200"
        ))
        .await;
    assert_eq!(status, 200);
    let seqs: Vec<i64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());

    // Closing one tab is not leaving; closing the last one is.
    a2.close().await;
    b.expect_silence(Duration::from_millis(800)).await;
    a1.close().await;
    b.expect("user_left").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateway_loses_no_acknowledged_message() {
    let c = Cluster::new().await;
    let g1 = c.spawn("gateway", "gw-1").await;
    let g2 = c.spawn("gateway", "gw-2").await;
    let api = c.spawn("api", "api-1").await;
    let _m = c.spawn("matcher", "matcher-1").await;
    let alice = make_user(c.db.store.as_ref(), &c.tokens, Gender::Dude).await;
    let bob = make_user(c.db.store.as_ref(), &c.tokens, Gender::Girl).await;
    let (mut a, _) = Ws::join(&g1.ws(), &alice.token).await;
    let (mut b, _) = Ws::join(&g2.ws(), &bob.token).await;
    let sid = pair_up(&mut a, &mut b).await;

    let mut acked = Vec::new();
    for i in 0..10 {
        a.send_message(&sid, &format!("m{i}"), &format!("m{i}"))
            .await;
        acked.push(
            a.expect("message_received").await["message"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Fire more without waiting, then kill the node holding Alice.
    for i in 10..30 {
        a.send_message(&sid, &format!("m{i}"), &format!("m{i}"))
            .await;
    }
    while let Some(frame) = tokio::time::timeout(Duration::from_millis(30), a.next_frame_or_close())
        .await
        .ok()
        .flatten()
    {
        if frame["type"] == "message_received" {
            acked.push(frame["data"]["message"]["id"].as_str().unwrap().to_owned());
        }
    }
    g1.signal("KILL");
    drop(g1);

    // Alice comes back through the other node and finds her session.
    let (mut a, hello) = Ws::join(&g2.ws(), &alice.token).await;
    assert_eq!(hello["node"], "gw-2");
    assert_eq!(hello["session"]["id"], sid);
    assert_eq!(hello["session"]["status"], "active");
    let rest = Rest::new(&format!("http://{}", api.http), &alice.token);
    assert_history_holds(&rest, &sid, &acked).await;
    // And the chat goes on.
    a.send_message(&sid, "back", "back").await;
    a.expect("message_received").await;
    assert_eq!(
        b.wait_for("message_received").await["data"]["message"]["content"]
            .as_str()
            .map(|s| s.starts_with('m') || s == "back"),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_behind_its_inbox_cap_reconnects_its_sockets() {
    let c = Cluster::new().await;
    let g = c.spawn("gateway", "gw-gap").await;
    let alice = make_user(c.db.store.as_ref(), &c.tokens, Gender::Dude).await;
    let (mut a, _) = Ws::join(&g.ws(), &alice.token).await;

    // While the node is paused, more envelopes than its inbox keeps arrive
    // (for nobody here, and past re-routing): it cannot have read the oldest.
    g.signal("STOP");
    let bus = io_bus::RedisBus::connect(&redis_url(), &c.prefix)
        .await
        .unwrap();
    let node = NodeId("gw-gap".into());
    let envelope = Envelope {
        to: UserId::new(),
        skip: None,
        at_ms: 0,
        hops: 1,
        frame: "{}".into(),
    };
    let batch = vec![(node.clone(), envelope); 5_000];
    for _ in 0..(io_bus::INBOX_CAP + 5_000) / 5_000 {
        bus.publish(&batch).await.unwrap();
    }
    g.signal("CONT");

    // The node finds the gap and closes its sockets with 1012, so clients
    // reconnect and catch up from the store.
    assert_eq!(a.expect_close().await, 1012);
    let metrics = g.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("io_gateway_inbox_gaps_total") && l.ends_with(" 1")),
        "one gap counted:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("inbox"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The node itself goes on: the same user joins it again.
    let (_a, hello) = Ws::join(&g.ws(), &alice.token).await;
    assert_eq!(hello["node"], "gw-gap");
    let _ = bus.drop_inbox(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_or_paused_matcher_leader_is_replaced() {
    let c = Cluster::new().await;
    let g = c.spawn("gateway", "gw-1").await;
    let m1 = c.spawn("matcher", "matcher-1").await;
    let m2 = c.spawn("matcher", "matcher-2").await;
    eventually("one leader", || async {
        is_leader(&m1).await ^ is_leader(&m2).await
    })
    .await;
    let (leader, standby) = if is_leader(&m1).await {
        (m1, m2)
    } else {
        (m2, m1)
    };

    // Pause the leader past its lease; the standby must take over and pair.
    leader.signal("STOP");
    let pair = |gender_a, gender_b| {
        let store = c.db.store.clone();
        let tokens = &c.tokens;
        async move {
            (
                make_user(store.as_ref(), tokens, gender_a).await,
                make_user(store.as_ref(), tokens, gender_b).await,
            )
        }
    };
    let (u1, u2) = pair(Gender::Dude, Gender::Girl).await;
    let (mut w1, _) = Ws::join(&g.ws(), &u1.token).await;
    let (mut w2, _) = Ws::join(&g.ws(), &u2.token).await;
    w1.send("find_match", json!({}), None).await;
    w2.send("find_match", json!({}), None).await;
    let started = std::time::Instant::now();
    w1.wait_for("match_found").await;
    w2.wait_for("match_found").await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "standby took over in {:?}",
        started.elapsed()
    );
    assert!(is_leader(&standby).await);

    // The paused leader wakes up: it must notice and create nothing.
    leader.signal("CONT");
    eventually("old leader steps down", || async {
        !is_leader(&leader).await
    })
    .await;

    // Kill the new leader outright; the woken one takes over again.
    standby.signal("KILL");
    let (u3, u4) = pair(Gender::Girl, Gender::Dude).await;
    let (mut w3, _) = Ws::join(&g.ws(), &u3.token).await;
    let (mut w4, _) = Ws::join(&g.ws(), &u4.token).await;
    w3.send("find_match", json!({}), None).await;
    w4.send("find_match", json!({}), None).await;
    let f3 = w3.wait_for("match_found").await;
    let f4 = w4.wait_for("match_found").await;
    assert_eq!(f3["data"]["session"]["id"], f4["data"]["session"]["id"]);
    assert!(is_leader(&leader).await);
    // Every user is in exactly one session.
    for u in [&u1, &u2, &u3, &u4] {
        let s = c.db.store.current_session(u.id).await.unwrap();
        assert!(s.is_some());
    }
}
