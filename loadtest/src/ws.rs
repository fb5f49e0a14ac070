//! A lean WebSocket client (RFC 6455, text frames, no extensions) made for
//! holding many sockets on a shared CPU: one task per socket, no locks, no
//! split halves. Reading is cancel-safe — bytes land in the connection's
//! own buffer and frames are cut from it — so a task can `select!` between
//! the socket and its send schedule. Pings are answered without blocking.

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use io_protocol::{ClientEvent, ConnectedData, ServerEvent};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::{tcp_connect, Target};

#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("tcp: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("upgrade refused: {0}")]
    Upgrade(String),
    #[error("closed by server (code {0:?})")]
    Closed(Option<u16>),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("join refused: {0}")]
    Join(String),
}

impl WsError {
    /// A short, low-cardinality label for error counts.
    pub fn kind(&self) -> String {
        match self {
            WsError::Io(e) => format!("io {:?}", e.kind()),
            WsError::Timeout => "timeout".into(),
            WsError::Upgrade(s) => format!("upgrade {s}"),
            WsError::Closed(c) => format!("closed {c:?}"),
            WsError::Protocol(_) => "protocol".into(),
            WsError::Join(s) => format!("join {s}"),
        }
    }
}

/// A whole message from the server.
#[derive(Debug)]
pub enum Incoming {
    Text(Bytes),
    /// The server closed (code if it sent one) or the stream ended.
    Closed(Option<u16>),
}

const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 1 << 20;
/// Scratch space for one read; shared per thread so an idle socket holds no buffer.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// One client socket.
pub struct Conn {
    stream: TcpStream,
    /// Received bytes not yet cut into frames; empty (no allocation) when idle.
    inbuf: BytesMut,
    /// A fragmented message being assembled.
    partial: Option<BytesMut>,
    /// Control frames (pongs) that could not be written without waiting.
    pending: Vec<u8>,
    /// Frames to write, reused between sends.
    out: Vec<u8>,
    /// Masking key generator (xorshift); masks need not be secret here.
    mask_state: u32,
    closed: bool,
}

impl Conn {
    /// TCP connect (from `source`), upgrade at `target.ws_path`, send `join` and wait
    /// for `connected`.
    pub async fn open(
        target: &Target,
        source: Option<Ipv4Addr>,
        token: &str,
        seed: u32,
        timeout: Duration,
    ) -> Result<(Conn, ConnectedData), WsError> {
        tokio::time::timeout(timeout, Self::open_inner(target, source, token, seed))
            .await
            .map_err(|_| WsError::Timeout)?
    }

    async fn open_inner(
        target: &Target,
        source: Option<Ipv4Addr>,
        token: &str,
        seed: u32,
    ) -> Result<(Conn, ConnectedData), WsError> {
        let stream = tcp_connect(target.addr, source).await?;
        let mut conn = Conn {
            stream,
            inbuf: BytesMut::new(),
            partial: None,
            pending: Vec::new(),
            out: Vec::new(),
            mask_state: seed | 1,
            closed: false,
        };
        conn.handshake(target).await?;
        conn.send(
            &ClientEvent::Join(io_protocol::JoinData {
                token: token.to_string(),
            }),
            None,
        )
        .await?;
        loop {
            match conn.next().await? {
                Incoming::Text(t) => match serde_json::from_slice::<ServerEvent>(&t) {
                    Ok(ServerEvent::Connected(c)) => {
                        // A socket that stays idle keeps no buffers.
                        conn.out = Vec::new();
                        if conn.inbuf.is_empty() {
                            conn.inbuf = BytesMut::new();
                        }
                        return Ok((conn, c));
                    }
                    Ok(ServerEvent::Error(e)) => return Err(WsError::Join(e.code)),
                    Ok(_) => continue,
                    Err(e) => return Err(WsError::Protocol(format!("before connected: {e}"))),
                },
                Incoming::Closed(code) => {
                    return Err(WsError::Join(format!("closed {}", code.unwrap_or(0))))
                }
            }
        }
    }

    /// The upgrade request. No `Origin`: this is not a browser, and the gateway's
    /// origin allowlist applies to browsers only.
    async fn handshake(&mut self, target: &Target) -> Result<(), WsError> {
        let mut key = [0u8; 16];
        for chunk in key.chunks_mut(4) {
            chunk.copy_from_slice(&self.next_mask());
        }
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\
             User-Agent: io-loadtest\r\n\r\n",
            target.ws_path,
            target.host,
            STANDARD.encode(key),
        );
        self.stream.write_all(request.as_bytes()).await?;
        loop {
            if let Some(end) = find(&self.inbuf, b"\r\n\r\n") {
                let head = self.inbuf.split_to(end + 4);
                let status_line = head[..]
                    .split(|b: &u8| *b == b'\n')
                    .next()
                    .map(|l| String::from_utf8_lossy(l).trim().to_string())
                    .unwrap_or_default();
                let code = status_line.split_whitespace().nth(1).unwrap_or("?");
                if code != "101" {
                    return Err(WsError::Upgrade(code.to_string()));
                }
                // Whatever followed the head is already frame data.
                return Ok(());
            }
            if self.inbuf.len() > 16 * 1024 {
                return Err(WsError::Upgrade("oversized response head".into()));
            }
            if self.fill().await? == 0 {
                return Err(WsError::Upgrade("connection closed".into()));
            }
        }
    }

    /// Read once from the socket into `inbuf`; 0 means end of stream.
    async fn fill(&mut self) -> std::io::Result<usize> {
        let stream = &mut self.stream;
        let inbuf = &mut self.inbuf;
        // poll_read (not readable + try_read): a short read tells tokio the
        // socket is drained, which saves the extra read that would return EAGAIN.
        std::future::poll_fn(|cx| {
            SCRATCH_BUF.with(|cell| {
                let mut scratch = cell.borrow_mut();
                let mut buf = tokio::io::ReadBuf::new(&mut scratch[..]);
                match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                    std::task::Poll::Ready(Ok(())) => {
                        inbuf.extend_from_slice(buf.filled());
                        std::task::Poll::Ready(Ok(buf.filled().len()))
                    }
                    std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                    std::task::Poll::Pending => std::task::Poll::Pending,
                }
            })
        })
        .await
    }

    /// The next whole message. Cancel-safe: partial input stays buffered.
    pub async fn next(&mut self) -> Result<Incoming, WsError> {
        loop {
            if self.closed {
                return Ok(Incoming::Closed(None));
            }
            if let Some(msg) = self.parse_one()? {
                if self.inbuf.is_empty() && self.inbuf.capacity() > 64 * 1024 {
                    // A burst grew the buffer; do not keep it.
                    self.inbuf = BytesMut::new();
                }
                return Ok(msg);
            }
            match self.fill().await {
                Ok(0) => {
                    self.closed = true;
                    return Ok(Incoming::Closed(None));
                }
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Cut one frame from `inbuf`; `None` when more bytes are needed or the
    /// frame was a control frame that has been handled.
    fn parse_one(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            let buf = &self.inbuf[..];
            if buf.len() < 2 {
                return Ok(None);
            }
            let fin = buf[0] & 0x80 != 0;
            let opcode = buf[0] & 0x0F;
            let masked = buf[1] & 0x80 != 0;
            let (len, mut at) = match buf[1] & 0x7F {
                126 => {
                    if buf.len() < 4 {
                        return Ok(None);
                    }
                    (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
                }
                127 => {
                    if buf.len() < 10 {
                        return Ok(None);
                    }
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                n => (n as usize, 2),
            };
            if len > MAX_MESSAGE {
                return Err(WsError::Protocol(format!("frame of {len} bytes")));
            }
            let mask = if masked {
                if buf.len() < at + 4 {
                    return Ok(None);
                }
                let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
                at += 4;
                Some(m)
            } else {
                None
            };
            if buf.len() < at + len {
                self.inbuf.reserve(at + len - buf.len());
                return Ok(None);
            }
            self.inbuf.advance(at);
            let mut payload = self.inbuf.split_to(len);
            if let Some(m) = mask {
                apply_mask(&mut payload, m);
            }
            match opcode {
                OP_TEXT | OP_BINARY if fin && self.partial.is_none() => {
                    return Ok(Some(Incoming::Text(payload.freeze())))
                }
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(WsError::Protocol(
                            "new message inside a fragmented one".into(),
                        ));
                    }
                    self.partial = Some(payload);
                }
                OP_CONT => {
                    let Some(mut whole) = self.partial.take() else {
                        return Err(WsError::Protocol("continuation without a start".into()));
                    };
                    whole.extend_from_slice(&payload);
                    if whole.len() > MAX_MESSAGE {
                        return Err(WsError::Protocol("message too large".into()));
                    }
                    if fin {
                        return Ok(Some(Incoming::Text(whole.freeze())));
                    }
                    self.partial = Some(whole);
                }
                OP_PING => {
                    let mut frame = Vec::with_capacity(payload.len() + 8);
                    let m = self.next_mask();
                    encode_frame(&mut frame, OP_PONG, &payload, m);
                    self.pending.extend_from_slice(&frame);
                    self.try_flush_pending()?;
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    self.closed = true;
                    return Ok(Some(Incoming::Closed(code)));
                }
                other => return Err(WsError::Protocol(format!("opcode {other}"))),
            }
        }
    }

    /// Write queued control frames without waiting; what does not fit stays queued.
    fn try_flush_pending(&mut self) -> std::io::Result<()> {
        while !self.pending.is_empty() {
            match self.stream.try_write(&self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_le_bytes()
    }

    /// Queue one event (with an optional `ref`) for the next [`Conn::flush`].
    pub fn queue(&mut self, event: &ClientEvent, reference: Option<&str>) {
        #[derive(Serialize)]
        struct Frame<'a> {
            #[serde(flatten)]
            event: &'a ClientEvent,
            #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
            reference: Option<&'a str>,
        }
        let text = serde_json::to_vec(&Frame { event, reference })
            .expect("client events always serialize");
        let m = self.next_mask();
        encode_frame(&mut self.out, OP_TEXT, &text, m);
    }

    /// Write every queued frame in one go.
    pub async fn flush(&mut self) -> Result<(), WsError> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.stream.write_all(&pending).await?;
        }
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
            if self.out.capacity() > 16 * 1024 {
                self.out = Vec::new();
            }
        }
        Ok(())
    }

    /// Queue and write one event.
    pub async fn send(
        &mut self,
        event: &ClientEvent,
        reference: Option<&str>,
    ) -> Result<(), WsError> {
        self.queue(event, reference);
        self.flush().await
    }

    /// Send a close frame (1000) and shut the write side; does not wait for the answer.
    pub async fn close(mut self) {
        let m = self.next_mask();
        let mut frame = Vec::with_capacity(8);
        encode_frame(&mut frame, OP_CLOSE, &1000u16.to_be_bytes(), m);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.stream.write_all(&frame).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}

/// Append one masked client frame.
fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_length_and_mask() {
        let mut out = Vec::new();
        encode_frame(&mut out, OP_TEXT, b"hello", [1, 2, 3, 4]);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 5);
        let mut body = out[6..].to_vec();
        apply_mask(&mut body, [1, 2, 3, 4]);
        assert_eq!(body, b"hello");
        let mut big = Vec::new();
        encode_frame(&mut big, OP_TEXT, &[b'x'; 300], [0; 4]);
        assert_eq!(big[1], 0x80 | 126);
        assert_eq!(u16::from_be_bytes([big[2], big[3]]), 300);
    }

    /// A raw server frame (unmasked unless `mask` is given).
    fn server_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        if payload.len() < 126 {
            out.push(m | payload.len() as u8);
        } else {
            out.push(m | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        let mut body = payload.to_vec();
        if let Some(k) = mask {
            out.extend_from_slice(&k);
            apply_mask(&mut body, k);
        }
        out.extend_from_slice(&body);
        out
    }

    #[tokio::test]
    async fn reads_fragments_long_and_masked_frames_answers_pings_and_sees_close() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr);
        let (client, server) = tokio::join!(client, listener.accept());
        let mut server = server.unwrap().0;
        let mut conn = Conn {
            stream: client.unwrap(),
            inbuf: BytesMut::new(),
            partial: None,
            pending: Vec::new(),
            out: Vec::new(),
            mask_state: 7,
            closed: false,
        };
        let mut wire = Vec::new();
        wire.extend(server_frame(false, OP_TEXT, b"hel", None));
        wire.extend(server_frame(true, OP_PING, b"p", None));
        wire.extend(server_frame(true, OP_CONT, b"lo", None));
        wire.extend(server_frame(true, OP_TEXT, &[b'y'; 300], None));
        wire.extend(server_frame(true, OP_TEXT, b"masked", Some([9, 8, 7, 6])));
        wire.extend(server_frame(true, OP_CLOSE, &4008u16.to_be_bytes(), None));
        // Byte by byte: every partial read must be kept.
        let writer = tokio::spawn(async move {
            for b in wire {
                server.write_all(&[b]).await.unwrap();
            }
            let mut pong = [0u8; 7];
            server.read_exact(&mut pong).await.unwrap();
            server
        });
        let text = |m: Incoming| match m {
            Incoming::Text(t) => t,
            other => panic!("expected text, got {other:?}"),
        };
        assert_eq!(&text(conn.next().await.unwrap())[..], b"hello");
        assert_eq!(text(conn.next().await.unwrap()).len(), 300);
        assert_eq!(&text(conn.next().await.unwrap())[..], b"masked");
        assert!(matches!(
            conn.next().await.unwrap(),
            Incoming::Closed(Some(4008))
        ));
        assert!(matches!(conn.next().await.unwrap(), Incoming::Closed(None)));
        let _server = writer.await.unwrap();
    }

    #[test]
    fn server_events_parse_with_a_ref() {
        let text = br#"{"type":"searching","data":{},"ref":"r1"}"#;
        let ev: ServerEvent = serde_json::from_slice(text).unwrap();
        assert_eq!(ev.name(), "searching");
    }
}
