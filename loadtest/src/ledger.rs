//! Which chat messages were acknowledged to their sender and which reached
//! the partner, kept as ranges of per-sender message numbers. Sender and
//! partner may live in different worker processes, so each worker reports
//! its half and the coordinator computes losses from the merged ledger.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A set of u64 as sorted, disjoint, half-open ranges. Message numbers
/// arrive almost in order, so this stays a handful of ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// Insert `v`; false when it was already there.
    pub fn insert(&mut self, v: u64) -> bool {
        // The first range that ends at or after v.
        let i = self.0.partition_point(|&(_, end)| end < v);
        if let Some(&(start, end)) = self.0.get(i) {
            if start <= v && v < end {
                return false;
            }
            if end == v {
                self.0[i].1 = v + 1;
                if let Some(&(next_start, next_end)) = self.0.get(i + 1) {
                    if next_start == v + 1 {
                        self.0[i].1 = next_end;
                        self.0.remove(i + 1);
                    }
                }
                return true;
            }
            if start == v + 1 {
                self.0[i].0 = v;
                return true;
            }
        }
        self.0.insert(i, (v, v + 1));
        true
    }

    pub fn contains(&self, v: u64) -> bool {
        let i = self.0.partition_point(|&(_, end)| end <= v);
        self.0.get(i).is_some_and(|&(s, _)| s <= v)
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn union(&mut self, other: &RangeSet) {
        let mut all: Vec<(u64, u64)> = self.0.iter().chain(other.0.iter()).copied().collect();
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (s, e) in all {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.0 = merged;
    }

    /// How many members of `self` are not in `other`.
    pub fn count_missing_from(&self, other: &RangeSet) -> u64 {
        let mut missing = 0;
        for &(s, e) in &self.0 {
            let mut covered = 0;
            for &(os, oe) in &other.0 {
                let lo = s.max(os);
                let hi = e.min(oe);
                if lo < hi {
                    covered += hi - lo;
                }
            }
            missing += (e - s) - covered;
        }
        missing
    }
}

/// One worker's half of the books.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// Sender (global user index) → message numbers it got its own copy of.
    pub acked: BTreeMap<u32, RangeSet>,
    /// Sender → message numbers that reached its partner.
    pub delivered: BTreeMap<u32, RangeSet>,
    /// Sender → message numbers it sent.
    pub sent: BTreeMap<u32, RangeSet>,
    /// Session id → the node indexes its participants were connected to (as seen here).
    pub sessions: BTreeMap<String, Vec<u8>>,
}

impl Ledger {
    pub fn merge(&mut self, other: &Ledger) {
        for (k, v) in &other.acked {
            self.acked.entry(*k).or_default().union(v);
        }
        for (k, v) in &other.delivered {
            self.delivered.entry(*k).or_default().union(v);
        }
        for (k, v) in &other.sent {
            self.sent.entry(*k).or_default().union(v);
        }
        for (k, v) in &other.sessions {
            self.sessions.entry(k.clone()).or_default().extend(v);
        }
    }

    /// Messages acknowledged to their sender that never reached the partner.
    pub fn lost(&self) -> u64 {
        let empty = RangeSet::default();
        self.acked
            .iter()
            .map(|(s, acked)| acked.count_missing_from(self.delivered.get(s).unwrap_or(&empty)))
            .sum()
    }

    /// Messages sent whose own copy never came back.
    pub fn unacked(&self) -> u64 {
        let empty = RangeSet::default();
        self.sent
            .iter()
            .map(|(s, sent)| sent.count_missing_from(self.acked.get(s).unwrap_or(&empty)))
            .sum()
    }

    /// `(pairs seen with both users, pairs whose users were on different nodes)`.
    pub fn pairs(&self) -> (u64, u64) {
        let mut pairs = 0;
        let mut cross = 0;
        for nodes in self.sessions.values() {
            if nodes.len() >= 2 {
                pairs += 1;
                if nodes.iter().any(|n| *n != nodes[0]) {
                    cross += 1;
                }
            }
        }
        (pairs, cross)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_insert_merge_and_dedupe() {
        let mut r = RangeSet::default();
        for v in [0, 1, 2, 5, 4, 3, 9] {
            assert!(r.insert(v));
        }
        assert!(!r.insert(4));
        assert_eq!(r.0, vec![(0, 6), (9, 10)]);
        assert!(r.contains(5) && !r.contains(6) && r.contains(9));
        assert_eq!(r.len(), 7);
        let mut other = RangeSet::default();
        other.insert(7);
        other.insert(6);
        r.union(&other);
        assert_eq!(r.0, vec![(0, 8), (9, 10)]);
    }

    #[test]
    fn lost_is_acked_minus_delivered_across_workers() {
        let mut sender_side = Ledger::default();
        let mut receiver_side = Ledger::default();
        for k in 0..10 {
            sender_side.sent.entry(1).or_default().insert(k);
            if k != 9 {
                sender_side.acked.entry(1).or_default().insert(k);
            }
            if k != 3 {
                receiver_side.delivered.entry(1).or_default().insert(k);
            }
        }
        sender_side.sessions.insert("s".into(), vec![0]);
        receiver_side.sessions.insert("s".into(), vec![1]);
        let mut all = Ledger::default();
        all.merge(&sender_side);
        all.merge(&receiver_side);
        assert_eq!(all.lost(), 1);
        assert_eq!(all.unacked(), 1);
        assert_eq!(all.pairs(), (1, 1));
    }
}
