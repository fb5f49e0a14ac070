//! Measurements taken while a scenario runs: latency histograms per phase
//! (hdrhistogram, microseconds), counters, HTTP status counts and a sample of
//! error kinds. Everything here can be turned into a [`Snapshot`] that
//! serializes exactly (histograms in the HdrHistogram V2 format), so worker
//! processes' results merge without losing precision.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Where in the run an event belongs, by its start (scheduled) time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Sockets are still being opened / users paired.
    Ramp,
    /// Full load: the numbers a benchmark quotes.
    Steady,
    /// No new work is scheduled; outstanding answers are awaited.
    Drain,
}

impl Phase {
    pub const ALL: [Phase; 3] = [Phase::Ramp, Phase::Steady, Phase::Drain];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Ramp => "ramp",
            Phase::Steady => "steady",
            Phase::Drain => "drain",
        }
    }
}

/// Latencies the harness measures. Names are the report's keys
/// (`p99_<name>_ms` in thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lat {
    /// Scheduled start → TCP connect, upgrade, `join` → `connected`.
    Connect,
    /// `find_match` sent → `match_found`.
    MatchWait,
    /// Scheduled send time → the sender's own `message_received` (its ack).
    Ack,
    /// Scheduled send time → the partner's `message_received`.
    Delivery,
    /// How late a send left compared with its schedule (client saturation).
    SendLag,
    /// `end_session` sent → `session_ended`.
    End,
    /// `rate_session` sent → `session_rated`.
    Rate,
    /// One whole churn cycle: connect to disconnect.
    Cycle,
    /// HTTP: GET /api/users/profile.
    ProfileGet,
    /// HTTP: PUT /api/users/profile.
    ProfilePut,
    /// HTTP: GET /api/users/online-count.
    OnlineCount,
    /// HTTP: send-magic-link → mailbox → verify-token.
    Signin,
}

impl Lat {
    pub const ALL: [Lat; 12] = [
        Lat::Connect,
        Lat::MatchWait,
        Lat::Ack,
        Lat::Delivery,
        Lat::SendLag,
        Lat::End,
        Lat::Rate,
        Lat::Cycle,
        Lat::ProfileGet,
        Lat::ProfilePut,
        Lat::OnlineCount,
        Lat::Signin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Lat::Connect => "connect",
            Lat::MatchWait => "match_wait",
            Lat::Ack => "ack",
            Lat::Delivery => "delivery",
            Lat::SendLag => "send_lag",
            Lat::End => "end",
            Lat::Rate => "rate",
            Lat::Cycle => "cycle",
            Lat::ProfileGet => "profile_get",
            Lat::ProfilePut => "profile_put",
            Lat::OnlineCount => "online_count",
            Lat::Signin => "signin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Things the harness counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Sockets that reached `connected`.
    Connects,
    /// Sockets that failed to connect, upgrade or join.
    ConnectErrors,
    /// Sockets the server closed (or that broke) before the harness closed them.
    Disconnects,
    /// Connection attempts that started more than the lateness bound after schedule.
    LateStarts,
    /// `find_match` frames sent.
    Searches,
    /// `match_found` received.
    Matched,
    /// Users not matched within the match timeout.
    MatchTimeouts,
    /// Chat messages sent.
    Sent,
    /// Chat messages sent later than the lateness bound after their schedule.
    LateSends,
    /// Own copies (`isMe`) received: the server committed the message.
    Acked,
    /// Partner copies received (first copy of each message).
    Delivered,
    /// Messages seen twice on the same socket.
    Duplicated,
    /// `error` frames from the server.
    ServerErrors,
    /// Frames that could not be understood, or arrived when they made no sense.
    ProtocolErrors,
    /// A step waited past its timeout (ack, end, rate, partner's messages).
    Timeouts,
    /// Completed churn cycles (per user).
    Cycles,
    /// HTTP requests answered.
    HttpRequests,
    /// HTTP answers that were not 2xx.
    HttpErrors,
    /// HTTP requests that got no answer (connection refused/reset, timeout).
    TransportErrors,
}

impl Count {
    pub const ALL: [Count; 19] = [
        Count::Connects,
        Count::ConnectErrors,
        Count::Disconnects,
        Count::LateStarts,
        Count::Searches,
        Count::Matched,
        Count::MatchTimeouts,
        Count::Sent,
        Count::LateSends,
        Count::Acked,
        Count::Delivered,
        Count::Duplicated,
        Count::ServerErrors,
        Count::ProtocolErrors,
        Count::Timeouts,
        Count::Cycles,
        Count::HttpRequests,
        Count::HttpErrors,
        Count::TransportErrors,
    ];

    /// The counters that add up to `errors` in the report.
    pub const ERRORS: [Count; 8] = [
        Count::ConnectErrors,
        Count::Disconnects,
        Count::MatchTimeouts,
        Count::ServerErrors,
        Count::ProtocolErrors,
        Count::Timeouts,
        Count::HttpErrors,
        Count::TransportErrors,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Count::Connects => "connects",
            Count::ConnectErrors => "connect_errors",
            Count::Disconnects => "disconnects",
            Count::LateStarts => "late_starts",
            Count::Searches => "searches",
            Count::Matched => "matched",
            Count::MatchTimeouts => "match_timeouts",
            Count::Sent => "sent",
            Count::LateSends => "late_sends",
            Count::Acked => "acked",
            Count::Delivered => "delivered",
            Count::Duplicated => "duplicated",
            Count::ServerErrors => "server_errors",
            Count::ProtocolErrors => "protocol_errors",
            Count::Timeouts => "timeouts",
            Count::Cycles => "cycles",
            Count::HttpRequests => "http_requests",
            Count::HttpErrors => "http_errors",
            Count::TransportErrors => "transport_errors",
        }
    }
}

/// Highest latency a histogram tracks: one hour in microseconds.
const MAX_US: u64 = 3_600_000_000;
/// At most this many distinct error kinds are kept (the rest only counted).
const MAX_ERROR_KINDS: usize = 64;

/// A histogram of microseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid")
}

struct Slot {
    /// The whole run, by phase.
    by_phase: [Histogram<u64>; 3],
    /// Since the last tick: the time series.
    interval: Histogram<u64>,
}

/// The live recorder every task of a worker writes into.
pub struct Recorder {
    lat: Vec<Mutex<Slot>>,
    counts: Vec<AtomicU64>,
    /// Sockets open right now.
    open: AtomicI64,
    status: Mutex<BTreeMap<String, u64>>,
    error_kinds: Mutex<BTreeMap<String, u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            lat: Lat::ALL
                .iter()
                .map(|_| {
                    Mutex::new(Slot {
                        by_phase: [new_histogram(), new_histogram(), new_histogram()],
                        interval: new_histogram(),
                    })
                })
                .collect(),
            counts: Count::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            open: AtomicI64::new(0),
            status: Mutex::new(BTreeMap::new()),
            error_kinds: Mutex::new(BTreeMap::new()),
        }
    }

    /// Record a latency in microseconds for an event that started in `phase`.
    pub fn record(&self, lat: Lat, phase: Phase, us: u64) {
        let v = us.clamp(1, MAX_US);
        let mut slot = self.lat[lat.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        slot.by_phase[phase as usize].saturating_record(v);
        slot.interval.saturating_record(v);
    }

    pub fn add(&self, c: Count, n: u64) {
        self.counts[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn incr(&self, c: Count) {
        self.add(c, 1);
    }

    pub fn get(&self, c: Count) -> u64 {
        self.counts[c as usize].load(Ordering::Relaxed)
    }

    pub fn socket_opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn socket_closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Count an HTTP answer by `"<kind> <status>"`.
    pub fn status(&self, kind: &str, status: u16) {
        let mut m = self.status.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(format!("{kind} {status}")).or_default() += 1;
    }

    /// Remember what went wrong (bounded: the first kinds only), and count it
    /// under `count`.
    pub fn error(&self, count: Count, kind: impl Into<String>) {
        self.incr(count);
        let mut kind: String = kind.into();
        if kind.len() > 200 {
            let mut cut = 200;
            while !kind.is_char_boundary(cut) {
                cut -= 1;
            }
            kind.truncate(cut);
        }
        let mut m = self.error_kinds.lock().unwrap_or_else(|e| e.into_inner());
        let key = format!("{}: {kind}", count.name());
        if m.len() < MAX_ERROR_KINDS || m.contains_key(&key) {
            *m.entry(key).or_default() += 1;
        } else {
            *m.entry("other".into()).or_default() += 1;
        }
    }

    /// Counters and the interval histograms since the last tick (which are reset).
    pub fn tick(&self) -> TickData {
        let mut hist = BTreeMap::new();
        for lat in Lat::ALL {
            let mut slot = self.lat[lat.index()]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !slot.interval.is_empty() {
                hist.insert(lat.name().to_string(), encode(&slot.interval));
                slot.interval.reset();
            }
        }
        TickData {
            counts: self.counts_map(),
            open: self.open.load(Ordering::Relaxed),
            hist,
        }
    }

    fn counts_map(&self) -> BTreeMap<String, u64> {
        Count::ALL
            .iter()
            .map(|c| (c.name().to_string(), self.get(*c)))
            .collect()
    }

    /// Everything recorded so far, serializable.
    pub fn snapshot(&self) -> Snapshot {
        let mut hist = BTreeMap::new();
        for lat in Lat::ALL {
            let slot = self.lat[lat.index()]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for phase in Phase::ALL {
                let h = &slot.by_phase[phase as usize];
                if !h.is_empty() {
                    hist.insert(format!("{}.{}", phase.as_str(), lat.name()), encode(h));
                }
            }
        }
        Snapshot {
            counts: self.counts_map(),
            hist,
            status: self
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            error_kinds: self
                .error_kinds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// One second of a worker's life, as sent to the coordinator.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TickData {
    /// Cumulative counters.
    pub counts: BTreeMap<String, u64>,
    /// Sockets open at the tick.
    pub open: i64,
    /// Interval histograms by latency name (V2, base64).
    pub hist: BTreeMap<String, String>,
}

/// A worker's whole-run measurements.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub counts: BTreeMap<String, u64>,
    /// `"<phase>.<latency>"` → V2 histogram, base64.
    pub hist: BTreeMap<String, String>,
    /// `"<kind> <status>"` → answers.
    pub status: BTreeMap<String, u64>,
    pub error_kinds: BTreeMap<String, u64>,
}

impl Snapshot {
    /// Add another worker's snapshot into this one, exactly.
    pub fn merge(&mut self, other: &Snapshot) -> Result<(), HistError> {
        for (k, v) in &other.counts {
            *self.counts.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.status {
            *self.status.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.error_kinds {
            *self.error_kinds.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.hist {
            let merged = match self.hist.get(k) {
                Some(mine) => {
                    let mut h = decode(mine)?;
                    h.add(decode(v)?).map_err(|e| HistError(e.to_string()))?;
                    encode(&h)
                }
                None => v.clone(),
            };
            self.hist.insert(k.clone(), merged);
        }
        Ok(())
    }

    pub fn count(&self, c: Count) -> u64 {
        self.counts.get(c.name()).copied().unwrap_or(0)
    }

    pub fn set(&mut self, name: &str, v: u64) {
        self.counts.insert(name.to_string(), v);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("bad histogram: {0}")]
pub struct HistError(pub String);

/// V2-serialize and base64 a histogram.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("serializing into a Vec cannot fail");
    STANDARD.encode(buf)
}

pub fn decode(s: &str) -> Result<Histogram<u64>, HistError> {
    let bytes = STANDARD.decode(s).map_err(|e| HistError(e.to_string()))?;
    let mut h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| HistError(format!("{e:?}")))?;
    h.auto(true);
    Ok(h)
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            mean: (h.mean() / 1000.0 * 1000.0).round() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// A statistic by its threshold name (`p50`, `p90`, `p99`, `p999`, `max`, `mean`).
    pub fn stat(&self, name: &str) -> Option<f64> {
        Some(match name {
            "p50" => self.p50,
            "p90" => self.p90,
            "p99" => self.p99,
            "p999" | "p99.9" => self.p999,
            "max" => self.max,
            "mean" => self.mean,
            "count" => self.count as f64,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_snapshots_equal_one_recorder() {
        let a = Recorder::new();
        let b = Recorder::new();
        let all = Recorder::new();
        for v in 1..=1000u64 {
            let r = if v % 3 == 0 { &a } else { &b };
            r.record(Lat::Delivery, Phase::Steady, v * 10);
            all.record(Lat::Delivery, Phase::Steady, v * 10);
            r.incr(Count::Sent);
            all.incr(Count::Sent);
        }
        a.error(Count::ServerErrors, "RATE_LIMITED");
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot()).unwrap();
        let whole = all.snapshot();
        assert_eq!(merged.count(Count::Sent), 1000);
        assert_eq!(merged.count(Count::ServerErrors), 1);
        assert_eq!(
            merged.error_kinds.get("server_errors: RATE_LIMITED"),
            Some(&1)
        );
        let m = decode(&merged.hist["steady.delivery"]).unwrap();
        let w = decode(&whole.hist["steady.delivery"]).unwrap();
        assert_eq!(Summary::of(&m), Summary::of(&w));
        assert_eq!(m.len(), 1000);
    }

    #[test]
    fn ticks_reset_the_interval_only() {
        let r = Recorder::new();
        r.record(Lat::Ack, Phase::Ramp, 500);
        let t = r.tick();
        assert!(t.hist.contains_key("ack"));
        assert!(r.tick().hist.is_empty());
        assert!(r.snapshot().hist.contains_key("ramp.ack"));
    }

    #[test]
    fn summary_is_in_milliseconds() {
        let mut h = new_histogram();
        for _ in 0..100 {
            h.record(2_000).unwrap();
        }
        let s = Summary::of(&h);
        assert!((s.p99 - 2.0).abs() < 0.01, "{s:?}");
        assert_eq!(s.stat("p99"), Some(s.p99));
    }
}
