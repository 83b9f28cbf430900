//! The run's private socket directory seen from outside: which leftovers a run sweeps and
//! which it must leave (a live run in another PID namespace), where the directory goes
//! when `TMPDIR` cannot hold it, and what a user reads when a start fails or is cut short.

use std::{
    fs::File,
    os::unix::{
        fs::PermissionsExt,
        net::UnixListener,
        process::{CommandExt, ExitStatusExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use corepool_tests::{
    Finished, children_of, corepool_bin, expected_counts, read_counts, test_matrix, wait_with_watchdog, write_matrix,
};

/// A pid that no process has here: above the kernel's largest (2^22).
const NO_SUCH_PID: u32 = 4_999_999;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Writes a headed matrix to `dir/m.csv`; returns the counts of values in [3, 6] per row.
fn write_input(dir: &Path) -> Vec<u32> {
    let matrix = test_matrix(300, 4, 13);
    write_matrix(&dir.join("body.csv"), &matrix, ",");
    let body = std::fs::read_to_string(dir.join("body.csv")).unwrap();
    std::fs::write(dir.join("m.csv"), format!("a,b,c,d\n{body}")).unwrap();
    expected_counts(&matrix, 3, 6)
}

/// `corepool count` of `dir/m.csv` into `dir/c.txt`, not yet waited for.
fn count_command(dir: &Path) -> Command {
    let mut command = Command::new(corepool_bin());
    command
        .args(["count", "--input", "m.csv", "--min", "3", "--max", "6", "--workers", "2", "--output", "c.txt"])
        .current_dir(dir)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs a count of `dir/m.csv` with `TMPDIR` set to `tmpdir`; checks it succeeded with the
/// exact counts, and returns what it printed and its pid.
fn count_exactly(dir: &Path, tmpdir: &Path, expected: &[u32]) -> (Finished, u32) {
    let child = count_command(dir).env("TMPDIR", tmpdir).spawn().unwrap();
    let pid = child.id();
    let run = wait_with_watchdog(child, Duration::from_secs(60)).assert_success();
    assert_eq!(read_counts(&dir.join("c.txt")), expected, "counts differ");
    (run, pid)
}

/// A directory named as run `pid`'s socket directory, in `base`.
fn run_dir(base: &Path, pid: u32, tail: &str) -> PathBuf {
    let dir = base.join(format!("corepool-{pid}-{tail}"));
    std::fs::create_dir(&dir).unwrap();
    dir
}

#[test]
fn a_live_run_of_an_unknown_pid_keeps_its_directory_and_dead_runs_and_empty_ones_go() {
    let work = tempfile::tempdir().unwrap();
    let expected = write_input(work.path());
    let tmp = tempfile::tempdir().unwrap();
    // As a live run in another PID namespace looks: a pid unknown here, its socket
    // listening, its lock held.
    let foreign = run_dir(tmp.path(), NO_SUCH_PID, "aaaaaa");
    let listener = UnixListener::bind(foreign.join("pool.sock")).unwrap();
    let lock = File::create(foreign.join("lock")).unwrap();
    lock.lock().unwrap();
    // A dead run: its lock free.
    let dead = run_dir(tmp.path(), NO_SUCH_PID - 1, "bbbbbb");
    std::fs::write(dead.join("pool.sock"), b"").unwrap();
    File::create(dead.join("lock")).unwrap();
    // A start cut short before its lock was made.
    let empty = run_dir(tmp.path(), NO_SUCH_PID - 2, "cccccc");
    // An older version's run, dead: a socket that nothing listens on, no lock.
    let old = run_dir(tmp.path(), NO_SUCH_PID - 3, "dddddd");
    drop(UnixListener::bind(old.join("pool.sock")).unwrap());

    count_exactly(work.path(), tmp.path(), &expected);
    assert!(foreign.join("pool.sock").exists(), "a live run's socket was removed");
    assert!(foreign.join("lock").exists());
    for gone in [&dead, &empty, &old] {
        assert!(!gone.exists(), "{} was left", gone.display());
    }

    drop((lock, listener));
    count_exactly(work.path(), tmp.path(), &expected);
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "once its run is dead, its directory goes: {left:?}");
}

/// Pids on this machine of every process descending from `root`, with their names.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut found = children_of(root);
    let mut next = 0;
    while next < found.len() {
        let more = children_of(found[next].0);
        found.extend(more);
        next += 1;
    }
    found
}

#[test]
fn a_run_in_another_pid_namespace_keeps_its_socket_while_a_run_here_sweeps() {
    let probe =
        Command::new("unshare").args(["--pid", "--fork", "--mount-proc", "true"]).stderr(Stdio::null()).status();
    if !probe.is_ok_and(|status| status.success()) {
        eprintln!("skipped: cannot make a PID namespace here (unshare --pid needs root or a user namespace)");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let expected = write_input(work.path());
    let tmp = tempfile::tempdir().unwrap();
    // In its namespace the run's pid is past any pid here (pid_max is at most 2^22).
    let script = "echo 4000000 > /proc/sys/kernel/ns_last_pid && \"$0\" \"$@\"";
    let rows = "30000";
    let inside = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", script])
        .arg(corepool_bin())
        .args(["count", "--rows", rows, "--mode", "apply", "--workers", "2", "--verify"])
        .env("TMPDIR", tmp.path())
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let socket = loop {
        let found = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|entry| entry.path().join("pool.sock"))
            .find(|socket| socket.exists());
        if let Some(socket) = found {
            break socket;
        }
        assert!(Instant::now() < deadline, "the run in the namespace made no socket");
        std::thread::sleep(Duration::from_millis(5));
    };
    let name = socket.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("corepool-4000001-"), "not the pid asked for: {name}");

    count_exactly(work.path(), tmp.path(), &expected);
    assert!(socket.exists(), "a run here removed the live socket of the run in the other namespace");

    // A worker that dies must be replaced through that socket.
    let worker = descendants(inside.id()).into_iter().find(|(_, name)| name == "corepool-w0");
    let (worker, _) = worker.expect("the run in the namespace ended before a worker could be killed");
    // SAFETY: kill takes a pid and a signal number.
    unsafe { libc::kill(worker as i32, libc::SIGKILL) };
    let run = wait_with_watchdog(inside, Duration::from_secs(120));
    assert!(run.status.success(), "the run in the namespace failed:\n{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("every row agrees with serial"), "{}", run.stdout);
    assert!(!run.stdout.contains("faults: 0 worker restarts"), "no worker was replaced:\n{}", run.stdout);
}

#[test]
fn a_tmpdir_that_cannot_hold_the_socket_is_named_in_one_line_and_the_run_goes_on() {
    let work = tempfile::tempdir().unwrap();
    let expected = write_input(work.path());
    let tmp = tempfile::tempdir().unwrap();
    let long = tmp.path().join("d".repeat(200 - tmp.path().as_os_str().len() - 1));
    std::fs::create_dir(&long).unwrap();
    assert_eq!(long.as_os_str().len(), 200);
    std::fs::write(tmp.path().join("a-file"), b"").unwrap();
    let cases = [
        (long.clone(), "TMPDIR is too long for a socket path"),
        (tmp.path().join("missing"), "does not exist"),
        (tmp.path().join("a-file").join("below"), "is not a directory"),
    ];
    for (tmpdir, why) in &cases {
        let (run, pid) = count_exactly(work.path(), tmpdir, &expected);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {:?}", run.stderr);
        assert!(lines[0].starts_with("corepool: ") && lines[0].contains("TMPDIR"), "{}", lines[0]);
        assert!(lines[0].contains(why), "{}", lines[0]);
        if tmpdir == &long {
            assert!(lines[0].contains("107"), "names the limit: {}", lines[0]);
        }
        assert_no_socket_dir_of(pid);
    }
    assert_eq!(std::fs::read_dir(&long).unwrap().count(), 0);
}

/// That the socket directory of run `pid` is gone from every place it may have gone.
fn assert_no_socket_dir_of(pid: u32) {
    for place in ["/dev/shm", "/tmp"] {
        let Ok(entries) = std::fs::read_dir(place) else { continue };
        let prefix = format!("corepool-{pid}-");
        let left: Vec<_> =
            entries.flatten().filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix)).collect();
        assert!(left.is_empty(), "left in {place}: {left:?}");
    }
}

#[test]
fn a_read_only_tmpdir_is_named_in_one_line_and_the_run_goes_on() {
    let work = tempfile::tempdir().unwrap();
    let expected = write_input(work.path());
    let read_only = tempfile::tempdir().unwrap();
    let child = if is_root() {
        // Root writes through a mode of 0500: only a read-only mount stops it.
        let script =
            "mount --bind \"$0\" \"$0\" && mount -o remount,bind,ro \"$0\" && export TMPDIR=\"$0\" && exec \"$@\"";
        let probe = Command::new("unshare")
            .args(["--mount", "sh", "-c", script])
            .arg(read_only.path())
            .args(["sh", "-c", "! touch \"$TMPDIR/x\" 2>/dev/null"])
            .status();
        if !probe.is_ok_and(|status| status.success()) {
            eprintln!("skipped: cannot make a read-only mount here (unshare --mount)");
            return;
        }
        let count = count_command(work.path());
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "sh", "-c", script])
            .arg(read_only.path())
            .arg(count.get_program())
            .args(count.get_args())
            .current_dir(work.path())
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().unwrap()
    } else {
        std::fs::set_permissions(read_only.path(), std::fs::Permissions::from_mode(0o500)).unwrap();
        count_command(work.path()).env("TMPDIR", read_only.path()).spawn().unwrap()
    };
    let run = wait_with_watchdog(child, Duration::from_secs(60)).assert_success();
    assert_eq!(read_counts(&work.path().join("c.txt")), expected);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {:?}", run.stderr);
    assert!(lines[0].starts_with("corepool: TMPDIR (") && lines[0].contains("is not writable"), "{}", lines[0]);
    assert_eq!(std::fs::read_dir(read_only.path()).unwrap().count(), 0);
}

#[test]
fn a_thread_that_cannot_start_is_named_once_without_noise_from_workers() {
    if !is_root() {
        eprintln!("skipped: limiting another user's processes needs root");
        return;
    }
    // Runs as `nobody`, whose processes and threads the limit counts, from a place it may write.
    let work = tempfile::tempdir().unwrap();
    let expected = write_input(work.path());
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut failures = Vec::new();
    // apply-async also starts the thread that runs callbacks, whose failure once left the
    // run waiting for ever.
    for (mode, limit) in ["map", "apply-async"].into_iter().flat_map(|mode| (4..=16u64).map(move |n| (mode, n))) {
        let _ = std::fs::remove_file(work.path().join("c.txt"));
        let mut command = count_command(work.path());
        command.args(["--mode", mode]).env("TMPDIR", work.path()).uid(65534).gid(65534);
        // SAFETY: setrlimit is async-signal-safe, and touches only the limit it is given.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                if libc::setrlimit(libc::RLIMIT_NPROC, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The limit may stop the program itself from starting.
        let Ok(child) = command.spawn() else { continue };
        let run = wait_with_watchdog(child, Duration::from_secs(60));
        let limit = format!("{mode} with {limit} processes");
        if run.status.success() {
            assert_eq!(read_counts(&work.path().join("c.txt")), expected, "limit {limit}");
            continue;
        }
        assert_eq!(run.status.code(), Some(1), "limit {limit}: {run:?}");
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "limit {limit}: one line, and none from workers: {:?}", run.stderr);
        assert!(lines[0].starts_with("corepool: "), "{}", lines[0]);
        assert!(lines[0].matches("(os error").count() <= 1, "a cause named twice: {}", lines[0]);
        assert!(!work.path().join("c.txt").exists(), "limit {limit}: an output file from a failed run");
        failures.push(lines[0].to_owned());
    }
    assert!(
        failures.iter().any(|line| line.contains("cannot start a thread: Resource temporarily unavailable")),
        "no failed thread start was named as one: {failures:?}"
    );
    assert!(
        failures.iter().all(|line| !line.contains("socket")),
        "a thread's failure blamed on the socket: {failures:?}"
    );
}

/// Starts a count that is stopped by `signal` after `delay`, and returns what it printed.
fn stopped_during_start(dir: &Path, signal: i32, delay: Duration) -> Finished {
    let child: Child = count_command(dir).env("TMPDIR", dir).spawn().unwrap();
    std::thread::sleep(delay);
    // SAFETY: kill takes a pid and a signal number.
    unsafe { libc::kill(child.id() as i32, signal) };
    // Waits for the end of standard error too, which the workers share: they are gone then.
    wait_with_watchdog(child, Duration::from_secs(60))
}

#[test]
fn workers_say_nothing_when_their_coordinator_is_stopped_during_start_up() {
    let work = tempfile::tempdir().unwrap();
    write_input(work.path());
    for delay_ms in [0, 1, 2, 3, 4, 6, 8, 12, 20] {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
            let run = stopped_during_start(work.path(), signal, Duration::from_millis(delay_ms));
            let noise: Vec<&str> = run
                .stderr
                .lines()
                .filter(|line| !line.starts_with("corepool: interrupted") && !line.starts_with("corepool: terminated"))
                .collect();
            assert!(noise.is_empty(), "signal {signal} after {delay_ms} ms: {noise:?}");
            // Killed by the signal itself if it came before the handler was installed.
            let by_signal = run.status.signal().is_some_and(|by| by == signal);
            assert!(by_signal || matches!(run.status.code(), Some(0 | 130 | 143)), "{:?}", run.status);
        }
    }
}
