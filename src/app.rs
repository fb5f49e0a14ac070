//! Wiring: build the adapters a role needs, start its parts, serve.
//! `start` is what `main` and the end-to-end tests call; it binds the
//! listeners (port 0 works) and returns their addresses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use io_auth::Tokens;
use io_domain::limits::{ChatLimits, Rate};
use io_domain::types::NodeId;
use io_domain::{Bus, Chat, Store};
use io_gateway::{Gateway, GatewayConfig};
use io_matcher::{Matcher, MatcherConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Role, Settings};
use crate::telemetry;

/// A started role.
pub struct Running {
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Cancel to shut the role down gracefully (what SIGTERM does).
    pub shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Wait until every part has stopped.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Refuse a cluster role that lacks what it needs, in one line.
pub fn check_requirements(role: Role, s: &Settings) -> anyhow::Result<()> {
    if matches!(role, Role::All | Role::Migrate | Role::Admin) {
        return Ok(());
    }
    let name = role.as_str();
    if s.redis_url.is_none() {
        bail!("`io {name}` needs Redis: set IO_REDIS_URL (the in-process bus only works under `io all`)");
    }
    if !(s.database_url.starts_with("postgres://") || s.database_url.starts_with("postgresql://")) {
        bail!("`io {name}` needs Postgres: set IO_DATABASE_URL=postgres://… (SQLite only works under `io all`)");
    }
    if matches!(role, Role::Api | Role::Gateway) && s.jwt_secret.as_deref().unwrap_or("").len() < 32
    {
        bail!("`io {name}` needs IO_JWT_SECRET (at least 32 characters, the same on every api and gateway node)");
    }
    Ok(())
}

/// The signing secret: [`lasting_jwt_secret`], else (`all` on a database
/// other than SQLite, without IO_JWT_SECRET) a random one for this run.
pub(crate) fn jwt_secret(role: Role, s: &Settings) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = lasting_jwt_secret(role, s)? {
        return Ok(secret);
    }
    tracing::warn!("no IO_JWT_SECRET: using a random one for this run; sign-ins end at restart");
    Ok(io_auth::random_token().into_bytes())
}

/// A secret tokens stay valid under: IO_JWT_SECRET, else (under `all`) one
/// generated once and kept beside the SQLite file so tokens survive
/// restarts; `None` for `all` on another database without IO_JWT_SECRET.
pub(crate) fn lasting_jwt_secret(role: Role, s: &Settings) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(secret) = &s.jwt_secret {
        if secret.len() < 32 {
            bail!("IO_JWT_SECRET must be at least 32 characters");
        }
        return Ok(Some(secret.as_bytes().to_vec()));
    }
    if role != Role::All {
        bail!("IO_JWT_SECRET is required for `io {}`", role.as_str());
    }
    let Some(db) = sqlite_path(&s.database_url) else {
        return Ok(None);
    };
    let path = PathBuf::from(format!("{}.jwt-secret", db.display()));
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if existing.len() >= 32 {
            return Ok(Some(existing.into_bytes()));
        }
    }
    let secret = io_auth::random_token();
    write_private(&path, &secret)
        .with_context(|| format!("cannot keep the generated JWT secret at {}", path.display()))?;
    tracing::warn!(path = %path.display(), "no IO_JWT_SECRET: generated one and kept it beside the database");
    Ok(Some(secret.into_bytes()))
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// The file of a `sqlite://path[?…]` URL.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn chat_limits(s: &Settings) -> ChatLimits {
    ChatLimits {
        find_match: Rate::new(
            s.limit_find_match_per_5min,
            Duration::from_secs(300),
            s.limit_find_match_per_5min,
        ),
        messages: Rate::new(
            s.limit_messages_per_minute,
            Duration::from_secs(60),
            s.limit_message_burst,
        ),
        typing: Rate::new(
            s.limit_typing_per_second,
            Duration::from_secs(1),
            s.limit_typing_per_second,
        ),
    }
}

#[derive(Clone)]
struct Health {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    gateway: Option<Gateway>,
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the store and the bus answer (and a gateway is not draining).
async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    let timeout = Duration::from_secs(2);
    let store_ok = matches!(
        tokio::time::timeout(timeout, h.store.ping()).await,
        Ok(Ok(()))
    );
    let bus_ok = matches!(
        tokio::time::timeout(timeout, h.bus.ping()).await,
        Ok(Ok(()))
    );
    metrics::gauge!("io_dependency_up", "dependency" => "store").set(if store_ok {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("io_dependency_up", "dependency" => "bus").set(if bus_ok { 1.0 } else { 0.0 });
    let gateway_ok = h.gateway.as_ref().map(|g| g.is_ready()).unwrap_or(true);
    let ok = store_ok && bus_ok && gateway_ok;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "status": if ok { "ready" } else { "unavailable" },
            "store": store_ok,
            "bus": bus_ok,
            "gateway": gateway_ok,
        })),
    )
}

/// Keep `io_dependency_up` fresh even when nobody probes `/readyz`.
async fn watch_dependencies(h: Health, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => { let _ = readyz(State(h.clone())).await; }
        }
    }
}

/// Start `role`: connect, migrate, serve. Returns once listening.
pub async fn start(role: Role, s: Settings) -> anyhow::Result<Running> {
    check_requirements(role, &s)?;
    let node = s.node_id();
    let metrics_handle = telemetry::init_metrics(role.as_str(), &node);
    telemetry::register_known_metrics(role);

    let store = io_store::connect_with(
        &s.database_url,
        &io_store::StoreOptions {
            max_connections: s.database_pool.max(2),
            ..Default::default()
        },
    )
    .await
    .with_context(|| format!("cannot open the store at {}", redact(&s.database_url)))?;
    let bus = io_bus::connect(s.redis_url.as_deref(), &s.redis_prefix)
        .await
        .context("cannot connect to Redis (IO_REDIS_URL)")?;
    let chat = Chat::new(
        store.clone(),
        bus.clone(),
        chat_limits(&s),
        Duration::from_micros(s.commit_interval_us),
    );

    let http = telemetry::bind(s.http_addr, "IO_HTTP_ADDR").await?;
    let metrics_listener = telemetry::bind(s.metrics_addr, "IO_METRICS_ADDR").await?;
    let http_addr = http.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;
    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => Some(crate::http::tls_config(cert, key)?),
        _ => None,
    };

    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut app = Router::new();

    let tokens = if role.serves_api() || role.serves_gateway() {
        let previous: Vec<Vec<u8>> = s
            .jwt_previous_secrets
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.as_bytes().to_vec())
            .collect();
        Some(Arc::new(Tokens::new(
            &jwt_secret(role, &s)?,
            &previous,
            Tokens::DEFAULT_ACCESS_TTL,
        )))
    } else {
        None
    };

    // Parts that must finish before the HTTP server stops: the gateway
    // drains its sockets, the matcher releases its lease.
    let mut parts = Vec::new();
    let gateway = if let (true, Some(tokens)) = (role.serves_gateway(), &tokens) {
        let mut config = GatewayConfig::new(NodeId(node.clone()));
        config.allowed_origins = s.allowed_origins();
        config.max_connections = s.max_connections;
        config.events_per_second = s.limit_socket_events_per_second.max(1);
        config.event_burst = 2 * s.limit_socket_events_per_second.max(1);
        config.drain_timeout = Duration::from_secs(s.drain_timeout_secs);
        config.write_timeout = Duration::from_secs(s.write_timeout_secs);
        let gateway = Gateway::new(chat.clone(), tokens.clone(), config);
        app = app.merge(gateway.router());
        let g = gateway.clone();
        let stop = shutdown.clone();
        parts.push(tokio::spawn(async move { g.run(stop).await }));
        Some(gateway)
    } else {
        None
    };
    if let (true, Some(tokens)) = (role.serves_api(), &tokens) {
        let config = io_api::ApiConfig {
            public_url: s.public_url.trim_end_matches('/').to_owned(),
            allowed_email_domains: s
                .allowed_email_domains
                .iter()
                .map(|d| d.trim().to_lowercase())
                .filter(|d| !d.is_empty())
                .collect(),
            allowed_origins: s.allowed_origins(),
            smtp_url: s.smtp_url.clone(),
            mail_from: s.mail_from.clone(),
            web_dir: s.web_dir.clone(),
            magic_link_ttl: Duration::from_secs(600),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            limits: io_api::AuthLimits {
                magic_links_per_email_hour: s.limit_magic_links_per_email_hour,
                magic_links_per_ip_hour: s.limit_magic_links_per_ip_hour,
                verify_per_ip_hour: s.limit_verify_per_ip_hour,
            },
            trust_forwarded: s.trust_forwarded,
        };
        let api = io_api::router(chat.clone(), tokens.clone(), config)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the api: {e}"))?;
        app = app.merge(api);
    }
    if role.runs_matcher() {
        let matcher = Arc::new(Matcher::new(
            chat.clone(),
            MatcherConfig {
                holder: node.clone(),
                lease_ttl: s.matcher_lease(),
                renew_every: s.matcher_lease() / 3,
                ..MatcherConfig::default()
            },
        ));
        let stop = shutdown.clone();
        parts.push(tokio::spawn(async move { matcher.run(stop).await }));
    }

    let health = Health {
        store,
        bus,
        gateway,
    };
    tasks.push(tokio::spawn(watch_dependencies(
        health.clone(),
        shutdown.clone(),
    )));
    let app = app
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz).with_state(health));

    // Prune idle rate-limit keys so memory stays bounded.
    {
        let chat = chat.clone();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => chat.prune_limiters(),
                }
            }
        }));
    }

    let metrics_stop = CancellationToken::new();
    {
        let stop = metrics_stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = telemetry::serve_metrics(metrics_listener, metrics_handle, stop).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        }));
    }
    {
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            crate::http::serve(http, app, tls, stop, Duration::from_secs(10)).await;
            for part in parts {
                let _ = part.await;
            }
            metrics_stop.cancel();
        }));
    }
    tracing::info!(
        role = role.as_str(),
        node = %node,
        http = %http_addr,
        metrics = %metrics_addr,
        tls = s.tls_cert.is_some(),
        "IO is up"
    );
    Ok(Running {
        http_addr,
        metrics_addr,
        shutdown,
        tasks,
    })
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..s], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Resolve on SIGTERM or Ctrl-C.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths_and_redaction() {
        assert_eq!(sqlite_path("sqlite://io.db"), Some(PathBuf::from("io.db")));
        assert_eq!(
            sqlite_path("sqlite:///tmp/x.db?mode=rwc"),
            Some(PathBuf::from("/tmp/x.db"))
        );
        assert_eq!(sqlite_path("postgres://x"), None);
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
