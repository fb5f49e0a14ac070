//! The run's result: merged counters and histograms turned into percentiles
//! per phase, rates over the steady phase, client and server resources,
//! and the verdict of `--threshold` limits. Written as JSON (with the exact
//! histograms, so runs can be merged later) and printed for people.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::{decode, Count, Lat, Phase, Snapshot, Summary};

/// One `--threshold`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    pub name: String,
    /// `<=` (a ceiling; `=` means the same) or `>=` (a floor).
    pub op: &'static str,
    pub limit: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("bad --threshold `{0}`: {1}")]
pub struct ThresholdError(String, String);

impl Threshold {
    pub fn parse(s: &str) -> Result<Threshold, ThresholdError> {
        let bad = |why: &str| ThresholdError(s.to_string(), why.to_string());
        let (name, op, value) = if let Some((n, v)) = s.split_once(">=") {
            (n, ">=", v)
        } else if let Some((n, v)) = s.split_once("<=") {
            (n, "<=", v)
        } else if let Some((n, v)) = s.split_once('=') {
            (n, "<=", v)
        } else {
            return Err(bad("expected NAME=LIMIT, NAME<=LIMIT or NAME>=LIMIT"));
        };
        let limit: f64 = value
            .trim()
            .parse()
            .map_err(|_| bad("the limit is not a number"))?;
        let name = name.trim().to_string();
        if !known_name(&name) {
            return Err(bad(
                "unknown name: use a counter (lost, duplicated, errors, connect_errors, …), a rate \
                 (messages_per_s, connects_per_s, cycles_per_s, requests_per_s, sent_per_s), \
                 client_cpu_percent, or [ramp.|steady.|all.]<p50|p90|p99|p999|max|mean>_<latency>_ms",
            ));
        }
        Ok(Threshold { name, op, limit })
    }
}

const EXTRA_COUNTERS: [&str; 3] = ["errors", "lost", "unacked"];
const RATES: [&str; 6] = [
    "connects_per_s",
    "messages_per_s",
    "sent_per_s",
    "cycles_per_s",
    "requests_per_s",
    "cross_node_fraction",
];
const FIGURES: [&str; 4] = [
    "client_cpu_percent",
    "server_cpu_percent",
    "server_rss_per_socket_kib",
    "server_cpu_us_per_message",
];

fn known_name(name: &str) -> bool {
    Count::ALL.iter().any(|c| c.name() == name)
        || EXTRA_COUNTERS.contains(&name)
        || RATES.contains(&name)
        || FIGURES.contains(&name)
        || latency_ref(name).is_some()
}

/// `[phase.]stat_latency_ms` → (phase or None for the default, stat, latency).
fn latency_ref(name: &str) -> Option<(Option<&str>, &str, &str)> {
    let (phase, rest) = match name.split_once('.') {
        Some((p, r)) if ["ramp", "steady", "drain", "all"].contains(&p) => (Some(p), r),
        _ => (None, name),
    };
    let rest = rest.strip_suffix("_ms")?;
    let (stat, lat) = rest.split_once('_')?;
    if !["p50", "p90", "p99", "p999", "max", "mean", "count"].contains(&stat) {
        return None;
    }
    Lat::ALL.iter().find(|l| l.name() == lat)?;
    Some((phase, stat, lat))
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub name: String,
    pub op: &'static str,
    pub limit: f64,
    /// `null` when the run produced no such figure (which fails).
    pub value: Option<f64>,
    pub pass: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct ClientUse {
    /// CPU of every harness process (coordinator and workers), seconds.
    pub cpu_s: f64,
    /// That CPU over the wall time of the run, percent of one core.
    pub cpu_percent: f64,
    /// The same over the steady phase only.
    pub cpu_percent_steady: Option<f64>,
    /// Harness CPU per delivered message (chat) or request (api), µs.
    pub cpu_us_per_op: Option<f64>,
    /// Peak RSS summed over worker processes, KiB.
    pub max_rss_kib: u64,
    pub workers: u32,
    pub open_file_limit: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct ServerProc {
    pub pid: u32,
    pub name: String,
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// CPU of the process and its children over the steady phase, seconds.
    pub cpu_s_steady: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct ServerUse {
    pub procs: Vec<ServerProc>,
    /// Sum of `rss_after - rss_before` over the watched processes, KiB.
    pub rss_delta_kib: Option<f64>,
    /// `rss_delta_kib` over the sockets open when it was taken.
    pub rss_per_socket_kib: Option<f64>,
    /// Sockets open when `rss_after` was taken.
    pub sockets_at_rss_after: i64,
    pub cpu_percent_steady: Option<f64>,
    /// Server CPU over the steady phase per delivered message (chat), µs.
    pub cpu_us_per_message: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Pairs {
    pub pairs: u64,
    pub cross_node: u64,
    pub cross_node_fraction: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub version: String,
    pub args: Vec<String>,
    pub urls: Vec<String>,
    pub users: usize,
    pub started_unix_ms: u64,
    pub elapsed_s: f64,
    pub phases_s: BTreeMap<String, f64>,
    pub counters: BTreeMap<String, u64>,
    /// Per second over the steady phase (connects: over the whole ramp).
    pub rates: BTreeMap<String, f64>,
    /// Phase (`ramp`, `steady`, `drain`, `all`) → latency → percentiles in ms.
    pub latency_ms: BTreeMap<String, BTreeMap<String, Summary>>,
    /// HTTP answers by `"<kind> <status>"`.
    pub status: BTreeMap<String, u64>,
    /// What went wrong, by kind (bounded).
    pub error_kinds: BTreeMap<String, u64>,
    pub client: ClientUse,
    pub server: Option<ServerUse>,
    pub pairs: Option<Pairs>,
    pub notes: BTreeMap<String, serde_json::Value>,
    pub thresholds: Vec<Verdict>,
    pub pass: bool,
    /// `"<phase>.<latency>"` → HdrHistogram V2, base64 (µs).
    pub histograms: BTreeMap<String, String>,
}

impl Report {
    /// Percentiles by phase from the merged snapshot, plus `all`.
    pub fn fill_latencies(&mut self, snap: &Snapshot) {
        for lat in Lat::ALL {
            let mut all = crate::stats::new_histogram();
            for phase in Phase::ALL {
                let key = format!("{}.{}", phase.as_str(), lat.name());
                if let Some(h) = snap.hist.get(&key).and_then(|s| decode(s).ok()) {
                    let _ = all.add(&h);
                    self.latency_ms
                        .entry(phase.as_str().to_string())
                        .or_default()
                        .insert(lat.name().to_string(), Summary::of(&h));
                }
            }
            if !all.is_empty() {
                self.latency_ms
                    .entry("all".into())
                    .or_default()
                    .insert(lat.name().to_string(), Summary::of(&all));
            }
        }
        self.histograms = snap.hist.clone();
    }

    /// The figure a threshold name refers to.
    pub fn figure(&self, name: &str) -> Option<f64> {
        if let Some(v) = self.counters.get(name) {
            return Some(*v as f64);
        }
        if let Some(v) = self.rates.get(name) {
            return Some(*v);
        }
        match name {
            "client_cpu_percent" => return Some(self.client.cpu_percent),
            "server_cpu_percent" => return self.server.as_ref()?.cpu_percent_steady,
            "server_rss_per_socket_kib" => return self.server.as_ref()?.rss_per_socket_kib,
            "server_cpu_us_per_message" => return self.server.as_ref()?.cpu_us_per_message,
            "cross_node_fraction" => return self.pairs.as_ref()?.cross_node_fraction,
            _ => {}
        }
        let (phase, stat, lat) = latency_ref(name)?;
        let pick = |p: &str| {
            self.latency_ms
                .get(p)
                .and_then(|m| m.get(lat))
                .filter(|s| s.count > 0)
        };
        let summary = match phase {
            Some(p) => pick(p)?,
            None => pick("steady").or_else(|| pick("all"))?,
        };
        summary.stat(stat)
    }

    pub fn judge(&mut self, thresholds: &[Threshold]) {
        self.thresholds = thresholds
            .iter()
            .map(|t| {
                let value = self.figure(&t.name);
                let pass = match value {
                    Some(v) if t.op == ">=" => v >= t.limit,
                    Some(v) => v <= t.limit,
                    None => false,
                };
                Verdict {
                    name: t.name.clone(),
                    op: t.op,
                    limit: t.limit,
                    value,
                    pass,
                }
            })
            .collect();
        self.pass = self.thresholds.iter().all(|v| v.pass);
    }

    /// A few lines for a person.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let phases: Vec<String> = self
            .phases_s
            .iter()
            .map(|(k, v)| format!("{k} {v:.1}s"))
            .collect();
        out.push_str(&format!(
            "== {} — {} user(s), {} worker(s), {:.1}s ({})\n",
            self.scenario,
            self.users,
            self.client.workers,
            self.elapsed_s,
            phases.join(", ")
        ));
        let counters: Vec<String> = self
            .counters
            .iter()
            .filter(|(k, v)| **v > 0 || ["errors", "lost", "duplicated"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("counters: {}\n", counters.join(" ")));
        if !self.rates.is_empty() {
            let rates: Vec<String> = self
                .rates
                .iter()
                .map(|(k, v)| format!("{k}={v:.1}"))
                .collect();
            out.push_str(&format!("rates: {}\n", rates.join(" ")));
        }
        out.push_str(
            "latency ms          phase      count      p50      p90      p99    p99.9      max\n",
        );
        for phase in ["ramp", "steady", "drain"] {
            if let Some(m) = self.latency_ms.get(phase) {
                for (lat, s) in m {
                    out.push_str(&format!(
                        "  {lat:<16}  {phase:<7} {:>8} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}\n",
                        s.count, s.p50, s.p90, s.p99, s.p999, s.max
                    ));
                }
            }
        }
        if let Some(p) = &self.pairs {
            if let Some(f) = p.cross_node_fraction {
                out.push_str(&format!(
                    "pairs: {} ({} cross-node, {:.1}%)\n",
                    p.pairs,
                    p.cross_node,
                    f * 100.0
                ));
            }
        }
        out.push_str(&format!(
            "client: cpu {:.2}s = {:.0}% of a core{}, peak rss {} KiB\n",
            self.client.cpu_s,
            self.client.cpu_percent,
            self.client
                .cpu_us_per_op
                .map(|v| format!(", {v:.1} µs per op"))
                .unwrap_or_default(),
            self.client.max_rss_kib
        ));
        if let Some(s) = &self.server {
            for p in &s.procs {
                out.push_str(&format!(
                    "server pid {} ({}): rss {:?} → {:?} KiB, cpu {:?} s in steady\n",
                    p.pid, p.name, p.rss_before_kib, p.rss_after_kib, p.cpu_s_steady
                ));
            }
            if let Some(per) = s.rss_per_socket_kib {
                out.push_str(&format!(
                    "server rss per socket: {per:.2} KiB ({} sockets)\n",
                    s.sockets_at_rss_after
                ));
            }
            if let Some(us) = s.cpu_us_per_message {
                out.push_str(&format!("server cpu per message: {us:.1} µs\n"));
            }
        }
        for (k, v) in &self.error_kinds {
            out.push_str(&format!("error: {k} ×{v}\n"));
        }
        for (k, v) in &self.notes {
            out.push_str(&format!("note: {k}: {v}\n"));
        }
        for t in &self.thresholds {
            out.push_str(&format!(
                "threshold {} {} {}: {} ({})\n",
                t.name,
                t.op,
                t.limit,
                t.value
                    .map(|v| format!("{v}"))
                    .unwrap_or_else(|| "no data".into()),
                if t.pass { "pass" } else { "FAIL" }
            ));
        }
        out.push_str(if self.pass {
            "result: PASS\n"
        } else {
            "result: FAIL\n"
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_and_judge() {
        let t: Vec<Threshold> = [
            "p99_delivery_ms=25",
            "lost=0",
            "messages_per_s>=100",
            "ramp.max_connect_ms<=900",
        ]
        .iter()
        .map(|s| Threshold::parse(s).unwrap())
        .collect();
        assert!(Threshold::parse("p99_nothing_ms=1").is_err());
        assert!(Threshold::parse("lost").is_err());
        let mut r = Report::default();
        r.counters.insert("lost".into(), 0);
        r.rates.insert("messages_per_s".into(), 150.0);
        let mut m = BTreeMap::new();
        m.insert(
            "delivery".to_string(),
            Summary {
                count: 10,
                p99: 30.0,
                ..Default::default()
            },
        );
        r.latency_ms.insert("steady".into(), m);
        r.judge(&t);
        assert!(!r.thresholds[0].pass, "p99 30 > 25");
        assert!(r.thresholds[1].pass);
        assert!(r.thresholds[2].pass);
        assert_eq!(r.thresholds[3].value, None, "no data fails");
        assert!(!r.pass);
    }
}
