//! A library user's own functions over MPI, under a real `mpirun`: plain functions,
//! closures and an initializer on the worker ranks, with results checked item by item; a
//! rank of another program refusing functions; a program that forgets `corepool::init()`
//! ending at once on every rank. Skipped (with one line) where Open MPI is not installed,
//! except under CI.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use corepool_tests::{
    mpi::{Job, mpi_available, mpi_test_program, mpirun_command, one_job_at_a_time, three_hosts, wait_until_gone},
    netns::{self, host_name},
};

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
    assert_map_results(&output);
    // Each rank took the name the pool gave it, as a local worker does.
    assert_eq!(names_and_hosts(&output).0, ["fnrank-w0", "fnrank-w1"], "{output}");
    assert_none_left(&program, &output);
}

/// The results of `mpi-functions map`, checked item by item against the test's own
/// computation.
fn assert_map_results(output: &str) {
    assert_eq!(numbers(output, "workers"), [2], "{output}");
    // The initializer set the offset 1000 on each worker rank; the function adds it.
    let squares = numbers(output, "squares");
    assert_eq!(squares, (0..2000i64).map(|x| x * x + 1000).collect::<Vec<_>>(), "{output}");
    let tripled = numbers(output, "tripled");
    assert_eq!(tripled, (0..2000i64).map(|x| 3 * x - 7).collect::<Vec<_>>(), "{output}");
    let products = numbers(output, "products");
    assert_eq!(products, (0..500i64).map(|i| i * (i % 7)).collect::<Vec<_>>(), "{output}");
    assert_eq!(numbers(output, "apply"), [12 * 12 + 1000], "{output}");
}

/// The process names and the host names on the `names` line of `mpi-functions map`.
fn names_and_hosts(output: &str) -> (Vec<String>, Vec<String>) {
    let names = output.lines().find_map(|line| line.strip_prefix("names ")).expect("a names line");
    names
        .split(' ')
        .map(|pair| pair.split_once('@').expect("NAME@HOST"))
        .map(|(n, h)| (n.to_owned(), h.to_owned()))
        .unzip()
}

#[test]
fn a_copy_of_the_same_build_at_another_path_runs_functions() {
    if !mpi_available("a_copy_of_the_same_build_at_another_path_runs_functions") {
        return;
    }
    let program = program();
    // Another file (as on another host): another inode and time, the same build-id.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("mpi-functions-copy");
    std::fs::copy(&program, &copy).unwrap();
    let _turn = one_job_at_a_time();
    let (path, copy_path) = (program.to_str().unwrap(), copy.to_str().unwrap());
    let args = ["-np", "1", path, "map", ":", "-np", "2", copy_path, "map"];
    let (succeeded, _, output) = run(&args, Duration::from_secs(60));
    assert_eq!(succeeded, Some(true), "{output}");
    assert_map_results(&output);
    assert_none_left(&program, &output);
    assert_none_left(&copy, &output);
}

#[test]
fn functions_and_an_initializer_run_across_three_namespace_hosts() {
    let test = "functions_and_an_initializer_run_across_three_namespace_hosts";
    let _turn = one_job_at_a_time();
    let Some(hosts) = three_hosts(test) else { return };
    let program = program();
    let mut command = hosts.mpirun_command(60);
    command.arg(&program).arg("map");
    let mut job = Job::start(command);
    let succeeded = job.finish(Duration::from_secs(90));
    let output = job.output();
    assert_eq!(succeeded, Some(true), "{output}");
    assert_map_results(&output);
    let (names, ranks_hosts) = names_and_hosts(&output);
    assert_eq!(names, ["fnrank-w0", "fnrank-w1"], "{output}");
    assert_eq!(ranks_hosts, [host_name(1), host_name(2)], "{output}");
    assert_none_left(&program, &output);
    let tag = hosts.tag().to_owned();
    drop(hosts);
    assert_eq!(netns::namespaces_tagged(&tag), Vec::<String>::new(), "namespaces left behind");
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
