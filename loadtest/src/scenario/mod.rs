//! The four workloads. Each spawns one task per user (or socket) of its
//! worker's slice and returns when they are all done.

use std::sync::Arc;

use crate::cli::Scenario;
use crate::users::User;
use crate::worker::{Ctx, Slice};

pub mod api;
pub mod chat;
pub mod churn;
pub mod connect;
mod talk;

pub async fn run(ctx: Arc<Ctx>, scenario: &Scenario, users: Vec<User>, slice: Slice) {
    match scenario {
        Scenario::Connect(a) => connect::run(ctx, a, users, slice).await,
        Scenario::Chat(a) => chat::run(ctx, a, users, slice).await,
        Scenario::Churn(a) => churn::run(ctx, a, users, slice).await,
        Scenario::Api(a) => api::run(ctx, a, users, slice).await,
    }
}

/// A spread of start offsets in [0, 1) that does not bunch up, by index.
pub(crate) fn spread(j: usize) -> f64 {
    // Fractional parts of multiples of the golden ratio are evenly spread.
    (j as f64 * 0.618_033_988_749_895).fract()
}

/// Node for user `j` in round-robin order.
pub(crate) fn node_round_robin(j: usize, nodes: usize) -> usize {
    j % nodes.max(1)
}
