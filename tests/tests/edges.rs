//! Cases found by trying the binary as a hostile user would: standard output without a
//! usable `TMPDIR`, sizes that only the spool or a device would take, flags out of range.

use std::path::Path;

use corepool_tests::{expected_counts, run_corepool, test_matrix, write_matrix};

fn parse_counts(text: &str) -> Vec<u32> {
    text.lines().map(|line| line.parse().unwrap_or_else(|_| panic!("bad count line {line:?}"))).collect()
}

/// A `TMPDIR` that does not exist, inside `dir`.
fn missing_tmpdir(dir: &Path) -> String {
    dir.join("no-such-dir").to_str().unwrap().to_owned()
}

#[test]
fn counts_on_stdout_survive_a_missing_tmpdir() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = test_matrix(500, 5, 3);
    let input = dir.path().join("m.csv");
    write_matrix(&input, &matrix, ",");
    let tmpdir = missing_tmpdir(dir.path());
    let run = run_corepool(dir.path(), &["count", "--input", "m.csv", "-o", "-", "-q"], &[("TMPDIR", &tmpdir)]);
    assert!(run.status.success(), "exit {}: {}", run.status, run.stderr);
    assert_eq!(parse_counts(&run.stdout), expected_counts(&matrix, 4, 8));
    assert!(run.stderr.lines().count() <= 1, "at most the TMPDIR notice: {}", run.stderr);
}

#[test]
fn generated_rows_on_stdout_survive_a_missing_tmpdir() {
    let dir = tempfile::tempdir().unwrap();
    let tmpdir = missing_tmpdir(dir.path());
    let run = run_corepool(
        dir.path(),
        &["gen", "--rows", "20", "--cols", "3", "-o", "-", "--format", "csv"],
        &[("TMPDIR", &tmpdir)],
    );
    assert!(run.status.success(), "exit {}: {}", run.status, run.stderr);
    assert_eq!(run.stdout.lines().count(), 20);
}

#[test]
fn a_huge_chunk_size_on_a_small_generated_matrix_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_corepool(
        dir.path(),
        &["count", "--rows", "1000", "--chunk-size", "1000000000000", "-o", "c.txt", "-q"],
        &[],
    );
    assert!(run.status.success(), "exit {}: {}", run.status, run.stderr);
    assert_eq!(std::fs::read_to_string(dir.path().join("c.txt")).unwrap().lines().count(), 1000);
}

#[test]
fn a_negative_whole_number_names_its_flag() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--workers", "--chunk-size", "--max-retries", "--seed"] {
        let run = run_corepool(dir.path(), &["count", flag, "-1"], &[]);
        assert_eq!(run.status.code(), Some(2), "{flag}: {}", run.stderr);
        assert!(run.stderr.contains(flag), "{flag} -1: the error does not name the flag: {}", run.stderr);
        assert_eq!(run.stderr.trim_end().lines().count(), 1, "{flag}: {}", run.stderr);
    }
}

#[test]
fn what_would_pile_up_in_the_spool_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let generated = run_corepool(dir.path(), &["gen", "--rows", "1000000000000", "-o", "-", "--format", "csv"], &[]);
    assert_eq!(generated.status.code(), Some(2), "{}", generated.stderr);
    assert!(
        generated.stderr.starts_with("corepool: --output -: ") && generated.stderr.contains("free"),
        "{}",
        generated.stderr
    );
    assert!(generated.stdout.is_empty());
    let count = run_corepool(dir.path(), &["count", "--rows", "1000000000000", "-o", "/dev/stdout", "-q"], &[]);
    assert_eq!(count.status.code(), Some(2), "{}", count.stderr);
    assert!(count.stderr.contains("the counts of --rows 1000000000000 take at least"), "{}", count.stderr);
}

#[test]
fn a_fork_storm_of_workers_and_csv_flags_on_npy_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_corepool(dir.path(), &["count", "--workers", "100000", "--rows", "100"], &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.starts_with("corepool: --workers 100000: at most 1024"), "{}", run.stderr);
    assert!(run_corepool(dir.path(), &["gen", "--rows", "3", "-o", "m.npy"], &[]).status.success());
    for flag in ["--header", "--no-header"] {
        let run = run_corepool(dir.path(), &["count", "--input", "m.npy", flag], &[]);
        assert_eq!(run.status.code(), Some(2), "{flag}: {}", run.stderr);
        assert!(run.stderr.contains(&format!("{flag} applies to CSV input")), "{}", run.stderr);
    }
}
