//! What `connected` needs, read for many joins at once. A connect storm (a
//! node drained, a deploy, a network blip) is thousands of joins within a
//! second; reading each user and session on its own costs two database
//! round trips per socket and swamps the pool. Joins queue here instead and
//! are answered in batches ([`Chat::arrivals`]): at low load a batch is one
//! join, under load a handful of batches run side by side while the next
//! ones fill up.

use std::sync::Arc;
use std::time::Instant;

use io_domain::batch::next_batch;
use io_domain::types::UserId;
use io_domain::{Arrival, Chat, ChatError, ChatResult};
use tokio::sync::{mpsc, oneshot, Semaphore};

type Reply = oneshot::Sender<ChatResult<Arrival>>;

/// Handle to the node's arrivals task.
#[derive(Clone)]
pub(crate) struct Arrivals {
    tx: mpsc::Sender<(UserId, Reply)>,
}

impl Arrivals {
    /// At most this many joins per batch.
    const MAX_BATCH: usize = 500;
    /// Batches in flight at once.
    const IN_FLIGHT: usize = 4;

    /// Start the task on the current runtime; it ends when every handle
    /// is dropped.
    pub fn spawn(chat: Arc<Chat>) -> Self {
        let (tx, rx) = mpsc::channel(16 * Self::MAX_BATCH);
        tokio::spawn(run(chat, rx));
        Arrivals { tx }
    }

    /// Where `user` stands, read as part of the next batch.
    pub async fn load(&self, user: UserId) -> ChatResult<Arrival> {
        let stopped = || ChatError::Unavailable("arrivals task stopped".into());
        let (reply, answer) = oneshot::channel();
        self.tx.send((user, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(chat: Arc<Chat>, mut rx: mpsc::Receiver<(UserId, Reply)>) {
    let slots = Arc::new(Semaphore::new(Arrivals::IN_FLIGHT));
    let mut queued = Vec::with_capacity(Arrivals::MAX_BATCH);
    loop {
        // Wait for a free slot first: while every slot is busy, joins keep
        // queueing and the next batch grows.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if !next_batch(&mut rx, Arrivals::MAX_BATCH, &mut queued).await {
            return;
        }
        let (users, replies): (Vec<UserId>, Vec<Reply>) = queued.drain(..).unzip();
        let chat = chat.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let answers = chat.arrivals(&users).await;
            metrics::histogram!("io_gateway_join_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("io_gateway_join_batch_size").record(users.len() as f64);
            match answers {
                Ok(answers) => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            drop(slot);
        });
    }
}
