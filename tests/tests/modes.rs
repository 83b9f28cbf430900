//! Every mode, every worker count, every chunk size: the real `corepool` binary's output
//! equals an independent count, row by row.

use std::path::Path;

use corepool_tests::{
    POOL_MODES, expected_counts, read_arrivals, read_counts, run_corepool, test_matrix, write_matrix,
};

/// Runs `count` with `args` and the output in `dir`, and compares the file with `expected`.
fn check_run(dir: &Path, args: &[&str], expected: &[u32], failures: &mut Vec<String>) {
    let output = dir.join("counts.txt");
    let _ = std::fs::remove_file(&output);
    let mut full = vec!["count", "--output", output.to_str().unwrap()];
    full.extend_from_slice(args);
    let run = run_corepool(dir, &full, &[]);
    if !run.status.success() {
        failures.push(format!("{args:?}: exit {}: {}", run.status, run.stderr.trim()));
        return;
    }
    let counts = read_counts(&output);
    if counts != expected {
        let row = counts.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(counts.len().min(expected.len()));
        failures.push(format!(
            "{args:?}: {} counts for {} rows, first difference at row {row}",
            counts.len(),
            expected.len()
        ));
    }
}

fn assert_no_failures(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} runs failed:\n{}", failures.len(), failures.join("\n"));
}

fn chunk_sizes(rows: usize) -> Vec<String> {
    vec!["1".into(), "7".into(), rows.max(1).to_string()]
}

#[test]
fn every_mode_worker_count_and_chunk_size_matches_on_a_csv_file() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = test_matrix(613, 5, 1);
    let input = dir.path().join("matrix.csv");
    write_matrix(&input, &matrix, ",");
    let expected = expected_counts(&matrix, 4, 8);
    let mut failures = Vec::new();
    for workers in ["1", "2", "4"] {
        for mode in POOL_MODES {
            let sizes = if mode.starts_with("apply") { vec!["1".to_owned()] } else { chunk_sizes(matrix.len()) };
            for size in &sizes {
                let args =
                    ["--input", input.to_str().unwrap(), "--workers", workers, "--mode", mode, "--chunk-size", size];
                check_run(dir.path(), &args, &expected, &mut failures);
            }
        }
    }
    assert_no_failures(failures);
}

#[test]
fn every_mode_worker_count_and_chunk_size_matches_on_generated_data() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols, seed) = (1_009, 6, 77);
    let matrix = corepool_tutorial::Matrix::random(rows, cols, -5, 15, seed);
    let rows_vec: Vec<Vec<i64>> = matrix.iter_rows().collect();
    let expected = expected_counts(&rows_vec, 0, 9);
    let mut failures = Vec::new();
    for workers in ["1", "2", "4"] {
        for mode in POOL_MODES {
            let sizes = if mode.starts_with("apply") { vec!["1".to_owned()] } else { chunk_sizes(rows) };
            for size in &sizes {
                let (rows, cols, seed) = (rows.to_string(), cols.to_string(), seed.to_string());
                let args = [
                    "--rows",
                    &rows,
                    "--cols",
                    &cols,
                    "--low",
                    "-5",
                    "--high",
                    "15",
                    "--seed",
                    &seed,
                    "--min",
                    "0",
                    "--max",
                    "9",
                    "--workers",
                    workers,
                    "--mode",
                    mode,
                    "--chunk-size",
                    size,
                ];
                check_run(dir.path(), &args, &expected, &mut failures);
            }
        }
    }
    assert_no_failures(failures);
}

#[test]
fn edge_shapes_match_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    // (rows, cols, chunk size): one row; rows not divisible by the chunk size; one column;
    // a thousand columns; a chunk larger than the matrix.
    let shapes = [(1, 5, "3"), (23, 5, "4"), (50, 1, "7"), (12, 1000, "5"), (9, 3, "100")];
    for (rows, cols, chunk) in shapes {
        let matrix = test_matrix(rows, cols, rows as u64 * 31 + cols as u64);
        let input = dir.path().join(format!("m{rows}x{cols}.txt"));
        write_matrix(&input, &matrix, " ");
        let expected = expected_counts(&matrix, 4, 8);
        for mode in POOL_MODES.iter().chain(&["serial"]) {
            let args = ["--input", input.to_str().unwrap(), "--workers", "2", "--mode", mode, "--chunk-size", chunk];
            check_run(dir.path(), &args, &expected, &mut failures);
        }
    }
    assert_no_failures(failures);
}

#[test]
fn zero_rows_give_an_empty_result_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for mode in POOL_MODES.iter().chain(&["serial"]) {
        check_run(dir.path(), &["--rows", "0", "--workers", "2", "--mode", mode], &[], &mut failures);
    }
    assert_no_failures(failures);
}

#[test]
fn arrival_order_output_holds_every_row_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = test_matrix(400, 5, 9);
    let input = dir.path().join("matrix.csv");
    write_matrix(&input, &matrix, ",");
    let expected = expected_counts(&matrix, 4, 8);
    for mode in ["imap-unordered", "apply-async"] {
        let output = dir.path().join(format!("{mode}.csv"));
        let args = [
            "count",
            "--input",
            input.to_str().unwrap(),
            "--workers",
            "3",
            "--mode",
            mode,
            "--chunk-size",
            "9",
            "--output",
            output.to_str().unwrap(),
            "--order",
            "arrival",
        ];
        run_corepool(dir.path(), &args, &[]).assert_success();
        let mut arrivals = read_arrivals(&output);
        arrivals.sort_unstable();
        let rows: Vec<usize> = arrivals.iter().map(|&(row, _)| row).collect();
        assert_eq!(rows, (0..matrix.len()).collect::<Vec<_>>(), "{mode}: every row exactly once");
        let counts: Vec<u32> = arrivals.iter().map(|&(_, count)| count).collect();
        assert_eq!(counts, expected, "{mode}");
    }
}
