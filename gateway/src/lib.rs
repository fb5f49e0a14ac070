//! The gateway: a stateless WebSocket node (design 2 and 3.3).
//!
//! A node holds sockets and nothing else: who is connected where lives in
//! the bus's presence, everything durable in the store, and every rule in
//! the chat domain. Each socket is two tasks: a reader that parses frames
//! and calls [`io_domain::Chat`] in order, and a writer that drains a
//! bounded send queue (fastwebsockets' read is not cancel-safe, so the two
//! halves never share a `select!`). The node's background tasks read its
//! inbox stream and fan events out to local sockets, keep presence alive,
//! push the online count, ping idle sockets and, on shutdown, drain.

mod arrivals;
mod conn;
mod node;
mod registry;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use io_auth::Tokens;
use io_domain::types::NodeId;
use io_domain::Chat;
use tokio_util::sync::CancellationToken;

pub use registry::Registry;

/// Settings of one gateway node.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This node's name in presence and its inbox stream key.
    pub node: NodeId,
    /// Browser origins allowed to open a socket (cross-site WebSocket
    /// hijacking defence). Requests without `Origin` are not from a browser
    /// page and are allowed.
    pub allowed_origins: Vec<String>,
    /// Sockets this node accepts before answering 503.
    pub max_connections: usize,
    /// Server ping interval; a peer silent for two intervals is closed.
    pub ping_interval: Duration,
    /// Time allowed for the first frame (`join`).
    pub join_timeout: Duration,
    /// Frames queued per socket before it counts as a slow consumer.
    pub send_queue: usize,
    /// How long one write to a socket may wait for the peer to take data
    /// before the peer counts as a slow consumer (and is dropped).
    pub write_timeout: Duration,
    /// Largest frame or assembled message accepted.
    pub max_message_bytes: usize,
    /// Per-socket event budget: sustained events per second.
    pub events_per_second: u32,
    /// Per-socket event budget: burst.
    pub event_burst: u32,
    /// Rate-limited frames tolerated before the socket is closed with 4429.
    pub abuse_strikes: u32,
    /// How long presence lives without a heartbeat (a crashed node's users
    /// drop out after this).
    pub presence_ttl: Duration,
    /// How often presence is refreshed.
    pub heartbeat: Duration,
    /// How long a user whose last socket closed stays in the match queue.
    pub queue_grace: Duration,
    /// Sockets closed per drain step, and the pause between steps, so
    /// clients reconnect elsewhere without a thundering herd.
    pub drain_batch: usize,
    pub drain_pause: Duration,
    /// Upper bound on the whole drain.
    pub drain_timeout: Duration,
}

impl GatewayConfig {
    pub fn new(node: NodeId) -> Self {
        GatewayConfig {
            node,
            allowed_origins: Vec::new(),
            max_connections: 50_000,
            ping_interval: Duration::from_secs(20),
            join_timeout: Duration::from_secs(10),
            send_queue: 256,
            write_timeout: Duration::from_secs(10),
            max_message_bytes: 64 * 1024,
            events_per_second: 20,
            event_burst: 40,
            abuse_strikes: 10,
            presence_ttl: Duration::from_secs(15),
            heartbeat: Duration::from_secs(5),
            queue_grace: Duration::from_secs(10),
            drain_batch: 500,
            drain_pause: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// A gateway node. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub chat: Arc<Chat>,
    /// Batched reads for `connected`.
    pub arrivals: arrivals::Arrivals,
    pub tokens: Arc<Tokens>,
    pub config: GatewayConfig,
    pub registry: Registry,
    /// Set on shutdown: new sockets are refused and `/readyz` fails.
    pub draining: AtomicBool,
    /// Whether the last bus operation of the inbox reader succeeded.
    pub bus_ok: AtomicBool,
    /// The online count last pushed to sockets.
    pub online: AtomicU64,
    /// Stops every socket task when the node exits.
    pub stop: CancellationToken,
}

impl Gateway {
    pub fn new(chat: Arc<Chat>, tokens: Arc<Tokens>, config: GatewayConfig) -> Self {
        let gateway = Gateway {
            inner: Arc::new(Inner {
                arrivals: arrivals::Arrivals::spawn(chat.clone()),
                chat,
                tokens,
                config,
                registry: Registry::default(),
                draining: AtomicBool::new(false),
                bus_ok: AtomicBool::new(true),
                online: AtomicU64::new(0),
                stop: CancellationToken::new(),
            }),
        };
        let inner = &gateway.inner;
        inner.chat.outbox().attach_local(
            inner.config.node.clone(),
            Arc::new(node::LocalInbox(Arc::downgrade(inner))),
        );
        gateway
    }

    /// `GET /ws`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/ws", get(upgrade))
            .with_state(self.clone())
    }

    /// Whether this node should get traffic: not draining, inbox healthy.
    pub fn is_ready(&self) -> bool {
        !self.inner.draining.load(Ordering::Relaxed) && self.inner.bus_ok.load(Ordering::Relaxed)
    }

    /// Sockets open on this node.
    pub fn connections(&self) -> usize {
        self.inner.registry.len()
    }

    /// Run the node's background work until `shutdown`, then drain: close
    /// every socket with 1012 in paced batches, clean presence up and
    /// return.
    pub async fn run(&self, shutdown: CancellationToken) {
        node::run(self.inner.clone(), shutdown).await
    }
}

async fn upgrade(
    State(gw): State<Gateway>,
    headers: HeaderMap,
    mut req: Request<Body>,
) -> Response {
    let inner = &gw.inner;
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let allowed = origin
            .to_str()
            .map(|o| inner.config.allowed_origins.iter().any(|a| a == o))
            .unwrap_or(false);
        if !allowed {
            metrics::counter!("io_gateway_rejected_upgrades_total", "reason" => "origin")
                .increment(1);
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
    }
    if inner.draining.load(Ordering::Relaxed) {
        metrics::counter!("io_gateway_rejected_upgrades_total", "reason" => "draining")
            .increment(1);
        return (StatusCode::SERVICE_UNAVAILABLE, "node is draining").into_response();
    }
    if inner.registry.len() >= inner.config.max_connections {
        metrics::counter!("io_gateway_rejected_upgrades_total", "reason" => "cap").increment(1);
        return (StatusCode::SERVICE_UNAVAILABLE, "node is full").into_response();
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return (StatusCode::UPGRADE_REQUIRED, "WebSocket upgrade required").into_response();
    }
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((response, fut)) => {
            let inner = gw.inner.clone();
            tokio::spawn(async move {
                match fut.await {
                    Ok(ws) => conn::serve(inner, ws).await,
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            response.map(|_| Body::empty())
        }
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
