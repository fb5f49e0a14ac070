//! IO's system of record: the [`Store`] port implemented twice.
//!
//! - [`PgStore`] on Postgres: the cluster's store, shared by every node.
//! - [`SqliteStore`] on one SQLite file: `io all` on a single machine.
//!
//! Both run the same rules and pass the same contract tests
//! (`store/tests/contract.rs`). The decisions of the two batch writes (which
//! messages of a group commit are new and which `seq` each gets; which pairs
//! of a pairing round become sessions) are made by one piece of plain Rust
//! shared by both backends; only the SQL around them differs. Methods that
//! are one statement on the pool are written once, generic over the sqlx
//! database (`pooled.rs`).
//!
//! Invariants that hold because of how the writes are shaped:
//! - `seq` is 1, 2, 3… per session in commit order with no gaps, even with
//!   several nodes appending to one session: a batch locks its sessions'
//!   rows (in id order, so batches never deadlock) before it reads
//!   `last_seq`, and holds the locks until it commits.
//! - Session creation is serialized by the matcher fence row, which every
//!   creation raises under a row lock; a deposed matcher (lower token) is
//!   refused with [`StoreError::StaleLeader`].
//! - Every timestamp is bound from Rust, truncated to microseconds, so both
//!   databases store and return the same instants.
//!
//! [`connect`] picks the backend from the URL and applies the embedded
//! migrations (`migrations/postgres`, `migrations/sqlite`) before returning.

use std::sync::Arc;
use std::time::Duration;

pub use io_domain::ports::{Store, StoreError, StoreResult};

mod error;
mod plan;
mod pooled;
mod postgres;
mod records;
mod sql;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// How a store uses its database connections.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size of this process. Postgres' own `max_connections` (100 by
    /// default) is shared by every node, so keep nodes × this below it.
    pub max_connections: u32,
    /// How long a call waits for a free connection before it fails with
    /// `Unavailable`, so a stalled database surfaces instead of hanging.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Sqlite,
}

fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else {
        // StoreError has no configuration variant; the message says what to fix.
        Err(StoreError::Unavailable(
            "unsupported database URL: expected postgres://…, postgresql://… or sqlite://…".into(),
        ))
    }
}

/// Connect with [`StoreOptions::default`] and apply pending migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    connect_with(url, &StoreOptions::default()).await
}

/// Connect to `postgres://…`/`postgresql://…` or `sqlite://path` (the file
/// is created if missing) and apply pending migrations.
pub async fn connect_with(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match backend_of(url)? {
        Backend::Postgres => Arc::new(PgStore::connect(url, options).await?),
        Backend::Sqlite => Arc::new(SqliteStore::connect(url, options).await?),
    })
}

/// Apply pending migrations and disconnect (`io migrate`). Safe to run
/// while nodes are up and from several processes at once: Postgres
/// migrations take an advisory lock.
pub async fn migrate(url: &str) -> Result<(), StoreError> {
    let options = StoreOptions {
        max_connections: 1,
        ..StoreOptions::default()
    };
    match backend_of(url)? {
        Backend::Postgres => PgStore::connect(url, &options).await?.close().await,
        Backend::Sqlite => SqliteStore::connect(url, &options).await?.close().await,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_follows_the_scheme() {
        assert_eq!(backend_of("postgres://h/db"), Ok(Backend::Postgres));
        assert_eq!(backend_of("postgresql://h/db"), Ok(Backend::Postgres));
        assert_eq!(backend_of("sqlite://io.db"), Ok(Backend::Sqlite));
        assert_eq!(backend_of("sqlite::memory:"), Ok(Backend::Sqlite));
        assert!(backend_of("mysql://h/db").is_err());
    }
}
