//! `churn`: users cycle through a whole chat — connect, `find_match`, a few
//! messages each way, one side ends, both rate, disconnect — as fast as the
//! server lets them, until their cycles or the steady phase run out.
//!
//! The same two people never meet twice, so a finite pool runs out of new
//! partners: with U users of each gender a user has at most U partners, and
//! a greedy matcher strands some users earlier. `--cycles` bounds the work;
//! a user still waiting when the steady phase ends cancels its search (not an
//! error), and one waiting longer than `--match-timeout` stops cycling (an
//! error: `match_timeouts`).

use std::sync::Arc;

use io_protocol::{ClientEvent, Empty, RateData, ServerEvent, SessionRef};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::talk::{end_leftover, match_of, wait_for, withdraw, Talker};
use crate::cli::ChurnArgs;
use crate::stats::{Count, Lat};
use crate::sys;
use crate::users::User;
use crate::worker::{Ctx, Slice};
use crate::ws::{Conn, WsError};

pub async fn run(ctx: Arc<Ctx>, args: &ChurnArgs, users: Vec<User>, slice: Slice) {
    let per_gender = users
        .iter()
        .filter(|u| u.gender.as_deref() == Some("dude"))
        .count();
    ctx.note("partners_available_per_user", serde_json::json!(per_gender));
    if args.cycles as usize > per_gender / 2 {
        ctx.note(
            "warning",
            serde_json::json!(format!(
                "{} cycles with {per_gender} users per gender: the pool may run out of new partners",
                args.cycles
            )),
        );
    }
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
        let node = super::node_round_robin(j, nodes);
        tasks.spawn(async move { user_task(&ctx, &args, j, node, user).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// How a cycle ended.
enum Cycle {
    Done,
    /// The steady phase ended while searching: stop without error.
    NoMoreTime,
    /// Waited past the match timeout: the pool is likely exhausted for this user.
    Stranded,
}

async fn user_task(ctx: &Ctx, args: &ChurnArgs, j: usize, node: usize, user: User) {
    let tl = ctx.timeline;
    let mut sched = tl.connect_at(j, ctx.common.ramp_rate);
    let mut talker = Talker::new(j as u32, node as u8, 48);
    for cycle in 0..args.cycles {
        if sched >= tl.steady_end_us {
            break;
        }
        sys::sleep_until_us(sched).await;
        let Some((mut conn, connected)) = ctx.open(j, node, &user, sched).await else {
            break;
        };
        let outcome = one_cycle(ctx, args, &mut conn, &mut talker, &connected, cycle).await;
        ctx.rec.socket_closed();
        match outcome {
            Ok(Cycle::Done) => {
                conn.close().await;
                ctx.rec.incr(Count::Cycles);
                ctx.rec.record(
                    Lat::Cycle,
                    tl.phase(sched),
                    sys::mono_us().saturating_sub(sched),
                );
            }
            Ok(Cycle::NoMoreTime) => {
                conn.close().await;
                break;
            }
            Ok(Cycle::Stranded) => {
                conn.close().await;
                ctx.rec.error(
                    Count::MatchTimeouts,
                    "not matched in time (pool exhausted?)",
                );
                break;
            }
            Err(_) => break,
        }
        sched = sys::mono_us() + args.pause_ms * 1000;
    }
    talker.finish(ctx);
}

async fn one_cycle(
    ctx: &Ctx,
    args: &ChurnArgs,
    conn: &mut Conn,
    talker: &mut Talker,
    connected: &io_protocol::ConnectedData,
    cycle: u32,
) -> Result<Cycle, WsError> {
    let tl = ctx.timeline;
    let step_us = (args.step_timeout * 1e6) as u64;
    end_leftover(ctx, conn, talker, connected.session.as_ref()).await?;

    // Match.
    conn.send(&ClientEvent::FindMatch(Empty {}), Some("find"))
        .await?;
    ctx.rec.incr(Count::Searches);
    let asked = sys::mono_us();
    let match_deadline = asked + (args.match_timeout * 1e6) as u64;
    let mut found = wait_for(
        ctx,
        conn,
        talker,
        match_deadline.min(tl.steady_end_us),
        match_of,
    )
    .await?;
    if found.is_none() {
        found = withdraw(ctx, conn, talker).await?;
        if found.is_none() && match_deadline > tl.steady_end_us {
            // Out of time, not out of partners.
            return Ok(Cycle::NoMoreTime);
        }
    }
    let Some((session, partner_alias)) = found else {
        return Ok(Cycle::Stranded);
    };
    ctx.rec.record(
        Lat::MatchWait,
        tl.phase(asked),
        sys::mono_us().saturating_sub(asked),
    );
    ctx.rec.incr(Count::Matched);
    talker.joined_session(ctx, session);

    // Chat briefly: both send `messages`, each waits for its acks and the partner's.
    let want = args.messages as u64;
    let start = sys::mono_us();
    let mut next_send = 0u64;
    let deadline = start + step_us;
    let mut ended_early = false;
    while talker.session_acked < want || talker.session_received < want || next_send < want {
        let now = sys::mono_us();
        if now >= deadline {
            ctx.rec.error(
                Count::Timeouts,
                "chat step: acks or partner messages missing",
            );
            break;
        }
        let due = start + next_send * args.message_interval_ms * 1000;
        if next_send < want && due <= now {
            talker.queue(ctx, conn, session, due, now);
            conn.flush().await?;
            next_send += 1;
            continue;
        }
        let wake = if next_send < want {
            due.min(deadline)
        } else {
            deadline
        };
        let ev = wait_for(ctx, conn, talker, wake, |ev| match ev {
            ServerEvent::MessageReceived(_) => Some(false),
            ServerEvent::SessionEnded(e) if e.session_id == session => Some(true),
            _ => None,
        })
        .await?;
        if ev == Some(true) {
            // The partner gave up on this chat; nothing more will come.
            ended_early = true;
            ctx.rec.error(
                Count::Timeouts,
                "chat step: partner ended before the messages were through",
            );
            break;
        }
        if ev.is_none() && next_send >= want && sys::mono_us() >= deadline {
            ctx.rec.error(
                Count::Timeouts,
                "chat step: acks or partner messages missing",
            );
            break;
        }
    }

    // End: the side with the smaller alias ends; both wait for `session_ended`.
    let ending = connected.user.alias < partner_alias;
    let asked = sys::mono_us();
    if ending && !ended_early {
        conn.send(
            &ClientEvent::EndSession(SessionRef {
                session_id: session,
            }),
            Some("end"),
        )
        .await?;
    }
    let ended = if ended_early {
        Some(())
    } else {
        wait_for(ctx, conn, talker, asked + step_us, |ev| match ev {
            ServerEvent::SessionEnded(e) if e.session_id == session => Some(()),
            _ => None,
        })
        .await?
    };
    if ended.is_none() {
        ctx.rec.error(Count::Timeouts, "end step: no session_ended");
        return Ok(Cycle::Done);
    }
    if ending && !ended_early {
        ctx.rec.record(
            Lat::End,
            tl.phase(asked),
            sys::mono_us().saturating_sub(asked),
        );
    }

    // Rate.
    rate(
        ctx,
        conn,
        talker,
        session,
        (cycle as i64 + talker.me as i64) % 4 + 1,
        step_us,
    )
    .await?;
    Ok(Cycle::Done)
}

async fn rate(
    ctx: &Ctx,
    conn: &mut Conn,
    talker: &mut Talker,
    session: Uuid,
    rating: i64,
    step_us: u64,
) -> Result<(), WsError> {
    let asked = sys::mono_us();
    conn.send(
        &ClientEvent::RateSession(RateData {
            session_id: session,
            rating,
        }),
        Some("rate"),
    )
    .await?;
    let rated = wait_for(ctx, conn, talker, asked + step_us, |ev| match ev {
        ServerEvent::SessionRated(r) if r.session_id == session => Some(()),
        _ => None,
    })
    .await?;
    match rated {
        Some(()) => ctx.rec.record(
            Lat::Rate,
            ctx.timeline.phase(asked),
            sys::mono_us().saturating_sub(asked),
        ),
        None => ctx
            .rec
            .error(Count::Timeouts, "rate step: no session_rated"),
    }
    Ok(())
}
