//! `corepool`: the command-line face of the pool. See `corepool --help`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Started by a pool as one of its workers? Then serve, and never reach the CLI.
    corepool_worker::init(corepool_worker::Registry::with_builtin_tasks);
    // Before anything else, so that no signal finds a half-done run without its handler.
    if let Err(error) = cli::signals::install() {
        eprintln!("corepool: cannot handle signals: {error}");
        return ExitCode::from(cli::EXIT_FAILED);
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version.
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            eprintln!("corepool: {}", one_line(&error.render().to_string()));
            return ExitCode::from(cli::EXIT_BAD_INPUT);
        }
    };
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A signal is stopping the run; its handler exits with the signal's code.
        Err(_) if cli::signals::interrupted() => loop {
            std::thread::park();
        },
        Err(failure) => {
            eprintln!("corepool: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// clap's multi-line message as one line: what is wrong, and the hints, without the
/// usage block.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:"))
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join(" ")
}
