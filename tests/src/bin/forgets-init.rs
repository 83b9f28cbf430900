//! A program that uses the pool with a function of its own, but forgets to call
//! `corepool::init` first thing in `main`: each worker it starts runs this `main` again and
//! builds a pool of its own, which must fail at once with an error that says what was
//! forgotten, never start more workers.
//!
//! `FORGETS_INIT_WORKER_SETUP_MS`: a worker first spends that long in set-up of its own,
//! as a program that loads data before its pool would (no corepool code runs meanwhile).
//! `FORGETS_INIT_RUNS`: a file to which each run of `main` adds a line, `coordinator` or
//! `worker`.

use std::{io::Write, process::ExitCode, time::Duration};

use corepool::{Pool, PoolError};

fn square(x: i64) -> i64 {
    x * x
}

fn main() -> ExitCode {
    if let Some(runs) = std::env::var_os("FORGETS_INIT_RUNS") {
        let role = if corepool_worker::started_as_worker() { "worker\n" } else { "coordinator\n" };
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(runs).expect("the runs file opens");
        file.write_all(role.as_bytes()).expect("the run is recorded");
    }
    if corepool_worker::started_as_worker()
        && let Some(millis) = std::env::var("FORGETS_INIT_WORKER_SETUP_MS").ok().and_then(|text| text.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(millis));
    }
    let squares = || -> Result<Vec<i64>, PoolError> {
        let pool = Pool::builder().workers(2).build()?;
        pool.map(square, 0..100)
    };
    match squares() {
        Ok(squares) => {
            println!("{}", squares.iter().sum::<i64>());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("forgets-init: {error}");
            ExitCode::FAILURE
        }
    }
}
