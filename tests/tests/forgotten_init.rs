//! A program that forgets `corepool_worker::init` gets an error, not a fork bomb, and
//! every child of a pool dies with it, whatever the child's own code does.
//!
//! Each run is started in a process group of its own, counted there (every descendant is
//! in it, orphans included), and killed as a whole if it ever holds more processes than a
//! pool should, or outlives its watchdog.

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use corepool_tests::{children_of, process_group_members, wait_with_watchdog};

/// The pool's workers in the test program.
const WORKERS: usize = 2;
/// The most processes the run may ever hold: the program and its pool's workers.
const MOST_PROCESSES: usize = WORKERS + 1;

/// Kills the whole process group of a run when dropped, so that no failure of a test
/// leaves processes behind.
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: kill takes plain numbers; a negative pid names a process group.
        unsafe { libc::kill(-(self.0 as i32), libc::SIGKILL) };
    }
}

/// Starts `forgets-init` in a process group of its own, with its socket directories in
/// `tmp`.
fn start(tmp: &Path, env: &[(&str, &str)]) -> (Child, GroupGuard) {
    let child = Command::new(env!("CARGO_BIN_EXE_forgets-init"))
        .envs(env.iter().copied())
        .env("TMPDIR", tmp)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("forgets-init starts");
    let group = child.id();
    (child, GroupGuard(group))
}

/// Counts the processes in `group` until `done`, and kills the group if they are ever
/// more than [`MOST_PROCESSES`]; returns the most it saw.
fn count_processes(group: u32, done: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let most = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            let now = process_group_members(group).len();
            most.fetch_max(now, Ordering::Relaxed);
            if now > MOST_PROCESSES {
                // SAFETY: as in `GroupGuard`.
                unsafe { libc::kill(-(group as i32), libc::SIGKILL) };
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        most.load(Ordering::Relaxed)
    })
}

#[test]
fn a_program_that_forgets_init_fails_at_once_with_a_clear_error_and_never_forks_more() {
    let tmp = tempfile::tempdir().unwrap();
    let sockets = tmp.path().join("sockets");
    std::fs::create_dir(&sockets).unwrap();
    let runs = tmp.path().join("runs");
    let (child, _guard) = start(&sockets, &[("FORGETS_INIT_RUNS", runs.to_str().unwrap())]);
    let group = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let counter = count_processes(group, Arc::clone(&done));
    let run = wait_with_watchdog(child, Duration::from_secs(60));
    done.store(true, Ordering::Relaxed);
    let most = counter.join().unwrap();
    assert!(most <= MOST_PROCESSES, "{most} processes at once: {run:?}");
    assert!(!run.status.success(), "{run:?}");
    assert_eq!(
        run.stderr.trim_end(),
        format!("forgets-init: {}", corepool::PoolError::InsideWorker),
        "the coordinator's error says what was forgotten"
    );
    assert!(run.stderr.contains("call corepool::init() first thing in main"), "{}", run.stderr);
    let runs = std::fs::read_to_string(&runs).unwrap();
    let roles: Vec<&str> = runs.lines().collect();
    assert_eq!(roles.first(), Some(&"coordinator"), "{runs}");
    // Each first worker runs main at most once: the first to fail fails the start, with no retry.
    let worker_runs = roles.iter().filter(|role| **role == "worker").count();
    assert!((1..=WORKERS).contains(&worker_runs), "main ran {worker_runs} times as a worker: {runs}");
    assert!(process_group_members(group).is_empty(), "processes left behind");
    assert_eq!(std::fs::read_dir(&sockets).unwrap().count(), 0, "socket directories left behind");
}

#[test]
fn children_of_a_killed_pool_die_with_it_even_before_their_own_code_runs() {
    let tmp = tempfile::tempdir().unwrap();
    // The workers spend a minute in set-up of their own, where no corepool code has run.
    let (mut child, _guard) = start(tmp.path(), &[("FORGETS_INIT_WORKER_SETUP_MS", "60000")]);
    let coordinator = child.id();
    let started = Instant::now();
    while children_of(coordinator).len() < WORKERS {
        assert!(started.elapsed() < Duration::from_secs(30), "the workers never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let workers: Vec<u32> = children_of(coordinator).into_iter().map(|(pid, _)| pid).collect();
    // SAFETY: kill takes plain numbers.
    unsafe { libc::kill(coordinator as i32, libc::SIGKILL) };
    let killed_at = Instant::now();
    child.wait().unwrap();
    while !process_group_members(coordinator).is_empty() && killed_at.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let survivors = process_group_members(coordinator);
    assert!(survivors.is_empty(), "orphans of {workers:?}: {survivors:?}");
    assert!(killed_at.elapsed() < Duration::from_secs(1), "the workers took {:?} to go", killed_at.elapsed());
}
