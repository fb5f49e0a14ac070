//! The bus contract: one body of tests, run against `MemoryBus` and against
//! `RedisBus` on a real Redis (`IO_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Each Redis test gets its own key prefix; after
//! it, every key under that prefix is checked for a Redis Cluster hash tag and
//! deleted. No Redis means the Redis variants fail, loudly.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::FutureExt;
use io_bus::{MemoryBus, RedisBus, INBOX_CAP};
use io_domain::model::{ConnRef, Envelope, QueueChange, QueueEntry};
use io_domain::ports::{Bus, BusError, InboxCursor};
use io_domain::types::{FencingToken, Gender, NodeId, Seeking, UserId};
use io_protocol::WaitingCounts;

type SharedBus = Arc<dyn Bus>;

/// Long enough that nothing expires during a test unless it means to.
const LONG: Duration = Duration::from_secs(60);

// --- harness ---------------------------------------------------------------

async fn on_memory<F, Fut>(test: F)
where
    F: FnOnce(SharedBus) -> Fut,
    Fut: Future<Output = ()>,
{
    test(Arc::new(MemoryBus::new())).await
}

fn redis_url() -> String {
    std::env::var("IO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn on_redis<F, Fut>(test: F)
where
    F: FnOnce(SharedBus) -> Fut,
    Fut: Future<Output = ()>,
{
    on_redis_fixture(|redis| test(redis.bus)).await
}

/// What a Redis-only test gets: the bus, its key prefix and a connection of
/// its own for poking at Redis behind the bus's back.
struct RedisFixture {
    bus: SharedBus,
    prefix: String,
    raw: redis::aio::MultiplexedConnection,
}

async fn on_redis_fixture<F, Fut>(test: F)
where
    F: FnOnce(RedisFixture) -> Fut,
    Fut: Future<Output = ()>,
{
    let url = redis_url();
    let prefix = format!("iotest-{}", uuid::Uuid::new_v4().simple());
    let bus = RedisBus::connect(&url, &prefix).await.unwrap_or_else(|e| {
        panic!("the bus contract tests need Redis at {url} (set IO_TEST_REDIS_URL): {e}")
    });
    let raw = raw_connection(&url).await;
    let fixture = RedisFixture {
        bus: Arc::new(bus),
        prefix: prefix.clone(),
        raw,
    };
    let outcome = AssertUnwindSafe(test(fixture)).catch_unwind().await;
    let keys = delete_keys(&url, &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    for key in &keys {
        assert_hash_tagged(&prefix, key);
    }
}

async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("Redis URL")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("the bus tests need Redis at {url}: {e}"))
}

/// Every key under `prefix`, without deleting them.
async fn keys_under(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// Every key under `prefix`, deleted; returns their names.
async fn delete_keys(url: &str, prefix: &str) -> Vec<String> {
    let mut conn = raw_connection(url).await;
    let keys = keys_under(&mut conn, prefix).await;
    for chunk in keys.chunks(1000) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await
            .expect("DEL");
    }
    keys
}

/// The key is `<prefix>:{<tag>}...` with a non-empty tag, so Redis Cluster
/// places it by that tag.
fn assert_hash_tagged(prefix: &str, key: &str) {
    let rest = key
        .strip_prefix(&format!("{prefix}:{{"))
        .unwrap_or_else(|| panic!("key {key:?} has no hash tag right after the prefix"));
    let tag_len = rest
        .find('}')
        .unwrap_or_else(|| panic!("key {key:?} has an unclosed hash tag"));
    assert!(tag_len > 0, "key {key:?} has an empty hash tag");
}

/// Each test body runs once per implementation.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod memory_bus {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_memory(super::$name).await
                }
            )*
        }
        mod redis_bus {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_redis(super::$name).await
                }
            )*
        }
    };
}

contract_tests!(
    ping_answers,
    publish_reaches_each_node_in_order,
    inbox_cursor_misses_nothing_and_repeats_nothing,
    a_reader_behind_the_cap_is_told_of_its_gap,
    a_reader_just_past_the_cap_is_told_of_its_gap,
    latest_cursor_keeps_its_place_after_an_empty_read,
    blocking_read_wakes_on_publish,
    dropped_inbox_loses_pending_envelopes_only,
    presence_tracks_every_node_of_a_user,
    presence_expires_without_heartbeat,
    presence_refresh_covers_many_users,
    queue_join_is_idempotent_and_counted,
    queue_replace_changes_a_queued_entry_only,
    queue_snapshot_is_oldest_first,
    queue_snapshot_holds_thousands,
    queue_changes_continue_from_snapshot,
    blocking_queue_read_wakes_on_join,
    concurrent_joins_admit_a_user_once,
    lease_is_exclusive_and_renewable,
    expired_lease_passes_on_with_a_higher_token,
    concurrent_acquires_have_one_winner,
);

// --- fixtures ----------------------------------------------------------------

fn node(name: &str) -> NodeId {
    NodeId(name.to_owned())
}

fn envelope(n: u32) -> Envelope {
    Envelope {
        to: UserId::new(),
        skip: n.is_multiple_of(2).then(|| ConnRef {
            node: node("gw-a"),
            conn: u64::from(n),
        }),
        at_ms: 1_700_000_000_000 + i64::from(n),
        hops: (n % 3) as u8,
        frame: format!(r#"{{"type":"message_received","data":{{"n":{n}}}}}"#),
    }
}

fn entry(gender: Gender, joined_at_ms: i64) -> QueueEntry {
    QueueEntry {
        user: UserId::new(),
        gender,
        seeking: Seeking::default_for(Some(gender)),
        joined_at_ms,
    }
}

/// Read the inbox without waiting.
async fn drain(bus: &SharedBus, at: &NodeId, cursor: &mut InboxCursor) -> Vec<Envelope> {
    bus.read_inbox(at, cursor, 1000, Duration::ZERO)
        .await
        .expect("read_inbox")
}

fn sorted(mut nodes: Vec<NodeId>) -> Vec<NodeId> {
    nodes.sort();
    nodes
}

// --- inboxes -----------------------------------------------------------------

async fn ping_answers(bus: SharedBus) {
    bus.ping().await.expect("ping");
}

async fn publish_reaches_each_node_in_order(bus: SharedBus) {
    let (a, b) = (node("gw-a"), node("gw-b:8080"));
    let (mut at_a, mut at_b) = (InboxCursor::latest(), InboxCursor::latest());
    assert!(drain(&bus, &a, &mut at_a).await.is_empty());
    assert!(drain(&bus, &b, &mut at_b).await.is_empty());

    let e: Vec<Envelope> = (0..5).map(envelope).collect();
    bus.publish(&[
        (a.clone(), e[0].clone()),
        (b.clone(), e[1].clone()),
        (a.clone(), e[2].clone()),
        (a.clone(), e[3].clone()),
        (b.clone(), e[4].clone()),
    ])
    .await
    .expect("publish");
    bus.publish(&[]).await.expect("an empty batch is fine");

    assert_eq!(
        drain(&bus, &a, &mut at_a).await,
        vec![e[0].clone(), e[2].clone(), e[3].clone()]
    );
    assert_eq!(
        drain(&bus, &b, &mut at_b).await,
        vec![e[1].clone(), e[4].clone()]
    );
    assert!(drain(&bus, &a, &mut at_a).await.is_empty());
    assert!(drain(&bus, &b, &mut at_b).await.is_empty());
}

async fn inbox_cursor_misses_nothing_and_repeats_nothing(bus: SharedBus) {
    let a = node("gw-a");
    let mut cursor = InboxCursor::latest();
    assert!(drain(&bus, &a, &mut cursor).await.is_empty());

    let sent: Vec<Envelope> = (0..40).map(envelope).collect();
    let mut received = Vec::new();
    // Publish in batches of 6 while reading at most 7 at a time, so reads
    // end both in the middle of and between batches.
    for batch in sent.chunks(6) {
        let batch: Vec<_> = batch.iter().map(|e| (a.clone(), e.clone())).collect();
        bus.publish(&batch).await.expect("publish");
        received.extend(
            bus.read_inbox(&a, &mut cursor, 7, Duration::ZERO)
                .await
                .expect("read"),
        );
    }
    loop {
        let more = bus
            .read_inbox(&a, &mut cursor, 7, Duration::ZERO)
            .await
            .expect("read");
        if more.is_empty() {
            break;
        }
        assert!(more.len() <= 7, "read more than max");
        received.extend(more);
    }
    assert_eq!(received, sent);
    assert_eq!(cursor.gaps, 0, "a reader that keeps up sees no gap");
}

/// A cursor at the end of `at`'s inbox, then `total` envelopes published
/// there (`envelope(0)` first) and none of them read.
async fn fall_behind(bus: &SharedBus, at: &NodeId, total: usize) -> InboxCursor {
    let mut cursor = InboxCursor::latest();
    assert!(drain(bus, at, &mut cursor).await.is_empty());
    for first in (0..total).step_by(1_000) {
        let batch: Vec<_> = (first..(first + 1_000).min(total))
            .map(|n| (at.clone(), envelope(n as u32)))
            .collect();
        bus.publish(&batch).await.expect("publish");
    }
    cursor
}

async fn a_reader_just_past_the_cap_is_told_of_its_gap(bus: SharedBus) {
    // Fewer envelopes lost than one read takes: still a gap.
    let a = node("gw-a");
    let mut cursor = fall_behind(&bus, &a, INBOX_CAP + 300).await;
    let first = drain(&bus, &a, &mut cursor).await;
    assert_eq!(first.len(), 1_000);
    let dropped = (first[0].at_ms - envelope(0).at_ms) as usize;
    assert!(dropped > 0 && dropped <= 300, "dropped {dropped}");
    assert_eq!(cursor.gaps, 1, "{dropped} dropped unread: one gap");
}

async fn a_reader_behind_the_cap_is_told_of_its_gap(bus: SharedBus) {
    let a = node("gw-a");
    let total = INBOX_CAP + 2_000;
    let mut cursor = fall_behind(&bus, &a, total).await;
    let first = drain(&bus, &a, &mut cursor).await;
    assert_eq!(
        cursor.gaps, 1,
        "the read after the dropped envelopes counts one gap"
    );
    assert_eq!(first.len(), 1_000);
    assert!(
        first[0].at_ms > envelope(0).at_ms,
        "the oldest envelopes are the ones dropped"
    );
    // What was left may be skipped (its sockets are being reconnected), but
    // reading goes on: nothing seen twice, no second gap, and what comes
    // next is read.
    let mut rest = Vec::new();
    loop {
        let more = drain(&bus, &a, &mut cursor).await;
        if more.is_empty() {
            break;
        }
        rest.extend(more);
    }
    assert!(rest.len() < total - first.len());
    assert!(rest.iter().all(|e| e.at_ms > first[first.len() - 1].at_ms));
    bus.publish(&[(a.clone(), envelope(7))])
        .await
        .expect("publish");
    assert_eq!(drain(&bus, &a, &mut cursor).await, vec![envelope_like(7)]);
    assert_eq!(cursor.gaps, 1, "reads after the gap find none");
}

async fn latest_cursor_keeps_its_place_after_an_empty_read(bus: SharedBus) {
    let a = node("gw-a");
    bus.publish(&[(a.clone(), envelope(1))])
        .await
        .expect("publish");
    let mut cursor = InboxCursor::latest();
    // The first read waits, times out, and must not forget where "latest" was.
    let first = bus
        .read_inbox(&a, &mut cursor, 10, Duration::from_millis(100))
        .await
        .expect("read");
    assert!(first.is_empty(), "latest() must skip what came before");

    let later = envelope(2);
    bus.publish(&[(a.clone(), later.clone())])
        .await
        .expect("publish");
    assert_eq!(drain(&bus, &a, &mut cursor).await, vec![later]);
}

async fn blocking_read_wakes_on_publish(bus: SharedBus) {
    let a = node("gw-a");
    let mut cursor = InboxCursor::latest();
    assert!(drain(&bus, &a, &mut cursor).await.is_empty());

    let reader = {
        let bus = bus.clone();
        let a = a.clone();
        tokio::spawn(async move {
            let got = bus
                .read_inbox(&a, &mut cursor, 10, Duration::from_secs(20))
                .await;
            (got, cursor)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Other commands must not queue behind the blocked read.
    tokio::time::timeout(Duration::from_secs(2), bus.ping())
        .await
        .expect("a blocked reader must not stall other commands")
        .expect("ping");
    let sent = envelope(7);
    bus.publish(&[(a.clone(), sent.clone())])
        .await
        .expect("publish");

    let (got, mut cursor) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the blocked read must wake on publish")
        .expect("reader task");
    assert_eq!(got.expect("read"), vec![sent]);
    assert!(drain(&bus, &a, &mut cursor).await.is_empty());
}

async fn dropped_inbox_loses_pending_envelopes_only(bus: SharedBus) {
    let (a, b) = (node("gw-a"), node("gw-b"));
    let (mut at_a, mut at_b) = (InboxCursor::latest(), InboxCursor::latest());
    assert!(drain(&bus, &a, &mut at_a).await.is_empty());
    assert!(drain(&bus, &b, &mut at_b).await.is_empty());
    bus.publish(&[(a.clone(), envelope(1)), (b.clone(), envelope(2))])
        .await
        .expect("publish");

    bus.drop_inbox(&a).await.expect("drop_inbox");
    assert!(drain(&bus, &a, &mut at_a).await.is_empty());
    assert_eq!(drain(&bus, &b, &mut at_b).await, vec![envelope_like(2)]);

    // The node's cursor stays usable if the inbox comes back.
    let again = envelope(3);
    bus.publish(&[(a.clone(), again.clone())])
        .await
        .expect("publish");
    assert_eq!(drain(&bus, &a, &mut at_a).await, vec![again]);
}

/// `envelope(n)` with a fresh `to`; compare all but that.
fn envelope_like(n: u32) -> EnvelopeMatcher {
    EnvelopeMatcher(envelope(n))
}

/// Equal to an envelope that differs at most in `to`.
#[derive(Debug)]
struct EnvelopeMatcher(Envelope);

impl PartialEq<EnvelopeMatcher> for Envelope {
    fn eq(&self, other: &EnvelopeMatcher) -> bool {
        Envelope {
            to: other.0.to,
            ..self.clone()
        } == other.0
    }
}

// --- presence ----------------------------------------------------------------

async fn presence_tracks_every_node_of_a_user(bus: SharedBus) {
    let (n1, n2) = (node("gw-1"), node("gw-2"));
    let (u1, u2, u3) = (UserId::new(), UserId::new(), UserId::new());
    assert_eq!(bus.online_count().await.expect("count"), 0);

    assert!(
        !bus.presence_add(&n1, u1, LONG).await.expect("add"),
        "first"
    );
    assert!(
        bus.presence_add(&n2, u1, LONG).await.expect("add"),
        "already on another node"
    );
    assert!(
        !bus.presence_add(&n1, u2, LONG).await.expect("add"),
        "first"
    );
    assert!(
        bus.presence_add(&n1, u2, LONG)
            .await
            .expect("adding twice is fine"),
        "already on this node"
    );
    let nodes = bus.nodes_of(&[u1, u2, u3]).await.expect("nodes_of");
    let nodes: Vec<_> = nodes.into_iter().map(sorted).collect();
    assert_eq!(
        nodes,
        vec![vec![n1.clone(), n2.clone()], vec![n1.clone()], vec![]]
    );
    assert_eq!(bus.online_count().await.expect("count"), 2);
    assert!(bus.nodes_of(&[]).await.expect("nodes_of").is_empty());

    // One tab closes: still online through the other node.
    bus.presence_remove(&n1, u1).await.expect("remove");
    assert_eq!(
        bus.nodes_of(&[u1]).await.expect("nodes_of"),
        vec![vec![n2.clone()]]
    );
    assert_eq!(bus.online_count().await.expect("count"), 2);

    bus.presence_remove(&n2, u1).await.expect("remove");
    bus.presence_remove(&n2, u3)
        .await
        .expect("removing an absent user is fine");
    assert_eq!(
        bus.nodes_of(&[u1, u2]).await.expect("nodes_of"),
        vec![vec![], vec![n1.clone()]]
    );
    assert_eq!(bus.online_count().await.expect("count"), 1);
}

async fn presence_expires_without_heartbeat(bus: SharedBus) {
    let (n1, n2) = (node("gw-1"), node("gw-2"));
    let short = Duration::from_millis(700);
    let (gone, kept, both) = (UserId::new(), UserId::new(), UserId::new());
    bus.presence_add(&n1, gone, short).await.expect("add");
    bus.presence_add(&n1, kept, short).await.expect("add");
    bus.presence_add(&n1, both, short).await.expect("add");
    bus.presence_add(&n2, both, LONG).await.expect("add");
    assert_eq!(bus.online_count().await.expect("count"), 3);

    tokio::time::sleep(Duration::from_millis(400)).await;
    bus.presence_refresh(&n1, &[kept], short)
        .await
        .expect("refresh");
    tokio::time::sleep(Duration::from_millis(400)).await;

    // 800 ms in: `gone` lapsed at 700, `kept` was extended to 1100 or later
    // (only a late check could fail, so the margin is on that side).
    assert_eq!(
        bus.nodes_of(&[gone, kept, both]).await.expect("nodes_of"),
        vec![vec![], vec![n1.clone()], vec![n2.clone()]]
    );
    assert_eq!(bus.online_count().await.expect("count"), 2);

    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        bus.nodes_of(&[kept]).await.expect("nodes_of"),
        vec![Vec::<NodeId>::new()]
    );
    assert_eq!(bus.online_count().await.expect("count"), 1);

    // A node that lapsed and comes back is live again.
    bus.presence_add(&n1, gone, LONG).await.expect("add");
    assert_eq!(
        bus.nodes_of(&[gone]).await.expect("nodes_of"),
        vec![vec![n1.clone()]]
    );
    assert_eq!(bus.online_count().await.expect("count"), 2);
}

async fn presence_refresh_covers_many_users(bus: SharedBus) {
    let n1 = node("gw-1");
    let users: Vec<UserId> = (0..12_000).map(|_| UserId::new()).collect();
    bus.presence_refresh(&n1, &users, LONG)
        .await
        .expect("refresh");
    bus.presence_refresh(&n1, &[], LONG)
        .await
        .expect("an empty heartbeat is fine");
    assert_eq!(bus.online_count().await.expect("count"), 12_000);

    let sample = [users[0], users[5_000], users[11_999]];
    assert_eq!(
        bus.nodes_of(&sample).await.expect("nodes_of"),
        vec![vec![n1.clone()]; 3]
    );
    let all = bus.nodes_of(&users).await.expect("nodes_of");
    assert_eq!(all.len(), users.len());
    assert!(all.iter().all(|nodes| nodes == std::slice::from_ref(&n1)));
}

// --- match queue -------------------------------------------------------------

async fn queue_join_is_idempotent_and_counted(bus: SharedBus) {
    let d1 = entry(Gender::Dude, 1_000);
    let g1 = entry(Gender::Girl, 1_001);
    let d2 = entry(Gender::Dude, 1_002);
    assert_eq!(
        bus.queue_counts().await.expect("counts"),
        WaitingCounts { dude: 0, girl: 0 }
    );

    assert!(bus.queue_join(&d1).await.expect("join"));
    assert!(
        !bus.queue_join(&QueueEntry {
            joined_at_ms: 9_999,
            ..d1.clone()
        })
        .await
        .expect("join"),
        "a second join must not change the queue"
    );
    assert!(bus.queue_join(&g1).await.expect("join"));
    assert!(bus.queue_join(&d2).await.expect("join"));
    assert_eq!(
        bus.queue_counts().await.expect("counts"),
        WaitingCounts { dude: 2, girl: 1 }
    );
    assert!(bus.queue_contains(d1.user).await.expect("contains"));
    let (snapshot, _) = bus.queue_snapshot().await.expect("snapshot");
    assert_eq!(snapshot, vec![d1.clone(), g1.clone(), d2.clone()]);

    assert_eq!(
        bus.queue_leave(&[d1.user, UserId::new()])
            .await
            .expect("leave"),
        1
    );
    assert!(!bus.queue_contains(d1.user).await.expect("contains"));
    assert_eq!(bus.queue_leave(&[d1.user]).await.expect("leave"), 0);
    assert_eq!(bus.queue_leave(&[]).await.expect("leave"), 0);
    assert_eq!(
        bus.queue_counts().await.expect("counts"),
        WaitingCounts { dude: 1, girl: 1 }
    );

    assert_eq!(
        bus.queue_leave(&[g1.user, d2.user]).await.expect("leave"),
        2
    );
    assert_eq!(
        bus.queue_counts().await.expect("counts"),
        WaitingCounts { dude: 0, girl: 0 }
    );
    // After leaving, joining works again.
    assert!(bus.queue_join(&d1).await.expect("join"));
}

async fn queue_replace_changes_a_queued_entry_only(bus: SharedBus) {
    let d = entry(Gender::Dude, 1_000);
    let g = entry(Gender::Girl, 1_001);
    bus.queue_join(&d).await.expect("join");
    bus.queue_join(&g).await.expect("join");
    let (_, mut cursor) = bus.queue_snapshot().await.expect("snapshot");

    // The dude is now a girl seeking dudes, and waits from a later time.
    let changed = QueueEntry {
        gender: Gender::Girl,
        seeking: Seeking::Dude,
        joined_at_ms: 2_000,
        ..d.clone()
    };
    assert!(bus.queue_replace(&changed).await.expect("replace"));
    assert_eq!(
        bus.queue_counts().await.expect("counts"),
        WaitingCounts { dude: 0, girl: 2 }
    );
    let (snapshot, _) = bus.queue_snapshot().await.expect("snapshot");
    assert_eq!(snapshot, vec![g.clone(), changed.clone()], "oldest first");
    let changes = bus
        .queue_changes(&mut cursor, 100, Duration::ZERO)
        .await
        .expect("changes");
    assert_eq!(changes, vec![QueueChange::Joined(changed.clone())]);

    // Someone not queued stays out: nothing written, nothing counted.
    let stranger = entry(Gender::Dude, 3_000);
    assert!(!bus.queue_replace(&stranger).await.expect("replace"));
    assert!(!bus.queue_contains(stranger.user).await.expect("contains"));
    assert_eq!(
        bus.queue_counts().await.expect("counts"),
        WaitingCounts { dude: 0, girl: 2 }
    );
    assert!(bus
        .queue_changes(&mut cursor, 100, Duration::ZERO)
        .await
        .expect("changes")
        .is_empty());

    // Leaving takes the replaced entry, counted under its new gender.
    assert_eq!(bus.queue_leave(&[d.user]).await.expect("leave"), 1);
    assert_eq!(
        bus.queue_counts().await.expect("counts"),
        WaitingCounts { dude: 0, girl: 1 }
    );
}

async fn queue_snapshot_is_oldest_first(bus: SharedBus) {
    let entries: Vec<QueueEntry> = [5, 1, 4, 2, 3]
        .into_iter()
        .map(|t| {
            let gender = if t % 2 == 0 {
                Gender::Girl
            } else {
                Gender::Dude
            };
            entry(gender, 1_700_000_000_000 + t)
        })
        .collect();
    for e in &entries {
        assert!(bus.queue_join(e).await.expect("join"));
    }
    let mut expected = entries.clone();
    expected.sort_by_key(|e| e.joined_at_ms);
    let (snapshot, _) = bus.queue_snapshot().await.expect("snapshot");
    assert_eq!(snapshot, expected);

    bus.queue_leave(&[expected[2].user]).await.expect("leave");
    expected.remove(2);
    let (snapshot, _) = bus.queue_snapshot().await.expect("snapshot");
    assert_eq!(snapshot, expected);
}

async fn queue_snapshot_holds_thousands(bus: SharedBus) {
    let entries: Vec<QueueEntry> = (0..2_500)
        .map(|t| {
            let gender = if t % 3 == 0 {
                Gender::Girl
            } else {
                Gender::Dude
            };
            entry(gender, 10_000 - t)
        })
        .collect();
    for chunk in entries.chunks(250) {
        let joined = join_all(chunk.iter().map(|e| bus.queue_join(e))).await;
        assert!(joined.into_iter().all(|r| r.expect("join")));
    }
    let (snapshot, _) = bus.queue_snapshot().await.expect("snapshot");
    let mut expected = entries;
    expected.reverse();
    assert_eq!(snapshot, expected);
    assert_eq!(
        bus.queue_counts().await.expect("counts"),
        WaitingCounts {
            dude: 1_666,
            girl: 834
        }
    );
}

async fn queue_changes_continue_from_snapshot(bus: SharedBus) {
    let before = entry(Gender::Dude, 1);
    bus.queue_join(&before).await.expect("join");
    let (snapshot, mut cursor) = bus.queue_snapshot().await.expect("snapshot");
    assert_eq!(snapshot, vec![before.clone()]);
    assert!(bus
        .queue_changes(&mut cursor, 100, Duration::ZERO)
        .await
        .expect("changes")
        .is_empty());

    let after: Vec<QueueEntry> = (2..8).map(|t| entry(Gender::Girl, t)).collect();
    for e in &after {
        bus.queue_join(e).await.expect("join");
    }
    bus.queue_join(&before)
        .await
        .expect("a repeated join records no change");
    bus.queue_leave(&[before.user, after[0].user])
        .await
        .expect("leave");

    let mut expected: Vec<QueueChange> = after.iter().cloned().map(QueueChange::Joined).collect();
    expected.push(QueueChange::Left(before.user));
    expected.push(QueueChange::Left(after[0].user));

    // Read in small steps: nothing lost, nothing repeated.
    let mut seen = Vec::new();
    loop {
        let batch = bus
            .queue_changes(&mut cursor, 3, Duration::ZERO)
            .await
            .expect("changes");
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 3, "read more than max");
        seen.extend(batch);
    }
    assert_eq!(seen, expected);

    // Replaying the snapshot and the changes gives the queue as it is now.
    let mut replayed = snapshot;
    for change in seen {
        match change {
            QueueChange::Joined(e) => replayed.push(e),
            QueueChange::Left(user) => replayed.retain(|e| e.user != user),
        }
    }
    let (now, _) = bus.queue_snapshot().await.expect("snapshot");
    assert_eq!(replayed, now);
}

async fn blocking_queue_read_wakes_on_join(bus: SharedBus) {
    let (_, mut cursor) = bus.queue_snapshot().await.expect("snapshot");
    let reader = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.queue_changes(&mut cursor, 10, Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let joined = entry(Gender::Girl, 42);
    bus.queue_join(&joined).await.expect("join");
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the blocked read must wake on a join")
        .expect("reader task")
        .expect("changes");
    assert_eq!(got, vec![QueueChange::Joined(joined)]);
}

async fn concurrent_joins_admit_a_user_once(bus: SharedBus) {
    let (_, mut cursor) = bus.queue_snapshot().await.expect("snapshot");
    let e = entry(Gender::Dude, 7);
    let outcomes = join_all((0..16).map(|_| {
        let bus = bus.clone();
        let e = e.clone();
        tokio::spawn(async move { bus.queue_join(&e).await })
    }))
    .await;
    let admitted = outcomes
        .into_iter()
        .map(|r| r.expect("task").expect("join"))
        .filter(|added| *added)
        .count();
    assert_eq!(admitted, 1);
    assert_eq!(
        bus.queue_counts().await.expect("counts"),
        WaitingCounts { dude: 1, girl: 0 }
    );
    assert_eq!(
        bus.queue_changes(&mut cursor, 100, Duration::ZERO)
            .await
            .expect("changes"),
        vec![QueueChange::Joined(e)]
    );
}

// --- matcher lease -----------------------------------------------------------

async fn lease_is_exclusive_and_renewable(bus: SharedBus) {
    let t1 = bus
        .acquire_lease("matcher-a", LONG)
        .await
        .expect("acquire")
        .expect("a free lease is granted");
    assert_eq!(
        bus.acquire_lease("matcher-b", LONG).await.expect("acquire"),
        None
    );
    assert_eq!(
        bus.acquire_lease("matcher-a", LONG).await.expect("acquire"),
        None,
        "a held lease is not granted again, not even to its holder"
    );

    assert!(bus.renew_lease("matcher-a", t1, LONG).await.expect("renew"));
    assert!(!bus.renew_lease("matcher-b", t1, LONG).await.expect("renew"));
    assert!(!bus
        .renew_lease("matcher-a", FencingToken(t1.0 + 1), LONG)
        .await
        .expect("renew"));

    // Only the holder can release it.
    bus.release_lease("matcher-b", t1).await.expect("release");
    assert_eq!(
        bus.acquire_lease("matcher-c", LONG).await.expect("acquire"),
        None
    );

    bus.release_lease("matcher-a", t1).await.expect("release");
    assert!(!bus.renew_lease("matcher-a", t1, LONG).await.expect("renew"));
    let t2 = bus
        .acquire_lease("matcher-b", LONG)
        .await
        .expect("acquire")
        .expect("a released lease is granted at once");
    assert!(t2 > t1, "tokens must increase: {t1:?} then {t2:?}");
}

async fn expired_lease_passes_on_with_a_higher_token(bus: SharedBus) {
    let short = Duration::from_millis(300);
    let t1 = bus
        .acquire_lease("matcher-a", short)
        .await
        .expect("acquire")
        .expect("granted");
    tokio::time::sleep(Duration::from_millis(450)).await;

    let t2 = bus
        .acquire_lease("matcher-b", LONG)
        .await
        .expect("acquire")
        .expect("an expired lease is granted");
    assert!(t2 > t1, "tokens must increase: {t1:?} then {t2:?}");

    // The deposed leader can neither extend nor drop its successor's lease.
    assert!(!bus.renew_lease("matcher-a", t1, LONG).await.expect("renew"));
    bus.release_lease("matcher-a", t1).await.expect("release");
    assert_eq!(
        bus.acquire_lease("matcher-c", LONG).await.expect("acquire"),
        None
    );
    assert!(bus.renew_lease("matcher-b", t2, LONG).await.expect("renew"));
}

async fn concurrent_acquires_have_one_winner(bus: SharedBus) {
    let outcomes = join_all((0..12).map(|i| {
        let bus = bus.clone();
        tokio::spawn(async move { bus.acquire_lease(&format!("matcher-{i}"), LONG).await })
    }))
    .await;
    let winners: Vec<FencingToken> = outcomes
        .into_iter()
        .filter_map(|r| r.expect("task").expect("acquire"))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one leader: {winners:?}");
}

// --- outside the shared body --------------------------------------------------

/// Every kind of state RedisBus keeps, written at once with long TTLs, is in
/// keys of the expected names, each with a hash tag.
#[tokio::test]
async fn every_redis_key_carries_a_hash_tag() {
    on_redis_fixture(|mut redis| async move {
        let bus = redis.bus;
        let (n1, user) = (node("gw-1"), UserId::new());
        bus.publish(&[(n1.clone(), envelope(1))])
            .await
            .expect("publish");
        bus.presence_add(&n1, user, LONG).await.expect("add");
        let queued = entry(Gender::Girl, 1);
        bus.queue_join(&queued).await.expect("join");
        bus.queue_join(&entry(Gender::Dude, 2)).await.expect("join");
        bus.queue_leave(&[queued.user]).await.expect("leave");
        bus.acquire_lease("matcher-a", LONG).await.expect("acquire");

        let mut keys = keys_under(&mut redis.raw, &redis.prefix).await;
        keys.sort();
        let mut expected: Vec<String> = [
            format!("{{n:{n1}}}:inbox"),
            format!("{{u:{user}}}:nodes"),
            "{online}".to_owned(),
            "{mq}:entries".to_owned(),
            "{mq}:order".to_owned(),
            "{mq}:changes".to_owned(),
            "{mq}:seq".to_owned(),
            "{mq}:counts".to_owned(),
            "{lease}:holder".to_owned(),
            "{lease}:fence".to_owned(),
        ]
        .into_iter()
        .map(|k| format!("{}:{k}", redis.prefix))
        .collect();
        expected.sort();
        assert_eq!(keys, expected);
        for key in &keys {
            assert_hash_tagged(&redis.prefix, key);
        }
    })
    .await
}

/// A blocked reader whose connection dies gets an error; the next read opens
/// a fresh connection and continues from the same cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reader_recovers_after_its_connection_dies() {
    on_redis_fixture(|mut redis| async move {
        let bus = redis.bus;
        let a = node("gw-a");
        let mut cursor = InboxCursor::latest();
        assert!(drain(&bus, &a, &mut cursor).await.is_empty());

        let reader = {
            let bus = bus.clone();
            let a = a.clone();
            tokio::spawn(async move {
                let got = bus
                    .read_inbox(&a, &mut cursor, 10, Duration::from_secs(20))
                    .await;
                (got, cursor)
            })
        };
        let name = format!("io-bus:{}:reader", redis.prefix);
        let mut killed = 0;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let clients: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut redis.raw)
                .await
                .expect("CLIENT LIST");
            for line in clients
                .lines()
                .filter(|l| l.contains(&format!(" name={name} ")))
            {
                let id = line
                    .split(' ')
                    .find_map(|f| f.strip_prefix("id="))
                    .expect("client id");
                killed += redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("ID")
                    .arg(id)
                    .query_async::<u64>(&mut redis.raw)
                    .await
                    .expect("CLIENT KILL");
            }
            if killed > 0 {
                break;
            }
        }
        assert!(killed > 0, "the blocked reader's connection was not found");

        let (got, mut cursor) = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("a reader whose connection died must not hang")
            .expect("reader task");
        assert!(
            matches!(got, Err(BusError::Unavailable(_))),
            "expected an error, got {got:?}"
        );

        let sent = envelope(3);
        bus.publish(&[(a.clone(), sent.clone())])
            .await
            .expect("publish");
        let got = bus
            .read_inbox(&a, &mut cursor, 10, Duration::from_secs(5))
            .await
            .expect("the next read reconnects");
        assert_eq!(got, vec![sent]);
    })
    .await
}

/// A queue follower whose cursor points before the trimmed part of the change
/// log is told so, instead of silently missing changes.
#[tokio::test]
async fn redis_queue_follower_behind_the_trimmed_log_is_told() {
    on_redis_fixture(|mut redis| async move {
        let bus = redis.bus;
        let (_, mut stale) = bus.queue_snapshot().await.expect("snapshot");
        for t in 0..5 {
            bus.queue_join(&entry(Gender::Dude, t)).await.expect("join");
        }
        redis::cmd("XTRIM")
            .arg(format!("{}:{{mq}}:changes", redis.prefix))
            .arg("MAXLEN")
            .arg(2)
            .query_async::<u64>(&mut redis.raw)
            .await
            .expect("XTRIM");
        let got = bus.queue_changes(&mut stale, 10, Duration::ZERO).await;
        assert!(
            matches!(&got, Err(BusError::Unavailable(m)) if m.contains("snapshot")),
            "expected a request to re-snapshot, got {got:?}"
        );

        let (entries, mut fresh) = bus.queue_snapshot().await.expect("snapshot");
        assert_eq!(entries.len(), 5);
        let joined = entry(Gender::Girl, 9);
        bus.queue_join(&joined).await.expect("join");
        assert_eq!(
            bus.queue_changes(&mut fresh, 10, Duration::ZERO)
                .await
                .expect("changes"),
            vec![QueueChange::Joined(joined)]
        );
    })
    .await
}

#[tokio::test]
async fn connect_fails_clearly_when_redis_is_unreachable() {
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        RedisBus::connect("redis://127.0.0.1:1", "io"),
    )
    .await
    .expect("connect must give up, not hang");
    assert!(matches!(err, Err(BusError::Unavailable(_))));
}

/// `rediss://` is supported: against a plain-text server the TLS handshake
/// fails with an error (it neither panics for want of a crypto provider nor
/// hangs).
#[tokio::test]
async fn tls_url_is_understood() {
    let url = redis_url().replacen("redis://", "rediss://", 1);
    let outcome = tokio::time::timeout(Duration::from_secs(30), RedisBus::connect(&url, "io"))
        .await
        .expect("a TLS connect must give up, not hang");
    assert!(
        matches!(outcome, Err(BusError::Unavailable(_))),
        "TLS to a plain-text Redis must fail"
    );
}

#[tokio::test]
async fn connect_without_url_is_in_process() {
    let bus = io_bus::connect(None, "io").await.expect("in-process bus");
    bus.ping().await.expect("ping");
}

#[tokio::test]
async fn connect_refuses_a_prefix_that_breaks_hash_tags() {
    for prefix in ["", "io{x}", "io x"] {
        assert!(
            RedisBus::connect(&redis_url(), prefix).await.is_err(),
            "{prefix:?}"
        );
    }
}
