//! Every metric name that the Grafana dashboards and the Prometheus rules
//! use is really exported by the running roles.

mod common;

use std::collections::BTreeSet;

use common::*;
use io_domain::types::Gender;

/// `io_*` names in a text, with histogram suffixes folded to the base name.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("io_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + 3;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        if boundary && end > start + 3 {
            let mut name = text[start..end].trim_end_matches('_').to_owned();
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    name = base.to_owned();
                }
            }
            out.insert(name);
        }
        i = end;
    }
    out
}

fn read_tree(dir: &std::path::Path, ext: &[&str], into: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            read_tree(&path, ext, into);
        } else if ext
            .iter()
            .any(|e| path.extension().is_some_and(|x| x == *e))
        {
            into.push_str(&std::fs::read_to_string(&path).unwrap());
            into.push('\n');
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_rules_use_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut used_text = String::new();
    read_tree(&root.join("grafana"), &["json", "txt"], &mut used_text);
    read_tree(&root.join("prometheus"), &["yml", "yaml"], &mut used_text);
    let used = names_in(&used_text);
    assert!(
        used.len() > 30,
        "dashboards and rules use io_* metrics: {used:?}"
    );

    // One process with every role, exercised a little.
    let app = App::start(&[]).await;
    let alice = make_user(app.store.as_ref(), &app.tokens, Gender::Dude).await;
    let bob = make_user(app.store.as_ref(), &app.tokens, Gender::Girl).await;
    let (mut a, _) = Ws::join(&app.ws(), &alice.token).await;
    let (mut b, _) = Ws::join(&app.ws(), &bob.token).await;
    let sid = pair_up(&mut a, &mut b).await;
    a.send_message(&sid, "hi", "1").await;
    b.wait_for("message_received").await;
    let rest = Rest::new(&app.http(), &alice.token);
    rest.get("/api/users/profile").await;
    let _ = reqwest::get(format!("{}/readyz", app.http())).await;

    let exported = reqwest::get(format!("http://{}/metrics", app.running.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut have = BTreeSet::new();
    for line in exported.lines().filter(|l| !l.starts_with('#')) {
        have.extend(names_in(line.split(['{', ' ']).next().unwrap_or("")));
    }
    // The bus's own metrics exist only with Redis; the cluster exports them.
    let missing: Vec<_> = used
        .iter()
        .filter(|n| !have.contains(*n) && !n.starts_with("io_bus_"))
        .collect();
    assert!(
        missing.is_empty(),
        "used by dashboards/rules but not exported: {missing:?}"
    );
    promtool_accepts(&exported);
    app.running.shutdown.cancel();
}

/// `promtool check metrics` lints the exposition (naming, units, help).
fn promtool_accepts(exposition: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(_) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("promtool not installed: exposition lint not run (scripts/test installs it)");
            return;
        }
        Err(e) => panic!("promtool is required under CI: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics: {report}");
}

#[test]
fn names_are_extracted_with_histogram_suffixes_folded() {
    let n = names_in(
        r#"sum(rate(io_gateway_delivery_seconds_bucket{node=~"$node"}[5m])) / io_x_total"#,
    );
    assert!(n.contains("io_gateway_delivery_seconds"));
    assert!(n.contains("io_x_total"));
    assert!(!n.contains("io_gateway_delivery_seconds_bucket"));
}
