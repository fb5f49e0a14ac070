//! The coordinator: plans the run, starts the workers (a task, or child
//! processes that re-execute this binary), merges their ticks into the live
//! view and the CSV time series, merges their final results exactly, and
//! writes the report.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::cli::{Cli, Scenario};
use crate::ledger::Ledger;
use crate::report::{ClientUse, Pairs, Report, ServerProc, ServerUse, Threshold};
use crate::stats::{decode, Count, Lat, Snapshot, Summary};
use crate::sys::{self, ProcSample};
use crate::target::Target;
use crate::timeline::Timeline;
use crate::users;
use crate::worker::{self, Final, Tick, WorkerMsg};

/// How the run ended, for the exit code.
pub enum Outcome {
    Pass,
    /// A threshold failed.
    Fail,
    /// The run itself went wrong (a worker died, the report could not be written).
    Broken,
}

enum Msg {
    Worker(u32, WorkerMsg),
    Exited(u32, String),
}

/// Latencies shown for each scenario (CSV columns, live view).
fn lats_of(scenario: &Scenario) -> &'static [Lat] {
    match scenario {
        Scenario::Connect(_) => &[Lat::Connect],
        Scenario::Chat(_) => &[
            Lat::Connect,
            Lat::MatchWait,
            Lat::Ack,
            Lat::Delivery,
            Lat::SendLag,
        ],
        Scenario::Churn(_) => &[
            Lat::Connect,
            Lat::MatchWait,
            Lat::Ack,
            Lat::Delivery,
            Lat::End,
            Lat::Rate,
            Lat::Cycle,
        ],
        Scenario::Api(_) => &[
            Lat::ProfileGet,
            Lat::ProfilePut,
            Lat::OnlineCount,
            Lat::Signin,
            Lat::SendLag,
        ],
    }
}

/// The latency the live view shows.
fn headline(scenario: &Scenario) -> Lat {
    match scenario {
        Scenario::Connect(_) => Lat::Connect,
        Scenario::Chat(_) => Lat::Delivery,
        Scenario::Churn(_) => Lat::Cycle,
        Scenario::Api(_) => Lat::ProfileGet,
    }
}

/// One merged second.
struct Row {
    n: u64,
    counts: BTreeMap<String, u64>,
    open: i64,
    client_cpu_us: u64,
    lat: BTreeMap<String, Summary>,
    /// Each watched server process at this second (same order as `--server-pid`).
    procs: Vec<Option<ProcSample>>,
    /// When `procs` was read, shared clock µs.
    procs_at_us: u64,
}

impl Row {
    /// The watched processes together.
    fn server(&self) -> Option<ProcSample> {
        if self.procs.is_empty() {
            return None;
        }
        let mut total = ProcSample::default();
        for s in self.procs.iter().flatten() {
            total.rss_kib += s.rss_kib;
            total.cpu_us += s.cpu_us;
        }
        Some(total)
    }
}

/// Ticks from every worker, merged per second once all have reported.
struct TickMerger {
    workers: usize,
    /// Last cumulative counters and CPU per worker (kept after a worker ends).
    last: Vec<(BTreeMap<String, u64>, u64)>,
    finished: Vec<bool>,
    pending: BTreeMap<u64, Vec<Option<Tick>>>,
    next_n: u64,
}

impl TickMerger {
    fn new(workers: usize) -> Self {
        TickMerger {
            workers,
            last: vec![(BTreeMap::new(), 0); workers],
            finished: vec![false; workers],
            pending: BTreeMap::new(),
            next_n: 1,
        }
    }

    fn add(&mut self, w: u32, tick: Tick) {
        let slot = self
            .pending
            .entry(tick.n)
            .or_insert_with(|| (0..self.workers).map(|_| None).collect());
        slot[w as usize] = Some(tick);
    }

    fn finish(&mut self, w: u32) {
        self.finished[w as usize] = true;
    }

    /// Rows that are complete (or all of them when `flush`).
    fn ready(&mut self, flush: bool) -> Vec<Row> {
        let mut rows = Vec::new();
        while let Some((&n, slot)) = self.pending.iter().next() {
            let complete = slot
                .iter()
                .enumerate()
                .all(|(w, t)| t.is_some() || self.finished[w]);
            if !(complete || flush) {
                break;
            }
            let slot = self.pending.remove(&n).expect("present");
            if n < self.next_n {
                continue;
            }
            self.next_n = n + 1;
            let mut hist: BTreeMap<String, hdrhistogram::Histogram<u64>> = BTreeMap::new();
            let mut open = 0;
            for (w, t) in slot.into_iter().enumerate() {
                let Some(t) = t else { continue };
                open += t.data.open;
                for (k, v) in &t.data.hist {
                    if let Ok(h) = decode(v) {
                        let e = hist
                            .entry(k.clone())
                            .or_insert_with(crate::stats::new_histogram);
                        let _ = e.add(&h);
                    }
                }
                self.last[w] = (t.data.counts, t.cpu_us);
            }
            let mut counts = BTreeMap::new();
            let mut cpu = 0;
            for (c, u) in &self.last {
                cpu += u;
                for (k, v) in c {
                    *counts.entry(k.clone()).or_insert(0) += v;
                }
            }
            rows.push(Row {
                n,
                counts,
                open,
                client_cpu_us: cpu,
                lat: hist
                    .iter()
                    .map(|(k, h)| (k.clone(), Summary::of(h)))
                    .collect(),
                procs: Vec::new(),
                procs_at_us: 0,
            });
        }
        rows
    }
}

/// Server samples by second, taken on the coordinator's own clock so a
/// worker that reports late does not squeeze the interval they measure.
type Samples = Arc<Mutex<BTreeMap<u64, (u64, Vec<Option<ProcSample>>)>>>;

fn attach_samples(row: &mut Row, samples: &Samples, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let taken = samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&row.n)
        .cloned();
    let (at, procs) = taken.unwrap_or_else(|| (sys::mono_us(), sys::sample_many(pids)));
    row.procs = procs;
    row.procs_at_us = at;
}

pub async fn run(cli: Cli, args: Vec<String>) -> anyhow::Result<Outcome> {
    let scenario = cli.scenario;
    let common = scenario.common().clone();
    let nofile = sys::raise_nofile_limit();
    let thresholds = common
        .thresholds
        .iter()
        .map(|t| Threshold::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let targets = common
        .urls
        .iter()
        .map(|u| Target::parse(u, common.allow_non_loopback))
        .collect::<Result<Vec<_>, _>>()?;
    let users = users::load(&common.users, common.max_users)?;
    match &scenario {
        Scenario::Chat(a) if a.pairs_on_separate_nodes && targets.len() < 2 => {
            anyhow::bail!("--pairs-on-separate-nodes needs at least two --url")
        }
        Scenario::Chat(a) if a.message_size < 24 => {
            anyhow::bail!("--message-size must be at least 24")
        }
        Scenario::Api(a) => {
            crate::scenario::api::parse_mix(&a.mix).map_err(|e| anyhow::anyhow!("--mix: {e}"))?;
        }
        _ => {}
    }
    let connections = worker::connections(&scenario, users.len());
    let workers = common.workers.max(1);
    if (connections as u64 / workers as u64) + 64 > nofile {
        eprintln!(
            "warning: {} sockets per worker but the open-file limit is {nofile}; use more --workers",
            connections as u64 / workers as u64
        );
    }
    let ports = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().filter_map(|v| v.parse::<u64>().ok());
            Some(it.next_back()?.saturating_sub(it.next()?) + 1)
        })
        .unwrap_or(28_232);
    let per_source = connections as u64 / (common.source_ips.max(1) as u64);
    if per_source > ports * 9 / 10 {
        eprintln!(
            "warning: about {per_source} sockets per source address but only {ports} ephemeral ports; \
             raise --source-ips"
        );
    }
    let lead_us = if workers > 1 { 1_500_000 } else { 300_000 };
    let start_us = sys::mono_us() + lead_us;
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let timeline = Timeline::plan(&scenario, start_us, connections);
    let self_cpu_start = sys::self_cpu_us();

    let server_before: Vec<(u32, Option<u64>)> = common
        .server_pids
        .iter()
        .map(|p| (*p, sys::rss_kib(*p)))
        .collect();

    let samples: Samples = Arc::new(Mutex::new(BTreeMap::new()));
    let sampler = (!common.server_pids.is_empty()).then(|| {
        let samples = samples.clone();
        let pids = common.server_pids.clone();
        tokio::spawn(async move {
            for n in 1u64.. {
                sys::sleep_until_us(start_us + n * 1_000_000).await;
                let taken = tokio::task::spawn_blocking({
                    let pids = pids.clone();
                    move || (sys::mono_us(), sys::sample_many(&pids))
                })
                .await;
                if let Ok(taken) = taken {
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(n, taken);
                }
            }
        })
    });

    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let mut children = Vec::new();
    if workers == 1 {
        let tx = tx.clone();
        let scenario = scenario.clone();
        tokio::spawn(async move {
            let tx2 = tx.clone();
            let result = worker::run(scenario, 0, 1, start_us, move |m| {
                let _ = tx2.send(Msg::Worker(0, m));
            })
            .await;
            let why = match result {
                Ok(()) => "done".to_string(),
                Err(e) => format!("{e:#}"),
            };
            let _ = tx.send(Msg::Exited(0, why));
        });
    } else {
        let exe =
            std::env::current_exe().context("cannot find this executable to start workers")?;
        for i in 0..workers {
            let mut child = tokio::process::Command::new(&exe)
                .args(&args)
                .arg("--worker-index")
                .arg(i.to_string())
                .arg("--worker-start-us")
                .arg(start_us.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start worker {i}"))?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                let mut why = "ended without a result".to_string();
                loop {
                    match lines.next_line().await {
                        Ok(Some(line)) => match serde_json::from_str::<WorkerMsg>(&line) {
                            Ok(m) => {
                                let _ = tx.send(Msg::Worker(i, m));
                            }
                            Err(e) => why = format!("unreadable line from worker: {e}"),
                        },
                        Ok(None) => break,
                        Err(e) => {
                            why = format!("reading worker output: {e}");
                            break;
                        }
                    }
                }
                let _ = tx.send(Msg::Exited(i, why));
            });
            children.push(child);
        }
    }
    drop(tx);

    // Live view.
    let live = !common.quiet && std::io::stderr().is_terminal();
    let bar = if live {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {wide_msg}").expect("static template"),
        );
        bar.enable_steady_tick(Duration::from_millis(250));
        Some(bar)
    } else {
        None
    };
    let mut csv = match &common.csv {
        Some(path) => {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            );
            let mut head = vec!["t_s".to_string(), "phase".into(), "open_sockets".into()];
            head.extend(Count::ALL.iter().map(|c| format!("{}_per_s", c.name())));
            for lat in lats_of(&scenario) {
                for s in ["p50", "p99", "max"] {
                    head.push(format!("{}_{s}_ms", lat.name()));
                }
            }
            head.extend([
                "client_cpu_percent".into(),
                "server_cpu_percent".into(),
                "server_rss_kib".into(),
            ]);
            writeln!(f, "{}", head.join(","))?;
            Some(f)
        }
        None => None,
    };

    let mut merger = TickMerger::new(workers as usize);
    let mut rows: Vec<Row> = Vec::new();
    let mut finals: Vec<Option<Final>> = (0..workers).map(|_| None).collect();
    let mut exited: Vec<Option<String>> = vec![None; workers as usize];
    let hard = sys::instant_at(timeline.hard_end_us + 5_000_000);
    let mut broken: Vec<String> = Vec::new();
    let total_s = (timeline.drain_end_us - timeline.start_us) as f64 / 1e6;

    loop {
        if exited.iter().all(|e| e.is_some()) {
            break;
        }
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = tokio::time::sleep_until(hard) => {
                broken.push("hard timeout: workers did not finish".into());
                for c in &mut children {
                    let _ = c.start_kill();
                }
                break;
            }
        };
        let Some(msg) = msg else { break };
        match msg {
            Msg::Worker(i, WorkerMsg::Tick(t)) => merger.add(i, t),
            Msg::Worker(i, WorkerMsg::Final(f)) => {
                finals[i as usize] = Some(*f);
                merger.finish(i);
            }
            Msg::Exited(i, why) => {
                if finals[i as usize].is_none() {
                    broken.push(format!("worker {i}: {why}"));
                    merger.finish(i);
                }
                exited[i as usize] = Some(why);
            }
        }
        for mut row in merger.ready(false) {
            attach_samples(&mut row, &samples, &common.server_pids);
            emit_row(
                &scenario,
                &timeline,
                &rows,
                &row,
                csv.as_mut(),
                bar.as_ref(),
                common.quiet,
                total_s,
            )?;
            rows.push(row);
        }
    }
    for mut row in merger.ready(true) {
        attach_samples(&mut row, &samples, &common.server_pids);
        emit_row(
            &scenario,
            &timeline,
            &rows,
            &row,
            csv.as_mut(),
            bar.as_ref(),
            common.quiet,
            total_s,
        )?;
        rows.push(row);
    }
    for c in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
    }
    if let Some(s) = sampler {
        s.abort();
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if let Some(f) = csv.as_mut() {
        f.flush()?;
    }

    // Merge the finals.
    let mut snap = Snapshot::default();
    let mut ledger = Ledger::default();
    let mut notes = BTreeMap::new();
    let mut worker_cpu = 0u64;
    let mut max_rss = 0u64;
    let mut last_connect = 0u64;
    for f in finals.iter().flatten() {
        snap.merge(&f.snapshot)?;
        ledger.merge(&f.ledger);
        worker_cpu += f.cpu_us;
        max_rss += f.max_rss_kib;
        last_connect = last_connect.max(f.last_connect_us);
        for (k, v) in &f.notes {
            notes.insert(k.clone(), v.clone());
        }
    }
    let elapsed_s = (sys::mono_us().saturating_sub(start_us)) as f64 / 1e6;

    let mut report = Report {
        scenario: scenario.name().into(),
        version: env!("CARGO_PKG_VERSION").into(),
        args,
        urls: targets.iter().map(|t| t.url.clone()).collect(),
        users: users.len(),
        started_unix_ms,
        elapsed_s,
        ..Default::default()
    };
    report.phases_s.insert("ramp".into(), timeline.ramp_s());
    report.phases_s.insert("steady".into(), timeline.steady_s());
    report
        .phases_s
        .insert("drain_max".into(), timeline.drain_s());
    report.counters = snap.counts.clone();
    let is_chat = matches!(scenario, Scenario::Chat(_) | Scenario::Churn(_));
    if is_chat {
        report.counters.insert("lost".into(), ledger.lost());
        report.counters.insert("unacked".into(), ledger.unacked());
    }
    let mut errors: u64 = Count::ERRORS.iter().map(|c| snap.count(*c)).sum();
    errors += report.counters.get("unacked").copied().unwrap_or(0);
    if !broken.is_empty() {
        errors += broken.len() as u64;
        notes.insert("broken".into(), serde_json::json!(broken));
    }
    report.counters.insert("errors".into(), errors);
    report.fill_latencies(&snap);
    report.status = snap.status.clone();
    report.error_kinds = snap.error_kinds.clone();

    // Steady-phase window in whole ticks.
    let a = (timeline.ramp_s()).ceil() as u64;
    let b = (timeline.ramp_s() + timeline.steady_s()).floor() as u64;
    let row_at = |n: u64| rows.iter().rev().find(|r| r.n <= n);
    let window = match (row_at(a), row_at(b)) {
        (Some(ra), Some(rb)) if rb.n > ra.n => Some((ra, rb)),
        _ => None,
    };
    let rate_of = |name: &str| -> f64 {
        match window {
            Some((ra, rb)) => {
                let d = rb.counts.get(name).copied().unwrap_or(0) as f64
                    - ra.counts.get(name).copied().unwrap_or(0) as f64;
                d / (rb.n - ra.n) as f64
            }
            None => snap.counts.get(name).copied().unwrap_or(0) as f64 / elapsed_s.max(1e-3),
        }
    };
    match &scenario {
        Scenario::Connect(_) => {
            let connects = snap.count(Count::Connects) as f64;
            if last_connect > start_us && connects > 0.0 {
                report.rates.insert(
                    "connects_per_s".into(),
                    connects / ((last_connect - start_us) as f64 / 1e6),
                );
            }
        }
        Scenario::Chat(_) => {
            report
                .rates
                .insert("messages_per_s".into(), rate_of("delivered"));
            report.rates.insert("sent_per_s".into(), rate_of("sent"));
        }
        Scenario::Churn(_) => {
            report
                .rates
                .insert("cycles_per_s".into(), rate_of("cycles"));
            report
                .rates
                .insert("messages_per_s".into(), rate_of("delivered"));
        }
        Scenario::Api(_) => {
            report
                .rates
                .insert("requests_per_s".into(), rate_of("http_requests"));
        }
    }
    if is_chat {
        let (pairs, cross) = ledger.pairs();
        report.pairs = Some(Pairs {
            pairs,
            cross_node: cross,
            cross_node_fraction: (pairs > 0).then(|| cross as f64 / pairs as f64),
        });
    }

    // Client resources.
    let coordinator_cpu = if workers > 1 {
        sys::self_cpu_us().saturating_sub(self_cpu_start)
    } else {
        0
    };
    let cpu_s = (worker_cpu + coordinator_cpu) as f64 / 1e6;
    let ops = match &scenario {
        Scenario::Api(_) => snap.count(Count::HttpRequests),
        Scenario::Connect(_) => snap.count(Count::Connects),
        _ => snap.count(Count::Delivered),
    };
    report.client = ClientUse {
        cpu_s,
        cpu_percent: cpu_s / elapsed_s.max(1e-3) * 100.0,
        cpu_percent_steady: window.map(|(ra, rb)| {
            (rb.client_cpu_us - ra.client_cpu_us) as f64 / 1e6 / (rb.n - ra.n) as f64 * 100.0
        }),
        cpu_us_per_op: (ops > 0).then(|| cpu_s * 1e6 / ops as f64),
        max_rss_kib: max_rss,
        workers,
        open_file_limit: nofile,
    };

    // Server resources.
    if !common.server_pids.is_empty() {
        let rss_row = rows.iter().rev().find(|r| r.n <= b.max(1));
        let mut server = ServerUse::default();
        let mut delta = 0f64;
        let mut have_delta = false;
        for (i, (pid, before)) in server_before.iter().enumerate() {
            let after = rss_row
                .and_then(|r| r.procs.get(i).copied().flatten())
                .map(|s| s.rss_kib);
            let cpu_s_steady = window.and_then(|(ra, rb)| {
                let a = ra.procs.get(i).copied().flatten()?;
                let b = rb.procs.get(i).copied().flatten()?;
                Some(b.cpu_us.saturating_sub(a.cpu_us) as f64 / 1e6)
            });
            server.procs.push(ServerProc {
                pid: *pid,
                name: sys::comm(*pid),
                rss_before_kib: *before,
                rss_after_kib: after,
                cpu_s_steady,
            });
            if let (Some(b0), Some(a0)) = (before, after) {
                delta += a0 as f64 - *b0 as f64;
                have_delta = true;
            }
        }
        if let Some(r) = rss_row {
            server.sockets_at_rss_after = r.open;
        }
        if have_delta {
            server.rss_delta_kib = Some(delta);
            if server.sockets_at_rss_after > 0 {
                server.rss_per_socket_kib = Some(delta / server.sockets_at_rss_after as f64);
            }
        }
        if let Some((ra, rb)) = window {
            if let (Some(sa), Some(sb)) = (ra.server(), rb.server()) {
                let cpu = sb.cpu_us.saturating_sub(sa.cpu_us) as f64;
                let span_s = rb.procs_at_us.saturating_sub(ra.procs_at_us).max(1) as f64 / 1e6;
                server.cpu_percent_steady = Some(cpu / 1e6 / span_s * 100.0);
                let delivered = rb.counts.get("delivered").copied().unwrap_or(0)
                    - ra.counts.get("delivered").copied().unwrap_or(0);
                if delivered > 0 {
                    server.cpu_us_per_message = Some(cpu / delivered as f64);
                }
            }
        }
        report.server = Some(server);
    }
    report.notes = notes;
    report.judge(&thresholds);
    if !broken.is_empty() {
        report.pass = false;
    }

    if let Some(path) = &common.json {
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(f), &report)?;
    }
    print!("{}", report.human());
    Ok(if !broken.is_empty() {
        Outcome::Broken
    } else if report.pass {
        Outcome::Pass
    } else {
        Outcome::Fail
    })
}

#[allow(clippy::too_many_arguments)]
fn emit_row(
    scenario: &Scenario,
    timeline: &Timeline,
    rows: &[Row],
    row: &Row,
    csv: Option<&mut std::io::BufWriter<std::fs::File>>,
    bar: Option<&ProgressBar>,
    quiet: bool,
    total_s: f64,
) -> anyhow::Result<()> {
    let prev = rows.last();
    let delta = |name: &str| -> u64 {
        let now = row.counts.get(name).copied().unwrap_or(0);
        let before = prev.and_then(|p| p.counts.get(name).copied()).unwrap_or(0);
        now.saturating_sub(before)
    };
    let span = prev.map(|p| row.n - p.n).unwrap_or(row.n).max(1) as f64;
    let cpu_pct =
        (row.client_cpu_us - prev.map(|p| p.client_cpu_us).unwrap_or(0)) as f64 / 1e6 / span
            * 100.0;
    let server_cpu_pct = match (
        prev.and_then(|p| p.server().map(|s| (s, p.procs_at_us))),
        row.server(),
    ) {
        (Some((a, a_at)), Some(b)) => {
            let span_s = row.procs_at_us.saturating_sub(a_at).max(1) as f64 / 1e6;
            Some(b.cpu_us.saturating_sub(a.cpu_us) as f64 / 1e6 / span_s * 100.0)
        }
        _ => None,
    };
    let phase = timeline
        .phase(timeline.start_us + row.n * 1_000_000 - 500_000)
        .as_str();
    if let Some(f) = csv {
        let mut cells = vec![row.n.to_string(), phase.to_string(), row.open.to_string()];
        cells.extend(
            Count::ALL
                .iter()
                .map(|c| format!("{:.0}", delta(c.name()) as f64 / span)),
        );
        for lat in lats_of(scenario) {
            match row.lat.get(lat.name()) {
                Some(s) => cells.extend([s.p50, s.p99, s.max].iter().map(|v| format!("{v:.3}"))),
                None => cells.extend(["", "", ""].iter().map(|s| s.to_string())),
            }
        }
        cells.push(format!("{cpu_pct:.1}"));
        cells.push(
            server_cpu_pct
                .map(|v| format!("{v:.1}"))
                .unwrap_or_default(),
        );
        cells.push(
            row.server()
                .map(|s| s.rss_kib.to_string())
                .unwrap_or_default(),
        );
        writeln!(f, "{}", cells.join(","))?;
    }
    let head = headline(scenario);
    let p99 = row
        .lat
        .get(head.name())
        .map(|s| format!("{:.2}ms", s.p99))
        .unwrap_or_else(|| "-".into());
    let errors: u64 = Count::ERRORS
        .iter()
        .map(|c| row.counts.get(c.name()).copied().unwrap_or(0))
        .sum();
    let rates = match scenario {
        Scenario::Connect(_) => format!("conn/s {:>5}", delta("connects")),
        Scenario::Chat(_) => format!(
            "sent/s {:>6} dlv/s {:>6}",
            delta("sent"),
            delta("delivered")
        ),
        Scenario::Churn(_) => format!(
            "cycles/s {:>4} dlv/s {:>5}",
            delta("cycles"),
            delta("delivered")
        ),
        Scenario::Api(_) => format!("req/s {:>5}", delta("http_requests")),
    };
    let line = format!(
        "{phase:<6} {:>3}/{:.0}s open {:>6} {rates} p99 {} {} err {errors} cpu {:.0}%{}",
        row.n,
        total_s,
        row.open,
        head.name(),
        p99,
        cpu_pct,
        server_cpu_pct
            .map(|v| format!(" srv {v:.0}%"))
            .unwrap_or_default(),
    );
    match bar {
        Some(b) => b.set_message(line),
        None if !quiet && row.n.is_multiple_of(5) => eprintln!("{line}"),
        None => {}
    }
    Ok(())
}
