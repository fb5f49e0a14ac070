//! Delivery of events to users wherever they are connected. Events are
//! batched: one presence lookup and one pipelined publish per batch, so the
//! cost per event falls under load. The caller learns whether its events
//! reached the bus (an error, not a silent loss, when Redis is down).
//! Events for sockets on this very node (the sender's other tabs, a partner
//! on the same node) skip the bus once the node attaches a [`LocalSink`].

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use io_protocol::{encode, ServerEvent};
use tokio::sync::{mpsc, oneshot};

use crate::batch::next_batch;
use crate::model::{ConnRef, Envelope};
use crate::ports::{Bus, BusError, BusResult};
use crate::types::{NodeId, UserId};

/// One event for one user.
pub type Delivery = (UserId, ServerEvent);

struct Job {
    deliveries: Vec<(UserId, String)>,
    skip: Option<ConnRef>,
    done: oneshot::Sender<BusResult<()>>,
}

/// Where a node takes the envelopes for its own sockets, as if it had read
/// them from its inbox.
pub trait LocalSink: Send + Sync {
    fn deliver(&self, envelopes: Vec<Envelope>);
}

type Local = Arc<OnceLock<(NodeId, Arc<dyn LocalSink>)>>;

/// Handle to the node's outbox task.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Job>,
    local: Local,
}

impl Outbox {
    const MAX_BATCH: usize = 1000;

    pub fn spawn(bus: Arc<dyn Bus>) -> Self {
        let (tx, rx) = mpsc::channel(16 * Self::MAX_BATCH);
        let local = Local::default();
        tokio::spawn(run(bus, rx, local.clone()));
        Outbox { tx, local }
    }

    /// Hand envelopes for `node` to `sink` instead of the bus (once per
    /// outbox; a later call is ignored).
    pub fn attach_local(&self, node: NodeId, sink: Arc<dyn LocalSink>) {
        let _ = self.local.set((node, sink));
    }

    /// Publish events to their users' nodes; resolves once they are on the
    /// bus. `skip` names the socket that caused them, which gets its answer
    /// directly instead.
    pub async fn send(&self, deliveries: Vec<Delivery>, skip: Option<ConnRef>) -> BusResult<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let deliveries = deliveries
            .into_iter()
            .map(|(user, event)| {
                metrics::counter!("io_events_published_total", "event" => event.name())
                    .increment(1);
                (user, encode(&event, None))
            })
            .collect();
        let (done, wait) = oneshot::channel();
        let stopped = || BusError::Unavailable("outbox stopped".into());
        self.tx
            .send(Job {
                deliveries,
                skip,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

async fn run(bus: Arc<dyn Bus>, mut rx: mpsc::Receiver<Job>, local: Local) {
    let mut jobs = Vec::new();
    while next_batch(&mut rx, Outbox::MAX_BATCH, &mut jobs).await {
        let started = std::time::Instant::now();
        let result = deliver(bus.as_ref(), local.get(), &jobs).await;
        metrics::histogram!("io_events_publish_seconds").record(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            metrics::counter!("io_events_publish_failures_total").increment(jobs.len() as u64);
            tracing::warn!(error = %e, jobs = jobs.len(), "publishing events failed");
        }
        for job in jobs.drain(..) {
            let _ = job.done.send(result.clone());
        }
    }
}

/// Resolve presence for every recipient in one round trip, then publish
/// every envelope in one more; a short retry rides out a Redis blip.
async fn deliver(
    bus: &dyn Bus,
    local: Option<&(NodeId, Arc<dyn LocalSink>)>,
    jobs: &[Job],
) -> BusResult<()> {
    let mut users: Vec<UserId> = jobs
        .iter()
        .flat_map(|j| j.deliveries.iter().map(|(u, _)| *u))
        .collect();
    users.sort_unstable();
    users.dedup();
    let mut attempt = 0;
    // This node's own sockets get their events once, on the first attempt
    // that resolved presence, whatever the remote publish does after.
    let mut local_done = false;
    loop {
        match try_deliver(bus, local, jobs, &users, &mut local_done).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "retrying publish");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn try_deliver(
    bus: &dyn Bus,
    local: Option<&(NodeId, Arc<dyn LocalSink>)>,
    jobs: &[Job],
    users: &[UserId],
    local_done: &mut bool,
) -> BusResult<()> {
    let nodes = bus.nodes_of(users).await?;
    let where_: HashMap<UserId, Vec<NodeId>> = users.iter().copied().zip(nodes).collect();
    let at_ms = chrono::Utc::now().timestamp_millis();
    let mut remote = Vec::new();
    let mut here = Vec::new();
    for job in jobs {
        for (user, frame) in &job.deliveries {
            for node in where_.get(user).into_iter().flatten() {
                let envelope = Envelope {
                    to: *user,
                    skip: job.skip.clone(),
                    at_ms,
                    hops: 0,
                    frame: frame.clone(),
                };
                match local {
                    Some((me, _)) if me == node => here.push(envelope),
                    _ => remote.push((node.clone(), envelope)),
                }
            }
        }
    }
    if let (Some((_, sink)), false, false) = (local, here.is_empty(), *local_done) {
        sink.deliver(here);
    }
    *local_done = true;
    if !remote.is_empty() {
        bus.publish(&remote).await?;
    }
    Ok(())
}
