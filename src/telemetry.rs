//! Logs and metrics of the process: `tracing` to stderr (text or JSON) and a
//! Prometheus recorder whose histograms have explicit buckets, served at
//! IO_METRICS_ADDR/metrics, away from the public port.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::LogFormat;

/// Latency buckets (seconds): 0.5 ms … 10 s.
const LATENCY: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The group commit's pacing wait: up to its interval (2 ms by default)
/// plus the timer's 1 ms resolution.
const PACING: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.1,
];
/// Durations of human scale (seconds): wait times, session lengths.
const HUMAN: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Sizes and counts: powers of two.
const SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,hyper=warn,tower_http=info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal, plain text for logs and greps.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide recorder (once; later calls reuse it, which is
/// what tests running several roles in one process need).
pub fn init_metrics(role: &str, node: &str) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .add_global_label("role", role)
                .add_global_label("node", node)
                .set_buckets(SIZES)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("io_matcher_wait_seconds".into()), HUMAN)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("io_session_duration_seconds".into()),
                        HUMAN,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("io_message_commit_wait_seconds".into()),
                        PACING,
                    )
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY))
                .expect("bucket lists are non-empty");
            let handle = builder
                .install_recorder()
                .expect("no other metrics recorder is installed");
            metrics::gauge!("io_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "io_build_info",
        "Always 1; the version label says which build runs."
    );
    describe_gauge!(
        "io_dependency_up",
        "1 when the dependency answered the last readiness check."
    );
    describe_gauge!("io_online_users", "Distinct users online, from presence.");
    // gateway
    describe_gauge!("io_gateway_connections", "WebSockets open on this node.");
    describe_counter!("io_gateway_connects_total", "Sockets that joined.");
    describe_counter!("io_gateway_disconnects_total", "Sockets closed, by reason.");
    describe_counter!(
        "io_gateway_rejected_upgrades_total",
        "Upgrades refused before the WebSocket opened, by reason."
    );
    describe_counter!("io_gateway_frames_in_total", "WebSocket frames received.");
    describe_counter!("io_gateway_frames_out_total", "WebSocket frames sent.");
    describe_counter!(
        "io_gateway_bytes_in_total",
        Unit::Bytes,
        "Payload bytes received."
    );
    describe_counter!(
        "io_gateway_bytes_out_total",
        Unit::Bytes,
        "Bytes written to sockets."
    );
    describe_counter!("io_gateway_events_total", "Client events handled, by type.");
    describe_histogram!(
        "io_gateway_event_duration_seconds",
        Unit::Seconds,
        "Handling time of client events."
    );
    describe_histogram!(
        "io_gateway_delivery_seconds",
        Unit::Seconds,
        "From publish to socket write."
    );
    describe_histogram!(
        "io_gateway_join_seconds",
        Unit::Seconds,
        "Reads for `connected`, per batch of joins."
    );
    describe_histogram!(
        "io_gateway_join_batch_size",
        "Joins answered by one batch of reads."
    );
    describe_gauge!(
        "io_gateway_inbox_lag_seconds",
        Unit::Seconds,
        "Age of the newest inbox entry when read."
    );
    describe_counter!(
        "io_gateway_inbox_errors_total",
        "Failed reads of the node's inbox stream."
    );
    describe_counter!(
        "io_gateway_inbox_gaps_total",
        "Inbox reads that found envelopes dropped unread at the stream's cap; each reconnects the node's sockets."
    );
    describe_counter!(
        "io_gateway_rerouted_total",
        "Events forwarded after presence turned out stale."
    );
    describe_counter!(
        "io_gateway_slow_consumer_closes_total",
        "Sockets closed as too slow to read: a full send queue (4008) or nothing taken for the write timeout."
    );
    describe_histogram!(
        "io_gateway_send_queue_depth",
        "Frames written per socket write (queue depth)."
    );
    describe_gauge!(
        "io_gateway_draining",
        "1 while the node drains its sockets."
    );
    describe_gauge!(
        "io_gateway_bus_up",
        "1 while the node's inbox reads succeed."
    );
    // chat and product
    describe_counter!("io_chat_messages_total", "Chat messages committed.");
    describe_histogram!(
        "io_message_commit_seconds",
        Unit::Seconds,
        "Group-commit transaction time."
    );
    describe_histogram!("io_message_commit_batch_size", "Messages per group commit.");
    describe_histogram!(
        "io_message_commit_wait_seconds",
        Unit::Seconds,
        "Time a group commit waited for the commit interval (IO_COMMIT_INTERVAL_US) \
         before it started, taking in the messages that arrived meanwhile."
    );
    describe_counter!(
        "io_message_commit_failures_total",
        "Group commits that failed."
    );
    describe_counter!(
        "io_message_commit_retries_total",
        "Group commit statements run again (Postgres): another node \
         committed one of the batch's keys while it waited for a lock."
    );
    describe_counter!(
        "io_events_published_total",
        "Events published to users, by type."
    );
    describe_counter!(
        "io_events_publish_failures_total",
        "Event batches the bus refused."
    );
    describe_histogram!(
        "io_events_publish_seconds",
        Unit::Seconds,
        "One outbox batch: presence lookup and publish, retries included."
    );
    describe_counter!(
        "io_match_searches_total",
        "Users who entered the match queue."
    );
    describe_counter!(
        "io_queue_replace_failures_total",
        "Searchers whose queue entry could not be replaced after a profile \
         change (they search on with the old entry)."
    );
    describe_counter!("io_sessions_started_total", "Chat sessions created.");
    describe_counter!("io_sessions_ended_total", "Chat sessions ended.");
    describe_histogram!(
        "io_session_duration_seconds",
        Unit::Seconds,
        "Length of ended sessions."
    );
    describe_histogram!("io_session_messages", "Messages per ended session.");
    describe_counter!("io_reveal_requests_total", "Reveal requests made.");
    describe_counter!("io_reveal_responses_total", "Reveal answers, by result.");
    describe_counter!("io_ratings_total", "Session ratings, by vibe.");
    describe_counter!(
        "io_rate_limited_total",
        "Requests or events refused by a rate limit, by limit."
    );
    // api
    describe_counter!(
        "io_auth_magic_links_requested_total",
        "Magic links requested."
    );
    describe_counter!(
        "io_auth_sign_ins_total",
        "Successful magic-link verifications."
    );
    describe_counter!("io_auth_refresh_total", "Refresh-token uses, by result.");
    describe_counter!(
        "io_mail_failures_total",
        "Sign-in mails that could not be sent."
    );
    describe_gauge!("io_mail_up", "1 while the mail server is reachable.");
    describe_counter!(
        "io_http_requests_total",
        "HTTP requests, by route template, method and status."
    );
    describe_histogram!(
        "io_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route template."
    );
}

/// Give every metric of the role a series from the start (counters at 0,
/// idle gauges at 0, histograms with no observations), so dashboards and
/// alerts see a real zero rather than a missing series before the first
/// event.
pub fn register_known_metrics(role: crate::config::Role) {
    use metrics::{counter, gauge, histogram};
    for name in [
        "io_chat_messages_total",
        "io_message_commit_failures_total",
        "io_message_commit_retries_total",
        "io_events_publish_failures_total",
        "io_sessions_started_total",
        "io_sessions_ended_total",
        "io_reveal_requests_total",
        "io_match_searches_total",
        "io_queue_replace_failures_total",
    ] {
        counter!(name).absolute(0);
    }
    for result in ["accepted", "declined"] {
        counter!("io_reveal_responses_total", "result" => result).absolute(0);
    }
    for rating in ["boring", "okay", "fire", "legendary"] {
        counter!("io_ratings_total", "rating" => rating).absolute(0);
    }
    for limit in ["find_match", "message", "typing"] {
        counter!("io_rate_limited_total", "limit" => limit).absolute(0);
    }
    for name in [
        "io_message_commit_seconds",
        "io_message_commit_batch_size",
        "io_message_commit_wait_seconds",
        "io_events_publish_seconds",
        "io_session_duration_seconds",
        "io_session_messages",
    ] {
        let _ = histogram!(name);
    }
    if role.serves_gateway() {
        for name in [
            "io_gateway_connects_total",
            "io_gateway_slow_consumer_closes_total",
            "io_gateway_inbox_gaps_total",
            "io_gateway_frames_in_total",
            "io_gateway_frames_out_total",
            "io_gateway_bytes_in_total",
            "io_gateway_bytes_out_total",
        ] {
            counter!(name).absolute(0);
        }
        for reason in [
            "normal",
            "going_away",
            "auth_failed",
            "join_timeout",
            "rate_limited",
            "too_large",
            "slow_consumer",
            "ping_timeout",
            "shutdown",
            "protocol_error",
            "error",
        ] {
            counter!("io_gateway_disconnects_total", "reason" => reason).absolute(0);
        }
        counter!("io_rate_limited_total", "limit" => "socket").absolute(0);
        for name in [
            "io_gateway_connections",
            "io_gateway_draining",
            "io_gateway_inbox_lag_seconds",
            "io_online_users",
        ] {
            gauge!(name).increment(0.0);
        }
        for name in [
            "io_gateway_delivery_seconds",
            "io_gateway_send_queue_depth",
            "io_gateway_join_seconds",
            "io_gateway_join_batch_size",
        ] {
            let _ = histogram!(name);
        }
    }
    if role.serves_api() {
        for name in [
            "io_auth_magic_links_requested_total",
            "io_auth_sign_ins_total",
            "io_mail_failures_total",
        ] {
            counter!(name).absolute(0);
        }
        for result in ["rotated", "reused", "invalid"] {
            counter!("io_auth_refresh_total", "result" => result).absolute(0);
        }
    }
    if role.runs_matcher() {
        for name in [
            "io_matcher_pairs_total",
            "io_matcher_rounds_total",
            "io_matcher_leader_changes_total",
            "io_matcher_stale_leader_rejections_total",
        ] {
            counter!(name).absolute(0);
        }
        gauge!("io_matcher_is_leader").increment(0.0);
        for gender in ["dude", "girl"] {
            gauge!("io_matcher_queue_length", "gender" => gender).increment(0.0);
        }
        let _ = histogram!("io_matcher_wait_seconds");
        let _ = histogram!("io_matcher_round_seconds");
    }
}

/// Serve `/metrics` until `shutdown`.
pub async fn serve_metrics(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let collector = metrics_process::Collector::default();
    collector.describe();
    let upkeep = handle.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            let collector = collector.clone();
            async move {
                collector.collect();
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Bind a listener, naming the setting in the error. The accept backlog is
/// raised from the usual 1024 so a reconnect storm (a drained node's users,
/// a load test's ramp) queues instead of being dropped into SYN retries.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let fail = |e: std::io::Error| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}");
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    socket.listen(8192).map_err(fail)
}
