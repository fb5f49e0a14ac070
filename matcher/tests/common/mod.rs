//! What the matcher tests share: a world of real adapters (a throwaway
//! database from `io_store::testing`, the in-process bus or Redis under a
//! key prefix of its own), users created through the store, a fake gateway
//! node holding their "sockets", and the checks every scenario ends with.
//!
//! Redis keys under the test's prefix are deleted when the world is
//! dropped, failing tests included.

#![allow(dead_code)]

pub mod flaky;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use io_bus::{MemoryBus, RedisBus};
use io_domain::chat::Actor;
use io_domain::limits::{ChatLimits, Rate};
use io_domain::model::{QueueEntry, Session, SessionStatus};
use io_domain::ports::InboxCursor;
use io_domain::ports::{Bus, Store};
use io_domain::types::{Alias, Email, Gender, NodeId, Seeking, UserId};
use io_domain::Chat;
use io_matcher::{Matcher, MatcherConfig};
use io_store::testing::TestDb;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn redis_url() -> String {
    std::env::var("IO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The node every test user is "connected" to.
pub fn fake_node() -> NodeId {
    NodeId("matcher-test-node".into())
}

/// Presence long enough to outlive any test.
pub const PRESENCE_TTL: Duration = Duration::from_secs(600);
/// The group commit's pacing, as the server's default.
const COMMIT_INTERVAL: Duration = Duration::from_millis(2);

/// A test user and what they asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestUser {
    pub id: UserId,
    pub gender: Gender,
    pub seeking: Seeking,
}

impl TestUser {
    pub fn compatible(&self, other: &TestUser) -> bool {
        self.id != other.id
            && self.seeking.accepts(other.gender)
            && other.seeking.accepts(self.gender)
    }
}

/// Real adapters for one test.
pub struct World {
    pub db: TestDb,
    pub bus: Arc<dyn Bus>,
    pub chat: Arc<Chat>,
    /// Set for Redis worlds: where the keys are, for more buses and cleanup.
    pub redis: Option<RedisKeys>,
    /// Reads the fake node's inbox from the start of the test.
    inbox: tokio::sync::Mutex<InboxCursor>,
}

pub struct RedisKeys {
    pub url: String,
    pub prefix: String,
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        // Drop cannot await; the blocking client is enough for a cleanup.
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            eprintln!("warning: Redis keys under {} were not deleted", self.prefix);
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

/// Generous chat limits: tests drive many actions per user quickly.
fn limits() -> ChatLimits {
    let lots = Rate::new(10_000, Duration::from_secs(1), 10_000);
    ChatLimits {
        find_match: lots,
        messages: lots,
        typing: lots,
    }
}

impl World {
    /// `io all` wiring: SQLite and the in-process bus.
    pub async fn memory_sqlite() -> World {
        let db = io_store::testing::sqlite().await;
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        World::build(db, bus, None).await
    }

    /// Cluster wiring: Postgres and Redis (fails clearly if either is down).
    pub async fn redis_postgres() -> World {
        let db = io_store::testing::postgres().await;
        let url = redis_url();
        let prefix = format!("iomatchertest-{}", uuid::Uuid::new_v4().simple());
        let bus: Arc<dyn Bus> =
            Arc::new(RedisBus::connect(&url, &prefix).await.unwrap_or_else(|e| {
                panic!("cannot reach the test Redis at {url} (set IO_TEST_REDIS_URL): {e}")
            }));
        World::build(db, bus, Some(RedisKeys { url, prefix })).await
    }

    async fn build(db: TestDb, bus: Arc<dyn Bus>, redis: Option<RedisKeys>) -> World {
        let chat = Chat::new(db.store.clone(), bus.clone(), limits(), COMMIT_INTERVAL);
        // Resolve "latest" now, so every later envelope is read.
        let mut cursor = InboxCursor::latest();
        bus.read_inbox(&fake_node(), &mut cursor, 1, Duration::from_millis(1))
            .await
            .expect("read the fake node's inbox");
        World {
            db,
            bus,
            chat,
            redis,
            inbox: tokio::sync::Mutex::new(cursor),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.db.store
    }

    /// Another process on the same database and bus: its own store pool,
    /// its own Redis connections (the same in-process bus otherwise).
    pub async fn another_process(&self) -> Arc<Chat> {
        let store = io_store::connect(&self.db.url).await.expect("second store");
        let bus: Arc<dyn Bus> = match &self.redis {
            Some(keys) => Arc::new(
                RedisBus::connect(&keys.url, &keys.prefix)
                    .await
                    .expect("second Redis bus"),
            ),
            None => self.bus.clone(),
        };
        Chat::new(store, bus, limits(), COMMIT_INTERVAL)
    }

    /// A chat service of this world's store over another bus (a wrapper).
    pub fn chat_over(&self, bus: Arc<dyn Bus>) -> Arc<Chat> {
        Chat::new(self.store().clone(), bus, limits(), COMMIT_INTERVAL)
    }

    /// `n` dudes seeking girls then `n` girls seeking dudes, online.
    pub async fn couples(&self, n: usize) -> Result<Vec<TestUser>> {
        let mut classes = vec![(Gender::Dude, Seeking::Girl); n];
        classes.extend(vec![(Gender::Girl, Seeking::Dude); n]);
        let users = self.users(&classes).await?;
        for u in &users {
            self.online(u).await?;
        }
        Ok(users)
    }

    /// Everyone presses "find someone random" at once.
    pub async fn search_all(&self, users: &[TestUser]) -> Result<()> {
        let searches = users.iter().map(|u| self.find_match(u));
        for ok in futures::future::try_join_all(searches).await? {
            anyhow::ensure!(ok, "a fresh user was refused a search");
        }
        Ok(())
    }

    /// Everyone is in an active session and nobody is queued.
    pub async fn all_in_sessions(&self, users: &[TestUser]) -> Result<bool> {
        for u in users {
            if self.active_session(u.id).await?.is_none() {
                return Ok(false);
            }
        }
        Ok(self.queued().await?.is_empty())
    }

    /// A signed-up user with a gender and a wish, not yet online.
    pub async fn user(&self, gender: Gender, seeking: Seeking) -> Result<TestUser> {
        let email = Email::parse(&format!("{}@matcher.test", uuid::Uuid::new_v4().simple()))?;
        let user = self
            .store()
            .upsert_user(&email, &Alias::generate(), chrono::Utc::now())
            .await?;
        let update = io_domain::model::ProfileUpdate {
            gender: Some(gender),
            seeking: Some(seeking),
            ..Default::default()
        };
        self.store()
            .update_profile(user.id, &update, chrono::Utc::now())
            .await?
            .context("user vanished")?;
        Ok(TestUser {
            id: user.id,
            gender,
            seeking,
        })
    }

    /// Many users, created a few at a time.
    pub async fn users(&self, classes: &[(Gender, Seeking)]) -> Result<Vec<TestUser>> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(classes.iter().copied())
            .map(|(g, s)| self.user(g, s))
            .buffered(8)
            .try_collect()
            .await
    }

    pub async fn online(&self, user: &TestUser) -> Result<()> {
        self.bus
            .presence_add(&fake_node(), user.id, PRESENCE_TTL)
            .await?;
        Ok(())
    }

    pub async fn offline(&self, user: &TestUser) -> Result<()> {
        Ok(self.bus.presence_remove(&fake_node(), user.id).await?)
    }

    /// Press "find someone random", as a client does. `false` if the user
    /// is in an active session already (the design's CONFLICT), which a
    /// client racing the matcher runs into.
    pub async fn find_match(&self, user: &TestUser) -> Result<bool> {
        match self.chat.find_match(&Actor::rest(user.id)).await {
            Ok(()) => Ok(true),
            Err(io_domain::ChatError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Cancel a search; `false` when a match came first (the user is in a
    /// session, so there was nothing left to cancel).
    pub async fn cancel(&self, user: &TestUser) -> Result<bool> {
        match self.chat.cancel_search(&Actor::rest(user.id)).await {
            Ok(()) => Ok(true),
            Err(io_domain::ChatError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn queued(&self) -> Result<Vec<QueueEntry>> {
        Ok(self.bus.queue_snapshot().await?.0)
    }

    pub async fn active_session(&self, user: UserId) -> Result<Option<Session>> {
        Ok(self
            .store()
            .current_session(user)
            .await?
            .filter(|s| s.status == SessionStatus::Active))
    }

    /// Every `match_found` delivered to the fake node since the last call:
    /// (recipient, session id).
    pub async fn match_found_events(&self) -> Result<Vec<(UserId, String)>> {
        let mut cursor = self.inbox.lock().await;
        let mut found = Vec::new();
        loop {
            let batch = self
                .bus
                .read_inbox(&fake_node(), &mut cursor, 1000, Duration::from_millis(1))
                .await?;
            if batch.is_empty() {
                return Ok(found);
            }
            for envelope in batch {
                let frame: serde_json::Value = serde_json::from_str(&envelope.frame)?;
                if frame["type"] == "match_found" {
                    let session = frame["data"]["session"]["id"]
                        .as_str()
                        .context("match_found without a session id")?
                        .to_owned();
                    found.push((envelope.to, session));
                }
            }
        }
    }
}

/// A matcher running as a task of its own, stoppable cleanly (shutdown)
/// or abruptly (abort, as a SIGKILL would).
pub struct Running {
    pub matcher: Arc<Matcher>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Running {
    pub fn start(chat: Arc<Chat>, config: MatcherConfig) -> Running {
        let matcher = Arc::new(Matcher::new(chat, config));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (matcher, shutdown) = (matcher.clone(), shutdown.clone());
            async move { matcher.run(shutdown).await }
        });
        Running {
            matcher,
            shutdown,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// Die without releasing anything.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Matcher settings scaled down so tests run in seconds.
pub fn quick_config(holder: &str) -> MatcherConfig {
    MatcherConfig {
        holder: holder.into(),
        lease_ttl: Duration::from_millis(1500),
        renew_every: Duration::from_millis(300),
        offline_grace: Duration::from_secs(1),
    }
}

/// Poll `check` every 50 ms until it holds, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every pair that ever had a session among `users`, checked against the
/// rules: each pair compatible, no pair twice, nobody with two sessions
/// that are still active. `ended` are sessions the test itself ended.
/// Returns the sessions per user.
pub async fn check_sessions(
    world: &World,
    users: &[TestUser],
    ended_per_user: &HashMap<UserId, usize>,
) -> Result<HashMap<UserId, Vec<UserId>>> {
    let by_id: HashMap<UserId, TestUser> = users.iter().map(|u| (u.id, *u)).collect();
    let ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
    let mut partners: HashMap<UserId, Vec<UserId>> = HashMap::new();
    for chunk in ids.chunks(1000) {
        for (user, partner) in world.store().past_partners(chunk).await? {
            partners.entry(user).or_default().push(partner);
        }
    }
    for (user, list) in &partners {
        let me = by_id.get(user).context("a session with a stranger")?;
        let distinct: HashSet<&UserId> = list.iter().collect();
        if distinct.len() != list.len() {
            bail!("{user} met the same partner twice: {list:?}");
        }
        for p in list {
            let other = by_id.get(p).context("a session with a stranger")?;
            if !me.compatible(other) {
                bail!("incompatible pair: {me:?} with {other:?}");
            }
        }
        let ended = ended_per_user.get(user).copied().unwrap_or(0);
        if list.len() > ended + 1 {
            bail!(
                "{user} has {} sessions of which the test ended only {ended}: two were active",
                list.len()
            );
        }
    }
    Ok(partners)
}

/// Nobody is left waiting while a compatible partner they never met waits
/// too (both online). Returns the violations, empty when quiescent.
pub async fn waiting_pairs(world: &World, users: &[TestUser]) -> Result<Vec<(UserId, UserId)>> {
    let by_id: HashMap<UserId, TestUser> = users.iter().map(|u| (u.id, *u)).collect();
    let queued = world.queued().await?;
    let ids: Vec<UserId> = queued.iter().map(|e| e.user).collect();
    let nodes = world.bus.nodes_of(&ids).await?;
    let online: Vec<TestUser> = ids
        .iter()
        .zip(nodes)
        .filter(|(_, n)| !n.is_empty())
        .filter_map(|(u, _)| by_id.get(u).copied())
        .collect();
    let online_ids: Vec<UserId> = online.iter().map(|u| u.id).collect();
    let met: HashSet<(UserId, UserId)> = world
        .store()
        .past_partners(&online_ids)
        .await?
        .into_iter()
        .collect();
    let mut violations = Vec::new();
    for (i, a) in online.iter().enumerate() {
        for b in &online[i + 1..] {
            if a.compatible(b) && !met.contains(&(a.id, b.id)) && !met.contains(&(b.id, a.id)) {
                violations.push((a.id, b.id));
            }
        }
    }
    Ok(violations)
}
