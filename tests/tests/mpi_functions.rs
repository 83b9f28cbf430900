//! A library user's own functions over MPI, under a real `mpirun`: plain functions,
//! closures and an initializer on the worker ranks, with results checked item by item; a
//! rank of another program refusing functions; a program that forgets `corepool::init()`
//! ending at once on every rank. Skipped (with one line) where Open MPI is not installed,
//! except under CI.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use corepool_tests::mpi::{Job, mpi_available, mpi_test_program, mpirun_command, one_job_at_a_time, wait_until_gone};

/// The user's program, built with MPI.
fn program() -> PathBuf {
    mpi_test_program("mpi-functions")
}

/// Runs `mpirun` with `args` (ranks, programs, their arguments) within `limit`; returns
/// whether it succeeded (`None`: it had to be killed), how long it took, and its output.
fn run(args: &[&str], limit: Duration) -> (Option<bool>, Duration, String) {
    let mut command = mpirun_command();
    command.args(args);
    let started = Instant::now();
    let mut job = Job::start(command);
    let succeeded = job.finish(limit);
    (succeeded, started.elapsed(), job.output())
}

/// The numbers on the output line that starts with `label`.
fn numbers(output: &str, label: &str) -> Vec<i64> {
    let line = output.lines().find_map(|line| line.strip_prefix(&format!("{label} "))).unwrap_or_else(|| {
        panic!("no `{label}` line in:\n{output}");
    });
    line.split(' ').map(|word| word.parse().expect("a number")).collect()
}

/// Fails the test if a process of `program` outlives the job.
fn assert_none_left(program: &Path, output: &str) {
    let left = wait_until_gone(program, Duration::from_secs(10));
    assert!(left.is_empty(), "processes left behind: {left:?}\n{output}");
}

#[test]
fn plain_functions_closures_and_an_initializer_run_on_three_ranks() {
    if !mpi_available("plain_functions_closures_and_an_initializer_run_on_three_ranks") {
        return;
    }
    let program = program();
    let _turn = one_job_at_a_time();
    let path = program.to_str().unwrap();
    let (succeeded, _, output) = run(&["-np", "3", path, "map"], Duration::from_secs(60));
    assert_eq!(succeeded, Some(true), "{output}");
    assert_eq!(numbers(&output, "workers"), [2], "{output}");
    // The initializer set the offset 1000 on each worker rank; the function adds it.
    let squares = numbers(&output, "squares");
    assert_eq!(squares.len(), 2000, "{output}");
    for (x, square) in (0..2000i64).zip(&squares) {
        assert_eq!(*square, x * x + 1000, "item {x}");
    }
    let tripled = numbers(&output, "tripled");
    assert_eq!(tripled.len(), 2000, "{output}");
    for (x, value) in (0..2000i64).zip(&tripled) {
        assert_eq!(*value, 3 * x - 7, "item {x}");
    }
    let products = numbers(&output, "products");
    assert_eq!(products.len(), 500, "{output}");
    for (i, product) in (0..500i64).zip(&products) {
        assert_eq!(*product, i * (i % 7), "item {i}");
    }
    assert_eq!(numbers(&output, "apply"), [12 * 12 + 1000], "{output}");
    // Each rank took the name the pool gave it, as a local worker does.
    let names = output.lines().find_map(|line| line.strip_prefix("names ")).expect("a names line");
    assert_eq!(names, "fnrank-w0 fnrank-w1", "{output}");
    assert_none_left(&program, &output);
}

#[test]
fn a_rank_running_another_program_refuses_functions() {
    if !mpi_available("a_rank_running_another_program_refuses_functions") {
        return;
    }
    let program = program();
    let other = program.with_file_name("mpi-user");
    let _turn = one_job_at_a_time();
    let (path, other_path) = (program.to_str().unwrap(), other.to_str().unwrap());
    // Ranks 0 and 1 run this program, rank 2 another one (which also serves with init).
    let args = ["-np", "2", path, "foreign", ":", "-np", "1", other_path];
    let (succeeded, elapsed, output) = run(&args, Duration::from_secs(60));
    assert_eq!(succeeded, Some(false), "{output}");
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}:\n{output}");
    let refusal = output.lines().find(|line| line.starts_with("mpi-functions rank 0: items ")).expect(&output);
    assert!(refusal.contains("cannot run a function here: this worker runs "), "{refusal}");
    assert!(refusal.contains("mpi-user (build-id:"), "{refusal}");
    assert!(refusal.contains("not the coordinator's own program (build-id:"), "{refusal}");
    assert!(!output.contains("results "), "{output}");
    assert_none_left(&program, &output);
    assert_none_left(&other, &output);
}

#[test]
fn a_failing_initializer_ends_the_job_naming_the_rank() {
    if !mpi_available("a_failing_initializer_ends_the_job_naming_the_rank") {
        return;
    }
    let program = program();
    let _turn = one_job_at_a_time();
    let path = program.to_str().unwrap();
    let (succeeded, elapsed, output) = run(&["-np", "3", path, "failing-initializer"], Duration::from_secs(30));
    assert_eq!(succeeded, Some(false), "{output}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}:\n{output}");
    assert!(
        output.contains("on host ") && output.contains(": the initializer failed: model.bin: no such model"),
        "{output}"
    );
    assert!(!output.contains("results "), "{output}");
    assert_none_left(&program, &output);
}

#[test]
fn a_program_that_forgets_init_ends_at_once_on_every_rank() {
    if !mpi_available("a_program_that_forgets_init_ends_at_once_on_every_rank") {
        return;
    }
    let program = program();
    let _turn = one_job_at_a_time();
    let path = program.to_str().unwrap();
    let (succeeded, elapsed, output) = run(&["-np", "3", path, "forget"], Duration::from_secs(30));
    assert_eq!(succeeded, Some(false), "{output}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}:\n{output}");
    // Rank 0 names both ranks; each of them says what to do.
    let coordinator = output.lines().find(|line| line.starts_with("mpi-functions rank 0: ")).expect(&output);
    assert!(coordinator.contains("rank 1 on host "), "{coordinator}");
    assert!(coordinator.contains("rank 2 on host "), "{coordinator}");
    assert!(coordinator.contains("must call corepool::init() first thing in main"), "{coordinator}");
    for rank in [1, 2] {
        let line =
            output.lines().find(|line| line.starts_with(&format!("mpi-functions rank {rank}: "))).expect(&output);
        assert!(line.contains("call corepool::init() first thing in main"), "{line}");
    }
    assert_none_left(&program, &output);
}
