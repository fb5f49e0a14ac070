//! Every scenario, run as the real `loadtest` binary against a stand-in
//! server (tests/support), checked through its JSON report: the numbers a
//! benchmark quotes are present, losses and duplicates are counted, workers
//! merge, and thresholds decide the exit code.

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::Faults;

struct Run {
    code: i32,
    report: Value,
    csv: String,
}

/// A work directory, removed when the test passes (kept for a look when it fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("io-loadtest-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

async fn loadtest(dir: &Path, args: &[&str]) -> Run {
    let json = dir.join("report.json");
    let csv = dir.join("series.csv");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--csv")
        .arg(&csv)
        .arg("--quiet")
        .output()
        .await
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default())
        .unwrap_or_else(|e| panic!("no report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        report,
        csv: std::fs::read_to_string(&csv).unwrap_or_default(),
    }
}

fn counter(r: &Value, name: &str) -> u64 {
    r["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name} missing in {r:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_holds_idle_sockets_and_answers_pings() {
    let (fake, urls) = support::start(1, 20, Faults::default()).await;
    let dir = scratch("connect");
    let users = support::users_file(&dir, 20);
    let pid = std::process::id().to_string();
    let run = loadtest(
        &dir,
        &[
            "connect",
            "--url",
            &urls[0],
            "--users",
            users.to_str().unwrap(),
            "--sockets",
            "30",
            "--ramp-rate",
            "200",
            "--duration",
            "1.5",
            "--source-ips",
            "4",
            "--server-pid",
            &pid,
            "--threshold",
            "connect_errors=0",
            "--threshold",
            "p99_connect_ms<=5000",
        ],
    )
    .await;
    let r = &run.report;
    assert_eq!(run.code, 0, "{r:#}");
    assert_eq!(counter(r, "connects"), 30);
    assert_eq!(counter(r, "connect_errors"), 0);
    assert_eq!(counter(r, "disconnects"), 0);
    assert_eq!(counter(r, "errors"), 0);
    assert!(r["latency_ms"]["ramp"]["connect"]["p99"].as_f64().unwrap() > 0.0);
    assert!(r["rates"]["connects_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(r["server"]["sockets_at_rss_after"].as_i64(), Some(30));
    assert!(r["server"]["procs"][0]["rss_after_kib"].as_u64().is_some());
    assert!(r["client"]["cpu_s"].as_f64().is_some());
    assert_eq!(
        fake.pongs.load(std::sync::atomic::Ordering::Relaxed),
        30,
        "every ping answered"
    );
    assert!(run.csv.lines().count() >= 2, "{}", run.csv);
    assert!(run.csv.starts_with("t_s,phase,open_sockets,"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_across_two_nodes_with_two_workers_loses_nothing() {
    let (_fake, urls) = support::start(2, 20, Faults::default()).await;
    let dir = scratch("chat");
    let users = support::users_file(&dir, 20);
    let run = loadtest(
        &dir,
        &[
            "chat",
            "--url",
            &urls[0],
            "--url",
            &urls[1],
            "--pairs-on-separate-nodes",
            "--users",
            users.to_str().unwrap(),
            "--workers",
            "2",
            "--rate-per-user",
            "10",
            "--ramp-rate",
            "100",
            "--warmup",
            "0.5",
            "--duration",
            "2",
            "--drain",
            "1",
            "--threshold",
            "lost=0",
            "--threshold",
            "duplicated=0",
            "--threshold",
            "p99_delivery_ms<=2000",
        ],
    )
    .await;
    let r = &run.report;
    assert_eq!(run.code, 0, "{r:#}");
    assert_eq!(counter(r, "matched"), 20);
    let sent = counter(r, "sent");
    assert!(sent > 300, "about 10 users × 10/s × 2.x s each way: {sent}");
    assert_eq!(counter(r, "acked"), sent);
    assert_eq!(counter(r, "delivered"), sent);
    assert_eq!(counter(r, "lost"), 0);
    assert_eq!(counter(r, "duplicated"), 0);
    assert_eq!(counter(r, "errors"), 0);
    assert_eq!(r["pairs"]["pairs"].as_u64(), Some(10));
    assert_eq!(r["pairs"]["cross_node_fraction"].as_f64(), Some(1.0));
    assert!(r["latency_ms"]["steady"]["delivery"]["p99"]
        .as_f64()
        .is_some());
    assert!(r["latency_ms"]["steady"]["ack"]["p50"].as_f64().is_some());
    assert!(
        r["rates"]["messages_per_s"].as_f64().unwrap() > 100.0,
        "{r:#}"
    );
    assert_eq!(r["client"]["workers"].as_u64(), Some(2));
    assert!(r["histograms"]["steady.delivery"].as_str().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_counts_lost_and_duplicated_deliveries_and_fails_thresholds() {
    let faults = Faults {
        drop_every: 7,
        duplicate_every: 5,
    };
    let (_fake, urls) = support::start(1, 8, faults).await;
    let dir = scratch("faults");
    let users = support::users_file(&dir, 8);
    let run = loadtest(
        &dir,
        &[
            "chat",
            "--url",
            &urls[0],
            "--users",
            users.to_str().unwrap(),
            "--rate",
            "80",
            "--warmup",
            "0.3",
            "--duration",
            "1",
            "--drain",
            "0.5",
            "--threshold",
            "lost=0",
        ],
    )
    .await;
    let r = &run.report;
    assert_eq!(run.code, 1, "a failed threshold exits 1: {r:#}");
    let sent = counter(r, "sent");
    let lost = counter(r, "lost");
    let dup = counter(r, "duplicated");
    // Every 7th delivery is dropped and every 5th doubled; a 35th is both (so arrives once).
    assert_eq!(lost, sent / 7 - sent / 35, "{r:#}");
    assert_eq!(dup, sent / 5 - sent / 35, "{r:#}");
    assert_eq!(counter(r, "delivered"), sent - lost);
    assert_eq!(r["pass"], Value::Bool(false));
    assert_eq!(r["thresholds"][0]["pass"], Value::Bool(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_cycles_through_match_end_rate() {
    let (_fake, urls) = support::start(1, 12, Faults::default()).await;
    let dir = scratch("churn");
    let users = support::users_file(&dir, 12);
    let run = loadtest(
        &dir,
        &[
            "churn",
            "--url",
            &urls[0],
            "--users",
            users.to_str().unwrap(),
            "--cycles",
            "2",
            "--messages",
            "2",
            "--duration",
            "8",
            "--step-timeout",
            "3",
            "--ramp-rate",
            "100",
            "--threshold",
            "errors=0",
        ],
    )
    .await;
    let r = &run.report;
    assert_eq!(run.code, 0, "{r:#}");
    // Two cycles each; in the second, the last dude and girl may be a pair that
    // already met: they withdraw when the steady phase ends (not an error).
    let cycles = counter(r, "cycles");
    assert!(cycles == 24 || cycles == 22, "{r:#}");
    assert_eq!(counter(r, "lost"), 0);
    assert_eq!(counter(r, "duplicated"), 0);
    assert_eq!(counter(r, "delivered"), cycles * 2);
    for step in ["connect", "match_wait", "end", "rate", "cycle"] {
        assert!(
            r["latency_ms"]["all"][step]["count"].as_u64().unwrap_or(0) > 0,
            "{step} measured: {r:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_signs_in_through_the_mailbox_and_reads_profiles() {
    let (_fake, urls) = support::start(1, 10, Faults::default()).await;
    let dir = scratch("api");
    let users = support::users_file(&dir, 10);
    let run = loadtest(
        &dir,
        &[
            "api",
            "--url",
            &urls[0],
            "--users",
            users.to_str().unwrap(),
            "--rate",
            "100",
            "--duration",
            "1.5",
            "--mix",
            "profile_get=2,profile_put=1,online_count=1,signin=1",
        ],
    )
    .await;
    let r = &run.report;
    assert_eq!(run.code, 0, "{r:#}");
    assert_eq!(counter(r, "errors"), 0, "{r:#}");
    assert!(counter(r, "http_requests") > 100);
    for kind in ["profile_get", "profile_put", "online_count", "signin"] {
        assert!(
            r["latency_ms"]["all"][kind]["count"].as_u64().unwrap_or(0) > 0,
            "{kind} measured: {r:#}"
        );
    }
    assert!(r["status"]["verify_token 200"].as_u64().unwrap_or(0) > 0);
    assert!(r["rates"]["requests_per_s"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_non_loopback_targets_and_bad_thresholds() {
    let dir = scratch("refuse");
    let users = support::users_file(&dir, 2);
    for extra in [
        vec!["--url", "http://10.9.8.7:80"],
        vec!["--threshold", "p99_nothing_ms=1"],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
            .args(["connect", "--users", users.to_str().unwrap(), "--quiet"])
            .args(&extra)
            .output()
            .await
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
