//! [`SqliteStore`]: the store on one SQLite file, for `io all` on a single
//! machine (and anything else that wants a zero-setup database).
//!
//! SQLite has one writer at a time. Every multi-statement write starts with
//! `BEGIN IMMEDIATE`, taking the write lock up front: reads inside it are
//! then as good as locks, and two transactions never both read and then
//! both try to upgrade (which SQLite would fail at once with SQLITE_BUSY
//! rather than wait). Waiting for the lock is bounded by `busy_timeout`.
//! WAL keeps readers going while a write commits. Timestamps are stored as
//! microseconds since the epoch (see the migration).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use io_domain::model::*;
use io_domain::ports::{Store, StoreError, StoreResult};
use io_domain::types::*;
use sqlx::error::ErrorKind;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use uuid::Uuid;

use crate::error::{corrupt, db, is_kind, violates};
use crate::plan::{self, LockedSession, RefreshVerdict, RoundState};
use crate::pooled::OnPool;
use crate::records::{self, from_micros, micros, stored, Cols};
use crate::records::{MESSAGE_COLS, SESSION_COLS};
use crate::sql;
use crate::StoreOptions;

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a write waits for another one to finish before it fails with
/// `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Users per `IN`-list query, well below SQLite's bound-variable limit.
const CHUNK: usize = 500;

/// The [`Store`] on a SQLite connection pool.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Open (creating the file if missing) with WAL, foreign keys and a
    /// busy timeout, and apply pending migrations. `sqlite::memory:` works
    /// too, on a single connection that is never recycled (each connection
    /// of an in-memory database would be a database of its own).
    pub async fn connect(url: &str, options: &StoreOptions) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // An acknowledged message must survive a power cut too.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(options.max_connections)
        };
        let pool = pool
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("applying migrations failed: {e}")))?;
        Ok(SqliteStore { pool })
    }

    /// Close every connection, waiting for checked-out ones to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction holding SQLite's write lock from the start.
    async fn write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }
}

impl Cols for SqliteRow {
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
        self.try_get(col).map_err(db)
    }
    fn flag(&self, col: &str) -> StoreResult<bool> {
        self.try_get(col).map_err(db)
    }
    fn time(&self, col: &str) -> StoreResult<Timestamp> {
        from_micros(self.try_get(col).map_err(db)?).ok_or_else(|| corrupt(col))
    }
    fn opt_time(&self, col: &str) -> StoreResult<Option<Timestamp>> {
        match self.try_get::<Option<i64>, _>(col).map_err(db)? {
            Some(us) => from_micros(us).map(Some).ok_or_else(|| corrupt(col)),
            None => Ok(None),
        }
    }
}

/// The distinct ids among `users`.
fn distinct(users: impl IntoIterator<Item = UserId>) -> Vec<Uuid> {
    let set: HashSet<Uuid> = users.into_iter().map(|u| u.0).collect();
    set.into_iter().collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        OnPool(&self.pool).ping().await
    }

    async fn put_magic_link(
        &self,
        token_hash: &[u8],
        email: &Email,
        expires_at: Timestamp,
    ) -> StoreResult<()> {
        let now = micros(Utc::now());
        let mut tx = self.write().await?;
        // Unspent links would otherwise stay forever; sweeping on the
        // (rate-limited) write path keeps the table at live links only.
        sqlx::query("DELETE FROM magic_links WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO magic_links (token_hash, email, expires_at, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(email.as_str())
        .bind(micros(expires_at))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_kind(&e, ErrorKind::UniqueViolation) {
                StoreError::Conflict("magic link already stored")
            } else {
                db(e)
            }
        })?;
        tx.commit().await.map_err(db)
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
        let mut tx = self.write().await?;
        let row = sqlx::query(
            "SELECT family_id, user_id, expires_at, used_at, revoked_at \
             FROM refresh_tokens WHERE token_hash = $1",
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
                    .bind(micros(now))
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
                    .bind(micros(now))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                sqlx::query(sql::INSERT_SUCCESSOR)
                    .bind(new_hash)
                    .bind(token.family)
                    .bind(token.user.0)
                    .bind(micros(new_expires_at))
                    .bind(micros(now))
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
        sqlx::query(sql::REVOKE_FAMILY_OF_TOKEN)
            .bind(token_hash)
            .bind(user.0)
            .bind(micros(Utc::now()))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn revoke_user_refresh_tokens(&self, user: UserId) -> StoreResult<()> {
        sqlx::query(sql::REVOKE_USER)
            .bind(user.0)
            .bind(micros(Utc::now()))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
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
        let mut tx = self.write().await?;
        let fenced = sqlx::query(sql::FENCE)
            .bind(fence.0)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if fenced.rows_affected() == 0 {
            return Err(StoreError::StaleLeader);
        }
        let mut state = RoundState::default();
        for user in distinct(pairs.iter().flat_map(|&(a, b)| [a, b])) {
            let found = sqlx::query(
                "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS known, \
                        EXISTS (SELECT 1 FROM chat_sessions WHERE status = 'active' \
                                AND (user1_id = $1 OR user2_id = $1)) AS busy",
            )
            .bind(user)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            if found.flag("known")? {
                state.known.insert(UserId(user));
            }
            if found.flag("busy")? {
                state.busy.insert(UserId(user));
            }
        }
        for &(a, b) in pairs {
            let (lo, hi) = plan::pair_key(a, b);
            // Same expressions as the pair index, so the index answers.
            let met = sqlx::query(
                "SELECT 1 FROM chat_sessions \
                 WHERE min(user1_id, user2_id) = $1 AND max(user1_id, user2_id) = $2",
            )
            .bind(lo.0)
            .bind(hi.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            if met.is_some() {
                state.met.insert((lo, hi));
            }
        }
        let (mut results, new) = plan::plan_sessions(pairs, state, now);
        let mut refused = HashSet::new();
        for s in &new {
            let inserted = sqlx::query(
                "INSERT INTO chat_sessions (id, user1_id, user2_id, status, started_at, last_seq) \
                 VALUES ($1, $2, $3, 'active', $4, 0)",
            )
            .bind(s.id.0)
            .bind(s.user1.0)
            .bind(s.user2.0)
            .bind(micros(s.started_at))
            .execute(&mut *tx)
            .await;
            // The write lock makes the checks above final; the unique
            // indexes stay the last word regardless.
            match inserted {
                Ok(_) => {}
                Err(e) if violates(&e, ErrorKind::UniqueViolation, "chat_sessions") => {
                    refused.insert(s.id);
                }
                Err(e) => return Err(db(e)),
            }
        }
        for r in results.iter_mut() {
            if matches!(r, Ok(s) if refused.contains(&s.id)) {
                *r = Err(StoreError::AlreadyMet);
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(results)
    }

    async fn past_partners(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, UserId)>> {
        let ids = distinct(users.iter().copied());
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new("WITH u (id) AS (");
            q.push_values(chunk, |mut row, id| {
                row.push_bind(*id);
            });
            q.push(
                ") SELECT s.user1_id AS u, s.user2_id AS p \
                   FROM chat_sessions s JOIN u ON s.user1_id = u.id \
                 UNION ALL \
                 SELECT s.user2_id, s.user1_id \
                   FROM chat_sessions s JOIN u ON s.user2_id = u.id",
            );
            for r in q.build().fetch_all(&self.pool).await.map_err(db)? {
                out.push((UserId(r.uuid("u")?), UserId(r.uuid("p")?)));
            }
        }
        Ok(out)
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        OnPool(&self.pool).session(id).await
    }

    async fn current_session(&self, user: UserId) -> StoreResult<Option<Session>> {
        OnPool(&self.pool).current_session(user).await
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
        let mut ids: Vec<SessionId> = batch.iter().map(|m| m.session_id).collect();
        ids.sort_unstable();
        ids.dedup();
        // One process, one writer at a time: a statement per row is cheap
        // here, and the write lock stands in for Postgres' row locks.
        let mut tx = self.write().await?;
        let mut sessions = HashMap::with_capacity(ids.len());
        for id in ids {
            let row = sqlx::query(
                "SELECT status, user1_id, user2_id, last_seq FROM chat_sessions WHERE id = $1",
            )
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            if let Some(r) = row {
                sessions.insert(
                    id,
                    LockedSession {
                        status: SessionStatus::parse(&r.text("status")?)
                            .ok_or_else(|| corrupt("session status"))?,
                        user1: UserId(r.uuid("user1_id")?),
                        user2: UserId(r.uuid("user2_id")?),
                        last_seq: r.int("last_seq")?,
                    },
                );
            }
        }
        let mut existing = plan::Existing::new();
        for m in batch
            .iter()
            .filter(|m| sessions.contains_key(&m.session_id))
        {
            let row = sqlx::query(&format!(
                "SELECT {MESSAGE_COLS} FROM messages \
                 WHERE session_id = $1 AND sender_id = $2 AND client_msg_id = $3"
            ))
            .bind(m.session_id.0)
            .bind(m.sender_id.0)
            .bind(m.client_msg_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            if let Some(r) = row {
                let old = records::message(&r)?;
                existing
                    .entry((old.session_id, old.sender_id))
                    .or_default()
                    .insert(old.client_msg_id.clone(), old);
            }
        }
        let plan = plan::plan_append(batch, &sessions, &existing);
        for m in &plan.new {
            sqlx::query(
                "INSERT INTO messages \
                   (id, session_id, sender_id, seq, content, client_msg_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(m.id.0)
            .bind(m.session_id.0)
            .bind(m.sender_id.0)
            .bind(m.seq)
            .bind(m.content.as_str())
            .bind(m.client_msg_id.as_str())
            .bind(micros(m.created_at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        for (id, last_seq) in &plan.last_seqs {
            sqlx::query("UPDATE chat_sessions SET last_seq = $2 WHERE id = $1")
                .bind(id.0)
                .bind(last_seq)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(plan.results)
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
        let mut tx = self.write().await?;
        let row = sqlx::query("SELECT user1_id, user2_id FROM chat_sessions WHERE id = $1")
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
            .bind(micros(request.created_at))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if violates(&e, ErrorKind::UniqueViolation, "reveal_requests") {
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
        let mut tx = self.write().await?;
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM chat_sessions WHERE id = $1"
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
            .bind(i64::from(rating.get()))
            .bind(micros(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict("already rated"));
        }
        let raters = sqlx::query(sql::COUNT_RATINGS)
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
