//! The shape of a run in time, computed the same way by the coordinator and
//! every worker from the arguments and one shared start instant.

use serde::{Deserialize, Serialize};

use crate::cli::Scenario;
use crate::stats::Phase;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Timeline {
    /// The first connection attempt, on the shared monotonic clock (µs).
    pub start_us: u64,
    /// End of the ramp: every connection attempt started (plus warm-up).
    pub ramp_end_us: u64,
    /// End of the steady phase: nothing new is scheduled after this.
    pub steady_end_us: u64,
    /// End of the drain: outstanding answers are no longer awaited.
    pub drain_end_us: u64,
    /// The process stops no matter what.
    pub hard_end_us: u64,
}

const S: f64 = 1_000_000.0;

impl Timeline {
    /// `connections` is how many connection attempts the ramp schedules.
    pub fn plan(scenario: &Scenario, start_us: u64, connections: usize) -> Timeline {
        let c = scenario.common();
        let ramp_rate = c.ramp_rate.max(0.001);
        let mut ramp_s = connections as f64 / ramp_rate;
        if let Scenario::Chat(a) = scenario {
            ramp_s += a.warmup.max(0.0);
        }
        let ramp_end_us = start_us + (ramp_s * S) as u64;
        let steady_end_us = ramp_end_us + (c.duration.max(0.0) * S) as u64;
        let mut drain_s = c.drain.max(0.0);
        match scenario {
            // Sockets close when the hold ends: nothing is outstanding.
            Scenario::Connect(_) => drain_s = 0.0,
            // A cycle under way when the steady phase ends may still need its steps.
            Scenario::Churn(a) => drain_s = drain_s.max(4.0 * a.step_timeout),
            _ => {}
        }
        let drain_end_us = steady_end_us + (drain_s * S) as u64;
        let planned_s = (drain_end_us - start_us) as f64 / S;
        let hard_s = c.hard_timeout.unwrap_or(planned_s + 60.0);
        Timeline {
            start_us,
            ramp_end_us,
            steady_end_us,
            drain_end_us,
            hard_end_us: start_us + (hard_s * S) as u64,
        }
    }

    pub fn phase(&self, at_us: u64) -> Phase {
        if at_us < self.ramp_end_us {
            Phase::Ramp
        } else if at_us < self.steady_end_us {
            Phase::Steady
        } else {
            Phase::Drain
        }
    }

    /// When connection attempt `j` is scheduled.
    pub fn connect_at(&self, j: usize, ramp_rate: f64) -> u64 {
        self.start_us + (j as f64 / ramp_rate.max(0.001) * S) as u64
    }

    pub fn ramp_s(&self) -> f64 {
        (self.ramp_end_us - self.start_us) as f64 / S
    }

    pub fn steady_s(&self) -> f64 {
        (self.steady_end_us - self.ramp_end_us) as f64 / S
    }

    pub fn drain_s(&self) -> f64 {
        (self.drain_end_us - self.steady_end_us) as f64 / S
    }
}
