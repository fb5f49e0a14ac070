//! The real adapters one run measures against: a throwaway Postgres
//! database (`io_store::testing`, dropped with the world) and Redis under a
//! key prefix of its own (deleted with the world), users bulk-inserted in
//! SQL, and a fake gateway node that holds everyone's "socket".

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use io_bus::RedisBus;
use io_domain::limits::{ChatLimits, Rate};
use io_domain::model::QueueEntry;
use io_domain::ports::{Bus, Store};
use io_domain::types::{Alias, Gender, NodeId, Seeking, UserId};
use io_domain::Chat;
use io_store::testing::TestDb;
use io_store::StoreOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};

/// Rows per multi-row `INSERT` of users: one statement per few thousand
/// keeps setup of 100,000 users to seconds.
const INSERT_ROWS: usize = 5_000;
/// Users per presence pipeline.
const PRESENCE_USERS: usize = 5_000;
/// `queue_join` scripts in flight while filling the queue.
const JOINS_IN_FLIGHT: usize = 64;
/// Longer than any run, so nobody goes offline mid-measurement.
pub const PRESENCE_TTL: Duration = Duration::from_secs(900);
/// The group commit's pacing, as the server's default.
const COMMIT_INTERVAL: Duration = Duration::from_millis(2);

pub fn redis_url() -> String {
    std::env::var("IO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The node every benchmark user is "connected" to; its inbox is where
/// `match_found` arrives.
pub fn fake_node() -> NodeId {
    NodeId("matcher-bench-node".into())
}

/// A user as the queue sees them.
#[derive(Debug, Clone, Copy)]
pub struct BenchUser {
    pub id: UserId,
    pub gender: Gender,
    pub seeking: Seeking,
}

impl BenchUser {
    pub fn entry(&self, joined_at_ms: i64) -> QueueEntry {
        QueueEntry {
            user: self.id,
            gender: self.gender,
            seeking: self.seeking,
            joined_at_ms,
        }
    }
}

/// Alternating dudes seeking girls and girls seeking dudes: every
/// neighbouring pair of the list is compatible.
pub fn couples(n: usize) -> Vec<BenchUser> {
    (0..n)
        .map(|i| {
            let (gender, seeking) = if i % 2 == 0 {
                (Gender::Dude, Seeking::Girl)
            } else {
                (Gender::Girl, Seeking::Dude)
            };
            BenchUser {
                id: UserId::new(),
                gender,
                seeking,
            }
        })
        .collect()
}

/// Where a run's Redis keys live; they are deleted when this is dropped.
pub struct RedisKeys {
    pub url: String,
    pub prefix: String,
}

impl Drop for RedisKeys {
    fn drop(&mut self) {
        // Drop cannot await; the blocking client is enough for a cleanup.
        let deleted = redis::Client::open(self.url.as_str())
            .and_then(|client| client.get_connection())
            .and_then(|mut conn| {
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{}:*", self.prefix))
                        .arg("COUNT")
                        .arg(10_000)
                        .query(&mut conn)?;
                    if !keys.is_empty() {
                        redis::cmd("UNLINK").arg(&keys).query::<()>(&mut conn)?;
                    }
                    if next == 0 {
                        return Ok(());
                    }
                    cursor = next;
                }
            });
        if let Err(e) = deleted {
            eprintln!(
                "warning: Redis keys under {} were not deleted: {e}",
                self.prefix
            );
        }
    }
}

/// One run's adapters. Dropping it drops the database and the Redis keys.
pub struct World {
    /// The matcher's store: the production pool size (`IO_DATABASE_POOL`
    /// default), not the test helper's small one.
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    /// Bulk setup and `pg_stat_activity` lookups, beside the store's pool.
    pub pg: PgPool,
    /// Name of the database, to find its backends among the server's.
    pub database: String,
    pub redis: RedisKeys,
    /// Kept for its drop (the database goes with it); last, so every pool
    /// above is dropped before the database is.
    _db: TestDb,
}

impl World {
    pub async fn new() -> Result<World> {
        let db = io_store::testing::postgres().await;
        let store = io_store::connect_with(
            &db.url,
            &StoreOptions {
                max_connections: 16,
                acquire_timeout: Duration::from_secs(30),
            },
        )
        .await
        .context("open the matcher's store")?;
        let pg = PgPoolOptions::new()
            .max_connections(4)
            .connect(&db.url)
            .await
            .context("open the setup pool")?;
        let database: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&pg)
            .await?;
        let url = redis_url();
        let prefix = format!("iomatcherbench-{}", uuid::Uuid::new_v4().simple());
        let bus: Arc<dyn Bus> = Arc::new(
            RedisBus::connect(&url, &prefix)
                .await
                .with_context(|| format!("cannot reach Redis at {url} (set IO_TEST_REDIS_URL)"))?,
        );
        Ok(World {
            store,
            bus,
            pg,
            database,
            redis: RedisKeys { url, prefix },
            _db: db,
        })
    }

    /// A chat service over the world's adapters, as the matcher process
    /// builds it; the limits do not matter to the matcher.
    pub fn chat(&self) -> Arc<Chat> {
        let lots = Rate::new(1_000_000, Duration::from_secs(1), 1_000_000);
        let limits = ChatLimits {
            find_match: lots,
            messages: lots,
            typing: lots,
        };
        Chat::new(
            self.store.clone(),
            self.bus.clone(),
            limits,
            COMMIT_INTERVAL,
        )
    }

    /// Another connection to the same Redis keys, for a thread with a
    /// runtime of its own.
    pub async fn another_bus(url: &str, prefix: &str) -> Result<Arc<dyn Bus>> {
        Ok(Arc::new(RedisBus::connect(url, prefix).await?))
    }

    /// Insert `users` straight into the `users` table, a few thousand per
    /// statement, with their gender and wish set (onboarded).
    pub async fn insert_users(&self, users: &[BenchUser]) -> Result<()> {
        let now = chrono::Utc::now();
        for chunk in users.chunks(INSERT_ROWS) {
            let ids: Vec<uuid::Uuid> = chunk.iter().map(|u| u.id.0).collect();
            let emails: Vec<String> = chunk
                .iter()
                .map(|u| format!("{}@bench.test", u.id.0.simple()))
                .collect();
            let aliases: Vec<String> = chunk
                .iter()
                .map(|_| Alias::generate().to_string())
                .collect();
            let genders: Vec<&str> = chunk.iter().map(|u| u.gender.as_str()).collect();
            let seekings: Vec<&str> = chunk.iter().map(|u| u.seeking.as_str()).collect();
            sqlx::query(
                "INSERT INTO users (id, email, alias, gender, seeking, reveal_email, is_verified, \
                                    created_at, last_active) \
                 SELECT id, email, alias, gender, seeking, false, false, $6, $6 \
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) \
                      AS t (id, email, alias, gender, seeking)",
            )
            .bind(&ids)
            .bind(&emails)
            .bind(&aliases)
            .bind(&genders)
            .bind(&seekings)
            .bind(now)
            .execute(&self.pg)
            .await
            .context("bulk insert users")?;
        }
        // Fresh statistics, as a long-running database would have: the
        // matcher's queries should not be planned against an empty table.
        self.pg.execute("ANALYZE users").await?;
        Ok(())
    }

    /// Users already chatting: `n` active sessions between `2n` new users
    /// (who are not queued). Their count is what the store's "is anyone of
    /// these busy" check searches through.
    pub async fn active_sessions(&self, n: usize) -> Result<()> {
        let users = couples(2 * n);
        self.insert_users(&users).await?;
        let now = chrono::Utc::now();
        for chunk in users.chunks(2 * INSERT_ROWS) {
            let ids: Vec<uuid::Uuid> = chunk.chunks(2).map(|_| UserId::new().0).collect();
            let first: Vec<uuid::Uuid> = chunk.iter().step_by(2).map(|u| u.id.0).collect();
            let second: Vec<uuid::Uuid> = chunk.iter().skip(1).step_by(2).map(|u| u.id.0).collect();
            sqlx::query(
                "INSERT INTO chat_sessions (id, user1_id, user2_id, status, started_at, last_seq) \
                 SELECT id, u1, u2, 'active', $4, 0 \
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS t (id, u1, u2)",
            )
            .bind(&ids)
            .bind(&first)
            .bind(&second)
            .bind(now)
            .execute(&self.pg)
            .await
            .context("bulk insert sessions")?;
        }
        self.pg.execute("ANALYZE chat_sessions").await?;
        Ok(())
    }

    /// Everyone gets a live socket on the fake node.
    pub async fn online(&self, users: &[BenchUser]) -> Result<()> {
        let ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
        for chunk in ids.chunks(PRESENCE_USERS) {
            self.bus
                .presence_refresh(&fake_node(), chunk, PRESENCE_TTL)
                .await?;
        }
        Ok(())
    }

    /// Queue everyone at once: one join time, so turns follow the ids
    /// (time-ordered, hence list order).
    pub async fn queue_all(&self, users: &[BenchUser]) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        futures::stream::iter(users)
            .map(|u| {
                let bus = self.bus.clone();
                let entry = u.entry(now);
                async move { bus.queue_join(&entry).await }
            })
            .buffer_unordered(JOINS_IN_FLIGHT)
            .try_collect::<Vec<bool>>()
            .await?;
        Ok(())
    }

    /// Process ids of the Postgres backends serving this run's database.
    pub async fn backend_pids(&self) -> Result<Vec<i32>> {
        Ok(
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
                .bind(&self.database)
                .fetch_all(&self.pg)
                .await?,
        )
    }
}
