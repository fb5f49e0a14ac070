//! The matcher role (design 2, "Matcher"; 3.4, "Matching"): every matcher
//! process campaigns for the bus lease; the one holding it (the leader)
//! pairs queued users into sessions, the others stand by and take over
//! within about `lease_ttl` + a poll of the leader's death.
//!
//! # Leadership
//! [`Matcher::run`] loops: standby polls [`Bus::acquire_lease`] every
//! `lease_ttl / 3`; once it gets a fencing token it leads until the lease
//! is lost, the store refuses its token, or shutdown. The leader renews
//! every `renew_every` and steps down at once (pairing stops mid-round)
//! when a renewal fails, errors, or has not succeeded by the time the
//! lease it last held runs out. Every session write carries the token, and
//! a new leader first presents its token to the store (an empty
//! `create_sessions`), so a deposed leader that wakes up from a pause has
//! its writes refused ([`StoreError::StaleLeader`]) rather than merely
//! being unlikely to write. On shutdown the lease is released so a standby
//! takes over at once.
//!
//! Nothing of the matcher runs outside the future of `run`: dropping it
//! (as a crash would) stops renewing, pairing and announcing alike, which
//! is what lets a standby take over.
//!
//! # Leading
//! `leader.rs`: an in-memory index of the queue (`queue.rs`) built from a
//! snapshot and kept current by the change feed, pairing rounds by the pure
//! rule in [`pairing`], commits through the store, then `queue_leave`, then
//! `match_found` to both users (`announce.rs`, off the round's path).
//!
//! # Metrics
//! `io_matcher_is_leader`, `io_matcher_queue_length{gender}` (leader only;
//! standbys report 0), `io_matcher_wait_seconds`, `io_matcher_pairs_total`,
//! `io_sessions_started_total`, `io_matcher_round_seconds`,
//! `io_matcher_rounds_total`, `io_matcher_leader_changes_total`,
//! `io_matcher_stale_leader_rejections_total`, and for diagnosis
//! `io_matcher_already_met_total`, `io_matcher_busy_total`,
//! `io_matcher_offline_dropped_total`, `io_matcher_announce_failures_total`,
//! `io_matcher_announce_seconds`, `io_matcher_errors_total{step}`.
//!
//! # Performance
//! `benches/pairing.rs` measures a leader on the real adapters: pairs per
//! second draining a big queue, and the wait from joining to `match_found`
//! under a steady arrival rate (`cargo bench -p io-matcher --bench pairing`).
//! With `RUST_LOG=io_matcher=debug` each round logs where its time went.
//!
//! [`Bus::acquire_lease`]: io_domain::ports::Bus::acquire_lease
//! [`StoreError::StaleLeader`]: io_domain::ports::StoreError::StaleLeader

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use io_domain::types::FencingToken;
use io_domain::Chat;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod announce;
mod leader;
pub mod pairing;
mod queue;
mod telemetry;

/// How one matcher process takes part in the election and treats the queue.
#[derive(Debug, Clone)]
pub struct MatcherConfig {
    /// This process's name in the lease (its node id), so operators can see
    /// who leads.
    pub holder: String,
    /// How long a lease lasts unless renewed: the longest a dead leader
    /// blocks pairing. Standbys poll every third of it.
    pub lease_ttl: Duration,
    /// How often the leader renews; well under `lease_ttl` so one slow
    /// renewal does not cost the lease.
    pub renew_every: Duration,
    /// How long a queued user may have no live socket before they are
    /// dropped from the queue (a reload or a flaky network keeps the place).
    pub offline_grace: Duration,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        MatcherConfig {
            holder: format!("matcher-{}", std::process::id()),
            lease_ttl: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
            offline_grace: Duration::from_secs(10),
        }
    }
}

/// One matcher process: a standby, or the leader.
pub struct Matcher {
    chat: Arc<Chat>,
    config: MatcherConfig,
    /// Read by `/readyz`-style callers and mirrored in `io_matcher_is_leader`.
    leader: AtomicBool,
}

/// How long the announcements of committed sessions may still run after
/// shutdown starts; users who miss theirs see the session on reconnect.
const ANNOUNCE_DRAIN: Duration = Duration::from_secs(3);
/// How long a shutdown waits for the round in flight before abandoning it
/// (the next leader repairs a half-finished round).
const ROUND_DRAIN: Duration = Duration::from_secs(2);
/// Upper bound on a lease release at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

impl Matcher {
    /// A matcher using `chat`'s store and bus.
    pub fn new(chat: Arc<Chat>, mut config: MatcherConfig) -> Self {
        if config.renew_every * 2 > config.lease_ttl {
            // One late renewal would cost the lease and leaders would flap.
            let renew_every = config.lease_ttl / 3;
            tracing::warn!(
                ?config.renew_every,
                ?config.lease_ttl,
                ?renew_every,
                "matcher: renewing less than twice per lease; renewing every third of it instead"
            );
            config.renew_every = renew_every;
        }
        telemetry::describe();
        metrics::gauge!(telemetry::IS_LEADER).set(0.0);
        Matcher {
            chat,
            config,
            leader: AtomicBool::new(false),
        }
    }

    /// Whether this process holds the lease and pairs users right now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// Campaign, lead when elected, stand by otherwise, until `shutdown`;
    /// returns after releasing the lease (if held).
    pub async fn run(&self, shutdown: CancellationToken) {
        let (announce_tx, announce_rx) = mpsc::channel(announce::BACKLOG);
        let announcer = announce::run(
            self.chat.clone(),
            announce_rx,
            shutdown.clone(),
            ANNOUNCE_DRAIN,
        );
        let campaign = async move {
            self.campaign(&shutdown, &announce_tx).await;
            // Dropping the sender lets the announcer finish its backlog.
            drop(announce_tx);
        };
        tokio::join!(campaign, announcer);
    }

    async fn campaign(&self, shutdown: &CancellationToken, announce: &mpsc::Sender<announce::Job>) {
        let poll = (self.config.lease_ttl / 3).max(Duration::from_millis(10));
        while !shutdown.is_cancelled() {
            let asked = Instant::now();
            match self
                .chat
                .bus()
                .acquire_lease(&self.config.holder, self.config.lease_ttl)
                .await
            {
                Ok(Some(token)) => {
                    let lease = LeaseClock::new(asked + self.config.lease_ttl);
                    self.lead(token, &lease, shutdown, announce).await;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "matcher: cannot campaign for the lease"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One term as leader.
    async fn lead(
        &self,
        token: FencingToken,
        lease: &LeaseClock,
        shutdown: &CancellationToken,
        announce: &mpsc::Sender<announce::Job>,
    ) {
        self.set_leader(true);
        metrics::counter!(telemetry::LEADER_CHANGES).increment(1);
        tracing::info!(holder = %self.config.holder, token = token.0, "matcher: leading");

        let term = leader::Term::new(self, token, lease, announce);
        let stop = tokio::select! {
            biased;
            lost = self.keep_lease(token, lease) => lost,
            stop = term.run(shutdown) => stop,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(ROUND_DRAIN).await } => {
                leader::Stop::Shutdown
            }
        };

        self.set_leader(false);
        telemetry::clear_queue_gauges();
        match &stop {
            leader::Stop::Shutdown => {
                tracing::info!(
                    token = token.0,
                    "matcher: shutting down, releasing the lease"
                )
            }
            other => tracing::warn!(token = token.0, reason = %other, "matcher: stepped down"),
        }
        // A clean stop hands over at once. After an error, or a refused
        // token, the lease may still be ours; giving it up lets another
        // campaign (with a higher token) start sooner. Release acts only on
        // our own holder and token, so it cannot drop a successor's lease.
        if stop != leader::Stop::LeaseTaken {
            let release = self.chat.bus().release_lease(&self.config.holder, token);
            match tokio::time::timeout(RELEASE_TIMEOUT, release).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "matcher: cannot release the lease"),
                Err(_) => tracing::warn!("matcher: releasing the lease timed out"),
            }
        }
    }

    /// Renew until the lease is lost; never returns while it is held.
    async fn keep_lease(&self, token: FencingToken, lease: &LeaseClock) -> leader::Stop {
        let bus = self.chat.bus();
        loop {
            tokio::time::sleep(self.config.renew_every).await;
            let asked = Instant::now();
            let left = lease.valid_until().saturating_duration_since(asked);
            let renew = bus.renew_lease(&self.config.holder, token, self.config.lease_ttl);
            match tokio::time::timeout(left, renew).await {
                Ok(Ok(true)) => lease.extend(asked + self.config.lease_ttl),
                Ok(Ok(false)) => return leader::Stop::LeaseTaken,
                Ok(Err(e)) => return leader::Stop::RenewFailed(e.to_string()),
                Err(_) => return leader::Stop::LeaseExpired,
            }
        }
    }

    fn set_leader(&self, on: bool) {
        self.leader.store(on, Ordering::SeqCst);
        metrics::gauge!(telemetry::IS_LEADER).set(if on { 1.0 } else { 0.0 });
    }
}

/// Until when this process may act as leader: the instant its last
/// successful acquire or renew was *sent*, plus the TTL. Counting from the
/// send keeps it on the safe side of the bus's own expiry.
pub(crate) struct LeaseClock {
    valid_until: Mutex<Instant>,
}

impl LeaseClock {
    fn new(valid_until: Instant) -> Self {
        LeaseClock {
            valid_until: Mutex::new(valid_until),
        }
    }

    fn valid_until(&self) -> Instant {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn extend(&self, until: Instant) {
        let mut v = self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        *v = (*v).max(until);
    }

    /// Whether the lease certainly still holds.
    pub(crate) fn holds(&self) -> bool {
        Instant::now() < self.valid_until()
    }
}
