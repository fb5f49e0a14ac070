//! One worker: a slice of the users, the scenario's tasks for them, and a
//! tick every second to the coordinator. A worker is either a task of the
//! coordinator's process (`--workers 1`) or a child process that speaks
//! JSON lines on stdout.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use io_protocol::ConnectedData;
use serde::{Deserialize, Serialize};

use crate::cli::{Common, Scenario};
use crate::ledger::Ledger;
use crate::scenario;
use crate::stats::{Count, Lat, Recorder, Snapshot, TickData};
use crate::sys;
use crate::target::{self, Target};
use crate::timeline::Timeline;
use crate::users::{self, User};
use crate::ws::Conn;

/// What a worker tells its coordinator.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerMsg {
    Tick(Tick),
    Final(Box<Final>),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Tick {
    /// Seconds since the start (1, 2, …).
    pub n: u64,
    pub data: TickData,
    /// CPU this worker process has used so far, µs.
    pub cpu_us: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Final {
    pub snapshot: Snapshot,
    pub ledger: Ledger,
    /// CPU this worker process used from start to end, µs.
    pub cpu_us: u64,
    pub max_rss_kib: u64,
    /// When the last socket got `connected`, shared clock µs (0: none).
    pub last_connect_us: u64,
    /// Scenario-specific facts worth a line in the report.
    pub notes: BTreeMap<String, serde_json::Value>,
}

/// What every task of a worker shares.
pub struct Ctx {
    pub rec: Recorder,
    pub ledger: Mutex<Ledger>,
    pub timeline: Timeline,
    pub targets: Vec<Target>,
    pub sources: Vec<Ipv4Addr>,
    pub common: Common,
    pub late_us: u64,
    pub last_connect_us: AtomicU64,
    pub notes: Mutex<BTreeMap<String, serde_json::Value>>,
}

impl Ctx {
    /// The source address for connection `j`.
    pub fn source(&self, j: usize) -> Option<Ipv4Addr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[j % self.sources.len()])
        }
    }

    /// Open socket `j` for `user` on node `node`; records the connect time from
    /// `sched` (its scheduled start) or the failure.
    pub async fn open(
        &self,
        j: usize,
        node: usize,
        user: &User,
        sched: u64,
    ) -> Option<(Conn, ConnectedData)> {
        let started = sys::mono_us();
        if started.saturating_sub(sched) > self.late_us {
            self.rec.incr(Count::LateStarts);
        }
        let phase = self.timeline.phase(sched);
        let timeout = Duration::from_secs_f64(self.common.connect_timeout.max(0.1));
        match Conn::open(
            &self.targets[node],
            self.source(j),
            &user.token,
            j as u32 ^ 0x9E37_79B9,
            timeout,
        )
        .await
        {
            Ok(ok) => {
                let now = sys::mono_us();
                self.rec
                    .record(Lat::Connect, phase, now.saturating_sub(sched));
                self.rec.incr(Count::Connects);
                self.rec.socket_opened();
                self.last_connect_us.fetch_max(now, Ordering::Relaxed);
                Some(ok)
            }
            Err(e) => {
                self.rec.error(Count::ConnectErrors, e.kind());
                None
            }
        }
    }

    pub fn note(&self, key: &str, value: serde_json::Value) {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), value);
    }
}

/// How many connection attempts the scenario makes (all workers together).
pub fn connections(scenario: &Scenario, users: usize) -> usize {
    match scenario {
        Scenario::Connect(a) => a.sockets.unwrap_or(users),
        _ => users,
    }
}

/// Run worker `index` of `count` until it is done or the hard deadline; `emit`
/// gets a tick each second and the final result once.
pub async fn run(
    scenario: Scenario,
    index: u32,
    count: u32,
    start_us: u64,
    emit: impl Fn(WorkerMsg) + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let cpu_start = sys::self_cpu_us();
    let common = scenario.common().clone();
    let users = users::load(&common.users, common.max_users)?;
    let targets = common
        .urls
        .iter()
        .map(|u| Target::parse(u, common.allow_non_loopback))
        .collect::<Result<Vec<_>, _>>()?;
    let timeline = Timeline::plan(&scenario, start_us, connections(&scenario, users.len()));
    let ctx = Arc::new(Ctx {
        rec: Recorder::new(),
        ledger: Mutex::new(Ledger::default()),
        timeline,
        sources: target::source_ips(common.source_ips, &targets),
        targets,
        late_us: (common.late_ms.max(0.0) * 1000.0) as u64,
        common,
        last_connect_us: AtomicU64::new(0),
        notes: Mutex::new(BTreeMap::new()),
    });
    let emit = Arc::new(emit);

    let ticked = Arc::new(AtomicU64::new(0));
    let ticker = {
        let ctx = ctx.clone();
        let emit = emit.clone();
        let ticked = ticked.clone();
        tokio::spawn(async move {
            for n in 1u64.. {
                sys::sleep_until_us(ctx.timeline.start_us + n * 1_000_000).await;
                emit(WorkerMsg::Tick(Tick {
                    n,
                    data: ctx.rec.tick(),
                    cpu_us: sys::self_cpu_us().saturating_sub(cpu_start),
                }));
                ticked.store(n, Ordering::Relaxed);
            }
        })
    };

    let mine = Slice { index, count };
    let work = scenario::run(ctx.clone(), &scenario, users, mine);
    let hard = sys::instant_at(timeline.hard_end_us);
    if tokio::time::timeout_at(hard, work).await.is_err() {
        ctx.rec
            .error(Count::Timeouts, "hard timeout: the run was cut short");
    }
    ticker.abort();
    let _ = ticker.await;
    // The last, partial second: a run shorter than a second still has a row.
    emit(WorkerMsg::Tick(Tick {
        n: ticked.load(Ordering::Relaxed) + 1,
        data: ctx.rec.tick(),
        cpu_us: sys::self_cpu_us().saturating_sub(cpu_start),
    }));

    let final_msg = Final {
        snapshot: ctx.rec.snapshot(),
        ledger: std::mem::take(&mut *ctx.ledger.lock().unwrap_or_else(|e| e.into_inner())),
        cpu_us: sys::self_cpu_us().saturating_sub(cpu_start),
        max_rss_kib: sys::self_max_rss_kib(),
        last_connect_us: ctx.last_connect_us.load(Ordering::Relaxed),
        notes: std::mem::take(&mut *ctx.notes.lock().unwrap_or_else(|e| e.into_inner())),
    };
    emit(WorkerMsg::Final(Box::new(final_msg)));
    Ok(())
}

/// Which global indexes belong to this worker: `j % count == index`.
#[derive(Debug, Clone, Copy)]
pub struct Slice {
    pub index: u32,
    pub count: u32,
}

impl Slice {
    pub fn owns(&self, j: usize) -> bool {
        j % self.count.max(1) as usize == self.index as usize
    }
}
