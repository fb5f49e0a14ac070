//! The pairing rule of one round (design 3.4), as a pure function over the
//! round's candidates: no I/O, no clock, no randomness, so the same input
//! always yields the same pairs.
//!
//! The rule: candidates take turns oldest first (by `joined_at_ms`, ties by
//! user id); at its turn a candidate that is still free takes the oldest free
//! candidate that is compatible with it and that it never met. Whoever had
//! its turn leaves the pool, paired or not: a candidate that found nobody at
//! its turn cannot be chosen by a younger one either (compatibility and
//! "met" are symmetric, and every younger compatible candidate was free and
//! was therefore passed over only because they had met). The result is a
//! maximal matching: no two candidates left over are compatible and unmet.
//!
//! Scale: compatibility depends only on the (gender, seeking) [`Class`] of
//! each side, and there are six classes. Candidates arrive bucketed by
//! class, each bucket oldest first, so a turn looks at the first free
//! candidate of each compatible bucket instead of scanning everyone. Taken
//! candidates are skipped through a "next free" forest with path halving,
//! so the only scanning left is past candidates the current one has met.
//! A round costs O(n · α(n) + m) for n candidates and m met pairs among
//! them, not O(n²).

use io_domain::model::QueueEntry;
use io_domain::types::{Gender, Seeking, UserId};

/// A (gender, seeking) combination. Every member of one class is compatible
/// with every member of another exactly when the classes are compatible,
/// which is what lets a round reason about six buckets instead of pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Class {
    pub gender: Gender,
    pub seeking: Seeking,
}

impl Class {
    pub const COUNT: usize = 6;

    /// Every class, in [`Class::index`] order.
    pub const ALL: [Class; Class::COUNT] = [
        Class::new(Gender::Dude, Seeking::Dude),
        Class::new(Gender::Dude, Seeking::Girl),
        Class::new(Gender::Dude, Seeking::Any),
        Class::new(Gender::Girl, Seeking::Dude),
        Class::new(Gender::Girl, Seeking::Girl),
        Class::new(Gender::Girl, Seeking::Any),
    ];

    pub const fn new(gender: Gender, seeking: Seeking) -> Self {
        Class { gender, seeking }
    }

    pub fn of(entry: &QueueEntry) -> Self {
        Class::new(entry.gender, entry.seeking)
    }

    /// The bucket of this class, `0..Class::COUNT`.
    pub fn index(self) -> usize {
        let g = match self.gender {
            Gender::Dude => 0,
            Gender::Girl => 1,
        };
        let s = match self.seeking {
            Seeking::Dude => 0,
            Seeking::Girl => 1,
            Seeking::Any => 2,
        };
        g * 3 + s
    }

    /// Each one's gender is what the other is seeking (the same rule as
    /// [`QueueEntry::compatible`], minus the "not the same user" part).
    pub fn compatible(self, other: Class) -> bool {
        self.seeking.accepts(other.gender) && other.seeking.accepts(self.gender)
    }
}

/// A waiting user as a round sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub user: UserId,
    /// When they joined the queue (ms since the epoch): the turn order.
    pub joined_at_ms: i64,
}

impl Candidate {
    /// The total order of turns: oldest first, ties broken by user id so
    /// the outcome never depends on input order.
    pub fn turn_key(&self) -> (i64, UserId) {
        (self.joined_at_ms, self.user)
    }
}

/// A round's candidates by class ([`Class::index`]), each bucket sorted by
/// [`Candidate::turn_key`].
pub type Buckets = [Vec<Candidate>; Class::COUNT];

/// Two candidates to put in one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// The one whose turn it was (the older of the two).
    pub first: Candidate,
    /// The oldest compatible candidate `first` had never met.
    pub second: Candidate,
}

/// Pair the candidates of one round, oldest first, at most `max_pairs`
/// pairs (the oldest turns come first, so a cap serves the longest
/// waiting). `met` must be symmetric; it is asked only about candidates of
/// compatible classes. Each bucket must be sorted by turn key and a user
/// must appear at most once overall.
pub fn pair(
    buckets: &Buckets,
    met: impl Fn(UserId, UserId) -> bool,
    max_pairs: usize,
) -> Vec<Pair> {
    let mut compatible = [[false; Class::COUNT]; Class::COUNT];
    for a in Class::ALL {
        for b in Class::ALL {
            compatible[a.index()][b.index()] = a.compatible(b);
        }
    }
    let mut free: [FreeList; Class::COUNT] =
        std::array::from_fn(|c| FreeList::new(buckets[c].len()));
    let mut pairs = Vec::new();
    while pairs.len() < max_pairs {
        // Whose turn: the oldest free candidate over all buckets.
        let mut turn: Option<(usize, usize)> = None;
        for (c, bucket) in buckets.iter().enumerate() {
            let i = free[c].first_from(0);
            if i < bucket.len()
                && turn.is_none_or(|(tc, ti)| bucket[i].turn_key() < buckets[tc][ti].turn_key())
            {
                turn = Some((c, i));
            }
        }
        let Some((c, i)) = turn else { break };
        let me = buckets[c][i];
        free[c].take(i);

        // The oldest free, never-met candidate of each compatible bucket;
        // the oldest of those wins.
        let mut best: Option<(usize, usize)> = None;
        for (d, bucket) in buckets.iter().enumerate() {
            if !compatible[c][d] {
                continue;
            }
            let mut j = free[d].first_from(0);
            while j < bucket.len() && met(me.user, bucket[j].user) {
                j = free[d].first_from(j + 1);
            }
            if j < bucket.len()
                && best.is_none_or(|(bd, bj)| bucket[j].turn_key() < buckets[bd][bj].turn_key())
            {
                best = Some((d, j));
            }
        }
        if let Some((d, j)) = best {
            free[d].take(j);
            pairs.push(Pair {
                first: me,
                second: buckets[d][j],
            });
        }
    }
    pairs
}

/// Which positions of a bucket are still free, with "the first free
/// position at or after i" in near-constant amortized time: a disjoint-set
/// forest where a taken position points past itself.
struct FreeList {
    /// `next[i] == i` while position `i` is free; `next[len]` is the end.
    next: Vec<u32>,
}

impl FreeList {
    fn new(len: usize) -> Self {
        FreeList {
            next: (0..=len as u32).collect(),
        }
    }

    fn first_from(&mut self, mut i: usize) -> usize {
        // Path halving: every visited node skips to its grandparent.
        while self.next[i] as usize != i {
            let grand = self.next[self.next[i] as usize];
            self.next[i] = grand;
            i = grand as usize;
        }
        i
    }

    fn take(&mut self, i: usize) {
        self.next[i] = (i + 1) as u32;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use uuid::Uuid;

    use super::*;

    fn user(n: u128) -> UserId {
        UserId(Uuid::from_u128(n))
    }

    fn entry(n: u128, gender: Gender, seeking: Seeking, joined_at_ms: i64) -> QueueEntry {
        QueueEntry {
            user: user(n),
            gender,
            seeking,
            joined_at_ms,
        }
    }

    fn buckets_of(entries: &[QueueEntry]) -> Buckets {
        let mut buckets: Buckets = Default::default();
        for e in entries {
            buckets[Class::of(e).index()].push(Candidate {
                user: e.user,
                joined_at_ms: e.joined_at_ms,
            });
        }
        for b in &mut buckets {
            b.sort_by_key(Candidate::turn_key);
        }
        buckets
    }

    /// Met pairs, stored in both directions.
    #[derive(Default)]
    struct Met(HashSet<(UserId, UserId)>);

    impl Met {
        fn add(&mut self, a: UserId, b: UserId) {
            self.0.insert((a, b));
            self.0.insert((b, a));
        }
        fn has(&self, a: UserId, b: UserId) -> bool {
            self.0.contains(&(a, b))
        }
    }

    fn ids(pairs: &[Pair]) -> Vec<(UserId, UserId)> {
        pairs
            .iter()
            .map(|p| (p.first.user, p.second.user))
            .collect()
    }

    /// The rule written the obvious O(n²) way, to check the fast one against.
    fn reference(entries: &[QueueEntry], met: &Met, max_pairs: usize) -> Vec<(UserId, UserId)> {
        let mut sorted = entries.to_vec();
        sorted.sort_by_key(|e| (e.joined_at_ms, e.user));
        let mut gone = vec![false; sorted.len()];
        let mut pairs = Vec::new();
        for i in 0..sorted.len() {
            if pairs.len() == max_pairs {
                break;
            }
            if gone[i] {
                continue;
            }
            gone[i] = true;
            let partner = (0..sorted.len()).find(|&j| {
                !gone[j]
                    && sorted[i].compatible(&sorted[j])
                    && !met.has(sorted[i].user, sorted[j].user)
            });
            if let Some(j) = partner {
                gone[j] = true;
                pairs.push((sorted[i].user, sorted[j].user));
            }
        }
        pairs
    }

    #[test]
    fn class_compatibility_is_the_entry_rule() {
        for (i, a) in Class::ALL.iter().enumerate() {
            assert_eq!(a.index(), i);
            for b in Class::ALL {
                let ea = entry(1, a.gender, a.seeking, 0);
                let eb = entry(2, b.gender, b.seeking, 0);
                assert_eq!(a.compatible(b), ea.compatible(&eb), "{a:?} {b:?}");
                assert_eq!(a.compatible(b), b.compatible(*a), "symmetric");
            }
        }
    }

    #[test]
    fn only_mutually_compatible_users_are_paired() {
        use Gender::*;
        let entries = [
            entry(1, Dude, Seeking::Girl, 1),
            entry(2, Dude, Seeking::Dude, 2),
            entry(3, Girl, Seeking::Girl, 3),
            entry(4, Girl, Seeking::Any, 4),
            entry(5, Dude, Seeking::Any, 5),
            entry(6, Girl, Seeking::Dude, 6),
        ];
        let pairs = ids(&pair(&buckets_of(&entries), |_, _| false, usize::MAX));
        // 1 takes the oldest girl who accepts dudes (4); 2 takes the only
        // other dude-seeker who accepts dudes (5); 3 finds no girl seeking
        // girls that is left; 6 finds no dude left.
        assert_eq!(pairs, vec![(user(1), user(4)), (user(2), user(5))]);
        for (a, b) in pairs {
            let ea = entries.iter().find(|e| e.user == a).unwrap();
            let eb = entries.iter().find(|e| e.user == b).unwrap();
            assert!(ea.compatible(eb));
        }
    }

    #[test]
    fn oldest_waiting_first_and_oldest_partner() {
        use Gender::*;
        let entries = [
            entry(10, Girl, Seeking::Dude, 300),
            entry(11, Girl, Seeking::Dude, 100),
            entry(12, Girl, Seeking::Dude, 200),
            entry(20, Dude, Seeking::Girl, 250),
            entry(21, Dude, Seeking::Girl, 50),
        ];
        let pairs = ids(&pair(&buckets_of(&entries), |_, _| false, usize::MAX));
        // Turn order: 21 (50), 11 (100), 12 (200), 20 (250), 10 (300).
        // 21 takes the oldest girl (11); 12 takes the only dude left (20).
        assert_eq!(pairs, vec![(user(21), user(11)), (user(12), user(20))]);
        // With a cap of one pair, the longest waiting is served.
        let capped = ids(&pair(&buckets_of(&entries), |_, _| false, 1));
        assert_eq!(capped, vec![(user(21), user(11))]);
    }

    #[test]
    fn same_join_time_is_broken_by_user_id() {
        use Gender::*;
        let entries = [
            entry(7, Girl, Seeking::Dude, 100),
            entry(5, Girl, Seeking::Dude, 100),
            entry(9, Dude, Seeking::Girl, 100),
        ];
        let pairs = ids(&pair(&buckets_of(&entries), |_, _| false, usize::MAX));
        assert_eq!(pairs, vec![(user(5), user(9))]);
    }

    #[test]
    fn never_a_pair_that_met_before() {
        use Gender::*;
        let entries = [
            entry(1, Dude, Seeking::Girl, 1),
            entry(2, Girl, Seeking::Dude, 2),
            entry(3, Girl, Seeking::Dude, 3),
            entry(4, Dude, Seeking::Girl, 4),
        ];
        let mut met = Met::default();
        met.add(user(1), user(2));
        met.add(user(1), user(3));
        let pairs = ids(&pair(
            &buckets_of(&entries),
            |a, b| met.has(a, b),
            usize::MAX,
        ));
        // 1 met both girls and waits; 2 takes the next dude, 4.
        assert_eq!(pairs, vec![(user(2), user(4))]);

        met.add(user(2), user(4));
        met.add(user(3), user(4));
        let pairs = pair(&buckets_of(&entries), |a, b| met.has(a, b), usize::MAX);
        assert!(pairs.is_empty());
    }

    #[test]
    fn same_class_pairs_with_itself_but_not_with_the_same_user() {
        let entries = [entry(1, Gender::Dude, Seeking::Any, 1)];
        assert!(pair(&buckets_of(&entries), |_, _| false, usize::MAX).is_empty());
        let entries = [
            entry(1, Gender::Dude, Seeking::Any, 1),
            entry(2, Gender::Dude, Seeking::Any, 2),
            entry(3, Gender::Dude, Seeking::Dude, 3),
        ];
        let pairs = ids(&pair(&buckets_of(&entries), |_, _| false, usize::MAX));
        assert_eq!(pairs, vec![(user(1), user(2))]);
    }

    fn random_case(rng: &mut StdRng, n: usize) -> (Vec<QueueEntry>, Met) {
        let entries: Vec<QueueEntry> = (0..n)
            .map(|i| {
                let class = Class::ALL[rng.gen_range(0..Class::COUNT)];
                // Narrow join times so ties happen.
                entry(
                    rng.gen::<u64>() as u128 | ((i as u128) << 64),
                    class.gender,
                    class.seeking,
                    rng.gen_range(0..(n as i64 / 2).max(1)),
                )
            })
            .collect();
        let mut met = Met::default();
        for _ in 0..rng.gen_range(0..=n * 3) {
            let a = entries[rng.gen_range(0..n)].user;
            let b = entries[rng.gen_range(0..n)].user;
            if a != b {
                met.add(a, b);
            }
        }
        (entries, met)
    }

    #[test]
    fn agrees_with_the_quadratic_reference_and_is_maximal() {
        let mut rng = StdRng::seed_from_u64(7);
        for round in 0..300 {
            let n = rng.gen_range(1..60);
            let (entries, met) = random_case(&mut rng, n);
            let cap = if round % 5 == 0 {
                rng.gen_range(0..10)
            } else {
                usize::MAX
            };
            let got = ids(&pair(&buckets_of(&entries), |a, b| met.has(a, b), cap));
            assert_eq!(got, reference(&entries, &met, cap), "case {round}");

            if cap == usize::MAX {
                let paired: HashSet<UserId> = got.iter().flat_map(|&(a, b)| [a, b]).collect();
                let left: Vec<&QueueEntry> = entries
                    .iter()
                    .filter(|e| !paired.contains(&e.user))
                    .collect();
                for a in &left {
                    for b in &left {
                        assert!(
                            !a.compatible(b) || met.has(a.user, b.user),
                            "case {round}: {a:?} and {b:?} were left waiting"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn deterministic_whatever_the_input_order() {
        let mut rng = StdRng::seed_from_u64(11);
        let (mut entries, met) = random_case(&mut rng, 500);
        let first = ids(&pair(
            &buckets_of(&entries),
            |a, b| met.has(a, b),
            usize::MAX,
        ));
        for _ in 0..5 {
            entries.shuffle(&mut rng);
            let again = ids(&pair(
                &buckets_of(&entries),
                |a, b| met.has(a, b),
                usize::MAX,
            ));
            assert_eq!(first, again);
        }
    }

    #[test]
    fn work_grows_with_candidates_and_met_pairs_not_their_square() {
        // Count the only per-candidate scanning step (a `met` question):
        // a quadratic scan would ask billions of them here.
        let mut rng = StdRng::seed_from_u64(3);
        let n = 100_000;
        let (entries, met) = random_case(&mut rng, n);
        let asked = std::cell::Cell::new(0usize);
        let pairs = pair(
            &buckets_of(&entries),
            |a, b| {
                asked.set(asked.get() + 1);
                met.has(a, b)
            },
            usize::MAX,
        );
        assert!(pairs.len() > n / 3, "{}", pairs.len());
        // At most one "yes" per met pair and direction, and one "no" per
        // compatible bucket per turn.
        assert!(
            asked.get() <= met.0.len() + Class::COUNT * n,
            "asked {} times",
            asked.get()
        );
    }
}
