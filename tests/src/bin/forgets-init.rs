//! A program that uses the pool with a function of its own, but forgets to call
//! `corepool::init` first thing in `main`: each worker it starts runs this `main` again and
//! builds a pool of its own, which must fail at once with an error that says what was
//! forgotten, never start more workers.
//!
//! `FORGETS_INIT_WORKER_SETUP_MS`: a worker first spends that long in set-up of its own,
//! as a program that loads data before its pool would (no corepool code runs meanwhile).

use std::{process::ExitCode, time::Duration};

use corepool::{Pool, PoolError};

fn square(x: i64) -> i64 {
    x * x
}

fn main() -> ExitCode {
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
