//! Per-user rate limits of chat actions (design 3.4), shared by every
//! transport so REST and WebSocket draw from the same bucket. Limits are per
//! process: a user spread over two nodes gets each node's allowance, which
//! bounds abuse without a Redis round trip per event.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::error::ChatError;
use crate::types::UserId;

/// A rate: `burst` events at once, refilled to `per` every `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub burst: u32,
    pub per: u32,
    pub period: Duration,
}

impl Rate {
    pub const fn new(per: u32, period: Duration, burst: u32) -> Self {
        Rate { burst, per, period }
    }

    fn quota(self) -> Quota {
        let per = self.per.max(1);
        let interval = (self.period / per).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// The clock of every rate limiter: `std::time::Instant`. The default
/// clock (quanta) calibrates itself with CPUID instructions, which a
/// virtual machine traps, each time one is made (per socket, per refusal);
/// and a calibration taken on a busy machine can be off, letting a bucket
/// refill too fast.
pub type LimitClock = MonotonicClock;

/// A token bucket of one socket.
pub type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, LimitClock, NoOpMiddleware<Instant>>;

/// A per-socket token bucket.
pub fn direct(quota: Quota) -> DirectLimiter {
    RateLimiter::direct_with_clock(quota, LimitClock::default())
}

/// The configurable chat limits; `Default` is the design's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    pub find_match: Rate,
    pub messages: Rate,
    pub typing: Rate,
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            find_match: Rate::new(10, Duration::from_secs(300), 10),
            messages: Rate::new(30, Duration::from_secs(60), 10),
            typing: Rate::new(2, Duration::from_secs(1), 2),
        }
    }
}

/// A keyed limiter whose key map is pruned, so memory stays bounded by the
/// number of recently active keys.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    name: &'static str,
    inner: RateLimiter<K, DashMapStateStore<K>, LimitClock, NoOpMiddleware<Instant>>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(name: &'static str, rate: Rate) -> Self {
        KeyedLimiter {
            name,
            inner: RateLimiter::dashmap_with_clock(rate.quota(), LimitClock::default()),
        }
    }

    /// Take one token for `key`, or say how long until one is free.
    pub fn check(&self, key: &K) -> Result<(), ChatError> {
        self.inner.check_key(key).map_err(|not_until| {
            metrics::counter!("io_rate_limited_total", "limit" => self.name).increment(1);
            ChatError::RateLimited {
                retry_after: not_until.wait_time_from(self.inner.clock().now()),
            }
        })
    }

    /// Forget keys whose buckets are full again.
    pub fn prune(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }
}

/// The chat's limiters, one per action.
pub struct ChatLimiters {
    pub find_match: KeyedLimiter<UserId>,
    pub messages: KeyedLimiter<UserId>,
    pub typing: KeyedLimiter<UserId>,
}

impl ChatLimiters {
    pub fn new(limits: ChatLimits) -> Self {
        ChatLimiters {
            find_match: KeyedLimiter::new("find_match", limits.find_match),
            messages: KeyedLimiter::new("message", limits.messages),
            typing: KeyedLimiter::new("typing", limits.typing),
        }
    }

    pub fn prune(&self) {
        self.find_match.prune();
        self.messages.prune();
        self.typing.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_with_a_wait() {
        let l = KeyedLimiter::new("t", Rate::new(30, Duration::from_secs(60), 10));
        let u = UserId::new();
        for _ in 0..10 {
            l.check(&u).unwrap();
        }
        match l.check(&u) {
            Err(ChatError::RateLimited { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(2))
            }
            other => panic!("expected a limit, got {other:?}"),
        }
        l.check(&UserId::new()).unwrap();
    }
}
