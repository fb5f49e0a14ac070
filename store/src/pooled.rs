//! The store methods both backends run the same way on their pool: one
//! statement with the same binds and the same row mapping. Each store's
//! `Store` method for these is one call into [`OnPool`]; timestamps are
//! bound as each database stores them ([`Stamps`]).

use io_domain::model::*;
use io_domain::ports::{StoreError, StoreResult};
use io_domain::types::*;
use sqlx::error::ErrorKind;
use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Postgres, Sqlite, Type};
use uuid::Uuid;

use crate::error::{corrupt, db, is_kind};
use crate::plan;
use crate::records::{self, micros, stored, Cols, ProfileBinds};
use crate::records::{MESSAGE_COLS, RATING_COLS, SESSION_COLS, USER_COLS};
use crate::sql;

/// How a backend stores a timestamp: Postgres as `timestamptz`, SQLite as
/// microseconds since the epoch; both at microsecond precision.
pub(crate) trait Stamps: Database {
    type Stamp: Send + 'static;
    fn stamp(t: Timestamp) -> Self::Stamp;
}

impl Stamps for Postgres {
    type Stamp = Timestamp;
    fn stamp(t: Timestamp) -> Timestamp {
        stored(t)
    }
}

impl Stamps for Sqlite {
    type Stamp = i64;
    fn stamp(t: Timestamp) -> i64 {
        micros(t)
    }
}

/// The shared methods on one backend's pool.
pub(crate) struct OnPool<'p, DB: Database>(pub(crate) &'p Pool<DB>);

impl<DB> OnPool<'_, DB>
where
    DB: Stamps,
    DB::Row: Cols,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> DB::Stamp: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Option<bool>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    pub(crate) async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(self.0).await.map_err(db)?;
        Ok(())
    }

    /// The magic link's email, deleting the link; `None` when there is no
    /// such link or it expired before `now`.
    pub(crate) async fn take_magic_link(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<Email>> {
        let row = sqlx::query(
            "DELETE FROM magic_links WHERE token_hash = $1 RETURNING email, expires_at",
        )
        .bind(token_hash)
        .fetch_optional(self.0)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        if row.time("expires_at")? <= now {
            return Ok(None);
        }
        let email = Email::parse(&row.text("email")?).map_err(|_| corrupt("magic link email"))?;
        Ok(Some(email))
    }

    pub(crate) async fn upsert_user(
        &self,
        email: &Email,
        alias: &Alias,
        now: Timestamp,
    ) -> StoreResult<User> {
        let row = sqlx::query(&sql::upsert_user())
            .bind(UserId::new().0)
            .bind(email.as_str())
            .bind(alias.as_str())
            .bind(DB::stamp(now))
            .fetch_one(self.0)
            .await
            .map_err(db)?;
        records::user(&row)
    }

    pub(crate) async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        let row = sqlx::query(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
            .bind(id.0)
            .fetch_optional(self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(records::user).transpose()
    }

    pub(crate) async fn update_profile(
        &self,
        id: UserId,
        update: &ProfileUpdate,
        now: Timestamp,
    ) -> StoreResult<Option<User>> {
        let b = ProfileBinds::of(update);
        let row = sqlx::query(&sql::update_profile())
            .bind(id.0)
            .bind(b.alias)
            .bind(b.gender)
            .bind(b.seeking)
            .bind(b.set_real_name)
            .bind(b.real_name)
            .bind(b.set_details)
            .bind(b.details)
            .bind(b.reveal_email)
            .bind(DB::stamp(now))
            .fetch_optional(self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(records::user).transpose()
    }

    pub(crate) async fn insert_refresh_token(
        &self,
        token_hash: &[u8],
        family: TokenFamilyId,
        user: UserId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        sqlx::query(sql::INSERT_REFRESH)
            .bind(token_hash)
            .bind(family.0)
            .bind(user.0)
            .bind(DB::stamp(expires_at))
            .bind(DB::stamp(now))
            .execute(self.0)
            .await
            .map_err(|e| {
                if is_kind(&e, ErrorKind::ForeignKeyViolation) {
                    StoreError::NotFound
                } else if is_kind(&e, ErrorKind::UniqueViolation) {
                    StoreError::Conflict("refresh token already stored")
                } else {
                    db(e)
                }
            })?;
        Ok(())
    }

    pub(crate) async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM chat_sessions WHERE id = $1"
        ))
        .bind(id.0)
        .fetch_optional(self.0)
        .await
        .map_err(db)?;
        row.as_ref().map(records::session).transpose()
    }

    pub(crate) async fn end_session(
        &self,
        id: SessionId,
        by: UserId,
        now: Timestamp,
    ) -> StoreResult<Session> {
        let row = sqlx::query(&sql::end_session())
            .bind(id.0)
            .bind(by.0)
            .bind(DB::stamp(now))
            .fetch_optional(self.0)
            .await
            .map_err(db)?;
        match row {
            Some(r) => records::session(&r),
            None => match self.session(id).await? {
                Some(s) if s.has(by) => Err(StoreError::Conflict("the session already ended")),
                _ => Err(StoreError::NotFound),
            },
        }
    }

    pub(crate) async fn current_session(&self, user: UserId) -> StoreResult<Option<Session>> {
        let row = sqlx::query(&sql::current_session())
            .bind(user.0)
            .fetch_optional(self.0)
            .await
            .map_err(db)?;
        match row {
            Some(r) => Ok(plan::current_of(
                records::session(&r)?,
                r.flag("rated_by_me")?,
            )),
            None => Ok(None),
        }
    }

    pub(crate) async fn messages_after(
        &self,
        session: SessionId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLS} FROM messages \
             WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(session.0)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.0)
        .await
        .map_err(db)?;
        rows.iter().map(records::message).collect()
    }

    pub(crate) async fn latest_messages(
        &self,
        session: SessionId,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLS} FROM messages \
             WHERE session_id = $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(session.0)
        .bind(i64::from(limit))
        .fetch_all(self.0)
        .await
        .map_err(db)?;
        let mut out = rows
            .iter()
            .map(records::message)
            .collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    pub(crate) async fn message_count(&self, session: SessionId) -> StoreResult<i64> {
        // seq has no gaps, so the session's last_seq is the count.
        let row = sqlx::query("SELECT last_seq FROM chat_sessions WHERE id = $1")
            .bind(session.0)
            .fetch_optional(self.0)
            .await
            .map_err(db)?;
        row.ok_or(StoreError::NotFound)?.int("last_seq")
    }

    pub(crate) async fn respond_reveal(
        &self,
        session: SessionId,
        responder: UserId,
        accept: bool,
        now: Timestamp,
    ) -> StoreResult<RevealRequest> {
        let row = sqlx::query(&sql::respond_reveal())
            .bind(session.0)
            .bind(responder.0)
            .bind(plan::reveal_answer(accept))
            .bind(DB::stamp(now))
            .fetch_optional(self.0)
            .await
            .map_err(db)?;
        records::reveal(&row.ok_or(StoreError::NotFound)?)
    }

    pub(crate) async fn latest_reveal(
        &self,
        session: SessionId,
    ) -> StoreResult<Option<RevealRequest>> {
        let row = sqlx::query(&sql::latest_reveal())
            .bind(session.0)
            .fetch_optional(self.0)
            .await
            .map_err(db)?;
        row.as_ref().map(records::reveal).transpose()
    }

    pub(crate) async fn reveal_requests_by(
        &self,
        session: SessionId,
        requester: UserId,
    ) -> StoreResult<i64> {
        sqlx::query(
            "SELECT count(*) AS n FROM reveal_requests WHERE session_id = $1 AND requester_id = $2",
        )
        .bind(session.0)
        .bind(requester.0)
        .fetch_one(self.0)
        .await
        .map_err(db)?
        .int("n")
    }

    pub(crate) async fn rating_of(
        &self,
        session: SessionId,
        rater: UserId,
    ) -> StoreResult<Option<RatingRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {RATING_COLS} FROM ratings WHERE session_id = $1 AND rater_id = $2"
        ))
        .bind(session.0)
        .bind(rater.0)
        .fetch_optional(self.0)
        .await
        .map_err(db)?;
        row.as_ref().map(records::rating).transpose()
    }
}
