//! Election and fencing: one leader at a time, a standby takes over when
//! the leader dies, a deposed leader cannot write, a clean shutdown hands
//! the lease over at once, and what a dead leader left half done (a
//! committed session still in the queue) is finished by its successor.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use common::flaky::{FlakyBus, Renewals};
use common::*;
use io_domain::ports::StoreError;
use io_domain::types::{Gender, Seeking, UserId};
use io_matcher::MatcherConfig;

fn config(holder: &str) -> MatcherConfig {
    MatcherConfig {
        holder: holder.into(),
        lease_ttl: Duration::from_secs(2),
        renew_every: Duration::from_millis(500),
        offline_grace: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standby_takes_over_when_the_leader_is_killed() -> Result<()> {
    let world = World::redis_postgres().await;
    let a = Running::start(world.chat.clone(), config("matcher-a"));
    eventually(Duration::from_secs(5), "a leads", || async {
        Ok(a.matcher.is_leader())
    })
    .await?;
    let b = Running::start(world.another_process().await, config("matcher-b"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(!b.matcher.is_leader(), "two leaders at once");

    let first = world.couples(100).await?;
    world.search_all(&first).await?;
    eventually(Duration::from_secs(30), "the first batch is paired", || {
        world.all_in_sessions(&first)
    })
    .await?;
    ensure!(
        !b.matcher.is_leader(),
        "the standby took over from a live leader"
    );

    // The second batch arrives as the leader dies: it may be mid-round,
    // or never see them at all.
    let second = world.couples(150).await?;
    world.search_all(&second).await?;
    let killed = tokio::time::Instant::now();
    a.kill().await;

    let ttl = config("").lease_ttl;
    let takeover_limit = ttl + ttl / 3 + Duration::from_secs(2);
    eventually(takeover_limit, "the standby leads", || async {
        Ok(b.matcher.is_leader())
    })
    .await?;
    eprintln!("standby led {:?} after the kill", killed.elapsed());

    eventually(
        Duration::from_secs(30),
        "the second batch is paired",
        || world.all_in_sessions(&second),
    )
    .await?;
    let everyone: Vec<TestUser> = first.iter().chain(&second).copied().collect();
    let partners = check_sessions(&world, &everyone, &Default::default()).await?;
    ensure!(partners.len() == everyone.len());
    ensure!(
        partners.values().all(|p| p.len() == 1),
        "someone has two sessions"
    );
    b.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deposed_leader_is_refused_by_the_store() -> Result<()> {
    let world = World::redis_postgres().await;
    // A leader takes the lease, then pauses (SIGSTOP) past its TTL.
    let paused = world
        .bus
        .acquire_lease("paused-leader", Duration::from_millis(300))
        .await?
        .context("the lease is free")?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let heir = Running::start(world.another_process().await, config("heir"));
    eventually(Duration::from_secs(5), "the heir leads", || async {
        Ok(heir.matcher.is_leader())
    })
    .await?;
    let pair = world.couples(1).await?;
    world.search_all(&pair).await?;
    eventually(Duration::from_secs(10), "the heir pairs", || {
        world.all_in_sessions(&pair)
    })
    .await?;

    // The paused leader wakes up and commits the round it had planned.
    let [x, y] = <[TestUser; 2]>::try_from(world.couples(1).await?)
        .ok()
        .context("two")?;
    let now = chrono::Utc::now();
    let batch = world
        .store()
        .create_sessions(paused, &[(x.id, y.id)], now)
        .await;
    ensure!(
        batch == Err(StoreError::StaleLeader),
        "batch write: {batch:?}"
    );
    let single = world.store().create_session(paused, x.id, y.id, now).await;
    ensure!(
        single == Err(StoreError::StaleLeader),
        "single write: {single:?}"
    );
    ensure!(world.active_session(x.id).await?.is_none());
    ensure!(world.store().past_partners(&[x.id, y.id]).await?.is_empty());

    // Nor can it keep or drop the heir's lease.
    ensure!(
        !world
            .bus
            .renew_lease("paused-leader", paused, config("").lease_ttl)
            .await?
    );
    world.bus.release_lease("paused-leader", paused).await?;
    tokio::time::sleep(config("").renew_every * 2).await;
    ensure!(
        heir.matcher.is_leader(),
        "the heir lost the lease to a deposed leader"
    );
    heir.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_stops_pairing_as_soon_as_its_lease_is_gone() -> Result<()> {
    let world = World::redis_postgres().await;
    let keys = world.redis.as_ref().context("a Redis world")?;
    let m = Running::start(world.chat.clone(), config("victim"));
    eventually(Duration::from_secs(5), "it leads", || async {
        Ok(m.matcher.is_leader())
    })
    .await?;

    // Its lease vanishes (a Redis failover lost the key) and another
    // matcher takes it and presents its token.
    let client = redis::Client::open(keys.url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("DEL")
        .arg(format!("{}:{{lease}}:holder", keys.prefix))
        .query_async(&mut conn)
        .await?;
    let intruder = world
        .bus
        .acquire_lease("intruder", Duration::from_secs(30))
        .await?
        .context("the lease is free after the delete")?;
    world
        .store()
        .create_sessions(intruder, &[], chrono::Utc::now())
        .await?;
    eventually(
        config("").renew_every + Duration::from_secs(1),
        "the old leader steps down",
        || async { Ok(!m.matcher.is_leader()) },
    )
    .await?;

    // Nobody pairs while the intruder (which does not pair) holds it.
    let pair = world.couples(1).await?;
    world.search_all(&pair).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        world.active_session(pair[0].id).await?.is_none(),
        "a deposed leader paired"
    );

    // Once it is released, the matcher leads again and pairs them.
    world.bus.release_lease("intruder", intruder).await?;
    eventually(Duration::from_secs(10), "it pairs again", || {
        world.all_in_sessions(&pair)
    })
    .await?;
    ensure!(m.matcher.is_leader());
    m.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_the_lease_at_once() -> Result<()> {
    let world = World::memory_sqlite().await;
    let m = Running::start(world.chat.clone(), config("leaving"));
    eventually(Duration::from_secs(5), "it leads", || async {
        Ok(m.matcher.is_leader())
    })
    .await?;
    let matcher = m.matcher.clone();
    m.stop().await;
    ensure!(!matcher.is_leader());
    // Well within the TTL it would otherwise hold the lease for.
    let next = world
        .bus
        .acquire_lease("next", Duration::from_secs(1))
        .await?;
    ensure!(next.is_some(), "the lease was not released");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_left_in_the_queue_by_a_dead_leader_is_announced_and_cleared() -> Result<()> {
    let world = World::memory_sqlite().await;
    let users = world.couples(2).await?;
    world.search_all(&users).await?;
    let (x, y) = (users[0], users[2]);

    // A leader commits a session and dies before `queue_leave` and
    // `match_found`.
    let token = world
        .bus
        .acquire_lease("dead", Duration::from_millis(200))
        .await?
        .context("the lease is free")?;
    let committed = world
        .store()
        .create_sessions(token, &[(x.id, y.id)], chrono::Utc::now())
        .await?
        .pop()
        .context("one result")??;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let heir = Running::start(world.chat.clone(), quick_config("heir"));
    eventually(
        Duration::from_secs(10),
        "everyone paired, the queue empty",
        || world.all_in_sessions(&users),
    )
    .await?;
    ensure!(world.active_session(x.id).await? == Some(committed.clone()));
    let told: Vec<UserId> = world
        .match_found_events()
        .await?
        .into_iter()
        .filter(|(_, s)| *s == committed.id.to_string())
        .map(|(to, _)| to)
        .collect();
    ensure!(
        told.contains(&x.id) && told.contains(&y.id),
        "told only {told:?}"
    );
    check_sessions(&world, &users, &Default::default()).await?;
    heir.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_users_are_skipped_then_dropped_after_the_grace() -> Result<()> {
    let world = World::memory_sqlite().await;
    let dude = world.user(Gender::Dude, Seeking::Girl).await?;
    let gone = world.user(Gender::Girl, Seeking::Dude).await?;
    world.online(&dude).await?;
    world.online(&gone).await?;
    // She searched first (oldest), then closed her last tab.
    world.find_match(&gone).await?;
    world.offline(&gone).await?;
    world.find_match(&dude).await?;

    let m = Running::start(world.chat.clone(), quick_config("grace"));
    eventually(Duration::from_secs(10), "she leaves the queue", || async {
        Ok(!world.queued().await?.iter().any(|e| e.user == gone.id))
    })
    .await?;
    ensure!(
        world.active_session(dude.id).await?.is_none(),
        "paired with someone offline"
    );
    ensure!(
        world.queued().await?.iter().any(|e| e.user == dude.id),
        "he lost his place"
    );

    let here = world.user(Gender::Girl, Seeking::Dude).await?;
    world.online(&here).await?;
    world.find_match(&here).await?;
    eventually(
        Duration::from_secs(10),
        "he meets someone online",
        || async { Ok(world.active_session(dude.id).await?.is_some()) },
    )
    .await?;
    let partners = check_sessions(&world, &[dude, gone, here], &Default::default()).await?;
    ensure!(partners.get(&dude.id) == Some(&vec![here.id]));
    m.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_steps_down_when_the_lease_cannot_be_renewed() -> Result<()> {
    let world = World::memory_sqlite().await;
    let bus = FlakyBus::new(world.bus.clone());
    let cfg = quick_config("cut-off");
    let m = Running::start(world.chat_over(bus.clone()), cfg.clone());
    eventually(Duration::from_secs(5), "it leads", || async {
        Ok(m.matcher.is_leader())
    })
    .await?;

    // Redis becomes unreachable for this node's lease calls.
    bus.set(Renewals::Fail);
    eventually(
        cfg.renew_every + Duration::from_secs(1),
        "it steps down",
        || async { Ok(!m.matcher.is_leader()) },
    )
    .await?;
    let pair = world.couples(1).await?;
    world.search_all(&pair).await?;
    tokio::time::sleep(cfg.lease_ttl).await;
    ensure!(!m.matcher.is_leader(), "it led without a lease");
    ensure!(
        world.active_session(pair[0].id).await?.is_none(),
        "paired without a lease"
    );

    // Back in touch: its old lease has run out, it campaigns and pairs.
    bus.set(Renewals::PassThrough);
    eventually(Duration::from_secs(10), "it pairs again", || {
        world.all_in_sessions(&pair)
    })
    .await?;
    m.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_that_believes_it_leads_is_fenced_off() -> Result<()> {
    let world = World::memory_sqlite().await;
    let bus = FlakyBus::new(world.bus.clone());
    let cfg = quick_config("partitioned");
    let victim = Running::start(world.chat_over(bus.clone()), cfg.clone());
    eventually(Duration::from_secs(5), "it leads", || async {
        Ok(victim.matcher.is_leader())
    })
    .await?;

    // Its renewals stop reaching the bus but look successful to it; the
    // real lease runs out and a new leader takes it and presents its token.
    bus.set(Renewals::Believe);
    tokio::time::sleep(cfg.lease_ttl + Duration::from_millis(300)).await;
    let heir = world
        .bus
        .acquire_lease("heir", Duration::from_secs(60))
        .await?
        .context("the lease ran out")?;
    world
        .store()
        .create_sessions(heir, &[], chrono::Utc::now())
        .await?;
    ensure!(
        victim.matcher.is_leader(),
        "it should still believe it leads"
    );

    // It pairs the next users it sees; the store refuses, and it steps down.
    let pair = world.couples(1).await?;
    world.search_all(&pair).await?;
    eventually(
        Duration::from_secs(5),
        "the store's refusal deposes it",
        || async { Ok(!victim.matcher.is_leader()) },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(
        world.active_session(pair[0].id).await?.is_none(),
        "a deposed leader paired"
    );
    ensure!(world.store().past_partners(&[pair[0].id]).await?.is_empty());
    ensure!(!victim.matcher.is_leader(), "it took the heir's lease");
    victim.stop().await;
    Ok(())
}
