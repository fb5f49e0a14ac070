//! What chat and churn share: sending scheduled messages that carry their
//! own schedule, and reading `message_received` into acks, deliveries and
//! duplicates. A message's content starts with its scheduled time on the
//! machine-wide monotonic clock, and its `clientMsgId` is
//! `<sender index>.<message number>`, so any worker process can compute its
//! latency and attribute it without shared state.

use std::collections::BTreeMap;

use io_protocol::{ClientEvent, SendMessageData, ServerEvent, SessionRef};
use uuid::Uuid;

use crate::ledger::RangeSet;
use crate::stats::{Count, Lat};
use crate::sys;
use crate::worker::Ctx;
use crate::ws::{Conn, Incoming, WsError};

/// One user's side of the books.
pub struct Talker {
    /// This user's global index.
    pub me: u32,
    /// The node this user is connected to.
    pub node: u8,
    /// Next message number (never reused, across sessions too).
    pub next_k: u64,
    pub sent: RangeSet,
    pub acked: RangeSet,
    /// Partner (sender index) → message numbers received from them.
    pub received: BTreeMap<u32, RangeSet>,
    /// Own copies and partner copies received in the current session.
    pub session_acked: u64,
    pub session_received: u64,
    /// Padding that brings each message to the requested size.
    pad: String,
}

/// Something the caller should look at (everything else was handled).
pub enum Event {
    Other(Box<ServerEvent>),
    /// A frame that was accounted for and needs nothing more.
    Skip,
    /// The socket is gone.
    Closed,
}

impl Talker {
    pub fn new(me: u32, node: u8, message_size: usize) -> Talker {
        Talker {
            me,
            node,
            next_k: 0,
            sent: RangeSet::default(),
            acked: RangeSet::default(),
            received: BTreeMap::new(),
            session_acked: 0,
            session_received: 0,
            pad: "x".repeat(message_size.saturating_sub(24).max(1)),
        }
    }

    /// Queue the next message of `session` scheduled at `sched` (shared clock µs).
    pub fn queue(&mut self, ctx: &Ctx, conn: &mut Conn, session: Uuid, sched: u64, now: u64) {
        let k = self.next_k;
        self.next_k += 1;
        let id = format!("{}.{k}", self.me);
        let event = ClientEvent::SendMessage(SendMessageData {
            session_id: session,
            content: format!("{sched} {}", self.pad),
            client_msg_id: id.clone(),
        });
        conn.queue(&event, Some(&id));
        self.sent.insert(k);
        ctx.rec.incr(Count::Sent);
        let lag = now.saturating_sub(sched);
        ctx.rec.record(Lat::SendLag, ctx.timeline.phase(sched), lag);
        if lag > ctx.late_us {
            ctx.rec.incr(Count::LateSends);
        }
    }

    /// Read one message from the socket and account for it.
    pub async fn read(&mut self, ctx: &Ctx, conn: &mut Conn) -> Event {
        match conn.next().await {
            Ok(Incoming::Text(t)) => match serde_json::from_slice::<ServerEvent>(&t) {
                Ok(ServerEvent::MessageReceived(d)) => {
                    self.on_message(
                        ctx,
                        &d.message.client_msg_id,
                        &d.message.content,
                        d.message.is_me,
                    );
                    Event::Other(Box::new(ServerEvent::MessageReceived(d)))
                }
                Ok(ServerEvent::Error(e)) => {
                    ctx.rec
                        .error(Count::ServerErrors, format!("{}: {}", e.code, e.message));
                    Event::Other(Box::new(ServerEvent::Error(e)))
                }
                Ok(ev) => Event::Other(Box::new(ev)),
                Err(e) => {
                    ctx.rec
                        .error(Count::ProtocolErrors, format!("unparsable event: {e}"));
                    Event::Skip
                }
            },
            Ok(Incoming::Closed(code)) => {
                ctx.rec.error(
                    Count::Disconnects,
                    format!("closed by server, code {code:?}"),
                );
                Event::Closed
            }
            Err(e) => {
                ctx.rec.error(Count::Disconnects, e.kind());
                Event::Closed
            }
        }
    }

    fn on_message(&mut self, ctx: &Ctx, client_msg_id: &str, content: &str, is_me: bool) {
        let now = sys::mono_us();
        let parsed = client_msg_id
            .split_once('.')
            .and_then(|(s, k)| Some((s.parse::<u32>().ok()?, k.parse::<u64>().ok()?)));
        let sched = content
            .split(' ')
            .next()
            .and_then(|s| s.parse::<u64>().ok());
        let (Some((sender, k)), Some(sched)) = (parsed, sched) else {
            ctx.rec
                .error(Count::ProtocolErrors, "a message the harness did not send");
            return;
        };
        let phase = ctx.timeline.phase(sched);
        if is_me {
            if sender != self.me {
                ctx.rec
                    .error(Count::ProtocolErrors, "own copy of someone else's message");
            } else if self.acked.insert(k) {
                ctx.rec.incr(Count::Acked);
                ctx.rec.record(Lat::Ack, phase, now.saturating_sub(sched));
                self.session_acked += 1;
            } else {
                ctx.rec.incr(Count::Duplicated);
            }
        } else if self.received.entry(sender).or_default().insert(k) {
            ctx.rec.incr(Count::Delivered);
            ctx.rec
                .record(Lat::Delivery, phase, now.saturating_sub(sched));
            self.session_received += 1;
        } else {
            ctx.rec.incr(Count::Duplicated);
        }
    }

    /// Hand this user's books to the worker's ledger.
    pub fn finish(self, ctx: &Ctx) {
        let mut ledger = ctx.ledger.lock().unwrap_or_else(|e| e.into_inner());
        if !self.sent.is_empty() {
            ledger.sent.entry(self.me).or_default().union(&self.sent);
        }
        if !self.acked.is_empty() {
            ledger.acked.entry(self.me).or_default().union(&self.acked);
        }
        for (sender, got) in &self.received {
            ledger.delivered.entry(*sender).or_default().union(got);
        }
    }

    pub fn joined_session(&mut self, ctx: &Ctx, session: Uuid) {
        self.session_acked = 0;
        self.session_received = 0;
        ctx.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions
            .entry(session.to_string())
            .or_default()
            .push(self.node);
    }
}

/// Read until `pick` accepts an event or the shared clock passes `deadline_us`.
/// `Ok(None)`: deadline. `Err`: the socket closed.
pub async fn wait_for<T>(
    ctx: &Ctx,
    conn: &mut Conn,
    talker: &mut Talker,
    deadline_us: u64,
    mut pick: impl FnMut(&ServerEvent) -> Option<T>,
) -> Result<Option<T>, WsError> {
    let deadline = sys::instant_at(deadline_us);
    loop {
        let ev = tokio::select! {
            ev = talker.read(ctx, conn) => ev,
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
        };
        match ev {
            Event::Closed => return Err(WsError::Closed(None)),
            Event::Skip => {}
            Event::Other(ev) => {
                if let Some(t) = pick(&ev) {
                    return Ok(Some(t));
                }
            }
        }
    }
}

/// If `connected` says the user is still in an active session (a previous run
/// left it), end it so `find_match` is allowed.
pub async fn end_leftover(
    ctx: &Ctx,
    conn: &mut Conn,
    talker: &mut Talker,
    session: Option<&io_protocol::SessionView>,
) -> Result<(), WsError> {
    let Some(s) = session.filter(|s| s.status == "active") else {
        return Ok(());
    };
    let id = s.id;
    conn.send(
        &ClientEvent::EndSession(SessionRef { session_id: id }),
        Some("cleanup"),
    )
    .await?;
    let deadline = sys::mono_us() + 5_000_000;
    wait_for(ctx, conn, talker, deadline, |ev| match ev {
        ServerEvent::SessionEnded(e) if e.session_id == id => Some(()),
        ServerEvent::Error(_) => Some(()),
        _ => None,
    })
    .await?;
    ctx.note("ended_leftover_sessions", serde_json::Value::Bool(true));
    Ok(())
}

/// `(session, partner alias)` from a `match_found`.
pub fn match_of(ev: &ServerEvent) -> Option<(Uuid, String)> {
    match ev {
        ServerEvent::MatchFound(m) => Some((m.session.id, m.user.alias.clone())),
        _ => None,
    }
}

/// Stop searching. A pairing already under way still arrives (the partner
/// would otherwise send into the void), so it is returned if it comes.
pub async fn withdraw(
    ctx: &Ctx,
    conn: &mut Conn,
    talker: &mut Talker,
) -> Result<Option<(Uuid, String)>, WsError> {
    conn.send(
        &ClientEvent::CancelSearch(io_protocol::Empty {}),
        Some("cancel"),
    )
    .await?;
    let answer = wait_for(
        ctx,
        conn,
        talker,
        sys::mono_us() + 2_000_000,
        |ev| match ev {
            ServerEvent::SearchCancelled(_) => Some(None),
            other => match_of(other).map(Some),
        },
    )
    .await?;
    match answer {
        Some(Some(m)) => Ok(Some(m)),
        _ => wait_for(ctx, conn, talker, sys::mono_us() + 500_000, match_of).await,
    }
}
