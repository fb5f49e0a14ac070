//! One term as leader: follow the queue, run pairing rounds, commit them.
//!
//! A term starts by presenting its fencing token to the store, then takes a
//! queue snapshot and follows the change feed from the snapshot's cursor,
//! keeping [`QueueIndex`] equal to the bus queue. A round runs whenever the
//! queue changed (and at least every [`PERIODIC_ROUND`]):
//!
//! 1. load the past partners of users new to the index (batched);
//! 2. pair the candidates with [`pairing::pair`] (oldest first, at most
//!    [`MAX_PAIRS_PER_ROUND`]);
//! 3. check that both users of each proposed pair have a live socket
//!    (`nodes_of`); users found offline are marked and the round pairs again
//!    without them (a few times at most);
//! 4. commit with `create_sessions(token, …)` in chunks of [`COMMIT_CHUNK`];
//!    `AlreadyMet` is remembered, `Busy` is resolved by finding the user's
//!    active session (left by a leader that died mid-round), announcing it
//!    and taking both out of the queue;
//! 5. `queue_leave` the paired users, then hand the sessions to the
//!    announcer.
//!
//! Between rounds presence sweeps keep the offline marks current: every
//! `offline_grace / 2` all queued users are checked (starting the offline
//! clock of those who left silently), every `offline_grace / 8` only those
//! marked offline (to notice a return quickly, and to drop them once
//! offline for longer than the grace). Checking all 100,000 users of a big
//! queue costs a few hundred milliseconds of pipelined Redis reads, so the
//! full sweep stays rare; pairs are checked right before commit anyway.
//!
//! Every step that fails with a bus or store error is retried on the next
//! round; a failed change feed (including one that fell behind the capped
//! log) is replaced by a fresh snapshot. Only the lease or the store's
//! `StaleLeader` ends a term.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use io_domain::model::{Session, SessionStatus};
use io_domain::ports::{BusError, StoreError};
use io_domain::types::{FencingToken, Gender, SessionId, UserId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::announce::Job;
use crate::pairing::{self, Pair};
use crate::queue::QueueIndex;
use crate::{telemetry, LeaseClock, Matcher};

/// A round runs at least this often even when the queue is quiet, so a
/// failed step is retried and presence changes are picked up.
const PERIODIC_ROUND: Duration = Duration::from_secs(1);
/// Pause after a failed bus or store call before trying again.
const RETRY: Duration = Duration::from_millis(250);
/// Longest wait for queue changes when nothing else is due.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(500);
/// Shortest wait for queue changes (zero may mean "forever" to a bus).
const MIN_WAIT: Duration = Duration::from_millis(1);
/// Changes applied per read of the feed.
const MAX_CHANGES: usize = 10_000;
/// Pairs per round: bounds a round's duration so cancellations are seen
/// promptly; the oldest are served first and the next round follows at once.
const MAX_PAIRS_PER_ROUND: usize = 5_000;
/// Pairs per `create_sessions` call (one transaction): a whole round.
/// Besides its per-pair work each call costs the store lookups whose price
/// grows with the users and sessions tables, not with the call; draining a
/// 100,000-user queue 500 pairs per call spent most of its time there and
/// managed about 5,000 pairs/s, one call per round more than twice that
/// (`benches/pairing.rs`). On Postgres a bigger transaction holds only the
/// matcher's own fence row and key-share locks on the users, which block no
/// profile update; on SQLite other writers wait for it, but a round that
/// big needs 10,000 users queued on the one node.
const COMMIT_CHUNK: usize = MAX_PAIRS_PER_ROUND;
/// Users per `nodes_of`, `past_partners` and `queue_leave` call.
const PRESENCE_CHUNK: usize = 5_000;
const PAST_PARTNERS_CHUNK: usize = 2_000;
const LEAVE_CHUNK: usize = 5_000;
/// Times a round re-pairs after finding proposed users offline.
const PRESENCE_ATTEMPTS: usize = 3;
/// Concurrent `current_session` lookups when resolving `Busy`.
const BUSY_LOOKUPS: usize = 16;
/// Attempts of a `queue_leave` before the index is rebuilt instead.
const LEAVE_ATTEMPTS: u32 = 3;

/// Why a term ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Shutdown was requested.
    Shutdown,
    /// A renewal found the lease held by someone else.
    LeaseTaken,
    /// The lease ran out before a renewal succeeded.
    LeaseExpired,
    /// A renewal failed; leading on without knowing would risk two leaders.
    RenewFailed(String),
    /// The store refused our fencing token: another matcher leads.
    Stale,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Shutdown => f.write_str("shutdown"),
            Stop::LeaseTaken => f.write_str("the lease is held by another matcher"),
            Stop::LeaseExpired => f.write_str("the lease expired before it was renewed"),
            Stop::RenewFailed(e) => write!(f, "renewing the lease failed: {e}"),
            Stop::Stale => f.write_str("the store refused a stale fencing token"),
        }
    }
}

/// Why a step of a round did not complete.
enum Failure {
    /// The term is over.
    Stop(Stop),
    /// A dependency failed; the step is retried later.
    Retry { step: &'static str, error: String },
}

impl Failure {
    fn bus(step: &'static str, e: BusError) -> Self {
        Failure::Retry {
            step,
            error: e.to_string(),
        }
    }

    fn store(step: &'static str, e: StoreError) -> Self {
        match e {
            StoreError::StaleLeader => {
                metrics::counter!(telemetry::STALE_LEADER).increment(1);
                Failure::Stop(Stop::Stale)
            }
            other => Failure::Retry {
                step,
                error: other.to_string(),
            },
        }
    }
}

/// What committing a round's pairs did.
#[derive(Default)]
struct Committed {
    /// Another round should follow at once (a pair was refused as met).
    more: bool,
    /// Time in `create_sessions`, all chunks together.
    store_time: Duration,
    /// Time in `queue_leave`.
    leave_time: Duration,
}

pub(crate) struct Term<'a> {
    matcher: &'a Matcher,
    token: FencingToken,
    lease: &'a LeaseClock,
    announce: &'a mpsc::Sender<Job>,
    index: QueueIndex,
    /// Set when the index may have drifted from the bus queue (a
    /// `queue_leave` failed): the next step is a fresh snapshot.
    resync: bool,
}

impl<'a> Term<'a> {
    pub(crate) fn new(
        matcher: &'a Matcher,
        token: FencingToken,
        lease: &'a LeaseClock,
        announce: &'a mpsc::Sender<Job>,
    ) -> Self {
        Term {
            matcher,
            token,
            lease,
            announce,
            index: QueueIndex::default(),
            resync: false,
        }
    }

    /// Lead until shutdown or until the store refuses our token. (Losing
    /// the lease ends the term from outside, by dropping this future.)
    pub(crate) async fn run(mut self, shutdown: &CancellationToken) -> Stop {
        if let Err(stop) = self.present_token().await {
            return stop;
        }
        let grace = self.matcher.config.offline_grace;
        let full_sweep_every =
            (grace / 2).clamp(Duration::from_millis(250), Duration::from_secs(10));
        let offline_sweep_every =
            (grace / 8).clamp(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let mut cursor = loop {
                if shutdown.is_cancelled() {
                    return Stop::Shutdown;
                }
                match self.matcher.chat.bus().queue_snapshot().await {
                    Ok((entries, cursor)) => {
                        self.index.reset(entries);
                        self.resync = false;
                        break cursor;
                    }
                    Err(e) => {
                        self.failed("snapshot", &e.to_string());
                        pause(RETRY, shutdown).await;
                    }
                }
            };
            self.publish_gauges();
            let mut dirty = true;
            let mut next_round = Instant::now();
            let mut next_full_sweep = Instant::now() + full_sweep_every;
            let mut next_sweep = Instant::now() + offline_sweep_every;
            while !self.resync {
                if shutdown.is_cancelled() {
                    return Stop::Shutdown;
                }
                if !self.lease.holds() {
                    return Stop::LeaseExpired;
                }
                if dirty || Instant::now() >= next_round {
                    match self.round().await {
                        Ok(more) => {
                            dirty = more;
                            next_round = Instant::now() + PERIODIC_ROUND;
                        }
                        Err(Failure::Stop(stop)) => return stop,
                        Err(Failure::Retry { step, error }) => {
                            self.failed(step, &error);
                            dirty = false;
                            next_round = Instant::now() + RETRY;
                        }
                    }
                }
                if Instant::now() >= next_sweep {
                    let full = Instant::now() >= next_full_sweep;
                    match self.sweep(full, grace).await {
                        Ok(back_online) => dirty |= back_online,
                        Err(Failure::Stop(stop)) => return stop,
                        Err(Failure::Retry { step, error }) => self.failed(step, &error),
                    }
                    next_sweep = Instant::now() + offline_sweep_every;
                    if full {
                        next_full_sweep = Instant::now() + full_sweep_every;
                    }
                }
                let wait = if dirty {
                    MIN_WAIT
                } else {
                    next_round
                        .min(next_sweep)
                        .saturating_duration_since(Instant::now())
                        .clamp(MIN_WAIT, MAX_IDLE_WAIT)
                };
                let read = tokio::select! {
                    _ = shutdown.cancelled() => return Stop::Shutdown,
                    read = self.matcher.chat.bus().queue_changes(&mut cursor, MAX_CHANGES, wait) => read,
                };
                match read {
                    Ok(changes) => {
                        for change in changes {
                            dirty |= self.index.apply(change);
                        }
                        self.publish_gauges();
                    }
                    Err(e) => {
                        // Behind the capped log, or the bus failed: either
                        // way a snapshot is the way back to a known state.
                        self.failed("changes", &e.to_string());
                        pause(RETRY, shutdown).await;
                        self.resync = true;
                    }
                }
            }
        }
    }

    /// Raise the store's fence to our token before anything else, so a
    /// deposed leader is refused from now on, not only from our first
    /// session on. A failure here is not fatal: every commit carries the
    /// token too.
    async fn present_token(&self) -> Result<(), Stop> {
        let store = self.matcher.chat.store();
        match store.create_sessions(self.token, &[], Utc::now()).await {
            Ok(_) => Ok(()),
            Err(StoreError::StaleLeader) => {
                // A higher token reached the store already: we were paused
                // past the lease before getting here, or the bus's fence
                // counter is behind the store's (Redis lost it). Each new
                // lease mints a higher token, so campaigning again catches up.
                metrics::counter!(telemetry::STALE_LEADER).increment(1);
                tracing::warn!(
                    token = self.token.0,
                    "matcher: the store refused a new lease's token: a later leader wrote \
                     already, or the bus fence counter is behind the store's"
                );
                Err(Stop::Stale)
            }
            Err(e) => {
                self.failed("fence", &e.to_string());
                Ok(())
            }
        }
    }

    fn failed(&self, step: &'static str, error: &str) {
        metrics::counter!(telemetry::ERRORS, "step" => step).increment(1);
        tracing::warn!(step, error, "matcher: step failed, retrying");
    }

    fn publish_gauges(&self) {
        telemetry::set_queue_gauges(
            self.index.waiting(Gender::Dude),
            self.index.waiting(Gender::Girl),
        );
    }

    /// One pairing round; `Ok(true)` if another should follow at once.
    async fn round(&mut self) -> Result<bool, Failure> {
        let started = Instant::now();
        metrics::counter!(telemetry::ROUNDS).increment(1);
        let suspects = self.load_past_partners().await?;
        if !suspects.is_empty() {
            self.clear_active(&suspects).await;
        }
        let loaded = started.elapsed();

        let mut more = false;
        let mut pairing_time = Duration::ZERO;
        let mut seen_online: HashSet<UserId> = HashSet::new();
        let mut pairs = Vec::new();
        for attempt in 1..=PRESENCE_ATTEMPTS {
            let index = &self.index;
            let pairing_started = Instant::now();
            pairs = pairing::pair(
                &index.buckets(&HashSet::new()),
                |a, b| index.met(a, b),
                MAX_PAIRS_PER_ROUND,
            );
            pairing_time += pairing_started.elapsed();
            more |= pairs.len() == MAX_PAIRS_PER_ROUND;
            let unchecked: Vec<UserId> = pairs
                .iter()
                .flat_map(|p| [p.first.user, p.second.user])
                .filter(|u| !seen_online.contains(u))
                .collect();
            if unchecked.is_empty() {
                break;
            }
            let online = self.online(&unchecked).await?;
            let now = Instant::now();
            let mut someone_offline = false;
            for (&user, online) in unchecked.iter().zip(online) {
                self.index.saw(user, online, now);
                if online {
                    seen_online.insert(user);
                } else {
                    someone_offline = true;
                }
            }
            if !someone_offline {
                break;
            }
            if attempt == PRESENCE_ATTEMPTS {
                // Commit what is confirmed; their would-be partners get
                // the next round, which follows at once.
                pairs.retain(|p| {
                    seen_online.contains(&p.first.user) && seen_online.contains(&p.second.user)
                });
                more = true;
            }
        }
        let planned = started.elapsed();
        let mut committed = Committed::default();
        if !pairs.is_empty() {
            committed = self.commit(&pairs).await?;
            more |= committed.more;
        }
        let took = started.elapsed();
        metrics::histogram!(telemetry::ROUND_SECONDS).record(took.as_secs_f64());
        if !pairs.is_empty() {
            tracing::debug!(
                queued = self.index.len(),
                pairs = pairs.len(),
                load_ms = loaded.as_millis() as u64,
                pairing_ms = pairing_time.as_millis() as u64,
                presence_ms = (planned - loaded - pairing_time).as_millis() as u64,
                commit_ms = (took - planned).as_millis() as u64,
                store_ms = committed.store_time.as_millis() as u64,
                leave_ms = committed.leave_time.as_millis() as u64,
                "matcher: round"
            );
        }
        Ok(more)
    }

    /// Load, in batches, the past partners of every queued user whose set
    /// is not known yet. Returns those of them queued together with a past
    /// partner: usually two people who met and came back, but also the mark
    /// of a leader that died after committing their session and before
    /// taking them out of the queue, which only a look at their current
    /// session tells apart.
    async fn load_past_partners(&mut self) -> Result<Vec<UserId>, Failure> {
        let users = self.index.without_met();
        let store = self.matcher.chat.store();
        let mut suspects = Vec::new();
        for chunk in users.chunks(PAST_PARTNERS_CHUNK) {
            let rows = store
                .past_partners(chunk)
                .await
                .map_err(|e| Failure::store("past_partners", e))?;
            let mut sets: HashMap<UserId, HashSet<UserId>> =
                chunk.iter().map(|&u| (u, HashSet::new())).collect();
            for (user, partner) in rows {
                if let Some(set) = sets.get_mut(&user) {
                    set.insert(partner);
                }
            }
            for (user, set) in sets {
                if set.iter().any(|&p| self.index.contains(p)) {
                    suspects.push(user);
                }
                if let Some(slot) = self.index.get_mut(user) {
                    slot.met = Some(set);
                }
            }
        }
        Ok(suspects)
    }

    /// Whether each user has a live socket somewhere.
    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, Failure> {
        let bus = self.matcher.chat.bus();
        let mut online = Vec::with_capacity(users.len());
        for chunk in users.chunks(PRESENCE_CHUNK) {
            let nodes = bus
                .nodes_of(chunk)
                .await
                .map_err(|e| Failure::bus("presence", e))?;
            if nodes.len() != chunk.len() {
                return Err(Failure::Retry {
                    step: "presence",
                    error: format!(
                        "asked about {} users, told about {}",
                        chunk.len(),
                        nodes.len()
                    ),
                });
            }
            online.extend(nodes.iter().map(|n| !n.is_empty()));
        }
        Ok(online)
    }

    /// Commit the round's pairs, then take the paired users out of the
    /// queue and hand their sessions to the announcer. Sessions already
    /// committed are always followed through, even when a later chunk ends
    /// the term.
    async fn commit(&mut self, pairs: &[Pair]) -> Result<Committed, Failure> {
        let store = self.matcher.chat.store().clone();
        let mut out = Committed::default();
        let mut created: Vec<(Pair, Session)> = Vec::new();
        let mut busy: Vec<UserId> = Vec::new();
        let mut unknown: Vec<UserId> = Vec::new();
        let mut failure = None;
        for chunk in pairs.chunks(COMMIT_CHUNK) {
            if !self.lease.holds() {
                failure = Some(Failure::Stop(Stop::LeaseExpired));
                break;
            }
            let ids: Vec<(UserId, UserId)> = chunk
                .iter()
                .map(|p| (p.first.user, p.second.user))
                .collect();
            let started = Instant::now();
            let results = store.create_sessions(self.token, &ids, Utc::now()).await;
            out.store_time += started.elapsed();
            let results = match results {
                Ok(results) => results,
                Err(e) => {
                    failure = Some(Failure::store("create_sessions", e));
                    break;
                }
            };
            for (pair, result) in chunk.iter().zip(results) {
                let (a, b) = (pair.first.user, pair.second.user);
                match result {
                    Ok(session) => {
                        self.index.remove(a);
                        self.index.remove(b);
                        created.push((*pair, session));
                    }
                    Err(StoreError::AlreadyMet) => {
                        metrics::counter!(telemetry::ALREADY_MET).increment(1);
                        self.index.add_met(a, b);
                        out.more = true;
                    }
                    Err(StoreError::Busy) => {
                        metrics::counter!(telemetry::BUSY).increment(1);
                        busy.extend([a, b]);
                    }
                    Err(StoreError::NotFound) => unknown.extend([a, b]),
                    Err(StoreError::StaleLeader) => {
                        metrics::counter!(telemetry::STALE_LEADER).increment(1);
                        failure = Some(Failure::Stop(Stop::Stale));
                    }
                    Err(e) => {
                        self.failed("create_session", &e.to_string());
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }

        if !created.is_empty() {
            self.record_created(&created);
            let users: Vec<UserId> = created
                .iter()
                .flat_map(|(p, _)| [p.first.user, p.second.user])
                .collect();
            let started = Instant::now();
            self.leave(&users).await;
            out.leave_time = started.elapsed();
            for (_, session) in created {
                // Waits only when announcing is far behind; the receiver
                // lives as long as `run`, so a send cannot fail before it.
                let _ = self.announce.send(session).await;
            }
        }
        if failure.is_none() {
            if !busy.is_empty() {
                self.clear_active(&busy).await;
            }
            if !unknown.is_empty() {
                self.drop_unknown(&unknown).await;
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(out),
        }
    }

    fn record_created(&self, created: &[(Pair, Session)]) {
        let n = created.len() as u64;
        metrics::counter!(telemetry::PAIRS).increment(n);
        metrics::counter!(telemetry::SESSIONS_STARTED).increment(n);
        let now_ms = Utc::now().timestamp_millis();
        let wait = metrics::histogram!(telemetry::WAIT_SECONDS);
        for (pair, _) in created {
            for c in [pair.first, pair.second] {
                wait.record((now_ms - c.joined_at_ms).max(0) as f64 / 1000.0);
            }
        }
    }

    /// Take users out of the bus queue (they are already out of the index).
    /// If that keeps failing the index no longer mirrors the queue, so the
    /// term resynchronises from a snapshot; a user left behind in the queue
    /// is then found `Busy` and cleaned up.
    async fn leave(&mut self, users: &[UserId]) {
        let bus = self.matcher.chat.bus();
        for chunk in users.chunks(LEAVE_CHUNK) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match bus.queue_leave(chunk).await {
                    Ok(_) => break,
                    Err(e) if attempt < LEAVE_ATTEMPTS => {
                        tracing::debug!(error = %e, attempt, "matcher: retrying queue_leave");
                        tokio::time::sleep(RETRY).await;
                    }
                    Err(e) => {
                        self.failed("queue_leave", &e.to_string());
                        self.resync = true;
                        break;
                    }
                }
            }
        }
    }

    /// Queued users who are in an active session: `Busy` pairs, or queued
    /// past partners. That happens when a leader died between committing a
    /// session and taking its users out of the queue. Find those sessions,
    /// take their users out of the queue and announce them (that leader
    /// may not have).
    async fn clear_active(&mut self, users: &[UserId]) {
        let mut users = users.to_vec();
        users.sort_unstable();
        users.dedup();
        let store = self.matcher.chat.store().clone();
        let found: Vec<(UserId, Result<Option<Session>, StoreError>)> =
            futures::stream::iter(users)
                .map(|user| {
                    let store = store.clone();
                    async move { (user, store.current_session(user).await) }
                })
                .buffer_unordered(BUSY_LOOKUPS)
                .collect()
                .await;
        let mut sessions: HashMap<SessionId, Session> = HashMap::new();
        for (user, result) in found {
            match result {
                Ok(Some(s)) if s.status == SessionStatus::Active => {
                    sessions.insert(s.id, s);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, %user, "matcher: cannot look up a busy user");
                }
            }
        }
        let mut sessions: Vec<Session> = sessions.into_values().collect();
        sessions.sort_by_key(|s| s.id);
        let mut gone = Vec::new();
        for s in &sessions {
            for user in [s.user1, s.user2] {
                if self.index.remove(user).is_some() {
                    gone.push(user);
                }
            }
        }
        if !gone.is_empty() {
            tracing::info!(
                users = gone.len(),
                "matcher: took users already in a session out of the queue"
            );
            self.leave(&gone).await;
        }
        for s in sessions {
            let _ = self.announce.send(s).await;
        }
    }

    /// `NotFound`: a queued user the store does not know (a foreign or
    /// stale queue entry). Drop whoever of them is unknown, so the pair is
    /// not proposed again and again.
    async fn drop_unknown(&mut self, users: &[UserId]) {
        let store = self.matcher.chat.store().clone();
        let mut gone = Vec::new();
        for &user in users {
            match store.user(user).await {
                Ok(None) => gone.push(user),
                Ok(Some(_)) => {}
                Err(e) => self.failed("user", &e.to_string()),
            }
        }
        for &user in &gone {
            self.index.remove(user);
        }
        if !gone.is_empty() {
            tracing::warn!(
                users = gone.len(),
                "matcher: dropped queued users the store does not know"
            );
            self.leave(&gone).await;
        }
    }

    /// Check the presence of every queued user (`full`) or of those marked
    /// offline; drop those offline for longer than `grace`. Returns whether
    /// someone came back online (a round should follow).
    async fn sweep(&mut self, full: bool, grace: Duration) -> Result<bool, Failure> {
        let users: Vec<UserId> = if full {
            self.index.users().collect()
        } else {
            self.index.offline_users()
        };
        let online = self.online(&users).await?;
        let now = Instant::now();
        let mut back_online = false;
        for (user, online) in users.into_iter().zip(online) {
            back_online |= self.index.saw(user, online, now);
        }
        let gone = self.index.offline_longer_than(grace, now);
        if !gone.is_empty() {
            for &user in &gone {
                self.index.remove(user);
            }
            metrics::counter!(telemetry::OFFLINE_DROPPED).increment(gone.len() as u64);
            self.leave(&gone).await;
            self.publish_gauges();
        }
        Ok(back_online)
    }
}

/// Sleep, unless shutdown comes first.
async fn pause(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
