//! The public listener of a role: HTTP/1.1 and HTTP/2 (with WebSocket
//! upgrades) over plain TCP or, with IO_TLS_CERT/IO_TLS_KEY, rustls.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A rustls server configuration from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
    };
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("bad certificate PEM {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate found in {}", cert.display());
    }
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| anyhow::anyhow!("bad key PEM {}: {e}", key.display()))?
        .ok_or_else(|| anyhow::anyhow!("no private key found in {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    // WebSockets need HTTP/1.1; browsers open them on their own connection.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `app` on `listener` until `shutdown`, then stop accepting and give
/// in-flight requests `grace` to finish. Upgraded sockets are not waited
/// for here: their owner (the gateway) drains them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let acceptor = tls.map(TlsAcceptor::from);
    let (mut accepted, stop_accepting) = match accept_thread(listener) {
        Ok(ok) => ok,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the accept thread");
            return;
        }
    };
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = accepted.recv() => match next {
                Some(ok) => ok,
                None => break,
            },
        };
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register an accepted socket");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            app.clone().oneshot(req)
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        match &acceptor {
            None => {
                tokio::spawn(async move {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    let tls = match handshake.await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
        }
    }
    stop_accepting.store(true, Ordering::Relaxed);
    drop(accepted);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time");
    }
}

/// Accepted sockets waiting for the runtime; beyond this the thread waits
/// and the kernel's accept queue holds the rest.
const ACCEPT_QUEUE: usize = 16_384;

type Accepted = tokio::sync::mpsc::Receiver<(std::net::TcpStream, SocketAddr)>;

/// Accept on a thread of its own. Under a connection storm the runtime's
/// workers are busy with thousands of handshakes, and an accept loop that
/// waits its turn among them lets the kernel's accept queue (capped by
/// `net.core.somaxconn`) overflow: the overflowing clients' handshakes are
/// dropped and retried a second or more later. A thread the kernel
/// schedules on its own keeps the queue drained; the runtime picks the
/// sockets up from a channel. The thread stops within 100 ms of the flag.
fn accept_thread(listener: TcpListener) -> std::io::Result<(Accepted, Arc<AtomicBool>)> {
    let listener = listener.into_std()?;
    listener.set_nonblocking(true)?;
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("io-accept".into())
        .spawn(move || {
            // The flag, or the receiver gone (`serve` dropped unfinished).
            while !stopped.load(Ordering::Relaxed) && !tx.is_closed() {
                let mut ready = libc::pollfd {
                    fd: listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one pollfd that lives across the call.
                if unsafe { libc::poll(&mut ready, 1, 100) } <= 0 {
                    continue;
                }
                loop {
                    match listener.accept() {
                        Ok((stream, peer)) => {
                            if stream.set_nonblocking(true).is_err() {
                                continue;
                            }
                            if tx.blocking_send((stream, peer)).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if out_of_resources(&e) => {
                            // Back off instead of spinning until fds free up.
                            tracing::warn!(error = %e, "accept failed");
                            std::thread::sleep(Duration::from_millis(20));
                            break;
                        }
                        // A connection that died in the queue (ECONNABORTED
                        // and the like), or EINTR: take the next one.
                        Err(e) => tracing::debug!(error = %e, "accept failed"),
                    }
                }
            }
        })?;
    Ok((rx, stop))
}

/// Accept errors that last until something is freed, as opposed to one
/// connection's own failure.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
