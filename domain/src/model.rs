//! Records as the store keeps them. These are the domain's own shapes; the
//! per-viewer JSON shapes live in `io-protocol` and are built by `chat`.

use serde::{Deserialize, Serialize};

use crate::types::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub alias: Alias,
    /// Unset until onboarding; a user without one cannot queue.
    pub gender: Option<Gender>,
    pub seeking: Seeking,
    pub real_name: Option<CardText>,
    pub details: Option<CardText>,
    /// Whether the identity card shows the email after a mutual reveal.
    pub reveal_email: bool,
    pub created_at: Timestamp,
    pub last_active: Timestamp,
}

/// A partial profile change; `None` leaves a field as it is. For the
/// identity-card texts `Some(None)` clears the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileUpdate {
    pub alias: Option<Alias>,
    pub gender: Option<Gender>,
    pub seeking: Option<Seeking>,
    pub real_name: Option<Option<CardText>>,
    pub details: Option<Option<CardText>>,
    pub reveal_email: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    Ended,
    /// Both participants rated.
    Rated,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Ended => "ended",
            SessionStatus::Rated => "rated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(SessionStatus::Active),
            "ended" => Some(SessionStatus::Ended),
            "rated" => Some(SessionStatus::Rated),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user1: UserId,
    pub user2: UserId,
    pub status: SessionStatus,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub ended_by: Option<UserId>,
    /// The highest message `seq` committed so far.
    pub last_seq: i64,
}

impl Session {
    pub fn has(&self, user: UserId) -> bool {
        self.user1 == user || self.user2 == user
    }

    /// The other participant, or `None` when `user` is not in the session.
    pub fn partner_of(&self, user: UserId) -> Option<UserId> {
        if self.user1 == user {
            Some(self.user2)
        } else if self.user2 == user {
            Some(self.user1)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: MessageId,
    pub session_id: SessionId,
    pub sender_id: UserId,
    /// 1, 2, 3… within the session, in commit order.
    pub seq: i64,
    pub content: String,
    pub client_msg_id: String,
    pub created_at: Timestamp,
}

/// A message on its way to the store; `seq` is assigned at commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: MessageId,
    pub session_id: SessionId,
    pub sender_id: UserId,
    pub content: MessageContent,
    pub client_msg_id: ClientMsgId,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevealStatus {
    Pending,
    Accepted,
    Declined,
}

impl RevealStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RevealStatus::Pending => "pending",
            RevealStatus::Accepted => "accepted",
            RevealStatus::Declined => "declined",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(RevealStatus::Pending),
            "accepted" => Some(RevealStatus::Accepted),
            "declined" => Some(RevealStatus::Declined),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevealRequest {
    pub id: RevealId,
    pub session_id: SessionId,
    pub requester_id: UserId,
    pub status: RevealStatus,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatingRecord {
    pub session_id: SessionId,
    pub rater_id: UserId,
    pub rating: Rating,
    pub created_at: Timestamp,
}

/// What `rotate_refresh_token` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The old token was live; it is now spent and the new one stored.
    Rotated { user_id: UserId },
    /// The old token had already been spent: a sign of theft. The whole
    /// family is now revoked.
    Reused { user_id: UserId },
    /// Unknown, expired or revoked.
    Invalid,
}

/// A user waiting in the match queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub user: UserId,
    pub gender: Gender,
    pub seeking: Seeking,
    /// Milliseconds since the epoch; the queue is served oldest first.
    pub joined_at_ms: i64,
}

impl QueueEntry {
    /// Each one's gender is what the other is seeking.
    pub fn compatible(&self, other: &QueueEntry) -> bool {
        self.user != other.user
            && self.seeking.accepts(other.gender)
            && other.seeking.accepts(self.gender)
    }
}

/// A change to the match queue, in the order the bus saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueChange {
    Joined(QueueEntry),
    Left(UserId),
}

/// A socket on a node, so an event can skip the socket that caused it (that
/// socket gets the direct answer carrying its `ref` instead).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnRef {
    pub node: NodeId,
    pub conn: u64,
}

/// One event on its way to one user, as it travels through node inboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub to: UserId,
    /// The socket that caused the event, which must not get a second copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<ConnRef>,
    /// When the event was published (ms since the epoch), for the
    /// cross-node delivery latency histogram.
    pub at_ms: i64,
    /// How many times a node has re-routed it after finding the user gone
    /// (presence was stale); bounded so an event never loops.
    #[serde(default)]
    pub hops: u8,
    /// The encoded `{"type","data"}` frame, serialized once at the source.
    pub frame: String,
}
