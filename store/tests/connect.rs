//! Choosing a backend by URL, and migrations at connect and on demand.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use chrono::Utc;
use io_domain::ports::StoreError;
use io_domain::types::{Alias, Email};

#[tokio::test]
async fn an_unknown_scheme_is_refused() {
    let r = io_store::connect("mysql://127.0.0.1/io").await;
    ensure_unavailable(r.err());
}

#[tokio::test]
async fn an_unreachable_postgres_is_unavailable_within_the_acquire_timeout() {
    let options = io_store::StoreOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(2),
    };
    let started = Instant::now();
    // Port 1 on loopback: nothing listens there.
    let r = io_store::connect_with("postgres://postgres@127.0.0.1:1/io", &options).await;
    ensure_unavailable(r.err());
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast");
}

fn ensure_unavailable(e: Option<StoreError>) {
    assert!(matches!(e, Some(StoreError::Unavailable(_))), "{e:?}");
}

#[tokio::test]
async fn in_memory_sqlite_keeps_its_data_across_calls() -> Result<()> {
    let store = io_store::connect("sqlite::memory:").await?;
    let email = Email::parse("mem@example.org")?;
    let created = store
        .upsert_user(&email, &Alias::parse("mem_user")?, Utc::now())
        .await?;
    ensure!(store.user(created.id).await? == Some(created));
    Ok(())
}

#[tokio::test]
async fn migrate_is_idempotent_on_both_backends() -> Result<()> {
    for db in [
        io_store::testing::postgres().await,
        io_store::testing::sqlite().await,
    ] {
        // The test database is already migrated; running again is a no-op
        // that leaves the store usable.
        io_store::migrate(&db.url).await?;
        io_store::migrate(&db.url).await?;
        db.store.ping().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_missing_sqlite_file_is_created() -> Result<()> {
    let path =
        std::env::temp_dir().join(format!("io_connect_{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}", path.display());
    let store = io_store::connect(&url).await?;
    store.ping().await?;
    ensure!(path.exists());
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
