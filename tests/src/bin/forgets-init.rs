//! A program that uses its own executable as the pool's worker program, but forgets to
//! call `corepool::init` first thing in `main`: each worker it starts runs this
//! `main` again and builds a pool of its own, which must fail at once with an error that
//! says what was forgotten, never start more workers.
//!
//! `FORGETS_INIT_WORKER_SETUP_MS`: a worker first spends that long in set-up of its own,
//! as a program that loads data before its pool would (no corepool code runs meanwhile).

use std::{process::ExitCode, time::Duration};

use corepool::{Pool, PoolError};
use corepool_tests::tasks::SquarePlus;

fn main() -> ExitCode {
    if corepool_worker::started_as_worker()
        && let Some(millis) = std::env::var("FORGETS_INIT_WORKER_SETUP_MS").ok().and_then(|text| text.parse().ok())
    {
        std::thread::sleep(Duration::from_millis(millis));
    }
    let squares = || -> Result<Vec<i64>, PoolError> {
        let pool = Pool::builder().workers(2).self_serving()?.build()?;
        pool.map(&SquarePlus { offset: 0 }, &(0..100).collect::<Vec<i64>>(), None)
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
