//! The `io` binary as a library: configuration, telemetry, the public
//! listener and the wiring of roles. `main` only parses, starts and waits,
//! so tests start exactly what production runs.

pub mod admin;
pub mod app;
pub mod config;
pub mod http;
pub mod telemetry;
