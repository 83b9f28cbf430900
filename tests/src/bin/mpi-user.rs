//! A library user's program on MPI: every rank runs it; rank 0 builds a pool over the
//! other ranks and prints each rank's answer to a map of its own task, with the ranks'
//! process ids; the other ranks serve as its workers from `init_with`.

use std::process::ExitCode;

use corepool::{Pool, PoolError, Transport};
use corepool_tests::tasks::SquarePlus;

fn main() -> ExitCode {
    corepool::task::init_with(corepool_tests::tasks::registry);
    let run = || -> Result<(), PoolError> {
        let pool = Pool::builder().transport(Transport::Mpi).build()?;
        let items: Vec<i64> = (0..10_000).collect();
        let squares = pool.map_task(&SquarePlus { offset: 3 }, &items, Some(100))?;
        println!("workers {}", pool.workers());
        println!("sum {}", squares.iter().sum::<i64>());
        let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
        println!("pids {}", pids.join(" "));
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mpi-user: {error}");
            ExitCode::FAILURE
        }
    }
}
