//! A keep-alive HTTP/1.1 connection (hyper) bound to a source address, for
//! the api scenario: one connection per simulated user.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::target::{tcp_connect, Target};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Hyper(#[from] hyper::Error),
    #[error("bad request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("timed out")]
    Timeout,
}

impl HttpError {
    pub fn kind(&self) -> String {
        match self {
            HttpError::Connect(e) => format!("connect {:?}", e.kind()),
            HttpError::Hyper(e) if e.is_closed() => "connection closed".into(),
            HttpError::Hyper(e) if e.is_incomplete_message() => "incomplete answer".into(),
            HttpError::Hyper(_) => "http error".into(),
            HttpError::Request(_) => "bad request".into(),
            HttpError::Timeout => "timeout".into(),
        }
    }
}

/// One user's connection; reopened after any failure.
pub struct HttpConn {
    target: Target,
    source: Option<Ipv4Addr>,
    sender: Option<SendRequest<Full<Bytes>>>,
    timeout: Duration,
}

/// An answer: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl HttpConn {
    pub fn new(target: Target, source: Option<Ipv4Addr>, timeout: Duration) -> HttpConn {
        HttpConn {
            target,
            source,
            sender: None,
            timeout,
        }
    }

    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, HttpError> {
        let usable = match &mut self.sender {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let stream = tcp_connect(self.target.addr, self.source)
                .await
                .map_err(HttpError::Connect)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                // The connection ends with an error when the server hangs up; the
                // next request notices and reconnects.
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("set above"))
    }

    /// Send one request (JSON body if given) and read the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, HttpError> {
        let timeout = self.timeout;
        let result =
            tokio::time::timeout(timeout, self.request_inner(method, path, token, body)).await;
        match result {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                Err(HttpError::Timeout)
            }
        }
    }

    async fn request_inner(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, HttpError> {
        let uri = format!("{}{}", self.target.http_base, path);
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", &self.target.host)
            .header("user-agent", "io-loadtest");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body)?;
        let sender = self.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }
}
