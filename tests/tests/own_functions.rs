//! A user's own functions over their own serde types, through the function API alone
//! (`own-functions`), checked result by result against the same computation made here;
//! the initializer; and a worker of another program refusing function calls.

use std::{
    collections::BTreeSet,
    path::Path,
    time::{Duration, Instant},
};

use corepool::{FailureKind, Pool, PoolError};
use corepool_tests::{Finished, captured, tasks::SquarePlus, wait_with_watchdog};

const WATCHDOG: Duration = Duration::from_secs(60);

fn run_own_functions(dir: &Path, args: &[&str]) -> Finished {
    let child = captured(env!("CARGO_BIN_EXE_own-functions"), dir).args(args).spawn().expect("own-functions starts");
    wait_with_watchdog(child, WATCHDOG)
}

/// The lines `own-functions` must print, computed here without corepool.
fn expected_lines() -> Vec<String> {
    let points: Vec<(f64, f64)> = (0..40).map(|i| (i as f64 * 0.5, 3.0 - i as f64)).collect();
    let words: Vec<String> = (0..25).map(|i| format!("word{i}é")).collect();
    let vectors: Vec<Vec<f64>> = (0..30).map(|i| (0..i % 7 + 1).map(|j| (i * j) as f64 / 3.0).collect()).collect();
    let norms: Vec<String> = points.iter().map(|(x, y)| format!("{:?}", (x * x + y * y).sqrt())).collect();
    let shouted: Vec<String> = words.iter().map(|w| format!("{:?}", format!("{}!", w.to_uppercase()))).collect();
    let mut lines = vec![format!("apply\t0\t{:?}", 5.0f64)];
    let mut add = |call: &str, results: &[String]| {
        lines.extend(results.iter().enumerate().map(|(index, result)| format!("{call}\t{index}\t{result}")));
    };
    add("map", &norms);
    add("map-slice", &norms);
    add("map-chunks-of-7", &norms);
    add("map-closure", &(0..50).map(|x: i64| (x * 3 - 1).to_string()).collect::<Vec<_>>());
    let scaled: Vec<String> =
        points.iter().map(|(x, y)| format!("Point {{ x: {:?}, y: {:?} }}", x * 2.5, y * 2.5)).collect();
    add("starmap", &scaled);
    add("imap", &shouted);
    add("imap-chunks-of-4", &shouted);
    let mut sums_and_maxes: Vec<(f64, f64)> =
        vectors.iter().map(|v| (v.iter().sum(), v.iter().copied().fold(f64::MIN, f64::max))).collect();
    sums_and_maxes.sort_by(|a, b| a.partial_cmp(b).unwrap());
    add("imap-unordered-sorted", &sums_and_maxes.iter().map(|pair| format!("{pair:?}")).collect::<Vec<_>>());
    add("apply-async", &[format!("{:?}", "HELLO!")]);
    add("apply-async-callbacks", &["1".to_owned()]);
    add("map-async", &vectors.iter().map(|v| format!("{:?}", v.iter().sum::<f64>())).collect::<Vec<_>>());
    add("starmap-async", &(0..12).map(|i| format!("{:?}", format!("n{i}x{i}:{i}"))).collect::<Vec<_>>());
    lines
}

#[test]
fn every_call_runs_the_users_own_functions_over_their_own_types() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_own_functions(tmp.path(), &[]).assert_success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    let expected = expected_lines();
    let (panic_line, results) = lines.split_last().expect("output");
    assert_eq!(results.len(), expected.len(), "{}", run.stdout);
    for (line, expected) in results.iter().zip(&expected) {
        assert_eq!(line, expected);
    }
    assert!(
        panic_line.starts_with("panic\t0\t") && panic_line.contains("task panicked: unlucky 13"),
        "a panicking function fails its item with the panic's message: {panic_line}"
    );
}

#[test]
fn the_initializer_runs_once_in_each_worker_and_each_replacement_before_its_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let records = tmp.path().join("pids");
    std::fs::create_dir(&records).unwrap();
    let run = run_own_functions(tmp.path(), &["init", records.to_str().unwrap()]).assert_success();
    let pids_line = run.stdout.lines().find_map(|line| line.strip_prefix("pids\t")).expect("pids line");
    let parse_pids = |list: &str| -> BTreeSet<u32> {
        list.trim_matches(['[', ']']).split(", ").map(|pid| pid.parse().expect("a pid")).collect()
    };
    let first_pids = parse_pids(pids_line);
    assert_eq!(first_pids.len(), 2, "{}", run.stdout);
    let replaced = run.stdout.lines().find_map(|line| line.strip_prefix("replaced\t")).expect("replaced line");
    let (victim, after) = replaced.split_once('\t').unwrap();
    let after = parse_pids(after);
    assert!(first_pids.contains(&victim.parse().unwrap()) && !after.contains(&victim.parse().unwrap()));
    let pids: BTreeSet<u32> = first_pids.union(&after).copied().collect();
    assert_eq!(pids.len(), 3, "two workers, then one replacement: {}", run.stdout);
    let mut recorded = BTreeSet::new();
    for entry in std::fs::read_dir(&records).unwrap() {
        let path = entry.unwrap().path();
        let pid: u32 = path.file_name().unwrap().to_str().unwrap().parse().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{pid}\n"), "one run of the initializer");
        recorded.insert(pid);
    }
    assert_eq!(recorded, pids, "each worker, the replacement too, ran the initializer, and only the workers did");
    let names: Vec<&str> = run.stdout.lines().filter_map(|line| line.strip_prefix("names\t")).collect();
    assert_eq!(names.len(), 2, "{}", run.stdout);
    for name in names {
        let (comm, argv0) = name.split_once('\t').unwrap();
        assert!(comm.starts_with("corepool-w") && comm == argv0, "top and ps show the worker's name: {name}");
    }
    let greetings: Vec<&str> = run.stdout.lines().filter(|line| line.starts_with("greeting")).collect();
    assert_eq!(greetings.len(), 40);
    for line in greetings {
        let pid: u32 = line.rsplit("set up in ").next().unwrap().trim_end_matches('"').parse().expect(line);
        assert!(pids.contains(&pid), "every task saw its worker's set-up: {line}");
    }
}

#[test]
fn a_failing_initializer_fails_the_pool_with_one_line_naming_the_worker_and_its_message() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let run = run_own_functions(tmp.path(), &["init-fails"]);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    let line = run.stderr.trim_end();
    assert!(
        line.starts_with("own-functions: the pool cannot go on: worker ")
            && line.ends_with("'s initializer failed: no model file at /nowhere/model.bin"),
        "{line}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "no restarts of a failing initializer");
}

/// Runs `body` on a thread of its own, failing the test if it takes over a minute.
fn with_watchdog<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || sender.send(body()));
    receiver.recv_timeout(WATCHDOG).expect("watchdog: the pool did not answer within a minute")
}

fn plus_one(x: i64) -> i64 {
    x + 1
}

#[test]
fn a_worker_of_another_program_refuses_functions_and_still_runs_named_tasks() {
    with_watchdog(|| {
        let pool = Pool::builder().workers(1).worker_program(env!("CARGO_BIN_EXE_test-worker")).build().unwrap();
        let error = pool.apply(plus_one, 1).unwrap_err();
        let PoolError::Task { failure, .. } = &error else { panic!("{error}") };
        assert_eq!(failure.kind, FailureKind::ForeignProgram);
        assert!(error.to_string().contains("not the coordinator's own program"), "{error}");
        assert_eq!(error.to_string().lines().count(), 1, "{error}");
        let error = pool.map(plus_one, 0..10).unwrap_err();
        assert!(error.to_string().contains("not the coordinator's own program"), "{error}");
        assert_eq!(pool.map_task(&SquarePlus { offset: 1 }, &vec![1i64, 2, 3], None).unwrap(), [2, 5, 10]);
    });
}

#[test]
fn an_initializer_cannot_run_in_another_program_either() {
    with_watchdog(|| {
        let error = Pool::builder()
            .workers(1)
            .worker_program(env!("CARGO_BIN_EXE_test-worker"))
            .initializer(|_: u8| {}, 0)
            .build()
            .err()
            .expect("the pool does not start");
        assert!(error.to_string().contains("initializer failed: this worker runs"), "{error}");
    });
}

#[test]
fn workers_run_the_programs_own_image_even_once_its_file_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("own-functions");
    std::fs::copy(env!("CARGO_BIN_EXE_own-functions"), &copy).unwrap();
    let child = captured(&copy, tmp.path()).arg("replace-self").spawn().expect("the copy starts");
    let run = wait_with_watchdog(child, WATCHDOG).assert_success();
    let norms: Vec<String> = (0..40)
        .map(|i| {
            let (x, y) = (i as f64 * 0.5, 3.0 - i as f64);
            format!("after-replace\t{i}\t{:?}", (x * x + y * y).sqrt())
        })
        .collect();
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), norms);
}

#[test]
fn a_pool_that_replaces_its_workers_after_every_chunk_keeps_its_memory_map_flat() {
    let tmp = tempfile::tempdir().unwrap();
    // About 1,000 replacements: each would leave two threads' stacks mapped if never let go.
    let run = run_own_functions(tmp.path(), &["replace-often", "4", "250"]).assert_success();
    let maps: Vec<usize> = run
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("maps\t"))
        .map(|line| line.split_once('\t').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(maps.len(), 4, "{}", run.stdout);
    let growth = maps[3].saturating_sub(maps[0]);
    assert!(growth < 100, "{growth} more mappings after 750 more worker replacements: {maps:?}");
}

#[test]
fn a_function_that_builds_a_pool_gets_the_error_in_its_own_result() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_own_functions(tmp.path(), &["nested"]).assert_success();
    assert_eq!(run.stdout, format!("nested\t0\t{}\n", PoolError::InsideWorker), "{run:?}");
}

#[test]
fn a_panicking_callback_still_completes_its_result_and_the_next_callbacks_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_own_functions(tmp.path(), &["callback-panics"]).assert_success();
    assert_eq!(run.stdout, "after-panic\t0\t42\nnext\t0\t42\ncalled-back\t0\t1\n", "{run:?}");
    assert!(run.stderr.contains("callback refuses 42"), "the panic hook printed the message: {}", run.stderr);
}

#[test]
fn a_result_over_the_frame_limit_fails_its_call_alone_and_the_worker_lives_on() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_own_functions(tmp.path(), &["too-large"]).assert_success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{run:?}");
    let too_large = |line: &str, prefix: &str, items: &str| {
        let message = line.strip_prefix(prefix).unwrap_or_else(|| panic!("{line}"));
        let bytes = message
            .strip_prefix(&format!("items {items}: the result is "))
            .and_then(|rest| rest.strip_suffix(" bytes, over the 1 GiB frame limit: use smaller chunks"))
            .unwrap_or_else(|| panic!("{message}"));
        let bytes: u64 = bytes.parse().unwrap_or_else(|_| panic!("{message}"));
        assert!(bytes > 1 << 30, "{message}");
    };
    too_large(lines[0], "apply-too-large\t0\t", "0..1");
    too_large(lines[1], "map-too-large\t0\t", "0..2");
    assert_eq!(lines[2..], ["after\t0\t2", "same-worker\t0\ttrue"]);
    assert!(!run.stderr.contains("over the limit"), "no worker saw a frame it could not take: {}", run.stderr);
}
