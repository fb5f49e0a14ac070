//! The sockets of this node, by user. The registry is the only shared state
//! of a node; it is sharded so fan-out to many users does not contend on
//! one lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use io_domain::types::UserId;
use std::collections::VecDeque;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a socket's writer task sends.
#[derive(Debug)]
pub enum Out {
    /// An encoded event frame; `at_ms` is when it was published, for the
    /// delivery latency histogram (`None` for direct answers).
    Text {
        payload: Bytes,
        at_ms: Option<i64>,
    },
    Ping,
    Pong(Bytes),
}

/// One socket's shared state: its send queue and its out-of-band close.
///
/// The queue is a `VecDeque` behind a mutex rather than a channel because
/// an empty `VecDeque` holds no allocation: tens of thousands of idle
/// sockets cost nothing here, and a burst allocates only while it lasts.
#[derive(Debug)]
pub struct Control {
    queue: Mutex<VecDeque<Out>>,
    /// Wakes the writer when the queue gets something.
    ready: Notify,
    /// Frames queued before the socket counts as a slow consumer.
    capacity: usize,
    /// The close code the server chose, 0 while open.
    pub close_code: AtomicU16,
    /// Cancelled when the socket must end; wakes both of its tasks.
    pub closed: CancellationToken,
    /// Milliseconds (on the node's clock) of the last frame from the peer.
    pub last_seen_ms: AtomicU64,
}

impl Control {
    pub fn new(closed: CancellationToken, capacity: usize, now_ms: u64) -> Self {
        Control {
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            capacity,
            close_code: AtomicU16::new(0),
            closed,
            last_seen_ms: AtomicU64::new(now_ms),
        }
    }

    /// Ask the writer to close with `code` (the first request wins). A
    /// socket closed as too slow to read is counted here, once, whichever
    /// way it was found out (a full queue, a write that timed out).
    pub fn close(&self, code: u16) {
        if self
            .close_code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if code == crate::conn::CLOSE_TOO_SLOW {
                metrics::counter!("io_gateway_slow_consumer_closes_total").increment(1);
            }
            self.closed.cancel();
        }
    }

    pub fn close_code(&self) -> u16 {
        self.close_code.load(Ordering::Acquire)
    }

    /// Queue a frame; `false` if the queue is full.
    fn enqueue(&self, out: Out) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.len() >= self.capacity {
            return false;
        }
        queue.push_back(out);
        drop(queue);
        self.ready.notify_one();
        true
    }

    /// Everything queued, leaving the queue empty (and unallocated).
    pub fn take_all(&self) -> VecDeque<Out> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Wait until something is queued (returns at once if a wake-up is
    /// pending).
    pub async fn wait_ready(&self) {
        self.ready.notified().await
    }
}

/// A handle to one socket.
#[derive(Debug, Clone)]
pub struct Handle {
    pub id: u64,
    pub user: UserId,
    pub control: Arc<Control>,
}

impl Handle {
    /// Queue a frame; a full queue marks the socket a slow consumer and
    /// closes it with 4008 rather than growing memory or blocking others.
    pub fn push(&self, out: Out) {
        if self.control.close_code() != 0 {
            return;
        }
        if !self.control.enqueue(out) {
            self.control.close(crate::conn::CLOSE_TOO_SLOW);
        }
    }
}

/// Sockets are kept in this many shards by user; periodic work (pings,
/// presence heartbeats) walks them one shard per step.
pub const SHARDS: usize = 64;

#[derive(Default)]
struct Shard {
    users: HashMap<UserId, Vec<Handle>>,
}

pub struct Registry {
    shards: Vec<Mutex<Shard>>,
    count: AtomicUsize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            count: AtomicUsize::new(0),
        }
    }
}

impl Registry {
    fn shard(&self, user: UserId) -> std::sync::MutexGuard<'_, Shard> {
        self.shard_at((user.0.as_u128() as usize) % SHARDS)
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add a socket; `true` if it is the user's first on this node.
    pub fn add(&self, handle: Handle) -> bool {
        let mut shard = self.shard(handle.user);
        let list = shard.users.entry(handle.user).or_default();
        list.push(handle);
        self.count.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("io_gateway_connections").increment(1.0);
        list.len() == 1
    }

    /// Remove a socket; `true` if it was the user's last on this node.
    pub fn remove(&self, user: UserId, id: u64) -> bool {
        let mut shard = self.shard(user);
        let Some(list) = shard.users.get_mut(&user) else {
            return false;
        };
        let before = list.len();
        list.retain(|h| h.id != id);
        if list.len() < before {
            self.count.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!("io_gateway_connections").decrement(1.0);
        }
        if list.is_empty() {
            shard.users.remove(&user);
            true
        } else {
            false
        }
    }

    /// The user's sockets on this node.
    pub fn sockets(&self, user: UserId) -> Vec<Handle> {
        self.shard(user)
            .users
            .get(&user)
            .cloned()
            .unwrap_or_default()
    }

    pub fn has(&self, user: UserId) -> bool {
        self.shard(user).users.contains_key(&user)
    }

    /// Every user with a socket here.
    pub fn users(&self) -> Vec<UserId> {
        (0..SHARDS).flat_map(|i| self.users_in_shard(i)).collect()
    }

    fn shard_at(&self, shard: usize) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[shard % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The users of one shard (`0..SHARDS`).
    pub fn users_in_shard(&self, shard: usize) -> Vec<UserId> {
        self.shard_at(shard).users.keys().copied().collect()
    }

    /// The sockets of one shard (`0..SHARDS`).
    pub fn sockets_in_shard(&self, shard: usize) -> Vec<Handle> {
        self.shard_at(shard)
            .users
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    /// Every socket here.
    pub fn all(&self) -> Vec<Handle> {
        (0..SHARDS).flat_map(|i| self.sockets_in_shard(i)).collect()
    }
}
