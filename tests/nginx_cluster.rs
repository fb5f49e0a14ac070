//! The local cluster (`scripts/cluster`: 3 gateways, 2 matchers, the api,
//! Nginx) end to end through Nginx: users on different nodes chat, the
//! gateway holding one of them is SIGKILLed and the chat goes on through
//! Nginx on another node with no acknowledged message lost; then the
//! matcher leader is SIGKILLed and new pairs are still made.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use io_auth::Tokens;
use io_domain::types::Gender;
use serde_json::json;

const PORT: u16 = 18088;

struct ClusterRun {
    dir: PathBuf,
    db: String,
}

impl ClusterRun {
    fn cluster(&self, args: &[&str]) -> String {
        let root = env!("CARGO_MANIFEST_DIR");
        let out = Command::new(format!("{root}/scripts/cluster"))
            .args(args)
            .env("IO_BIN", env!("CARGO_BIN_EXE_io"))
            .env("IO_CLUSTER_DIR", &self.dir)
            .env("IO_CLUSTER_DB", &self.db)
            .env("IO_CLUSTER_PORT", PORT.to_string())
            .env("IO_LIMIT_MESSAGES_PER_MINUTE", "6000")
            .env("IO_LIMIT_MESSAGE_BURST", "200")
            .env("IO_MATCHER_LEASE_MS", "2000")
            .output()
            .expect("scripts/cluster runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "scripts/cluster {args:?} failed:\n{text}"
        );
        text
    }
}

impl Drop for ClusterRun {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.cluster(&["down"]));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_survives_a_killed_gateway_and_a_killed_leader_behind_nginx() {
    let run = ClusterRun {
        dir: std::env::temp_dir().join(format!("io-cluster-{}", uuid::Uuid::now_v7().simple())),
        db: format!("io_cluster_test_{}", std::process::id()),
    };
    run.cluster(&["up", "--gateways", "3", "--no-build"]);
    let secret = std::fs::read_to_string(run.dir.join("jwt-secret")).expect("the cluster's secret");
    let tokens = Tokens::new(secret.trim().as_bytes(), &[], Tokens::DEFAULT_ACCESS_TTL);
    let store = io_store::connect(&format!("postgres://postgres@127.0.0.1:5432/{}", run.db))
        .await
        .expect("the cluster's database");
    let base = format!("http://127.0.0.1:{PORT}");
    let ws_url = format!("ws://127.0.0.1:{PORT}/ws");

    // Alice and Bob on different gateways (Nginx balances by least connections).
    let alice = make_user(store.as_ref(), &tokens, Gender::Dude).await;
    let bob = make_user(store.as_ref(), &tokens, Gender::Girl).await;
    let (mut a, hello) = Ws::join(&ws_url, &alice.token).await;
    let alice_node = hello["node"].as_str().unwrap().to_owned();
    let mut b = None;
    let mut spare = Vec::new();
    for _ in 0..6 {
        let (ws, hello) = Ws::join(&ws_url, &bob.token).await;
        if hello["node"] != alice_node.as_str() {
            b = Some(ws);
            break;
        }
        spare.push(ws);
    }
    let mut b = b.expect("Nginx spreads sockets over the gateways");
    for ws in spare {
        ws.close().await;
    }

    let sid = pair_up(&mut a, &mut b).await;
    let mut acked = Vec::new();
    for i in 0..10 {
        a.send_message(&sid, &format!("m{i}"), &format!("m{i}"))
            .await;
        acked.push(
            a.wait_for("message_received").await["data"]["message"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        assert_eq!(
            b.wait_for("message_received").await["data"]["message"]["content"],
            format!("m{i}")
        );
    }

    // Kill Alice's gateway; she reconnects through Nginx and carries on.
    run.cluster(&["kill", &alice_node]);
    assert_eq!(a.expect_close().await, 1006);
    let (mut a, hello) = {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match tokio::time::timeout(Duration::from_secs(5), Ws::join(&ws_url, &alice.token))
                .await
            {
                Ok(ok) => break ok,
                Err(_) if attempt < 5 => continue,
                Err(_) => panic!("could not reconnect through Nginx"),
            }
        }
    };
    assert_ne!(hello["node"], alice_node.as_str());
    assert_eq!(hello["session"]["id"], sid);
    let rest = Rest::new(&base, &alice.token);
    assert_history_holds(&rest, &sid, &acked).await;
    a.send_message(&sid, "still here", "after").await;
    a.wait_for("message_received").await;
    assert_eq!(
        b.wait_for("message_received").await["data"]["message"]["content"],
        "still here"
    );

    // Kill the matcher leader; the standby pairs the next users.
    run.cluster(&["kill", "leader"]);
    let carol = make_user(store.as_ref(), &tokens, Gender::Girl).await;
    let dave = make_user(store.as_ref(), &tokens, Gender::Dude).await;
    let (mut c, _) = Ws::join(&ws_url, &carol.token).await;
    let (mut d, _) = Ws::join(&ws_url, &dave.token).await;
    c.send("find_match", json!({}), None).await;
    d.send("find_match", json!({}), None).await;
    let started = std::time::Instant::now();
    let fc = c.wait_for("match_found").await;
    let fd = d.wait_for("match_found").await;
    assert_eq!(fc["data"]["session"]["id"], fd["data"]["session"]["id"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "paired in {:?}",
        started.elapsed()
    );
}
