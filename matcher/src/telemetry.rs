//! The matcher's metric names, in one place so dashboards and code agree.
//! Labels stay low-cardinality: the only one is `gender`.

use io_domain::types::Gender;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub(crate) const IS_LEADER: &str = "io_matcher_is_leader";
pub(crate) const QUEUE_LENGTH: &str = "io_matcher_queue_length";
pub(crate) const WAIT_SECONDS: &str = "io_matcher_wait_seconds";
pub(crate) const PAIRS: &str = "io_matcher_pairs_total";
pub(crate) const SESSIONS_STARTED: &str = "io_sessions_started_total";
pub(crate) const ROUND_SECONDS: &str = "io_matcher_round_seconds";
pub(crate) const ROUNDS: &str = "io_matcher_rounds_total";
pub(crate) const LEADER_CHANGES: &str = "io_matcher_leader_changes_total";
pub(crate) const STALE_LEADER: &str = "io_matcher_stale_leader_rejections_total";
pub(crate) const ALREADY_MET: &str = "io_matcher_already_met_total";
pub(crate) const BUSY: &str = "io_matcher_busy_total";
pub(crate) const OFFLINE_DROPPED: &str = "io_matcher_offline_dropped_total";
pub(crate) const ANNOUNCE_FAILURES: &str = "io_matcher_announce_failures_total";
pub(crate) const ANNOUNCE_SECONDS: &str = "io_matcher_announce_seconds";
pub(crate) const ERRORS: &str = "io_matcher_errors_total";

pub(crate) fn describe() {
    describe_gauge!(IS_LEADER, "1 while this process holds the matcher lease");
    describe_gauge!(
        QUEUE_LENGTH,
        "Users in the match queue, per gender (leader only)"
    );
    describe_histogram!(
        WAIT_SECONDS,
        Unit::Seconds,
        "Time from joining the queue to the committed pair"
    );
    describe_counter!(PAIRS, "Pairs committed by this process");
    describe_counter!(SESSIONS_STARTED, "Chat sessions created");
    describe_histogram!(
        ROUND_SECONDS,
        Unit::Seconds,
        "Duration of one pairing round"
    );
    describe_counter!(ROUNDS, "Pairing rounds run");
    describe_counter!(
        LEADER_CHANGES,
        "Times this process became the matcher leader"
    );
    describe_counter!(
        STALE_LEADER,
        "Session writes refused because this process's fencing token was stale"
    );
    describe_counter!(ALREADY_MET, "Pairs the store refused because they had met");
    describe_counter!(
        BUSY,
        "Pairs the store refused because a user was in a session"
    );
    describe_counter!(
        OFFLINE_DROPPED,
        "Users dropped from the queue after the offline grace"
    );
    describe_counter!(
        ANNOUNCE_FAILURES,
        "match_found announcements that could not be sent"
    );
    describe_histogram!(
        ANNOUNCE_SECONDS,
        Unit::Seconds,
        "Duration of one batch of match_found announcements (read the users, publish)"
    );
    describe_counter!(ERRORS, "Failed store or bus calls of the leader, by step");
}

pub(crate) fn set_queue_gauges(dude: usize, girl: usize) {
    metrics::gauge!(QUEUE_LENGTH, "gender" => Gender::Dude.as_str()).set(dude as f64);
    metrics::gauge!(QUEUE_LENGTH, "gender" => Gender::Girl.as_str()).set(girl as f64);
}

/// A standby reports an empty queue, so a sum over matchers is the leader's.
pub(crate) fn clear_queue_gauges() {
    set_queue_gauges(0, 0);
}
