//! Where `corepool count` and `corepool gen` write, against the real binary: standard
//! output, device nodes, FIFOs and symlinks written into or through rather than replaced;
//! modes and identities of files; and no output, and no temporary file, from any run that
//! did not succeed (signals, SIGKILL, a report that cannot be written).

use std::{
    ffi::CString,
    os::unix::{
        ffi::OsStrExt,
        fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt},
        process::ExitStatusExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use corepool_tests::{
    Finished, children_of, corepool_bin, expected_counts, read_counts, run_corepool, test_matrix, wait_with_watchdog,
    write_matrix,
};

/// A CSV input of `rows` rows in `dir`, and the counts in [4, 8] it must give.
fn input_in(dir: &Path, rows: usize) -> (PathBuf, Vec<u32>) {
    let matrix = test_matrix(rows, 5, 11);
    let path = dir.join("m.csv");
    write_matrix(&path, &matrix, ",");
    (path, expected_counts(&matrix, 4, 8))
}

fn parse_counts(text: &str) -> Vec<u32> {
    text.lines().map(|line| line.parse().unwrap_or_else(|_| panic!("bad count line {line:?}"))).collect()
}

/// Names in `dir` (hidden ones too), sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn temp_files_in(dir: &Path) -> Vec<String> {
    names_in(dir).into_iter().filter(|name| name.starts_with(".corepool-output-")).collect()
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// Makes a character device node; `false` (with a note) where this system does not allow it.
fn make_char_device(path: &Path, major: u32, minor: u32) -> bool {
    // SAFETY: a NUL-terminated path; mknod has no memory effects.
    let made = unsafe { libc::mknod(c_path(path).as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(major, minor)) };
    if made != 0 {
        eprintln!("skipped: mknod {} is not permitted here: {}", path.display(), std::io::Error::last_os_error());
    }
    made == 0
}

/// Asserts the one-line refusal of bad flags.
fn assert_refused(run: &Finished, says: &str) {
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    assert!(run.stderr.contains(says), "{}", run.stderr);
}

#[test]
fn dash_is_standard_output_and_the_summary_moves_to_standard_error() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = input_in(dir.path(), 300);
    let input = input.to_str().unwrap();
    let run =
        run_corepool(dir.path(), &["count", "--input", input, "--output", "-", "--workers", "2"], &[]).assert_success();
    assert_eq!(parse_counts(&run.stdout), expected);
    assert!(run.stderr.contains("wrote the counts to standard output"), "{}", run.stderr);
    let run = run_corepool(dir.path(), &["count", "--input", input, "--output", "-", "--quiet"], &[]).assert_success();
    assert_eq!(parse_counts(&run.stdout), expected);
    assert_eq!(run.stderr, "");
    // The JSON report cannot share standard output with the counts.
    let run = run_corepool(dir.path(), &["count", "--input", input, "--output", "-", "--report", "json"], &[]);
    assert_refused(&run, "--output -: standard output carries the JSON report");
    assert_eq!(run.stdout, "");
    assert_eq!(names_in(dir.path()), ["m.csv"]);
}

#[test]
fn a_symlink_to_standard_output_writes_there_and_stays_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = input_in(dir.path(), 200);
    let link = dir.path().join("out");
    std::os::unix::fs::symlink("/dev/stdout", &link).unwrap();
    let args = ["count", "--input", input.to_str().unwrap(), "--output", "out", "-q", "--mode", "imap"];
    let run = run_corepool(dir.path(), &args, &[]).assert_success();
    assert_eq!(parse_counts(&run.stdout), expected);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/dev/stdout"));
}

#[test]
fn a_device_node_is_written_into_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    if !make_char_device(&null, 1, 3) {
        return;
    }
    let before = std::fs::symlink_metadata(&null).unwrap();
    let (input, _) = input_in(dir.path(), 100);
    for args in [
        vec!["count", "--input", input.to_str().unwrap(), "--output", "null"],
        vec!["count", "--rows", "1000", "--output", "null", "--report-file", "null"],
        vec!["gen", "--rows", "100", "--cols", "3", "--output", "null", "--format", "npy"],
    ] {
        run_corepool(dir.path(), &args, &[]).assert_success();
        let after = std::fs::symlink_metadata(&null).unwrap();
        assert!(after.file_type().is_char_device(), "{args:?} replaced the device node");
        assert_eq!((after.rdev(), after.ino(), after.mode()), (before.rdev(), before.ino(), before.mode()));
    }
    assert_eq!(names_in(dir.path()), ["m.csv", "null"]);
}

#[test]
fn a_fifo_gets_the_counts_and_stays_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = input_in(dir.path(), 500);
    let fifo = dir.path().join("counts.fifo");
    // SAFETY: a NUL-terminated path; mkfifo has no memory effects.
    assert_eq!(unsafe { libc::mkfifo(c_path(&fifo).as_ptr(), 0o644) }, 0);
    let (sender, received) = std::sync::mpsc::channel();
    let reader_path = fifo.clone();
    std::thread::spawn(move || {
        let _ = sender.send(std::fs::read_to_string(reader_path));
    });
    let run = run_corepool(dir.path(), &["count", "--input", input.to_str().unwrap(), "--output", "counts.fifo"], &[]);
    // A reader still waiting (the run failed before opening the FIFO) is let go.
    let _ = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo);
    let text = received.recv_timeout(Duration::from_secs(30)).expect("the reader ends").unwrap();
    run.assert_success();
    assert_eq!(parse_counts(&text), expected);
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn a_symlink_to_a_file_has_its_target_replaced_and_stays_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = input_in(dir.path(), 100);
    let target = dir.path().join("real.csv");
    std::fs::write(&target, "old\n").unwrap();
    std::os::unix::fs::symlink("real.csv", dir.path().join("link.csv")).unwrap();
    run_corepool(dir.path(), &["count", "--input", input.to_str().unwrap(), "--output", "link.csv"], &[])
        .assert_success();
    assert!(std::fs::symlink_metadata(dir.path().join("link.csv")).unwrap().file_type().is_symlink());
    assert_eq!(read_counts(&target), expected);
    assert_eq!(names_in(dir.path()), ["link.csv", "m.csv", "real.csv"]);
}

/// Runs `corepool` with `args` under `umask`, in `dir`.
fn run_with_umask(dir: &Path, umask: &str, args: &[&str]) -> Finished {
    let child = corepool_tests::captured("sh", dir)
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(corepool_bin())
        .args(args)
        .spawn()
        .unwrap();
    wait_with_watchdog(child, corepool_tests::WATCHDOG)
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn new_files_get_0666_less_the_umask_and_replaced_files_keep_their_mode_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = input_in(dir.path(), 100);
    let input = input.to_str().unwrap();
    for (umask, mode) in [("022", 0o644), ("077", 0o600), ("002", 0o664)] {
        let counts = format!("c{umask}.csv");
        let report = format!("r{umask}.json");
        let run = run_with_umask(
            dir.path(),
            umask,
            &["count", "--input", input, "--output", &counts, "--report-file", &report],
        );
        run.assert_success();
        assert_eq!(mode_of(&dir.path().join(&counts)), mode, "counts under umask {umask}");
        assert_eq!(mode_of(&dir.path().join(&report)), mode, "report under umask {umask}");
        let matrix = format!("g{umask}.npy");
        run_with_umask(dir.path(), umask, &["gen", "--rows", "10", "--cols", "2", "--output", &matrix])
            .assert_success();
        assert_eq!(mode_of(&dir.path().join(&matrix)), mode, "gen under umask {umask}");
    }
    let kept = dir.path().join("kept.csv");
    std::fs::write(&kept, "old\n").unwrap();
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o640)).unwrap();
    // SAFETY: a NUL-terminated path; chown has no memory effects. It fails unless root.
    let chowned = unsafe { libc::chown(c_path(&kept).as_ptr(), 4321, 4321) } == 0;
    run_with_umask(dir.path(), "077", &["count", "--input", input, "--output", "kept.csv"]).assert_success();
    assert_eq!(read_counts(&kept), expected);
    assert_eq!(mode_of(&kept), 0o640);
    if chowned {
        let meta = std::fs::metadata(&kept).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4321, 4321));
    }
}

#[test]
fn an_output_that_is_the_input_or_the_report_under_another_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = input_in(dir.path(), 50);
    let original = std::fs::read(&input).unwrap();
    std::fs::hard_link(&input, dir.path().join("hard.csv")).unwrap();
    std::os::unix::fs::symlink("m.csv", dir.path().join("soft.csv")).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--input", "m.csv", "--output", "hard.csv"], "--output hard.csv: is the input file m.csv"),
        (&["--input", "m.csv", "--output", "soft.csv"], "--output soft.csv: is the input file m.csv"),
        (&["--input", "soft.csv", "--output", "sub/../m.csv"], "--output sub/../m.csv: is the input file soft.csv"),
        (&["--input", "m.csv", "--report-file", "hard.csv"], "--report-file hard.csv: is the input file m.csv"),
        (&["--input", "m.csv", "--output", "c.csv", "--report-file", "./c.csv"], "is the same file as --output c.csv"),
        (&["--input", "m.csv", "--output", "-", "--report-file", "/dev/stdout"], "is the same file as --output -"),
    ];
    for (flags, says) in cases {
        let args: Vec<&str> = ["count"].iter().chain(flags).copied().collect();
        assert_refused(&run_corepool(dir.path(), &args, &[]), says);
    }
    // Standard input redirected from the very file.
    let child = Command::new(corepool_bin())
        .args(["count", "--input", "-", "--output", "soft.csv"])
        .current_dir(dir.path())
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let run = wait_with_watchdog(child, corepool_tests::WATCHDOG);
    assert_refused(&run, "--output soft.csv: is the input file given on standard input");
    assert_eq!(std::fs::read(&input).unwrap(), original);
    assert_eq!(names_in(dir.path()), ["hard.csv", "m.csv", "soft.csv", "sub"]);
}

#[test]
fn a_report_that_cannot_be_written_leaves_no_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = input_in(dir.path(), 100);
    let input = input.to_str().unwrap();
    std::fs::write(dir.path().join("counts.csv"), "old\n").unwrap();
    // A report path under a file: refused before the run.
    std::fs::write(dir.path().join("plain"), "").unwrap();
    let run = run_corepool(
        dir.path(),
        &["count", "--input", input, "--output", "new.csv", "--report-file", "plain/r.json"],
        &[],
    );
    assert_refused(&run, "--report-file plain/r.json");
    // A write error at the end (a full device): the run fails, and the counts stay as they were.
    if make_char_device(&dir.path().join("full"), 1, 7) {
        for output in ["counts.csv", "new.csv"] {
            let run = run_corepool(
                dir.path(),
                &["count", "--input", input, "--output", output, "--report-file", "full"],
                &[],
            );
            assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
            assert!(run.stderr.contains("writing full"), "{}", run.stderr);
        }
        assert_eq!(std::fs::read_to_string(dir.path().join("counts.csv")).unwrap(), "old\n");
        assert_eq!(names_in(dir.path()), ["counts.csv", "full", "m.csv", "plain"]);
    }
}

fn start(dir: &Path, args: &[&str], tmpdir: &Path) -> Child {
    corepool_tests::captured(corepool_bin(), dir)
        .args(args)
        .env("TMPDIR", tmpdir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits up to 10 s for `coordinator` to have a worker.
fn wait_for_workers(coordinator: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while children_of(coordinator).is_empty() {
        assert!(Instant::now() < deadline, "no worker started");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn send(pid: u32, signal: i32) {
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid as i32, signal) };
}

/// A run long enough to be stopped: repeated, with its counts going to `output`.
fn long_run(output: &str) -> Vec<String> {
    ["count", "--rows", "100000", "--repeat", "100000", "--output", output].map(str::to_owned).to_vec()
}

#[test]
fn ctrl_c_and_sigterm_at_any_moment_leave_no_output_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kept.npy"), "old\n").unwrap();
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        for (output, delay_ms) in
            [("new.npy", 0), ("new.csv", 3), ("kept.npy", 20), ("new.npy", 120), ("kept.npy", 400)]
        {
            let args = long_run(output);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let child = start(dir.path(), &args, sockets.path());
            let pid = child.id();
            wait_for_workers(pid);
            std::thread::sleep(Duration::from_millis(delay_ms));
            send(pid, signal);
            let run = wait_with_watchdog(child, Duration::from_secs(20));
            assert_eq!(run.status.code(), Some(code), "{output} after {delay_ms} ms: {}", run.stderr);
            assert_eq!(names_in(dir.path()), ["kept.npy"], "{output} after {delay_ms} ms");
            assert_eq!(std::fs::read_to_string(dir.path().join("kept.npy")).unwrap(), "old\n");
            assert_eq!(names_in(sockets.path()), Vec::<String>::new(), "socket directory left");
        }
    }
    // At once, maybe before the handler is in place: stopped either way, with nothing left.
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let args = long_run("new.csv");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = start(dir.path(), &args, sockets.path());
        send(child.id(), signal);
        let run = wait_with_watchdog(child, Duration::from_secs(20));
        assert!(run.status.code() == Some(128 + signal) || run.status.signal() == Some(signal), "{:?}", run.status);
        assert_eq!(names_in(dir.path()), ["kept.npy"]);
    }
}

/// SIGKILLs a run writing to a folder of `parent`, and checks that it left nothing there.
fn sigkill_leaves_nothing_in(parent: &Path) {
    let dir = tempfile::tempdir_in(parent).unwrap();
    let sockets = tempfile::tempdir().unwrap();
    for output in ["new.npy", "new.csv"] {
        let args = long_run(output);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = start(dir.path(), &args, sockets.path());
        wait_for_workers(child.id());
        std::thread::sleep(Duration::from_millis(50));
        send(child.id(), libc::SIGKILL);
        let run = wait_with_watchdog(child, Duration::from_secs(20));
        assert_eq!(run.status.signal(), Some(libc::SIGKILL));
        assert_eq!(temp_files_in(dir.path()), Vec::<String>::new(), "in {}", parent.display());
        assert_eq!(names_in(dir.path()), Vec::<String>::new(), "in {}", parent.display());
    }
}

#[test]
fn a_sigkilled_run_leaves_no_temporary_file_on_disk_or_tmpfs() {
    sigkill_leaves_nothing_in(&std::env::temp_dir());
    sigkill_leaves_nothing_in(&corepool_tests::target_dir());
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        sigkill_leaves_nothing_in(shm);
    } else {
        eprintln!("skipped: no /dev/shm (tmpfs) here");
    }
}

#[test]
fn a_dead_runs_temporary_file_is_swept_and_a_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = input_in(dir.path(), 50);
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let dead = dir.path().join(".corepool-output-dead1");
    std::fs::File::create(&dead).unwrap().set_modified(an_hour_ago).unwrap();
    let live = dir.path().join(".corepool-output-live1");
    let held = std::fs::File::create(&live).unwrap();
    held.set_modified(an_hour_ago).unwrap();
    held.lock().unwrap();
    run_corepool(dir.path(), &["count", "--input", input.to_str().unwrap(), "--output", "c.csv"], &[]).assert_success();
    assert_eq!(read_counts(&dir.path().join("c.csv")), expected);
    assert!(!dead.exists(), "a dead run's file was left");
    assert!(live.exists(), "a live run's file was removed");
}

#[test]
fn a_signal_in_a_short_runs_first_or_last_milliseconds_leaves_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let expected = {
        let matrix = corepool_tutorial::Matrix::random(2000, 5, 0, 10, 2019);
        let rows: Vec<Vec<i64>> = matrix.iter_rows().collect();
        expected_counts(&rows, 4, 8)
    };
    let output = dir.path().join("c.csv");
    let mut outcomes = [0usize; 3];
    for attempt in 0..100u64 {
        let signal = if attempt % 2 == 0 { libc::SIGTERM } else { libc::SIGINT };
        let child = start(dir.path(), &["count", "--rows", "2000", "--output", "c.csv"], sockets.path());
        std::thread::sleep(Duration::from_micros(attempt * 150));
        send(child.id(), signal);
        let run = wait_with_watchdog(child, Duration::from_secs(20));
        let at = format!("signal {signal} after {} us: {:?} {}", attempt * 150, run.status, run.stderr);
        if run.status.success() {
            assert_eq!(read_counts(&output), expected, "{at}");
            std::fs::remove_file(&output).unwrap();
            outcomes[0] += 1;
        } else {
            let handled = run.status.code() == Some(128 + signal);
            assert!(handled || run.status.signal() == Some(signal), "{at}");
            outcomes[if handled { 1 } else { 2 }] += 1;
        }
        assert_eq!(names_in(dir.path()), Vec::<String>::new(), "{at}");
        assert_eq!(names_in(sockets.path()), Vec::<String>::new(), "socket directory left: {at}");
    }
    eprintln!("finished, stopped by the handler, killed before it: {outcomes:?}");
}
