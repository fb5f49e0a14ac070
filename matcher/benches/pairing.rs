//! Benchmark of the matcher on the real adapters (Postgres and Redis of
//! this machine): how fast one leader drains a big queue, and how long a
//! user waits for `match_found` under a steady stream of searches.
//!
//! ```text
//! cargo bench -p io-matcher --bench pairing                      # both, 3 runs each
//! cargo bench -p io-matcher --bench pairing -- throughput --users 100000
//! cargo bench -p io-matcher --bench pairing -- latency --rate 1000 --seconds 20
//! ```
//!
//! Options: `--users N` (throughput queue, default 100,000), `--rate R` and
//! `--seconds S` (latency arrivals, default 1,000/s for 20 s),
//! `--active-sessions A` (latency: sessions already under way between other
//! users when arrivals start, as in a busy hour; default 0), `--runs K`
//! (default 3; medians are reported), `--late-ms L` (an arrival sent this
//! long after its schedule is late, default 5), `--timeout S` (give up on a
//! run, default 300), `--out DIR` (default `<workspace>/artifacts/bench`).
//! The environment's `IO_TEST_DATABASE_URL` and `IO_TEST_REDIS_URL` pick the
//! servers, as for the tests.
//!
//! Every run has a fresh database (dropped after) and a fresh Redis key
//! prefix (deleted after). Users are bulk-inserted in SQL and put online on
//! a fake gateway node; that setup is not measured.
//!
//! 1. **Throughput**: N users (alternately a dude seeking girls and a girl
//!    seeking dudes) are queued up front, then one matcher starts. Measured:
//!    the time until the bus queue is empty (pairs committed per second) and
//!    until every `match_found` (two per pair) reached the fake node's inbox
//!    (pairs announced per second).
//! 2. **Latency**: a matcher runs, then searches arrive at a fixed rate (an
//!    open model: `queue_join` at each scheduled instant, with that instant
//!    as `joined_at_ms`, whether or not earlier joins have finished).
//!    Measured per user: scheduled join to `match_found` in the inbox.
//!
//! Besides those clocks a run records the matcher's CPU (this process's
//! `getrusage` minus the benchmark's own driver thread, which does the
//! joins and inbox reads on a runtime of its own), the CPU of Postgres,
//! Redis and the whole machine (the machine is shared: the load average and
//! "other" CPU say how noisy a run was), the matcher's metrics and its
//! per-round debug log (where a round's time went). The metrics are the
//! whole process's: the driver's own bus calls (`queue_join`,
//! `queue_counts`, `read_inbox`) appear beside the matcher's.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use io_domain::ports::{Bus, InboxCursor};
use io_domain::types::UserId;
use io_matcher::{Matcher, MatcherConfig};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use support::probes::{self, CpuReport, CpuWindow, Round, RoundLayer, RoundLog, Tally};
use support::world::{self, fake_node, BenchUser, World};

// --- command line ------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Throughput,
    Latency,
}

#[derive(Debug, Clone)]
struct Args {
    which: Vec<Which>,
    users: usize,
    rate: f64,
    seconds: f64,
    runs: usize,
    /// Sessions already active when the latency run starts.
    active: usize,
    late_ms: f64,
    timeout: Duration,
    out: PathBuf,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args = Args {
            which: Vec::new(),
            users: 100_000,
            rate: 1_000.0,
            seconds: 20.0,
            runs: 3,
            active: 0,
            late_ms: 5.0,
            timeout: Duration::from_secs(300),
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts/bench"),
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                // cargo bench passes this to every bench binary.
                "--bench" => {}
                "throughput" => args.which.push(Which::Throughput),
                "latency" => args.which.push(Which::Latency),
                "--users" => args.users = value("--users")?.parse()?,
                "--rate" => args.rate = value("--rate")?.parse()?,
                "--seconds" => args.seconds = value("--seconds")?.parse()?,
                "--runs" => args.runs = value("--runs")?.parse()?,
                "--active-sessions" => args.active = value("--active-sessions")?.parse()?,
                "--late-ms" => args.late_ms = value("--late-ms")?.parse()?,
                "--timeout" => args.timeout = Duration::from_secs_f64(value("--timeout")?.parse()?),
                "--out" => args.out = value("--out")?.into(),
                "-h" | "--help" => {
                    println!(
                        "usage: cargo bench -p io-matcher --bench pairing -- [throughput] [latency] \
                         [--users N] [--rate R] [--seconds S] [--active-sessions A] [--runs K] [--late-ms L] \
                         [--timeout S] [--out DIR]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (try --help)"),
            }
        }
        if args.which.is_empty() {
            args.which = vec![Which::Throughput, Which::Latency];
        }
        if args.users < 2 || args.rate <= 0.0 || args.seconds <= 0.0 || args.runs == 0 {
            bail!("--users must be at least 2; --rate, --seconds and --runs positive");
        }
        Ok(args)
    }
}

/// Production settings of the matcher role (`IO_MATCHER_LEASE_MS` default).
fn matcher_config() -> MatcherConfig {
    MatcherConfig {
        holder: "matcher-bench".into(),
        lease_ttl: Duration::from_secs(3),
        renew_every: Duration::from_secs(1),
        ..MatcherConfig::default()
    }
}

// --- the driver thread -------------------------------------------------------

/// Work that must not count as the matcher's: it runs on a thread of its
/// own with a single-threaded runtime and its own Redis connections, so its
/// CPU is that thread's. `work` gets a bus, is told when it may begin and
/// returns what it saw plus the thread's CPU from `go` to its end.
struct Driver<T> {
    ready: oneshot::Receiver<Result<()>>,
    go: Option<oneshot::Sender<Instant>>,
    done: oneshot::Receiver<Result<(T, Duration)>>,
    thread: std::thread::JoinHandle<()>,
}

impl<T: Send + 'static> Driver<T> {
    fn spawn<F, Fut>(redis: &world::RedisKeys, work: F) -> Result<Driver<T>>
    where
        F: FnOnce(Arc<dyn Bus>, InboxCursor, Instant) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let (url, prefix) = (redis.url.clone(), redis.prefix.clone());
        let (ready_tx, ready) = oneshot::channel();
        let (go, go_rx) = oneshot::channel::<Instant>();
        let (done_tx, done) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("bench-driver".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let setup = async {
                        let bus = World::another_bus(&url, &prefix).await?;
                        // Pin "latest" now, so every envelope after it is read.
                        let mut cursor = InboxCursor::latest();
                        bus.read_inbox(&fake_node(), &mut cursor, 1, Duration::from_millis(1))
                            .await?;
                        anyhow::Ok((bus, cursor))
                    };
                    let (bus, cursor) = match setup.await {
                        Ok(v) => {
                            let _ = ready_tx.send(Ok(()));
                            v
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let Ok(t0) = go_rx.await else { return };
                    let cpu = probes::thread_cpu();
                    let out = work(bus, cursor, t0).await;
                    let used = probes::thread_cpu().saturating_sub(cpu);
                    let _ = done_tx.send(out.map(|o| (o, used)));
                });
            })?;
        Ok(Driver {
            ready,
            go: Some(go),
            done,
            thread,
        })
    }

    async fn wait_ready(&mut self) -> Result<()> {
        (&mut self.ready)
            .await
            .context("the driver thread died while connecting")?
    }

    /// Let the work begin; `t0` is its time origin.
    fn begin(&mut self, t0: Instant) -> Result<()> {
        self.go
            .take()
            .context("the driver was started twice")?
            .send(t0)
            .map_err(|_| anyhow::anyhow!("the driver thread died"))
    }

    async fn finish(self) -> Result<(T, Duration)> {
        let out = self.done.await.context("the driver thread died")?;
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        out
    }
}

/// Which user an envelope of `match_found` is for, if it is one.
fn match_found_for(envelope: &io_domain::model::Envelope) -> Option<UserId> {
    #[derive(serde::Deserialize)]
    struct Frame<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
    }
    let frame: Frame = serde_json::from_str(&envelope.frame).ok()?;
    (frame.kind == "match_found").then_some(envelope.to)
}

/// Envelopes read per `read_inbox`, and how long one blocks.
const INBOX_READ: usize = 2_000;
const INBOX_BLOCK: Duration = Duration::from_millis(50);

/// A matcher on the main runtime, stopped cleanly on `stop`.
struct RunningMatcher {
    matcher: Arc<Matcher>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningMatcher {
    fn start(world: &World) -> RunningMatcher {
        let matcher = Arc::new(Matcher::new(world.chat(), matcher_config()));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (m, s) = (matcher.clone(), shutdown.clone());
            async move { m.run(s).await }
        });
        RunningMatcher {
            matcher,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

// --- rounds ------------------------------------------------------------------

/// Where the matcher's rounds spent their time (from its debug log).
fn rounds_json(rounds: &[Round], t0: Instant) -> Value {
    let paired: Vec<&Round> = rounds.iter().filter(|r| r.get("pairs") > 0).collect();
    let sum = |f: &str| paired.iter().map(|r| r.get(f)).sum::<u64>();
    let total_ms = |r: &Round| {
        r.get("load_ms") + r.get("pairing_ms") + r.get("presence_ms") + r.get("commit_ms")
    };
    json!({
        "rounds_with_pairs": paired.len(),
        "pairs": sum("pairs"),
        "first_round_done_s": paired.first().map(|r| r.at.duration_since(t0).as_secs_f64()),
        "last_round_done_s": paired.last().map(|r| r.at.duration_since(t0).as_secs_f64()),
        "max_pairs_per_round": paired.iter().map(|r| r.get("pairs")).max(),
        "max_round_ms": paired.iter().map(|r| total_ms(r)).max(),
        "sum_ms": {
            "load": sum("load_ms"),
            "pairing": sum("pairing_ms"),
            "presence": sum("presence_ms"),
            "commit": sum("commit_ms"),
            "commit_store": sum("store_ms"),
            "commit_leave": sum("leave_ms"),
        },
    })
}

// --- throughput --------------------------------------------------------------

#[derive(Default)]
struct DrainSeen {
    queue_empty: Option<Duration>,
    first_found: Option<Duration>,
    all_found: Option<Duration>,
    found: usize,
    /// Each half second: (seconds, users still queued, match_found read).
    timeline: Vec<(f64, u64, usize)>,
}

async fn throughput_run(args: &Args, tally: &Tally, log: &RoundLog, run: usize) -> Result<Value> {
    let world = World::new().await?;
    let setup = Instant::now();
    let users = world::couples(args.users);
    world.insert_users(&users).await?;
    world.online(&users).await?;
    world.queue_all(&users).await?;
    let queued = world.bus.queue_counts().await?;
    if (queued.dude + queued.girl) as usize != users.len() {
        bail!("queued {queued:?}, expected {}", users.len());
    }
    let pairs = users.len() / 2;
    eprintln!(
        "throughput run {run}: {} users created, online and queued in {:.1} s",
        users.len(),
        setup.elapsed().as_secs_f64()
    );

    let expected = 2 * pairs;
    let timeout = args.timeout;
    let mut driver = Driver::spawn(&world.redis, move |bus, mut cursor, t0| async move {
        let seen = std::cell::RefCell::new(DrainSeen::default());
        let deadline = t0 + timeout;
        let watch_queue = async {
            let mut next_sample = t0;
            loop {
                let c = bus.queue_counts().await?;
                let left = c.dude + c.girl;
                let now = Instant::now();
                if now >= next_sample || left == 0 {
                    let mut s = seen.borrow_mut();
                    let found = s.found;
                    s.timeline
                        .push((now.duration_since(t0).as_secs_f64(), left, found));
                    next_sample += Duration::from_millis(500);
                }
                if left == 0 {
                    seen.borrow_mut().queue_empty = Some(now.duration_since(t0));
                    return anyhow::Ok(());
                }
                if now >= deadline {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let read_inbox = async {
            while Instant::now() < deadline {
                let batch = bus
                    .read_inbox(&fake_node(), &mut cursor, INBOX_READ, INBOX_BLOCK)
                    .await?;
                let n = batch.iter().filter_map(match_found_for).count();
                if n == 0 {
                    continue;
                }
                let mut s = seen.borrow_mut();
                let now = t0.elapsed();
                s.first_found.get_or_insert(now);
                s.found += n;
                if s.found >= expected {
                    s.all_found = Some(now);
                    break;
                }
            }
            anyhow::Ok(())
        };
        let (a, b) = tokio::join!(watch_queue, read_inbox);
        a?;
        b?;
        Ok(seen.into_inner())
    })?;
    driver.wait_ready().await?;

    tally.reset();
    let _ = log.take();
    let cpu = CpuWindow::start();
    let t0 = Instant::now();
    let matcher = RunningMatcher::start(&world);
    driver.begin(t0)?;
    let (seen, driver_cpu) = Driver::finish(driver).await?;
    // The pool keeps its connections open for minutes: they are all there.
    let ours: HashSet<i32> = world.backend_pids().await?.into_iter().collect();
    let cpu = cpu.finish(driver_cpu, &ours);
    let metrics = tally.to_json();
    matcher.stop().await;
    let (rounds, warnings) = log.take();

    let s = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    let committed_per_s = seen.queue_empty.map(|d| pairs as f64 / d.as_secs_f64());
    let announced_per_s = seen.all_found.map(|d| pairs as f64 / d.as_secs_f64());
    let result = json!({
        "run": run,
        "users": users.len(),
        "pairs": pairs,
        "completed": seen.queue_empty.is_some() && seen.all_found.is_some(),
        "queue_empty_s": s(seen.queue_empty),
        "first_match_found_s": s(seen.first_found),
        "all_match_found_s": s(seen.all_found),
        "match_found_read": seen.found,
        "committed_pairs_per_s": committed_per_s,
        "announced_pairs_per_s": announced_per_s,
        "cpu": cpu.to_json(),
        "rounds": rounds_json(&rounds, t0),
        "matcher_warnings": warnings,
        "metrics": metrics,
        "timeline": seen.timeline.iter().map(|(t, q, f)| json!([t, q, f])).collect::<Vec<_>>(),
    });
    print_throughput_run(&result, &cpu);
    Ok(result)
}

fn print_throughput_run(r: &Value, cpu: &CpuReport) {
    let f = |k: &str| r[k].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
    let rate = |k: &str| r[k].as_f64().map_or("-".into(), |v| format!("{v:.0}"));
    println!(
        "throughput run {}: {} pairs; queue empty {} s ({} pairs/s committed); all match_found {} s \
         ({} pairs/s announced)",
        r["run"],
        r["pairs"],
        f("queue_empty_s"),
        rate("committed_pairs_per_s"),
        f("all_match_found_s"),
        rate("announced_pairs_per_s"),
    );
    print_cpu(cpu);
    let rounds = &r["rounds"];
    println!(
        "  rounds with pairs {}, first done at {:.2} s; time in rounds (ms): load {} pairing {} \
         presence {} commit {} (create_sessions {}, queue_leave {})",
        rounds["rounds_with_pairs"],
        rounds["first_round_done_s"].as_f64().unwrap_or(f64::NAN),
        rounds["sum_ms"]["load"],
        rounds["sum_ms"]["pairing"],
        rounds["sum_ms"]["presence"],
        rounds["sum_ms"]["commit"],
        rounds["sum_ms"]["commit_store"],
        rounds["sum_ms"]["commit_leave"],
    );
}

fn print_cpu(cpu: &CpuReport) {
    let pct = |s: f64| 100.0 * s / cpu.wall_s.max(1e-9);
    println!(
        "  cpu over {:.1} s (% of one core): matcher {:.0}%, driver {:.0}%, postgres this db {:.0}% \
         (all {:.0}%), redis {:.0}%, other {:.0}%; machine busy {:.0}% of {} cores; load {:.2} -> {:.2}",
        cpu.wall_s,
        pct(cpu.matcher_s),
        pct(cpu.driver_s),
        pct(cpu.postgres_ours_s),
        pct(cpu.postgres_all_s),
        pct(cpu.redis_s),
        pct(cpu.other_s()),
        pct(cpu.machine_busy_s) / cpu.cores as f64,
        cpu.cores,
        cpu.loadavg_start[0],
        cpu.loadavg_end[0],
    );
}

// --- latency -----------------------------------------------------------------

struct ArrivalsSeen {
    /// Scheduled join to `match_found`, microseconds.
    latency: Histogram<u64>,
    expected: usize,
    found: usize,
    duplicates: usize,
    late: usize,
    max_late_ms: f64,
    join_errors: usize,
    /// From the first scheduled join to the last `match_found`.
    span: Duration,
}

async fn latency_run(args: &Args, tally: &Tally, log: &RoundLog, run: usize) -> Result<Value> {
    let world = World::new().await?;
    let n = ((args.rate * args.seconds).round() as usize).max(2);
    let users = world::couples(n);
    world.insert_users(&users).await?;
    world.online(&users).await?;
    if args.active > 0 {
        world.active_sessions(args.active).await?;
    }
    let matcher = RunningMatcher::start(&world);
    let elected = Instant::now();
    while !matcher.matcher.is_leader() {
        if elected.elapsed() > Duration::from_secs(10) {
            bail!("the matcher did not take the lease within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the first (empty) snapshot and round pass.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let period = Duration::from_secs_f64(1.0 / args.rate);
    let (late_ms, timeout) = (args.late_ms, args.timeout);
    let expected = 2 * (n / 2);
    let schedule_users: Vec<BenchUser> = users.clone();
    let mut driver = Driver::spawn(&world.redis, move |bus, mut cursor, start| async move {
        let users = schedule_users;
        let index: HashMap<UserId, usize> =
            users.iter().enumerate().map(|(i, u)| (u.id, i)).collect();
        let at = |i: usize| start + period.mul_f64(i as f64);
        let wall_start_ms = chrono::Utc::now().timestamp_millis()
            + start.saturating_duration_since(Instant::now()).as_millis() as i64;
        let join_errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let deadline = at(users.len()) + timeout.min(Duration::from_secs(60));

        let generate = {
            let (bus, users, join_errors) = (bus.clone(), users.clone(), join_errors.clone());
            async move {
                let (mut late, mut max_late) = (0usize, Duration::ZERO);
                let mut joins = tokio::task::JoinSet::new();
                for (i, u) in users.iter().enumerate() {
                    let scheduled = at(i);
                    tokio::time::sleep_until(scheduled.into()).await;
                    let behind = Instant::now().saturating_duration_since(scheduled);
                    if behind.as_secs_f64() * 1e3 > late_ms {
                        late += 1;
                    }
                    max_late = max_late.max(behind);
                    let entry =
                        u.entry(wall_start_ms + period.mul_f64(i as f64).as_millis() as i64);
                    let (bus, errors) = (bus.clone(), join_errors.clone());
                    joins.spawn(async move {
                        if bus.queue_join(&entry).await.is_err() {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                    while joins.try_join_next().is_some() {}
                }
                while joins.join_next().await.is_some() {}
                (late, max_late)
            }
        };
        let read = async {
            let mut latency = probes::wide_histogram();
            let mut seen = vec![false; users.len()];
            let (mut found, mut duplicates, mut last) = (0usize, 0usize, start);
            while found < expected && Instant::now() < deadline {
                let batch = bus
                    .read_inbox(&fake_node(), &mut cursor, INBOX_READ, INBOX_BLOCK)
                    .await?;
                let now = Instant::now();
                for user in batch.iter().filter_map(match_found_for) {
                    let Some(&i) = index.get(&user) else { continue };
                    if std::mem::replace(&mut seen[i], true) {
                        duplicates += 1;
                        continue;
                    }
                    found += 1;
                    last = now;
                    let waited = now.saturating_duration_since(at(i)).as_micros() as u64;
                    latency.saturating_record(waited.max(1));
                }
            }
            anyhow::Ok((latency, found, duplicates, last))
        };
        let ((late, max_late), read) = tokio::join!(generate, read);
        let (latency, found, duplicates, last) = read?;
        Ok(ArrivalsSeen {
            latency,
            expected,
            found,
            duplicates,
            late,
            max_late_ms: max_late.as_secs_f64() * 1e3,
            join_errors: join_errors.load(std::sync::atomic::Ordering::Relaxed),
            span: last.saturating_duration_since(start),
        })
    })?;
    driver.wait_ready().await?;

    tally.reset();
    let _ = log.take();
    let cpu = CpuWindow::start();
    let start = Instant::now() + Duration::from_millis(100);
    driver.begin(start)?;
    let mut ours: HashSet<i32> = world.backend_pids().await?.into_iter().collect();
    let (seen, driver_cpu) = Driver::finish(driver).await?;
    ours.extend(world.backend_pids().await?);
    let cpu = cpu.finish(driver_cpu, &ours);
    let metrics = tally.to_json();
    matcher.stop().await;
    let (rounds, warnings) = log.take();

    let ms = |q: f64| seen.latency.value_at_quantile(q) as f64 / 1e3;
    let result = json!({
        "run": run,
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "active_sessions_before": args.active,
        "arrivals": n,
        "expected_match_found": seen.expected,
        "match_found": seen.found,
        "missing": seen.expected - seen.found.min(seen.expected),
        "duplicates": seen.duplicates,
        "late_arrivals": seen.late,
        "late_ms": args.late_ms,
        "max_arrival_lateness_ms": seen.max_late_ms,
        "join_errors": seen.join_errors,
        "span_s": seen.span.as_secs_f64(),
        "latency_ms": {
            "p50": ms(0.5),
            "p90": ms(0.9),
            "p99": ms(0.99),
            "p999": ms(0.999),
            "max": seen.latency.max() as f64 / 1e3,
            "mean": seen.latency.mean() / 1e3,
        },
        "cpu": cpu.to_json(),
        "rounds": rounds_json(&rounds, start),
        "matcher_warnings": warnings,
        "metrics": metrics,
    });
    print_latency_run(&result, &cpu);
    Ok(result)
}

fn print_latency_run(r: &Value, cpu: &CpuReport) {
    let l = &r["latency_ms"];
    let v = |k: &str| l[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "latency run {}: {} arrivals at {}/s; match_found {} of {} (dup {}); late arrivals {} \
         (max {:.1} ms); latency ms p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
        r["run"],
        r["arrivals"],
        r["rate_per_s"],
        r["match_found"],
        r["expected_match_found"],
        r["duplicates"],
        r["late_arrivals"],
        r["max_arrival_lateness_ms"].as_f64().unwrap_or(f64::NAN),
        v("p50"),
        v("p90"),
        v("p99"),
        v("max"),
    );
    print_cpu(cpu);
    let rounds = &r["rounds"];
    println!(
        "  rounds with pairs {} (max {} pairs, max {} ms); time in rounds (ms): load {} pairing {} \
         presence {} commit {} (create_sessions {}, queue_leave {})",
        rounds["rounds_with_pairs"],
        rounds["max_pairs_per_round"],
        rounds["max_round_ms"],
        rounds["sum_ms"]["load"],
        rounds["sum_ms"]["pairing"],
        rounds["sum_ms"]["presence"],
        rounds["sum_ms"]["commit"],
        rounds["sum_ms"]["commit_store"],
        rounds["sum_ms"]["commit_leave"],
    );
}

// --- summary -----------------------------------------------------------------

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The number at `path` in `run`, if there is one.
fn lookup(run: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(run, |v, k| v.get(*k))?.as_f64()
}

/// The median over runs of the number at `path` (e.g. `["latency_ms", "p99"]`).
fn median_of(runs: &[Value], path: &[&str]) -> Option<f64> {
    median(runs.iter().filter_map(|r| lookup(r, path)).collect())
}

/// (label, path, digits) of the rows of a summary table.
type Row = (&'static str, &'static [&'static str], usize);

const THROUGHPUT_ROWS: &[Row] = &[
    (
        "pairs/s committed (queue empty)",
        &["committed_pairs_per_s"],
        0,
    ),
    (
        "pairs/s announced (all match_found)",
        &["announced_pairs_per_s"],
        0,
    ),
    ("queue empty after (s)", &["queue_empty_s"], 2),
    ("all match_found after (s)", &["all_match_found_s"], 2),
    (
        "first round done after (s)",
        &["rounds", "first_round_done_s"],
        2,
    ),
];

/// Printed after either table's own rows.
const CPU_ROWS: &[Row] = &[
    (
        "matcher cpu (% of one core)",
        &["cpu", "matcher_cpu_percent"],
        0,
    ),
    (
        "postgres cpu, this db (s)",
        &["cpu", "postgres_this_db_cpu_s"],
        1,
    ),
    ("redis cpu (s)", &["cpu", "redis_cpu_s"], 1),
    ("other cpu on the machine (s)", &["cpu", "other_cpu_s"], 1),
];

const LATENCY_ROWS: &[Row] = &[
    ("p50 (ms)", &["latency_ms", "p50"], 1),
    ("p90 (ms)", &["latency_ms", "p90"], 1),
    ("p99 (ms)", &["latency_ms", "p99"], 1),
    ("max (ms)", &["latency_ms", "max"], 1),
    (
        "join to commit p99 (ms, wait metric)",
        &["metrics", "histograms", "io_matcher_wait_seconds", "p99"],
        1,
    ),
    (
        "announce batch p99 (ms)",
        &[
            "metrics",
            "histograms",
            "io_matcher_announce_seconds",
            "p99",
        ],
        1,
    ),
    (
        "round p99 (ms)",
        &["metrics", "histograms", "io_matcher_round_seconds", "p99"],
        1,
    ),
    ("late arrivals", &["late_arrivals"], 0),
    ("missing match_found", &["missing"], 0),
];

fn summarize(title: &str, runs: &[Value], rows: &[Row]) -> Value {
    println!("\n{title}");
    let mut header = format!("  {:<38}", "");
    for i in 0..runs.len() {
        header.push_str(&format!("{:>12}", format!("run {}", i + 1)));
    }
    header.push_str(&format!("{:>12}", "median"));
    println!("{header}");
    let mut medians = serde_json::Map::new();
    let mut load = format!("  {:<38}", "load average (1 min) start/end");
    for r in runs {
        let la = |k: &str| r["cpu"][k][0].as_f64().unwrap_or(f64::NAN);
        load.push_str(&format!(
            "{:>12}",
            format!("{:.1}/{:.1}", la("loadavg_start"), la("loadavg_end"))
        ));
    }
    for &(label, path, digits) in rows.iter().chain(CPU_ROWS) {
        let mut line = format!("  {label:<38}");
        for r in runs {
            line.push_str(&match lookup(r, path) {
                Some(x) => format!("{x:>12.digits$}"),
                None => format!("{:>12}", "-"),
            });
        }
        let m = median_of(runs, path);
        line.push_str(&match m {
            Some(x) => format!("{x:>12.digits$}"),
            None => format!("{:>12}", "-"),
        });
        println!("{line}");
        medians.insert(path.join("."), json!(m));
    }
    println!("{load}");
    Value::Object(medians)
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

// --- main --------------------------------------------------------------------

fn main() -> Result<()> {
    let args = Args::parse()?;
    let log = Arc::new(RoundLog::default());
    tracing_subscriber::registry()
        .with(
            RoundLayer(log.clone())
                .with_filter(Targets::new().with_target("io_matcher", tracing::Level::DEBUG)),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(LevelFilter::WARN),
        )
        .init();
    let tally = Tally::install();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(probes::cores())
        .enable_all()
        .build()?;
    let started_at = chrono::Utc::now();
    let loadavg_start = probes::loadavg();
    println!(
        "matcher pairing benchmark: {} cores, load average {:.2} {:.2} {:.2}",
        probes::cores(),
        loadavg_start[0],
        loadavg_start[1],
        loadavg_start[2]
    );

    let mut report = json!({
        "bench": "matcher-pairing",
        "started_at": started_at.to_rfc3339(),
        "git_commit": git(&["rev-parse", "HEAD"]),
        // Uncommitted changes anywhere in the workspace are built in too.
        "uncommitted_changes": git(&["status", "--porcelain", "--untracked-files=no", "--", ".."])
            .map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>()),
        "args": {
            "users": args.users,
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "runs": args.runs,
            "active_sessions": args.active,
            "late_ms": args.late_ms,
        },
        "machine": { "cores": probes::cores(), "loadavg_start": loadavg_start },
        "targets": { "committed_pairs_per_s_min": 5000, "latency_p99_ms_max": 100 },
    });

    runtime.block_on(async {
        for &which in &args.which {
            let mut runs = Vec::new();
            for run in 1..=args.runs {
                let result = match which {
                    Which::Throughput => throughput_run(&args, &tally, &log, run).await,
                    Which::Latency => latency_run(&args, &tally, &log, run).await,
                };
                runs.push(result.with_context(|| format!("{which:?} run {run}"))?);
            }
            let (key, title, rows) = match which {
                Which::Throughput => (
                    "throughput",
                    format!(
                        "throughput: {} users queued up front, one matcher ({} runs)",
                        args.users, args.runs
                    ),
                    THROUGHPUT_ROWS,
                ),
                Which::Latency => (
                    "latency",
                    format!(
                        "latency: find_match at {}/s for {} s, {} sessions under way, scheduled \
                         join to match_found ({} runs)",
                        args.rate, args.seconds, args.active, args.runs
                    ),
                    LATENCY_ROWS,
                ),
            };
            let medians = summarize(&title, &runs, rows);
            report[key] = json!({ "median": medians, "runs": runs });
        }
        anyhow::Ok(())
    })?;
    report["machine"]["loadavg_end"] = json!(probes::loadavg());

    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let path = out.join(format!(
        "matcher-{}.json",
        started_at.format("%Y%m%dT%H%M%SZ")
    ));
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("write {}", path.display()))?;
    println!("\nwrote {}", path.display());
    Ok(())
}
