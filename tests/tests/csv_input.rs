//! CSV as people write it, through the real binary: a numeric first line is data, a
//! byte-order mark is dropped, quoted cells, `--delimiter`, `--skip-cols`, errors that name
//! the cause, and inputs without end that stop fast in bounded memory. Counts are checked
//! against the test's own count of the matrix it wrote.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use corepool_tests::{Finished, corepool_bin, expected_counts, read_counts, run_corepool, test_matrix};

/// Writes `matrix` as text: `cell` renders each value, `sep` goes between cells.
fn write_text(path: &Path, prefix: &str, matrix: &[Vec<i64>], sep: &str, cell: impl Fn(usize, i64) -> String) {
    let mut text = prefix.to_owned();
    for (row, values) in matrix.iter().enumerate() {
        let cells: Vec<String> = values.iter().map(|&v| cell(row, v)).collect();
        text.push_str(&cells.join(sep));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Counts `input` with `extra` flags into `c.txt`, verified against the serial count.
fn count(dir: &Path, input: &str, extra: &[&str]) -> (Finished, Vec<u32>) {
    let mut args = vec!["count", "--input", input, "--workers", "2", "--output", "c.txt", "--verify"];
    args.extend_from_slice(extra);
    let run = run_corepool(dir, &args, &[]).assert_success();
    let counts = read_counts(&dir.join("c.txt"));
    (run, counts)
}

/// The run's JSON report (`--report json`) on standard output.
fn report(dir: &Path, input: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["count", "--input", input, "--report", "json", "--quiet"];
    args.extend_from_slice(extra);
    let run = run_corepool(dir, &args, &[]).assert_success();
    serde_json::from_str(&run.stdout).expect("the report is JSON")
}

/// A run that must fail as bad input: exit code 2 and this one line on standard error.
fn refused(dir: &Path, args: &[&str], message: &str) {
    let run = run_corepool(dir, args, &[]);
    assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
    assert_eq!(run.stderr.trim_end(), format!("corepool: {message}"), "{args:?}");
}

#[test]
fn a_numeric_first_line_is_data_and_the_summary_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let args =
        ["gen", "--rows", "1000", "--cols", "2", "--low", "0", "--high", "2", "--seed", "3", "--output", "e.csv"];
    run_corepool(path, &args, &[]).assert_success();
    // The test's own reading of the file: every line is a row of two numbers.
    let text = std::fs::read_to_string(path.join("e.csv")).unwrap();
    let matrix: Vec<Vec<i64>> =
        text.lines().map(|line| line.split(',').map(|cell| cell.parse().unwrap()).collect()).collect();
    assert_eq!(matrix.len(), 1000);
    let (run, counts) = count(path, "e.csv", &["--min", "1", "--max", "1"]);
    assert_eq!(counts, expected_counts(&matrix, 1, 1));
    assert!(run.stdout.contains("1000 x 2 matrix streamed from e.csv"), "{}", run.stdout);
    assert!(run.stdout.contains("header: none, every line is data"), "{}", run.stdout);
    assert_eq!(report(path, "e.csv", &[])["parameters"]["input"]["header_line"], serde_json::Value::Null);

    // A named header after a blank line is skipped, and named.
    write_text(&path.join("named.csv"), "\nx,y\n", &matrix, ",", |_, v| v.to_string());
    let (run, counts) = count(path, "named.csv", &["--min", "1", "--max", "1"]);
    assert_eq!(counts, expected_counts(&matrix, 1, 1));
    assert!(run.stdout.contains("header: line 2 skipped"), "{}", run.stdout);
    assert_eq!(report(path, "named.csv", &[])["parameters"]["input"]["header_line"], 2);
}

#[test]
fn a_byte_order_mark_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = test_matrix(500, 3, 7);
    write_text(&dir.path().join("bom.csv"), "\u{feff}", &matrix, ",", |_, v| v.to_string());
    let (run, counts) = count(dir.path(), "bom.csv", &[]);
    assert_eq!(counts, expected_counts(&matrix, 4, 8));
    assert!(run.stdout.contains("header: none"), "{}", run.stdout);
    // The reader of a file held whole follows the same rules.
    let demo = run_corepool(dir.path(), &["demo", "--input", "bom.csv", "--workers", "2"], &[]).assert_success();
    assert!(demo.stdout.contains("500 x 3"), "{}", demo.stdout);
    assert!(demo.stdout.contains("header: none, every line is data"), "{}", demo.stdout);
    std::fs::write(dir.path().join("named.csv"), "\u{feff}a,b\n1,5\n").unwrap();
    let demo = run_corepool(dir.path(), &["demo", "--input", "named.csv", "--workers", "1"], &[]).assert_success();
    assert!(demo.stdout.contains("1 x 2") && demo.stdout.contains("header: line 1 skipped"), "{}", demo.stdout);
}

#[test]
fn quoted_cells_and_delimiters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let matrix = test_matrix(2000, 4, 11);
    // Every third cell quoted, some padded inside their quotes; CRLF line ends.
    write_text(&path.join("quoted.csv"), "\"a\",\"b, c\",\"say \"\"d\"\"\",e\r\n", &matrix, ",", |row, v| {
        match (row + v as usize) % 3 {
            0 => format!("\"{v}\""),
            1 => format!("\" {v} \""),
            _ => v.to_string(),
        }
    });
    let (run, counts) = count(path, "quoted.csv", &[]);
    assert_eq!(counts, expected_counts(&matrix, 4, 8));
    assert!(run.stdout.contains("2000 x 4 matrix"), "{}", run.stdout);

    write_text(&path.join("semicolons.csv"), "a;b;c;d\n", &matrix, ";", |_, v| v.to_string());
    let (_, counts) = count(path, "semicolons.csv", &["--delimiter", ";", "--mode", "imap-unordered"]);
    assert_eq!(counts, expected_counts(&matrix, 4, 8));
    write_text(&path.join("tabs.tsv"), "", &matrix, "\t", |_, v| v.to_string());
    let (_, counts) = count(path, "tabs.tsv", &["--delimiter", "tab", "--mode", "serial"]);
    assert_eq!(counts, expected_counts(&matrix, 4, 8));

    // A comma inside quotes is part of the cell: one cell, and not a number.
    std::fs::write(path.join("decimal-comma.csv"), "1;2\n\"1,5\";4\n").unwrap();
    refused(
        path,
        &["count", "--input", "decimal-comma.csv", "--delimiter", ";"],
        "decimal-comma.csv:2:1: not a number: \"1,5\"",
    );
    std::fs::write(path.join("spans.csv"), "1,2\n3,\"4\n5\"\n").unwrap();
    refused(
        path,
        &["count", "--input", "spans.csv"],
        "spans.csv:2:3: a quoted cell spans lines, which corepool does not read",
    );
    refused(
        path,
        &["count", "--input", "m.npy", "--skip-cols", "1"],
        "--skip-cols applies to CSV input, and m.npy is read as .npy",
    );
    refused(
        path,
        &["count", "--input", "spans.csv", "--delimiter", "ab"],
        "--delimiter \"ab\": one character that is not part of a number or a quote, such as ',' ';' '|' ':', or tab",
    );
}

#[test]
fn skip_cols_reads_a_pandas_file_with_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = test_matrix(3000, 3, 5);
    // `pandas.DataFrame(a).to_csv(path)`: the index's name is blank, the columns are 0, 1, 2.
    write_text(&dir.path().join("pandas.csv"), ",0,1,2\n", &matrix, ",", |_, v| v.to_string());
    let text = std::fs::read_to_string(dir.path().join("pandas.csv")).unwrap();
    let indexed: String = text
        .lines()
        .enumerate()
        .map(|(i, line)| if i == 0 { format!("{line}\n") } else { format!("{},{line}\n", i - 1) })
        .collect();
    std::fs::write(dir.path().join("pandas.csv"), indexed).unwrap();
    let (run, counts) = count(dir.path(), "pandas.csv", &["--skip-cols", "1"]);
    assert_eq!(counts, expected_counts(&matrix, 4, 8));
    assert!(run.stdout.contains("3000 x 3 matrix"), "{}", run.stdout);
    assert!(run.stdout.contains("header: line 1 skipped"), "{}", run.stdout);
}

#[test]
fn one_line_files_name_the_real_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    std::fs::write(path.join("hex.csv"), "0x10,4,5\n").unwrap();
    refused(path, &["count", "--input", "hex.csv"], "hex.csv:1:1: not a number: \"0x10\"");
    std::fs::write(path.join("semi.csv"), "1;5;9\n").unwrap();
    refused(
        path,
        &["count", "--input", "semi.csv"],
        "semi.csv:1:1: not a number: \"1;5;9\" (the line is one cell: if ';' separates the values, use --delimiter ';')",
    );
    let (_, counts) = count(path, "semi.csv", &["--delimiter", ";"]);
    assert_eq!(counts, [1]);
    std::fs::write(path.join("negative.csv"), "-1,-5,5\n").unwrap();
    let (_, counts) = count(path, "negative.csv", &["--min", "-5", "--max", "-1"]);
    assert_eq!(counts, [2]);
}

/// Runs `corepool` with `args` in `dir`, killed after `limit`; gives how it ended, its
/// standard error, its peak resident memory in bytes, and how long it took.
// The child is reaped by `wait4`, which also gives its peak memory.
#[allow(clippy::zombie_processes)]
fn run_measured(dir: &Path, args: &[&str], limit: Duration) -> (Option<i32>, String, u64, Duration) {
    let stderr_path = dir.join("stderr.txt");
    let child = Command::new(corepool_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("corepool starts");
    let started = Instant::now();
    let pid = child.id() as libc::pid_t;
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: plain system call on our own child, with valid pointers.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if done == pid {
            break (status, usage);
        }
        if started.elapsed() > limit {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("watchdog: corepool {args:?} ran over {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let stderr = std::fs::read_to_string(stderr_path).unwrap();
    (code, stderr, usage.ru_maxrss as u64 * 1024, started.elapsed())
}

#[test]
fn inputs_without_end_stop_fast_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let (code, stderr, peak, took) = run_measured(path, &["count", "--input", "/dev/zero"], Duration::from_secs(30));
    assert_eq!((code, stderr.trim_end()), (Some(2), "corepool: /dev/zero:1: binary data (a NUL byte), not CSV text"));
    assert!(peak < 64 << 20, "peak memory {peak} bytes");
    eprintln!("/dev/zero: {took:?}, {peak} bytes");

    // One line of 20 MiB, past the 16 MiB default: refused when the limit is passed,
    // without reading the rest.
    let long = "1,".repeat(10 << 20);
    std::fs::write(path.join("long.csv"), format!("1,2\n{long}1\n3,4\n")).unwrap();
    let args = ["count", "--input", "long.csv", "--workers", "2"];
    let (code, stderr, peak, took) = run_measured(path, &args, Duration::from_secs(60));
    assert_eq!(
        (code, stderr.trim_end()),
        (Some(2), "corepool: long.csv:2: line longer than 16777216 bytes (--max-line-bytes raises the limit)")
    );
    assert!(peak < 128 << 20, "peak memory {peak} bytes");
    eprintln!("20 MiB line: {took:?}, {peak} bytes");
    // A limit set lower is kept line by line, wherever the line is.
    let (code, stderr, _, _) =
        run_measured(path, &[&args[..], &["--max-line-bytes", "2K"]].concat(), Duration::from_secs(60));
    assert_eq!(
        (code, stderr.trim_end()),
        (Some(2), "corepool: long.csv:2: line longer than 2048 bytes (--max-line-bytes raises the limit)")
    );

    // A line of 2 MiB: past a limit of 1M, one row of 1 Mi + 1 values under a limit of 4M.
    std::fs::write(path.join("wide.csv"), format!("{}1\n", "1,".repeat(1 << 20))).unwrap();
    refused(
        path,
        &["count", "--input", "wide.csv", "--max-line-bytes", "1M"],
        "wide.csv:1: line longer than 1048576 bytes (--max-line-bytes raises the limit)",
    );
    let args =
        ["count", "--input", "wide.csv", "--max-line-bytes", "4M", "--min", "1", "--max", "1", "--output", "c.txt"];
    run_corepool(path, &args, &[]).assert_success();
    assert_eq!(read_counts(&path.join("c.txt")), [(1 << 20) + 1]);
    refused(
        path,
        &["count", "--input", "wide.csv", "--max-line-bytes", "1G"],
        "--max-line-bytes 1G: must be from 1 to 512M (lines travel to the workers in messages of at most 1 GiB)",
    );
}
