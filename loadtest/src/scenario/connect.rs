//! `connect`: open N authenticated sockets at the ramp rate and hold them,
//! idle, through the steady phase. Measures connect time and whether the
//! server keeps them (pings are answered; any close before the end counts).

use std::sync::Arc;

use tokio::task::JoinSet;

use crate::cli::ConnectArgs;
use crate::stats::Count;
use crate::sys;
use crate::users::User;
use crate::worker::{Ctx, Slice};
use crate::ws::Incoming;

pub async fn run(ctx: Arc<Ctx>, args: &ConnectArgs, users: Vec<User>, slice: Slice) {
    let sockets = args.sockets.unwrap_or(users.len());
    let users = Arc::new(users);
    let mut tasks = JoinSet::new();
    for j in (0..sockets).filter(|j| slice.owns(*j)) {
        let ctx = ctx.clone();
        let users = users.clone();
        tasks.spawn(async move { hold(&ctx, j, &users[j % users.len()]).await });
    }
    while tasks.join_next().await.is_some() {}
}

async fn hold(ctx: &Ctx, j: usize, user: &User) {
    let tl = ctx.timeline;
    let sched = tl.connect_at(j, ctx.common.ramp_rate);
    sys::sleep_until_us(sched).await;
    let node = super::node_round_robin(j, ctx.targets.len());
    let Some((mut conn, _)) = ctx.open(j, node, user, sched).await else {
        return;
    };
    let end = sys::instant_at(tl.steady_end_us);
    loop {
        tokio::select! {
            msg = conn.next() => match msg {
                Ok(Incoming::Text(_)) => continue,
                Ok(Incoming::Closed(code)) => {
                    ctx.rec.error(Count::Disconnects, format!("closed by server, code {code:?}"));
                    ctx.rec.socket_closed();
                    return;
                }
                Err(e) => {
                    ctx.rec.error(Count::Disconnects, e.kind());
                    ctx.rec.socket_closed();
                    return;
                }
            },
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    ctx.rec.socket_closed();
    conn.close().await;
}
