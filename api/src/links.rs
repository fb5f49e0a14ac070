//! Issuing magic links off the request path.
//!
//! `send-magic-link` answers the same 202 for every well-formed address, so
//! everything that depends on *which* address it was (whether its domain may
//! sign in, storing the token, talking to SMTP) happens here, in a worker,
//! after the answer. The queue is bounded: when it is full the endpoint says
//! 503 to everyone alike.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use io_auth::{hash_token, random_token};
use io_domain::types::Email;
use io_domain::Store;
use tokio::sync::{mpsc, Semaphore};

use crate::error::HttpError;
use crate::mail::Mailer;

/// Requests waiting for the worker.
const QUEUE: usize = 1024;
/// Mails in flight at once.
const CONCURRENCY: usize = 8;

/// What issuing a link needs.
pub(crate) struct LinkDeps {
    pub store: Arc<dyn Store>,
    pub mailer: Arc<Mailer>,
    /// `IO_PUBLIC_URL` without a trailing slash.
    pub public_url: String,
    pub ttl: Duration,
    /// Lower-cased domains; empty lets everyone in.
    pub allowed_domains: Vec<String>,
}

impl LinkDeps {
    fn allows(&self, email: &Email) -> bool {
        self.allowed_domains.is_empty() || self.allowed_domains.iter().any(|d| d == email.domain())
    }

    /// The link in the mail: a page of the web client that POSTs the token,
    /// so a mail scanner following it does not spend it. The token travels
    /// in the fragment, which browsers never send to a server.
    pub fn link(&self, token: &str) -> String {
        format!("{}/auth/verify#token={token}", self.public_url)
    }
}

/// Handle to the worker; dropping every handle stops it.
pub(crate) struct LinkIssuer {
    tx: mpsc::Sender<Email>,
}

impl LinkIssuer {
    pub fn spawn(deps: LinkDeps) -> Self {
        let (tx, mut rx) = mpsc::channel::<Email>(QUEUE);
        let deps = Arc::new(deps);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(CONCURRENCY));
            while let Some(email) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let deps = deps.clone();
                tokio::spawn(async move {
                    issue(&deps, email).await;
                    drop(slot);
                });
            }
        });
        LinkIssuer { tx }
    }

    /// Queue a link for `email`; 503 only when the queue is full.
    pub fn enqueue(&self, email: Email) -> Result<(), HttpError> {
        self.tx.try_send(email).map_err(|_| {
            metrics::counter!("io_auth_magic_link_errors_total", "stage" => "queue").increment(1);
            HttpError::unavailable("sign-in is busy, try again in a minute")
        })
    }
}

async fn issue(deps: &LinkDeps, email: Email) {
    if !deps.allows(&email) {
        tracing::debug!(domain = %email.domain(), "sign-in link refused: domain not allowed");
        metrics::counter!("io_auth_magic_links_refused_total").increment(1);
        return;
    }
    let token = random_token();
    let now = Utc::now();
    let expires =
        now + chrono::Duration::from_std(deps.ttl).unwrap_or(chrono::Duration::minutes(10));
    if let Err(e) = deps
        .store
        .put_magic_link(&hash_token(&token), &email, expires)
        .await
    {
        metrics::counter!("io_auth_magic_link_errors_total", "stage" => "store").increment(1);
        tracing::warn!(error = %e, "sign-in link not stored");
        return;
    }
    let link = deps.link(&token);
    if let Err(e) = deps.mailer.send_magic_link(&email, &link, deps.ttl).await {
        metrics::counter!("io_auth_magic_link_errors_total", "stage" => "mail").increment(1);
        tracing::warn!(error = %e, domain = %email.domain(), "sign-in mail not sent");
    }
}
