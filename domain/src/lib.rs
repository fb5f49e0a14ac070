//! IO's domain: the rules of anonymous 1:1 chat and the ports they need.
//!
//! Nothing here does I/O of its own: storage goes through [`ports::Store`],
//! node-to-node traffic, presence, the queue and the matcher lease through
//! [`ports::Bus`]. The gateway (WebSocket) and the api (REST) both drive
//! [`chat::Chat`], so a rule lives in exactly one place.

pub mod batch;
pub mod chat;
pub mod error;
pub mod limits;
pub mod model;
pub mod outbox;
pub mod ports;
pub mod types;
pub mod writer;

pub use chat::{Actor, Arrival, Chat};
pub use error::{ChatError, ChatResult};
pub use ports::{Bus, BusError, BusResult, Store, StoreError, StoreResult};
