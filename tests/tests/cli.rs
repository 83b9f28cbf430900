//! The command line's manners, end to end with the real `corepool` binary: help grouped
//! under headings, short flags, Python's spellings, what `-q` silences, and the demo's
//! word that `apply` is running.

use std::path::Path;

use corepool_tests::{Finished, POOL_MODES, expected_counts, read_counts, run_corepool, test_matrix, write_matrix};

fn run_ok(dir: &Path, args: &[&str]) -> Finished {
    run_corepool(dir, args, &[]).assert_success()
}

/// A 2,003 x 6 CSV matrix of values 0..10 in `dir`, and its counts of [3, 6].
fn matrix_file(dir: &Path) -> Vec<u32> {
    let matrix = test_matrix(2003, 6, 41);
    write_matrix(&dir.join("m.csv"), &matrix, ",");
    expected_counts(&matrix, 3, 6)
}

#[test]
fn count_help_groups_its_flags_under_headings() {
    let tmp = tempfile::tempdir().unwrap();
    let help = run_ok(tmp.path(), &["count", "--help"]).stdout;
    let headings = ["Input:", "The count:", "The pool:", "Output:", "Watching:"];
    let at: Vec<usize> = headings
        .iter()
        .map(|heading| {
            help.lines()
                .position(|line| line == *heading)
                .unwrap_or_else(|| panic!("no heading {heading:?} in:\n{help}"))
        })
        .collect();
    assert!(at.is_sorted(), "headings out of order {at:?}:\n{help}");
    // Each flag sits under its heading: the last heading above its line.
    let heading_of = |flag: &str| {
        let line = help.lines().position(|line| line.trim_start().starts_with(flag)).expect(flag);
        let index = at.iter().rposition(|&heading| heading < line).expect(flag);
        headings[index]
    };
    for (flag, heading) in [
        ("--input <FILE>", "Input:"),
        ("--rows <ROWS>", "Input:"),
        ("--format <FORMAT>", "Input:"),
        ("--min <MIN>", "The count:"),
        ("--verify", "The count:"),
        ("-j, --workers <WORKERS>", "The pool:"),
        ("--mode <MODE>", "The pool:"),
        ("--chunk-size <K>", "The pool:"),
        ("--task-timeout <SECONDS>", "The pool:"),
        ("-o, --output <FILE>", "Output:"),
        ("-q, --quiet", "Output:"),
        ("--report-file <FILE>", "Output:"),
        ("--monitor", "Watching:"),
        ("--repeat <N>", "Watching:"),
    ] {
        assert_eq!(heading_of(flag), heading, "{flag}:\n{help}");
    }
    assert!(help.contains("at most 65,536 rows"), "--chunk-size states its cap:\n{help}");
    let short = run_ok(tmp.path(), &["count", "-h"]).stdout;
    assert!(short.contains("Input:") && short.contains("-j, --workers"), "{short}");
    let demo = run_ok(tmp.path(), &["demo", "--help"]).stdout;
    assert!(demo.contains("-j, --workers"), "{demo}");
    let generate = run_ok(tmp.path(), &["gen", "--help"]).stdout;
    assert!(generate.contains("-o, --output <FILE>"), "{generate}");
}

#[test]
fn short_flags_give_exact_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = matrix_file(tmp.path());
    let run =
        run_ok(tmp.path(), &["count", "--input", "m.csv", "--min", "3", "--max", "6", "-j", "3", "-o", "out.txt"]);
    assert_eq!(read_counts(&tmp.path().join("out.txt")), expected);
    assert!(run.stdout.contains("mode map: 3 workers"), "-j 3 gives 3 workers:\n{}", run.stdout);
    run_ok(tmp.path(), &["gen", "--rows", "7", "--cols", "2", "-o", "g.csv"]);
    assert_eq!(std::fs::read_to_string(tmp.path().join("g.csv")).unwrap().lines().count(), 7);
    run_ok(tmp.path(), &["demo", "--rows", "50", "-j", "2"]);
}

#[test]
fn python_spellings_count_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = matrix_file(tmp.path());
    for (python, ours) in [
        ("imap_unordered", "imap-unordered"),
        ("apply_async", "apply-async"),
        ("map_async", "map-async"),
        ("starmap_async", "starmap-async"),
    ] {
        assert!(POOL_MODES.contains(&ours));
        for (mode, output) in [(python, "python.txt"), (ours, "ours.txt")] {
            let args =
                ["count", "--input", "m.csv", "--min", "3", "--max", "6", "-j", "2", "--mode", mode, "-o", output];
            let run = run_ok(tmp.path(), &args);
            assert!(run.stdout.contains(&format!("mode {ours}:")), "--mode {mode} runs {ours}:\n{}", run.stdout);
        }
        assert_eq!(read_counts(&tmp.path().join("python.txt")), expected, "--mode {python}");
        assert_eq!(read_counts(&tmp.path().join("ours.txt")), expected, "--mode {ours}");
    }
    // Pool(processes=2) and chunksize=100, spelled as in Python.
    let args = [
        "count",
        "--input",
        "m.csv",
        "--min",
        "3",
        "--max",
        "6",
        "--processes",
        "2",
        "--chunksize",
        "100",
        "-o",
        "c.txt",
    ];
    let run = run_ok(tmp.path(), &args);
    assert!(run.stdout.contains("mode map: 2 workers, 100 rows per chunk"), "{}", run.stdout);
    assert_eq!(read_counts(&tmp.path().join("c.txt")), expected);
}

#[test]
fn quiet_prints_nothing_but_what_was_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = matrix_file(tmp.path());
    let base = ["count", "--input", "m.csv", "--min", "3", "--max", "6", "-j", "2"];
    let with = |extra: &[&str]| -> Finished {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        run_ok(tmp.path(), &args)
    };

    let plain = with(&[]);
    assert!(plain.stdout.contains("checksum:"), "without -q the summary is on stdout:\n{}", plain.stdout);

    for quiet in ["-q", "--quiet"] {
        let run = with(&[quiet]);
        assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""), "{quiet} alone prints nothing");
    }
    // Generated input too (made in memory, not streamed).
    let run = run_ok(tmp.path(), &["count", "--rows", "3000", "-j", "2", "-q"]);
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));

    let run = with(&["-q", "-o", "q.txt"]);
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
    assert_eq!(read_counts(&tmp.path().join("q.txt")), expected, "the counts asked for still come");

    let run = with(&["-q", "--report", "json"]);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("stdout is the JSON report alone");
    assert_eq!(report["result"]["rows"], 2003);

    let run = with(&["-q", "--report-file", "r.json"]);
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(report["result"]["rows"], 2003);

    // An error still gets its line on stderr.
    let failed = run_corepool(tmp.path(), &["count", "--input", "missing.csv", "-q"], &[]);
    assert!(!failed.status.success());
    assert!(failed.stderr.contains("missing.csv") && failed.stdout.is_empty(), "{}", failed.stderr);
}

#[test]
fn the_demo_says_apply_is_running_when_no_bar_can_show() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_ok(tmp.path(), &["demo", "--rows", "400", "-j", "2"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let note = lines.iter().position(|line| line.starts_with("(apply: 400 blocking round trips, one per row"));
    let apply = lines.iter().position(|line| line.starts_with("apply "));
    assert!(note.is_some() && note.map(|n| n + 1) == apply, "a line before apply's row says it runs:\n{}", run.stdout);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}
