//! The pool over MPI under a real `mpirun`: `corepool count --transport mpi` in every mode
//! gives the local transport's checksum and the test's own count (a rank that is lost:
//! `mpi_faults.rs`). Skipped (with one line) where Open MPI is not installed, except
//! under CI.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use corepool_tests::{
    POOL_MODES, expected_counts,
    mpi::{
        Job, mpi_available, mpi_corepool, mpirun_command, one_job_at_a_time, this_host, three_hosts, wait_until_gone,
    },
    netns, read_counts, run_corepool, test_matrix, write_matrix,
};
use serde_json::Value;

/// Rows for a mode: `apply` waits for each row's answer in turn, so it gets fewer.
fn rows_for(mode: &str, rows: usize) -> usize {
    if mode == "apply" { rows.min(300) } else { rows }
}

/// The checksum in the JSON report at `path`.
fn checksum_in(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");
    report["result"]["checksum"].as_str().expect("the report has a checksum").to_owned()
}

/// The report's checksum of `counts`, as docs/report-schema.md defines it.
fn fnv1a64(counts: &[u32]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in counts.iter().flat_map(|count| count.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3);
    }
    format!("fnv1a64:{hash:016x}")
}

/// Runs `corepool count --transport mpi args` on `ranks` ranks in `dir`; panics with its
/// output unless it succeeds, and unless every process is gone afterwards.
fn count_over_mpi(dir: &Path, ranks: usize, args: &[&str]) -> String {
    let corepool = mpi_corepool();
    let mut command = mpirun_command();
    command.current_dir(dir).args(["-np", &ranks.to_string()]).arg(&corepool);
    command.args(["count", "--transport", "mpi"]).args(args);
    let mut job = Job::start(command);
    let succeeded = job.finish(Duration::from_secs(90));
    let output = job.output();
    assert_eq!(succeeded, Some(true), "corepool over MPI failed ({args:?}):\n{output}");
    assert!(wait_until_gone(&corepool, Duration::from_secs(10)).is_empty(), "ranks left behind:\n{output}");
    output
}

/// Every pool mode on generated rows: the MPI run verifies itself against a serial count
/// and gives the local transport's checksum.
fn every_mode_on_generated_rows(ranks: usize) {
    let _turn = one_job_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    for mode in POOL_MODES {
        let rows = rows_for(mode, 3000).to_string();
        let args = ["--rows", &rows, "--chunk-size", "100", "--mode", mode, "--verify"];
        let output = count_over_mpi(dir.path(), ranks, &[&args[..], &["--report-file", "mpi.json"]].concat());
        assert!(output.contains(&format!(": {} workers", ranks - 1)), "one worker per rank but rank 0:\n{output}");
        let local = [&args[..], &["--report-file", "local.json"]].concat();
        let mut full = vec!["count"];
        full.extend_from_slice(&local);
        run_corepool(dir.path(), &full, &[]).assert_success();
        assert_eq!(
            checksum_in(&dir.path().join("mpi.json")),
            checksum_in(&dir.path().join("local.json")),
            "mode {mode}: MPI and local counts differ:\n{output}"
        );
    }
}

/// Every pool mode on a CSV file: the counts written are the test's own, and the checksum
/// the local transport's.
fn every_mode_on_a_csv_file(ranks: usize) {
    let _turn = one_job_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let matrix = test_matrix(400, 5, 7);
    write_matrix(&dir.path().join("m.csv"), &matrix, ",");
    let expected = expected_counts(&matrix, 4, 8);
    for mode in POOL_MODES {
        let args = ["--input", "m.csv", "--chunk-size", "50", "--mode", mode];
        let mpi = [&args[..], &["--output", "mpi.txt", "--report-file", "mpi.json"]].concat();
        let output = count_over_mpi(dir.path(), ranks, &mpi);
        assert_eq!(read_counts(&dir.path().join("mpi.txt")), expected, "mode {mode}:\n{output}");
        let mut local = vec!["count"];
        local.extend_from_slice(&[&args[..], &["--report-file", "local.json"]].concat());
        run_corepool(dir.path(), &local, &[]).assert_success();
        let checksum = checksum_in(&dir.path().join("mpi.json"));
        assert_eq!(checksum, checksum_in(&dir.path().join("local.json")), "mode {mode}:\n{output}");
        assert_eq!(checksum, fnv1a64(&expected), "mode {mode}");
    }
}

#[test]
fn every_mode_on_three_ranks_counts_generated_rows_like_the_local_transport() {
    if mpi_available("every_mode_on_three_ranks_counts_generated_rows_like_the_local_transport") {
        every_mode_on_generated_rows(3);
    }
}

#[test]
fn every_mode_on_four_ranks_counts_generated_rows_like_the_local_transport() {
    if mpi_available("every_mode_on_four_ranks_counts_generated_rows_like_the_local_transport") {
        every_mode_on_generated_rows(4);
    }
}

#[test]
fn every_mode_on_three_ranks_counts_a_csv_file_exactly() {
    if mpi_available("every_mode_on_three_ranks_counts_a_csv_file_exactly") {
        every_mode_on_a_csv_file(3);
    }
}

#[test]
fn every_mode_on_four_ranks_counts_a_csv_file_exactly() {
    if mpi_available("every_mode_on_four_ranks_counts_a_csv_file_exactly") {
        every_mode_on_a_csv_file(4);
    }
}

#[test]
fn workers_must_match_the_ranks_and_retries_are_refused() {
    if !mpi_available("workers_must_match_the_ranks_and_retries_are_refused") {
        return;
    }
    let _turn = one_job_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corepool = mpi_corepool();
    for (flag, said) in [
        (["--max-retries", "2"], "--max-retries is not available with --transport mpi"),
        (["--max-tasks-per-worker", "5"], "--max-tasks-per-worker is not available with --transport mpi"),
        (["--mode", "serial"], "--mode serial starts no pool, and --transport mpi needs one"),
    ] {
        let output = Command::new(&corepool)
            .current_dir(dir.path())
            .args(["count", "--transport", "mpi"])
            .args(flag)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(said), "{stderr}");
    }
    let mut command = mpirun_command();
    command.current_dir(dir.path()).args(["-np", "3"]).arg(&corepool);
    command.args(["count", "--transport", "mpi", "--workers", "5", "--rows", "100"]);
    let mut job = Job::start(command);
    let succeeded = job.finish(Duration::from_secs(40));
    let output = job.output();
    assert_eq!(succeeded, Some(false), "{output}");
    let said = "--workers 5: the MPI job has 3 ranks, which gives 2 workers (rank 0 is the coordinator)";
    assert_eq!(output.lines().filter(|line| line.contains(said)).count(), 1, "{output}");
    assert!(wait_until_gone(&corepool, Duration::from_secs(10)).is_empty(), "ranks left behind:\n{output}");
    // Without MPI's launcher, the local build says what is missing.
    let local = run_corepool(dir.path(), &["count", "--transport", "mpi", "--rows", "10"], &[]);
    assert_eq!(local.status.code(), Some(2), "{}", local.stderr);
    assert!(local.stderr.contains("--transport mpi: "), "{}", local.stderr);
}

#[test]
fn a_library_users_program_runs_its_own_task_on_the_ranks() {
    if !mpi_available("a_library_users_program_runs_its_own_task_on_the_ranks") {
        return;
    }
    let _turn = one_job_at_a_time();
    let program = mpi_corepool().with_file_name("mpi-user");
    let mut command = mpirun_command();
    command.args(["-np", "4"]).arg(&program);
    let mut job = Job::start(command);
    let succeeded = job.finish(Duration::from_secs(60));
    let output = job.output();
    assert_eq!(succeeded, Some(true), "{output}");
    let expected: i64 = (0..10_000i64).map(|x| x * x + 3).sum();
    assert!(output.lines().any(|line| line == format!("sum {expected}")), "{output}");
    assert!(output.lines().any(|line| line == "workers 3"), "{output}");
    let pids = output.lines().find_map(|line| line.strip_prefix("pids ")).expect("the workers' pids");
    let pids: std::collections::HashSet<&str> = pids.split(' ').filter(|pid| *pid != "0").collect();
    assert_eq!(pids.len(), 3, "one process per worker rank: {output}");
    assert!(wait_until_gone(&program, Duration::from_secs(10)).is_empty(), "ranks left behind:\n{output}");
}

#[test]
fn each_rank_is_shown_with_its_host_pid_cpu_and_memory() {
    let _turn = one_job_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--rows", "2000000", "--mode", "map", "--monitor", "--report-file", "mpi.json"];
    let output = count_over_mpi(dir.path(), 3, &args);
    let host = this_host();
    let text = std::fs::read_to_string(dir.path().join("mpi.json")).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["parameters"]["transport"], "mpi", "{text}");
    let workers = report["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2, "{text}");
    let mut rows = 0;
    for (index, worker) in workers.iter().enumerate() {
        let rank = index + 1;
        assert_eq!(worker["rank"], rank, "{worker}");
        assert_eq!(worker["host"], host.as_str(), "{worker}");
        let pid = worker["pid"].as_u64().expect("a pid");
        let cpu = worker["cpu_user_s"].as_f64().unwrap() + worker["cpu_system_s"].as_f64().unwrap();
        assert!(cpu > 0.0, "rank {rank} reported its CPU time: {worker}");
        assert!(worker["peak_rss_bytes"].as_u64().unwrap() > 1 << 20, "rank {rank} reported its memory: {worker}");
        rows += worker["rows"].as_u64().unwrap();
        // The summary and the monitor name the rank, its host and its pid.
        let summary = format!("rank {rank}");
        assert!(
            output
                .lines()
                .any(|line| line.starts_with(&summary) && line.contains(&host) && line.contains(&pid.to_string())),
            "the summary's line for rank {rank}:\n{output}"
        );
        let monitor = format!("] rank {rank} host={host} pid={pid} ");
        let last = output.lines().rfind(|line| line.contains(&monitor));
        let last = last.unwrap_or_else(|| panic!("the monitor's line for rank {rank}:\n{output}"));
        assert!(!last.contains("cpu=- rss=-"), "the monitor shows what rank {rank} reported: {last}");
    }
    assert_eq!(rows, 2_000_000, "{text}");
    assert!(output.lines().any(|line| line.contains(&format!("] corepool host={host} "))), "{output}");
}

#[test]
fn three_namespace_hosts_count_like_the_local_transport_over_tcp() {
    let test = "three_namespace_hosts_count_like_the_local_transport_over_tcp";
    let _turn = one_job_at_a_time();
    let Some(hosts) = three_hosts(test) else { return };
    let tag = hosts.tag().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let corepool = mpi_corepool();
    let report = dir.path().join("mpi.json");
    for mode in ["map", "imap-unordered", "apply-async"] {
        let mut command = hosts.mpirun_command(60);
        command.arg(&corepool).args(["count", "--transport", "mpi", "--rows", "20000", "--chunk-size", "500"]);
        command.args(["--mode", mode, "--verify", "--monitor", "--report-file"]).arg(&report);
        let mut job = Job::start(command);
        let succeeded = job.finish(Duration::from_secs(90));
        let output = job.output();
        assert_eq!(succeeded, Some(true), "mode {mode} failed across hosts:\n{output}");
        // Each process on its own host: the coordinator on node0, rank N on nodeN.
        for (name, host) in [("corepool", "node0"), ("rank 1", "node1"), ("rank 2", "node2")] {
            let shown = format!("] {name} host={host} ");
            assert!(output.lines().any(|line| line.contains(&shown)), "{name} on {host}:\n{output}");
        }
        let text = std::fs::read_to_string(&report).unwrap();
        let workers: Value = serde_json::from_str::<Value>(&text).unwrap()["workers"].clone();
        let hosts: Vec<&str> = workers.as_array().unwrap().iter().map(|w| w["host"].as_str().unwrap()).collect();
        assert_eq!(hosts, ["node1", "node2"], "{text}");
        let local = ["count", "--rows", "20000", "--chunk-size", "500", "--mode", mode, "--report-file", "local.json"];
        run_corepool(dir.path(), &local, &[]).assert_success();
        assert_eq!(checksum_in(&report), checksum_in(&dir.path().join("local.json")), "mode {mode}:\n{output}");
    }
    assert!(wait_until_gone(&corepool, Duration::from_secs(10)).is_empty(), "ranks left behind");
    drop(hosts);
    assert_eq!(netns::namespaces_tagged(&tag), Vec::<String>::new(), "namespaces left behind");
}

#[test]
fn a_run_under_mpirun_without_the_mpi_transport_ends_and_releases_the_other_ranks() {
    if !mpi_available("a_run_under_mpirun_without_the_mpi_transport_ends_and_releases_the_other_ranks") {
        return;
    }
    let _turn = one_job_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--workers", "2"][..], &["--mode", "serial"][..]] {
        let started = Instant::now();
        let output = count_over_mpi_plain(dir.path(), &[&["count", "--rows", "1000"][..], args].concat());
        assert!(output.contains("checksum: "), "{output}");
        assert!(started.elapsed() < Duration::from_secs(30), "took {:?}:\n{output}", started.elapsed());
    }
}

/// Runs `corepool args` (the local transport) on 3 ranks in `dir`; panics with its output
/// unless it succeeds, and unless every process is gone afterwards.
fn count_over_mpi_plain(dir: &Path, args: &[&str]) -> String {
    let corepool = mpi_corepool();
    let mut command = mpirun_command();
    command.current_dir(dir).args(["-np", "3"]).arg(&corepool).args(args);
    let mut job = Job::start(command);
    let succeeded = job.finish(Duration::from_secs(60));
    let output = job.output();
    assert_eq!(succeeded, Some(true), "{args:?}:\n{output}");
    assert!(wait_until_gone(&corepool, Duration::from_secs(10)).is_empty(), "ranks left behind:\n{output}");
    output
}
