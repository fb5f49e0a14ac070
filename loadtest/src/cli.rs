//! The command line: `loadtest <scenario> [options]`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load harness for IO: idle sockets, open-model chat, churn, HTTP API.",
    long_about = "Load harness for IO.\n\n\
Users come from `io admin provision-users --count N --out FILE` (one JSON object per line: \
id, email, gender, token). Latencies are measured from each event's SCHEDULED time (open \
model: no coordinated omission) and reported per phase (ramp, steady, drain) as \
p50/p90/p99/p99.9/max in milliseconds. `--threshold NAME=LIMIT` makes the run exit 1 when a \
figure is over LIMIT (`NAME>=LIMIT` for a floor); NAME is a counter (lost, duplicated, \
errors, connect_errors, …), a rate (`messages_per_s`, `connects_per_s`, …), `client_cpu_percent`, \
or `<stat>_<latency>_ms` with stat one of p50 p90 p99 p999 max mean (e.g. p99_delivery_ms), \
read from the steady phase (prefix `ramp.` or `all.` for another)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    /// Hold N idle authenticated sockets; connect-time percentiles and server RSS per socket.
    Connect(ConnectArgs),
    /// Users match, then exchange messages at a fixed rate; delivery/ack latency, loss, duplicates.
    Chat(ChatArgs),
    /// Users cycle: connect, match, chat briefly, end, rate, disconnect; cycles/s and step latencies.
    Churn(ChurnArgs),
    /// HTTP traffic: profile reads/writes, online count, and magic-link sign-in when /dev/mailbox exists.
    Api(ApiArgs),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect(_) => "connect",
            Scenario::Chat(_) => "chat",
            Scenario::Churn(_) => "churn",
            Scenario::Api(_) => "api",
        }
    }

    pub fn common(&self) -> &Common {
        match self {
            Scenario::Connect(a) => &a.common,
            Scenario::Chat(a) => &a.common,
            Scenario::Churn(a) => &a.common,
            Scenario::Api(a) => &a.common,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server base URL; repeat for several gateway nodes (users are spread over them).
    /// `http://host:port` or `ws://host:port/ws` both work: WebSocket scenarios use
    /// `ws://…/ws`, the api scenario `http://…`.
    #[arg(long = "url", default_value = "http://127.0.0.1:8080")]
    pub urls: Vec<String>,

    /// Users file written by `io admin provision-users` (JSON lines: id, email, gender, token).
    #[arg(long)]
    pub users: PathBuf,

    /// Use at most this many users from the file.
    #[arg(long)]
    pub max_users: Option<usize>,

    /// Length of the steady phase, seconds (connect: how long sockets are held).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,

    /// Connection attempts per second while ramping up (all workers together).
    #[arg(long, default_value_t = 500.0)]
    pub ramp_rate: f64,

    /// After the steady phase, how long to wait for outstanding answers, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,

    /// Stop no matter what after this many seconds (default: the planned run + 60).
    #[arg(long)]
    pub hard_timeout: Option<f64>,

    /// Give up on one connection attempt (TCP + upgrade + join) after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,

    /// Spread client sockets over source addresses 127.0.0.1 … 127.0.0.N, to pass the
    /// per-address ephemeral port limit (about 28k) when holding many sockets.
    #[arg(long, default_value_t = 1)]
    pub source_ips: u8,

    /// Worker processes (the harness re-executes itself), each with a slice of the users,
    /// to pass the per-process open-file limit. Results are merged exactly.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,

    /// Runtime threads per worker process (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,

    /// A server process to watch (RSS before/after, CPU of it and its children); repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,

    /// Pass/fail limit, e.g. `p99_delivery_ms=25`, `lost=0`, `messages_per_s>=9000`; repeatable.
    #[arg(long = "threshold")]
    pub thresholds: Vec<String>,

    /// Write the summary (with exact histograms) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Write a one-second time series as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,

    /// No live progress and no periodic status lines.
    #[arg(long)]
    pub quiet: bool,

    /// A send or connection attempt that leaves this many ms after its schedule is counted late.
    #[arg(long, default_value_t = 5.0)]
    pub late_ms: f64,

    /// Allow targets that are not loopback addresses (the default refuses them, so a typo
    /// cannot point load at another machine).
    #[arg(long)]
    pub allow_non_loopback: bool,

    /// Internal: this process is worker N of a run started by a coordinator.
    #[arg(long, hide = true)]
    pub worker_index: Option<u32>,

    /// Internal: the run's start on the shared monotonic clock, microseconds.
    #[arg(long, hide = true)]
    pub worker_start_us: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,

    /// Sockets to open (default: one per user). Users are reused round-robin when there are
    /// more sockets than users (several sockets per user are allowed, like browser tabs).
    #[arg(long)]
    pub sockets: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,

    /// Messages per second each user sends once matched.
    #[arg(long, default_value_t = 1.0, conflicts_with = "rate")]
    pub rate_per_user: f64,

    /// Messages per second all users send together (divided evenly among them).
    #[arg(long)]
    pub rate: Option<f64>,

    /// Size of each message's content, bytes (at least 24: it carries the send schedule).
    #[arg(long, default_value_t = 64)]
    pub message_size: usize,

    /// Seconds after the last connection attempt before the steady phase starts, so pairing
    /// finishes first.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,

    /// A user not matched this many seconds after `find_match` gives up.
    #[arg(long, default_value_t = 30.0)]
    pub match_timeout: f64,

    /// Put the two users of each pair on different nodes: dudes on the 1st (3rd, …) `--url`,
    /// girls on the 2nd (4th, …). Needs at least two URLs.
    #[arg(long)]
    pub pairs_on_separate_nodes: bool,

    /// Leave sessions active at the end instead of ending them.
    #[arg(long)]
    pub keep_sessions: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,

    /// Cycles per user at most. The same two people never meet twice, so with U users of each
    /// gender a user has at most U partners; keep this well below U.
    #[arg(long, default_value_t = 3)]
    pub cycles: u32,

    /// Messages each user sends per chat.
    #[arg(long, default_value_t = 3)]
    pub messages: u32,

    /// Milliseconds between one user's messages within a chat.
    #[arg(long, default_value_t = 50)]
    pub message_interval_ms: u64,

    /// Give up on a step (ack, partner's messages, end, rate) after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub step_timeout: f64,

    /// A user not matched this many seconds after `find_match` stops cycling.
    #[arg(long, default_value_t = 20.0)]
    pub match_timeout: f64,

    /// Pause between a user's cycles, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub common: Common,

    /// Requests per second, all users together (open model: each user has its own schedule
    /// on its own keep-alive connection).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,

    /// Weights of the request kinds: profile_get, profile_put, online_count, signin.
    /// Sign-in (send-magic-link → /dev/mailbox → verify-token → me) needs the dev mailer;
    /// without it its weight drops to 0.
    #[arg(
        long,
        default_value = "profile_get=4,profile_put=1,online_count=4,signin=1"
    )]
    pub mix: String,

    /// Give up on one request after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub request_timeout: f64,
}
