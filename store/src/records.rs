//! Rows to domain records, shared by both backends. Each backend says how
//! to read one column of its row type ([`Cols`]); how a row becomes a
//! `User`, `Session`… is written once, here.

use chrono::{DateTime, Utc};
use io_domain::model::*;
use io_domain::ports::StoreResult;
use io_domain::types::*;
use uuid::Uuid;

use crate::error::corrupt;

/// Columns of `users` that make a [`User`].
pub(crate) const USER_COLS: &str =
    "id, email, alias, gender, seeking, real_name, details, reveal_email, created_at, last_active";
/// Columns of `chat_sessions` that make a [`Session`].
pub(crate) const SESSION_COLS: &str =
    "id, user1_id, user2_id, status, started_at, ended_at, ended_by, last_seq";
/// Columns of `messages` that make a [`Message`].
pub(crate) const MESSAGE_COLS: &str =
    "id, session_id, sender_id, seq, content, client_msg_id, created_at";
/// Columns of `reveal_requests` that make a [`RevealRequest`].
pub(crate) const REVEAL_COLS: &str = "id, session_id, requester_id, status, created_at";
/// Columns of `ratings` that make a [`RatingRecord`].
pub(crate) const RATING_COLS: &str = "session_id, rater_id, rating, created_at";

/// The precision both databases keep. Every timestamp is truncated to it on
/// the way in, so what a write returns equals what a later read returns.
pub(crate) fn stored(t: Timestamp) -> Timestamp {
    from_micros(t.timestamp_micros()).unwrap_or(t)
}

/// SQLite's representation of a timestamp: microseconds since the epoch.
pub(crate) fn micros(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> Option<Timestamp> {
    DateTime::<Utc>::from_timestamp_micros(us)
}

/// Reading typed columns out of one backend's row.
pub(crate) trait Cols {
    fn uuid(&self, col: &str) -> StoreResult<Uuid>;
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>>;
    fn text(&self, col: &str) -> StoreResult<String>;
    fn opt_text(&self, col: &str) -> StoreResult<Option<String>>;
    /// Any integer column (Postgres smallint or bigint, SQLite INTEGER).
    fn int(&self, col: &str) -> StoreResult<i64>;
    fn flag(&self, col: &str) -> StoreResult<bool>;
    fn time(&self, col: &str) -> StoreResult<Timestamp>;
    fn opt_time(&self, col: &str) -> StoreResult<Option<Timestamp>>;
}

pub(crate) fn user(r: &impl Cols) -> StoreResult<User> {
    let gender = match r.opt_text("gender")? {
        Some(g) => Some(Gender::parse(&g).map_err(|_| corrupt("user gender"))?),
        None => None,
    };
    let seeking = match r.opt_text("seeking")? {
        Some(s) => Seeking::parse(&s).map_err(|_| corrupt("user seeking"))?,
        None => Seeking::default_for(gender),
    };
    // Stored card texts passed `CardText::parse` with the edge's limit when
    // written; reading them must not apply a (possibly changed) limit again.
    let card = |field: &'static str, v: Option<String>| -> StoreResult<Option<CardText>> {
        match v {
            Some(v) => CardText::parse(field, &v, usize::MAX).map_err(|_| corrupt(field)),
            None => Ok(None),
        }
    };
    Ok(User {
        id: UserId(r.uuid("id")?),
        email: Email::parse(&r.text("email")?).map_err(|_| corrupt("user email"))?,
        alias: Alias::parse(&r.text("alias")?).map_err(|_| corrupt("user alias"))?,
        gender,
        seeking,
        real_name: card("realName", r.opt_text("real_name")?)?,
        details: card("details", r.opt_text("details")?)?,
        reveal_email: r.flag("reveal_email")?,
        created_at: r.time("created_at")?,
        last_active: r.time("last_active")?,
    })
}

pub(crate) fn session(r: &impl Cols) -> StoreResult<Session> {
    Ok(Session {
        id: SessionId(r.uuid("id")?),
        user1: UserId(r.uuid("user1_id")?),
        user2: UserId(r.uuid("user2_id")?),
        status: SessionStatus::parse(&r.text("status")?)
            .ok_or_else(|| corrupt("session status"))?,
        started_at: r.time("started_at")?,
        ended_at: r.opt_time("ended_at")?,
        ended_by: r.opt_uuid("ended_by")?.map(UserId),
        last_seq: r.int("last_seq")?,
    })
}

pub(crate) fn message(r: &impl Cols) -> StoreResult<Message> {
    Ok(Message {
        id: MessageId(r.uuid("id")?),
        session_id: SessionId(r.uuid("session_id")?),
        sender_id: UserId(r.uuid("sender_id")?),
        seq: r.int("seq")?,
        content: r.text("content")?,
        client_msg_id: r.text("client_msg_id")?,
        created_at: r.time("created_at")?,
    })
}

pub(crate) fn reveal(r: &impl Cols) -> StoreResult<RevealRequest> {
    Ok(RevealRequest {
        id: RevealId(r.uuid("id")?),
        session_id: SessionId(r.uuid("session_id")?),
        requester_id: UserId(r.uuid("requester_id")?),
        status: RevealStatus::parse(&r.text("status")?).ok_or_else(|| corrupt("reveal status"))?,
        created_at: r.time("created_at")?,
    })
}

pub(crate) fn rating(r: &impl Cols) -> StoreResult<RatingRecord> {
    Ok(RatingRecord {
        session_id: SessionId(r.uuid("session_id")?),
        rater_id: UserId(r.uuid("rater_id")?),
        rating: Rating::parse(r.int("rating")?).map_err(|_| corrupt("rating"))?,
        created_at: r.time("created_at")?,
    })
}

/// The row a refresh token is judged by.
pub(crate) struct RefreshRow {
    pub family: Uuid,
    pub user: UserId,
    pub expires_at: Timestamp,
    /// When it was first spent.
    pub used_at: Option<Timestamp>,
    pub revoked: bool,
}

pub(crate) fn refresh(r: &impl Cols) -> StoreResult<RefreshRow> {
    Ok(RefreshRow {
        family: r.uuid("family_id")?,
        user: UserId(r.uuid("user_id")?),
        expires_at: r.time("expires_at")?,
        used_at: r.opt_time("used_at")?,
        revoked: r.opt_time("revoked_at")?.is_some(),
    })
}

/// The profile update's values as bound to the shared `UPDATE users`
/// statement: `None` leaves a column alone, and the card texts carry a
/// separate "set" flag because `Some(None)` clears them.
pub(crate) struct ProfileBinds {
    pub alias: Option<String>,
    pub gender: Option<&'static str>,
    pub seeking: Option<&'static str>,
    pub set_real_name: bool,
    pub real_name: Option<String>,
    pub set_details: bool,
    pub details: Option<String>,
    pub reveal_email: Option<bool>,
}

impl ProfileBinds {
    pub fn of(u: &ProfileUpdate) -> Self {
        let text = |v: &Option<Option<CardText>>| {
            v.as_ref()
                .and_then(|c| c.as_ref().map(|c| c.as_str().to_owned()))
        };
        ProfileBinds {
            alias: u.alias.as_ref().map(|a| a.as_str().to_owned()),
            gender: u.gender.map(Gender::as_str),
            seeking: u.seeking.map(Seeking::as_str),
            set_real_name: u.real_name.is_some(),
            real_name: text(&u.real_name),
            set_details: u.details.is_some(),
            details: text(&u.details),
            reveal_email: u.reveal_email,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_round_trip_at_microseconds() {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let s = stored(t);
        assert_eq!(s.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(from_micros(micros(s)), Some(s));
        assert_eq!(stored(s), s);
    }
}
