//! The bus adapters of IO: two implementations of [`io_domain::ports::Bus`].
//!
//! - [`RedisBus`]: the cluster bus. Node inboxes are Redis streams, presence
//!   and the match queue are sorted sets and hashes changed by Lua scripts,
//!   the matcher lease is a key with a fencing counter beside it.
//! - [`MemoryBus`]: the same semantics inside one process (tokio `Notify` and
//!   mutex-guarded maps), so `io all` runs without Redis.
//!
//! Both pass the one contract suite in `tests/contract.rs`, so a caller cannot
//! tell them apart except by scale and durability.
//!
//! # Redis layout
//!
//! Every key starts with a configurable prefix (`io` by default) and carries a
//! Redis Cluster hash tag (`{...}`), so the same layout runs unchanged on a
//! cluster: a command or script that touches several keys only ever touches
//! keys of one tag, which therefore live in one slot.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `io:{n:<node>}:inbox` | stream | envelopes for one gateway node, field `e` = JSON, `MAXLEN ~ 100000` |
//! | `io:{u:<user>}:nodes` | sorted set | member node, score = expiry (ms since the epoch) |
//! | `io:{online}` | sorted set | member user, score = latest expiry of any of their nodes |
//! | `io:{mq}:entries` | hash | user → JSON `QueueEntry` |
//! | `io:{mq}:order` | sorted set | member user, score = `joined_at_ms` (oldest first) |
//! | `io:{mq}:changes` | stream | `QueueChange` JSON in field `c`, ids `0-<seq>`, `MAXLEN ~ 100000` |
//! | `io:{mq}:seq` | string | the last change's sequence number |
//! | `io:{mq}:counts` | hash | `dude` / `girl` → waiting users of that gender |
//! | `io:{lease}:holder` | string | `<holder>#<token>`, expires with the lease |
//! | `io:{lease}:fence` | string | counter that mints fencing tokens; never expires |
//!
//! ## Inboxes
//! `publish` sends one pipeline of `XADD`s for the whole batch: one round trip
//! however many nodes it reaches. `read_inbox` runs `XREAD BLOCK` on a
//! connection of its own (see *Connections*). The cursor is the last stream id
//! read; `InboxCursor::latest()` (`$`) is resolved to the stream's current last
//! id before the first read, so whatever arrives after that call is read even
//! if the first read times out empty.
//!
//! ## Presence
//! A user's nodes are a sorted set scored by expiry, so liveness is decided by
//! comparing with "now" at read time and no sweeper is needed for correctness:
//! a crashed node's users vanish from [`Bus::nodes_of`] when their TTL passes.
//! The key itself expires with the latest of its members (`PEXPIRE … NX` then
//! `PEXPIRE … GT`, Redis 7.0+), and `presence_add` trims members that expired.
//! `io:{online}` mirrors "has any live node" for a cheap `ZCOUNT`. It lives in
//! another slot than the user's set, so `presence_remove` updates it in a
//! second step; a concurrent add on another node can leave the user out of the
//! count until that node's next heartbeat re-adds them. Only the online
//! counter can be off by that, never routing.
//!
//! Expiry uses this process's clock: nodes must keep their clocks in sync to
//! well within a presence TTL (NTP does).
//!
//! ## Match queue
//! Join and leave are Lua scripts over the `{mq}` keys, so the entry, its
//! place in the order, the per-gender counters and the change log move
//! together. The change log's ids are `0-<seq>` with a dense sequence: a
//! follower whose cursor fell behind the capped log is detected by arithmetic
//! and gets an error instead of silently missing changes (it takes a new
//! snapshot). The snapshot script returns every entry in order together with
//! the current sequence, atomically, so snapshot + `queue_changes` neither
//! misses nor repeats a change.
//!
//! ## Matcher lease
//! Acquire, renew and release are Lua scripts. Acquire mints its token with
//! `INCR` on a counter that never expires, so tokens strictly increase across
//! leaders; renew and release act only if the stored `<holder>#<token>` is
//! still the caller's, so a deposed leader can neither extend nor drop its
//! successor's lease.
//!
//! ## Connections
//! Ordinary commands share one multiplexed
//! [`ConnectionManager`](redis::aio::ConnectionManager), which reconnects by
//! itself. Blocking reads (`XREAD BLOCK`) would stall every command queued
//! behind them on a shared connection, so each runs on a dedicated connection
//! taken from a small idle pool and returned after success; after an error the
//! connection is dropped (a fresh one is opened next time) and the error goes
//! to the caller, who retries. Dedicated connections are named
//! `io-bus:<prefix>:reader` in `CLIENT LIST`. Every Redis failure is
//! [`BusError::Unavailable`].
//!
//! The client speaks to one Redis endpoint (`redis://` or `rediss://`); the
//! key layout is what keeps a move to Redis Cluster a client change only.
//!
//! ## Metrics
//! `io_bus_commands_total{op}`, `io_bus_errors_total{op}` and, for
//! non-blocking operations, `io_bus_command_duration_seconds{op}`.

use std::sync::Arc;

use io_domain::ports::{Bus, BusError};

mod memory;
mod redis_bus;

pub use memory::MemoryBus;
pub use redis_bus::RedisBus;

/// The bus for this process: Redis at `url`, or the in-process bus when no
/// URL is configured (`io all` on a single machine).
pub async fn connect(url: Option<&str>, prefix: &str) -> Result<Arc<dyn Bus>, BusError> {
    match url {
        Some(url) => Ok(Arc::new(RedisBus::connect(url, prefix).await?)),
        None => Ok(Arc::new(MemoryBus::new())),
    }
}

/// Milliseconds since the epoch by this process's clock.
pub(crate) fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A duration in whole milliseconds, at least 1 so a tiny TTL or block is
/// never read by Redis as "none" or "forever".
pub(crate) fn millis_at_least_one(d: std::time::Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// How many envelopes an inbox keeps: a node that stops reading for long
/// loses the oldest rather than filling memory. Its users reconnect and fill
/// gaps from the store.
pub const INBOX_CAP: usize = 100_000;

/// How many queue changes the log keeps; a follower further behind than this
/// must take a new snapshot.
pub(crate) const QUEUE_LOG_CAP: usize = 100_000;

/// The error of a queue follower that fell further behind than the capped
/// change log: it cannot catch up from its cursor and must take a new
/// snapshot.
pub(crate) fn queue_log_trimmed() -> BusError {
    BusError::Unavailable(
        "queue change log was trimmed past the cursor: take a new snapshot".into(),
    )
}
