//! Faults against the real `corepool` binary: workers killed before their handshake,
//! while holding a chunk, at random moments, a poisoned chunk, a hung worker, the
//! coordinator itself killed. Each case ends within a bound, with results equal to an
//! independent count row by row, or with the documented error.

use std::{
    path::Path,
    process::Child,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use corepool_tests::{
    Finished, POOL_MODES, alive, children_of, corepool_bin, expected_counts, read_counts, run_corepool,
    wait_with_watchdog,
};

/// The counts the generated matrix `--rows rows --seed 2019` must give.
fn expected_for(rows: usize) -> Vec<u32> {
    let matrix = corepool_tutorial::Matrix::random(rows, 5, 0, 10, 2019);
    let rows: Vec<Vec<i64>> = matrix.iter_rows().collect();
    expected_counts(&rows, 4, 8)
}

fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    corepool_tests::captured(corepool_bin(), dir)
        .args(args)
        .envs(env.iter().copied())
        .env("TMPDIR", dir)
        .spawn()
        .unwrap()
}

/// Workers of `coordinator` named `corepool-w{index}`, waiting up to 10 s for one.
fn wait_for_worker(coordinator: u32, index: usize) -> Option<u32> {
    let name = format!("corepool-w{index}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some((pid, _)) = children_of(coordinator).into_iter().find(|(_, comm)| *comm == name) {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn sigkill(pid: u32) {
    // SAFETY: kill has no memory effects; a pid that has gone just makes it fail.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn restarts_in(run: &Finished) -> u64 {
    run.stdout
        .lines()
        .find_map(|line| line.strip_prefix("faults: ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no faults line in:\n{}", run.stdout))
}

#[test]
fn a_worker_killed_before_its_handshake_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("counts.txt");
    let args = ["count", "--rows", "3000", "--workers", "2", "--output", output.to_str().unwrap()];
    let child = start(dir.path(), &args, &[("COREPOOL_TEST_SLOW_START", "300")]);
    let victim = wait_for_worker(child.id(), 1).expect("worker 1 starts");
    sigkill(victim);
    let run = wait_with_watchdog(child, Duration::from_secs(60)).assert_success();
    assert_eq!(read_counts(&output), expected_for(3000));
    assert!(restarts_in(&run) >= 1, "{}", run.stdout);
}

#[test]
fn a_worker_killed_while_holding_a_chunk_is_replaced_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    for mode in POOL_MODES {
        let output = dir.path().join(format!("{mode}.txt"));
        let rows = "40";
        let args = [
            "count",
            "--rows",
            rows,
            "--workers",
            "2",
            "--chunk-size",
            "4",
            "--mode",
            mode,
            "--output",
            output.to_str().unwrap(),
        ];
        // Worker 0 takes 150 ms per chunk, so it is surely holding one when it is killed.
        let child = start(dir.path(), &args, &[("COREPOOL_TEST_SLOW_WORKER", "0:150")]);
        let victim = wait_for_worker(child.id(), 0).expect("worker 0 starts");
        std::thread::sleep(Duration::from_millis(100));
        sigkill(victim);
        let run = wait_with_watchdog(child, Duration::from_secs(60)).assert_success();
        assert_eq!(read_counts(&output), expected_for(40), "{mode}");
        assert!(restarts_in(&run) >= 1, "{mode}: {}", run.stdout);
    }
}

#[test]
fn random_kills_during_long_runs_still_give_exact_results() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["map", "imap-unordered", "starmap-async", "apply-async", "apply"] {
        let output = dir.path().join(format!("{mode}.txt"));
        let rows = match mode {
            // One round trip a row, and one in three takes worker 1's extra millisecond.
            "apply" => 3_000,
            "apply-async" => 20_000,
            _ => 400_000,
        };
        let rows_text = rows.to_string();
        let args = [
            "count",
            "--rows",
            &rows_text,
            "--workers",
            "3",
            "--chunk-size",
            "500",
            "--mode",
            mode,
            "--output",
            output.to_str().unwrap(),
        ];
        // Each chunk also sleeps a little on worker 1, so that runs last long enough to be
        // hit many times.
        let child = start(dir.path(), &args, &[("COREPOOL_TEST_SLOW_WORKER", "1:1")]);
        let coordinator = child.id();
        let done = Arc::new(AtomicBool::new(false));
        let kills = Arc::new(AtomicUsize::new(0));
        let killer = std::thread::spawn({
            let (done, kills) = (Arc::clone(&done), Arc::clone(&kills));
            move || {
                let mut seed = 0x2545_F491_4F6C_DD1Du64;
                while !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(40));
                    let workers: Vec<u32> = children_of(coordinator)
                        .into_iter()
                        .filter(|(_, name)| corepool_tests::is_worker_name(name))
                        .map(|(pid, _)| pid)
                        .collect();
                    if workers.is_empty() {
                        continue;
                    }
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    sigkill(workers[seed as usize % workers.len()]);
                    kills.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let run = wait_with_watchdog(child, Duration::from_secs(120));
        done.store(true, Ordering::SeqCst);
        killer.join().unwrap();
        let run = run.assert_success();
        assert_eq!(
            read_counts(&output),
            expected_for(rows),
            "{mode}: exact despite {} kills",
            kills.load(Ordering::SeqCst)
        );
        assert!(restarts_in(&run) >= 1, "{mode}: no kill landed: {}", run.stdout);
    }
}

#[test]
fn a_chunk_that_keeps_killing_workers_fails_the_run_naming_its_rows_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    for mode in POOL_MODES.iter().filter(|mode| !mode.starts_with("apply")) {
        let output = dir.path().join("never.txt");
        let args =
            ["count", "--rows", "100", "--chunk-size", "10", "--mode", mode, "--output", output.to_str().unwrap()];
        let run = run_corepool(
            dir.path(),
            &args,
            &[("COREPOOL_TEST_FAULT", "abort@30"), ("TMPDIR", dir.path().to_str().unwrap())],
        );
        assert_eq!(run.status.code(), Some(1), "{mode}: {}", run.stderr);
        let line = run.stderr.trim();
        assert!(
            line.contains("items 30..40: gave up after 3 workers died running them") && line.contains("SIGABRT"),
            "{mode}: {line}"
        );
        assert!(!output.exists(), "{mode}: no output from a failed run");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 0, "socket directories left: {left:?}");
}

#[test]
fn a_hung_worker_is_killed_after_the_task_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["count", "--rows", "100", "--chunk-size", "10", "--task-timeout", "0.3", "--max-retries", "2"];
    let started = Instant::now();
    let run = run_corepool(dir.path(), &args, &[("COREPOOL_TEST_FAULT", "hang@50")]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("items 50..60: gave up after 2 workers died"), "{}", run.stderr);
    assert!(run.stderr.contains("did not answer within 300ms"), "{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));

    // A worker that is merely slow once is replaced, and the run completes exactly.
    let output = dir.path().join("counts.txt");
    let args = [
        "count",
        "--rows",
        "200",
        "--chunk-size",
        "10",
        "--workers",
        "2",
        "--task-timeout",
        "0.5",
        "--max-retries",
        "50",
        "--output",
        output.to_str().unwrap(),
    ];
    let run = run_corepool(dir.path(), &args, &[("COREPOOL_TEST_SLOW_WORKER", "0:2000")]).assert_success();
    assert_eq!(read_counts(&output), expected_for(200));
    assert!(restarts_in(&run) >= 1);
}

#[test]
fn killing_the_coordinator_takes_its_workers_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let child = start(dir.path(), &["count", "--rows", "2000000", "--mode", "apply", "--workers", "3"], &[]);
    let coordinator = child.id();
    for index in 0..3 {
        wait_for_worker(coordinator, index).expect("worker starts");
    }
    std::thread::sleep(Duration::from_millis(100));
    let workers: Vec<u32> = children_of(coordinator).into_iter().map(|(pid, _)| pid).collect();
    assert_eq!(workers.len(), 3);
    sigkill(coordinator);
    let killed_at = Instant::now();
    let _ = wait_with_watchdog(child, Duration::from_secs(10));
    while workers.iter().any(|&pid| alive(pid)) && killed_at.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let survivors: Vec<u32> = workers.iter().copied().filter(|&pid| alive(pid)).collect();
    assert!(survivors.is_empty(), "orphans: {survivors:?}");
    assert!(killed_at.elapsed() < Duration::from_secs(1), "workers took {:?} to go", killed_at.elapsed());

    // The dead coordinator's socket directory is left; it does not block the next run,
    // which clears it away.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let tmp = dir.path().to_str().unwrap();
    run_corepool(dir.path(), &["count", "--rows", "100"], &[("TMPDIR", tmp)]).assert_success();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "stale socket directory cleared");
}

#[test]
fn sigterm_and_ctrl_c_stop_cleanly_with_their_exit_codes() {
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("counts.txt");
        let args = ["count", "--rows", "2000000", "--mode", "apply", "--output", output.to_str().unwrap()];
        let child = start(dir.path(), &args, &[]);
        let coordinator = child.id();
        let worker = wait_for_worker(coordinator, 0).expect("worker starts");
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(coordinator as i32, signal) };
        let run = wait_with_watchdog(child, Duration::from_secs(10));
        assert_eq!(run.status.code(), Some(code), "{}", run.stderr);
        assert!(!alive(worker), "worker left running");
        assert!(!output.exists(), "no partial output");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
