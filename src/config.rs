//! Every setting of every role (design 3.1): a flag with an `IO_*`
//! environment variable, documented by `io --help` and `io <role> --help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "io",
    version,
    about = "IO — anonymous 1:1 realtime chat. One binary, every role.",
    long_about = "IO — anonymous 1:1 realtime chat.\n\nWith no role, `io` runs `all`: api + gateway + matcher in one process on one port, using SQLite and an in-process bus unless Postgres and Redis are configured. The cluster roles (`gateway`, `api`, `matcher`) need Postgres, Redis and (api, gateway) IO_JWT_SECRET.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// api + gateway + matcher in one process (the default).
    All(Settings),
    /// A WebSocket node (needs Postgres, Redis, IO_JWT_SECRET).
    Gateway(Settings),
    /// The HTTP API and the web client (needs Postgres, Redis, IO_JWT_SECRET).
    Api(Settings),
    /// The matcher: one leader pairs users, the rest stand by (needs Postgres, Redis).
    Matcher(Settings),
    /// Apply database migrations and exit.
    Migrate(Settings),
    /// Operator tasks that need the database and the signing key (never exposed over HTTP).
    Admin(AdminArgs),
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub task: AdminTask,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Subcommand)]
pub enum AdminTask {
    /// Create verified test users (alternating dude/girl, seeking the other)
    /// and write one JSON line per user with an access token: for load tests.
    ProvisionUsers {
        /// How many users.
        #[arg(long)]
        count: u32,
        /// Output file (JSON lines: id, email, gender, token).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Local part prefix of the generated emails (`<prefix>-<run>-<n>@load.test`).
        #[arg(long, default_value = "loadtest")]
        prefix: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Which part(s) of IO a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    All,
    Gateway,
    Api,
    Matcher,
    Migrate,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Api => "api",
            Role::Matcher => "matcher",
            Role::Migrate => "migrate",
            Role::Admin => "admin",
        }
    }

    pub fn serves_api(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }

    pub fn serves_gateway(self) -> bool {
        matches!(self, Role::All | Role::Gateway)
    }

    pub fn runs_matcher(self) -> bool {
        matches!(self, Role::All | Role::Matcher)
    }
}

impl Cli {
    /// The role and its settings (`all` when no role is named).
    pub fn into_role(self) -> (Role, Settings) {
        match self.command {
            None => (Role::All, self.settings),
            Some(Command::All(s)) => (Role::All, s),
            Some(Command::Gateway(s)) => (Role::Gateway, s),
            Some(Command::Api(s)) => (Role::Api, s),
            Some(Command::Matcher(s)) => (Role::Matcher, s),
            Some(Command::Migrate(s)) => (Role::Migrate, s),
            Some(Command::Admin(a)) => (Role::Admin, a.settings),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Where this role listens: HTTP, the WebSocket at /ws, /healthz and /readyz.
    #[arg(long, env = "IO_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// The Prometheus /metrics listener of this process (kept off the public port).
    #[arg(long, env = "IO_METRICS_ADDR", default_value = "127.0.0.1:9100")]
    pub metrics_addr: SocketAddr,

    /// `sqlite://…` or `postgres://…` (add `?sslmode=require` for TLS).
    #[arg(long, env = "IO_DATABASE_URL", default_value = "sqlite://io.db")]
    pub database_url: String,

    /// Redis URL (`redis://` or `rediss://` for TLS); unset = in-process bus (`all` only).
    #[arg(long, env = "IO_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key, so several deployments can share a Redis.
    #[arg(long, env = "IO_REDIS_PREFIX", default_value = "io")]
    pub redis_prefix: String,

    /// Secret that signs access tokens; the same on every api and gateway node.
    /// Under `all` it is generated once and kept beside the SQLite file.
    #[arg(long, env = "IO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Earlier secrets (comma list) whose tokens still verify during a key rotation.
    #[arg(
        long,
        env = "IO_JWT_PREVIOUS_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub jwt_previous_secrets: Vec<String>,

    /// Base URL used in magic links.
    #[arg(long, env = "IO_PUBLIC_URL", default_value = "http://localhost:8080")]
    pub public_url: String,

    /// SMTP server for sign-in mail, e.g. smtp://127.0.0.1:2525 or smtps://user:pass@host;
    /// unset = dev mailer (logs the link and shows it at /dev/mailbox).
    #[arg(long, env = "IO_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender address of sign-in mail.
    #[arg(long, env = "IO_MAIL_FROM", default_value = "IO <no-reply@localhost>")]
    pub mail_from: String,

    /// Comma list of email domains allowed to sign in (campus mode); empty = any.
    #[arg(long, env = "IO_ALLOWED_EMAIL_DOMAINS", value_delimiter = ',')]
    pub allowed_email_domains: Vec<String>,

    /// Origin allowlist for the WebSocket and CORS (comma list); default: the public URL's origin.
    #[arg(long, env = "IO_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// This node's name in presence, logs and metrics; default: host:port of IO_HTTP_ADDR.
    #[arg(long, env = "IO_NODE_ID")]
    pub node_id: Option<String>,

    /// The static web client served by the api role.
    #[arg(long, env = "IO_WEB_DIR", default_value = "web")]
    pub web_dir: PathBuf,

    /// PEM certificate chain: serve HTTPS/WSS directly with rustls.
    #[arg(long, env = "IO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for IO_TLS_CERT.
    #[arg(long, env = "IO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "IO_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Trust X-Forwarded-For / X-Real-IP for the client address (only behind a proxy such as Nginx).
    #[arg(long, env = "IO_TRUST_FORWARDED", default_value_t = false)]
    pub trust_forwarded: bool,

    /// WebSockets a gateway node accepts before answering 503.
    #[arg(long, env = "IO_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Microseconds between the starts of two message commits of this
    /// process at least: under load a commit waits out the rest and takes in
    /// the messages that arrive meanwhile (0 = commit as soon as the last
    /// commit ends). A message arriving after a quiet spell commits at once.
    /// The timer ticks in whole milliseconds, so a wait ends on the next
    /// tick after the interval; at most 100 ms.
    #[arg(long, env = "IO_COMMIT_INTERVAL_US", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub commit_interval_us: u64,

    /// Largest database connection pool of this process.
    #[arg(long, env = "IO_DATABASE_POOL", default_value_t = 16)]
    pub database_pool: u32,

    /// Messages a user may send per minute (sustained).
    #[arg(long, env = "IO_LIMIT_MESSAGES_PER_MINUTE", default_value_t = 30)]
    pub limit_messages_per_minute: u32,

    /// Messages a user may send in a burst.
    #[arg(long, env = "IO_LIMIT_MESSAGE_BURST", default_value_t = 10)]
    pub limit_message_burst: u32,

    /// find_match calls a user may make per 5 minutes.
    #[arg(long, env = "IO_LIMIT_FIND_MATCH_PER_5MIN", default_value_t = 10)]
    pub limit_find_match_per_5min: u32,

    /// Typing indicators a user may send per second.
    #[arg(long, env = "IO_LIMIT_TYPING_PER_SECOND", default_value_t = 2)]
    pub limit_typing_per_second: u32,

    /// Events per second one socket may send before getting RATE_LIMITED (burst is twice this).
    #[arg(long, env = "IO_LIMIT_SOCKET_EVENTS_PER_SECOND", default_value_t = 20)]
    pub limit_socket_events_per_second: u32,

    /// Magic-link sign-in mails per email per hour.
    #[arg(long, env = "IO_LIMIT_MAGIC_LINKS_PER_EMAIL_HOUR", default_value_t = 3)]
    pub limit_magic_links_per_email_hour: u32,

    /// Magic-link requests per client IP per hour.
    #[arg(long, env = "IO_LIMIT_MAGIC_LINKS_PER_IP_HOUR", default_value_t = 20)]
    pub limit_magic_links_per_ip_hour: u32,

    /// Token verifications per client IP per hour.
    #[arg(long, env = "IO_LIMIT_VERIFY_PER_IP_HOUR", default_value_t = 10)]
    pub limit_verify_per_ip_hour: u32,

    /// Matcher lease time-to-live in milliseconds (a standby takes over after it).
    #[arg(long, env = "IO_MATCHER_LEASE_MS", default_value_t = 3000)]
    pub matcher_lease_ms: u64,

    /// Seconds a gateway spends draining its sockets on SIGTERM at most.
    #[arg(long, env = "IO_DRAIN_TIMEOUT_SECS", default_value_t = 20)]
    pub drain_timeout_secs: u64,

    /// Seconds a write to a socket may wait for its reader before the socket
    /// is dropped as a slow consumer.
    #[arg(long, env = "IO_WRITE_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout_secs: u64,
}

impl Settings {
    /// The node name: IO_NODE_ID, else host:port of the HTTP listener.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| self.http_addr.ip().to_string());
            format!("{host}:{}", self.http_addr.port())
        })
    }

    /// IO_ALLOWED_ORIGINS, else the origin of the public URL; a public URL
    /// on `localhost` also allows the same port on 127.0.0.1 (and the other
    /// way round), the two names one opens a local IO by.
    pub fn allowed_origins(&self) -> Vec<String> {
        let given: Vec<String> = self
            .allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        if !given.is_empty() {
            return given;
        }
        let origin = origin_of(&self.public_url);
        let twin = [
            ("://localhost", "://127.0.0.1"),
            ("://127.0.0.1", "://localhost"),
        ]
        .into_iter()
        .find_map(|(from, to)| {
            let rest = origin.split_once(from)?.1;
            // The host must end there: "localhost.example" is another.
            (rest.is_empty() || rest.starts_with(':')).then(|| origin.replacen(from, to, 1))
        });
        std::iter::once(origin.clone()).chain(twin).collect()
    }

    pub fn matcher_lease(&self) -> Duration {
        Duration::from_millis(self.matcher_lease_ms.max(300))
    }
}

/// `scheme://host[:port]` of a URL.
pub fn origin_of(url: &str) -> String {
    let url = url.trim();
    match url.find("://") {
        Some(i) => {
            let rest = &url[i + 3..];
            let host = rest.split('/').next().unwrap_or(rest);
            format!("{}://{}", &url[..i], host)
        }
        None => url.trim_end_matches('/').to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_of_public_url() {
        assert_eq!(origin_of("http://localhost:8080"), "http://localhost:8080");
        assert_eq!(
            origin_of("https://chat.example.org/x/y"),
            "https://chat.example.org"
        );
    }

    #[test]
    fn a_local_public_url_allows_both_local_names() {
        let origins = |args: &[&str]| {
            let (_, s) = Cli::parse_from(args).into_role();
            s.allowed_origins()
        };
        assert_eq!(
            origins(&["io"]),
            ["http://localhost:8080", "http://127.0.0.1:8080"]
        );
        assert_eq!(
            origins(&["io", "--public-url", "https://localhost.example.org"]),
            ["https://localhost.example.org"]
        );
        assert_eq!(
            origins(&["io", "--allowed-origins", "http://a.test"]),
            ["http://a.test"]
        );
    }

    #[test]
    fn no_role_means_all() {
        let (role, s) = Cli::parse_from(["io"]).into_role();
        assert_eq!(role, Role::All);
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        let (role, _) = Cli::parse_from(["io", "gateway"]).into_role();
        assert_eq!(role, Role::Gateway);
    }
}
