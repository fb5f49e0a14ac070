//! IO's load harness. `loadtest <scenario>` drives a running IO (one node or
//! a cluster) with authenticated WebSockets and HTTP requests on the open
//! model, measures with HdrHistogram per phase, and judges the result
//! against `--threshold` limits. See loadtest/README.md.
//!
//! Shape: the [`coordinator`] plans a [`timeline::Timeline`] and starts
//! workers (a task, or copies of this binary for more sockets than one
//! process may open); each [`worker`] runs a [`scenario`] for its slice of
//! the users and reports a tick each second and an exact final snapshot.

pub mod cli;
pub mod coordinator;
pub mod http;
pub mod ledger;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod sys;
pub mod target;
pub mod timeline;
pub mod users;
pub mod worker;
pub mod ws;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Exit codes: 0 pass, 1 a threshold failed, 2 the run could not be done.
pub fn main_entry() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = cli::Cli::parse();
    let common = cli.scenario.common();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(t) = common.threads {
        builder.worker_threads(t.max(1));
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let (Some(index), Some(start_us)) = (common.worker_index, common.worker_start_us) {
        sys::raise_nofile_limit();
        let count = common.workers.max(1);
        let result = runtime.block_on(worker::run(
            cli.scenario.clone(),
            index,
            count,
            start_us,
            |msg| {
                let line = serde_json::to_string(&msg).expect("worker messages serialize");
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            },
        ));
        // Stop without waiting for sockets still held by tasks.
        runtime.shutdown_background();
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadtest worker {index}: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let result = runtime.block_on(coordinator::run(cli, args));
    runtime.shutdown_background();
    match result {
        Ok(coordinator::Outcome::Pass) => ExitCode::SUCCESS,
        Ok(coordinator::Outcome::Fail) => ExitCode::from(1),
        Ok(coordinator::Outcome::Broken) => ExitCode::from(2),
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
