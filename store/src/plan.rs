//! The store's decisions, apart from SQL so that both backends make exactly
//! the same ones. A backend locks and reads what a decision needs, asks
//! here, then writes what the answer says in the same transaction. The two
//! batch writes (group commit, pairing round) are planned here in full; the
//! Postgres group commit alone decides inside its one statement, and shares
//! the rules for keys repeated in a batch ([`answer_batch`]).

use std::collections::{HashMap, HashSet};

use io_domain::model::*;
use io_domain::ports::{StoreError, StoreResult};
use io_domain::types::*;

use crate::records::{stored, RefreshRow};

/// A session row as a message batch sees it, read under its row lock.
#[derive(Debug, Clone)]
pub(crate) struct LockedSession {
    pub status: SessionStatus,
    pub user1: UserId,
    pub user2: UserId,
    pub last_seq: i64,
}

/// What a group commit writes and answers.
#[derive(Debug, Default)]
pub(crate) struct AppendPlan {
    /// One answer per input message, in input order.
    pub results: Vec<StoreResult<Message>>,
    /// Messages to insert.
    pub new: Vec<Message>,
    /// Each touched session's new `last_seq`.
    pub last_seqs: Vec<(SessionId, i64)>,
}

/// Messages already stored, by `(session, sender)` and clientMsgId.
pub(crate) type Existing = HashMap<(SessionId, UserId), HashMap<String, Message>>;

/// A message for a session that has ended.
pub(crate) const NOT_ACTIVE: StoreError = StoreError::Conflict("the session is not active");

/// One answer per message of a batch, in input order. `decide` answers the
/// first occurrence of each `(session, sender, clientMsgId)`; a later
/// occurrence gets the same answer.
pub(crate) fn answer_batch(
    batch: &[NewMessage],
    mut decide: impl FnMut(usize, &NewMessage) -> StoreResult<Message>,
) -> Vec<StoreResult<Message>> {
    let mut results: Vec<StoreResult<Message>> = Vec::with_capacity(batch.len());
    // First occurrence in this batch of each key.
    let mut seen: HashMap<(SessionId, UserId, &str), usize> = HashMap::new();
    for (i, m) in batch.iter().enumerate() {
        let key = (m.session_id, m.sender_id, m.client_msg_id.as_str());
        let result = match seen.get(&key) {
            Some(&first) => results[first].clone(),
            None => {
                seen.insert(key, i);
                decide(i, m)
            }
        };
        results.push(result);
    }
    results
}

/// The message a batch stores for `m` under `seq`.
pub(crate) fn stored_message(m: &NewMessage, seq: i64) -> Message {
    Message {
        id: m.id,
        session_id: m.session_id,
        sender_id: m.sender_id,
        seq,
        content: m.content.as_str().to_owned(),
        client_msg_id: m.client_msg_id.as_str().to_owned(),
        created_at: stored(m.created_at),
    }
}

/// Decide a group commit. Per message, in input order:
/// - unknown session, or a sender who is not in it: `NotFound` (sessions
///   belong to their participants);
/// - a `(session, sender, clientMsgId)` already stored, or earlier in this
///   batch: that message again (or the earlier one's answer);
/// - a session that is not active: `Conflict`;
/// - otherwise a new message with the session's next `seq`.
///
/// The Postgres store makes the same decisions inside one SQL statement
/// (`APPEND` in `postgres.rs`); the contract tests hold both to them.
pub(crate) fn plan_append(
    batch: &[NewMessage],
    sessions: &HashMap<SessionId, LockedSession>,
    existing: &Existing,
) -> AppendPlan {
    let mut new = Vec::new();
    let mut last: HashMap<SessionId, i64> = HashMap::new();
    let results = answer_batch(batch, |_, m| match sessions.get(&m.session_id) {
        None => Err(StoreError::NotFound),
        Some(s) if s.user1 != m.sender_id && s.user2 != m.sender_id => Err(StoreError::NotFound),
        Some(s) => match existing
            .get(&(m.session_id, m.sender_id))
            .and_then(|mine| mine.get(m.client_msg_id.as_str()))
        {
            Some(old) => Ok(old.clone()),
            None if s.status != SessionStatus::Active => Err(NOT_ACTIVE),
            None => {
                let seq = last.entry(m.session_id).or_insert(s.last_seq);
                *seq += 1;
                let message = stored_message(m, *seq);
                new.push(message.clone());
                Ok(message)
            }
        },
    });
    let mut last_seqs: Vec<(SessionId, i64)> = last.into_iter().collect();
    // A stable order for the UPDATE, matching the lock order.
    last_seqs.sort_by_key(|(id, _)| *id);
    AppendPlan {
        results,
        new,
        last_seqs,
    }
}

/// The unordered pair as the unique index sees it.
pub(crate) fn pair_key(a: UserId, b: UserId) -> (UserId, UserId) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// What a pairing round needs to know, read under the fence lock.
#[derive(Debug, Default)]
pub(crate) struct RoundState {
    /// Users that exist.
    pub known: HashSet<UserId>,
    /// Users in an active session.
    pub busy: HashSet<UserId>,
    /// Pairs (as [`pair_key`]) that already had a session.
    pub met: HashSet<(UserId, UserId)>,
}

/// Decide a pairing round, in order: a user paired with themself is a
/// `Conflict`, an unknown user `NotFound`, a user already in an active
/// session (or paired earlier in this round) `Busy`, a pair that met
/// before (or earlier in this round) `AlreadyMet`. Returns one answer per
/// pair and the sessions to insert.
pub(crate) fn plan_sessions(
    pairs: &[(UserId, UserId)],
    mut state: RoundState,
    now: Timestamp,
) -> (Vec<StoreResult<Session>>, Vec<Session>) {
    let now = stored(now);
    let mut results = Vec::with_capacity(pairs.len());
    let mut new = Vec::new();
    for &(a, b) in pairs {
        let result = if a == b {
            Err(StoreError::Conflict(
                "a user cannot be paired with themself",
            ))
        } else if !state.known.contains(&a) || !state.known.contains(&b) {
            Err(StoreError::NotFound)
        } else if state.busy.contains(&a) || state.busy.contains(&b) {
            Err(StoreError::Busy)
        } else if !state.met.insert(pair_key(a, b)) {
            Err(StoreError::AlreadyMet)
        } else {
            state.busy.insert(a);
            state.busy.insert(b);
            let s = Session {
                id: SessionId::new(),
                user1: a,
                user2: b,
                status: SessionStatus::Active,
                started_at: now,
                ended_at: None,
                ended_by: None,
                last_seq: 0,
            };
            new.push(s.clone());
            Ok(s)
        };
        results.push(result);
    }
    (results, new)
}

/// What presenting a refresh token leads to, decided the same way by both
/// backends. Order matters: a revoked token is simply invalid; a spent one
/// is a theft signal even if it has since expired, unless it was spent
/// within [`REFRESH_REUSE_GRACE`]: two refreshes racing with one token (two
/// requests of one client, a retry after a lost answer) both rotate it into
/// its one successor (the caller derives it from the token) instead of
/// ending the sign-in.
pub(crate) enum RefreshVerdict {
    Rotate,
    RevokeFamily,
    Invalid,
}

/// How long after its first use a refresh token may be presented again
/// without counting as stolen. The grace runs from the first use only
/// (spending keeps that time), so it cannot be stretched.
pub(crate) const REFRESH_REUSE_GRACE: chrono::Duration = chrono::Duration::seconds(10);

pub(crate) fn judge_refresh(token: &RefreshRow, now: Timestamp) -> RefreshVerdict {
    if token.revoked {
        RefreshVerdict::Invalid
    } else if let Some(used_at) = token.used_at {
        if now - used_at < REFRESH_REUSE_GRACE && token.expires_at > now {
            RefreshVerdict::Rotate
        } else {
            RefreshVerdict::RevokeFamily
        }
    } else if token.expires_at <= now {
        RefreshVerdict::Invalid
    } else {
        RefreshVerdict::Rotate
    }
}

/// What `current_session` answers, given the user's most relevant session
/// (their active one, else their latest): the active one; else the latest
/// if it ended and they have not rated it, so a reconnect can still rate.
/// An older unrated session stays behind a newer one: it never comes back.
pub(crate) fn current_of(s: Session, rated_by_me: bool) -> Option<Session> {
    match s.status {
        SessionStatus::Active => Some(s),
        SessionStatus::Ended if !rated_by_me => Some(s),
        _ => None,
    }
}

/// The stored status of a reveal answer.
pub(crate) fn reveal_answer(accept: bool) -> &'static str {
    if accept {
        RevealStatus::Accepted.as_str()
    } else {
        RevealStatus::Declined.as_str()
    }
}

/// Why a new reveal request is refused, given the open one's status.
pub(crate) fn reveal_conflict(status: &str) -> StoreError {
    if status == RevealStatus::Accepted.as_str() {
        StoreError::Conflict("identities were already revealed")
    } else {
        StoreError::Conflict("a reveal request is already pending")
    }
}

/// Only a participant rates (anyone else: `NotFound`), and only once the
/// session ended.
pub(crate) fn check_rateable(s: &Session, rater: UserId) -> StoreResult<()> {
    if !s.has(rater) {
        Err(StoreError::NotFound)
    } else if s.status == SessionStatus::Active {
        Err(StoreError::Conflict("session is still active"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn msg(session: SessionId, sender: UserId, cid: &str) -> NewMessage {
        NewMessage {
            id: MessageId::new(),
            session_id: session,
            sender_id: sender,
            content: MessageContent::parse("hi").unwrap(),
            client_msg_id: ClientMsgId::parse(cid).unwrap(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn seq_follows_batch_order_and_duplicates_repeat_the_first_answer() {
        let (s1, s2, a, b) = (
            SessionId::new(),
            SessionId::new(),
            UserId::new(),
            UserId::new(),
        );
        let locked = |status, last_seq| LockedSession {
            status,
            user1: a,
            user2: b,
            last_seq,
        };
        let sessions = HashMap::from([
            (s1, locked(SessionStatus::Active, 5)),
            (s2, locked(SessionStatus::Ended, 1)),
        ]);
        let batch = [
            msg(s1, a, "x"),
            msg(s1, b, "y"),
            msg(s1, a, "x"),
            msg(s2, a, "z"),
            msg(SessionId::new(), a, "w"),
            msg(s1, b, "x"),
            msg(s1, UserId::new(), "v"),
        ];
        // Both participants may use the same key, each for their own message.
        let plan = plan_append(&batch, &sessions, &Existing::new());
        let seqs: Vec<_> = plan
            .results
            .iter()
            .map(|r| r.as_ref().map(|m| m.seq).map_err(Clone::clone))
            .collect();
        assert_eq!(
            seqs,
            vec![
                Ok(6),
                Ok(7),
                Ok(6),
                Err(StoreError::Conflict("the session is not active")),
                Err(StoreError::NotFound),
                Ok(8),
                Err(StoreError::NotFound),
            ]
        );
        assert_eq!(plan.new.len(), 3);
        assert_eq!(plan.last_seqs, vec![(s1, 8)]);
    }

    #[test]
    fn a_round_never_double_books_a_user_or_a_pair() {
        let [a, b, c, d] = [(); 4].map(|_| UserId::new());
        let state = RoundState {
            known: HashSet::from([a, b, c, d]),
            ..RoundState::default()
        };
        let (results, new) =
            plan_sessions(&[(a, b), (b, c), (b, a), (c, c), (c, d)], state, Utc::now());
        let outcome: Vec<_> = results.iter().map(|r| r.as_ref().err().cloned()).collect();
        assert_eq!(
            outcome,
            vec![
                None,
                Some(StoreError::Busy),
                Some(StoreError::Busy),
                Some(StoreError::Conflict(
                    "a user cannot be paired with themself"
                )),
                None
            ]
        );
        assert_eq!(new.len(), 2);
    }
}
