//! Sending magic links: over SMTP with lettre, or, without `IO_SMTP_URL`,
//! into the dev mailer, which logs each link and keeps the last few for the
//! `/dev/mailbox` page.
//!
//! SMTP URLs: `smtp://host:port` is plain SMTP (a local relay),
//! `smtp://host?tls=starttls` (or lettre's `tls=required` /
//! `tls=opportunistic`) upgrades with STARTTLS, `smtps://user:pass@host`
//! speaks TLS from the first byte. TLS is rustls with the webpki roots.
//!
//! The mailer's health is a flag: a probe (connect + `NOOP`) sets it at
//! start and then periodically, faster while it is down, and every send
//! updates it too. Sign-in asks the flag instead of the server, so a request
//! never waits on SMTP.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::Utc;
use io_domain::types::{Email, Timestamp};
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::ApiError;

/// How long one SMTP conversation may take before it counts as failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Probe interval while the server answers.
const PROBE_UP: Duration = Duration::from_secs(30);
/// Probe interval while it does not: recover quickly once it is back.
const PROBE_DOWN: Duration = Duration::from_secs(5);
/// How many links the dev mailbox keeps.
const DEV_MAILBOX_SIZE: usize = 50;

#[derive(Debug, thiserror::Error)]
pub(crate) enum MailError {
    /// Our `Email` type is more permissive than RFC 5322 mailboxes.
    #[error("the address cannot be mailed")]
    Address,
    #[error("the mail could not be built: {0}")]
    Build(String),
    #[error("smtp: {0}")]
    Smtp(String),
}

/// One link the dev mailer "sent".
#[derive(Debug, Clone)]
pub(crate) struct DevMail {
    pub at: Timestamp,
    pub to: String,
    pub link: String,
}

/// The dev mailer's memory: the latest links, newest last.
#[derive(Debug, Default)]
pub(crate) struct DevMailbox {
    entries: Mutex<VecDeque<DevMail>>,
}

impl DevMailbox {
    fn push(&self, mail: DevMail) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= DEV_MAILBOX_SIZE {
            entries.pop_front();
        }
        entries.push_back(mail);
    }

    /// Newest first.
    pub fn latest(&self) -> Vec<DevMail> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.iter().rev().cloned().collect()
    }
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Dev(DevMailbox),
}

pub(crate) struct Mailer {
    transport: Transport,
    from: Mailbox,
    /// Whether the SMTP server answered last time we tried; the dev mailer
    /// is always up.
    up: AtomicBool,
}

impl Mailer {
    /// A mailer for `smtp_url`, or the dev mailer for `None`.
    pub fn new(smtp_url: Option<&str>, mail_from: &str) -> Result<Self, ApiError> {
        let from: Mailbox = mail_from
            .parse()
            .map_err(|e| ApiError::MailFrom(mail_from.to_owned(), format!("{e}")))?;
        let transport = match smtp_url {
            None => Transport::Dev(DevMailbox::default()),
            Some(url) => {
                let url = normalise_smtp_url(url)?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
                    .map_err(|e| ApiError::SmtpUrl(redact(&e.to_string())))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                Transport::Smtp(transport)
            }
        };
        metrics::gauge!("io_mail_up").set(1.0);
        Ok(Mailer {
            transport,
            from,
            up: AtomicBool::new(true),
        })
    }

    pub fn dev_mailbox(&self) -> Option<&DevMailbox> {
        match &self.transport {
            Transport::Dev(b) => Some(b),
            Transport::Smtp(_) => None,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::Relaxed);
        if was != up {
            if up {
                tracing::info!("mail server reachable again");
            } else {
                tracing::warn!("mail server unreachable: sign-in links cannot be sent");
            }
        }
        metrics::gauge!("io_mail_up").set(if up { 1.0 } else { 0.0 });
    }

    /// Check that the SMTP server answers (connect, `NOOP`, quit) and
    /// record the result.
    pub async fn probe(&self) -> bool {
        let up = match &self.transport {
            Transport::Dev(_) => true,
            Transport::Smtp(t) => {
                let outcome = tokio::time::timeout(SMTP_TIMEOUT, t.test_connection()).await;
                match outcome {
                    Ok(Ok(true)) => true,
                    Ok(Ok(false)) => {
                        tracing::debug!("smtp probe: server did not answer NOOP");
                        false
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "smtp probe failed");
                        false
                    }
                    Err(_) => {
                        tracing::debug!("smtp probe timed out");
                        false
                    }
                }
            }
        };
        self.set_up(up);
        up
    }

    /// Probe periodically for as long as the mailer lives.
    pub fn spawn_health_loop(self: &Arc<Self>) {
        if self.dev_mailbox().is_some() {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let pause = match weak.upgrade() {
                    Some(m) if m.is_up() => PROBE_UP,
                    Some(_) => PROBE_DOWN,
                    None => return,
                };
                tokio::time::sleep(pause).await;
                match weak.upgrade() {
                    Some(m) => {
                        m.probe().await;
                    }
                    None => return,
                }
            }
        });
    }

    /// Send the sign-in mail carrying `link`.
    pub async fn send_magic_link(
        &self,
        to: &Email,
        link: &str,
        ttl: Duration,
    ) -> Result<(), MailError> {
        match &self.transport {
            Transport::Dev(mailbox) => {
                tracing::info!(to = %to, link = %link, "dev mailer: sign-in link");
                mailbox.push(DevMail {
                    at: Utc::now(),
                    to: to.to_string(),
                    link: link.to_owned(),
                });
                Ok(())
            }
            Transport::Smtp(transport) => {
                let message = self.compose(to, link, ttl)?;
                match transport.send(message).await {
                    Ok(_) => {
                        self.set_up(true);
                        metrics::counter!("io_mail_sent_total").increment(1);
                        Ok(())
                    }
                    Err(e) => {
                        metrics::counter!("io_mail_failures_total").increment(1);
                        // A permanent rejection (5xx) says the server works
                        // but refused this one mail; anything else means we
                        // could not talk to it.
                        if !e.is_permanent() {
                            self.set_up(false);
                        }
                        Err(MailError::Smtp(redact(&e.to_string())))
                    }
                }
            }
        }
    }

    fn compose(&self, to: &Email, link: &str, ttl: Duration) -> Result<Message, MailError> {
        let to: Mailbox = to.as_str().parse().map_err(|_| MailError::Address)?;
        let minutes = ttl.as_secs().div_ceil(60).max(1);
        let valid_for = if minutes == 1 {
            "1 minute".to_owned()
        } else {
            format!("{minutes} minutes")
        };
        let text = format!(
            "Hey there,\n\n\
             here is your link to sign in to IO:\n\n\
             {link}\n\n\
             It works once and for {valid_for}.\n\n\
             If you did not ask for it, ignore this mail: nobody can sign in \
             without the link.\n\n\
             See you in there,\nIO\n"
        );
        let html = format!(
            r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>Sign in to IO</title></head>
<body style="margin:0;padding:0;background:#0b0b14;color:#e8e8f0;font-family:-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#0b0b14;padding:32px 12px;">
<tr><td align="center">
<table role="presentation" cellpadding="0" cellspacing="0" style="max-width:480px;width:100%;background:#14142a;border-radius:16px;padding:32px;border:1px solid #2a2a4a;">
<tr><td style="font-size:32px;font-weight:800;letter-spacing:2px;color:#ff2bd6;text-shadow:0 0 12px #ff2bd6;">IO</td></tr>
<tr><td style="padding-top:16px;font-size:18px;line-height:1.5;">Your sign-in link is ready.</td></tr>
<tr><td style="padding:24px 0;"><a href="{href}" style="display:inline-block;background:#00f0ff;color:#0b0b14;font-weight:700;text-decoration:none;padding:14px 28px;border-radius:999px;">Sign in to IO</a></td></tr>
<tr><td style="font-size:14px;line-height:1.5;color:#a0a0c0;">It works once and for {valid_for}. If you did not ask for it, ignore this mail: nobody can sign in without the link.</td></tr>
<tr><td style="padding-top:16px;font-size:12px;line-height:1.5;color:#707090;word-break:break-all;">Button not working? Paste this into your browser:<br>{text_link}</td></tr>
</table>
</td></tr>
</table>
</body>
</html>
"#,
            href = escape_html(link),
            text_link = escape_html(link),
        );
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject("Your IO sign-in link")
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html),
                    ),
            )
            .map_err(|e| MailError::Build(e.to_string()))
    }
}

/// Accept `tls=starttls` as the spelling of lettre's `tls=required`.
fn normalise_smtp_url(url: &str) -> Result<String, ApiError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| ApiError::SmtpUrl("malformed query string".into()))?;
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| {
            if k == "tls" && v.eq_ignore_ascii_case("starttls") {
                (k, "required".to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    let query = serde_urlencoded::to_string(&pairs)
        .map_err(|_| ApiError::SmtpUrl("malformed query string".into()))?;
    Ok(format!("{base}?{query}"))
}

/// Lettre's errors can echo the URL; never log a password from it.
fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for word in message.split_inclusive(char::is_whitespace) {
        match (word.find("://"), word.find('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                out.push_str(&word[..scheme + 3]);
                out.push_str("***");
                out.push_str(&word[at..]);
            }
            _ => out.push_str(word),
        }
    }
    out
}

/// Escape text for HTML element content and quoted attributes.
pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starttls_is_an_alias_of_required() {
        assert_eq!(
            normalise_smtp_url("smtp://h:587?tls=starttls").unwrap(),
            "smtp://h:587?tls=required"
        );
        assert_eq!(
            normalise_smtp_url("smtp://127.0.0.1:2525").unwrap(),
            "smtp://127.0.0.1:2525"
        );
    }

    #[test]
    fn every_url_scheme_builds() {
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://user:pw@mail.example.org?tls=starttls",
            "smtp://mail.example.org?tls=opportunistic",
            "smtps://user:pw@mail.example.org",
        ] {
            assert!(
                Mailer::new(Some(url), "IO <no-reply@localhost>").is_ok(),
                "{url}"
            );
        }
        assert!(Mailer::new(Some("http://x"), "IO <no-reply@localhost>").is_err());
        assert!(Mailer::new(None, "not an address").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("bad url smtps://u:secret@host:465 here"),
            "bad url smtps://***@host:465 here"
        );
    }

    #[test]
    fn mail_is_multipart_with_the_link_in_both_parts() {
        let m = Mailer::new(None, "IO <no-reply@localhost>").unwrap();
        let to = Email::parse("ada@example.org").unwrap();
        let link = "http://localhost:8080/auth/verify#token=abc_DEF-123";
        let raw = String::from_utf8(
            m.compose(&to, link, Duration::from_secs(600))
                .unwrap()
                .formatted(),
        )
        .unwrap();
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("text/plain"));
        assert!(raw.contains("text/html"));
        assert!(raw.contains("10 minutes"));
        assert!(raw.contains("abc_DEF-123"));
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn dev_mailbox_keeps_the_latest() {
        let b = DevMailbox::default();
        for i in 0..60 {
            b.push(DevMail {
                at: Utc::now(),
                to: format!("u{i}@x.org"),
                link: String::new(),
            });
        }
        let latest = b.latest();
        assert_eq!(latest.len(), DEV_MAILBOX_SIZE);
        assert_eq!(latest[0].to, "u59@x.org");
    }
}
