//! sqlx errors mapped onto the port's [`StoreError`], in one place.

use io_domain::ports::StoreError;
use sqlx::error::ErrorKind;

/// Any failure the caller cannot act on beyond "retry later": lost
/// connections, pool timeouts, and database errors no rule anticipates.
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Whether `e` is a violation of the given kind of the named constraint or
/// index. Postgres names it in a field; SQLite only in the message (for an
/// index: `UNIQUE constraint failed: index 'chat_sessions_pair'`).
pub(crate) fn violates(e: &sqlx::Error, kind: ErrorKind, name: &str) -> bool {
    match e.as_database_error() {
        Some(d) if d.kind() == kind => match d.constraint() {
            Some(c) => c == name,
            None => d.message().contains(name),
        },
        _ => false,
    }
}

/// Whether `e` is a violation of the given kind, whatever the constraint.
pub(crate) fn is_kind(e: &sqlx::Error, kind: ErrorKind) -> bool {
    e.as_database_error().is_some_and(|d| d.kind() == kind)
}

/// A stored value the domain types refuse: written by something other than
/// this crate, or a bug. Reported, never unwrapped.
pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("corrupt {what} in the database"))
}
