//! The `corepool` command's processes seen from outside: its workers during a run, and
//! nothing left after it.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use corepool_tests::{alive, children_of, corepool_bin, run_corepool, wait_with_watchdog};

#[test]
fn a_run_has_exactly_n_worker_children_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(corepool_bin())
        .args(["count", "--rows", "400000", "--mode", "apply", "--workers", "3"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let coordinator = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let workers = loop {
        let workers: Vec<(u32, String)> =
            children_of(coordinator).into_iter().filter(|(_, name)| corepool_tests::is_worker_name(name)).collect();
        if workers.len() >= 3 || Instant::now() > deadline {
            break workers;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut names: Vec<&str> = workers.iter().map(|(_, name)| name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["corepool-w0", "corepool-w1", "corepool-w2"], "exactly three workers, children of corepool");
    let socket_dirs: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert_eq!(socket_dirs.len(), 1, "one private socket directory during the run");

    // Stop the long run early: the workers must still go with it.
    unsafe { libc::kill(coordinator as i32, libc::SIGTERM) };
    let finished = wait_with_watchdog(child, Duration::from_secs(30));
    assert!(!finished.status.success());
    let deadline = Instant::now() + Duration::from_secs(2);
    while workers.iter().any(|&(pid, _)| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    for (pid, name) in &workers {
        assert!(!alive(*pid), "{name} ({pid}) outlived its coordinator");
    }
}

#[test]
fn a_finished_run_removes_its_socket_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().to_str().unwrap();
    run_corepool(
        tmp.path(),
        &["count", "--rows", "20000", "--workers", "2", "--mode", "imap"],
        &[("TMPDIR", tmp_path)],
    )
    .assert_success();
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn without_tmpdir_the_socket_directory_is_made_in_memory_and_removed() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("skipped: this system has no /dev/shm");
        return;
    }
    let child = Command::new(corepool_bin())
        .args(["count", "--rows", "20000", "--workers", "2", "--repeat", "200", "-q"])
        .env_remove("TMPDIR")
        .env_remove("XDG_RUNTIME_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let prefix = format!("corepool-{}-", child.id());
    let ours = || -> Vec<_> {
        std::fs::read_dir(shm)
            .unwrap()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
            .map(|entry| entry.path())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    // The directory is made a moment before its socket is bound in it: wait for both.
    let during = loop {
        let found = ours();
        let bound = found.first().is_some_and(|dir| dir.join("pool.sock").exists());
        if bound || found.len() > 1 || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(during.len(), 1, "one socket directory in /dev/shm during the run");
    assert!(during[0].join("pool.sock").exists(), "its socket is there");
    wait_with_watchdog(child, Duration::from_secs(60)).assert_success();
    assert!(ours().is_empty(), "left behind in /dev/shm: {:?}", ours());
}

#[test]
fn the_demo_runs_every_method_and_checks_it_against_serial() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_corepool(tmp.path(), &["demo", "--rows", "3000", "--workers", "2"], &[]).assert_success();
    for method in
        ["serial", "apply", "map", "starmap", "imap", "imap-unordered", "apply-async", "map-async", "starmap-async"]
    {
        assert!(
            run.stdout.lines().any(|line| line.starts_with(&format!("{method} "))),
            "no line for {method}:\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("Number of processors:"));
    assert!(run.stdout.contains("All 8 pool methods agree with serial on every row."), "{}", run.stdout);
}

#[test]
fn cpus_prints_the_processor_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_corepool(tmp.path(), &["cpus"], &[]).assert_success();
    let logical = std::thread::available_parallelism().unwrap().get();
    assert!(run.stdout.starts_with(&format!("Number of processors: {logical} logical")), "{}", run.stdout);
}

#[test]
fn arrival_order_really_differs_from_row_order_when_a_worker_is_slow() {
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("arrivals.csv");
    let args = [
        "count",
        "--rows",
        "60",
        "--workers",
        "2",
        "--mode",
        "imap-unordered",
        "--chunk-size",
        "2",
        "--output",
        output.to_str().unwrap(),
        "--order",
        "arrival",
    ];
    run_corepool(tmp.path(), &args, &[("COREPOOL_TEST_SLOW_WORKER", "0:20")]).assert_success();
    let rows: Vec<usize> = corepool_tests::read_arrivals(&output).into_iter().map(|(row, _)| row).collect();
    assert!(rows.windows(2).any(|pair| pair[0] > pair[1]), "arrival order equals row order: {rows:?}");
}
