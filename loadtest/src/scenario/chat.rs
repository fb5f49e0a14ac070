//! `chat`: every user connects (ramp), sends `find_match`, and once paired
//! sends messages on a fixed schedule until the steady phase ends (open
//! model: a late send does not push the next one back, and latency counts
//! from the scheduled time). Everyone stays connected through the drain so
//! late deliveries still count; what is acked but never delivered is lost.

use std::sync::Arc;

use io_protocol::{ClientEvent, Empty, ServerEvent, SessionRef};
use tokio::task::JoinSet;

use super::talk::{end_leftover, match_of, wait_for, withdraw, Event, Talker};
use crate::cli::ChatArgs;
use crate::stats::{Count, Lat};
use crate::sys;
use crate::users::User;
use crate::worker::{Ctx, Slice};

/// Which node user `j` connects to.
pub fn node_for(j: usize, user: &User, nodes: usize, separate: bool) -> usize {
    if !separate || nodes < 2 {
        return super::node_round_robin(j, nodes);
    }
    // Dudes on even-numbered URLs, girls on odd ones: every dude–girl pair spans two nodes.
    let side = match user.gender.as_deref() {
        Some("dude") => 0,
        Some("girl") => 1,
        _ => j % 2,
    };
    let side_nodes: Vec<usize> = (side..nodes).step_by(2).collect();
    side_nodes[(j / 2) % side_nodes.len()]
}

pub async fn run(ctx: Arc<Ctx>, args: &ChatArgs, users: Vec<User>, slice: Slice) {
    let per_user = match args.rate {
        Some(total) => total / users.len().max(1) as f64,
        None => args.rate_per_user,
    };
    let interval_us = (1_000_000.0 / per_user.max(1e-6)) as u64;
    ctx.note("rate_per_user", serde_json::json!(per_user));
    let args = Arc::new(args.clone());
    let nodes = ctx.targets.len();
    let mut tasks = JoinSet::new();
    for (j, user) in users
        .into_iter()
        .enumerate()
        .filter(|(j, _)| slice.owns(*j))
    {
        let ctx = ctx.clone();
        let args = args.clone();
        let node = node_for(j, &user, nodes, args.pairs_on_separate_nodes);
        tasks.spawn(async move { user_task(&ctx, &args, j, node, user, interval_us).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn user_task(
    ctx: &Ctx,
    args: &ChatArgs,
    j: usize,
    node: usize,
    user: User,
    interval_us: u64,
) {
    let tl = ctx.timeline;
    let sched = tl.connect_at(j, ctx.common.ramp_rate);
    sys::sleep_until_us(sched).await;
    let Some((mut conn, connected)) = ctx.open(j, node, &user, sched).await else {
        return;
    };
    let mut talker = Talker::new(j as u32, node as u8, args.message_size);
    let my_alias = connected.user.alias.clone();

    let outcome = async {
        end_leftover(ctx, &mut conn, &mut talker, connected.session.as_ref()).await?;
        conn.send(&ClientEvent::FindMatch(Empty {}), Some("find"))
            .await?;
        ctx.rec.incr(Count::Searches);
        let asked = sys::mono_us();
        let deadline = (asked + (args.match_timeout * 1e6) as u64).min(tl.steady_end_us);
        let mut found = wait_for(ctx, &mut conn, &mut talker, deadline, match_of).await?;
        if found.is_none() {
            found = withdraw(ctx, &mut conn, &mut talker).await?;
        }
        let Some((session, partner_alias)) = found else {
            ctx.rec.error(Count::MatchTimeouts, "not matched in time");
            return Ok(None);
        };
        let now = sys::mono_us();
        ctx.rec.record(Lat::MatchWait, tl.phase(asked), now - asked);
        ctx.rec.incr(Count::Matched);
        talker.joined_session(ctx, session);
        chat(ctx, &mut conn, &mut talker, session, interval_us, j).await?;
        Ok::<_, crate::ws::WsError>(Some((session, partner_alias)))
    }
    .await;

    match outcome {
        Ok(Some((session, partner_alias))) => {
            // One side ends the session so the users are free for the next run.
            if !args.keep_sessions && my_alias < partner_alias {
                let _ = conn
                    .send(
                        &ClientEvent::EndSession(SessionRef {
                            session_id: session,
                        }),
                        Some("end"),
                    )
                    .await;
            }
            ctx.rec.socket_closed();
            conn.close().await;
        }
        Ok(None) => {
            ctx.rec.socket_closed();
            conn.close().await;
        }
        Err(_) => ctx.rec.socket_closed(),
    }
    talker.finish(ctx);
}

/// Send on schedule until the steady phase ends; read until the drain ends.
async fn chat(
    ctx: &Ctx,
    conn: &mut crate::ws::Conn,
    talker: &mut Talker,
    session: uuid::Uuid,
    interval_us: u64,
    j: usize,
) -> Result<(), crate::ws::WsError> {
    let tl = ctx.timeline;
    let mut next = sys::mono_us() + (super::spread(j) * interval_us as f64) as u64;
    let mut sending = true;
    // One timer, moved only when the next wake-up changes (not re-armed per frame read).
    let mut armed = 0u64;
    let timer = tokio::time::sleep_until(sys::instant_at(next));
    tokio::pin!(timer);
    loop {
        sending = sending && next < tl.steady_end_us;
        let wake_us = if sending { next } else { tl.drain_end_us };
        if wake_us != armed {
            timer.as_mut().reset(sys::instant_at(wake_us));
            armed = wake_us;
        }
        let ev = tokio::select! {
            ev = talker.read(ctx, conn) => ev,
            _ = &mut timer => {
                if !sending {
                    return Ok(());
                }
                let now = sys::mono_us();
                while next <= now && next < tl.steady_end_us {
                    talker.queue(ctx, conn, session, next, now);
                    next += interval_us;
                }
                conn.flush().await?;
                continue;
            }
        };
        match ev {
            Event::Closed => return Err(crate::ws::WsError::Closed(None)),
            Event::Other(ev) if matches!(&*ev, ServerEvent::SessionEnded(e) if e.session_id == session) =>
            {
                // At the end of the drain the partner ends the session; its
                // clock may simply be a hair ahead of this task's timer.
                if sys::mono_us() + 100_000 >= tl.drain_end_us {
                    return Ok(());
                }
                ctx.rec.error(
                    Count::ProtocolErrors,
                    "session ended by the partner mid-run",
                );
                sending = false;
            }
            _ => {}
        }
    }
}
