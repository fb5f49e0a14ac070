//! The errors of chat actions, one variant per thing a caller can act on.
//! Transports map them once: to an HTTP status, a WebSocket `error` event or
//! a close code. `code()` is the design's error code (design 3.2).

use std::time::Duration;

use crate::ports::{BusError, StoreError};
use crate::types::Invalid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("not authenticated")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    /// Also what a non-participant gets for someone else's session.
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("rate limited, try again in {} s", wait_secs(*retry_after))]
    RateLimited { retry_after: Duration },
    /// A dependency (database, Redis, mail) is down: retry later.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

/// Whole seconds to wait (`Retry-After`, the socket's message): rounded up
/// and never 0, so a client that waits exactly that long finds a token.
pub fn wait_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl ChatError {
    pub fn code(&self) -> &'static str {
        match self {
            ChatError::Invalid(_) => "VALIDATION_ERROR",
            ChatError::Unauthorized => "UNAUTHORIZED",
            ChatError::Forbidden(_) => "FORBIDDEN",
            ChatError::NotFound => "NOT_FOUND",
            ChatError::Conflict(_) => "CONFLICT",
            ChatError::RateLimited { .. } => "RATE_LIMITED",
            ChatError::Unavailable(_) => "SERVICE_UNAVAILABLE",
        }
    }

    /// The field a validation error is about.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ChatError::Invalid(i) => Some(i.field),
            _ => None,
        }
    }

    /// A message safe to show a client (no internals of a failing backend).
    pub fn public_message(&self) -> String {
        match self {
            ChatError::Unavailable(_) => "temporarily unavailable, try again".into(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ChatError::NotFound,
            StoreError::Conflict(why) => ChatError::Conflict(why),
            StoreError::AlreadyMet => ChatError::Conflict("these two users have met before"),
            StoreError::Busy => ChatError::Conflict("already in an active session"),
            StoreError::StaleLeader => ChatError::Unavailable("matcher leadership changed".into()),
            StoreError::Unavailable(why) => ChatError::Unavailable(why),
        }
    }
}

impl From<BusError> for ChatError {
    fn from(e: BusError) -> Self {
        ChatError::Unavailable(e.to_string())
    }
}

pub type ChatResult<T> = Result<T, ChatError>;
