//! What a run observes besides its own clocks: CPU time (this process, one
//! thread, the Postgres and Redis servers, the whole machine), the load
//! average, the matcher's metrics (a recorder of its own) and the
//! matcher's per-round debug log (a tracing layer of its own).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use metrics::{
    Counter, CounterFn, Gauge, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use serde_json::{json, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

// --- CPU -------------------------------------------------------------------

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes into the struct we hand it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User + system CPU of this whole process so far.
pub fn process_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// User + system CPU of the calling thread so far.
pub fn thread_cpu() -> Duration {
    rusage(libc::RUSAGE_THREAD)
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> [f64; 3] {
    let raw = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = raw
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (busy, total) jiffies of all CPUs together, from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let raw = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = raw.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice;
    // guest time is already inside user.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// utime + stime jiffies of every process whose name is one of `names`.
fn server_ticks(names: &[&str]) -> HashMap<i32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The name is in parentheses and may hold spaces: split after it.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        if !names.contains(&name) {
            continue;
        }
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let field = |i: usize| rest.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        // Fields 14 and 15 of stat; `rest` starts at field 3.
        out.insert(pid, (name.to_owned(), field(11) + field(12)));
    }
    out
}

const SERVERS: &[&str] = &["postgres", "redis-server"];

/// CPU counters at the start of a measured window.
pub struct CpuWindow {
    started: Instant,
    process: Duration,
    machine: (u64, u64),
    servers: HashMap<i32, (String, u64)>,
    loadavg: [f64; 3],
}

/// CPU used during a window, in seconds, and the machine's state.
#[derive(Debug, Clone, Default)]
pub struct CpuReport {
    pub wall_s: f64,
    /// This process minus the driver thread: the matcher (and its store
    /// pool and bus connections).
    pub matcher_s: f64,
    /// The benchmark's own thread (queue joins, inbox reads).
    pub driver_s: f64,
    /// Postgres backends of this run's database.
    pub postgres_ours_s: f64,
    /// Every Postgres process (other engineers' tests included).
    pub postgres_all_s: f64,
    /// The Redis server (shared with everyone).
    pub redis_s: f64,
    /// Busy CPU of the whole machine, all cores together.
    pub machine_busy_s: f64,
    pub cores: usize,
    pub loadavg_start: [f64; 3],
    pub loadavg_end: [f64; 3],
}

impl CpuWindow {
    pub fn start() -> CpuWindow {
        CpuWindow {
            started: Instant::now(),
            process: process_cpu(),
            machine: machine_ticks(),
            servers: server_ticks(SERVERS),
            loadavg: loadavg(),
        }
    }

    /// Close the window. `driver` is the CPU of the benchmark's own thread
    /// during it; `ours` are this run's Postgres backends.
    pub fn finish(&self, driver: Duration, ours: &HashSet<i32>) -> CpuReport {
        let wall = self.started.elapsed().as_secs_f64();
        let hz = clock_ticks();
        let process = (process_cpu().saturating_sub(self.process)).as_secs_f64();
        let (busy, _) = machine_ticks();
        let servers = server_ticks(SERVERS);
        let (mut pg_ours, mut pg_all, mut redis) = (0u64, 0u64, 0u64);
        for (pid, (name, ticks)) in &servers {
            // A process that started during the window counts in full.
            let before = self
                .servers
                .get(pid)
                .filter(|(n, _)| n == name)
                .map_or(0, |(_, t)| *t);
            let used = ticks.saturating_sub(before);
            match name.as_str() {
                "postgres" => {
                    pg_all += used;
                    if ours.contains(pid) {
                        pg_ours += used;
                    }
                }
                _ => redis += used,
            }
        }
        CpuReport {
            wall_s: wall,
            matcher_s: (process - driver.as_secs_f64()).max(0.0),
            driver_s: driver.as_secs_f64(),
            postgres_ours_s: pg_ours as f64 / hz,
            postgres_all_s: pg_all as f64 / hz,
            redis_s: redis as f64 / hz,
            machine_busy_s: busy.saturating_sub(self.machine.0) as f64 / hz,
            cores: cores(),
            loadavg_start: self.loadavg,
            loadavg_end: loadavg(),
        }
    }
}

impl CpuReport {
    pub fn to_json(&self) -> Value {
        let pct = |s: f64| 100.0 * s / self.wall_s.max(1e-9);
        json!({
            "wall_s": self.wall_s,
            "matcher_cpu_s": self.matcher_s,
            "matcher_cpu_percent": pct(self.matcher_s),
            "driver_cpu_s": self.driver_s,
            "postgres_this_db_cpu_s": self.postgres_ours_s,
            "postgres_all_cpu_s": self.postgres_all_s,
            "redis_cpu_s": self.redis_s,
            "machine_busy_cpu_s": self.machine_busy_s,
            "machine_busy_percent_of_all_cores": pct(self.machine_busy_s) / self.cores as f64,
            "other_cpu_s": self.other_s(),
            "cores": self.cores,
            "loadavg_start": self.loadavg_start,
            "loadavg_end": self.loadavg_end,
        })
    }

    /// Busy CPU of the machine that none of the parties above used: other
    /// engineers' builds and tests.
    pub fn other_s(&self) -> f64 {
        (self.machine_busy_s - self.matcher_s - self.driver_s - self.postgres_all_s - self.redis_s)
            .max(0.0)
    }
}

// --- metrics ---------------------------------------------------------------

/// Every counter and histogram the process records, by key, resettable
/// between windows (handles keep pointing at the same cells).
#[derive(Default)]
pub struct Tally {
    counters: Mutex<BTreeMap<String, Arc<CounterCell>>>,
    histograms: Mutex<BTreeMap<String, Arc<HistogramCell>>>,
}

#[derive(Default)]
struct CounterCell(AtomicU64);

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

/// A histogram from 1 to 2^40 (µs: twelve days) at 3 significant figures.
pub fn wide_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1 << 40, 3).expect("static bounds are valid")
}

/// Values in microseconds for `_seconds` histograms, as recorded otherwise.
struct HistogramCell {
    scale: f64,
    values: Mutex<(Histogram<u64>, f64)>,
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        let scaled = (value * self.scale).round().max(1.0) as u64;
        let mut v = self.values.lock().unwrap_or_else(|p| p.into_inner());
        v.0.saturating_record(scaled);
        v.1 += value;
    }
}

fn key_string(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    if labels.is_empty() {
        return key.name().to_owned();
    }
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Tally {
    /// Install a tally as the process's metrics recorder (once).
    pub fn install() -> Arc<Tally> {
        static TALLY: OnceLock<Arc<Tally>> = OnceLock::new();
        TALLY
            .get_or_init(|| {
                let tally = Arc::new(Tally::default());
                // Only fails if another recorder is installed, which this
                // binary never does.
                let _ = metrics::set_global_recorder(TallyRecorder(tally.clone()));
                tally
            })
            .clone()
    }

    pub fn reset(&self) {
        for c in self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            c.0.store(0, Ordering::Relaxed);
        }
        for h in self
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let mut v = h.values.lock().unwrap_or_else(|p| p.into_inner());
            v.0.reset();
            v.1 = 0.0;
        }
    }

    /// Every non-zero counter and histogram since the last reset; times in
    /// milliseconds.
    pub fn to_json(&self) -> Value {
        let counters: BTreeMap<String, u64> = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, c)| (k.clone(), c.0.load(Ordering::Relaxed)))
            .filter(|(_, v)| *v > 0)
            .collect();
        let mut histograms = BTreeMap::new();
        for (k, h) in self
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let v = h.values.lock().unwrap_or_else(|p| p.into_inner());
            if v.0.is_empty() {
                continue;
            }
            let seconds = h.scale > 1.0;
            // Microseconds to milliseconds for times; sizes as they are.
            let unit = if seconds { 1e-3 } else { 1.0 };
            let q = |q: f64| v.0.value_at_quantile(q) as f64 * unit;
            let total = if seconds { v.1 * 1e3 } else { v.1 };
            histograms.insert(
                k.clone(),
                json!({
                    "unit": if seconds { "ms" } else { "value" },
                    "count": v.0.len(),
                    "sum": total,
                    "mean": total / v.0.len() as f64,
                    "p50": q(0.5),
                    "p90": q(0.9),
                    "p99": q(0.99),
                    "max": v.0.max() as f64 * unit,
                }),
            );
        }
        json!({ "counters": counters, "histograms": histograms })
    }
}

struct TallyRecorder(Arc<Tally>);

impl Recorder for TallyRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = self
            .0
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key_string(key))
            .or_default()
            .clone();
        Counter::from_arc(cell)
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> metrics::Histogram {
        let seconds = key.name().ends_with("_seconds");
        let cell = self
            .0
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key_string(key))
            .or_insert_with(|| {
                Arc::new(HistogramCell {
                    scale: if seconds { 1e6 } else { 1.0 },
                    values: Mutex::new((wide_histogram(), 0.0)),
                })
            })
            .clone();
        metrics::Histogram::from_arc(cell)
    }
}

// --- the matcher's round log --------------------------------------------------

/// One `matcher: round` debug event, with when it was logged.
#[derive(Debug, Clone)]
pub struct Round {
    pub at: Instant,
    pub fields: HashMap<&'static str, u64>,
}

impl Round {
    pub fn get(&self, field: &str) -> u64 {
        self.fields.get(field).copied().unwrap_or(0)
    }
}

/// Collects the matcher's round events and warnings.
#[derive(Default)]
pub struct RoundLog {
    pub rounds: Mutex<Vec<Round>>,
    pub warnings: Mutex<Vec<String>>,
}

impl RoundLog {
    /// Rounds logged since the last call.
    pub fn take(&self) -> (Vec<Round>, Vec<String>) {
        (
            std::mem::take(&mut *self.rounds.lock().unwrap_or_else(|p| p.into_inner())),
            std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner())),
        )
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    numbers: HashMap<&'static str, u64>,
    text: Vec<String>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.numbers.insert(field.name(), value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.numbers.insert(field.name(), value.max(0) as u64);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.text.push(format!("{}={value}", field.name()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.text.push(format!("{}={value:?}", field.name()));
        }
    }
}

/// A tracing layer over [`RoundLog`]; only `io_matcher` events reach it.
pub struct RoundLayer(pub Arc<RoundLog>);

impl<S: tracing::Subscriber> Layer<S> for RoundLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message == "matcher: round" {
            self.0
                .rounds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Round {
                    at: Instant::now(),
                    fields: fields.numbers,
                });
        } else if *event.metadata().level() <= tracing::Level::WARN {
            let mut line = fields.message;
            for (k, v) in fields.numbers {
                line.push_str(&format!(" {k}={v}"));
            }
            for t in fields.text {
                line.push(' ');
                line.push_str(&t);
            }
            self.0
                .warnings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line);
        }
    }
}
