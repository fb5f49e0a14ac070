//! Group commit for chat messages. Every node funnels its messages through
//! one writer task that commits whatever has queued up as one transaction;
//! batches grow while the previous commit is in flight, so the cost per
//! message falls as the rate rises. Commits also start at least a commit
//! interval apart ([`Pacer`]): a message that comes after a quiet spell
//! commits at once, one that comes sooner waits for the interval and shares
//! the commit with what arrives meanwhile. A commit's fixed cost is most of
//! the store's CPU, and a busy node that committed back to back spent it
//! on batches of a few messages each. A sender's ack waits for its commit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::batch::{next_batch, Pacer};
use crate::model::{Message, NewMessage};
use crate::ports::{Store, StoreError, StoreResult};

type Reply = oneshot::Sender<StoreResult<Message>>;

/// Handle to the node's message writer task.
#[derive(Clone)]
pub struct MessageWriter {
    tx: mpsc::Sender<(NewMessage, Reply)>,
}

impl MessageWriter {
    /// At most this many messages per transaction.
    pub const MAX_BATCH: usize = 1000;

    /// Start the writer task, its commits starting at least
    /// `commit_interval` apart. It ends when every handle is dropped.
    pub fn spawn(store: Arc<dyn Store>, commit_interval: Duration) -> Self {
        let (tx, rx) = mpsc::channel(16 * Self::MAX_BATCH);
        tokio::spawn(run(store, rx, Pacer::new(commit_interval)));
        MessageWriter { tx }
    }

    /// Commit one message; resolves once it is durable (or refused).
    pub async fn append(&self, message: NewMessage) -> StoreResult<Message> {
        self.submit(message).await?.await
    }

    /// Queue one message for the next batch and return at once with the
    /// future of its commit. Messages queued one after the other are
    /// committed in that order, so a socket can have several in flight
    /// without its messages changing places.
    pub async fn submit(
        &self,
        message: NewMessage,
    ) -> StoreResult<impl std::future::Future<Output = StoreResult<Message>> + Send + 'static> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send((message, reply))
            .await
            .map_err(|_| StoreError::Unavailable("message writer stopped".into()))?;
        Ok(async move {
            done.await
                .map_err(|_| StoreError::Unavailable("message writer stopped".into()))?
        })
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(NewMessage, Reply)>, mut pacer: Pacer) {
    let mut queued = Vec::with_capacity(MessageWriter::MAX_BATCH);
    while next_batch(&mut rx, MessageWriter::MAX_BATCH, &mut queued).await {
        let waited = pacer
            .pace(&mut rx, MessageWriter::MAX_BATCH, &mut queued)
            .await;
        metrics::histogram!("io_message_commit_wait_seconds").record(waited.as_secs_f64());
        let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = queued.drain(..).unzip();
        let started = Instant::now();
        let outcome = store.append_messages(&messages).await;
        metrics::histogram!("io_message_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("io_message_commit_batch_size").record(messages.len() as f64);
        match outcome {
            Ok(results) => {
                // A store that answered fewer results than messages leaves
                // replies behind; dropping them tells those senders the
                // write failed.
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                metrics::counter!("io_message_commit_failures_total").increment(1);
                tracing::warn!(error = %e, batch = messages.len(), "message batch failed to commit");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
