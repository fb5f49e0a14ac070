//! Natural batching, shared by the node's batch workers (group commit,
//! outbox, arrivals): wait for one request, then take whatever else queued
//! up meanwhile. At low load a batch is one request and waits for nothing;
//! under load batches grow while the previous one is in flight. A
//! [`Pacer`] spaces a worker's batches out further where each batch has a
//! high fixed cost (a commit).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Wait for one item, then move it and every item already queued (up to
/// `max` in all) into `into`. `false` once the channel is closed and empty.
pub async fn next_batch<T>(rx: &mut mpsc::Receiver<T>, max: usize, into: &mut Vec<T>) -> bool {
    match rx.recv().await {
        Some(first) => into.push(first),
        None => return false,
    }
    take_queued(rx, max, into);
    true
}

/// Move the items already queued into `into`, until it holds `max`.
fn take_queued<T>(rx: &mut mpsc::Receiver<T>, max: usize, into: &mut Vec<T>) {
    while into.len() < max {
        match rx.try_recv() {
            Ok(item) => into.push(item),
            Err(_) => break,
        }
    }
}

/// Starts a worker's batches at least `interval` apart. A batch that would
/// start sooner waits out the interval (to the timer's next millisecond
/// tick) and takes in what queued up meanwhile; after a pause longer than
/// the interval the next batch starts at once.
pub struct Pacer {
    interval: Duration,
    last: Option<Instant>,
}

impl Pacer {
    pub fn new(interval: Duration) -> Self {
        Pacer {
            interval,
            last: None,
        }
    }

    /// Call with a batch [`next_batch`] just took; returns when it may
    /// start, with how long it waited.
    pub async fn pace<T>(
        &mut self,
        rx: &mut mpsc::Receiver<T>,
        max: usize,
        into: &mut Vec<T>,
    ) -> Duration {
        let arrived = Instant::now();
        if let Some(due) = self.last.map(|t| t + self.interval) {
            if due > arrived && into.len() < max {
                tokio::time::sleep_until(due).await;
                take_queued(rx, max, into);
            }
        }
        let now = Instant::now();
        self.last = Some(now);
        now - arrived
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn takes_what_is_queued_up_to_the_limit() {
        let (tx, mut rx) = mpsc::channel(10);
        for i in 0..5 {
            tx.send(i).await.unwrap();
        }
        let mut got = Vec::new();
        assert!(next_batch(&mut rx, 3, &mut got).await);
        assert_eq!(got, [0, 1, 2]);
        got.clear();
        assert!(next_batch(&mut rx, 3, &mut got).await);
        assert_eq!(got, [3, 4]);
        drop(tx);
        got.clear();
        assert!(!next_batch(&mut rx, 3, &mut got).await);
        assert!(got.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_pacer_spaces_batches_and_gathers_what_arrives_meanwhile() {
        let interval = Duration::from_millis(2);
        let (tx, mut rx) = mpsc::channel(10);
        let mut pacer = Pacer::new(interval);
        let mut got = Vec::new();

        // The first batch goes at once.
        tx.send(0).await.unwrap();
        assert!(next_batch(&mut rx, 10, &mut got).await);
        assert_eq!(pacer.pace(&mut rx, 10, &mut got).await, Duration::ZERO);
        assert_eq!(got, [0]);
        let first = Instant::now();

        // The next one waits out the interval and takes in a late arrival.
        got.clear();
        tx.send(1).await.unwrap();
        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            late.send(2).await.unwrap();
        });
        assert!(next_batch(&mut rx, 10, &mut got).await);
        assert_eq!(pacer.pace(&mut rx, 10, &mut got).await, interval);
        assert_eq!(got, [1, 2]);
        assert_eq!(Instant::now() - first, interval);

        // After a longer pause there is nothing to wait for.
        got.clear();
        tokio::time::sleep(Duration::from_millis(5)).await;
        tx.send(3).await.unwrap();
        assert!(next_batch(&mut rx, 10, &mut got).await);
        assert_eq!(pacer.pace(&mut rx, 10, &mut got).await, Duration::ZERO);

        // A full batch does not wait either.
        got.clear();
        for i in 4..7 {
            tx.send(i).await.unwrap();
        }
        assert!(next_batch(&mut rx, 3, &mut got).await);
        assert_eq!(pacer.pace(&mut rx, 3, &mut got).await, Duration::ZERO);
        assert_eq!(got, [4, 5, 6]);
    }
}
