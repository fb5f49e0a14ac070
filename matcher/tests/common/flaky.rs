//! A bus that passes everything through to a real one, except the lease
//! when told otherwise: every lease call fails (Redis unreachable from this
//! node), or renewals succeed without asking (a partitioned node that
//! believes it still leads, which only fencing can stop).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use io_domain::model::{Envelope, QueueChange, QueueEntry};
use io_domain::ports::{Bus, BusError, BusResult, InboxCursor, QueueCursor};
use io_domain::types::{FencingToken, NodeId, UserId};
use io_protocol::WaitingCounts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Renewals {
    /// Ask the real bus.
    PassThrough = 0,
    /// Every lease call fails.
    Fail = 1,
    /// Renewals "succeed" without reaching the bus.
    Believe = 2,
}

pub struct FlakyBus {
    inner: Arc<dyn Bus>,
    renewals: AtomicU8,
}

impl FlakyBus {
    pub fn new(inner: Arc<dyn Bus>) -> Arc<Self> {
        Arc::new(FlakyBus {
            inner,
            renewals: AtomicU8::new(Renewals::PassThrough as u8),
        })
    }

    pub fn set(&self, renewals: Renewals) {
        self.renewals.store(renewals as u8, Ordering::SeqCst);
    }

    fn lease_reachable(&self) -> BusResult<()> {
        if self.renewals.load(Ordering::SeqCst) == Renewals::Fail as u8 {
            return Err(BusError::Unavailable("injected: Redis unreachable".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Bus for FlakyBus {
    async fn ping(&self) -> BusResult<()> {
        self.inner.ping().await
    }
    async fn publish(&self, batch: &[(NodeId, Envelope)]) -> BusResult<()> {
        self.inner.publish(batch).await
    }
    async fn read_inbox(
        &self,
        node: &NodeId,
        cursor: &mut InboxCursor,
        max: usize,
        block: Duration,
    ) -> BusResult<Vec<Envelope>> {
        self.inner.read_inbox(node, cursor, max, block).await
    }
    async fn drop_inbox(&self, node: &NodeId) -> BusResult<()> {
        self.inner.drop_inbox(node).await
    }
    async fn presence_add(&self, node: &NodeId, user: UserId, ttl: Duration) -> BusResult<bool> {
        self.inner.presence_add(node, user, ttl).await
    }
    async fn presence_remove(&self, node: &NodeId, user: UserId) -> BusResult<()> {
        self.inner.presence_remove(node, user).await
    }
    async fn presence_refresh(
        &self,
        node: &NodeId,
        users: &[UserId],
        ttl: Duration,
    ) -> BusResult<()> {
        self.inner.presence_refresh(node, users, ttl).await
    }
    async fn nodes_of(&self, users: &[UserId]) -> BusResult<Vec<Vec<NodeId>>> {
        self.inner.nodes_of(users).await
    }
    async fn online_count(&self) -> BusResult<u64> {
        self.inner.online_count().await
    }
    async fn queue_join(&self, entry: &QueueEntry) -> BusResult<bool> {
        self.inner.queue_join(entry).await
    }
    async fn queue_replace(&self, entry: &QueueEntry) -> BusResult<bool> {
        self.inner.queue_replace(entry).await
    }
    async fn queue_leave(&self, users: &[UserId]) -> BusResult<u64> {
        self.inner.queue_leave(users).await
    }
    async fn queue_contains(&self, user: UserId) -> BusResult<bool> {
        self.inner.queue_contains(user).await
    }
    async fn queue_snapshot(&self) -> BusResult<(Vec<QueueEntry>, QueueCursor)> {
        self.inner.queue_snapshot().await
    }
    async fn queue_changes(
        &self,
        cursor: &mut QueueCursor,
        max: usize,
        block: Duration,
    ) -> BusResult<Vec<QueueChange>> {
        self.inner.queue_changes(cursor, max, block).await
    }
    async fn queue_counts(&self) -> BusResult<WaitingCounts> {
        self.inner.queue_counts().await
    }
    async fn acquire_lease(&self, holder: &str, ttl: Duration) -> BusResult<Option<FencingToken>> {
        self.lease_reachable()?;
        self.inner.acquire_lease(holder, ttl).await
    }
    async fn renew_lease(
        &self,
        holder: &str,
        token: FencingToken,
        ttl: Duration,
    ) -> BusResult<bool> {
        self.lease_reachable()?;
        if self.renewals.load(Ordering::SeqCst) == Renewals::Believe as u8 {
            return Ok(true);
        }
        self.inner.renew_lease(holder, token, ttl).await
    }
    async fn release_lease(&self, holder: &str, token: FencingToken) -> BusResult<()> {
        self.lease_reachable()?;
        self.inner.release_lease(holder, token).await
    }
}
