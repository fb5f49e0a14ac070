//! Thousands of users join, cancel, rejoin, drop offline, come back and end
//! sessions concurrently while a matcher pairs them. Afterwards the rules
//! of design 3.4 must hold over everything that happened:
//! - every pair was compatible, no pair met twice, nobody was in two
//!   active sessions at once;
//! - quiescence: no two online users wait while compatible and unmet;
//! - users offline past the grace are out of the queue;
//! - every online user in a session was told (`match_found`).
//!
//! The same scenario runs on both wirings: SQLite + in-process bus (`io
//! all`) and Postgres + Redis (the cluster).

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Result};
use common::*;
use io_domain::chat::Actor;
use io_domain::types::{Gender, Seeking, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mostly the default wish (the other gender), some "any", some same-gender.
fn random_class(rng: &mut StdRng) -> (Gender, Seeking) {
    match rng.gen_range(0..100) {
        0..=39 => (Gender::Dude, Seeking::Girl),
        40..=79 => (Gender::Girl, Seeking::Dude),
        80..=86 => (Gender::Dude, Seeking::Any),
        87..=93 => (Gender::Girl, Seeking::Any),
        94..=96 => (Gender::Dude, Seeking::Dude),
        _ => (Gender::Girl, Seeking::Girl),
    }
}

/// What one simulated client does.
/// Who went offline for good, and who only blinked (a reload).
#[derive(Default)]
struct Absences {
    gone: Vec<UserId>,
    blinked: Vec<UserId>,
}

async fn client(
    world: &World,
    user: TestUser,
    rng: &mut StdRng,
    absences: &Mutex<Absences>,
) -> Result<()> {
    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
    world.online(&user).await?;
    world.find_match(&user).await?;
    match rng.gen_range(0..100) {
        // Changes their mind, sometimes comes back.
        0..=9 => {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..50))).await;
            world.cancel(&user).await?;
            if rng.gen_bool(0.5) {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
                world.find_match(&user).await?;
            }
        }
        // Closes the tab for good while queued.
        10..=15 => {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..50))).await;
            world.offline(&user).await?;
            absences.lock().unwrap().gone.push(user.id);
        }
        // A reload: gone briefly, back within the grace.
        16..=20 => {
            absences.lock().unwrap().blinked.push(user.id);
            world.offline(&user).await?;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
            world.online(&user).await?;
        }
        _ => {}
    }
    Ok(())
}

async fn scenario(world: World, n: usize, seed: u64) -> Result<()> {
    eprintln!("seed {seed}");
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let classes: Vec<(Gender, Seeking)> = (0..n).map(|_| random_class(&mut rng)).collect();
    let users = world.users(&classes).await?;
    eprintln!("{:?}: {n} users created", started.elapsed());
    let matcher = Running::start(world.chat.clone(), quick_config("randomized"));

    // Wave 1: everyone arrives, concurrently, in 32 groups.
    let absences = Mutex::new(Absences::default());
    let groups: Vec<Vec<TestUser>> = (0..32)
        .map(|g| users.iter().skip(g).step_by(32).copied().collect())
        .collect();
    let wave = groups.into_iter().enumerate().map(|(g, group)| {
        let (world, absences) = (&world, &absences);
        async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (g as u64 + 1));
            for user in group {
                client(world, user, &mut rng, absences).await?;
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    futures::future::try_join_all(wave).await?;
    eprintln!("{:?}: wave 1 done", started.elapsed());

    // Wave 2: a fifth of those in a session end it and search again; they
    // must never meet the same partner twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ended: HashMap<UserId, usize> = HashMap::new();
    let mut rejoin = Vec::new();
    for user in &users {
        if !rng.gen_bool(0.2) {
            continue;
        }
        let Some(session) = world.active_session(user.id).await? else {
            continue;
        };
        world
            .chat
            .end_session(&Actor::rest(user.id), session.id)
            .await?;
        for u in [session.user1, session.user2] {
            *ended.entry(u).or_default() += 1;
        }
        rejoin.push(*user);
    }
    for user in &rejoin {
        if world.active_session(user.id).await?.is_none() {
            world.find_match(user).await?;
        }
    }
    eprintln!(
        "{} sessions ended, {} users searching again",
        rejoin.len(),
        rejoin.len()
    );

    // Quiescence: nothing pairable left waiting, the offline dropped.
    let Absences {
        gone: offline,
        blinked,
    } = absences.into_inner().unwrap();
    eprintln!("{:?}: waiting for quiescence", started.elapsed());
    eventually(Duration::from_secs(60), "quiescence", || async {
        let waiting = waiting_pairs(&world, &users).await?;
        let queued = world.queued().await?;
        let offline_queued = queued.iter().filter(|e| offline.contains(&e.user)).count();
        Ok(waiting.is_empty() && offline_queued == 0)
    })
    .await?;

    let partners = check_sessions(&world, &users, &ended).await?;
    let paired = partners.len();
    eprintln!(
        "{n} users, {paired} had sessions, {} still queued, {} went offline",
        world.queued().await?.len(),
        offline.len()
    );
    if paired < n / 2 {
        bail!("only {paired} of {n} users were ever paired");
    }

    // Everyone online with an active session heard of it. (Who blinked
    // offline may have missed it: they learn of the session on reconnect,
    // in `connected.session`.)
    let mut told: HashMap<UserId, Vec<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let absent = |u: &&TestUser| offline.contains(&u.id) || blinked.contains(&u.id);
    for user in users.iter().filter(|u| !absent(u)) {
        let Some(session) = world.active_session(user.id).await? else {
            continue;
        };
        let id = session.id.to_string();
        while !told.get(&user.id).is_some_and(|l| l.contains(&id)) {
            if tokio::time::Instant::now() >= deadline {
                bail!("{} is in session {id} but was never told", user.id);
            }
            for (to, session) in world.match_found_events().await? {
                told.entry(to).or_default().push(session);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    eprintln!("{:?}: checked", started.elapsed());
    assert!(matcher.matcher.is_leader());
    matcher.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_crowd_on_sqlite_and_memory_bus() -> Result<()> {
    scenario(World::memory_sqlite().await, 2000, rand::random()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_crowd_on_postgres_and_redis() -> Result<()> {
    scenario(World::redis_postgres().await, 2000, rand::random()).await
}
