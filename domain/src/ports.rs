//! The two seams of IO (design 2, "ports and adapters"). The domain talks to
//! these traits only; `io-store` (Postgres, SQLite) and `io-bus` (Redis,
//! in-process) implement them, and the binary wires one of each.

use std::time::Duration;

use async_trait::async_trait;
use io_protocol::WaitingCounts;

use crate::model::*;
use crate::types::*;

/// Failures of the store that a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A session write by a matcher whose fencing token is no longer the
    /// highest: it was deposed and must stop.
    #[error("fencing token is stale: another matcher leads")]
    StaleLeader,
    /// The two users already had a session (in either order).
    #[error("these two users have met before")]
    AlreadyMet,
    /// One of the two users is already in an active session.
    #[error("a user is already in an active session")]
    Busy,
    /// The row the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// The operation conflicts with the current state (the reason says how).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The database could not be reached or failed; retrying may help.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The system of record. Every method is one atomic step: a transaction in
/// SQL terms, so concurrent nodes cannot interleave inside it.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    // --- sign-in ---------------------------------------------------------

    /// Remember a magic-link token by its SHA-256 hash.
    async fn put_magic_link(
        &self,
        token_hash: &[u8],
        email: &Email,
        expires_at: Timestamp,
    ) -> StoreResult<()>;

    /// Spend a magic-link token: returns its email once, and only if it had
    /// not expired at `now`. Atomic, so two concurrent uses yield one email.
    async fn take_magic_link(
        &self,
        token_hash: &[u8],
        now: Timestamp,
    ) -> StoreResult<Option<Email>>;

    /// The user with this email, created (with `alias`) on first sign-in.
    async fn upsert_user(&self, email: &Email, alias: &Alias, now: Timestamp) -> StoreResult<User>;

    async fn user(&self, id: UserId) -> StoreResult<Option<User>>;

    /// Many users at once (unknown ids are left out). Adapters override
    /// this with one query; the default asks one by one.
    async fn users(&self, ids: &[UserId]) -> StoreResult<Vec<User>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(user) = self.user(id).await? {
                out.push(user);
            }
        }
        Ok(out)
    }

    /// Apply a partial profile change; `None` if the user does not exist.
    async fn update_profile(
        &self,
        id: UserId,
        update: &ProfileUpdate,
        now: Timestamp,
    ) -> StoreResult<Option<User>>;

    /// Store a new refresh token (its hash) starting or continuing `family`.
    async fn insert_refresh_token(
        &self,
        token_hash: &[u8],
        family: TokenFamilyId,
        user: UserId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Spend `old_hash` and store `new_hash` in the same family, atomically.
    /// Presenting an already-spent token revokes the whole family.
    async fn rotate_refresh_token(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RefreshOutcome>;

    /// Revoke the family this token belongs to (logout with a token).
    async fn revoke_refresh_family(&self, token_hash: &[u8], user: UserId) -> StoreResult<()>;

    /// Revoke every refresh token of the user (logout without a token).
    async fn revoke_user_refresh_tokens(&self, user: UserId) -> StoreResult<()>;

    // --- sessions ---------------------------------------------------------

    /// Create an active session for `a` and `b`, only if `fence` is at least
    /// the highest token seen (else `StaleLeader`), neither is in an active
    /// session (`Busy`) and they never met (`AlreadyMet`, enforced by a
    /// unique index on the unordered pair).
    async fn create_session(
        &self,
        fence: FencingToken,
        a: UserId,
        b: UserId,
        now: Timestamp,
    ) -> StoreResult<Session>;

    /// Create many sessions under one fence, in order; one result per pair.
    /// Adapters override this to commit a whole pairing round in one
    /// transaction; the default creates them one by one.
    async fn create_sessions(
        &self,
        fence: FencingToken,
        pairs: &[(UserId, UserId)],
        now: Timestamp,
    ) -> StoreResult<Vec<StoreResult<Session>>> {
        let mut out = Vec::with_capacity(pairs.len());
        for &(a, b) in pairs {
            match self.create_session(fence, a, b, now).await {
                Err(StoreError::StaleLeader) => return Err(StoreError::StaleLeader),
                Err(StoreError::Unavailable(e)) => return Err(StoreError::Unavailable(e)),
                other => out.push(other),
            }
        }
        Ok(out)
    }

    /// Every past partner of each of `users`, as (user, partner) pairs:
    /// the matcher's fast pre-check before the unique index decides.
    async fn past_partners(&self, users: &[UserId]) -> StoreResult<Vec<(UserId, UserId)>>;

    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>>;

    /// The user's active session, else their latest ended session that they
    /// have not rated yet (so a reconnect can still rate), else `None`.
    async fn current_session(&self, user: UserId) -> StoreResult<Option<Session>>;

    /// [`Store::current_session`] of many users at once, in input order.
    /// Adapters override this with one query; the default asks one by one.
    async fn current_sessions(&self, users: &[UserId]) -> StoreResult<Vec<Option<Session>>> {
        let mut out = Vec::with_capacity(users.len());
        for &user in users {
            out.push(self.current_session(user).await?);
        }
        Ok(out)
    }

    /// End an active session. `NotFound` if there is none with this id,
    /// `Conflict` if it already ended.
    async fn end_session(&self, id: SessionId, by: UserId, now: Timestamp) -> StoreResult<Session>;

    /// Group commit: store a batch of messages in one transaction, assigning
    /// each session's next `seq`s in order. A message whose
    /// `(session, sender, clientMsgId)` already exists is not stored again: the
    /// existing one is returned. Per message: `NotFound` if the session does
    /// not exist, `Conflict` if it is not active.
    async fn append_messages(&self, batch: &[NewMessage])
        -> StoreResult<Vec<StoreResult<Message>>>;

    /// Messages with `seq > after`, oldest first, at most `limit`.
    async fn messages_after(
        &self,
        session: SessionId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;

    /// The latest `limit` messages, oldest first.
    async fn latest_messages(&self, session: SessionId, limit: u32) -> StoreResult<Vec<Message>>;

    /// How many messages the session holds.
    async fn message_count(&self, session: SessionId) -> StoreResult<i64>;

    /// Open a reveal request. `Conflict` if one is pending or was accepted.
    async fn create_reveal_request(
        &self,
        session: SessionId,
        requester: UserId,
        now: Timestamp,
    ) -> StoreResult<RevealRequest>;

    /// Answer the pending request of the session, which must have been made
    /// by the other participant (`NotFound` if there is no such request).
    async fn respond_reveal(
        &self,
        session: SessionId,
        responder: UserId,
        accept: bool,
        now: Timestamp,
    ) -> StoreResult<RevealRequest>;

    /// The most recent reveal request of the session.
    async fn latest_reveal(&self, session: SessionId) -> StoreResult<Option<RevealRequest>>;

    /// How many reveal requests `requester` has made in the session.
    async fn reveal_requests_by(&self, session: SessionId, requester: UserId) -> StoreResult<i64>;

    /// Rate an ended session once. `Conflict` if it is still active or this
    /// rater already rated. When both have rated the session becomes
    /// `rated`; the returned session shows its new status.
    async fn rate_session(
        &self,
        session: SessionId,
        rater: UserId,
        rating: Rating,
        now: Timestamp,
    ) -> StoreResult<(RatingRecord, Session)>;

    async fn rating_of(
        &self,
        session: SessionId,
        rater: UserId,
    ) -> StoreResult<Option<RatingRecord>>;
}

/// Failures of the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Redis could not be reached or failed; callers retry or report.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// A stored item could not be decoded (a bug or a foreign writer).
    #[error("bus data is corrupt: {0}")]
    Corrupt(String),
}

pub type BusResult<T> = Result<T, BusError>;

/// Where a node's inbox reader stands. `position` is the bus's own and
/// opaque to callers; `gaps` tells a reader it fell behind so far that the
/// inbox dropped envelopes (at its length cap) before it read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxCursor {
    /// The last entry read; `$` before the first read from [`latest`](Self::latest).
    pub position: String,
    /// How many reads found such a gap before the envelopes they returned
    /// (a reader takes it back to 0 once it has acted on them).
    pub gaps: u64,
}

impl InboxCursor {
    /// Read only what arrives from now on.
    pub fn latest() -> Self {
        InboxCursor {
            position: "$".into(),
            gaps: 0,
        }
    }

    /// Not yet pinned to a position (the first read does that).
    pub fn is_latest(&self) -> bool {
        self.position == "$"
    }
}

/// Where a queue-change follower stands; opaque to callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueCursor(pub String);

/// Node-to-node transport and the shared volatile state of the cluster:
/// inboxes, presence, the match queue and the matcher lease.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// A cheap round trip for `/readyz`.
    async fn ping(&self) -> BusResult<()>;

    // --- inboxes ----------------------------------------------------------

    /// Append envelopes to the named nodes' inbox streams (one pipelined
    /// round trip for the batch). Inboxes are capped in length.
    async fn publish(&self, batch: &[(NodeId, Envelope)]) -> BusResult<()>;

    /// Read the next envelopes of `node`'s inbox after `cursor`, waiting up
    /// to `block` for one; advances the cursor. When envelopes after the
    /// cursor were dropped unread (the inbox is capped), the read counts a
    /// gap in `cursor.gaps`; it may then skip what is left unread, as its
    /// reader reconnects every socket anyway.
    async fn read_inbox(
        &self,
        node: &NodeId,
        cursor: &mut InboxCursor,
        max: usize,
        block: Duration,
    ) -> BusResult<Vec<Envelope>>;

    /// Delete a node's inbox (clean shutdown).
    async fn drop_inbox(&self, node: &NodeId) -> BusResult<()>;

    // --- presence ---------------------------------------------------------

    /// `user` has a socket on `node`, for `ttl` unless refreshed. Answers
    /// whether the user was already present (on any node, this one
    /// included) before the call: one round trip tells a node whether a
    /// join is the user's first socket anywhere.
    async fn presence_add(&self, node: &NodeId, user: UserId, ttl: Duration) -> BusResult<bool>;

    /// `user` has no socket left on `node`.
    async fn presence_remove(&self, node: &NodeId, user: UserId) -> BusResult<()>;

    /// Heartbeat: extend every listed user's presence on `node` by `ttl`.
    async fn presence_refresh(
        &self,
        node: &NodeId,
        users: &[UserId],
        ttl: Duration,
    ) -> BusResult<()>;

    /// For each user, the nodes holding a live socket of theirs.
    async fn nodes_of(&self, users: &[UserId]) -> BusResult<Vec<Vec<NodeId>>>;

    /// How many distinct users are online.
    async fn online_count(&self) -> BusResult<u64>;

    // --- match queue ------------------------------------------------------

    /// Put a user in the queue; `false` if they already were (unchanged).
    async fn queue_join(&self, entry: &QueueEntry) -> BusResult<bool>;

    /// Replace a queued user's entry with `entry` (their profile changed
    /// while searching), in one step: the user is never out of the queue
    /// in between. `false` (and nothing written) if they are not queued.
    async fn queue_replace(&self, entry: &QueueEntry) -> BusResult<bool>;

    /// Take users out of the queue; returns how many were in it.
    async fn queue_leave(&self, users: &[UserId]) -> BusResult<u64>;

    /// Whether the user is queued.
    async fn queue_contains(&self, user: UserId) -> BusResult<bool>;

    /// The whole queue, oldest first, and a cursor from which
    /// `queue_changes` continues without missing or repeating a change.
    async fn queue_snapshot(&self) -> BusResult<(Vec<QueueEntry>, QueueCursor)>;

    /// Changes after `cursor`, waiting up to `block` for one; advances it.
    async fn queue_changes(
        &self,
        cursor: &mut QueueCursor,
        max: usize,
        block: Duration,
    ) -> BusResult<Vec<QueueChange>>;

    /// Waiting users per gender.
    async fn queue_counts(&self) -> BusResult<WaitingCounts>;

    // --- matcher lease ----------------------------------------------------

    /// Become leader if nobody holds the lease; the token is higher than any
    /// handed out before.
    async fn acquire_lease(&self, holder: &str, ttl: Duration) -> BusResult<Option<FencingToken>>;

    /// Extend the lease; `false` if it is no longer ours.
    async fn renew_lease(
        &self,
        holder: &str,
        token: FencingToken,
        ttl: Duration,
    ) -> BusResult<bool>;

    /// Give the lease up (clean shutdown) so a standby takes over at once.
    async fn release_lease(&self, holder: &str, token: FencingToken) -> BusResult<()>;
}
