//! The node's background work: its inbox, presence heartbeat, online count,
//! pings, and the drain on shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use io_domain::model::Envelope;
use io_domain::ports::InboxCursor;
use io_domain::types::{SessionId, UserId};
use io_protocol::{encode, OnlineCountData, ServerEvent};
use tokio_util::sync::CancellationToken;

use crate::conn::{now_ms, CLOSE_GOING_AWAY, CLOSE_SHUTTING_DOWN};
use crate::registry::{Handle, Out, SHARDS};
use crate::Inner;

pub(crate) async fn run(inner: Arc<Inner>, shutdown: CancellationToken) {
    let background = CancellationToken::new();
    let tasks = vec![
        tokio::spawn(inbox(inner.clone(), background.clone())),
        tokio::spawn(heartbeat(inner.clone(), background.clone())),
        tokio::spawn(online_count(inner.clone(), background.clone())),
        tokio::spawn(pings(inner.clone(), background.clone())),
    ];
    shutdown.cancelled().await;
    drain(&inner).await;
    background.cancel();
    inner.stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
}

/// Read this node's inbox and hand each envelope to its user's sockets.
async fn inbox(inner: Arc<Inner>, stop: CancellationToken) {
    let bus = inner.chat.bus().clone();
    let node = inner.config.node.clone();
    let mut cursor = InboxCursor::latest();
    let mut backoff = Duration::from_millis(100);
    metrics::gauge!("io_gateway_bus_up").set(1.0);
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            r = bus.read_inbox(&node, &mut cursor, 1000, Duration::from_secs(2)) => r,
        };
        match read {
            Ok(envelopes) => {
                if !inner.bus_ok.swap(true, Ordering::Relaxed) {
                    tracing::info!("bus reachable again; inbox resumed");
                    metrics::gauge!("io_gateway_bus_up").set(1.0);
                }
                backoff = Duration::from_millis(100);
                if std::mem::take(&mut cursor.gaps) > 0 {
                    inbox_gap(&inner);
                }
                if let Some(last) = envelopes.last() {
                    let lag = (chrono::Utc::now().timestamp_millis() - last.at_ms).max(0);
                    metrics::gauge!("io_gateway_inbox_lag_seconds").set(lag as f64 / 1000.0);
                } else {
                    metrics::gauge!("io_gateway_inbox_lag_seconds").set(0.0);
                }
                let mut reroute = Vec::new();
                for envelope in envelopes {
                    if let Some(lost) = deliver_local(&inner, envelope) {
                        reroute.push(lost);
                    }
                }
                if !reroute.is_empty() {
                    reroute_stale(&inner, reroute).await;
                }
            }
            Err(e) => {
                if inner.bus_ok.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "inbox read failed; retrying");
                    metrics::gauge!("io_gateway_bus_up").set(0.0);
                }
                metrics::counter!("io_gateway_inbox_errors_total").increment(1);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The inbox dropped envelopes before this node read them (it fell further
/// behind than the inbox's cap): some of its users missed events, and the
/// node cannot tell which. Every socket open now is closed with 1012, paced
/// like a drain, so its client reconnects and catches up from the store
/// (`connected.session`, then the message history).
fn inbox_gap(inner: &Arc<Inner>) {
    metrics::counter!("io_gateway_inbox_gaps_total").increment(1);
    let sockets = inner.registry.all();
    tracing::error!(
        sockets = sockets.len(),
        "the inbox dropped envelopes this node had not read; reconnecting its sockets"
    );
    let inner = inner.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + inner.config.drain_timeout;
        close_paced(&inner, &sockets, deadline).await;
    });
}

/// Close `sockets` with 1012, `drain_batch` at a time with `drain_pause`
/// between batches; whatever is left at `deadline` is closed at once.
async fn close_paced(inner: &Inner, sockets: &[Handle], deadline: tokio::time::Instant) {
    let mut batches = sockets.chunks(inner.config.drain_batch.max(1));
    for batch in batches.by_ref() {
        for socket in batch {
            socket.control.close(CLOSE_SHUTTING_DOWN);
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(inner.config.drain_pause).await;
    }
    for socket in batches.flatten() {
        socket.control.close(CLOSE_SHUTTING_DOWN);
    }
}

/// The outbox's shortcut for events to this node's own sockets: handled
/// exactly as if read from the inbox, without the trip through the bus.
pub(crate) struct LocalInbox(pub std::sync::Weak<Inner>);

impl io_domain::outbox::LocalSink for LocalInbox {
    fn deliver(&self, envelopes: Vec<Envelope>) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let lost: Vec<Envelope> = envelopes
            .into_iter()
            .filter_map(|e| deliver_local(&inner, e))
            .collect();
        if !lost.is_empty() {
            tokio::spawn(async move { reroute_stale(&inner, lost).await });
        }
    }
}

/// Give an envelope to every local socket of its user (but the one that
/// caused it). Returns it when the user has no socket here: presence was
/// stale at the sender, so it may need re-routing.
fn deliver_local(inner: &Inner, envelope: Envelope) -> Option<Envelope> {
    let sockets = inner.registry.sockets(envelope.to);
    if sockets.is_empty() {
        return Some(envelope);
    }
    let skip = envelope
        .skip
        .as_ref()
        .filter(|s| s.node == inner.config.node)
        .map(|s| s.conn);
    let payload = Bytes::from(envelope.frame);
    for socket in sockets {
        if Some(socket.id) != skip {
            socket.push(Out::Text {
                payload: payload.clone(),
                at_ms: Some(envelope.at_ms),
            });
        }
    }
    None
}

/// Forward envelopes whose user moved to another node since the sender
/// looked them up; one hop at most, so nothing loops.
async fn reroute_stale(inner: &Inner, lost: Vec<Envelope>) {
    let lost: Vec<Envelope> = lost.into_iter().filter(|e| e.hops == 0).collect();
    if lost.is_empty() {
        return;
    }
    let users: Vec<UserId> = lost.iter().map(|e| e.to).collect();
    let bus = inner.chat.bus();
    let Ok(nodes) = bus.nodes_of(&users).await else {
        return;
    };
    let mut batch = Vec::new();
    for (mut envelope, nodes) in lost.into_iter().zip(nodes) {
        envelope.hops = 1;
        for node in nodes.into_iter().filter(|n| *n != inner.config.node) {
            batch.push((node, envelope.clone()));
        }
    }
    if !batch.is_empty() {
        metrics::counter!("io_gateway_rerouted_total").increment(batch.len() as u64);
        if let Err(e) = bus.publish(&batch).await {
            tracing::warn!(error = %e, "re-routing events failed");
        }
    }
}

/// Steps through the registry's shards so that each comes round once per
/// period: periodic work on every socket is spread over the period instead
/// of landing on the node (and on Redis, and on the clients) all at once.
struct ShardSteps {
    tick: tokio::time::Interval,
    next: usize,
}

impl ShardSteps {
    fn new(period: Duration) -> Self {
        let step = (period / SHARDS as u32).max(Duration::from_millis(1));
        let mut tick = tokio::time::interval(step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ShardSteps { tick, next: 0 }
    }

    /// The shard whose turn has come; `None` once `stop` fires.
    async fn next(&mut self, stop: &CancellationToken) -> Option<usize> {
        tokio::select! {
            _ = stop.cancelled() => None,
            _ = self.tick.tick() => {
                let shard = self.next;
                self.next = (shard + 1) % SHARDS;
                Some(shard)
            }
        }
    }
}

/// Keep this node's users present, a shard at a time, each user once per
/// heartbeat; a crashed node's users expire.
async fn heartbeat(inner: Arc<Inner>, stop: CancellationToken) {
    let mut steps = ShardSteps::new(inner.config.heartbeat);
    let mut failing = false;
    while let Some(shard) = steps.next(&stop).await {
        let users = inner.registry.users_in_shard(shard);
        if users.is_empty() {
            continue;
        }
        match inner
            .chat
            .bus()
            .presence_refresh(&inner.config.node, &users, inner.config.presence_ttl)
            .await
        {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("presence heartbeat recovered");
            }
            Ok(()) => {}
            // Once per outage, not once per shard.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "presence heartbeat failed");
            }
            Err(e) => tracing::debug!(error = %e, "presence heartbeat failed"),
        }
    }
}

/// Push the online count to every socket when it changed, at most every 5 s.
async fn online_count(inner: Arc<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(count) = inner.chat.bus().online_count().await else {
            continue;
        };
        metrics::gauge!("io_online_users").set(count as f64);
        if inner.online.swap(count, Ordering::Relaxed) == count {
            continue;
        }
        let payload = Bytes::from(encode(
            &ServerEvent::OnlineCount(OnlineCountData { count }),
            None,
        ));
        for socket in inner.registry.all() {
            socket.push(Out::Text {
                payload: payload.clone(),
                at_ms: None,
            });
        }
    }
}

/// Ping every socket once per interval, a shard at a time (a node with
/// many sockets never pings them all in the same instant); close those
/// silent for two intervals.
async fn pings(inner: Arc<Inner>, stop: CancellationToken) {
    let interval = inner.config.ping_interval;
    let mut steps = ShardSteps::new(interval);
    while let Some(shard) = steps.next(&stop).await {
        let deadline = now_ms().saturating_sub(2 * interval.as_millis() as u64);
        for socket in inner.registry.sockets_in_shard(shard) {
            if socket.control.last_seen_ms.load(Ordering::Relaxed) < deadline {
                socket.control.close(CLOSE_GOING_AWAY);
            } else {
                socket.push(Out::Ping);
            }
        }
    }
}

/// The user's first socket on this node opened.
pub(crate) async fn user_arrived(inner: &Inner, user: UserId, active: Option<(SessionId, UserId)>) {
    let bus = inner.chat.bus();
    let elsewhere = match bus
        .presence_add(&inner.config.node, user, inner.config.presence_ttl)
        .await
    {
        Ok(present) => present,
        Err(e) => {
            tracing::warn!(error = %e, "presence add failed; the heartbeat will retry");
            true
        }
    };
    if let (false, Some((session, partner))) = (elsewhere, active) {
        if let Err(e) = inner.chat.tell_presence(session, partner, true).await {
            tracing::debug!(error = %e, "user_joined not sent");
        }
    }
}

/// The user's last socket on this node closed.
pub(crate) async fn user_left(inner: &Inner, user: UserId, moved: bool) {
    let bus = inner.chat.bus();
    if let Err(e) = bus.presence_remove(&inner.config.node, user).await {
        tracing::warn!(error = %e, "presence remove failed; it will expire");
    }
    if moved || inner.draining.load(Ordering::Relaxed) {
        // The node closed the socket with 1012 (a drain, or an inbox gap):
        // the user is reconnecting, not leaving.
        return;
    }
    let gone = matches!(bus.nodes_of(&[user]).await, Ok(n) if n.iter().all(|n| n.is_empty()));
    if !gone {
        return;
    }
    if let Err(e) = inner.chat.presence_changed(user, false).await {
        tracing::debug!(error = %e, "user_left not sent");
    }
    // Leave the queue unless the user comes back within the grace period
    // (a reload, a network blip).
    let chat = inner.chat.clone();
    let grace = inner.config.queue_grace;
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let bus = chat.bus();
        if matches!(bus.nodes_of(&[user]).await, Ok(n) if n.iter().all(|n| n.is_empty())) {
            let _ = bus.queue_leave(&[user]).await;
        }
    });
}

/// Close every socket with 1012 in paced batches, wait for them to go, and
/// clean presence up.
async fn drain(inner: &Inner) {
    inner.draining.store(true, Ordering::Relaxed);
    metrics::gauge!("io_gateway_draining").set(1.0);
    let sockets = inner.registry.all();
    tracing::info!(sockets = sockets.len(), "draining");
    let deadline = tokio::time::Instant::now() + inner.config.drain_timeout;
    close_paced(inner, &sockets, deadline).await;
    while !inner.registry.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bus = inner.chat.bus();
    for user in inner.registry.users() {
        let _ = bus.presence_remove(&inner.config.node, user).await;
    }
    let _ = bus.drop_inbox(&inner.config.node).await;
    tracing::info!("drained");
}
