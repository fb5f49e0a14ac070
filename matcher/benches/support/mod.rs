//! What the pairing benchmark needs around the matcher: the adapters of one
//! run ([`world`]) and what it observes besides its own clocks ([`probes`]).

pub mod probes;
pub mod world;
