//! Telling both users of a committed session (`match_found`), off the path
//! of the pairing rounds: a round hands its sessions over and moves on; a
//! bounded number of announcements run at once, and a bounded backlog makes
//! rounds wait only when announcing falls far behind.
//!
//! Announcements outlive a leadership term (the sessions are committed
//! whoever leads next) but not the `run` future: every task is owned by a
//! `JoinSet`, which aborts them when dropped.

use std::sync::Arc;
use std::time::Duration;

use io_domain::model::Session;
use io_domain::Chat;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// A session whose two users must be told.
pub(crate) type Job = Session;

/// Sessions waiting for their announcement before rounds are held back.
pub(crate) const BACKLOG: usize = 50_000;
/// Announcement batches in flight at once. A batch is one store read of
/// its users and one publish, so a few in flight keep up with the rounds
/// without queueing the rounds' own commits behind them.
const CONCURRENCY: usize = 4;
/// Sessions announced together.
const BATCH: usize = 500;

/// Announce every session received until the sender is dropped, then
/// finish the backlog; once `shutdown` fires, give up after `drain`.
pub(crate) async fn run(
    chat: Arc<Chat>,
    mut jobs: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let mut running = JoinSet::new();
    let work = async {
        loop {
            tokio::select! {
                job = jobs.recv(), if running.len() < CONCURRENCY => match job {
                    Some(session) => {
                        let mut batch = vec![session];
                        while batch.len() < BATCH {
                            match jobs.try_recv() {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                        running.spawn(announce(chat.clone(), batch));
                    }
                    None => break,
                },
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        while running.join_next().await.is_some() {}
    };
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(drain).await;
    };
    tokio::select! {
        _ = work => {}
        _ = deadline => {
            tracing::warn!(
                "matcher: shutdown cut announcements short; those users see their session on reconnect"
            );
        }
    }
}

async fn announce(chat: Arc<Chat>, sessions: Vec<Session>) {
    // One retry rides out a blip; after that the users still find the
    // session through `connected.session` when they reconnect.
    for attempt in 0..2 {
        let started = Instant::now();
        match chat.announce_matches(&sessions).await {
            Ok(()) => {
                let took = started.elapsed();
                metrics::histogram!(telemetry::ANNOUNCE_SECONDS).record(took.as_secs_f64());
                tracing::debug!(
                    sessions = sessions.len(),
                    ms = took.as_millis() as u64,
                    "matcher: announced"
                );
                return;
            }
            Err(e) if attempt == 0 => {
                tracing::debug!(error = %e, sessions = sessions.len(), "matcher: retrying announcements");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                metrics::counter!(telemetry::ANNOUNCE_FAILURES).increment(sessions.len() as u64);
                tracing::warn!(error = %e, sessions = sessions.len(), "matcher: cannot announce matches");
            }
        }
    }
}
