//! `corepool`: the command-line face of the pool. See `corepool --help`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Started by a pool as one of its workers? Then serve, and never reach the CLI.
    corepool_worker::init(corepool_worker::Registry::with_builtin_tasks);
    match cli::run(cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("corepool: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
