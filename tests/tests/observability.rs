//! Seeing the pool work, end to end with the real `corepool` binary: process names in
//! /proc, the monitor's plain lines, the JSON report, and silence on a non-terminal
//! standard error.

use std::{
    collections::BTreeSet,
    io::Read,
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use corepool_tests::{Finished, children_of, corepool_bin};
use serde_json::Value;

/// How long any run may take before the test fails as hung.
const WATCHDOG: Duration = Duration::from_secs(60);

/// A running `corepool`, its output drained on threads so that it never blocks on a pipe.
struct Running {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    deadline: Instant,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = Command::new(corepool_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("corepool starts");
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let stdout = child.stdout.take().map(|p| drain(Box::new(p)));
        let stderr = child.stderr.take().map(|p| drain(Box::new(p)));
        Running { child, stdout, stderr, deadline: Instant::now() + WATCHDOG }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the end under the watchdog; kills the run and fails if it hangs.
    fn finish(mut self) -> Finished {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting on corepool") {
                break status;
            }
            if Instant::now() > self.deadline {
                self.kill();
                panic!("watchdog: corepool ran over {WATCHDOG:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let stdout = self.stdout.take().map(|t| t.join().unwrap()).unwrap_or_default();
        let stderr = self.stderr.take().map(|t| t.join().unwrap()).unwrap_or_default();
        Finished { status, stdout, stderr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed assertion must not leave a pool running.
        self.kill();
    }
}

fn run(args: &[&str]) -> Finished {
    let finished = Running::start(args).finish();
    assert!(
        finished.status.success(),
        "corepool {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        finished.status,
        finished.stdout,
        finished.stderr
    );
    finished
}

/// Waits until `parent` has `count` children named `corepool-w*`, and returns them.
fn wait_for_workers(running: &mut Running, count: usize) -> Vec<(u32, String)> {
    let limit = Instant::now() + Duration::from_secs(20);
    loop {
        let workers: Vec<_> =
            children_of(running.pid()).into_iter().filter(|(_, comm)| corepool_tests::is_worker_name(comm)).collect();
        if workers.len() == count {
            return workers;
        }
        assert!(running.is_running(), "corepool ended before {count} workers were seen: {workers:?}");
        assert!(Instant::now() < limit, "only {workers:?} of {count} workers appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The counts `corepool count` should give for a generated matrix, by a plain loop.
fn expected_counts(rows: usize, cols: usize, (low, high, seed): (i64, i64, u64), (min, max): (i64, i64)) -> Vec<u32> {
    let matrix = corepool_tutorial::Matrix::random(rows, cols, low, high, seed);
    matrix.to_i64().chunks(cols).map(|row| row.iter().filter(|&&v| min <= v && v <= max).count() as u32).collect()
}

/// The report's checksum, as docs/report-schema.md defines it.
fn fnv1a64(counts: &[u32]) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for count in counts {
        for byte in count.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100000001b3);
        }
    }
    format!("fnv1a64:{hash:016x}")
}

fn sum_of(workers: &Value, field: &str) -> u64 {
    workers.as_array().expect("workers is a list").iter().map(|w| w[field].as_u64().expect(field)).sum()
}

#[test]
fn json_report_on_stdout_is_pure_and_adds_up() {
    let args = [
        "count",
        "--rows",
        "10007",
        "--cols",
        "7",
        "--low",
        "-5",
        "--high",
        "20",
        "--seed",
        "11",
        "--min",
        "0",
        "--max",
        "9",
        "--workers",
        "3",
        "--chunk-size",
        "1000",
        "--report",
        "json",
    ];
    let run = run(&args);
    let report: Value = serde_json::from_str(&run.stdout).expect("stdout is one JSON document");
    assert_eq!(report["version"], 1);
    let parameters = &report["parameters"];
    assert_eq!(parameters["rows"], 10007);
    assert_eq!(parameters["cols"], 7);
    assert_eq!(parameters["workers"], 3);
    assert_eq!(parameters["mode"], "map");
    assert_eq!(parameters["chunk_size"], 1000);
    assert_eq!(parameters["input"]["kind"], "random");
    assert_eq!(parameters["input"]["seed"], 11);

    let workers = &report["workers"];
    assert_eq!(workers.as_array().unwrap().len(), 3);
    assert_eq!(sum_of(workers, "rows"), 10007, "per-worker rows add up to the matrix's");
    assert_eq!(sum_of(workers, "chunks"), 11);
    assert_eq!(report["restarts"], 0);

    let expected = expected_counts(10007, 7, (-5, 20, 11), (0, 9));
    assert_eq!(report["result"]["checksum"], fnv1a64(&expected));
    assert_eq!(report["result"]["rows"], 10007);
    assert_eq!(report["result"]["values_in_range"], expected.iter().map(|&c| u64::from(c)).sum::<u64>());

    let timings = &report["timings"];
    let part = |name: &str| timings[name].as_f64().unwrap_or_else(|| panic!("timings.{name} is a number"));
    let parts = ["startup_s", "distribution_s", "compute_s", "gathering_s", "shutdown_s"].map(part);
    assert!(parts.iter().all(|&p| p >= 0.0), "{timings}");
    assert!((parts.iter().sum::<f64>() - part("total_s")).abs() < 1e-6, "{timings}");
    assert_eq!(report["repetitions"].as_array().unwrap().len(), 1);

    // The human text went to stderr instead.
    assert!(run.stderr.contains(&format!("checksum: {}", fnv1a64(&expected))), "{}", run.stderr);
}

#[test]
fn report_file_with_repeat_gives_each_repetition() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let run = run(&[
        "count",
        "--rows",
        "5000",
        "--workers",
        "2",
        "--mode",
        "imap-unordered",
        "--repeat",
        "3",
        "--quiet",
        "--report-file",
        path.to_str().unwrap(),
    ]);
    assert!(run.stderr.is_empty(), "--quiet leaves stderr empty: {}", run.stderr);
    assert!(run.stdout.is_empty(), "--quiet leaves stdout empty too, the report being in its file: {}", run.stdout);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(report["parameters"]["repeat"], 3);
    let repetitions = report["repetitions"].as_array().unwrap();
    assert_eq!(repetitions.len(), 3);
    assert!(repetitions.iter().all(|r| r["wall_s"].as_f64().is_some_and(|s| s > 0.0)), "{repetitions:?}");
    assert_eq!(sum_of(&report["workers"], "rows"), 3 * 5000, "workers' rows count every repetition");
    let expected = expected_counts(5000, 5, (0, 10, 2019), (4, 8));
    assert_eq!(report["result"]["checksum"], fnv1a64(&expected));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["report.json"], "the report is written atomically, without temporary files left");
}

#[test]
fn workers_are_named_in_proc() {
    let mut running = Running::start(&["count", "--rows", "100000", "--workers", "2", "--repeat", "100000", "--quiet"]);
    let workers = wait_for_workers(&mut running, 2);
    // Read once it has workers: before its exec, the child still bears the test thread's name.
    let coordinator = std::fs::read_to_string(format!("/proc/{}/comm", running.pid())).unwrap();
    assert_eq!(coordinator.trim_end(), "corepool");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", running.pid())).unwrap();
    assert!(cmdline.split(|&b| b == 0).next().unwrap().ends_with(b"corepool"), "{cmdline:?}");
    let mut indices = BTreeSet::new();
    for (pid, _) in workers {
        // The name is set by the worker itself right after it starts: give it a moment.
        let limit = Instant::now() + Duration::from_secs(10);
        let comm = loop {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
            if comm.trim_end() != "corepool" || Instant::now() > limit {
                break comm.trim_end().to_owned();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap();
        assert_eq!(argv0, comm.as_bytes(), "pid {pid}: argv[0] and the process name agree");
        let index: usize = comm.strip_prefix("corepool-w").and_then(|i| i.parse().ok()).expect(&comm);
        assert!(comm.len() <= 15, "{comm} fits Linux's 15-byte process names");
        indices.insert(index);
    }
    assert_eq!(indices, BTreeSet::from([0, 1]));
}

#[test]
fn monitor_lines_name_every_live_worker() {
    let mut running = Running::start(&["count", "--rows", "200000", "--workers", "3", "--repeat", "10", "--monitor"]);
    let coordinator = running.pid();
    let seen: BTreeSet<u32> = wait_for_workers(&mut running, 3).into_iter().map(|(pid, _)| pid).collect();
    let run = running.finish();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(!run.stderr.contains('\x1b'), "no escape codes when stderr is a pipe:\n{}", run.stderr);

    let mut named = BTreeSet::new();
    let mut lines = 0;
    for line in run.stderr.lines().filter(|line| line.starts_with("[corepool monitor ")) {
        lines += 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let pid = fields.iter().find_map(|f| f.strip_prefix("pid=")).expect(line);
        assert!(fields.iter().any(|f| f.starts_with("state=")), "{line}");
        assert!(fields.iter().any(|f| f.starts_with("cpu=")) && fields.iter().any(|f| f.starts_with("rss=")), "{line}");
        if fields[3] == "corepool" {
            assert_eq!(pid, coordinator.to_string(), "{line}");
        } else if let Ok(pid) = pid.parse::<u32>() {
            assert!(corepool_tests::is_worker_name(fields[3]), "{line}");
            named.insert(pid);
        }
    }
    assert!(lines >= 2 * 4, "at least a first and a last refresh of 4 lines each:\n{}", run.stderr);
    assert_eq!(named, seen, "the monitor names exactly the workers that ran");
}

/// A monitor line's `key=value` field.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn monitor_gives_rows_per_second_and_a_cpu_share_the_cores_can_give() {
    let run = run(&["count", "--rows", "300000", "--workers", "2", "--repeat", "12", "--monitor"]);
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    let lines: Vec<&str> = run.stderr.lines().filter(|line| line.starts_with("[corepool monitor ")).collect();
    let mut rates = Vec::new();
    for line in &lines {
        let rate = field(line, "rows_per_s").unwrap_or_else(|| panic!("no rows_per_s in {line}"));
        if rate != "-" {
            rates.push(rate.parse::<f64>().unwrap_or_else(|_| panic!("rows_per_s is a number in {line}")));
        }
        let cpu = field(line, "cpu").expect(line);
        if cpu != "-" {
            let percent: f64 = cpu.strip_suffix('%').and_then(|p| p.parse().ok()).expect(line);
            // The kernel's process clock may lag a running thread by a scheduler tick.
            assert!(
                (0.0..=100.0 * cores * 1.02).contains(&percent),
                "{line}: CPU beyond {cores} cores:\n{}",
                run.stderr
            );
        }
    }
    assert!(rates.iter().any(|&rate| rate > 0.0), "some refresh saw rows done per second:\n{}", run.stderr);
    let rows: u64 = lines
        .iter()
        .rev()
        .take(3)
        .filter(|line| field(line, "pid").is_some_and(|pid| pid != "-"))
        .filter_map(|line| field(line, "rows")?.parse::<u64>().ok())
        .sum();
    assert_eq!(rows, 2 * 12 * 300000, "the last refresh: the coordinator's rows are the workers' sum");
}

#[test]
fn no_progress_bar_or_escape_codes_when_stderr_is_a_pipe() {
    // Long enough (over a second on a debug build) that a terminal would get a bar.
    let started = Instant::now();
    let run = run(&["count", "--rows", "300000", "--workers", "2", "--repeat", "15"]);
    assert!(run.stderr.is_empty(), "stderr should be empty, got:\n{}", run.stderr);
    assert!(!run.stdout.contains('\x1b'), "{}", run.stdout);
    assert!(run.stdout.contains("balance: rows min/max"), "{}", run.stdout);
    eprintln!("the silent run took {:?}", started.elapsed());
}

#[test]
fn contradictory_observability_flags_exit_2() {
    for args in [
        &["count", "--monitor", "--quiet"][..],
        &["count", "--repeat", "0"],
        &["count", "--mode", "serial", "--monitor"],
        &["count", "--report", "xml"],
    ] {
        let finished = Running::start(args).finish();
        assert_eq!(finished.status.code(), Some(2), "{args:?}: {}", finished.stderr);
        assert!(!finished.stderr.trim().is_empty() && finished.stdout.is_empty(), "{args:?}: {}", finished.stdout);
    }
}
