//! [`PgStore`]: the store on Postgres, the cluster's system of record,
//! shared by every node.
//!
//! Every multi-statement operation runs in one READ COMMITTED transaction
//! that first locks the row its decision depends on (the session row, the
//! fence row, the refresh token row); statements after the lock see every
//! commit that happened before it was granted, which is what makes the
//! checks-then-write sequences safe across nodes. Batch writes bind whole
//! columns as arrays (`UNNEST`), so their statement count does not grow
//! with the batch.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use io_domain::model::*;
use io_domain::ports::{Store, StoreError, StoreResult};
use io_domain::types::*;
use sqlx::error::ErrorKind;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use uuid::Uuid;

use crate::error::{corrupt, db, is_kind, violates};
use crate::plan::RefreshVerdict;
use crate::plan::{self, RoundState};
use crate::pooled::OnPool;
use crate::records::{self, stored, Cols};
use crate::records::{SESSION_COLS, USER_COLS};
use crate::sql;
use crate::StoreOptions;

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// A group commit in one statement. `$1`–`$6` are the batch's columns
/// (id, session, sender, content, clientMsgId, createdAt), `$7` its
/// sessions, sorted and distinct. It locks the sessions in that order (a
/// lock granted after another node's commit returns that commit's
/// `last_seq` and status), decides each key's first occurrence as
/// [`plan::plan_append`] does, inserts the new messages, bumps `last_seq`,
/// and answers `(ord, verdict, seq, old_*)` per first occurrence.
///
/// Stored keys are read from the statement's snapshot, taken before the
/// locks, so a key another node committed meanwhile is not seen. For a
/// message that would be new, the insert then fails with a unique
/// violation. For a session that ended meanwhile (active in the snapshot,
/// ended under the lock) the verdict is `stale`: the key may have been
/// stored just before the end. Either way the caller runs the statement
/// again (at most [`APPEND_ATTEMPTS`] times in all).
const APPEND: &str = "\
WITH input AS ( \
  SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[]) \
    WITH ORDINALITY AS i (id, sid, sender, content, cid, created, ord)), \
firsts AS ( \
  SELECT DISTINCT ON (sid, sender, cid) * FROM input ORDER BY sid, sender, cid, ord), \
locked AS MATERIALIZED ( \
  SELECT s.* FROM UNNEST($7::uuid[]) AS k (id) \
  CROSS JOIN LATERAL (SELECT id, status, user1_id, user2_id, last_seq FROM chat_sessions c \
                      WHERE c.id = k.id FOR UPDATE) s), \
decided AS ( \
  SELECT f.*, l.last_seq, \
    CASE WHEN l.id IS NULL OR f.sender NOT IN (l.user1_id, l.user2_id) THEN 'missing' \
         WHEN o.id IS NOT NULL THEN 'old' \
         WHEN l.status <> 'active' THEN \
           CASE (SELECT status FROM chat_sessions c WHERE c.id = f.sid) \
             WHEN 'active' THEN 'stale' ELSE 'ended' END \
         ELSE 'new' END AS verdict, \
    o.id AS old_id, o.seq AS old_seq, o.content AS old_content, o.created_at AS old_created \
  FROM firsts f \
  LEFT JOIN locked l ON l.id = f.sid \
  LEFT JOIN LATERAL (SELECT id, seq, content, created_at FROM messages m \
                     WHERE m.session_id = f.sid AND m.sender_id = f.sender \
                       AND m.client_msg_id = f.cid LIMIT 1) o ON true), \
fresh AS ( \
  SELECT d.*, d.last_seq + row_number() OVER (PARTITION BY d.sid ORDER BY d.ord) AS seq \
  FROM decided d WHERE d.verdict = 'new'), \
ins AS ( \
  INSERT INTO messages (id, session_id, sender_id, seq, content, client_msg_id, created_at) \
  SELECT id, sid, sender, seq, content, cid, created FROM fresh), \
bump AS ( \
  UPDATE chat_sessions c SET last_seq = t.top \
  FROM (SELECT sid, max(seq) AS top FROM fresh GROUP BY sid) t \
  WHERE c.id = t.sid) \
SELECT d.ord, d.verdict, f.seq, d.old_id, d.old_seq, d.old_content, d.old_created \
FROM decided d LEFT JOIN fresh f ON f.ord = d.ord";

/// Rotations and revocations of one user's refresh tokens take turns under
/// this lock (held to the end of the transaction): a revocation's `UPDATE`
/// then sees every successor a rotation inserted, instead of missing one
/// committed in the same instant (read committed reads a snapshot per
/// statement). Taken before any row lock, always, so the two never deadlock.
const LOCK_USER_TOKENS: &str =
    "SELECT pg_advisory_xact_lock(hashtextextended('io refresh-tokens ' || $1::text, 0))";

/// [`LOCK_USER_TOKENS`] for the owner of token `$1`; no row if there is no
/// such token.
const LOCK_TOKEN_OWNER: &str = "SELECT pg_advisory_xact_lock(\
       hashtextextended('io refresh-tokens ' || user_id::text, 0)) \
     FROM refresh_tokens WHERE token_hash = $1";

/// Runs of [`APPEND`] for one batch: a second run sees what raced the
/// first; a third only if yet another node wrote the same key meanwhile.
const APPEND_ATTEMPTS: u32 = 3;

/// The [`Store`] on a Postgres connection pool.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The group commit's own connections: they run only [`APPEND`], with
    /// generic plans that never fall back to a sequential scan, so a batch
    /// is planned once per connection and its plan does not depend on
    /// table statistics (which a database without autovacuum never has).
    writer: PgPool,
}

impl PgStore {
    /// Connect (`sslmode=require` and friends work, over rustls) and apply
    /// pending migrations; several nodes may do so at once, the migrator
    /// takes an advisory lock.
    pub async fn connect(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        let connect = PgConnectOptions::from_str(url).map_err(db)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("applying migrations failed: {e}")))?;
        let writer = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect.options([
                ("plan_cache_mode", "force_generic_plan"),
                ("enable_seqscan", "off"),
            ]));
        Ok(PgStore { pool, writer })
    }

    /// Close every connection, waiting for checked-out ones to return.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    /// Run a revocation of `user`'s refresh tokens under the user's lock
    /// ([`LOCK_USER_TOKENS`]).
    async fn revoke_refresh(
        &self,
        user: UserId,
        revoke: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(LOCK_USER_TOKENS)
            .bind(user.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        revoke.execute(&mut *tx).await.map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// A group commit in one statement, [`APPEND`]: one round trip, and
    /// the sessions stay locked only while it runs and commits. The
    /// statement is its own transaction; `fetch_all` returns at
    /// ReadyForQuery, which Postgres sends only once that transaction has
    /// committed, so the answers are durable when they arrive.
    async fn append_in_one_statement(
        &self,
        batch: &[NewMessage],
        sessions: &[Uuid],
    ) -> Result<Option<Vec<StoreResult<Message>>>, sqlx::Error> {
        let n = batch.len();
        let mut id = Vec::with_capacity(n);
        let mut session = Vec::with_capacity(n);
        let mut sender = Vec::with_capacity(n);
        let mut content = Vec::with_capacity(n);
        let mut client = Vec::with_capacity(n);
        let mut created = Vec::with_capacity(n);
        for m in batch {
            id.push(m.id.0);
            session.push(m.session_id.0);
            sender.push(m.sender_id.0);
            content.push(m.content.as_str());
            client.push(m.client_msg_id.as_str());
            created.push(stored(m.created_at));
        }
        let rows = sqlx::query(APPEND)
            .bind(&id)
            .bind(&session)
            .bind(&sender)
            .bind(&content)
            .bind(&client)
            .bind(&created)
            .bind(sessions)
            .fetch_all(&self.writer)
            .await?;
        // One row per first occurrence of a key, by 1-based position.
        let mut verdicts = HashMap::with_capacity(rows.len());
        for r in &rows {
            if r.try_get::<&str, _>("verdict")? == "stale" {
                return Ok(None);
            }
            verdicts.insert(r.try_get::<i64, _>("ord")?, r);
        }
        Ok(Some(plan::answer_batch(batch, |i, m| {
            let r = verdicts
                .get(&(i as i64 + 1))
                .ok_or_else(|| corrupt("group commit answer"))?;
            match r.text("verdict")?.as_str() {
                "new" => Ok(plan::stored_message(m, r.int("seq")?)),
                "old" => Ok(Message {
                    id: MessageId(r.uuid("old_id")?),
                    seq: r.int("old_seq")?,
                    content: r.text("old_content")?,
                    created_at: r.time("old_created")?,
                    ..plan::stored_message(m, 0)
                }),
                "ended" => Err(plan::NOT_ACTIVE),
                "missing" => Err(StoreError::NotFound),
                _ => Err(corrupt("group commit verdict")),
            }
        })))
    }
}

impl Cols for PgRow {
    fn uuid(&self, col: &str) -> StoreResult<Uuid> {
        self.try_get(col).map_err(db)
    }
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>> {
        self.try_get(col).map_err(db)
    }
    fn text(&self, col: &str) -> StoreResult<String> {
        self.try_get(col).map_err(db)
    }
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>> {
        self.try_get(col).map_err(db)
    }
    fn int(&self, col: &str) -> StoreResult<i64> {
        // bigint columns, and smallint ones (ratings) widened.
        match self.try_get::<i64, _>(col) {
            Ok(v) => Ok(v),
            Err(_) => self.try_get::<i16, _>(col).map(i64::from).map_err(db),
        }
    }
    fn flag(&self, col: &str) -> StoreResult<bool> {
        self.try_get(col).map_err(db)
    }
    fn time(&self, col: &str) -> StoreResult<Timestamp> {
        self.try_get::<DateTime<Utc>, _>(col).map_err(db)
    }
    fn opt_time(&self, col: &str) -> StoreResult<Option<Timestamp>> {
        self.try_get::<Option<DateTime<Utc>>, _>(col).map_err(db)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        OnPool(&self.pool).ping().await
    }

    async fn put_magic_link(
        &self,
        token_hash: &[u8],
        email: &Email,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        let now = stored(Utc::now());
        // Unspent links would otherwise stay forever; sweeping on the
        // (rate-limited) write path keeps the table at live links only.
        sqlx::query(
            "WITH swept AS (DELETE FROM magic_links WHERE expires_at <= $4) \
             INSERT INTO magic_links (token_hash, email, expires_at, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(email.as_str())
        .bind(stored(expires_at))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_kind(&e, ErrorKind::UniqueViolation) {
                StoreError::Conflict("magic link already stored")
            } else {
                db(e)
            }
        })?;
        Ok(())
    }

    async fn take_magic_link(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<Email>> {
        OnPool(&self.pool).take_magic_link(token_hash, now).await
    }

    async fn upsert_user(&self, email: &Email, alias: &Alias, now: Timestamp) -> StoreResult<User> {
        OnPool(&self.pool).upsert_user(email, alias, now).await
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        OnPool(&self.pool).user(id).await
    }

    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
        let rows = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = ANY($1)"))
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(records::user).collect()
    }

    async fn update_profile(
        &self,
        id: UserId,
        update: &ProfileUpdate,
        now: Timestamp,
    ) -> StoreResult<Option<User>> {
        OnPool(&self.pool).update_profile(id, update, now).await
    }

    async fn insert_refresh_token(
        &self,
        token_hash: &[u8],
        family: TokenFamilyId,
        user: UserId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        OnPool(&self.pool)
            .insert_refresh_token(token_hash, family, user, expires_at, now)
            .await
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RefreshOutcome> {
        let now = stored(now);
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The owner's lock first (see LOCK_USER_TOKENS), then the row's.
        let owner = sqlx::query(LOCK_TOKEN_OWNER)
            .bind(old_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if owner.is_none() {
            return Ok(RefreshOutcome::Invalid);
        }
        // The row lock makes two concurrent presentations of one token
        // take turns: the second sees it spent.
        let row = sqlx::query(
            "SELECT family_id, user_id, expires_at, used_at, revoked_at \
             FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
        )
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Invalid);
        };
        let token = records::refresh(&row)?;
        let outcome = match plan::judge_refresh(&token, now) {
            RefreshVerdict::Invalid => return Ok(RefreshOutcome::Invalid),
            RefreshVerdict::RevokeFamily => {
                sqlx::query(sql::REVOKE_FAMILY)
                    .bind(token.family)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                RefreshOutcome::Reused {
                    user_id: token.user,
                }
            }
            RefreshVerdict::Rotate => {
                sqlx::query(sql::SPEND_REFRESH)
                    .bind(old_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                sqlx::query(sql::INSERT_SUCCESSOR)
                    .bind(new_hash)
                    .bind(token.family)
                    .bind(token.user.0)
                    .bind(stored(new_expires_at))
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                RefreshOutcome::Rotated {
                    user_id: token.user,
                }
            }
        };
        tx.commit().await.map_err(db)?;
        Ok(outcome)
    }

    async fn revoke_refresh_family(&self, token_hash: &[u8], user: UserId) -> StoreResult<()> {
        let revoke = sqlx::query(sql::REVOKE_FAMILY_OF_TOKEN)
            .bind(token_hash)
            .bind(user.0)
            .bind(stored(Utc::now()));
        self.revoke_refresh(user, revoke).await
    }

    async fn revoke_user_refresh_tokens(&self, user: UserId) -> StoreResult<()> {
        let revoke = sqlx::query(sql::REVOKE_USER)
            .bind(user.0)
            .bind(stored(Utc::now()));
        self.revoke_refresh(user, revoke).await
    }

    async fn create_session(
        &self,
        fence: FencingToken,
        a: UserId,
        b: UserId,
        now: Timestamp,
    ) -> StoreResult<Session> {
        self.create_sessions(fence, &[(a, b)], now)
            .await?
            .pop()
            .unwrap_or(Err(StoreError::NotFound))
    }

    async fn create_sessions(
        &self,
        fence: FencingToken,
        pairs: &[(UserId, UserId)],
        now: Timestamp,
    ) -> StoreResult<Vec<StoreResult<Session>>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let fenced = sqlx::query(sql::FENCE)
            .bind(fence.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if fenced.rows_affected() == 0 {
            return Err(StoreError::StaleLeader);
        }
        let users: Vec<Uuid> = pairs
            .iter()
            .flat_map(|&(a, b)| [a.0, b.0])
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut state = RoundState::default();
        // One index probe per key, whatever the statistics say: a LATERAL
        // subquery with LIMIT 1 cannot become a hash join over the whole
        // table, which a plain join on UNNEST does under a generic plan
        // cached while the table was small (or never analyzed).
        for row in sqlx::query(
            "SELECT k.id FROM UNNEST($1::uuid[]) AS k (id) \
             CROSS JOIN LATERAL (SELECT 1 FROM users WHERE id = k.id LIMIT 1) u",
        )
        .bind(&users)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        {
            state.known.insert(UserId(row.uuid("id")?));
        }
        for row in sqlx::query(
            "SELECT s.user1_id, s.user2_id FROM UNNEST($1::uuid[]) AS k (id) \
             CROSS JOIN LATERAL (SELECT user1_id, user2_id FROM chat_sessions \
               WHERE user1_id = k.id AND status = 'active' LIMIT 1) s \
             UNION ALL \
             SELECT s.user1_id, s.user2_id FROM UNNEST($1::uuid[]) AS k (id) \
             CROSS JOIN LATERAL (SELECT user1_id, user2_id FROM chat_sessions \
               WHERE user2_id = k.id AND status = 'active' LIMIT 1) s",
        )
        .bind(&users)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        {
            state.busy.insert(UserId(row.uuid("user1_id")?));
            state.busy.insert(UserId(row.uuid("user2_id")?));
        }
        let (lo, hi): (Vec<Uuid>, Vec<Uuid>) = pairs
            .iter()
            .map(|&(a, b)| {
                let (lo, hi) = plan::pair_key(a, b);
                (lo.0, hi.0)
            })
            .unzip();
        for row in sqlx::query(
            "SELECT p.lo, p.hi FROM UNNEST($1::uuid[], $2::uuid[]) AS p (lo, hi) \
             CROSS JOIN LATERAL (SELECT 1 FROM chat_sessions \
               WHERE LEAST(user1_id, user2_id) = p.lo \
                 AND GREATEST(user1_id, user2_id) = p.hi LIMIT 1) s",
        )
        .bind(&lo)
        .bind(&hi)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?
        {
            state
                .met
                .insert((UserId(row.uuid("lo")?), UserId(row.uuid("hi")?)));
        }

        let (mut results, new) = plan::plan_sessions(pairs, state, now);
        if !new.is_empty() {
            let ids: Vec<Uuid> = new.iter().map(|s| s.id.0).collect();
            let u1: Vec<Uuid> = new.iter().map(|s| s.user1.0).collect();
            let u2: Vec<Uuid> = new.iter().map(|s| s.user2.0).collect();
            // Every creator holds the fence lock, so the checks above are
            // final; the unique indexes stay the last word regardless.
            let inserted: HashSet<Uuid> = sqlx::query(
                "INSERT INTO chat_sessions (id, user1_id, user2_id, status, started_at, last_seq) \
                 SELECT id, u1, u2, 'active', $4, 0 \
                 FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[]) AS t (id, u1, u2) \
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(&ids)
            .bind(&u1)
            .bind(&u2)
            .bind(new[0].started_at)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(|r| r.uuid("id"))
            .collect::<StoreResult<_>>()?;
            for r in results.iter_mut() {
                if matches!(r, Ok(s) if !inserted.contains(&s.id.0)) {
                    *r = Err(StoreError::AlreadyMet);
                }
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(results)
    }

    async fn past_partners(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, UserId)>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = users
            .iter()
            .map(|u| u.0)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let rows = sqlx::query(
            "SELECT user1_id AS u, user2_id AS p FROM chat_sessions WHERE user1_id = ANY($1) \
             UNION ALL \
             SELECT user2_id, user1_id FROM chat_sessions WHERE user2_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| Ok((UserId(r.uuid("u")?), UserId(r.uuid("p")?))))
            .collect()
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        OnPool(&self.pool).session(id).await
    }

    async fn current_session(&self, user: UserId) -> StoreResult<Option<Session>> {
        OnPool(&self.pool).current_session(user).await
    }

    async fn current_sessions(&self, users: &[UserId]) -> StoreResult<Vec<Option<Session>>> {
        let ids: Vec<Uuid> = users.iter().map(|u| u.0).collect();
        let rows = sqlx::query(&sql::current_sessions())
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut found = HashMap::with_capacity(rows.len());
        for r in &rows {
            let session = plan::current_of(records::session(r)?, r.flag("rated_by_me")?);
            found.insert(UserId(r.uuid("for_user")?), session);
        }
        Ok(users
            .iter()
            .map(|u| found.get(u).cloned().flatten())
            .collect())
    }

    async fn end_session(&self, id: SessionId, by: UserId, now: Timestamp) -> StoreResult<Session> {
        OnPool(&self.pool).end_session(id, by, now).await
    }

    async fn append_messages(
        &self,
        batch: &[NewMessage],
    ) -> StoreResult<Vec<StoreResult<Message>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<Uuid> = batch.iter().map(|m| m.session_id.0).collect();
        ids.sort_unstable();
        ids.dedup();
        // The statement reads stored keys from its snapshot, taken before
        // it waits for the session locks. A key another node committed
        // meanwhile fails its insert (nothing is written), or leaves a
        // `stale` answer if the session also ended (the rest is written).
        // Run again, the statement's new snapshot holds that key, and what
        // the first run wrote is answered as stored messages.
        for attempt in 1..=APPEND_ATTEMPTS {
            match self.append_in_one_statement(batch, &ids).await {
                Ok(Some(results)) => return Ok(results),
                Ok(None) => {}
                Err(e) if is_kind(&e, ErrorKind::UniqueViolation) => {
                    if attempt == APPEND_ATTEMPTS {
                        return Err(db(e));
                    }
                }
                Err(e) => return Err(db(e)),
            }
            metrics::counter!("io_message_commit_retries_total").increment(1);
        }
        Err(StoreError::Unavailable(
            "message batch kept racing other nodes for the same keys".into(),
        ))
    }

    async fn messages_after(
        &self,
        session: SessionId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        OnPool(&self.pool)
            .messages_after(session, after, limit)
            .await
    }

    async fn latest_messages(&self, session: SessionId, limit: u32) -> StoreResult<Vec<Message>> {
        OnPool(&self.pool).latest_messages(session, limit).await
    }

    async fn message_count(&self, session: SessionId) -> StoreResult<i64> {
        OnPool(&self.pool).message_count(session).await
    }

    async fn create_reveal_request(
        &self,
        session: SessionId,
        requester: UserId,
        now: Timestamp,
    ) -> StoreResult<RevealRequest> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row =
            sqlx::query("SELECT user1_id, user2_id FROM chat_sessions WHERE id = $1 FOR UPDATE")
                .bind(session.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let participant = match &row {
            Some(r) => r.uuid("user1_id")? == requester.0 || r.uuid("user2_id")? == requester.0,
            None => false,
        };
        if !participant {
            return Err(StoreError::NotFound);
        }
        let open = sqlx::query(sql::OPEN_REVEAL)
            .bind(session.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if let Some(r) = open {
            return Err(plan::reveal_conflict(&r.text("status")?));
        }
        let request = RevealRequest {
            id: RevealId::new(),
            session_id: session,
            requester_id: requester,
            status: RevealStatus::Pending,
            created_at: stored(now),
        };
        sqlx::query(sql::INSERT_REVEAL)
            .bind(request.id.0)
            .bind(session.0)
            .bind(requester.0)
            .bind(request.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if violates(
                    &e,
                    ErrorKind::UniqueViolation,
                    "reveal_requests_one_pending",
                ) {
                    plan::reveal_conflict("pending")
                } else {
                    db(e)
                }
            })?;
        tx.commit().await.map_err(db)?;
        Ok(request)
    }

    async fn respond_reveal(
        &self,
        session: SessionId,
        responder: UserId,
        accept: bool,
        now: Timestamp,
    ) -> StoreResult<RevealRequest> {
        OnPool(&self.pool)
            .respond_reveal(session, responder, accept, now)
            .await
    }

    async fn latest_reveal(&self, session: SessionId) -> StoreResult<Option<RevealRequest>> {
        OnPool(&self.pool).latest_reveal(session).await
    }

    async fn reveal_requests_by(&self, session: SessionId, requester: UserId) -> StoreResult<i64> {
        OnPool(&self.pool)
            .reveal_requests_by(session, requester)
            .await
    }

    async fn rate_session(
        &self,
        session: SessionId,
        rater: UserId,
        rating: Rating,
        now: Timestamp,
    ) -> StoreResult<(RatingRecord, Session)> {
        let now = stored(now);
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Locked so the two participants' ratings take turns and the
        // second one sees the first when deciding on `rated`.
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM chat_sessions WHERE id = $1 FOR UPDATE"
        ))
        .bind(session.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let mut s = match row {
            Some(r) => records::session(&r)?,
            None => return Err(StoreError::NotFound),
        };
        plan::check_rateable(&s, rater)?;
        let inserted = sqlx::query(sql::INSERT_RATING)
            .bind(Uuid::now_v7())
            .bind(session.0)
            .bind(rater.0)
            .bind(i16::from(rating.get()))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict("already rated"));
        }
        let raters: i64 = sqlx::query(sql::COUNT_RATINGS)
            .bind(session.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .int("n")?;
        if raters >= 2 {
            sqlx::query(sql::MARK_RATED)
                .bind(session.0)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            s.status = SessionStatus::Rated;
        }
        tx.commit().await.map_err(db)?;
        let record = RatingRecord {
            session_id: session,
            rater_id: rater,
            rating,
            created_at: now,
        };
        Ok((record, s))
    }

    async fn rating_of(
        &self,
        session: SessionId,
        rater: UserId,
    ) -> StoreResult<Option<RatingRecord>> {
        OnPool(&self.pool).rating_of(session, rater).await
    }
}
