//! Values and sizes at the edges, end to end: every `int64` and `uint64` value compares
//! exactly with integer and float bounds, in CSV and `.npy`, in every mode and with
//! `--verify`; bounds past `i64` are exact integers; `-inf` and negative numbers are values,
//! not flags; and sizes past the machine (rows, columns, a `.npy` shape, a file `gen`
//! cannot write) are refused at once, with exit code 2 and one line naming the flag or file.

use std::{path::Path, time::Duration};

use corepool_tests::{corepool_bin, read_counts, run_corepool, wait_with_watchdog};

/// Every mode of `count`, serial first.
const MODES: [&str; 9] =
    ["serial", "apply", "map", "starmap", "imap", "imap-unordered", "apply-async", "map-async", "starmap-async"];

/// How long a refusal may take: it must come before any work.
const REFUSAL_LIMIT: Duration = Duration::from_secs(20);

/// A `.npy` file's bytes, made here by hand: version 1.0 header, then the raw data.
fn npy_bytes(descr: &str, shape: &[u64], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// A bound as `count` takes it, and as the test compares with it: an exact integer
/// (a float bound here is always a whole number, so its `i128` is exact too).
#[derive(Clone, Copy)]
enum Bound {
    Int(i128),
    Float(f64),
}

impl Bound {
    fn arg(self) -> String {
        match self {
            Bound::Int(value) => value.to_string(),
            Bound::Float(value) if value.is_infinite() => (if value > 0.0 { "inf" } else { "-inf" }).to_owned(),
            Bound::Float(value) => format!("{value:?}"),
        }
    }

    /// The bound as an exact integer, infinities past every 64-bit value.
    fn exact(self) -> i128 {
        match self {
            Bound::Int(value) => value,
            Bound::Float(value) if value == f64::INFINITY => i128::MAX,
            Bound::Float(value) if value == f64::NEG_INFINITY => i128::MIN,
            Bound::Float(value) => {
                assert_eq!(value.fract(), 0.0, "test bounds are whole numbers");
                value as i128
            }
        }
    }
}

/// The count of each row in `[min, max]`, in `i128` arithmetic.
fn exact_counts(rows: &[Vec<i128>], min: Bound, max: Bound) -> Vec<u32> {
    let (lo, hi) = (min.exact(), max.exact());
    rows.iter().map(|row| row.iter().filter(|&&v| lo <= v && v <= hi).count() as u32).collect()
}

/// Runs `count` in every mode with `--verify`, and checks each row's count.
fn check_every_mode(dir: &Path, input: &str, rows: &[Vec<i128>], bounds: &[(Bound, Bound)]) {
    for &(min, max) in bounds {
        let want = exact_counts(rows, min, max);
        for mode in MODES {
            let (min_arg, max_arg) = (min.arg(), max.arg());
            let args = [
                "count",
                "--input",
                input,
                "--min",
                &min_arg,
                "--max",
                &max_arg,
                "--mode",
                mode,
                "--workers",
                "2",
                "--chunk-size",
                "3",
                "--verify",
                "--output",
                "counts.txt",
            ];
            run_corepool(dir, &args, &[]).assert_success();
            let counts = read_counts(&dir.join("counts.txt"));
            assert_eq!(counts, want, "{input} [{min_arg}, {max_arg}] --mode {mode}");
        }
    }
}

/// Values at the edges of `int64` and `uint64`, and of the doubles' exact integers.
fn edge_rows_unsigned() -> Vec<Vec<i128>> {
    let two63 = 1i128 << 63;
    let two64 = 1i128 << 64;
    vec![
        vec![two63, two63 + 1, two64 - 1, 5],
        vec![0, 1, two63 - 1, two64 - 2],
        vec![(1 << 53) + 1, 1 << 53, (1 << 53) - 1, 10_000_000_000_000_000_000],
        vec![9_999_999_999_999_999_999, 18_000_000_000_000_000_000, 18_446_744_073_709_551_614, 4],
        vec![two64 - 1, two64 - 1, two64 - 1, two64 - 1],
    ]
}

fn bounds_past_i64() -> Vec<(Bound, Bound)> {
    vec![
        // numpy's own example: one value of the first row lies in [1e19, 2e19].
        (Bound::Float(1e19), Bound::Float(2e19)),
        (Bound::Int(9_223_372_036_854_775_808), Bound::Int(18_446_744_073_709_551_615)),
        (Bound::Int(10_000_000_000_000_000_000), Bound::Int(20_000_000_000_000_000_000)),
        (Bound::Float(9_007_199_254_740_992.0), Bound::Float(f64::INFINITY)),
        (Bound::Float(f64::NEG_INFINITY), Bound::Float(9_007_199_254_740_992.0)),
        (Bound::Int(4), Bound::Int(8)),
        (Bound::Int(18_446_744_073_709_551_615), Bound::Int(18_446_744_073_709_551_616)),
    ]
}

#[test]
fn uint64_npy_past_i64_counts_exactly_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let rows = edge_rows_unsigned();
    let values: Vec<u64> = rows.iter().flatten().map(|&v| u64::try_from(v).unwrap()).collect();
    let little: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let big: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    std::fs::write(dir.path().join("u.npy"), npy_bytes("<u8", &[5, 4], &little)).unwrap();
    std::fs::write(dir.path().join("ube.npy"), npy_bytes(">u8", &[5, 4], &big)).unwrap();
    check_every_mode(dir.path(), "u.npy", &rows, &bounds_past_i64());
    check_every_mode(dir.path(), "ube.npy", &rows, &bounds_past_i64()[..2]);
}

#[test]
fn csv_values_past_i64_count_exactly_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = edge_rows_unsigned();
    rows.push(vec![-(1 << 63), -(1 << 63) + 1, -1, 18_446_744_073_709_551_615]);
    let text: String =
        rows.iter().map(|row| row.iter().map(i128::to_string).collect::<Vec<_>>().join(",") + "\n").collect();
    std::fs::write(dir.path().join("wide.csv"), text).unwrap();
    let mut bounds = bounds_past_i64();
    bounds.push((Bound::Int(-(1 << 63)), Bound::Int(-1)));
    bounds.push((Bound::Float(-9_223_372_036_854_775_808.0), Bound::Float(0.0)));
    check_every_mode(dir.path(), "wide.csv", &rows, &bounds);
    // Past 2^64 - 1 is past every 64-bit integer: still refused, naming the cell.
    std::fs::write(dir.path().join("past.csv"), "1,18446744073709551616\n").unwrap();
    let run = run_corepool(dir.path(), &["count", "--input", "past.csv"], &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("past.csv:1:3: value out of range for a 64-bit integer"), "{}", run.stderr);
}

#[test]
fn a_float_bound_compares_exactly_with_a_large_integer() {
    // 2^53 + 1 is no double: rounded to one it would equal 2^53, and fall inside
    // [-inf, 2^53] (numpy counts 3 in the first row; the exact count is 2).
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Vec<i128>> =
        vec![vec![9_007_199_254_740_991, 9_007_199_254_740_992, 9_007_199_254_740_993], vec![-(1 << 63), 0, 1]];
    let data: Vec<u8> = rows.iter().flatten().flat_map(|&v| (v as i64).to_le_bytes()).collect();
    std::fs::write(dir.path().join("i.npy"), npy_bytes("<i8", &[2, 3], &data)).unwrap();
    let text: String =
        rows.iter().map(|row| row.iter().map(i128::to_string).collect::<Vec<_>>().join(" ") + "\n").collect();
    std::fs::write(dir.path().join("i.txt"), text).unwrap();
    let bounds = [
        (Bound::Float(f64::NEG_INFINITY), Bound::Float(9_007_199_254_740_992.0)),
        (Bound::Float(9_007_199_254_740_992.0), Bound::Float(f64::INFINITY)),
        (Bound::Int(9_007_199_254_740_993), Bound::Float(1e300)),
    ];
    for input in ["i.npy", "i.txt"] {
        for &(min, max) in &bounds {
            let (min_arg, max_arg) = (min.arg(), max.arg());
            let want = exact_counts(&rows, min, max);
            for mode in ["serial", "map"] {
                let args = [
                    "count", "--input", input, "--min", &min_arg, "--max", &max_arg, "--mode", mode, "--verify",
                    "--output", "c.txt",
                ];
                run_corepool(dir.path(), &args, &[]).assert_success();
                assert_eq!(read_counts(&dir.path().join("c.txt")), want, "{input} [{min_arg}, {max_arg}] {mode}");
            }
        }
    }
}

#[test]
fn negative_and_infinite_bounds_are_values_not_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n.csv"), "-7,-5,0,5,7\n-1,-2,-3,-4,-5\n").unwrap();
    let cases: [(&[&str], [u32; 2]); 4] = [
        (&["--min", "-inf", "--max", "inf"], [5, 5]),
        (&["--min", "-5", "--max", "5"], [3, 5]),
        (&["--min=-inf", "--max", "-5"], [2, 1]),
        (&["--min", "-infinity", "--max", "-4.5"], [2, 1]),
    ];
    for (bounds, want) in cases {
        let mut args = vec!["count", "--input", "n.csv", "--output", "c.txt", "--verify"];
        args.extend_from_slice(bounds);
        run_corepool(dir.path(), &args, &[]).assert_success();
        assert_eq!(read_counts(&dir.path().join("c.txt")), want, "{bounds:?}");
    }
    // The generator's matrix too, where `-inf` once read as an unknown flag.
    let run = run_corepool(dir.path(), &["count", "--rows", "10", "--min", "-inf", "--max", "8"], &[]).assert_success();
    assert!(run.stdout.contains("counted values in [-inf, 8]"), "{}", run.stdout);
}

#[test]
fn bounds_past_i64_are_exact_integers_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let args =
        ["count", "--rows", "10", "--min", "9223372036854775808", "--max", "18446744073709551615", "--report", "json"];
    let run = run_corepool(dir.path(), &args, &[]).assert_success();
    assert!(run.stdout.contains("\"min\": 9223372036854775808,"), "{}", run.stdout);
    assert!(run.stdout.contains("\"max\": 18446744073709551615,"), "{}", run.stdout);
}

/// Runs `corepool` with `args` in `dir` and checks it refuses at once: exit code 2, one
/// line that holds `message`, and no file left beside the inputs.
fn assert_refused(dir: &Path, args: &[&str], message: &str) {
    let before = std::fs::read_dir(dir).unwrap().count();
    let child = corepool_tests::captured(corepool_bin(), dir).args(args).spawn().unwrap();
    let run = wait_with_watchdog(child, REFUSAL_LIMIT);
    assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
    let stderr = run.stderr.trim_end();
    assert_eq!(stderr.lines().count(), 1, "{args:?}: not one line: {stderr}");
    assert!(stderr.starts_with("corepool: ") && stderr.contains(message), "{args:?}: {stderr}");
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), before, "{args:?}: a file was left");
}

#[test]
fn sizes_past_the_machine_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    // 128 bytes that claim a trillion rows of nothing, and a row too wide for its count.
    std::fs::write(path.join("empty-rows.npy"), npy_bytes("<f8", &[1_000_000_000_000, 0], &[])).unwrap();
    std::fs::write(path.join("wide.npy"), npy_bytes("|u1", &[1, 1 << 32], &[])).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["count", "--rows", "1000000000000"], "--rows 1000000000000 x --cols 5: holding the matrix and its counts"),
        (
            &["count", "--rows", "1000000000000", "--output", "o.txt"],
            "--output o.txt: the counts of --rows 1000000000000 take at least 1.82 TiB",
        ),
        (&["count", "--cols", "100000000000", "--rows", "1"], "--cols 100000000000: a row's count is a 32-bit number"),
        (
            &["count", "--cols", "100000000000", "--rows", "1", "--output", "o.txt"],
            "--cols 100000000000: a row's count is a 32-bit number",
        ),
        (&["count", "--cols", "4294967296", "--rows", "1", "--mode", "serial"], "--cols 4294967296: a row's count"),
        (
            &["count", "--cols", "2000000000", "--rows", "1"],
            "--cols 2000000000: one row is 1.86 GiB, more than a chunk",
        ),
        (
            &["count", "--rows", "20000000", "--cols", "100", "--chunk-size", "20000000"],
            "--chunk-size 20000000: a chunk of 20000000 rows of --cols 100 is 1.86 GiB",
        ),
        (&["demo", "--rows", "1000000000000"], "--rows 1000000000000 x --cols 5: holding the matrix"),
        (&["count", "--input", "empty-rows.npy"], "empty-rows.npy: a 1000000000000 x 0 array"),
        (&["count", "--input", "wide.npy"], "wide.npy: rows of 4294967296 values: a row's count is a 32-bit number"),
        (
            &["gen", "--rows", "1000000000000", "--output", "g.npy"],
            "--output g.npy: the int64 values of --rows 1000000000000 x --cols 5 take at least 36.38 TiB",
        ),
        (
            &["gen", "--rows", "100000000000", "--output", "g.csv"],
            "--output g.csv: the int64 values of --rows 100000000000 x --cols 5 take at least 931.32 GiB",
        ),
        (&["gen", "--cols", "4294967296", "--rows", "1", "--output", "g.npy"], "--cols 4294967296: a row's count"),
        (&["count", "--task-timeout", "1e300"], "--task-timeout 1e300: must be a number of seconds from 0.001 to"),
        (&["count", "--task-timeout", "nan"], "--task-timeout NaN: must be a number of seconds from 0.001"),
        (&["count", "--task-timeout", "-5"], "--task-timeout -5: must be a number of seconds from 0.001"),
        (&["count", "--task-timeout", "1e-300"], "--task-timeout 1e-300: must be a number of seconds from 0.001"),
        (&["count", "--min", "1e300", "--max", "8"], "--min 1e300 is greater than --max 8"),
        (
            &["count", "--min", "9007199254740993", "--max", "9007199254740992.0"],
            "--min 9007199254740993 is greater than --max 9007199254740992",
        ),
    ];
    for (args, message) in cases {
        assert_refused(path, args, message);
    }
}

#[test]
fn a_npy_whose_counts_cannot_be_written_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // A sparse file of 10^13 one-byte rows: its counts take 20 TB at the least.
    let file = std::fs::File::create(dir.path().join("tall.npy")).unwrap();
    let header = npy_bytes("|u1", &[10_000_000_000_000, 1], &[]);
    std::io::Write::write_all(&mut &file, &header).unwrap();
    if file.set_len(header.len() as u64 + 10_000_000_000_000).is_err() {
        eprintln!("skipped: this file system holds no sparse file of 10 TB");
        return;
    }
    drop(file);
    assert_refused(
        dir.path(),
        &["count", "--input", "tall.npy", "--output", "o.txt"],
        "--output o.txt: the counts of its 10000000000000 rows take at least 18.19 TiB",
    );
}
