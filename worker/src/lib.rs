//! The corepool worker: the process that runs tasks, and the tasks it runs.
//!
//! A worker is started by a coordinator (the `corepool` library's `Pool`), connects to
//! the coordinator's socket, proves that it knows the run's secret, then runs the chunks
//! it is sent until it is told to stop or the connection closes. It also dies with its
//! coordinator (a parent-death signal on Linux).
//!
//! # Tasks of your own
//!
//! A task is a type implementing [`Task`]. A worker can only run tasks that its
//! [`Registry`] knows, so a program with tasks of its own either builds its own worker
//! binary:
//!
//! ```no_run
//! # use corepool_worker::{Registry, tasks::CountInRange};
//! fn main() -> std::process::ExitCode {
//!     corepool_worker::main_with(Registry::with_builtin_tasks().register::<CountInRange>())
//! }
//! ```
//!
//! or serves as its own worker, by calling [`init`] first thing in `main` (the `corepool`
//! command does this, so it never needs a separate binary).

pub mod platform;
pub mod serve;
pub mod task;
pub mod tasks;
pub mod text;
pub mod values;

mod panics;
mod test_knobs;

use std::process::ExitCode;

pub use serve::{WorkerConfig, WorkerError};
pub use task::{Registry, Task, decode_output, decode_outputs, decode_outputs_into, encode_payload};

/// Exit code of a worker that was not started by a coordinator, or could not join it.
pub const EXIT_NOT_A_WORKER: u8 = 2;
/// Exit code of a worker whose connection failed after it joined.
pub const EXIT_CONNECTION_FAILED: u8 = 3;

/// Whether this process was started by a coordinator to be a worker.
pub fn started_as_worker() -> bool {
    std::env::var_os(serve::ENDPOINT_ENV).is_some()
}

/// If this process was started as a worker, serves `registry` and exits; otherwise
/// returns at once. Call it first thing in `main` of a program that is its own worker.
pub fn init(registry: impl FnOnce() -> Registry) {
    if started_as_worker() {
        let code = main_with(registry());
        std::process::exit(if code == ExitCode::SUCCESS { 0 } else { i32::from(EXIT_CONNECTION_FAILED) });
    }
}

/// The whole life of a worker process serving `registry`, as its exit code.
pub fn main_with(registry: Registry) -> ExitCode {
    platform::keep_freed_memory_for_reuse();
    let config = match WorkerConfig::from_env_and_stdin() {
        Ok(config) => config,
        // The coordinator died before it could say how to run: nothing to report.
        Err(error) if error.is_disconnect() => return ExitCode::from(EXIT_NOT_A_WORKER),
        Err(error) => {
            eprintln!("corepool-worker: {error}");
            return ExitCode::from(EXIT_NOT_A_WORKER);
        }
    };
    match serve::serve(&config, &registry) {
        Ok(()) => ExitCode::SUCCESS,
        // The coordinator went away (it stopped, or was killed): nothing to report.
        Err(error) if error.is_disconnect() => ExitCode::from(EXIT_CONNECTION_FAILED),
        Err(error) => {
            eprintln!("corepool-w{}: {error}", config.index);
            ExitCode::from(EXIT_CONNECTION_FAILED)
        }
    }
}
