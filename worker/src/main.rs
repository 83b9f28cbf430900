//! `corepool-worker`: a worker process with corepool's built-in tasks. Coordinators start
//! it; it is not meant to be run by hand.

fn main() -> std::process::ExitCode {
    corepool_worker::main_with(corepool_worker::Registry::with_builtin_tasks())
}
