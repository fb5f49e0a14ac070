//! The store contract: one body of tests, run against Postgres (a fresh
//! database per test on `IO_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) and SQLite (a fresh file per
//! test). No Postgres means the Postgres variants fail, loudly.
//!
//! Tests that model several nodes open a second store on the same database
//! with `io_store::connect(&db.url)`: two pools, as two processes would have.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use chrono::{Duration, Utc};
use futures::future::join_all;
use io_domain::model::*;
use io_domain::ports::{Store, StoreError};
use io_domain::types::*;
use io_store::testing::TestDb;

/// Generates `mod postgres` and `mod sqlite`, each with one `#[tokio::test]`
/// per listed body.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    let db = io_store::testing::postgres().await;
                    super::$name(&db).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    let db = io_store::testing::sqlite().await;
                    super::$name(&db).await
                }
            )*
        }
    };
}

contract!(
    users_are_created_once_and_profiles_change_in_part,
    the_same_pair_never_meets_twice,
    a_user_in_an_active_session_is_busy,
    a_stale_fence_is_refused,
    a_pairing_round_commits_in_one_call,
    concurrent_creations_never_double_book_a_user,
    past_partners_lists_both_directions,
    ending_a_session,
    seq_counts_from_one_and_retries_are_deduplicated,
    each_message_gets_its_own_answer,
    two_nodes_appending_to_one_session_leave_no_gaps,
    paging_never_skips_a_message,
    a_magic_link_is_spent_once_even_concurrently,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    logout_revokes_refresh_tokens,
    reveal_requests_follow_the_rules,
    concurrent_reveal_requests_leave_one_pending,
    ratings_follow_the_rules,
    current_session_is_the_active_or_the_unrated_one,
);

// --- helpers ------------------------------------------------------------------

fn store(db: &TestDb) -> &Arc<dyn Store> {
    &db.store
}

/// A second "node": its own pool on the same database.
async fn second_node(db: &TestDb) -> Result<Arc<dyn Store>> {
    io_store::connect(&db.url)
        .await
        .context("second store on the same database")
}

async fn user(s: &Arc<dyn Store>, name: &str) -> Result<User> {
    let email = Email::parse(&format!("{name}@example.org"))?;
    let alias = Alias::parse(&format!("{name}_alias"))?;
    Ok(s.upsert_user(&email, &alias, Utc::now()).await?)
}

async fn users<const N: usize>(s: &Arc<dyn Store>) -> Result<[UserId; N]> {
    let mut out = [UserId::new(); N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = user(s, &format!("user{i}")).await?.id;
    }
    Ok(out)
}

const FENCE: FencingToken = FencingToken(1);

fn msg(session: SessionId, sender: UserId, client_msg_id: &str) -> NewMessage {
    NewMessage {
        id: MessageId::new(),
        session_id: session,
        sender_id: sender,
        content: MessageContent::parse(&format!("hello {client_msg_id}")).expect("valid content"),
        client_msg_id: ClientMsgId::parse(client_msg_id).expect("valid client id"),
        created_at: Utc::now(),
    }
}

fn seqs(ms: &[Message]) -> Vec<i64> {
    ms.iter().map(|m| m.seq).collect()
}

// --- users ----------------------------------------------------------------------

async fn users_are_created_once_and_profiles_change_in_part(db: &TestDb) -> Result<()> {
    let s = store(db);
    let first = user(s, "ada").await?;
    ensure!(first.gender.is_none(), "no gender before onboarding");
    let again = s
        .upsert_user(
            &Email::parse("ADA@example.org")?,
            &Alias::parse("OtherAlias")?,
            Utc::now(),
        )
        .await?;
    ensure!(again.id == first.id, "same email, same user");
    ensure!(again.alias == first.alias, "the first alias stays");
    ensure!(s.user(first.id).await? == Some(again.clone()), "read back");

    let onboarded = s
        .update_profile(
            first.id,
            &ProfileUpdate {
                gender: Some(Gender::Dude),
                real_name: Some(CardText::parse("realName", "Ada L.", 80)?),
                ..ProfileUpdate::default()
            },
            Utc::now(),
        )
        .await?
        .context("user exists")?;
    ensure!(onboarded.gender == Some(Gender::Dude));
    ensure!(
        onboarded.seeking == Seeking::Girl,
        "seeking defaults to the other gender"
    );
    ensure!(onboarded.alias == first.alias, "untouched fields stay");
    ensure!(onboarded.real_name.as_ref().map(CardText::as_str) == Some("Ada L."));

    let changed = s
        .update_profile(
            first.id,
            &ProfileUpdate {
                seeking: Some(Seeking::Any),
                real_name: Some(None),
                reveal_email: Some(true),
                ..ProfileUpdate::default()
            },
            Utc::now(),
        )
        .await?
        .context("user exists")?;
    ensure!(changed.seeking == Seeking::Any);
    ensure!(changed.real_name.is_none(), "Some(None) clears");
    ensure!(changed.reveal_email);
    ensure!(s.user(first.id).await? == Some(changed));

    let nobody = s
        .update_profile(UserId::new(), &ProfileUpdate::default(), Utc::now())
        .await?;
    ensure!(nobody.is_none());
    ensure!(s.user(UserId::new()).await?.is_none());
    Ok(())
}

// --- sessions -------------------------------------------------------------------

async fn the_same_pair_never_meets_twice(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b] = users(s).await?;
    let first = s.create_session(FENCE, a, b, Utc::now()).await?;
    ensure!(first.status == SessionStatus::Active && first.last_seq == 0);
    ensure!(
        s.session(first.id).await? == Some(first.clone()),
        "read back"
    );
    s.end_session(first.id, a, Utc::now()).await?;
    for (x, y) in [(a, b), (b, a)] {
        let again = s.create_session(FENCE, x, y, Utc::now()).await;
        ensure!(again == Err(StoreError::AlreadyMet), "{again:?}");
    }
    Ok(())
}

async fn a_user_in_an_active_session_is_busy(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b, c] = users(s).await?;
    let ab = s.create_session(FENCE, a, b, Utc::now()).await?;
    for (x, y) in [(a, c), (c, b), (b, a)] {
        let r = s.create_session(FENCE, x, y, Utc::now()).await;
        ensure!(r == Err(StoreError::Busy), "{x}-{y}: {r:?}");
    }
    s.end_session(ab.id, b, Utc::now()).await?;
    s.create_session(FENCE, a, c, Utc::now()).await?;
    let me = s.create_session(FENCE, b, b, Utc::now()).await;
    ensure!(matches!(me, Err(StoreError::Conflict(_))), "{me:?}");
    let ghost = s.create_session(FENCE, b, UserId::new(), Utc::now()).await;
    ensure!(ghost == Err(StoreError::NotFound), "{ghost:?}");
    Ok(())
}

async fn a_stale_fence_is_refused(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b, c, d, e, f] = users(s).await?;
    s.create_session(FencingToken(5), a, b, Utc::now()).await?;
    let stale = s.create_session(FencingToken(4), c, d, Utc::now()).await;
    ensure!(stale == Err(StoreError::StaleLeader), "{stale:?}");
    let stale_round = s
        .create_sessions(FencingToken(4), &[(c, d)], Utc::now())
        .await;
    ensure!(
        stale_round == Err(StoreError::StaleLeader),
        "{stale_round:?}"
    );
    s.create_session(FencingToken(5), c, d, Utc::now())
        .await
        .context("the same leader keeps writing")?;
    s.create_session(FencingToken(6), e, f, Utc::now())
        .await
        .context("a newer leader writes")?;
    let [g, h] = [user(s, "g").await?.id, user(s, "h").await?.id];
    let deposed = s.create_session(FencingToken(5), g, h, Utc::now()).await;
    ensure!(deposed == Err(StoreError::StaleLeader), "{deposed:?}");
    Ok(())
}

async fn a_pairing_round_commits_in_one_call(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b, c, d, e, f] = users(s).await?;
    let old = s.create_session(FENCE, e, f, Utc::now()).await?;
    s.end_session(old.id, e, Utc::now()).await?;
    let round = s
        .create_sessions(FENCE, &[(a, b), (c, a), (c, d), (f, e)], Utc::now())
        .await?;
    ensure!(round.len() == 4);
    ensure!(round[0].is_ok() && round[2].is_ok(), "{round:?}");
    ensure!(
        round[1] == Err(StoreError::Busy),
        "paired earlier in the round"
    );
    ensure!(round[3] == Err(StoreError::AlreadyMet), "met before");
    for r in round.iter().flatten() {
        ensure!(s.session(r.id).await?.as_ref() == Some(r), "committed");
    }
    ensure!(s.create_sessions(FENCE, &[], Utc::now()).await?.is_empty());
    Ok(())
}

async fn concurrent_creations_never_double_book_a_user(db: &TestDb) -> Result<()> {
    let s = store(db).clone();
    let other = second_node(db).await?;
    let [a, b, c] = users(&s).await?;
    let (r1, r2) = tokio::join!(
        s.create_session(FENCE, a, b, Utc::now()),
        other.create_session(FENCE, a, c, Utc::now()),
    );
    let outcomes = [&r1, &r2];
    ensure!(
        outcomes.iter().filter(|r| r.is_ok()).count() == 1,
        "{outcomes:?}"
    );
    ensure!(
        outcomes.iter().any(|r| **r == Err(StoreError::Busy)),
        "{outcomes:?}"
    );
    Ok(())
}

async fn past_partners_lists_both_directions(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b, c, d] = users(s).await?;
    for (x, y) in [(a, b), (c, a), (d, b)] {
        let session = s.create_session(FENCE, x, y, Utc::now()).await?;
        s.end_session(session.id, x, Utc::now()).await?;
    }
    let got: HashSet<_> = s.past_partners(&[a, b, a]).await?.into_iter().collect();
    let want: HashSet<_> = [(a, b), (a, c), (b, a), (b, d)].into_iter().collect();
    ensure!(got == want, "{got:?}");
    ensure!(s.past_partners(&[]).await?.is_empty());
    ensure!(s.past_partners(&[UserId::new()]).await?.is_empty());
    Ok(())
}

async fn ending_a_session(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b, c] = users(s).await?;
    let session = s.create_session(FENCE, a, b, Utc::now()).await?;
    let outsider = s.end_session(session.id, c, Utc::now()).await;
    ensure!(outsider == Err(StoreError::NotFound), "{outsider:?}");
    let unknown = s.end_session(SessionId::new(), a, Utc::now()).await;
    ensure!(unknown == Err(StoreError::NotFound), "{unknown:?}");
    let at = Utc::now();
    let ended = s.end_session(session.id, b, at).await?;
    ensure!(ended.status == SessionStatus::Ended);
    ensure!(ended.ended_by == Some(b));
    ensure!(ended
        .ended_at
        .is_some_and(|t| (t - at).num_milliseconds().abs() < 1));
    ensure!(s.session(session.id).await? == Some(ended));
    let twice = s.end_session(session.id, a, Utc::now()).await;
    ensure!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    Ok(())
}

// --- messages -------------------------------------------------------------------

async fn seq_counts_from_one_and_retries_are_deduplicated(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b] = users(s).await?;
    let session = s.create_session(FENCE, a, b, Utc::now()).await?.id;
    let first = s
        .append_messages(&[
            msg(session, a, "m1"),
            msg(session, b, "m2"),
            msg(session, a, "m3"),
        ])
        .await?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(seqs(&first) == [1, 2, 3], "{first:?}");

    // A retry of m2 (new message id, same key) across batches, and a key
    // repeated inside one batch.
    let second = s
        .append_messages(&[
            msg(session, b, "m2"),
            msg(session, a, "m4"),
            msg(session, a, "m4"),
            msg(session, b, "m5"),
        ])
        .await?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    ensure!(
        second[0] == first[1],
        "the retry returns the stored message"
    );
    ensure!(seqs(&second) == [2, 4, 4, 5], "{second:?}");
    ensure!(
        second[1] == second[2],
        "a repeat in the batch gets the first"
    );

    let stored = s.messages_after(session, 0, 100).await?;
    ensure!(seqs(&stored) == [1, 2, 3, 4, 5], "{stored:?}");
    ensure!(
        stored[3] == second[1],
        "what the append returned is what is stored"
    );
    ensure!(s.message_count(session).await? == 5);
    ensure!(s.session(session).await?.context("exists")?.last_seq == 5);
    ensure!(s.append_messages(&[]).await?.is_empty());
    Ok(())
}

async fn each_message_gets_its_own_answer(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b, c, d] = users(s).await?;
    let live = s.create_session(FENCE, a, b, Utc::now()).await?.id;
    let over = s.create_session(FENCE, c, d, Utc::now()).await?.id;
    let before_end = s.append_messages(&[msg(over, c, "early")]).await?;
    ensure!(before_end[0].is_ok());
    s.end_session(over, d, Utc::now()).await?;

    let results = s
        .append_messages(&[
            msg(live, a, "ok1"),
            msg(SessionId::new(), a, "nowhere"),
            msg(over, c, "late"),
            msg(over, c, "early"),
            msg(live, c, "intruder"),
            msg(live, b, "ok1"),
            msg(live, b, "ok2"),
        ])
        .await?;
    ensure!(results.len() == 7);
    ensure!(
        results[0].as_ref().map(|m| m.seq) == Ok(1),
        "{:?}",
        results[0]
    );
    ensure!(results[1] == Err(StoreError::NotFound), "unknown session");
    ensure!(
        results[2] == Err(StoreError::Conflict("the session is not active")),
        "{:?}",
        results[2]
    );
    ensure!(
        results[3] == before_end[0],
        "a retry of a message stored before the end still gets it"
    );
    ensure!(results[4] == Err(StoreError::NotFound), "not a participant");
    ensure!(
        results[5].as_ref().map(|m| (m.seq, m.sender_id)) == Ok((2, b)),
        "the partner's own message under the same key: {:?}",
        results[5]
    );
    ensure!(
        results[6].as_ref().map(|m| m.seq) == Ok(3),
        "{:?}",
        results[6]
    );
    ensure!(seqs(&s.messages_after(live, 0, 10).await?) == [1, 2, 3]);
    // After the partner used the same key, a retry still finds its sender's
    // own message.
    let retry = s.append_messages(&[msg(live, a, "ok1")]).await?;
    ensure!(retry[0] == results[0], "{:?}", retry[0]);
    ensure!(s.message_count(live).await? == 3);
    ensure!(seqs(&s.messages_after(over, 0, 10).await?) == [1]);
    Ok(())
}

async fn two_nodes_appending_to_one_session_leave_no_gaps(db: &TestDb) -> Result<()> {
    const WRITERS_PER_NODE: usize = 3;
    const BATCHES: usize = 15;
    const PER_BATCH: usize = 5;
    let nodes = [store(db).clone(), second_node(db).await?];
    let [a, b] = users(&nodes[0]).await?;
    let session = nodes[0].create_session(FENCE, a, b, Utc::now()).await?.id;

    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..WRITERS_PER_NODE {
            let node = node.clone();
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..BATCHES {
                    let batch: Vec<_> = (0..PER_BATCH)
                        .map(|j| {
                            msg(
                                session,
                                if j % 2 == 0 { a } else { b },
                                &format!("{n}-{w}-{i}-{j}"),
                            )
                        })
                        .collect();
                    for r in node.append_messages(&batch).await? {
                        acked.push(r?);
                    }
                }
                Ok::<_, StoreError>(acked)
            }));
        }
    }
    let mut acked = Vec::new();
    for w in join_all(writers).await {
        acked.extend(w??);
    }
    let total = nodes.len() * WRITERS_PER_NODE * BATCHES * PER_BATCH;
    ensure!(acked.len() == total);
    let stored = nodes[1]
        .messages_after(session, 0, total as u32 + 10)
        .await?;
    let want: Vec<i64> = (1..=total as i64).collect();
    ensure!(
        seqs(&stored) == want,
        "seq is 1..={total} with no gap or repeat"
    );
    let keys: HashSet<_> = stored.iter().map(|m| m.client_msg_id.clone()).collect();
    ensure!(keys.len() == total, "every message stored once");
    let mut acked_seqs: Vec<i64> = acked.iter().map(|m| m.seq).collect();
    acked_seqs.sort_unstable();
    ensure!(acked_seqs == want, "every ack carries its committed seq");
    ensure!(nodes[0].message_count(session).await? == total as i64);
    Ok(())
}

/// Postgres decides a batch in one statement that reads stored keys before
/// it waits for the session lock. A key another node commits while it
/// waits must still be answered with that node's message, not stored
/// twice or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_key_committed_while_a_batch_waits_is_answered_once() -> Result<()> {
    let db = io_store::testing::postgres().await;
    let s = store(&db).clone();
    let [a, b] = users(&s).await?;
    let session = s.create_session(FENCE, a, b, Utc::now()).await?.id;

    // Another node's transaction: it holds the session lock and has
    // written message "k" as seq 1.
    let raw = sqlx::PgPool::connect(&db.url).await?;
    let mut other = raw.begin().await?;
    lock_session(&mut other, session).await?;
    let theirs = store_first_message(&mut other, session, a, "k").await?;
    sqlx::query("UPDATE chat_sessions SET last_seq = 1 WHERE id = $1")
        .bind(session.0)
        .execute(&mut *other)
        .await?;

    let batch = [msg(session, a, "k"), msg(session, b, "mine")];
    let pending = tokio::spawn(async move { s.append_messages(&batch).await });
    // Commit only once the batch is waiting for the lock, so its snapshot
    // cannot have seen "k".
    until_a_statement_waits_for_a_lock(&raw).await?;
    other.commit().await?;

    let results = pending.await??;
    let first = results[0].as_ref().map_err(Clone::clone)?;
    ensure!(
        first.id == theirs && first.seq == 1 && first.content == "theirs",
        "the retry gets the stored message: {first:?}"
    );
    ensure!(
        results[1].as_ref().map(|m| m.seq) == Ok(2),
        "{:?}",
        results[1]
    );
    let stored = store(&db).messages_after(session, 0, 10).await?;
    ensure!(seqs(&stored) == [1, 2], "{stored:?}");
    Ok(())
}

/// The same race when the session also ended meanwhile: the batch sees
/// the session ended under its lock, but not the key stored just before
/// the end. The retry must still get the stored message, not "ended".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_key_committed_before_a_concurrent_end_is_answered() -> Result<()> {
    let db = io_store::testing::postgres().await;
    let s = store(&db).clone();
    let [a, b, c, d] = users(&s).await?;
    let one = s.create_session(FENCE, a, b, Utc::now()).await?.id;
    let two = s.create_session(FENCE, c, d, Utc::now()).await?.id;
    // The batch locks its sessions in id order: it waits on the first.
    let (first, first_sender, last, last_sender) = if one < two {
        (one, a, two, c)
    } else {
        (two, c, one, a)
    };

    let raw = sqlx::PgPool::connect(&db.url).await?;
    let mut holder = raw.begin().await?;
    lock_session(&mut holder, first).await?;
    let batch = [
        msg(first, first_sender, "mine"),
        msg(last, last_sender, "k"),
    ];
    let pending = tokio::spawn(async move { s.append_messages(&batch).await });
    until_a_statement_waits_for_a_lock(&raw).await?;

    // Meanwhile another node stores "k" in the last session, which then ends.
    let mut other = raw.begin().await?;
    let theirs = store_first_message(&mut other, last, last_sender, "k").await?;
    sqlx::query(
        "UPDATE chat_sessions SET last_seq = 1, status = 'ended', ended_at = now() WHERE id = $1",
    )
    .bind(last.0)
    .execute(&mut *other)
    .await?;
    other.commit().await?;
    holder.commit().await?;

    let results = pending.await??;
    ensure!(
        results[0].as_ref().map(|m| m.seq) == Ok(1),
        "{:?}",
        results[0]
    );
    let retry = results[1].as_ref().map_err(Clone::clone)?;
    ensure!(
        retry.id == theirs && retry.content == "theirs",
        "the retry gets the message stored before the end: {retry:?}"
    );
    ensure!(seqs(&store(&db).messages_after(first, 0, 10).await?) == [1]);
    Ok(())
}

/// Another node's transaction takes the session's row lock, as its group
/// commit would.
async fn lock_session(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    session: SessionId,
) -> Result<()> {
    sqlx::query("SELECT 1 FROM chat_sessions WHERE id = $1 FOR UPDATE")
        .bind(session.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Another node's write, by hand: message `key` (content "theirs") as the
/// session's seq 1, in the caller's transaction.
async fn store_first_message(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    session: SessionId,
    sender: UserId,
    key: &str,
) -> Result<MessageId> {
    let id = MessageId::new();
    sqlx::query(
        "INSERT INTO messages (id, session_id, sender_id, seq, content, client_msg_id, created_at) \
         VALUES ($1, $2, $3, 1, 'theirs', $4, now())",
    )
    .bind(id.0)
    .bind(session.0)
    .bind(sender.0)
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Returns once some statement on the test database waits for a lock.
async fn until_a_statement_waits_for_a_lock(raw: &sqlx::PgPool) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(raw)
        .await?;
        if waiting > 0 {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no statement ever waited for a lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn paging_never_skips_a_message(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b] = users(s).await?;
    let session = s.create_session(FENCE, a, b, Utc::now()).await?.id;
    for chunk in 0..5 {
        let batch: Vec<_> = (0..5)
            .map(|i| msg(session, a, &format!("p{chunk}-{i}")))
            .collect();
        s.append_messages(&batch).await?;
    }
    let mut after = 0;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let page = s.messages_after(session, after, 7).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        seen.extend(seqs(&page));
    }
    ensure!(seen == (1..=25).collect::<Vec<_>>(), "{seen:?}");
    ensure!(s.messages_after(session, 25, 7).await?.is_empty());
    let latest = s.latest_messages(session, 10).await?;
    ensure!(
        seqs(&latest) == (16..=25).collect::<Vec<_>>(),
        "oldest first"
    );
    ensure!(s.latest_messages(SessionId::new(), 10).await?.is_empty());
    ensure!(s.message_count(SessionId::new()).await == Err(StoreError::NotFound));
    Ok(())
}

// --- sign-in --------------------------------------------------------------------

async fn a_magic_link_is_spent_once_even_concurrently(db: &TestDb) -> Result<()> {
    let nodes = [store(db).clone(), second_node(db).await?];
    let email = Email::parse("link@example.org")?;
    let hash = [7u8; 32];
    let now = Utc::now();
    nodes[0]
        .put_magic_link(&hash, &email, now + Duration::minutes(15))
        .await?;
    let takes = (0..8).map(|i| {
        let node = nodes[i % 2].clone();
        async move { node.take_magic_link(&hash, now).await }
    });
    let results = join_all(takes).await;
    let winners: Vec<_> = results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    ensure!(winners == [email.clone()], "exactly one use: {winners:?}");

    let expired = [8u8; 32];
    nodes[0]
        .put_magic_link(&expired, &email, now + Duration::minutes(15))
        .await?;
    let late = nodes[0]
        .take_magic_link(&expired, now + Duration::minutes(16))
        .await?;
    ensure!(late.is_none(), "expired");
    ensure!(
        nodes[0].take_magic_link(&expired, now).await?.is_none(),
        "and gone"
    );
    ensure!(nodes[0].take_magic_link(&[9u8; 32], now).await?.is_none());
    Ok(())
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(db: &TestDb) -> Result<()> {
    let s = store(db);
    let me = user(s, "tok").await?.id;
    let now = Utc::now();
    let later = now + Duration::days(30);
    let family = TokenFamilyId::new();
    s.insert_refresh_token(b"t1", family, me, later, now)
        .await?;
    let r = s.rotate_refresh_token(b"t1", b"t2", later, now).await?;
    ensure!(r == RefreshOutcome::Rotated { user_id: me }, "{r:?}");
    let r = s.rotate_refresh_token(b"t2", b"t3", later, now).await?;
    ensure!(r == RefreshOutcome::Rotated { user_id: me }, "{r:?}");

    // Presented again within the grace (two refreshes racing), a spent
    // token rotates into its one successor again, which stays as stored;
    // the grace runs from its first use, so that second use does not
    // stretch it.
    let soon = now + Duration::seconds(9);
    let r = s.rotate_refresh_token(b"t2", b"t3", later, soon).await?;
    ensure!(r == RefreshOutcome::Rotated { user_id: me }, "{r:?}");

    // Past the grace, presenting a spent token again is theft, and the
    // live t3 dies too.
    let after = now + Duration::seconds(11);
    let r = s.rotate_refresh_token(b"t2", b"t4", later, after).await?;
    ensure!(r == RefreshOutcome::Reused { user_id: me }, "{r:?}");
    let r = s.rotate_refresh_token(b"t3", b"t5", later, after).await?;
    ensure!(r == RefreshOutcome::Invalid, "family revoked: {r:?}");
    let r = s.rotate_refresh_token(b"t4", b"t6", later, after).await?;
    ensure!(
        r == RefreshOutcome::Invalid,
        "the reuse stored nothing: {r:?}"
    );

    let r = s.rotate_refresh_token(b"nope", b"t7", later, now).await?;
    ensure!(r == RefreshOutcome::Invalid, "unknown: {r:?}");
    s.insert_refresh_token(b"old", TokenFamilyId::new(), me, now, now)
        .await?;
    let r = s
        .rotate_refresh_token(b"old", b"t8", later, now + Duration::seconds(1))
        .await?;
    ensure!(r == RefreshOutcome::Invalid, "expired: {r:?}");

    let ghost = s
        .insert_refresh_token(b"g", TokenFamilyId::new(), UserId::new(), later, now)
        .await;
    ensure!(ghost == Err(StoreError::NotFound), "{ghost:?}");
    Ok(())
}

async fn logout_revokes_refresh_tokens(db: &TestDb) -> Result<()> {
    let s = store(db);
    let me = user(s, "out").await?.id;
    let other = user(s, "other").await?.id;
    let now = Utc::now();
    let later = now + Duration::days(30);
    s.insert_refresh_token(b"laptop", TokenFamilyId::new(), me, later, now)
        .await?;
    s.insert_refresh_token(b"phone", TokenFamilyId::new(), me, later, now)
        .await?;

    // Someone else's logout cannot touch my family.
    s.revoke_refresh_family(b"laptop", other).await?;
    s.revoke_refresh_family(b"laptop", me).await?;
    let r = s.rotate_refresh_token(b"laptop", b"l2", later, now).await?;
    ensure!(r == RefreshOutcome::Invalid, "logged out: {r:?}");
    let r = s.rotate_refresh_token(b"phone", b"p2", later, now).await?;
    ensure!(
        r == RefreshOutcome::Rotated { user_id: me },
        "other family lives: {r:?}"
    );

    s.revoke_user_refresh_tokens(me).await?;
    let r = s.rotate_refresh_token(b"p2", b"p3", later, now).await?;
    ensure!(r == RefreshOutcome::Invalid, "logged out everywhere: {r:?}");
    s.revoke_refresh_family(b"unknown", me).await?;
    Ok(())
}

// --- reveal and rating ------------------------------------------------------------

async fn reveal_requests_follow_the_rules(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b, c] = users(s).await?;
    let session = s.create_session(FENCE, a, b, Utc::now()).await?.id;
    ensure!(s.latest_reveal(session).await?.is_none());

    let asked = s.create_reveal_request(session, a, Utc::now()).await?;
    ensure!(asked.status == RevealStatus::Pending && asked.requester_id == a);
    for who in [a, b] {
        let again = s.create_reveal_request(session, who, Utc::now()).await;
        ensure!(
            matches!(again, Err(StoreError::Conflict(_))),
            "one pending: {again:?}"
        );
    }
    let outsider = s.create_reveal_request(session, c, Utc::now()).await;
    ensure!(outsider == Err(StoreError::NotFound), "{outsider:?}");
    for who in [a, c] {
        let r = s.respond_reveal(session, who, true, Utc::now()).await;
        ensure!(
            r == Err(StoreError::NotFound),
            "only the partner answers: {r:?}"
        );
    }
    let declined = s.respond_reveal(session, b, false, Utc::now()).await?;
    ensure!(declined.id == asked.id && declined.status == RevealStatus::Declined);
    ensure!(s.latest_reveal(session).await? == Some(declined));
    let nothing = s.respond_reveal(session, b, true, Utc::now()).await;
    ensure!(
        nothing == Err(StoreError::NotFound),
        "nothing pending: {nothing:?}"
    );

    let asked = s
        .create_reveal_request(session, b, Utc::now() + Duration::seconds(1))
        .await?;
    ensure!(
        s.latest_reveal(session).await? == Some(asked.clone()),
        "latest"
    );
    let accepted = s.respond_reveal(session, a, true, Utc::now()).await?;
    ensure!(accepted.status == RevealStatus::Accepted && accepted.requester_id == b);
    // Each participant's asks are counted apart; refused ones are not asks.
    for (who, asks) in [(a, 1), (b, 1), (c, 0)] {
        let n = s.reveal_requests_by(session, who).await?;
        ensure!(n == asks, "asks by one participant: {n}, expected {asks}");
    }
    let after = s.create_reveal_request(session, a, Utc::now()).await;
    ensure!(
        matches!(after, Err(StoreError::Conflict(_))),
        "already revealed: {after:?}"
    );
    let unknown = s
        .create_reveal_request(SessionId::new(), a, Utc::now())
        .await;
    ensure!(unknown == Err(StoreError::NotFound));
    Ok(())
}

async fn concurrent_reveal_requests_leave_one_pending(db: &TestDb) -> Result<()> {
    let nodes = [store(db).clone(), second_node(db).await?];
    let [a, b] = users(&nodes[0]).await?;
    let session = nodes[0].create_session(FENCE, a, b, Utc::now()).await?.id;
    let (r1, r2) = tokio::join!(
        nodes[0].create_reveal_request(session, a, Utc::now()),
        nodes[1].create_reveal_request(session, b, Utc::now()),
    );
    let outcomes = [&r1, &r2];
    ensure!(
        outcomes.iter().filter(|r| r.is_ok()).count() == 1,
        "{outcomes:?}"
    );
    ensure!(
        outcomes
            .iter()
            .any(|r| matches!(r, Err(StoreError::Conflict(_)))),
        "{outcomes:?}"
    );
    Ok(())
}

async fn ratings_follow_the_rules(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b, c] = users(s).await?;
    let session = s.create_session(FENCE, a, b, Utc::now()).await?.id;
    let early = s
        .rate_session(session, a, Rating::parse(3)?, Utc::now())
        .await;
    ensure!(
        matches!(early, Err(StoreError::Conflict(_))),
        "still active: {early:?}"
    );
    s.end_session(session, a, Utc::now()).await?;

    let outsider = s
        .rate_session(session, c, Rating::parse(3)?, Utc::now())
        .await;
    ensure!(outsider == Err(StoreError::NotFound), "{outsider:?}");
    let unknown = s
        .rate_session(SessionId::new(), a, Rating::parse(3)?, Utc::now())
        .await;
    ensure!(unknown == Err(StoreError::NotFound), "{unknown:?}");

    let (mine, after_mine) = s
        .rate_session(session, a, Rating::parse(4)?, Utc::now())
        .await?;
    ensure!(mine.rating.get() == 4 && mine.rater_id == a);
    ensure!(
        after_mine.status == SessionStatus::Ended,
        "one rating: still ended"
    );
    let twice = s
        .rate_session(session, a, Rating::parse(1)?, Utc::now())
        .await;
    ensure!(
        matches!(twice, Err(StoreError::Conflict(_))),
        "once: {twice:?}"
    );
    ensure!(s.rating_of(session, a).await? == Some(mine));
    ensure!(s.rating_of(session, b).await?.is_none());

    let (theirs, after_both) = s
        .rate_session(session, b, Rating::parse(1)?, Utc::now())
        .await?;
    ensure!(theirs.rating.get() == 1);
    ensure!(after_both.status == SessionStatus::Rated, "both rated");
    ensure!(s.session(session).await?.map(|x| x.status) == Some(SessionStatus::Rated));
    Ok(())
}

/// The batch read answers what one read per user answers, in input order
/// (a user asked twice gets two answers).
async fn batch_agrees(s: &Arc<dyn Store>, who: &[UserId]) -> Result<()> {
    let mut one_by_one = Vec::new();
    for &u in who {
        one_by_one.push(s.current_session(u).await?);
    }
    ensure!(
        s.current_sessions(who).await? == one_by_one,
        "current_sessions differs from current_session"
    );
    Ok(())
}

async fn current_session_is_the_active_or_the_unrated_one(db: &TestDb) -> Result<()> {
    let s = store(db);
    let [a, b, c] = users(s).await?;
    ensure!(s.current_session(a).await?.is_none(), "never matched");
    batch_agrees(s, &[a, b, c]).await?;

    let first = s.create_session(FENCE, a, b, Utc::now()).await?;
    ensure!(s.current_session(a).await? == Some(first.clone()), "active");
    ensure!(
        s.current_session(b).await? == Some(first.clone()),
        "active for both"
    );

    let ended = s.end_session(first.id, b, Utc::now()).await?;
    ensure!(
        s.current_session(a).await? == Some(ended.clone()),
        "ended, unrated"
    );
    s.rate_session(first.id, a, Rating::parse(2)?, Utc::now())
        .await?;
    ensure!(s.current_session(a).await?.is_none(), "rated by me");
    batch_agrees(s, &[a, b, c, b]).await?;
    ensure!(
        s.current_session(b).await? == Some(ended),
        "still unrated by the partner"
    );

    // b moves on without rating: the new active session takes precedence,
    // and once it ends the old unrated one does not come back.
    let second = s
        .create_session(FENCE, b, c, Utc::now() + Duration::seconds(1))
        .await?;
    ensure!(s.current_session(b).await? == Some(second.clone()));
    batch_agrees(s, &[c, a, b]).await?;
    let second_ended = s
        .end_session(second.id, c, Utc::now() + Duration::seconds(2))
        .await?;
    ensure!(s.current_session(b).await? == Some(second_ended));
    s.rate_session(second.id, b, Rating::parse(3)?, Utc::now())
        .await?;
    ensure!(
        s.current_session(b).await?.is_none(),
        "older unrated stays behind"
    );
    Ok(())
}
