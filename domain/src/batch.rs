//! Natural batching, shared by the node's batch workers (group commit,
//! outbox, arrivals): wait for one request, then take whatever else queued
//! up meanwhile. At low load a batch is one request and waits for nothing;
//! under load batches grow while the previous one is in flight.

use tokio::sync::mpsc;

/// Wait for one item, then move it and every item already queued (up to
/// `max` in all) into `into`. `false` once the channel is closed and empty.
pub async fn next_batch<T>(rx: &mut mpsc::Receiver<T>, max: usize, into: &mut Vec<T>) -> bool {
    match rx.recv().await {
        Some(first) => into.push(first),
        None => return false,
    }
    while into.len() < max {
        match rx.try_recv() {
            Ok(item) => into.push(item),
            Err(_) => break,
        }
    }
    true
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
}
