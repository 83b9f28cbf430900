//! A library user's own functions on MPI: every rank runs this program; rank 0 maps plain
//! functions and closures over the other ranks, with an initializer whose effect they see.
//!
//! `mpi-functions map`: prints `squares`, `tripled`, `products` (the results, in item
//! order) and `names` (`NAME@HOST` of each rank that ran a chunk).
//! `mpi-functions foreign`: maps a closure with no initializer; run with ranks of another
//! program (`mpirun -np 2 mpi-functions foreign : -np 1 mpi-user`), whose refusal it prints.
//! `mpi-functions failing-initializer`: its initializer fails on every worker rank.
//! `mpi-functions forget`: never calls `corepool::init()`, so every rank builds a pool.

use std::{process::ExitCode, sync::OnceLock};

use corepool::{Pool, PoolError, Transport};

/// What the initializer sets up in each worker rank.
static OFFSET: OnceLock<i64> = OnceLock::new();

fn set_offset(offset: i64) -> Result<(), String> {
    OFFSET.set(offset).map_err(|_| "the offset was set twice".to_owned())
}

fn shifted_square(x: i64) -> i64 {
    x * x + OFFSET.get().copied().expect("the initializer ran on this rank")
}

/// This process's name, as `top` shows it, and its host's: `NAME@HOST`.
fn process_name(_: u32) -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default().trim().to_owned();
    format!("{}@{}", read("/proc/self/comm"), read("/proc/sys/kernel/hostname"))
}

fn joined<T: ToString>(values: &[T]) -> String {
    values.iter().map(T::to_string).collect::<Vec<_>>().join(" ")
}

fn run_map() -> Result<(), PoolError> {
    let pool =
        Pool::builder().transport(Transport::Mpi).initializer(set_offset, 1000).worker_name_prefix("fnrank").build()?;
    println!("workers {}", pool.workers());
    let squares = pool.chunksize(50).map(shifted_square, 0..2000i64)?;
    println!("squares {}", joined(&squares));
    let tripled = pool.map(|x: i64| x * 3 - 7, (0..2000i64).collect::<Vec<_>>())?;
    println!("tripled {}", joined(&tripled));
    let pairs: Vec<(i64, i64)> = (0..500i64).map(|i| (i, i % 7)).collect();
    let products = pool.starmap(|a: i64, b: i64| a * b, pairs)?;
    println!("products {}", joined(&products));
    println!("apply {}", pool.apply(shifted_square, 12)?);
    let mut names = pool.chunksize(1).map(process_name, 0..40u32)?;
    names.sort();
    names.dedup();
    println!("names {}", names.join(" "));
    Ok(())
}

fn refuse_to_start(path: String) -> Result<(), String> {
    Err(format!("{path}: no such model"))
}

fn run_failing_initializer() -> Result<(), PoolError> {
    let pool =
        Pool::builder().transport(Transport::Mpi).initializer(refuse_to_start, "model.bin".to_owned()).build()?;
    let results = pool.map(|x: i64| x + 1, 0..40i64)?;
    println!("results {}", joined(&results));
    Ok(())
}

fn run_foreign() -> Result<(), PoolError> {
    let pool = Pool::builder().transport(Transport::Mpi).build()?;
    let results = pool.chunksize(1).map(|x: i64| x + 1, 0..40i64)?;
    println!("results {}", joined(&results));
    Ok(())
}

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "map".to_owned());
    if mode != "forget" {
        corepool::init();
    }
    let ran = match mode.as_str() {
        "map" => run_map(),
        "foreign" => run_foreign(),
        "failing-initializer" => run_failing_initializer(),
        "forget" => Pool::builder().transport(Transport::Mpi).build().map(drop),
        other => {
            eprintln!("mpi-functions: unknown mode {other:?} (map, foreign, failing-initializer or forget)");
            return ExitCode::from(2);
        }
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let rank = corepool::mpi::rank_from_env().map_or_else(|| "?".to_owned(), |rank| rank.to_string());
            // One write, so that the ranks' lines do not mix.
            let line = format!("mpi-functions rank {rank}: {error}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            ExitCode::FAILURE
        }
    }
}
