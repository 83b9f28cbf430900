//! Workers replaced after a number of chunks (Python's `maxtasksperchild`), and workers
//! named after the program: every mode's counts stay exact, the workers really are new
//! processes, and they carry the name they were given.

use std::{collections::BTreeSet, path::Path, time::Instant};

use corepool::{Pool, PoolError};
use corepool_tests::{
    POOL_MODES, WATCHDOG, captured, children_of, expected_counts, read_arrivals, read_counts, run_corepool,
    tasks::SquarePlus, test_matrix, wait_with_watchdog, write_matrix,
};

/// Runs `count` over `input` with `extra` flags, and returns the counts it wrote, by row.
fn counts_of(dir: &Path, input: &Path, mode: &str, extra: &[&str]) -> Result<Vec<u32>, String> {
    let output = dir.join("counts.txt");
    let _ = std::fs::remove_file(&output);
    let arrival = mode == "imap-unordered" || mode == "apply-async";
    let mut args = vec!["count", "--input", input.to_str().unwrap(), "--mode", mode, "--workers", "2"];
    args.extend_from_slice(&["--output", output.to_str().unwrap()]);
    if arrival {
        args.extend_from_slice(&["--order", "arrival"]);
    }
    args.extend_from_slice(extra);
    let run = run_corepool(dir, &args, &[]);
    if !run.status.success() {
        return Err(format!("exit {}: {}", run.status, run.stderr.trim()));
    }
    if !run.stdout.contains("faults: 0 worker restarts, 0 chunks sent again") {
        return Err(format!("a retirement was counted as a fault:\n{}", run.stdout));
    }
    if !arrival {
        return Ok(read_counts(&output));
    }
    let mut arrivals = read_arrivals(&output);
    arrivals.sort_unstable();
    let rows: Vec<usize> = arrivals.iter().map(|(row, _)| *row).collect();
    if rows != (0..rows.len()).collect::<Vec<_>>() {
        return Err("rows missing or answered twice".into());
    }
    Ok(arrivals.into_iter().map(|(_, count)| count).collect())
}

#[test]
fn every_mode_counts_exactly_while_workers_are_replaced_after_one_or_three_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = test_matrix(157, 6, 5);
    let input = dir.path().join("matrix.csv");
    write_matrix(&input, &matrix, ",");
    let expected = expected_counts(&matrix, 4, 8);
    let mut failures = Vec::new();
    for tasks in ["1", "3"] {
        for mode in POOL_MODES {
            // Chunks of 9 rows: 18 chunks, so every worker is replaced several times.
            let chunk = if mode.starts_with("apply") { "1" } else { "9" };
            let extra = ["--max-tasks-per-worker", tasks, "--chunk-size", chunk];
            match counts_of(dir.path(), &input, mode, &extra) {
                Ok(counts) if counts == expected => {}
                Ok(counts) => {
                    let row = counts.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(counts.len());
                    failures.push(format!("{mode}, {tasks} per worker: first difference at row {row}"));
                }
                Err(why) => failures.push(format!("{mode}, {tasks} per worker: {why}")),
            }
        }
    }
    assert!(failures.is_empty(), "{} runs failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn workers_are_new_processes_after_their_share_and_pythons_spelling_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = test_matrix(40, 3, 9);
    let input = dir.path().join("matrix.csv");
    write_matrix(&input, &matrix, ",");
    let output = dir.path().join("counts.txt");
    let args = ["count", "--input", input.to_str().unwrap(), "--workers", "2", "--mode", "map", "--chunk-size", "1"];
    let child = captured(corepool_tests::corepool_bin(), dir.path())
        .args(args)
        .args(["--maxtasksperchild", "1", "--repeat", "3", "--output", output.to_str().unwrap()])
        .spawn()
        .expect("corepool starts");
    // 120 chunks, one worker each: the coordinator's children are seen coming and going.
    let coordinator = child.id();
    let mut seen = BTreeSet::new();
    let started = Instant::now();
    while corepool_tests::alive(coordinator) && started.elapsed() < WATCHDOG {
        seen.extend(children_of(coordinator).into_iter().filter(|(_, name)| name.starts_with("corepool-w")));
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let run = wait_with_watchdog(child, WATCHDOG).assert_success();
    assert!(run.stdout.contains("faults: 0 worker restarts"), "{}", run.stdout);
    let retired: u64 = run
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("retired: ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no retired line: {}", run.stdout));
    assert!(retired >= 100, "120 chunks of one row each retire about 120 workers, not {retired}");
    assert_eq!(read_counts(&output), expected_counts(&matrix, 4, 8));
    let pids: BTreeSet<u32> = seen.iter().map(|(pid, _)| *pid).collect();
    assert!(pids.len() > 10, "only {} worker processes seen for 120 chunks: {seen:?}", pids.len());
    let names: BTreeSet<&str> = seen.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["corepool-w0", "corepool-w1"]), "replacements keep their slot's name");
}

#[test]
fn zero_tasks_per_worker_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_corepool(dir.path(), &["count", "--rows", "10", "--max-tasks-per-worker", "0"], &[]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("--max-tasks-per-worker must be at least 1"), "{}", run.stderr);
}

fn test_pool() -> corepool::PoolBuilder {
    Pool::builder().worker_program(env!("CARGO_BIN_EXE_test-worker"))
}

#[test]
fn a_pool_counts_retirements_apart_from_restarts_and_replaces_its_workers() {
    let pool = test_pool().workers(2).max_tasks_per_worker(Some(3)).build().expect("pool starts");
    let first: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
    let items: Vec<i64> = (0..100).collect();
    let squares = pool.map_task(&SquarePlus { offset: 1 }, &items, Some(5)).unwrap();
    assert_eq!(squares, items.iter().map(|x| x * x + 1).collect::<Vec<_>>());
    let stats = pool.worker_stats();
    let chunks: u64 = stats.iter().map(|w| w.chunks).sum();
    let retired: u64 = stats.iter().map(|w| w.retired).sum();
    assert_eq!(chunks, 20);
    assert_eq!(stats.iter().map(|w| w.restarts + w.retried_chunks).sum::<u64>(), 0, "{stats:?}");
    // Each worker runs 3 chunks, then goes: of 20 chunks, 6 full shares per slot at most.
    assert!((5..=6).contains(&retired), "{retired} retirements: {stats:?}");
    let last: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
    assert!(first.is_disjoint(&last), "the first workers were replaced: {first:?} then {last:?}");
}

/// The process name and `argv[0]` of process `pid`.
fn name_and_argv0(pid: u32) -> (String, String) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    (comm.trim().to_owned(), String::from_utf8_lossy(argv0).into_owned())
}

#[test]
fn workers_carry_the_name_prefix_given_and_corepool_by_default() {
    for (prefix, expected) in [(Some("myapp"), "myapp"), (Some("nine_char"), "nine_char"), (None, "corepool")] {
        let builder = test_pool().workers(2);
        let builder = match prefix {
            Some(prefix) => builder.worker_name_prefix(prefix),
            None => builder,
        };
        let pool = builder.build().expect("pool starts");
        let mut names: Vec<(String, String)> = pool.worker_pids().into_iter().map(name_and_argv0).collect();
        names.sort();
        let want: Vec<(String, String)> =
            (0..2).map(|i| (format!("{expected}-w{i}"), format!("{expected}-w{i}"))).collect();
        assert_eq!(names, want);
        let ps = std::process::Command::new("ps")
            .args(["-o", "comm=", "-p"])
            .arg(pool.worker_pids()[0].to_string())
            .output();
        if let Ok(ps) = ps {
            assert!(String::from_utf8_lossy(&ps.stdout).trim().starts_with(&format!("{expected}-w")), "{ps:?}");
        }
    }
}

#[test]
fn a_worker_name_prefix_that_cannot_name_a_process_is_refused_before_any_worker_starts() {
    for (prefix, why) in [("", "must not be empty"), ("ten_bytes!", "at most 9"), ("a/b", "`/`"), ("a\0b", "NUL")] {
        let error = test_pool().workers(1).worker_name_prefix(prefix).build().err().expect("refused");
        assert!(matches!(error, PoolError::BadWorkerName { .. }), "{error:?}");
        assert!(error.to_string().contains(why), "{error}");
    }
}
