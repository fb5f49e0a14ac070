//! [`RedisBus`]: the bus of a cluster deployment. The layout, the atomicity
//! of each step and the connection handling are described in the crate docs.

mod keys;
mod scripts;

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use io_domain::model::{Envelope, QueueChange, QueueEntry};
use io_domain::ports::{Bus, BusError, BusResult, InboxCursor, QueueCursor};
use io_domain::types::{FencingToken, Gender, NodeId, UserId};
use io_protocol::WaitingCounts;
use metrics::{counter, histogram};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Pipeline, RedisError};

use crate::{millis_at_least_one, now_ms, queue_log_trimmed, INBOX_CAP, QUEUE_LOG_CAP};
use keys::Keys;
use scripts::Scripts;

/// How long an ordinary command may take before it fails; a Redis that does
/// not answer must turn into an error the caller sees, not a hang.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Extra time a blocking read may take beyond its `BLOCK` before the client
/// gives up on the connection.
const BLOCK_GRACE: Duration = Duration::from_secs(5);

/// Idle dedicated connections kept for blocking reads. Each concurrent
/// reader needs one; a process has a handful (its inbox, the queue follower).
const IDLE_BLOCKING_CONNECTIONS: usize = 8;

/// Users per presence pipeline. A heartbeat for tens of thousands of users
/// goes out as a few pipelines so its replies stay bounded in memory and
/// other commands on the shared connection get a turn in between.
const PRESENCE_PIPELINE_USERS: usize = 5_000;

/// Members per `ZADD` on the online set.
const ONLINE_ZADD_MEMBERS: usize = 500;

/// Users per leave script, so one call never holds Redis for long.
const LEAVE_SCRIPT_USERS: usize = 500;

/// How often `online_count` also drops expired members from the online set
/// (liveness is decided by score, so this only reclaims memory).
const ONLINE_SWEEP_EVERY_MS: i64 = 10_000;

/// The Redis implementation of [`Bus`].
pub struct RedisBus {
    /// Opens the dedicated connections for blocking reads.
    client: Client,
    /// The shared, self-reconnecting connection for every non-blocking command.
    conn: ConnectionManager,
    /// Idle dedicated connections: a blocking `XREAD` must not sit in front of
    /// other commands on the shared connection.
    blocking: Mutex<Vec<MultiplexedConnection>>,
    keys: Keys,
    scripts: Scripts,
    /// `CLIENT SETNAME` of the dedicated connections, so an operator reading
    /// `CLIENT LIST` sees which deployment's blocked readers these are.
    reader_name: String,
    /// When `online_count` next sweeps expired members (ms since the epoch).
    next_online_sweep_ms: AtomicI64,
}

/// Whether an operation's duration says anything about Redis: a blocking read
/// mostly measures how long nothing happened.
#[derive(Clone, Copy)]
enum OpKind {
    Timed,
    Blocking,
}

trait RedisResultExt<T> {
    fn bus(self) -> BusResult<T>;
}

impl<T> RedisResultExt<T> for Result<T, RedisError> {
    fn bus(self) -> BusResult<T> {
        self.map_err(|e| BusError::Unavailable(e.to_string()))
    }
}

fn encode<T: serde::Serialize>(value: &T) -> BusResult<String> {
    serde_json::to_string(value).map_err(|e| BusError::Corrupt(format!("cannot encode: {e}")))
}

impl RedisBus {
    /// Write one queue entry (`mode`: `join` a user not queued yet, or
    /// `replace` a queued one's entry); whether it wrote.
    async fn queue_put(&self, entry: &QueueEntry, mode: &str) -> BusResult<bool> {
        let change = encode(&QueueChange::Joined(entry.clone()))?;
        let mut invocation = self.scripts.queue_put.prepare_invoke();
        for key in self.keys.queue_script_keys() {
            invocation.key(key);
        }
        invocation
            .arg(entry.user.to_string())
            .arg(encode(entry)?)
            .arg(entry.joined_at_ms)
            .arg(entry.gender.as_str())
            .arg(QUEUE_LOG_CAP)
            .arg(change)
            .arg(mode);
        let written: i64 = invocation.invoke_async(&mut self.conn()).await.bus()?;
        Ok(written == 1)
    }

    /// Connect to Redis at `url` (`redis://` or `rediss://`) and keep every
    /// key under `prefix`. Fails if Redis does not answer.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BusError> {
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '{' && c != '}')
        {
            return Err(BusError::Unavailable(format!(
                "invalid Redis key prefix {prefix:?}: it must be non-empty printable ASCII \
                 without spaces or braces (braces would break the hash tags)"
            )));
        }
        if url.starts_with("rediss:") && rustls::crypto::CryptoProvider::get_default().is_none() {
            // Redis's TLS asks rustls for the process-wide crypto provider,
            // which rustls can only guess when exactly one is compiled in.
            // Install ring (the workspace's) rather than depend on that guess;
            // losing a race to another installer is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = Client::open(url)
            .map_err(|e| BusError::Unavailable(format!("invalid Redis URL: {e}")))?;
        let cannot = |e: RedisError| BusError::Unavailable(format!("cannot reach Redis: {e}"));
        // One plain attempt first: the manager below retries with backoff,
        // which would turn a wrong URL into a long silent wait at startup.
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&probe_config)
            .await
            .map_err(cannot)?;
        redis::cmd("PING")
            .query_async::<String>(&mut probe)
            .await
            .map_err(cannot)?;
        drop(probe);
        // Reconnects back off 1 s, 2 s, 2 s (plus jitter) and then give up
        // until the next command tries again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_factor(2)
            .set_max_delay(2_000)
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(cannot)?;
        Ok(RedisBus {
            client,
            conn,
            blocking: Mutex::new(Vec::new()),
            keys: Keys::new(prefix),
            scripts: Scripts::new(),
            reader_name: format!("io-bus:{prefix}:reader"),
            next_online_sweep_ms: AtomicI64::new(0),
        })
    }

    /// A handle on the shared connection (cheap: it is multiplexed).
    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Count, time and error-count one bus operation.
    async fn observe<T>(
        &self,
        op: &'static str,
        kind: OpKind,
        fut: impl Future<Output = BusResult<T>>,
    ) -> BusResult<T> {
        counter!("io_bus_commands_total", "op" => op).increment(1);
        let started = Instant::now();
        let result = fut.await;
        match (&result, kind) {
            (Err(e), _) => {
                counter!("io_bus_errors_total", "op" => op).increment(1);
                tracing::debug!(op, error = %e, "bus operation failed");
            }
            (Ok(_), OpKind::Timed) => {
                histogram!("io_bus_command_duration_seconds", "op" => op)
                    .record(started.elapsed().as_secs_f64());
            }
            (Ok(_), OpKind::Blocking) => {}
        }
        result
    }

    async fn take_blocking_conn(&self) -> BusResult<MultiplexedConnection> {
        let idle = self
            .blocking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        if let Some(conn) = idle {
            return Ok(conn);
        }
        // No response timeout here: the read's own BLOCK plus a grace period
        // bounds it instead.
        let config = AsyncConnectionConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .bus()?;
        tokio::time::timeout(
            RESPONSE_TIMEOUT,
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(&self.reader_name)
                .query_async::<()>(&mut conn),
        )
        .await
        .map_err(|_| BusError::Unavailable("Redis did not answer CLIENT SETNAME".into()))?
        .bus()?;
        Ok(conn)
    }

    fn return_blocking_conn(&self, conn: MultiplexedConnection) {
        let mut idle = self
            .blocking
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < IDLE_BLOCKING_CONNECTIONS {
            idle.push(conn);
        }
    }

    /// `XREAD` of one stream after `after`: non-blocking on the shared
    /// connection, blocking on a dedicated one. A connection that failed or
    /// timed out is dropped, never reused.
    async fn xread(
        &self,
        key: &str,
        after: &str,
        max: usize,
        block: Duration,
    ) -> BusResult<Vec<StreamId>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(max.max(1));
        if block.is_zero() {
            cmd.arg("STREAMS").arg(key).arg(after);
            let reply: Option<StreamReadReply> = cmd.query_async(&mut self.conn()).await.bus()?;
            return Ok(stream_entries(reply));
        }
        cmd.arg("BLOCK")
            .arg(millis_at_least_one(block))
            .arg("STREAMS")
            .arg(key)
            .arg(after);
        let mut conn = self.take_blocking_conn().await?;
        let reply: Option<StreamReadReply> =
            match tokio::time::timeout(block + BLOCK_GRACE, cmd.query_async(&mut conn)).await {
                Ok(reply) => reply.bus()?,
                Err(_) => {
                    return Err(BusError::Unavailable(
                        "blocking read got no answer from Redis".into(),
                    ))
                }
            };
        self.return_blocking_conn(conn);
        Ok(stream_entries(reply))
    }

    /// Where a stream stands, from `XINFO STREAM` (one command, so its
    /// figures agree); an absent stream is an empty one.
    async fn stream_state(&self, key: &str) -> BusResult<StreamState> {
        let info: redis::Value = match redis::cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .query_async(&mut self.conn())
            .await
        {
            Ok(info) => info,
            Err(e) if e.to_string().contains("no such key") => return Ok(StreamState::default()),
            Err(e) => return Err(e).bus(),
        };
        let fields: Vec<(redis::Value, redis::Value)> = match info {
            redis::Value::Map(pairs) => pairs,
            redis::Value::Array(items) => {
                let mut items = items.into_iter();
                std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
            }
            other => {
                return Err(BusError::Corrupt(format!(
                    "XINFO STREAM answered {other:?}"
                )))
            }
        };
        let mut state = StreamState::default();
        for (name, value) in fields {
            let Ok(name) = redis::from_redis_value::<String>(&name) else {
                continue;
            };
            match name.as_str() {
                "length" => state.length = redis::from_redis_value(&value).unwrap_or(0),
                "entries-added" => state.added = redis::from_redis_value(&value).ok(),
                "last-generated-id" => {
                    state.last = redis::from_redis_value(&value).unwrap_or_else(|_| "0-0".into())
                }
                "first-entry" => {
                    state.first = match value {
                        redis::Value::Array(entry) => entry
                            .first()
                            .and_then(|id| redis::from_redis_value::<String>(id).ok()),
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        if state.added.is_none() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "Redis does not report a stream's entries-added (it is older than 7.0): \
                     a node that falls behind its inbox's cap cannot tell"
                )
            });
        }
        Ok(state)
    }

    /// Queue a presence entry for one user on one node: its score and a key
    /// expiry that never shortens another node's (max of current and new).
    fn push_presence(pipe: &mut Pipeline, key: &str, node: &NodeId, expires_ms: i64, ttl_ms: u64) {
        pipe.cmd("ZADD")
            .arg(key)
            .arg(expires_ms)
            .arg(&node.0)
            .ignore();
        pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).arg("NX").ignore();
        pipe.cmd("PEXPIRE").arg(key).arg(ttl_ms).arg("GT").ignore();
    }

    /// Whether this `online_count` call should also sweep; at most one caller
    /// per interval wins.
    fn online_sweep_due(&self, now: i64) -> bool {
        let next = self.next_online_sweep_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_online_sweep_ms
                .compare_exchange(
                    next,
                    now + ONLINE_SWEEP_EVERY_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// What `XINFO STREAM` says of an inbox.
#[derive(Debug)]
struct StreamState {
    last: String,
    /// Entries ever added (Redis 7; `None` on older servers).
    added: Option<u64>,
    length: u64,
    first: Option<String>,
}

impl Default for StreamState {
    fn default() -> Self {
        StreamState {
            last: "0-0".into(),
            added: Some(0),
            length: 0,
            first: None,
        }
    }
}

impl StreamState {
    /// An inbox position at the end of the stream: `<id>;<entries added up
    /// to it>`, or the id alone where the count is unknown.
    fn position(&self) -> String {
        match self.added {
            Some(n) => format!("{};{n}", self.last),
            None => self.last.clone(),
        }
    }

    /// Whether entries after `after` were lost unread: trimmed at the cap,
    /// or gone with the whole stream (its count went back: Redis lost its
    /// data, or the stream was deleted). `before` is how many entries the
    /// stream had taken up to `after`; `read` is what was just read after
    /// it, some of which may have been trimmed since, harmlessly. Once the
    /// oldest entry left is newer than `after`, every entry still there was
    /// added after it; those added after it and neither still there nor
    /// just read and trimmed since were lost.
    fn lost_unread(&self, after: &str, before: Option<u64>, read: &[StreamId]) -> bool {
        let (Some(added), Some(before)) = (self.added, before) else {
            return false;
        };
        if added < before {
            return true;
        }
        let (Some(first), Some(after)) =
            (self.first.as_deref().and_then(stream_id), stream_id(after))
        else {
            return false;
        };
        if first <= after {
            return false;
        }
        let read_gone = read
            .iter()
            .filter(|e| stream_id(&e.id).is_some_and(|id| id < first))
            .count() as u64;
        added - self.length > before + read_gone
    }
}

/// An inbox position: the stream id read last and, after a `;`, how many
/// entries the stream had taken up to it (absent: unknown).
fn split_position(position: &str) -> (&str, Option<u64>) {
    match position.split_once(';') {
        Some((id, n)) => (id, n.parse().ok()),
        None => (position, None),
    }
}

/// A stream id `<ms>-<seq>` as a pair that orders like the ids do.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn stream_entries(reply: Option<StreamReadReply>) -> Vec<StreamId> {
    reply
        .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
        .unwrap_or_default()
}

/// The change log's ids are `0-<seq>`; the cursor is the last id read.
fn queue_cursor(seq: u64) -> QueueCursor {
    QueueCursor(format!("0-{seq}"))
}

fn queue_seq_of(id: &str) -> BusResult<u64> {
    id.strip_prefix("0-")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BusError::Corrupt(format!("not a queue change id: {id:?}")))
}

#[async_trait]
impl Bus for RedisBus {
    async fn ping(&self) -> BusResult<()> {
        self.observe("ping", OpKind::Timed, async {
            redis::cmd("PING")
                .query_async::<String>(&mut self.conn())
                .await
                .bus()
                .map(drop)
        })
        .await
    }

    async fn publish(&self, batch: &[(NodeId, Envelope)]) -> BusResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.observe("publish", OpKind::Timed, async {
            let mut pipe = redis::pipe();
            for (node, envelope) in batch {
                pipe.cmd("XADD")
                    .arg(self.keys.inbox(node))
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(INBOX_CAP)
                    .arg("*")
                    .arg("e")
                    .arg(encode(envelope)?)
                    .ignore();
            }
            pipe.query_async::<()>(&mut self.conn()).await.bus()
        })
        .await
    }

    async fn read_inbox(
        &self,
        node: &NodeId,
        cursor: &mut InboxCursor,
        max: usize,
        block: Duration,
    ) -> BusResult<Vec<Envelope>> {
        self.observe("read_inbox", OpKind::Blocking, async {
            let key = self.keys.inbox(node);
            if cursor.is_latest() {
                // Pin "now" to a real id, so a first read that times out
                // still leaves a cursor that misses nothing afterwards.
                cursor.position = self.stream_state(&key).await?.position();
            }
            let (after, before) = split_position(&cursor.position);
            let after = after.to_owned();
            let entries = self.xread(&key, &after, max, block).await?;
            let passed = before.map(|n| n + entries.len() as u64);
            // Only a reader that is behind gets a full read, and only one
            // that is behind can have had entries trimmed before it read them.
            let mut resumed_at = None;
            if entries.len() >= max.max(1) {
                let state = self.stream_state(&key).await?;
                if state.lost_unread(&after, before, &entries) {
                    cursor.gaps += 1;
                    // What is left unread goes to sockets the node is about
                    // to reconnect; go on from the end, counting afresh.
                    resumed_at = Some(state.position());
                }
            }
            let mut last = after;
            let mut envelopes = Vec::with_capacity(entries.len());
            for entry in entries {
                // A bad entry is skipped, not returned as an error: the
                // cursor must move past it or the node would stall on it.
                match entry.get::<String>("e").map(|raw| serde_json::from_str(&raw)) {
                    Some(Ok(envelope)) => envelopes.push(envelope),
                    Some(Err(e)) => {
                        counter!("io_bus_corrupt_total", "op" => "read_inbox").increment(1);
                        tracing::error!(id = %entry.id, error = %e, "skipping undecodable envelope");
                    }
                    None => {
                        counter!("io_bus_corrupt_total", "op" => "read_inbox").increment(1);
                        tracing::error!(id = %entry.id, "skipping inbox entry without an envelope");
                    }
                }
                last = entry.id;
            }
            cursor.position = match (resumed_at, passed) {
                (Some(end), _) => end,
                (None, Some(n)) => format!("{last};{n}"),
                (None, None) => last,
            };
            Ok(envelopes)
        })
        .await
    }

    async fn drop_inbox(&self, node: &NodeId) -> BusResult<()> {
        self.observe("drop_inbox", OpKind::Timed, async {
            redis::cmd("DEL")
                .arg(self.keys.inbox(node))
                .query_async::<()>(&mut self.conn())
                .await
                .bus()
        })
        .await
    }

    async fn presence_add(&self, node: &NodeId, user: UserId, ttl: Duration) -> BusResult<bool> {
        self.observe("presence_add", OpKind::Timed, async {
            let now = now_ms();
            let ttl_ms = millis_at_least_one(ttl);
            let expires = now + ttl_ms as i64;
            let key = self.keys.user_nodes(user);
            let mut pipe = redis::pipe();
            // Live members before this add: the pipeline's only answer.
            pipe.cmd("ZCOUNT")
                .arg(&key)
                .arg(format!("({now}"))
                .arg("+inf");
            Self::push_presence(&mut pipe, &key, node, expires, ttl_ms);
            // Members of nodes that died without removing themselves.
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now)
                .ignore();
            pipe.cmd("ZADD")
                .arg(&self.keys.online)
                .arg("GT")
                .arg(expires)
                .arg(user.to_string())
                .ignore();
            let (live,): (u64,) = pipe.query_async(&mut self.conn()).await.bus()?;
            Ok(live > 0)
        })
        .await
    }

    async fn presence_remove(&self, node: &NodeId, user: UserId) -> BusResult<()> {
        self.observe("presence_remove", OpKind::Timed, async {
            let key = self.keys.user_nodes(user);
            let (_, live): (i64, u64) = redis::pipe()
                .cmd("ZREM")
                .arg(&key)
                .arg(&node.0)
                .cmd("ZCOUNT")
                .arg(&key)
                .arg(format!("({}", now_ms()))
                .arg("+inf")
                .query_async(&mut self.conn())
                .await
                .bus()?;
            if live == 0 {
                redis::cmd("ZREM")
                    .arg(&self.keys.online)
                    .arg(user.to_string())
                    .query_async::<()>(&mut self.conn())
                    .await
                    .bus()?;
            }
            Ok(())
        })
        .await
    }

    async fn presence_refresh(
        &self,
        node: &NodeId,
        users: &[UserId],
        ttl: Duration,
    ) -> BusResult<()> {
        if users.is_empty() {
            return Ok(());
        }
        self.observe("presence_refresh", OpKind::Timed, async {
            let ttl_ms = millis_at_least_one(ttl);
            for chunk in users.chunks(PRESENCE_PIPELINE_USERS) {
                let expires = now_ms() + ttl_ms as i64;
                let mut pipe = redis::pipe();
                for user in chunk {
                    let key = self.keys.user_nodes(*user);
                    Self::push_presence(&mut pipe, &key, node, expires, ttl_ms);
                }
                for members in chunk.chunks(ONLINE_ZADD_MEMBERS) {
                    let zadd = pipe.cmd("ZADD").arg(&self.keys.online).arg("GT");
                    for user in members {
                        zadd.arg(expires).arg(user.to_string());
                    }
                    zadd.ignore();
                }
                pipe.query_async::<()>(&mut self.conn()).await.bus()?;
            }
            Ok(())
        })
        .await
    }

    async fn nodes_of(&self, users: &[UserId]) -> BusResult<Vec<Vec<NodeId>>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        self.observe("nodes_of", OpKind::Timed, async {
            let live_after = format!("({}", now_ms());
            let mut out = Vec::with_capacity(users.len());
            for chunk in users.chunks(PRESENCE_PIPELINE_USERS) {
                let mut pipe = redis::pipe();
                for user in chunk {
                    pipe.cmd("ZRANGEBYSCORE")
                        .arg(self.keys.user_nodes(*user))
                        .arg(&live_after)
                        .arg("+inf");
                }
                let nodes: Vec<Vec<String>> = pipe.query_async(&mut self.conn()).await.bus()?;
                out.extend(
                    nodes
                        .into_iter()
                        .map(|ns| ns.into_iter().map(NodeId).collect()),
                );
            }
            Ok(out)
        })
        .await
    }

    async fn online_count(&self) -> BusResult<u64> {
        self.observe("online_count", OpKind::Timed, async {
            let now = now_ms();
            let mut pipe = redis::pipe();
            if self.online_sweep_due(now) {
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(&self.keys.online)
                    .arg("-inf")
                    .arg(now)
                    .ignore();
            }
            pipe.cmd("ZCOUNT")
                .arg(&self.keys.online)
                .arg(format!("({now}"))
                .arg("+inf");
            let (count,): (u64,) = pipe.query_async(&mut self.conn()).await.bus()?;
            Ok(count)
        })
        .await
    }

    async fn queue_join(&self, entry: &QueueEntry) -> BusResult<bool> {
        self.observe("queue_join", OpKind::Timed, self.queue_put(entry, "join"))
            .await
    }

    async fn queue_replace(&self, entry: &QueueEntry) -> BusResult<bool> {
        self.observe(
            "queue_replace",
            OpKind::Timed,
            self.queue_put(entry, "replace"),
        )
        .await
    }

    async fn queue_leave(&self, users: &[UserId]) -> BusResult<u64> {
        if users.is_empty() {
            return Ok(0);
        }
        self.observe("queue_leave", OpKind::Timed, async {
            let mut removed = 0;
            for chunk in users.chunks(LEAVE_SCRIPT_USERS) {
                let mut invocation = self.scripts.queue_leave.prepare_invoke();
                for key in self.keys.queue_script_keys() {
                    invocation.key(key);
                }
                invocation.arg(QUEUE_LOG_CAP);
                for user in chunk {
                    invocation
                        .arg(user.to_string())
                        .arg(encode(&QueueChange::Left(*user))?);
                }
                let n: u64 = invocation.invoke_async(&mut self.conn()).await.bus()?;
                removed += n;
            }
            Ok(removed)
        })
        .await
    }

    async fn queue_contains(&self, user: UserId) -> BusResult<bool> {
        self.observe("queue_contains", OpKind::Timed, async {
            redis::cmd("HEXISTS")
                .arg(&self.keys.queue_entries)
                .arg(user.to_string())
                .query_async(&mut self.conn())
                .await
                .bus()
        })
        .await
    }

    async fn queue_snapshot(&self) -> BusResult<(Vec<QueueEntry>, QueueCursor)> {
        self.observe("queue_snapshot", OpKind::Timed, async {
            let mut invocation = self.scripts.queue_snapshot.prepare_invoke();
            invocation
                .key(&self.keys.queue_entries)
                .key(&self.keys.queue_order)
                .key(&self.keys.queue_seq);
            let reply: Vec<String> = invocation.invoke_async(&mut self.conn()).await.bus()?;
            let mut reply = reply.into_iter();
            let seq = reply
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| BusError::Corrupt("queue snapshot without a sequence".into()))?;
            let entries = reply
                .map(|raw| {
                    serde_json::from_str::<QueueEntry>(&raw)
                        .map_err(|e| BusError::Corrupt(format!("queue entry: {e}")))
                })
                .collect::<BusResult<Vec<_>>>()?;
            Ok((entries, queue_cursor(seq)))
        })
        .await
    }

    async fn queue_changes(
        &self,
        cursor: &mut QueueCursor,
        max: usize,
        block: Duration,
    ) -> BusResult<Vec<QueueChange>> {
        self.observe("queue_changes", OpKind::Blocking, async {
            let mut last = queue_seq_of(&cursor.0)?;
            let entries = self
                .xread(&self.keys.queue_changes, &cursor.0, max, block)
                .await?;
            let mut changes = Vec::with_capacity(entries.len());
            for entry in &entries {
                let seq = queue_seq_of(&entry.id)?;
                if seq != last + 1 {
                    return Err(queue_log_trimmed());
                }
                let change = entry
                    .get::<String>("c")
                    .ok_or_else(|| BusError::Corrupt(format!("queue change {} is empty", entry.id)))
                    .and_then(|raw| {
                        serde_json::from_str::<QueueChange>(&raw)
                            .map_err(|e| BusError::Corrupt(format!("queue change: {e}")))
                    })?;
                changes.push(change);
                last = seq;
            }
            *cursor = queue_cursor(last);
            Ok(changes)
        })
        .await
    }

    async fn queue_counts(&self) -> BusResult<WaitingCounts> {
        self.observe("queue_counts", OpKind::Timed, async {
            let (dude, girl): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
                .arg(&self.keys.queue_counts)
                .arg(Gender::Dude.as_str())
                .arg(Gender::Girl.as_str())
                .query_async(&mut self.conn())
                .await
                .bus()?;
            let count = |n: Option<i64>| n.unwrap_or(0).max(0) as u64;
            Ok(WaitingCounts {
                dude: count(dude),
                girl: count(girl),
            })
        })
        .await
    }

    async fn acquire_lease(&self, holder: &str, ttl: Duration) -> BusResult<Option<FencingToken>> {
        self.observe("acquire_lease", OpKind::Timed, async {
            let token: i64 = self
                .scripts
                .lease_acquire
                .key(&self.keys.lease_holder)
                .key(&self.keys.lease_fence)
                .arg(holder)
                .arg(millis_at_least_one(ttl))
                .invoke_async(&mut self.conn())
                .await
                .bus()?;
            Ok((token > 0).then_some(FencingToken(token)))
        })
        .await
    }

    async fn renew_lease(
        &self,
        holder: &str,
        token: FencingToken,
        ttl: Duration,
    ) -> BusResult<bool> {
        self.observe("renew_lease", OpKind::Timed, async {
            let renewed: i64 = self
                .scripts
                .lease_renew
                .key(&self.keys.lease_holder)
                .arg(lease_value(holder, token))
                .arg(millis_at_least_one(ttl))
                .invoke_async(&mut self.conn())
                .await
                .bus()?;
            Ok(renewed == 1)
        })
        .await
    }

    async fn release_lease(&self, holder: &str, token: FencingToken) -> BusResult<()> {
        self.observe("release_lease", OpKind::Timed, async {
            self.scripts
                .lease_release
                .key(&self.keys.lease_holder)
                .arg(lease_value(holder, token))
                .invoke_async::<i64>(&mut self.conn())
                .await
                .bus()
                .map(drop)
        })
        .await
    }
}

/// What the holder key stores: the token is part of it, so a holder that
/// lost the lease and got a new one cannot act with the old token.
fn lease_value(holder: &str, token: FencingToken) -> String {
    format!("{holder}#{}", token.0)
}
