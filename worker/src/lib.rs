//! The worker side of corepool's runtime, re-exported by the `corepool` crate.
//!
//! A worker is started by a coordinator (a `corepool::Pool`), connects to the coordinator's
//! socket, proves that it knows the run's secret, then runs the chunks it is sent until it
//! is told to stop or the connection closes. It also dies with its coordinator (a
//! parent-death signal, set before it runs a line of its own).
//!
//! A worker is the coordinator's own program started again: [`init`] (or [`init_with`],
//! with the [`Registry`] of [`Task`]s it runs by name) first thing in `main` turns that
//! process into a worker, and returns at once in any other.

pub mod connection;
pub mod function;
mod platform;
pub mod serve;
pub mod task;

mod panics;
mod test_knobs;

use std::{
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

pub use connection::{CoordinatorConnection, SocketConnection};
pub use serve::{WorkerConfig, WorkerError};
pub use task::{Registry, Task, decode_output, decode_outputs, decode_outputs_into, encode_payload};

/// Exit code of a worker that was not started by a coordinator, or could not join it.
pub const EXIT_NOT_A_WORKER: u8 = 2;
/// Exit code of a worker whose connection failed after it joined.
pub const EXIT_CONNECTION_FAILED: u8 = 3;
/// Exit code of a worker whose initializer failed; its message is in the file
/// [`initializer_failure_file`] names.
pub const EXIT_INITIALIZER_FAILED: u8 = 4;
/// Exit code of a process started as a worker whose program built a pool instead of
/// serving: its `main` does not call [`init`] first. It leaves a note in the file
/// [`initializer_failure_file`] names.
pub const EXIT_INIT_FORGOTTEN: u8 = 5;

/// Where worker `index` leaves the message of its failed initializer: in the pool's private
/// folder `folder`, beside its socket.
pub fn initializer_failure_file(folder: &std::path::Path, index: u32) -> std::path::PathBuf {
    folder.join(format!("initializer-failed-{index}"))
}

/// Whether this process was started by a coordinator to be a worker.
pub fn started_as_worker() -> bool {
    std::env::var_os(serve::ENDPOINT_ENV).is_some()
}

/// Set once this process serves as a worker: from then on its own code runs only in tasks.
static SERVING: AtomicBool = AtomicBool::new(false);

/// Whether this process serves as a worker (its `main` called [`init`]).
pub fn serving() -> bool {
    SERVING.load(Ordering::SeqCst)
}

/// In a process started as a worker that does not serve, because its `main` builds a pool
/// without calling [`init`] first: tells the coordinator so and exits, so that the
/// coordinator fails at once rather than start this program again and again. Returns in
/// any other process.
pub fn exit_if_init_forgotten() {
    if !started_as_worker() || serving() {
        return;
    }
    let folder = std::env::var_os(serve::ENDPOINT_ENV).map(std::path::PathBuf::from);
    let index = std::env::var(serve::INDEX_ENV).ok().and_then(|text| text.parse().ok());
    if let (Some(folder), Some(index)) = (folder.as_deref().and_then(std::path::Path::parent), index) {
        // The coordinator reads it when it sees the exit code.
        let _ = std::fs::write(initializer_failure_file(folder, index), "main builds a pool without corepool::init()");
    }
    std::process::exit(i32::from(EXIT_INIT_FORGOTTEN));
}

/// If this process was started as a worker, serves and exits; otherwise returns at once.
/// Call it first thing in `main`.
pub fn init() {
    init_with(Registry::new);
}

/// Like [`init`], for a worker that also runs the tasks `registry` names.
pub fn init_with(registry: impl FnOnce() -> Registry) {
    if started_as_worker() {
        let code = main_with(registry());
        let code = match code {
            code if code == ExitCode::SUCCESS => 0,
            code if code == ExitCode::from(EXIT_INITIALIZER_FAILED) => i32::from(EXIT_INITIALIZER_FAILED),
            _ => i32::from(EXIT_CONNECTION_FAILED),
        };
        platform::exit_at_once(code);
    }
}

/// The whole life of a worker process serving `registry`, as its exit code.
pub fn main_with(registry: Registry) -> ExitCode {
    SERVING.store(true, Ordering::SeqCst);
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
        Err(WorkerError::Initializer(message)) => {
            // The coordinator reads it from there when it sees this exit code.
            let folder = config.endpoint.parent().unwrap_or(std::path::Path::new("."));
            if std::fs::write(initializer_failure_file(folder, config.index), &message).is_err() {
                eprintln!("corepool-w{}: the initializer failed: {message}", config.index);
            }
            ExitCode::from(EXIT_INITIALIZER_FAILED)
        }
        Err(error) => {
            eprintln!("{}: {error}", config.name);
            ExitCode::from(EXIT_CONNECTION_FAILED)
        }
    }
}
