//! IO's HTTP API (design 3.2): magic-link sign-in, profiles, the REST face
//! of the chat, the OpenAPI document, and the static web client.
//!
//! [`router`] builds the whole thing as one `axum::Router`; the binary adds
//! `/ws`, `/healthz`, `/readyz` and `/metrics` and serves it with
//! `into_make_service_with_connect_info::<SocketAddr>()` (the client address
//! feeds the per-IP rate limits). Handlers only parse, authenticate, call
//! [`io_domain::Chat`] (or, for sign-in and profiles, its store) and
//! serialize; no chat rule lives here.
//!
//! # Decisions
//!
//! - **No enumeration through sign-in.** `send-magic-link` answers the same
//!   202 and body for every well-formed address. Whether the address may
//!   sign in, storing the token and talking to SMTP all happen in a worker
//!   after the answer (`links`), so neither body, status nor timing depends
//!   on the address.
//! - **A mail server that is down is still visible.** The mailer keeps a
//!   health flag: probed (connect + `NOOP`) when the router is built, then
//!   every 30 s (5 s while down), and updated by every send. While it is
//!   down, `send-magic-link` answers `503 SERVICE_UNAVAILABLE` to every
//!   address alike. Failed sends count in `io_mail_failures_total`; the
//!   flag is the gauge `io_mail_up`. A failure found only by the worker (the
//!   first send after an outage starts) cannot reach that request: the user
//!   asks again and by then gets the 503. Likewise a store failure while
//!   saving a link is only logged and counted
//!   (`io_auth_magic_link_errors_total{stage="store"}`); `/readyz` shows
//!   the store is down.
//! - **Errors** are `{"error": {code, message, field?}}` for everything
//!   under `/api`, including what axum itself rejects (bad JSON 400, wrong
//!   content type 415, body over 64 KiB 413, unknown route 404, wrong method
//!   405). Bodies are strict: unknown fields are `VALIDATION_ERROR` naming
//!   the field. A malformed UUID is 400 naming the field; a session that is
//!   not yours is 404.
//! - **Rate limits** (design 3.4) are per process, keyed by client IP (its
//!   /64 for IPv6; from `X-Real-IP`/`X-Forwarded-For` only when
//!   `trust_forwarded`) and by email; idle keys are pruned every minute.
//!   `verify-token` counts every attempt from an IP, before any lookup.
//! - **Tokens.** Magic-link and refresh tokens are 256-bit CSPRNG strings
//!   stored only as SHA-256; magic links are single use; refresh tokens
//!   rotate and a reused one revokes its whole family.
//! - **Static client.** Files under `web_dir`; any other GET that is not
//!   under `/api` and does not name a file gets `index.html` (the client
//!   routes itself). HTML, JS and CSS revalidate on each load (names carry
//!   no content hash).
//!
//! # Metrics
//! `io_http_requests_total{route,method,status}`,
//! `io_http_request_duration_seconds{route,method}` (route = template),
//! `io_auth_magic_links_requested_total`, `io_auth_magic_links_refused_total`,
//! `io_auth_magic_link_errors_total{stage}`, `io_auth_sign_ins_total`,
//! `io_auth_refresh_total{result}`, `io_mail_sent_total`,
//! `io_mail_failures_total`, `io_mail_up`, and the domain's
//! `io_rate_limited_total{limit}`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use io_auth::Tokens;
use io_domain::limits::{KeyedLimiter, Rate};
use io_domain::types::Email;
use io_domain::Chat;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;

mod auth_routes;
mod chat_routes;
mod error;
mod extract;
mod layers;
mod links;
mod mail;
mod user_routes;
mod web;

/// Largest request body anywhere under `/api`: the WebSocket's frame limit.
/// A 2000-character message of emoji written as JSON `\u` escapes (12 bytes
/// each) must fit, whatever the client's JSON encoder does.
pub const BODY_LIMIT: usize = 64 * 1024;
/// How often idle rate-limit keys are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Everything the api role is configured with (design 3.1).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `IO_PUBLIC_URL`: the base of magic links.
    pub public_url: String,
    /// `IO_ALLOWED_EMAIL_DOMAINS`: only these domains get a link (exact
    /// match, case-insensitive); empty lets every domain in.
    pub allowed_email_domains: Vec<String>,
    /// `IO_ALLOWED_ORIGINS`: exact origins allowed by CORS.
    pub allowed_origins: Vec<String>,
    /// `IO_SMTP_URL`; `None` selects the dev mailer and `/dev/mailbox`.
    pub smtp_url: Option<String>,
    /// `IO_MAIL_FROM`, e.g. `IO <no-reply@localhost>`.
    pub mail_from: String,
    /// `IO_WEB_DIR`: the static client, `index.html` for client routes.
    pub web_dir: PathBuf,
    /// How long a magic link works.
    pub magic_link_ttl: Duration,
    /// How long a refresh token works (each rotation starts anew).
    pub refresh_ttl: Duration,
    /// Sign-in rate limits.
    pub limits: AuthLimits,
    /// Take the client IP from `X-Real-IP`/`X-Forwarded-For`: only behind a
    /// proxy that sets them (Nginx), or anyone could pick their own bucket.
    pub trust_forwarded: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            public_url: "http://localhost:8080".into(),
            allowed_email_domains: Vec::new(),
            allowed_origins: vec!["http://localhost:8080".into()],
            smtp_url: None,
            mail_from: "IO <no-reply@localhost>".into(),
            web_dir: PathBuf::from("web"),
            magic_link_ttl: Duration::from_secs(10 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            limits: AuthLimits::default(),
            trust_forwarded: false,
        }
    }
}

/// The sign-in rate limits, each a number per hour (the whole hour's
/// allowance may be used at once, then it refills evenly); `Default` is
/// design 3.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthLimits {
    /// `send-magic-link` per email address: 3.
    pub magic_links_per_email_hour: u32,
    /// `send-magic-link` per client IP: 20.
    pub magic_links_per_ip_hour: u32,
    /// `verify-token` per client IP: 10.
    pub verify_per_ip_hour: u32,
}

impl Default for AuthLimits {
    fn default() -> Self {
        AuthLimits {
            magic_links_per_email_hour: 3,
            magic_links_per_ip_hour: 20,
            verify_per_ip_hour: 10,
        }
    }
}

fn per_hour(n: u32) -> Rate {
    Rate::new(n, Duration::from_secs(3600), n)
}

/// Why the router could not be built: a setting is malformed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid IO_SMTP_URL: {0}")]
    SmtpUrl(String),
    #[error("invalid IO_MAIL_FROM `{0}`: {1}")]
    MailFrom(String, String),
    #[error("invalid allowed origin `{0}`")]
    Origin(String),
    #[error("invalid IO_PUBLIC_URL `{0}`: expected http(s)://host[:port][/path]")]
    PublicUrl(String),
}

/// The settings handlers read, in the shape they need them.
pub(crate) struct Settings {
    pub refresh_ttl: chrono::Duration,
    pub trust_forwarded: bool,
}

/// The per-process sign-in limiters.
pub(crate) struct AuthLimiters {
    pub magic_link_per_email: KeyedLimiter<Email>,
    pub magic_link_per_ip: KeyedLimiter<IpAddr>,
    pub verify_per_ip: KeyedLimiter<IpAddr>,
}

impl AuthLimiters {
    fn new(limits: AuthLimits) -> Self {
        AuthLimiters {
            magic_link_per_email: KeyedLimiter::new(
                "magic_link_email",
                per_hour(limits.magic_links_per_email_hour),
            ),
            magic_link_per_ip: KeyedLimiter::new(
                "magic_link_ip",
                per_hour(limits.magic_links_per_ip_hour),
            ),
            verify_per_ip: KeyedLimiter::new(
                "verify_token_ip",
                per_hour(limits.verify_per_ip_hour),
            ),
        }
    }

    fn prune(&self) {
        self.magic_link_per_email.prune();
        self.magic_link_per_ip.prune();
        self.verify_per_ip.prune();
    }
}

/// What every handler shares.
pub(crate) struct AppState {
    pub chat: Arc<Chat>,
    pub tokens: Arc<Tokens>,
    pub settings: Settings,
    pub limiters: AuthLimiters,
    pub mailer: Arc<mail::Mailer>,
    pub links: links::LinkIssuer,
    pub web: web::WebFiles,
}

pub(crate) type Shared = Arc<AppState>;

fn public_url(raw: &str) -> Result<String, ApiError> {
    let url = raw.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| ApiError::PublicUrl(raw.to_owned()))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || url.contains(['?', '#', ' ']) {
        return Err(ApiError::PublicUrl(raw.to_owned()));
    }
    Ok(url.to_owned())
}

/// Build the api: `/api/**`, `/dev/mailbox` (dev mailer only) and the web
/// client. Starts its background tasks (mail worker, mail health probe,
/// rate-limit pruning) on the current runtime; they stop when the router
/// is dropped. With SMTP configured, waits for one health probe (bounded by
/// the SMTP timeout) so the first requests already know whether mail works.
pub async fn router(
    chat: Arc<Chat>,
    tokens: Arc<Tokens>,
    config: ApiConfig,
) -> Result<Router, ApiError> {
    let public_url = public_url(&config.public_url)?;
    let mailer = Arc::new(mail::Mailer::new(
        config.smtp_url.as_deref(),
        &config.mail_from,
    )?);
    let cors = layers::cors(&config.allowed_origins)?;
    if config.smtp_url.is_some() {
        mailer.probe().await;
    } else {
        tracing::info!(
            "no SMTP server configured: sign-in links are logged and shown at /dev/mailbox"
        );
    }
    mailer.spawn_health_loop();

    let links = links::LinkIssuer::spawn(links::LinkDeps {
        store: chat.store().clone(),
        mailer: mailer.clone(),
        public_url: public_url.clone(),
        ttl: config.magic_link_ttl,
        allowed_domains: config
            .allowed_email_domains
            .iter()
            .map(|d| d.trim().trim_start_matches('@').to_lowercase())
            .filter(|d| !d.is_empty())
            .collect(),
    });
    let state = Arc::new(AppState {
        chat,
        tokens,
        settings: Settings {
            refresh_ttl: chrono::Duration::from_std(config.refresh_ttl)
                .unwrap_or(chrono::Duration::days(30)),
            trust_forwarded: config.trust_forwarded,
        },
        limiters: AuthLimiters::new(config.limits),
        mailer,
        links,
        web: web::WebFiles::new(config.web_dir),
    });
    spawn_pruning(Arc::downgrade(&state));

    let api = Router::new()
        .route(
            "/api/auth/send-magic-link",
            post(auth_routes::send_magic_link),
        )
        .route("/api/auth/verify-token", post(auth_routes::verify_token))
        .route("/api/auth/refresh", post(auth_routes::refresh))
        .route("/api/auth/me", get(auth_routes::me))
        .route("/api/auth/logout", post(auth_routes::logout))
        .route(
            "/api/users/profile",
            get(user_routes::get_profile).put(user_routes::put_profile),
        )
        .route(
            "/api/users/alias-suggestion",
            get(user_routes::alias_suggestion),
        )
        .route("/api/users/online-count", get(user_routes::online_count))
        .route("/api/chat/find-match", post(chat_routes::find_match))
        .route("/api/chat/cancel-search", post(chat_routes::cancel_search))
        .route(
            "/api/chat/current-session",
            get(chat_routes::current_session),
        )
        .route(
            "/api/chat/sessions/{id}/messages",
            get(chat_routes::messages),
        )
        .route("/api/chat/send-message", post(chat_routes::send_message))
        .route(
            "/api/chat/reveal-request",
            post(chat_routes::reveal_request),
        )
        .route(
            "/api/chat/reveal-respond",
            post(chat_routes::reveal_respond),
        )
        .route("/api/chat/end-session", post(chat_routes::end_session))
        .route("/api/chat/rate-session", post(chat_routes::rate_session))
        .route("/api/openapi.json", get(web::openapi))
        .route("/dev/mailbox", get(web::dev_mailbox))
        .fallback(web::fallback)
        .with_state(state);

    // Layers run outermost last-added: observe sees every response,
    // including CORS preflights and recovered panics.
    let mut app = api
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(layers::panic_response))
        .layer(axum::middleware::from_fn(layers::api_responses))
        .layer(cors);
    for (name, value) in layers::security_headers(public_url.starts_with("https://")) {
        app = app.layer(SetResponseHeaderLayer::overriding(name, value));
    }
    Ok(app.layer(axum::middleware::from_fn(layers::observe)))
}

/// Forget idle sign-in rate-limit keys for as long as the router lives, so
/// memory tracks recent clients, not all clients ever. (The chat's own keys
/// are pruned by the process that owns the chat, for every role.)
fn spawn_pruning(state: Weak<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else {
                return;
            };
            state.limiters.prune();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_is_checked_and_trimmed() {
        assert_eq!(
            public_url("https://io.example.org/").unwrap(),
            "https://io.example.org"
        );
        assert_eq!(
            public_url("http://localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        assert!(public_url("localhost:8080").is_err());
        assert!(public_url("https://").is_err());
        assert!(public_url("https://x.org/?a").is_err());
    }

    #[test]
    fn default_limits_are_the_design() {
        let l = AuthLimits::default();
        assert_eq!(l.magic_links_per_email_hour, 3);
        assert_eq!(l.magic_links_per_ip_hour, 20);
        assert_eq!(l.verify_per_ip_hour, 10);
    }
}
