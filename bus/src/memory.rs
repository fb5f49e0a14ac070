//! [`MemoryBus`]: the bus inside one process, for `io all` without Redis.
//!
//! Same semantics as the Redis bus, on mutex-guarded maps: inboxes and the
//! queue change log are bounded deques whose ids come from counters, blocked
//! readers wait on a `Notify` that every append wakes, presence and the lease
//! expire by the clock at read time. Locks are std mutexes held only for a
//! few map operations and never across an `.await`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use io_domain::model::{Envelope, QueueChange, QueueEntry};
use io_domain::ports::{Bus, BusError, BusResult, InboxCursor, QueueCursor};
#[cfg(test)]
use io_domain::types::Seeking;
use io_domain::types::{FencingToken, Gender, NodeId, UserId};
use io_protocol::WaitingCounts;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{queue_log_trimmed, INBOX_CAP, QUEUE_LOG_CAP};

/// The in-process implementation of [`Bus`].
#[derive(Default)]
pub struct MemoryBus {
    inboxes: Mutex<Inboxes>,
    /// user → node → when that node's claim expires.
    presence: Mutex<HashMap<UserId, HashMap<NodeId, Instant>>>,
    queue: Mutex<Queue>,
    /// Woken on every queue change, for blocked `queue_changes` readers.
    queue_changed: Notify,
    lease: Mutex<Lease>,
}

#[derive(Default)]
struct Inboxes {
    /// The last envelope id handed out. One counter for every inbox, so ids
    /// never go backwards even if an inbox is dropped and recreated while a
    /// reader holds a cursor into it.
    last_id: u64,
    by_node: HashMap<NodeId, Inbox>,
}

#[derive(Default)]
struct Inbox {
    /// (id, envelope), ids increasing.
    entries: VecDeque<(u64, Envelope)>,
    /// Woken on every append; shared so a reader can wait without the lock.
    arrived: Arc<Notify>,
    /// The id of the newest entry dropped at the cap (0: none).
    dropped_through: u64,
}

#[derive(Default)]
struct Queue {
    entries: HashMap<UserId, QueueEntry>,
    /// Oldest first; the user breaks ties the way Redis orders equal scores.
    order: BTreeSet<(i64, UserId)>,
    dudes: u64,
    girls: u64,
    /// (seq, change), seqs dense and increasing, at most `QUEUE_LOG_CAP`.
    log: VecDeque<(u64, QueueChange)>,
    /// The last change's seq.
    seq: u64,
}

impl Queue {
    fn record(&mut self, change: QueueChange) {
        self.seq += 1;
        self.log.push_back((self.seq, change));
        if self.log.len() > QUEUE_LOG_CAP {
            self.log.pop_front();
        }
    }

    fn count(&mut self, gender: Gender) -> &mut u64 {
        match gender {
            Gender::Dude => &mut self.dudes,
            Gender::Girl => &mut self.girls,
        }
    }

    /// Queue `entry` (its user not queued) and log it as joined.
    fn put(&mut self, entry: &QueueEntry) {
        self.entries.insert(entry.user, entry.clone());
        self.order.insert((entry.joined_at_ms, entry.user));
        *self.count(entry.gender) += 1;
        self.record(QueueChange::Joined(entry.clone()));
    }

    /// Take `user` out of the queue, unlogged; their entry if they were in it.
    fn take(&mut self, user: UserId) -> Option<QueueEntry> {
        let entry = self.entries.remove(&user)?;
        self.order.remove(&(entry.joined_at_ms, entry.user));
        let count = self.count(entry.gender);
        *count = count.saturating_sub(1);
        Some(entry)
    }
}

#[derive(Default)]
struct Lease {
    /// The last token handed out; tokens only grow.
    fence: i64,
    holder: Option<LeaseHolder>,
}

struct LeaseHolder {
    name: String,
    token: FencingToken,
    expires: Instant,
}

impl Lease {
    /// The holder, if their lease has not run out.
    fn live_holder(&mut self, now: Instant) -> Option<&mut LeaseHolder> {
        self.holder.as_mut().filter(|h| h.expires > now)
    }
}

/// Lock a mutex; a panic elsewhere while holding it leaves plain data that is
/// still consistent (no invariant spans a panic point), so poison is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn parse_position(cursor: &str, what: &str) -> BusResult<u64> {
    cursor
        .parse()
        .map_err(|_| BusError::Corrupt(format!("not {what}: {cursor:?}")))
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn ping(&self) -> BusResult<()> {
        Ok(())
    }

    async fn publish(&self, batch: &[(NodeId, Envelope)]) -> BusResult<()> {
        let mut inboxes = lock(&self.inboxes);
        for (node, envelope) in batch {
            inboxes.last_id += 1;
            let id = inboxes.last_id;
            let inbox = inboxes.by_node.entry(node.clone()).or_default();
            inbox.entries.push_back((id, envelope.clone()));
            if inbox.entries.len() > INBOX_CAP {
                if let Some((dropped, _)) = inbox.entries.pop_front() {
                    inbox.dropped_through = dropped;
                }
            }
            inbox.arrived.notify_waiters();
        }
        Ok(())
    }

    async fn read_inbox(
        &self,
        node: &NodeId,
        cursor: &mut InboxCursor,
        max: usize,
        block: Duration,
    ) -> BusResult<Vec<Envelope>> {
        let deadline = Instant::now() + block;
        loop {
            let arrived = {
                let mut inboxes = lock(&self.inboxes);
                if cursor.is_latest() {
                    cursor.position = inboxes.last_id.to_string();
                }
                let after = parse_position(&cursor.position, "an inbox cursor")?;
                let inbox = inboxes.by_node.entry(node.clone()).or_default();
                let start = inbox.entries.partition_point(|(id, _)| *id <= after);
                if start < inbox.entries.len() {
                    if after < inbox.dropped_through {
                        cursor.gaps += 1;
                    }
                    let mut envelopes = Vec::new();
                    for (id, envelope) in inbox.entries.range(start..).take(max.max(1)) {
                        envelopes.push(envelope.clone());
                        cursor.position = id.to_string();
                    }
                    return Ok(envelopes);
                }
                // Registered while the lock is held, so an append between
                // here and the wait below still wakes us.
                let mut arrived = Box::pin(inbox.arrived.clone().notified_owned());
                arrived.as_mut().enable();
                arrived
            };
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn drop_inbox(&self, node: &NodeId) -> BusResult<()> {
        if let Some(inbox) = lock(&self.inboxes).by_node.remove(node) {
            // A blocked reader re-checks and waits on the inbox's successor.
            inbox.arrived.notify_waiters();
        }
        Ok(())
    }

    async fn presence_add(&self, node: &NodeId, user: UserId, ttl: Duration) -> BusResult<bool> {
        let now = Instant::now();
        let mut presence = lock(&self.presence);
        let nodes = presence.entry(user).or_default();
        nodes.retain(|_, expires| *expires > now);
        let was_present = !nodes.is_empty();
        nodes.insert(node.clone(), now + ttl);
        Ok(was_present)
    }

    async fn presence_remove(&self, node: &NodeId, user: UserId) -> BusResult<()> {
        let mut presence = lock(&self.presence);
        if let Some(nodes) = presence.get_mut(&user) {
            nodes.remove(node);
            if nodes.is_empty() {
                presence.remove(&user);
            }
        }
        Ok(())
    }

    async fn presence_refresh(
        &self,
        node: &NodeId,
        users: &[UserId],
        ttl: Duration,
    ) -> BusResult<()> {
        let expires = Instant::now() + ttl;
        let mut presence = lock(&self.presence);
        for user in users {
            presence
                .entry(*user)
                .or_default()
                .insert(node.clone(), expires);
        }
        Ok(())
    }

    async fn nodes_of(&self, users: &[UserId]) -> BusResult<Vec<Vec<NodeId>>> {
        let now = Instant::now();
        let presence = lock(&self.presence);
        Ok(users
            .iter()
            .map(|user| {
                let mut nodes: Vec<NodeId> = presence
                    .get(user)
                    .into_iter()
                    .flatten()
                    .filter(|(_, expires)| **expires > now)
                    .map(|(node, _)| node.clone())
                    .collect();
                nodes.sort();
                nodes
            })
            .collect())
    }

    async fn online_count(&self) -> BusResult<u64> {
        let now = Instant::now();
        let mut presence = lock(&self.presence);
        // Counting visits every user anyway, so it also drops the expired.
        presence.retain(|_, nodes| {
            nodes.retain(|_, expires| *expires > now);
            !nodes.is_empty()
        });
        Ok(presence.len() as u64)
    }

    async fn queue_join(&self, entry: &QueueEntry) -> BusResult<bool> {
        let mut queue = lock(&self.queue);
        if queue.entries.contains_key(&entry.user) {
            return Ok(false);
        }
        queue.put(entry);
        self.queue_changed.notify_waiters();
        Ok(true)
    }

    async fn queue_replace(&self, entry: &QueueEntry) -> BusResult<bool> {
        let mut queue = lock(&self.queue);
        if queue.take(entry.user).is_none() {
            return Ok(false);
        }
        // Logged as a join only: a follower takes a join of a queued user
        // as the replacement of their entry.
        queue.put(entry);
        self.queue_changed.notify_waiters();
        Ok(true)
    }

    async fn queue_leave(&self, users: &[UserId]) -> BusResult<u64> {
        let mut queue = lock(&self.queue);
        let mut removed = 0;
        for user in users {
            if queue.take(*user).is_some() {
                queue.record(QueueChange::Left(*user));
                removed += 1;
            }
        }
        if removed > 0 {
            self.queue_changed.notify_waiters();
        }
        Ok(removed)
    }

    async fn queue_contains(&self, user: UserId) -> BusResult<bool> {
        Ok(lock(&self.queue).entries.contains_key(&user))
    }

    async fn queue_snapshot(&self) -> BusResult<(Vec<QueueEntry>, QueueCursor)> {
        let queue = lock(&self.queue);
        let entries = queue
            .order
            .iter()
            .filter_map(|(_, user)| queue.entries.get(user).cloned())
            .collect();
        Ok((entries, QueueCursor(queue.seq.to_string())))
    }

    async fn queue_changes(
        &self,
        cursor: &mut QueueCursor,
        max: usize,
        block: Duration,
    ) -> BusResult<Vec<QueueChange>> {
        let deadline = Instant::now() + block;
        loop {
            let mut changed = pin!(self.queue_changed.notified());
            {
                let queue = lock(&self.queue);
                let after = parse_position(&cursor.0, "a queue cursor")?;
                if after < queue.seq {
                    let oldest = queue.log.front().map_or(queue.seq + 1, |(seq, _)| *seq);
                    if after + 1 < oldest {
                        return Err(queue_log_trimmed());
                    }
                    let start = (after + 1 - oldest) as usize;
                    let mut changes = Vec::new();
                    for (seq, change) in queue.log.range(start..).take(max.max(1)) {
                        changes.push(change.clone());
                        cursor.0 = seq.to_string();
                    }
                    return Ok(changes);
                }
                changed.as_mut().enable();
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn queue_counts(&self) -> BusResult<WaitingCounts> {
        let queue = lock(&self.queue);
        Ok(WaitingCounts {
            dude: queue.dudes,
            girl: queue.girls,
        })
    }

    async fn acquire_lease(&self, holder: &str, ttl: Duration) -> BusResult<Option<FencingToken>> {
        let now = Instant::now();
        let mut lease = lock(&self.lease);
        if lease.live_holder(now).is_some() {
            return Ok(None);
        }
        lease.fence += 1;
        let token = FencingToken(lease.fence);
        lease.holder = Some(LeaseHolder {
            name: holder.to_owned(),
            token,
            expires: now + ttl,
        });
        Ok(Some(token))
    }

    async fn renew_lease(
        &self,
        holder: &str,
        token: FencingToken,
        ttl: Duration,
    ) -> BusResult<bool> {
        let now = Instant::now();
        let mut lease = lock(&self.lease);
        match lease.live_holder(now) {
            Some(h) if h.name == holder && h.token == token => {
                h.expires = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_lease(&self, holder: &str, token: FencingToken) -> BusResult<()> {
        let mut lease = lock(&self.lease);
        if lease
            .holder
            .as_ref()
            .is_some_and(|h| h.name == holder && h.token == token)
        {
            lease.holder = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory log is bounded like the Redis one, and a follower that fell
    /// behind its start is told to re-snapshot rather than skip changes.
    #[tokio::test]
    async fn follower_behind_the_bounded_log_is_told() {
        let bus = MemoryBus::new();
        let (_, mut stale) = bus.queue_snapshot().await.expect("snapshot");
        let user = UserId::new();
        let entry = QueueEntry {
            user,
            gender: Gender::Girl,
            seeking: Seeking::Any,
            joined_at_ms: 1,
        };
        // Join and leave alternately until the log has wrapped.
        for _ in 0..=QUEUE_LOG_CAP / 2 {
            assert!(bus.queue_join(&entry).await.expect("join"));
            assert_eq!(bus.queue_leave(&[user]).await.expect("leave"), 1);
        }
        assert_eq!(lock(&bus.queue).log.len(), QUEUE_LOG_CAP);
        let got = bus.queue_changes(&mut stale, 10, Duration::ZERO).await;
        assert!(matches!(got, Err(BusError::Unavailable(_))), "{got:?}");

        let (entries, mut fresh) = bus.queue_snapshot().await.expect("snapshot");
        assert!(entries.is_empty());
        assert!(bus.queue_join(&entry).await.expect("join"));
        assert_eq!(
            bus.queue_changes(&mut fresh, 10, Duration::ZERO)
                .await
                .expect("changes"),
            vec![QueueChange::Joined(entry)]
        );
    }
}
