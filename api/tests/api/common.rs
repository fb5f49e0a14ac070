//! Start the real thing: the api router on 127.0.0.1:0 (served with connect
//! info, like the binary does) over a fresh store and an in-process bus, and
//! a real SMTP server (`tests/smtp_sink.py`, aiosmtpd) that writes every
//! mail it receives into a directory the tests read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use io_api::{ApiConfig, AuthLimits};
use io_auth::Tokens;
use io_domain::limits::ChatLimits;
use io_domain::Chat;
use io_store::testing::TestDb;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

/// A unique directory under the temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("io-api-{tag}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The aiosmtpd sink, killed on drop.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
}

impl SmtpSink {
    /// Start the sink on `port` (0 = any free port).
    pub fn start(port: u16) -> Result<Self> {
        use std::io::{BufRead, BufReader};
        let dir = TempDir::new("mail");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&dir.0)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run python3 for the SMTP sink (is Python 3 installed?)")?;
        let stdout = child.stdout.take().context("sink stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(port) = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
        else {
            let status = child.wait()?;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            if status.code() == Some(3) {
                bail!("the SMTP sink needs aiosmtpd: run `pip install aiosmtpd` ({err})");
            }
            bail!("the SMTP sink did not start ({status}): {err}");
        };
        Ok(SmtpSink { child, port, dir })
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail received so far, oldest first.
    pub fn mails(&self) -> Vec<Value> {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir.0)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|s| serde_json::from_str(&s).ok())
            .collect()
    }

    /// Mails to `to`.
    pub fn mails_to(&self, to: &str) -> Vec<Value> {
        self.mails()
            .into_iter()
            .filter(|m| {
                m["to"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|t| t == to))
            })
            .collect()
    }

    /// Wait (bounded) for the `n`-th mail to `to`.
    pub async fn wait_for_mail(&self, to: &str, n: usize) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let mails = self.mails_to(to);
            if mails.len() >= n {
                return Ok(mails[n - 1].clone());
            }
            if Instant::now() > deadline {
                bail!("no mail #{n} to {to} within 15 s (got {})", mails.len());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sign-in token in a magic link inside `text`.
pub fn token_in(text: &str) -> Option<String> {
    let start = text.find("#token=")? + "#token=".len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (!token.is_empty()).then_some(token)
}

pub enum Mail {
    /// A fresh SMTP sink.
    Sink,
    /// An SMTP URL nothing answers on.
    Down(u16),
    /// No SMTP: the dev mailer.
    Dev,
}

pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Options {
    pub backend: Backend,
    pub mail: Mail,
    pub limits: AuthLimits,
    pub allowed_domains: Vec<String>,
    pub magic_link_ttl: Duration,
    pub web_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::Sqlite,
            mail: Mail::Sink,
            // Generous: tests sign in many times from 127.0.0.1.
            limits: AuthLimits {
                magic_links_per_email_hour: 1000,
                magic_links_per_ip_hour: 1000,
                verify_per_ip_hour: 1000,
            },
            allowed_domains: Vec::new(),
            magic_link_ttl: Duration::from_secs(600),
            web_dir: None,
        }
    }
}

pub const ORIGIN: &str = "http://localhost:5173";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub smtp: Option<SmtpSink>,
    pub db: TestDb,
    /// The in-process bus the app runs on (its match queue, say).
    pub bus: Arc<dyn io_domain::Bus>,
    _web: Option<TempDir>,
    _stop: oneshot::Sender<()>,
}

impl TestApp {
    pub async fn spawn() -> Result<Self> {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Result<Self> {
        let db = match options.backend {
            Backend::Sqlite => io_store::testing::sqlite().await,
            Backend::Postgres => io_store::testing::postgres().await,
        };
        let bus: Arc<dyn io_domain::Bus> = Arc::new(io_bus::MemoryBus::new());
        let chat = Chat::new(
            db.store.clone(),
            bus.clone(),
            ChatLimits::default(),
            Duration::from_millis(2),
        );
        let tokens = Arc::new(Tokens::new(SECRET, &[], Tokens::DEFAULT_ACCESS_TTL));
        let (smtp, smtp_url) = match options.mail {
            Mail::Sink => {
                let sink = SmtpSink::start(0)?;
                let url = sink.url();
                (Some(sink), Some(url))
            }
            Mail::Down(port) => (None, Some(format!("smtp://127.0.0.1:{port}"))),
            Mail::Dev => (None, None),
        };
        let (web_dir, web_tmp) = match options.web_dir {
            Some(d) => (d, None),
            None => {
                let t = TempDir::new("web");
                (t.0.clone(), Some(t))
            }
        };
        let config = ApiConfig {
            public_url: "http://localhost:8080".into(),
            allowed_email_domains: options.allowed_domains,
            allowed_origins: vec![ORIGIN.into()],
            smtp_url,
            mail_from: "IO <no-reply@io.test>".into(),
            web_dir,
            magic_link_ttl: options.magic_link_ttl,
            refresh_ttl: Duration::from_secs(3600),
            limits: options.limits,
            trust_forwarded: false,
        };
        let router = io_api::router(chat, tokens, config).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(TestApp {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            smtp,
            db,
            bus,
            _web: web_tmp,
            _stop: stop,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Response> {
        Ok(self.http.post(self.url(path)).json(&body).send().await?)
    }

    pub async fn post_auth(&self, path: &str, token: &str, body: Value) -> Result<Response> {
        Ok(self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?)
    }

    pub async fn get_auth(&self, path: &str, token: &str) -> Result<Response> {
        Ok(self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await?)
    }

    pub async fn put_auth(&self, path: &str, token: &str, body: Value) -> Result<Response> {
        Ok(self
            .http
            .put(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?)
    }

    pub fn sink(&self) -> &SmtpSink {
        self.smtp.as_ref().expect("this app has an SMTP sink")
    }

    /// Ask for a link and wait for its mail; returns the token in it.
    pub async fn request_link(&self, email: &str) -> Result<String> {
        let before = self.sink().mails_to(email).len();
        let r = self
            .post("/api/auth/send-magic-link", json!({ "email": email }))
            .await?;
        if r.status() != StatusCode::ACCEPTED {
            bail!("send-magic-link: {} {}", r.status(), r.text().await?);
        }
        let mail = self.sink().wait_for_mail(email, before + 1).await?;
        let text = mail["text"].as_str().context("text part")?;
        token_in(text).context("no token in the mail")
    }

    /// Full sign-in; returns the verify-token answer.
    pub async fn sign_in(&self, email: &str) -> Result<Value> {
        let token = self.request_link(email).await?;
        let r = self
            .post("/api/auth/verify-token", json!({ "token": token }))
            .await?;
        if r.status() != StatusCode::OK {
            bail!("verify-token: {} {}", r.status(), r.text().await?);
        }
        Ok(r.json().await?)
    }

    /// Sign in and return the access token.
    pub async fn access_token(&self, email: &str) -> Result<String> {
        let body = self.sign_in(email).await?;
        Ok(body["accessToken"]
            .as_str()
            .context("accessToken")?
            .to_owned())
    }
}

/// Assert the JSON error shape and return `(code, field)`.
pub async fn error_of(r: Response) -> Result<(StatusCode, String, Option<String>)> {
    let status = r.status();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = r.text().await?;
    if !ctype.starts_with("application/json") {
        bail!("error {status} is not JSON ({ctype}): {text}");
    }
    let v: Value = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
    let code = v["error"]["code"]
        .as_str()
        .with_context(|| format!("no error.code in {text}"))?
        .to_owned();
    if v["error"]["message"].as_str().is_none() {
        bail!("no error.message in {text}");
    }
    Ok((
        status,
        code,
        v["error"]["field"].as_str().map(str::to_owned),
    ))
}
