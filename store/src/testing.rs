//! Throwaway databases for tests (cargo feature `testing`), so every test
//! of every crate gets a store of its own on the real engines.
//!
//! - [`postgres`] creates a randomly named database on the server of
//!   `IO_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`)
//!   and migrates it. A server that cannot be reached is a test failure
//!   with a clear message, never a silent skip.
//! - [`sqlite`] migrates a fresh file in the temp directory.
//!
//! Cleanup happens when the [`TestDb`] is dropped, panicking tests
//! included: Drop runs the `DROP DATABASE … WITH (FORCE)` (which also ends
//! the store's open connections) on a thread of its own with its own
//! runtime, so it works inside and outside any tokio runtime flavour and
//! is finished before the test returns. Databases left behind by a killed
//! test process are swept by the next [`postgres`] call once they are an
//! hour old.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use io_domain::ports::Store;
use sqlx::{Connection, PgConnection};

use crate::StoreOptions;

/// The server tests use unless `IO_TEST_DATABASE_URL` says otherwise.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Every test database's name starts with this, then its creation time.
const PREFIX: &str = "io_test_";

/// Test databases older than this belong to a test process that died.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// A migrated store on a database that exists only for this value's life.
pub struct TestDb {
    /// The store, migrated and empty.
    pub store: Arc<dyn Store>,
    /// Its URL, for a second store on the same database (another "node")
    /// via [`crate::connect`], or for an `io` process under test.
    pub url: String,
    /// What to delete on drop.
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { admin_url: String, name: String },
    Sqlite { path: PathBuf },
}

/// Small pools: many tests run at once against one server whose
/// `max_connections` they share.
fn options() -> StoreOptions {
    StoreOptions {
        max_connections: 5,
        acquire_timeout: Duration::from_secs(10),
    }
}

/// A fresh Postgres database; panics if the server cannot be reached.
pub async fn postgres() -> TestDb {
    let admin_url = std::env::var("IO_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!("cannot reach the test Postgres at {admin_url} (set IO_TEST_DATABASE_URL): {e}")
    });
    sweep_abandoned(&mut admin).await;
    let created = chrono::Utc::now().timestamp();
    let name = format!("{PREFIX}{created}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = admin.close().await;
    let url = with_database(&admin_url, &name);
    let cleanup = Cleanup::Postgres { admin_url, name };
    let store = match crate::PgStore::connect(&url, &options()).await {
        Ok(s) => s,
        Err(e) => {
            drop_now(&cleanup);
            panic!("cannot connect to or migrate the test database {url}: {e}")
        }
    };
    TestDb {
        store: Arc::new(store),
        url,
        cleanup,
    }
}

/// A fresh SQLite file in the temp directory.
pub async fn sqlite() -> TestDb {
    let path = std::env::temp_dir().join(format!("{PREFIX}{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}", path.display());
    let cleanup = Cleanup::Sqlite { path };
    let store = match crate::SqliteStore::connect(&url, &options()).await {
        Ok(s) => s,
        Err(e) => {
            drop_now(&cleanup);
            panic!("cannot create the test database {url}: {e}")
        }
    };
    TestDb {
        store: Arc::new(store),
        url,
        cleanup,
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_now(&self.cleanup);
    }
}

fn drop_now(cleanup: &Cleanup) {
    match cleanup {
        Cleanup::Sqlite { path } => {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
        Cleanup::Postgres { admin_url, name } => {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // A thread with its own runtime: Drop cannot await, and
            // blocking on the caller's runtime would deadlock a
            // current-thread one.
            let done = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(async {
                    let mut admin = PgConnection::connect(&admin_url)
                        .await
                        .map_err(|e| e.to_string())?;
                    drop_database(&mut admin, &name).await?;
                    let _ = admin.close().await;
                    Ok::<_, String>(())
                })
            })
            .join();
            if let Ok(Err(e)) = done {
                eprintln!("warning: test database was not dropped: {e}");
            }
        }
    }
}

async fn drop_database(admin: &mut PgConnection, name: &str) -> Result<(), String> {
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(admin)
        .await
        .map(|_| ())
        .map_err(|e| format!("{name}: {e}"))
}

/// Drop test databases whose creation time (in the name) is over an hour
/// ago; best effort, a failure here must not fail the test at hand.
async fn sweep_abandoned(admin: &mut PgConnection) {
    let cutoff = chrono::Utc::now().timestamp() - ABANDONED_AFTER.as_secs() as i64;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'io\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|t| t.parse::<i64>().ok());
        if created.is_some_and(|t| t < cutoff) {
            let _ = drop_database(admin, &name).await;
        }
    }
}

/// `url` with its database (the path) replaced by `name`, keeping the
/// credentials, host and query parameters (`sslmode=…`).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_swapped_in() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/test?sslmode=require", "x"),
            "postgres://u:p@h:5432/x?sslmode=require"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(with_database("postgresql://h/", "x"), "postgresql://h/x");
    }
}
