//! One socket: the join handshake, then a reader (this task) that handles
//! frames in order and a writer task that drains the bounded send queue.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket, WebSocketError};
use governor::Quota;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use io_domain::model::ConnRef;
use io_domain::types::{SessionId, UserId};
use io_domain::{Actor, ChatError};
use io_protocol::*;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

use crate::registry::{Control, Handle, Out};
use crate::Inner;

pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_SHUTTING_DOWN: u16 = 1012;
pub const CLOSE_TOO_SLOW: u16 = 4008;
pub const CLOSE_NOT_AUTHENTICATED: u16 = 4401;
pub const CLOSE_JOIN_TIMEOUT: u16 = 4408;
pub const CLOSE_TOO_LARGE: u16 = 4413;
pub const CLOSE_RATE_LIMITED: u16 = 4429;
/// Frames that break RFC 6455 (reserved bits, bad fragmentation, an
/// unmasked client frame, an invalid close code).
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// A text message that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Never sent: marks a socket whose peer vanished mid-write.
const CLOSE_ABNORMAL: u16 = 1006;
/// Frames tolerated before `join` is whole (pings, pongs, its fragments).
const FRAMES_BEFORE_JOIN: u32 = 16;

type Io = TokioIo<Upgraded>;
type Reader = fastwebsockets::WebSocketRead<ReadHalf<Io>>;
type Writer = WriteHalf<Io>;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    chrono::Utc::now().timestamp_millis().max(0) as u64
}

/// Serve one upgraded socket until it closes.
pub async fn serve(inner: Arc<Inner>, ws: WebSocket<Io>) {
    let (r, mut w) = tokio::io::split(ws.into_inner());
    // The write half of fastwebsockets is not used: frames are encoded here
    // so several queued frames go out in one write.
    let (mut read, _) = fastwebsockets::after_handshake_split(r, tokio::io::sink(), Role::Server);
    read.set_auto_close(false);
    read.set_auto_pong(false);
    read.set_max_message_size(inner.config.max_message_bytes);

    // The one-off steps are boxed so their state does not stay in this
    // task's future for the socket's whole life.
    let (user, reference) = match Box::pin(join(&inner, &mut read, &mut w)).await {
        Ok(joined) => joined,
        Err(code) => {
            let reason = close_reason_label(code, true);
            metrics::counter!("io_gateway_disconnects_total", "reason" => reason).increment(1);
            let _ = write_close(&mut w, code).await;
            return;
        }
    };
    metrics::counter!("io_gateway_connects_total").increment(1);

    let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let control = Arc::new(Control::new(
        inner.stop.child_token(),
        inner.config.send_queue,
        now_ms(),
    ));
    let handle = Handle {
        id,
        user,
        control: control.clone(),
    };

    // `connected` is the first frame the client sees.
    let (active, told) = match Box::pin(connected_frame(&inner, user, reference.as_deref())).await {
        Ok((frame, active, told)) => {
            handle.push(Out::Text {
                payload: frame,
                at_ms: None,
            });
            (active, told)
        }
        Err(ChatError::Unauthorized) => {
            // A well-signed token for a user the database does not know (a
            // database restored without its signing key changing).
            metrics::counter!("io_gateway_disconnects_total", "reason" => "auth_failed")
                .increment(1);
            let _ = write_close(&mut w, CLOSE_NOT_AUTHENTICATED).await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot build `connected`");
            metrics::counter!("io_gateway_disconnects_total", "reason" => "error").increment(1);
            let _ = write_close(&mut w, 1011).await;
            return;
        }
    };
    let first_here = inner.registry.add(handle.clone());
    if first_here {
        Box::pin(crate::node::user_arrived(&inner, user, active)).await;
        if let Some((session, partner)) = active {
            // `connected` read the partner's presence before this node
            // held the user's: a `user_joined`/`user_left` in between
            // reached no one here. Now that it does, read it again.
            Box::pin(recheck_partner(&inner, &handle, session, partner, told)).await;
        }
    }

    let writer = tokio::spawn(write_loop(w, control.clone(), inner.config.write_timeout));
    let peer_code = read_loop(&inner, &mut read, &handle).await;
    control.close(peer_code.unwrap_or(CLOSE_NORMAL));
    let server_code = control.close_code();
    let reason = match peer_code {
        Some(code) if server_code == code => close_reason_label(code, false),
        _ => close_reason_label(server_code, true),
    };
    metrics::counter!("io_gateway_disconnects_total", "reason" => reason).increment(1);

    if inner.registry.remove(user, id) {
        let moved = server_code == CLOSE_SHUTTING_DOWN;
        Box::pin(crate::node::user_left(&inner, user, moved)).await;
    }
    drop(handle);
    let _ = writer.await;
    if peer_code.is_none() {
        Box::pin(linger(&mut read)).await;
    }
}

/// After a close the server started, read and drop what the peer still
/// sends until it answers or [`LINGER`] passes. Closing the socket with
/// unread data in it resets the connection, and a peer still writing (a
/// flood closed with 4429, say) could lose the close frame and its code.
async fn linger(read: &mut Reader) {
    use tokio::io::AsyncReadExt;
    let mut send = no_send;
    let _ = tokio::time::timeout(LINGER, async {
        loop {
            match read.read_frame(&mut send).await {
                Ok(frame) if frame.opcode == OpCode::Close => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // The frames no longer parse (often the very reason for the close):
        // drop raw bytes until the peer is done.
        let mut scratch = vec![0u8; 4096];
        while matches!(read.stream_mut().read(&mut scratch).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Wait for `join {token}` (and the `ref` it carries); any other outcome is
/// a close code.
async fn join(
    inner: &Inner,
    read: &mut Reader,
    w: &mut Writer,
) -> Result<(UserId, Option<String>), u16> {
    let text = tokio::time::timeout(
        inner.config.join_timeout,
        first_message(read, w, inner.config.max_message_bytes),
    )
    .await
    .map_err(|_| CLOSE_JOIN_TIMEOUT)??;
    let Ok((ClientEvent::Join(JoinData { token }), reference)) = decode(&text) else {
        return Err(CLOSE_NOT_AUTHENTICATED);
    };
    let user = inner
        .tokens
        .verify_access(&token)
        .map_err(|_| CLOSE_NOT_AUTHENTICATED)?;
    Ok((user, reference))
}

/// The first whole text message, its fragments put together; pings
/// before it are answered and pongs skipped ([`FRAMES_BEFORE_JOIN`] frames
/// in all). Anything else, a breach of RFC 6455 included, is not a `join`.
async fn first_message(read: &mut Reader, w: &mut Writer, max: usize) -> Result<String, u16> {
    let mut send = no_send;
    let mut message = Assembler::default();
    for _ in 0..FRAMES_BEFORE_JOIN {
        let frame = read.read_frame(&mut send).await.map_err(|e| match e {
            WebSocketError::FrameTooLarge => CLOSE_TOO_LARGE,
            _ => CLOSE_NOT_AUTHENTICATED,
        })?;
        match frame.opcode {
            OpCode::Ping => {
                let mut buf = Vec::new();
                encode_out(
                    &Out::Pong(Bytes::copy_from_slice(&frame.payload)),
                    &mut buf,
                    &mut Vec::new(),
                );
                w.write_all(&buf).await.map_err(|_| CLOSE_ABNORMAL)?;
            }
            OpCode::Pong => {}
            _ => match message.push(&frame, max) {
                Ok(Assembled::Text(bytes)) => {
                    return String::from_utf8(bytes).map_err(|_| CLOSE_NOT_AUTHENTICATED)
                }
                Ok(Assembled::Nothing) => {}
                Err(Broken::TooLarge) => return Err(CLOSE_TOO_LARGE),
                Ok(Assembled::Binary) | Err(Broken::Protocol) => {
                    return Err(CLOSE_NOT_AUTHENTICATED)
                }
            },
        }
    }
    Err(CLOSE_NOT_AUTHENTICATED)
}

/// The `connected` frame, and the user's active session with its partner
/// (to tell `user_joined`).
async fn connected_frame(
    inner: &Inner,
    user: UserId,
    reference: Option<&str>,
) -> Result<(Bytes, Option<(SessionId, UserId)>, Option<bool>), ChatError> {
    let arrival = inner.arrivals.load(user).await?;
    let mut online = inner.online.load(Ordering::Relaxed);
    if online == 0 {
        // A node that has not counted yet asks once; the sockets joining
        // meanwhile use that answer.
        online = inner.chat.bus().online_count().await.unwrap_or(0);
        let _ = inner
            .online
            .compare_exchange(0, online, Ordering::Relaxed, Ordering::Relaxed);
    }
    let told = arrival.session.as_ref().and_then(|s| s.partner_online);
    let event = ServerEvent::Connected(ConnectedData {
        user: io_domain::Chat::user_view(&arrival.user),
        node: inner.config.node.to_string(),
        // Counting this socket even if presence has not caught up yet.
        online_count: online.max(1),
        session: arrival.session,
    });
    Ok((Bytes::from(encode(&event, reference)), arrival.active, told))
}

/// Tell the socket `user_joined` / `user_left` if the partner's presence
/// is no longer what `connected` said (`told`).
async fn recheck_partner(
    inner: &Inner,
    me: &Handle,
    session: SessionId,
    partner: UserId,
    told: Option<bool>,
) {
    let Some(online) = inner.chat.presence_of(&[partner]).await[0] else {
        return;
    };
    if told == Some(online) {
        return;
    }
    let event = io_domain::Chat::presence_event(session, online);
    me.push(Out::Text {
        payload: Bytes::from(encode(&event, None)),
        at_ms: None,
    });
}

async fn no_send(_: Frame<'_>) -> Result<(), std::convert::Infallible> {
    Ok(())
}

/// Read and handle frames until the socket ends. Returns the peer's close
/// code if the peer closed.
async fn read_loop(inner: &Inner, read: &mut Reader, me: &Handle) -> Option<u16> {
    let quota = Quota::per_second(
        NonZeroU32::new(inner.config.events_per_second).unwrap_or(NonZeroU32::MIN),
    )
    .allow_burst(NonZeroU32::new(inner.config.event_burst).unwrap_or(NonZeroU32::MIN));
    let bucket = io_domain::limits::direct(quota);
    let mut strikes = 0u32;
    let mut messages = Assembler::default();
    let actor = Actor {
        user: me.user,
        conn: Some(ConnRef {
            node: inner.config.node.clone(),
            conn: me.id,
        }),
    };
    let mut send = no_send;
    loop {
        // Cancelling `read_frame` loses its partial state, which is fine:
        // the socket is ending whenever `closed` fires.
        let frame = tokio::select! {
            _ = me.control.closed.cancelled() => return None,
            f = read.read_frame(&mut send) => f,
        };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                if let Some(code) = error_close_code(&e) {
                    me.control.close(code);
                }
                return None;
            }
        };
        me.control.last_seen_ms.store(now_ms(), Ordering::Relaxed);
        metrics::counter!("io_gateway_frames_in_total").increment(1);
        metrics::counter!("io_gateway_bytes_in_total").increment(frame.payload.len() as u64);
        if frame.opcode == OpCode::Close {
            return Some(peer_close_code(&frame.payload));
        }
        // Every other frame spends from the budget, pings and fragments
        // too: a flood of any kind ends in 4429, not in a full send queue.
        let within = bucket.check().is_ok();
        if !within {
            strikes += 1;
            metrics::counter!("io_rate_limited_total", "limit" => "socket").increment(1);
            if strikes >= inner.config.abuse_strikes {
                me.control.close(CLOSE_RATE_LIMITED);
                return None;
            }
        }
        let text = match frame.opcode {
            OpCode::Ping => {
                if within {
                    me.push(Out::Pong(Bytes::copy_from_slice(&frame.payload)));
                }
                continue;
            }
            OpCode::Pong => continue,
            _ => match messages.push(&frame, inner.config.max_message_bytes) {
                Ok(Assembled::Text(text)) => text,
                Ok(Assembled::Binary) => {
                    if within {
                        send_error(
                            me,
                            None,
                            "VALIDATION_ERROR",
                            "binary frames are not supported",
                            None,
                        );
                    }
                    continue;
                }
                Ok(Assembled::Nothing) => continue,
                Err(Broken::TooLarge) => {
                    me.control.close(CLOSE_TOO_LARGE);
                    return None;
                }
                Err(Broken::Protocol) => {
                    me.control.close(CLOSE_PROTOCOL_ERROR);
                    return None;
                }
            },
        };
        let Ok(text) = String::from_utf8(text) else {
            me.control.close(CLOSE_INVALID_DATA);
            return None;
        };
        if !within {
            // Parsed once, only to answer with the frame's `ref`.
            let reference = match decode(&text) {
                Ok((_, reference)) => reference,
                Err(e) => e.reference,
            };
            send_error(me, reference.as_deref(), "RATE_LIMITED", "slow down", None);
            continue;
        }
        // Boxed: the handling future is large and exists only while a frame
        // is being handled, so an idle socket's task stays small.
        Box::pin(handle_text(inner, me, &actor, &text)).await;
    }
}

/// Puts data messages together from their frames (RFC 6455 5.4); control
/// frames, which may come between fragments, are the caller's.
#[derive(Default)]
struct Assembler {
    partial: Option<Partial>,
}

/// A message that is arriving in fragments.
enum Partial {
    Text(Vec<u8>),
    /// Bytes so far: a binary message is refused, its rest dropped, but held
    /// to the size limit too.
    Binary(usize),
}

/// What one data frame made of its message.
enum Assembled {
    /// A whole text message.
    Text(Vec<u8>),
    /// The first frame of a binary message.
    Binary,
    /// A fragment of a message not whole yet, or the rest of a binary one.
    Nothing,
}

/// Why a data frame belongs to no message.
enum Broken {
    /// The message grew past the size limit.
    TooLarge,
    /// A continuation of nothing, or a new message inside a fragmented one.
    Protocol,
}

impl Assembler {
    fn push(&mut self, frame: &Frame<'_>, max: usize) -> Result<Assembled, Broken> {
        let payload = &frame.payload[..];
        match (frame.opcode, self.partial.as_mut()) {
            (OpCode::Text, None) if frame.fin => Ok(Assembled::Text(payload.to_vec())),
            (OpCode::Text, None) => {
                self.partial = Some(Partial::Text(payload.to_vec()));
                Ok(Assembled::Nothing)
            }
            (OpCode::Binary, None) => {
                if !frame.fin {
                    self.partial = Some(Partial::Binary(payload.len()));
                }
                Ok(Assembled::Binary)
            }
            (OpCode::Continuation, Some(partial)) => {
                let size = match partial {
                    Partial::Text(buf) => {
                        buf.extend_from_slice(payload);
                        buf.len()
                    }
                    Partial::Binary(size) => {
                        *size += payload.len();
                        *size
                    }
                };
                if size > max {
                    return Err(Broken::TooLarge);
                }
                match (frame.fin, self.partial.take()) {
                    (true, Some(Partial::Text(buf))) => Ok(Assembled::Text(buf)),
                    (true, _) => Ok(Assembled::Nothing),
                    (false, partial) => {
                        self.partial = partial;
                        Ok(Assembled::Nothing)
                    }
                }
            }
            _ => Err(Broken::Protocol),
        }
    }
}

/// The close code for a frame the reader refused; `None` when the peer is
/// simply gone.
fn error_close_code(e: &WebSocketError) -> Option<u16> {
    match e {
        WebSocketError::FrameTooLarge => Some(CLOSE_TOO_LARGE),
        WebSocketError::InvalidUTF8 => Some(CLOSE_INVALID_DATA),
        WebSocketError::IoError(_)
        | WebSocketError::UnexpectedEOF
        | WebSocketError::ConnectionClosed => None,
        _ => Some(CLOSE_PROTOCOL_ERROR),
    }
}

/// The code of the peer's close frame, as the close is answered: 1000 when
/// it has none, 1002 when it is malformed or not one a peer may send, 1007
/// when its reason is not UTF-8.
fn peer_close_code(payload: &[u8]) -> u16 {
    match payload {
        [] => CLOSE_NORMAL,
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                CLOSE_PROTOCOL_ERROR
            } else if std::str::from_utf8(reason).is_err() {
                CLOSE_INVALID_DATA
            } else {
                code
            }
        }
        [_] => CLOSE_PROTOCOL_ERROR,
    }
}

/// Parse and act on one text frame; answer the socket directly.
async fn handle_text(inner: &Inner, me: &Handle, actor: &Actor, text: &str) {
    let (event, reference) = match decode(text) {
        Ok(ok) => ok,
        Err(e) => {
            metrics::counter!("io_gateway_events_total", "event" => "invalid").increment(1);
            send_error(
                me,
                e.reference.as_deref(),
                "VALIDATION_ERROR",
                &e.message,
                e.field.as_deref(),
            );
            return;
        }
    };
    let name = event.name();
    metrics::counter!("io_gateway_events_total", "event" => name).increment(1);
    let started = Instant::now();
    let chat = &inner.chat;
    let sid = |id: uuid::Uuid| SessionId(id);
    let answer: Result<Option<ServerEvent>, ChatError> = match event {
        ClientEvent::Join(_) => Err(ChatError::Conflict("already joined")),
        ClientEvent::FindMatch(_) => chat
            .find_match(actor)
            .await
            .map(|()| Some(ServerEvent::Searching(Empty {}))),
        ClientEvent::CancelSearch(_) => chat
            .cancel_search(actor)
            .await
            .map(|()| Some(ServerEvent::SearchCancelled(Empty {}))),
        ClientEvent::SendMessage(m) => chat
            .send_message(actor, sid(m.session_id), &m.content, &m.client_msg_id)
            .await
            .map(|message| Some(ServerEvent::MessageReceived(MessageData { message }))),
        ClientEvent::TypingStart(s) => chat
            .typing(actor, sid(s.session_id), true)
            .await
            .map(|()| None),
        ClientEvent::TypingStop(s) => chat
            .typing(actor, sid(s.session_id), false)
            .await
            .map(|()| None),
        // Asking while the partner's own request waited says yes to it: the
        // answer is then the reveal itself.
        ClientEvent::RevealRequest(s) => {
            chat.reveal_request(actor, sid(s.session_id))
                .await
                .map(|v| {
                    (v.status == io_domain::model::RevealStatus::Accepted.as_str())
                        .then(|| reveal_response(v))
                })
        }
        ClientEvent::RevealRespond(r) => chat
            .reveal_respond(actor, sid(r.session_id), r.accept)
            .await
            .map(|v| Some(reveal_response(v))),
        ClientEvent::EndSession(s) => chat.end_session(actor, sid(s.session_id)).await.map(|_| {
            Some(ServerEvent::SessionEnded(SessionEndedData {
                session_id: s.session_id,
                ended_by: "me".into(),
            }))
        }),
        ClientEvent::RateSession(r) => chat
            .rate_session(actor, sid(r.session_id), r.rating)
            .await
            .map(|v| {
                Some(ServerEvent::SessionRated(SessionRatedData {
                    session_id: r.session_id,
                    rating: v.rating,
                }))
            }),
    };
    metrics::histogram!("io_gateway_event_duration_seconds", "event" => name)
        .record(started.elapsed().as_secs_f64());
    match answer {
        Ok(Some(event)) => me.push(Out::Text {
            payload: Bytes::from(encode(&event, reference.as_deref())),
            at_ms: None,
        }),
        Ok(None) => {}
        Err(e) => {
            if matches!(e, ChatError::Unavailable(_)) {
                tracing::warn!(error = %e, event = name, "event failed");
            }
            send_error(
                me,
                reference.as_deref(),
                e.code(),
                &e.public_message(),
                e.field(),
            );
        }
    }
}

/// The `reveal_response` a reveal's answer carries to the socket that gave it.
fn reveal_response(v: RevealRequestView) -> ServerEvent {
    ServerEvent::RevealResponse(RevealResponseData {
        session_id: v.session_id,
        status: v.status,
        identities: v.identities,
    })
}

fn send_error(
    me: &Handle,
    reference: Option<&str>,
    code: &str,
    message: &str,
    field: Option<&str>,
) {
    let event = ServerEvent::Error(ErrorBody {
        code: code.into(),
        message: message.into(),
        field: field.map(str::to_owned),
    });
    me.push(Out::Text {
        payload: Bytes::from(encode(&event, reference)),
        at_ms: None,
    });
}

/// How long the close frame may take to go out.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a socket the server closed keeps reading for the peer's answer.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Drain the send queue to the socket, several frames per write, until the
/// socket is closed; then send what is still queued (unless the peer is the
/// reason: a slow consumer) and the close frame. A write that waits longer
/// than `timeout` for the peer drops the socket: a write is never abandoned
/// half-way otherwise (a torn frame would corrupt the stream, and the close
/// frame must follow whole frames).
async fn write_loop(mut w: Writer, control: Arc<Control>, timeout: std::time::Duration) {
    loop {
        let batch = control.take_all();
        if batch.is_empty() {
            tokio::select! {
                biased;
                _ = control.closed.cancelled() => break,
                _ = control.wait_ready() => continue,
            }
        }
        if let Err(code) = write_batch(&mut w, batch, timeout).await {
            // A peer that takes nothing for the whole timeout is as slow
            // as one whose queue overflows; no close frame can get through.
            control.close(code);
            return;
        }
    }
    let code = match control.close_code() {
        0 => CLOSE_NORMAL,
        code => code,
    };
    if code == CLOSE_ABNORMAL {
        return;
    }
    if code != CLOSE_TOO_SLOW {
        // Answers already queued (an error before a 4429, say) go out first.
        let rest = control.take_all();
        if !rest.is_empty() && write_batch(&mut w, rest, timeout).await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, write_close(&mut w, code)).await;
}

/// Write a batch of frames in as few writes as possible. The error is the
/// close code: [`CLOSE_TOO_SLOW`] when a write waited `timeout` for the
/// peer, [`CLOSE_ABNORMAL`] when the peer is gone.
async fn write_batch(
    w: &mut Writer,
    batch: std::collections::VecDeque<Out>,
    timeout: std::time::Duration,
) -> Result<(), u16> {
    let frames = batch.len() as u64;
    metrics::histogram!("io_gateway_send_queue_depth").record(frames as f64);
    let mut buf = Vec::new();
    let mut published = Vec::new();
    let mut bytes = 0u64;
    let mut batch = batch.into_iter().peekable();
    while batch.peek().is_some() {
        buf.clear();
        while buf.len() < 64 * 1024 {
            match batch.next() {
                Some(out) => encode_out(&out, &mut buf, &mut published),
                None => break,
            }
        }
        match tokio::time::timeout(timeout, w.write_all(&buf)).await {
            Ok(Ok(())) => bytes += buf.len() as u64,
            Ok(Err(_)) => return Err(CLOSE_ABNORMAL),
            Err(_) => return Err(CLOSE_TOO_SLOW),
        }
    }
    metrics::counter!("io_gateway_frames_out_total").increment(frames);
    metrics::counter!("io_gateway_bytes_out_total").increment(bytes);
    if !published.is_empty() {
        let now = chrono::Utc::now().timestamp_millis();
        let histogram = metrics::histogram!("io_gateway_delivery_seconds");
        for at in published {
            histogram.record((now - at).max(0) as f64 / 1000.0);
        }
    }
    Ok(())
}

fn encode_out(out: &Out, buf: &mut Vec<u8>, published: &mut Vec<i64>) {
    let mut head = [0u8; 10];
    let (opcode, payload): (OpCode, &[u8]) = match out {
        Out::Text { payload, at_ms } => {
            if let Some(at) = at_ms {
                published.push(*at);
            }
            (OpCode::Text, payload)
        }
        Out::Ping => (OpCode::Ping, &[]),
        Out::Pong(p) => (OpCode::Pong, p),
    };
    let mut frame = Frame::new(true, opcode, None, Payload::Borrowed(payload));
    let n = frame.fmt_head(&mut head);
    buf.extend_from_slice(&head[..n]);
    buf.extend_from_slice(payload);
}

async fn write_close(w: &mut Writer, code: u16) -> std::io::Result<()> {
    let reason: &[u8] = match code {
        CLOSE_NOT_AUTHENTICATED => b"not authenticated",
        CLOSE_JOIN_TIMEOUT => b"join timeout",
        CLOSE_TOO_LARGE => b"message too large",
        CLOSE_RATE_LIMITED => b"rate limited",
        CLOSE_TOO_SLOW => b"too slow to read",
        CLOSE_SHUTTING_DOWN => b"node shutting down",
        CLOSE_GOING_AWAY => b"going away",
        CLOSE_PROTOCOL_ERROR => b"protocol error",
        CLOSE_INVALID_DATA => b"invalid UTF-8",
        _ => b"",
    };
    let mut frame = Frame::close(code, reason);
    let mut buf = Vec::with_capacity(16 + reason.len());
    let mut head = [0u8; 10];
    let n = frame.fmt_head(&mut head);
    buf.extend_from_slice(&head[..n]);
    buf.extend_from_slice(&frame.payload);
    w.write_all(&buf).await?;
    w.flush().await?;
    w.shutdown().await
}

/// The `reason` label of `io_gateway_disconnects_total`.
fn close_reason_label(code: u16, by_server: bool) -> &'static str {
    match code {
        CLOSE_NORMAL if !by_server => "normal",
        CLOSE_NORMAL => "normal",
        CLOSE_GOING_AWAY if by_server => "ping_timeout",
        CLOSE_GOING_AWAY => "going_away",
        CLOSE_SHUTTING_DOWN => "shutdown",
        CLOSE_TOO_SLOW => "slow_consumer",
        CLOSE_NOT_AUTHENTICATED => "auth_failed",
        CLOSE_JOIN_TIMEOUT => "join_timeout",
        CLOSE_TOO_LARGE => "too_large",
        CLOSE_RATE_LIMITED => "rate_limited",
        CLOSE_PROTOCOL_ERROR | CLOSE_INVALID_DATA => "protocol_error",
        _ => "error",
    }
}
