//! The leader's in-memory copy of the match queue: every queued user by
//! class, oldest first, plus what the leader learned about each one (are
//! they online, whom have they met). It is built from a bus snapshot and
//! kept equal to the bus queue by applying the change feed in order; the
//! leader's own removals (paired, offline) are applied at once and their
//! `Left` changes, arriving later, are no-ops.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use io_domain::model::{QueueChange, QueueEntry};
use io_domain::types::{Gender, UserId};
use tokio::time::Instant;

use crate::pairing::{Buckets, Candidate, Class};

/// What the leader knows about one queued user.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub entry: QueueEntry,
    /// Since when the user has been seen without a live socket; `None`
    /// while online or not yet checked. Offline users are not paired, and
    /// are dropped from the queue once this is older than the grace.
    pub offline_since: Option<Instant>,
    /// Everyone they ever had a session with, loaded from the store the
    /// first time they take part in a round; `None` until then.
    pub met: Option<HashSet<UserId>>,
}

/// The queue, indexed for pairing.
#[derive(Debug, Default)]
pub(crate) struct QueueIndex {
    slots: HashMap<UserId, Slot>,
    /// Per class, ordered like turns: (joined_at_ms, user).
    order: [BTreeSet<(i64, UserId)>; Class::COUNT],
}

impl QueueIndex {
    /// Replace the contents with a fresh snapshot. What was learned about
    /// users still queued (their past partners) is kept: it is still true.
    pub fn reset(&mut self, entries: Vec<QueueEntry>) {
        let mut old = std::mem::take(&mut self.slots);
        self.order = Default::default();
        for entry in entries {
            let met = old.remove(&entry.user).and_then(|s| s.met);
            self.insert_slot(Slot {
                entry,
                offline_since: None,
                met,
            });
        }
    }

    /// Apply one change of the feed; whether the queue changed.
    pub fn apply(&mut self, change: QueueChange) -> bool {
        match change {
            QueueChange::Joined(entry) => {
                if self.slots.get(&entry.user).map(|s| &s.entry) == Some(&entry) {
                    return false;
                }
                let met = self.remove(entry.user).and_then(|s| s.met);
                self.insert_slot(Slot {
                    entry,
                    offline_since: None,
                    met,
                });
                true
            }
            QueueChange::Left(user) => self.remove(user).is_some(),
        }
    }

    fn insert_slot(&mut self, slot: Slot) {
        let e = &slot.entry;
        self.order[Class::of(e).index()].insert((e.joined_at_ms, e.user));
        self.slots.insert(e.user, slot);
    }

    /// Take a user out (paired, dropped, or left).
    pub fn remove(&mut self, user: UserId) -> Option<Slot> {
        let slot = self.slots.remove(&user)?;
        let e = &slot.entry;
        self.order[Class::of(e).index()].remove(&(e.joined_at_ms, e.user));
        Some(slot)
    }

    pub fn contains(&self, user: UserId) -> bool {
        self.slots.contains_key(&user)
    }

    pub fn get_mut(&mut self, user: UserId) -> Option<&mut Slot> {
        self.slots.get_mut(&user)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Users marked offline.
    pub fn offline_users(&self) -> Vec<UserId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.offline_since.is_some())
            .map(|(u, _)| *u)
            .collect()
    }

    pub fn users(&self) -> impl Iterator<Item = UserId> + '_ {
        self.slots.keys().copied()
    }

    /// Queued users of one gender (online or not).
    pub fn waiting(&self, gender: Gender) -> usize {
        Class::ALL
            .iter()
            .filter(|c| c.gender == gender)
            .map(|c| self.order[c.index()].len())
            .sum()
    }

    /// Users whose past partners are not loaded yet.
    pub fn without_met(&self) -> Vec<UserId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.met.is_none())
            .map(|(u, _)| *u)
            .collect()
    }

    /// Remember that `a` and `b` had a session, in both directions for
    /// whoever is queued and loaded (an unloaded set will read it from the
    /// store).
    pub fn add_met(&mut self, a: UserId, b: UserId) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(met) = self.slots.get_mut(&x).and_then(|s| s.met.as_mut()) {
                met.insert(y);
            }
        }
    }

    /// Whether `a` and `b` are known to have met.
    pub fn met(&self, a: UserId, b: UserId) -> bool {
        let knows = |x: UserId, y: UserId| {
            self.slots
                .get(&x)
                .and_then(|s| s.met.as_ref())
                .is_some_and(|m| m.contains(&y))
        };
        knows(a, b) || knows(b, a)
    }

    /// The round's candidates: every queued user not known to be offline
    /// and not in `exclude`, by class, oldest first.
    pub fn buckets(&self, exclude: &HashSet<UserId>) -> Buckets {
        std::array::from_fn(|c| {
            self.order[c]
                .iter()
                .filter(|(_, user)| {
                    !exclude.contains(user)
                        && self
                            .slots
                            .get(user)
                            .is_some_and(|s| s.offline_since.is_none())
                })
                .map(|&(joined_at_ms, user)| Candidate { user, joined_at_ms })
                .collect()
        })
    }

    /// Record a presence check: online clears the offline mark, offline
    /// starts it (keeping an earlier start). Returns whether the user came
    /// back online.
    pub fn saw(&mut self, user: UserId, online: bool, now: Instant) -> bool {
        let Some(slot) = self.slots.get_mut(&user) else {
            return false;
        };
        if online {
            slot.offline_since.take().is_some()
        } else {
            slot.offline_since.get_or_insert(now);
            false
        }
    }

    /// Users offline for longer than `grace` at `now`.
    pub fn offline_longer_than(&self, grace: Duration, now: Instant) -> Vec<UserId> {
        self.slots
            .iter()
            .filter(|(_, s)| {
                s.offline_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= grace)
            })
            .map(|(u, _)| *u)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use io_domain::types::Seeking;
    use uuid::Uuid;

    use super::*;

    fn entry(n: u128, gender: Gender, seeking: Seeking, joined_at_ms: i64) -> QueueEntry {
        QueueEntry {
            user: UserId(Uuid::from_u128(n)),
            gender,
            seeking,
            joined_at_ms,
        }
    }

    fn all_users(b: &Buckets) -> Vec<UserId> {
        b.iter().flatten().map(|c| c.user).collect()
    }

    #[test]
    fn follows_the_change_feed() {
        let mut q = QueueIndex::default();
        let a = entry(1, Gender::Dude, Seeking::Girl, 20);
        let b = entry(2, Gender::Dude, Seeking::Girl, 10);
        let c = entry(3, Gender::Girl, Seeking::Any, 5);
        q.reset(vec![a.clone()]);
        assert!(q.apply(QueueChange::Joined(b.clone())));
        assert!(q.apply(QueueChange::Joined(c.clone())));
        assert!(
            !q.apply(QueueChange::Joined(c.clone())),
            "a repeat changes nothing"
        );
        assert_eq!(q.users().count(), 3);
        assert_eq!((q.waiting(Gender::Dude), q.waiting(Gender::Girl)), (2, 1));

        let buckets = q.buckets(&HashSet::new());
        let dudes = &buckets[Class::of(&a).index()];
        assert_eq!(
            dudes.iter().map(|c| c.user).collect::<Vec<_>>(),
            vec![b.user, a.user]
        );

        assert!(q.apply(QueueChange::Left(b.user)));
        assert!(
            !q.apply(QueueChange::Left(b.user)),
            "leaving twice is a no-op"
        );
        assert_eq!(all_users(&q.buckets(&HashSet::new())).len(), 2);

        // A rejoin with a new time moves the user.
        let a2 = QueueEntry {
            joined_at_ms: 1,
            ..a.clone()
        };
        assert!(q.apply(QueueChange::Joined(a2)));
        assert_eq!(q.users().count(), 2);
        assert_eq!(
            q.buckets(&HashSet::new())[Class::of(&a).index()][0].joined_at_ms,
            1
        );
    }

    #[test]
    fn offline_and_excluded_users_are_not_candidates() {
        let mut q = QueueIndex::default();
        let a = entry(1, Gender::Dude, Seeking::Girl, 1);
        let b = entry(2, Gender::Girl, Seeking::Dude, 2);
        q.reset(vec![a.clone(), b.clone()]);
        let t0 = Instant::now();
        q.saw(a.user, false, t0);
        q.saw(a.user, false, t0 + Duration::from_secs(5));
        assert_eq!(q.offline_users(), vec![a.user]);
        assert_eq!(all_users(&q.buckets(&HashSet::new())), vec![b.user]);
        assert!(q
            .offline_longer_than(Duration::from_secs(10), t0 + Duration::from_secs(9))
            .is_empty());
        assert_eq!(
            q.offline_longer_than(Duration::from_secs(10), t0 + Duration::from_secs(10)),
            vec![a.user],
            "the offline clock starts at the first sighting"
        );
        assert!(q.saw(a.user, true, t0), "back online");
        let exclude = HashSet::from([b.user]);
        assert_eq!(all_users(&q.buckets(&exclude)), vec![a.user]);
    }

    #[test]
    fn met_sets_survive_a_new_snapshot() {
        let mut q = QueueIndex::default();
        let a = entry(1, Gender::Dude, Seeking::Girl, 1);
        let b = entry(2, Gender::Girl, Seeking::Dude, 2);
        q.reset(vec![a.clone(), b.clone()]);
        assert_eq!(q.without_met().len(), 2);
        q.get_mut(a.user).unwrap().met = Some(HashSet::new());
        q.add_met(a.user, b.user);
        assert!(q.met(a.user, b.user) && q.met(b.user, a.user));
        q.reset(vec![a.clone(), b.clone()]);
        assert!(q.met(b.user, a.user));
        assert_eq!(q.without_met(), vec![b.user]);
    }
}
