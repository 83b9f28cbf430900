//! Data at scale, end to end: `gen` then `count` on CSV, `.npy` of every dtype and
//! standard input, floats with NaN, headers, CRLF, a last line without a newline, bad
//! cells deep inside a worker's piece, `.npy` output, and a streaming run whose peak
//! memory (from its own report) stays flat as the input grows.

use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use corepool_tests::{
    WATCHDOG, corepool_bin, expected_counts, read_arrivals, read_counts, run_corepool, wait_with_watchdog,
};
use corepool_tutorial::Matrix;
use corepool_tutorial::tasks::{CountInRange, RowBlock};
use npyz::WriterBuilder;

fn rows_of(matrix: &Matrix) -> Vec<Vec<i64>> {
    matrix.iter_rows().collect()
}

fn read_npy_counts(path: &Path) -> Vec<u32> {
    let bytes = std::fs::read(path).unwrap();
    let file = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(file.shape().len(), 1, "counts are a 1-D array");
    file.into_vec::<u32>().unwrap()
}

/// Counts of `values` (rows of `cols`) in `[min, max]` by the plainest loop; NaN is out.
fn float_counts(values: &[f64], cols: usize, min: f64, max: f64) -> Vec<u32> {
    values.chunks(cols).map(|row| row.iter().filter(|&&v| v >= min && v <= max).count() as u32).collect()
}

#[test]
fn gen_then_count_csv_and_every_npy_dtype_equals_the_generators_count() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (3_001, 4);
    let matrix = Matrix::random(rows, cols, 0, 100, 11);
    let expected = expected_counts(&rows_of(&matrix), 20, 60);
    let reals: Vec<f64> = corepool_tutorial::matrix::random_reals(0.0, 100.0, 11).take(rows * cols).collect();
    let dtypes = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float32", "float64"];
    for (format, dtype) in dtypes.iter().map(|d| ("npy", *d)).chain([("csv", "int64"), ("csv", "float64")]) {
        let input = format!("m-{dtype}.{format}");
        let gen_args = ["gen", "--rows", "3001", "--cols", "4", "--high", "100", "--seed", "11", "--dtype", dtype];
        let mut args = gen_args.to_vec();
        args.extend(["--output", &input]);
        run_corepool(dir.path(), &args, &[]).assert_success();
        let want = match dtype {
            "float32" => {
                let reals: Vec<f64> = reals.iter().map(|&v| f64::from(v as f32)).collect();
                float_counts(&reals, cols, 20.0, 60.0)
            }
            "float64" => float_counts(&reals, cols, 20.0, 60.0),
            _ => expected.clone(),
        };
        for (mode, workers) in [("map", "2"), ("imap-unordered", "3"), ("serial", "1")] {
            let args = ["count", "--input", &input, "--min", "20", "--max", "60", "--mode", mode, "--workers", workers];
            let mut args = args.to_vec();
            args.extend(["--chunk-size", "500", "--output", "c.npy", "--verify"]);
            run_corepool(dir.path(), &args, &[]).assert_success();
            assert_eq!(read_npy_counts(&dir.path().join("c.npy")), want, "{input} {mode}");
        }
    }
}

/// Runs `corepool` with `stdin` as its standard input.
fn run_with_stdin(dir: &Path, args: &[&str], stdin: Vec<u8>) -> corepool_tests::Finished {
    let mut child = Command::new(corepool_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&stdin);
    });
    let finished = wait_with_watchdog(child, WATCHDOG);
    feeder.join().unwrap();
    finished
}

#[test]
fn standard_input_streams_csv_with_header_crlf_and_no_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = Matrix::random(20_000, 5, 0, 10, 3);
    let mut text = String::from("a,b,c,d,e\r\n");
    for row in matrix.iter_rows() {
        text.push_str(&row.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
        text.push_str("\r\n");
    }
    text.truncate(text.len() - 2);
    let run = run_with_stdin(
        dir.path(),
        &["count", "--input", "-", "--mode", "imap", "--chunk-size", "1000", "--output", "c.txt"],
        text.into_bytes(),
    );
    run.assert_success();
    assert_eq!(read_counts(&dir.path().join("c.txt")), expected_counts(&rows_of(&matrix), 4, 8));
}

#[test]
fn floats_nan_inf_blank_lines_and_float_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let text = "x y z\n\n4.5 nan 8\n  -inf\t4.49999 1e1\n\n8.0 NaN inf\r\n5 6 7";
    std::fs::write(dir.path().join("f.txt"), text).unwrap();
    let args = ["count", "--input", "f.txt", "--min", "4.5", "--max", "8", "--output", "c.txt", "--verify"];
    let run = run_corepool(dir.path(), &args, &[]).assert_success();
    assert!(run.stdout.contains("counted values in [4.5, 8]"), "{}", run.stdout);
    assert_eq!(read_counts(&dir.path().join("c.txt")), [2, 0, 1, 3]);
    // The same numbers as a .npy of doubles, written here with npyz.
    let values = [4.5, f64::NAN, 8.0, f64::NEG_INFINITY, 4.49999, 10.0, 8.0, f64::NAN, f64::INFINITY, 5.0, 6.0, 7.0];
    let mut bytes = Vec::new();
    let mut writer = npyz::WriteOptions::new().default_dtype().shape(&[4, 3]).writer(&mut bytes).begin_nd().unwrap();
    writer.extend(values).unwrap();
    writer.finish().unwrap();
    std::fs::write(dir.path().join("f.npy"), bytes).unwrap();
    let args = ["count", "--input", "f.npy", "--min", "4.5", "--max", "8", "--output", "c.npy", "--verify"];
    run_corepool(dir.path(), &args, &[]).assert_success();
    assert_eq!(read_npy_counts(&dir.path().join("c.npy")), [2, 0, 1, 3]);
}

#[test]
fn headers_detected_forced_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("numeric-header.csv"), "10,20\n4,5\n9,9\n").unwrap();
    let run = |args: &[&str]| run_corepool(dir.path(), args, &[]);
    run(&["count", "--input", "numeric-header.csv", "--header", "--output", "c.txt"]).assert_success();
    assert_eq!(read_counts(&dir.path().join("c.txt")), [2, 0]);
    run(&["count", "--input", "numeric-header.csv", "--output", "c.txt"]).assert_success();
    assert_eq!(read_counts(&dir.path().join("c.txt")), [0, 2, 0]);
    std::fs::write(dir.path().join("typo.csv"), "1,x\n4,5\n").unwrap();
    let refused = run(&["count", "--input", "typo.csv", "--no-header"]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(refused.stderr.trim(), "corepool: typo.csv:1:3: not a number: \"x\"");
    std::fs::write(dir.path().join("only.csv"), "a,b\n\n").unwrap();
    // pandas writes NaN as an empty cell: a missing value, in no range.
    std::fs::write(dir.path().join("pandas.csv"), "a,b\n1.5,4\n,5\n8.0,\n").unwrap();
    run(&["count", "--input", "pandas.csv", "--output", "c.txt", "--verify"]).assert_success();
    assert_eq!(read_counts(&dir.path().join("c.txt")), [1, 1, 1]);
    std::fs::write(dir.path().join("ints.csv"), "1,2\n4,\n").unwrap();
    let empty = run(&["count", "--input", "ints.csv"]);
    assert_eq!((empty.status.code(), empty.stderr.trim()), (Some(2), "corepool: ints.csv:2:3: empty cell"));
    let only = run(&["count", "--input", "only.csv"]);
    assert_eq!(
        (only.status.code(), only.stderr.trim()),
        (Some(2), "corepool: only.csv: no rows: only a header (line 1)")
    );
}

#[test]
fn bad_cells_deep_inside_a_workers_piece_name_their_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::with_capacity(4_000_000);
    for line in 1..=400_000 {
        text.push_str(match line {
            300_000 => "1,2,x,4,5\n",
            _ => "1,2,3,4,5\n",
        });
    }
    std::fs::write(dir.path().join("deep.csv"), &text).unwrap();
    let ragged =
        text.replacen("1,2,x,4,5\n", "1,2,3,4,5\n", 1).replacen("1,2,3,4,5\n1,2,3,4,5\n", "1,2,3,4,5\n1,2,3,4\n", 1);
    std::fs::write(dir.path().join("ragged.csv"), &ragged).unwrap();
    let late_ragged: String = text.replacen("1,2,x,4,5\n", "1,2,3,4,5,6\n", 1);
    std::fs::write(dir.path().join("late.csv"), &late_ragged).unwrap();
    for (input, mode, message) in [
        ("deep.csv", "map", "deep.csv:300000:5: not a number: \"x\""),
        ("deep.csv", "imap-unordered", "deep.csv:300000:5: not a number: \"x\""),
        ("deep.csv", "serial", "deep.csv:300000:5: not a number: \"x\""),
        ("ragged.csv", "imap", "ragged.csv:2: row has 4 values, but line 1 has 5"),
        ("late.csv", "map", "late.csv:300000: row has 6 values, but line 1 has 5"),
    ] {
        let run = run_corepool(dir.path(), &["count", "--input", input, "--mode", mode, "--output", "c.txt"], &[]);
        assert_eq!(run.status.code(), Some(2), "{input} {mode}: {}", run.stderr);
        assert_eq!(run.stderr.trim(), format!("corepool: {message}"), "{input} {mode}");
        assert!(!dir.path().join("c.txt").exists(), "{input} {mode}: output written");
    }
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "nothing half-written is left: {names:?}");
}

#[test]
fn npy_files_corepool_cannot_count_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, shape: &[u64], fortran: bool| {
        let mut bytes = Vec::new();
        let options = npyz::WriteOptions::new().default_dtype().shape(shape);
        let options = if fortran { options.order(npyz::Order::Fortran) } else { options };
        let mut writer = options.writer(&mut bytes).begin_nd().unwrap();
        writer.extend((0..shape.iter().product::<u64>()).map(|v| v as i32)).unwrap();
        writer.finish().unwrap();
        std::fs::write(dir.path().join(name), bytes).unwrap();
    };
    write("flat.npy", &[6], false);
    write("cube.npy", &[2, 2, 2], false);
    write("fortran.npy", &[3, 2], true);
    std::fs::write(dir.path().join("fake.npy"), "1,2\n").unwrap();
    for (name, message) in [
        ("flat.npy", "flat.npy: a 1-D array of shape [6]"),
        ("cube.npy", "cube.npy: a 3-D array"),
        ("fortran.npy", "fortran.npy: a Fortran-order array"),
        ("fake.npy", "fake.npy: not a .npy file"),
    ] {
        let run = run_corepool(dir.path(), &["count", "--input", name, "--output", "c.npy"], &[]);
        assert_eq!(run.status.code(), Some(2), "{name}: {}", run.stderr);
        assert_eq!(run.stderr.trim().lines().count(), 1);
        assert!(run.stderr.starts_with(&format!("corepool: {message}")), "{name}: {}", run.stderr);
        assert!(!dir.path().join("c.npy").exists());
    }
    // Read as CSV, the fake is fine.
    run_corepool(dir.path(), &["count", "--input", "fake.npy", "--format", "csv", "--output", "c.txt"], &[])
        .assert_success();
    assert_eq!(read_counts(&dir.path().join("c.txt")), [0]);
}

#[test]
fn arrival_order_output_as_csv_and_npy() {
    let dir = tempfile::tempdir().unwrap();
    run_corepool(dir.path(), &["gen", "--rows", "5000", "--output", "m.npy"], &[]).assert_success();
    let expected = expected_counts(&rows_of(&Matrix::random(5000, 5, 0, 10, 2019)), 4, 8);
    for mode in ["imap-unordered", "apply-async"] {
        let args = ["count", "--input", "m.npy", "--mode", mode, "--order", "arrival", "--output", "a.csv"];
        run_corepool(dir.path(), &args, &[("COREPOOL_TEST_SLOW_WORKER", "0:1")]).assert_success();
        let mut arrivals = read_arrivals(&dir.path().join("a.csv"));
        arrivals.sort();
        assert_eq!(arrivals.iter().map(|&(_, c)| c).collect::<Vec<_>>(), expected, "{mode}");
        assert!(arrivals.iter().enumerate().all(|(i, &(row, _))| i == row), "{mode}: every row once");
    }
    let args = ["count", "--input", "m.npy", "--mode", "imap-unordered", "--order", "arrival", "--output", "a.npy"];
    run_corepool(dir.path(), &args, &[]).assert_success();
    let bytes = std::fs::read(dir.path().join("a.npy")).unwrap();
    let file = npyz::NpyFile::new(&bytes[..]).unwrap();
    assert_eq!(file.shape(), [5000, 2]);
    let pairs = file.into_vec::<u64>().unwrap();
    let mut sorted: Vec<(u64, u64)> = pairs.chunks(2).map(|p| (p[0], p[1])).collect();
    sorted.sort();
    assert!(sorted.iter().map(|&(_, c)| c as u32).eq(expected.iter().copied()));
}

/// The coordinator's peak memory from the run's own JSON report.
fn peak_rss(dir: &Path, input: &str) -> u64 {
    let args = ["count", "--input", input, "--mode", "imap", "--output", "c.npy", "--report", "json", "--quiet"];
    let run = run_corepool(dir, &args, &[]).assert_success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("the report is JSON");
    report["coordinator_peak_rss_bytes"].as_u64().expect("the report has the coordinator's peak memory")
}

#[test]
fn streaming_memory_stays_flat_as_the_input_grows() {
    let dir = tempfile::tempdir().unwrap();
    // 5 MB and 25 MB of CSV, both cut into pieces of the largest size: the coordinator
    // holds a window of pieces, never the file.
    run_corepool(dir.path(), &["gen", "--rows", "500000", "--output", "small.csv"], &[]).assert_success();
    run_corepool(dir.path(), &["gen", "--rows", "2500000", "--output", "big.csv"], &[]).assert_success();
    let small = peak_rss(dir.path(), "small.csv");
    let big = peak_rss(dir.path(), "big.csv");
    eprintln!("coordinator peak: {small} bytes for 5 MB, {big} bytes for 25 MB");
    assert!(small > 0, "the report gives the peak");
    assert!(big <= small + small / 10 + (2 << 20), "peak grew from {small} to {big} bytes with the input");
}

#[test]
fn library_imap_iter_maps_over_an_iterator_without_collecting_it() {
    let pool = corepool::Pool::builder().workers(2).worker_program(env!("CARGO_BIN_EXE_test-worker")).build().unwrap();
    let chunks = (0..40u64).map(|chunk| {
        let values: Vec<i64> = (0..250 * 3).map(|i| ((chunk * 13 + i * 7) % 10) as i64).collect();
        RowBlock::new(250, 3, &values)
    });
    let expected: Vec<u32> = (0..40u64)
        .flat_map(|chunk| {
            let values: Vec<i64> = (0..250 * 3).map(|i| ((chunk * 13 + i * 7) % 10) as i64).collect();
            values.chunks(3).map(|row| row.iter().filter(|v| (4..=8).contains(*v)).count() as u32).collect::<Vec<_>>()
        })
        .collect();
    let task = CountInRange { min: 4, max: 8 };
    let counts: Vec<u32> = pool.imap_iter(&task, chunks.clone()).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(counts, expected);
    let mut unordered: Vec<(usize, u32)> =
        pool.imap_unordered_iter(&task, chunks).unwrap().collect::<Result<_, _>>().unwrap();
    unordered.sort();
    assert!(unordered.iter().enumerate().all(|(i, &(row, count))| i == row && count == expected[i]));
}

#[test]
fn a_wide_npy_goes_in_chunks_of_8_mib_of_rows_as_the_summary_and_report_say() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (40_000u64, 1_000u64);
    // A .npy of bytes, all zero: the header, then a hole the file system fills with zeros.
    let dict = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let padded = (10 + dict.len() + 1).div_ceil(64) * 64 - 10;
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&(padded as u16).to_le_bytes());
    header.extend_from_slice(format!("{dict:<width$}\n", width = padded - 1).as_bytes());
    let path = dir.path().join("wide.npy");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(&header).unwrap();
    file.set_len(header.len() as u64 + rows * cols).unwrap();
    drop(file);
    let args = [
        "count",
        "--input",
        "wide.npy",
        "-j",
        "1",
        "--min",
        "0",
        "--max",
        "0",
        "-o",
        "c.txt",
        "--report-file",
        "r.json",
    ];
    let run = run_corepool(dir.path(), &args, &[]).assert_success();
    // 8 MiB of 1,000-byte rows, fewer than ceil(40,000 / 4): the last of 5 chunks holds the rest.
    let per_chunk = (8 << 20) / cols;
    assert!(run.stdout.contains(&format!("1 workers, {per_chunk} rows per chunk")), "{}", run.stdout);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(report["parameters"]["chunk_size"], per_chunk, "{report}");
    assert_eq!(read_counts(&dir.path().join("c.txt")), vec![cols as u32; rows as usize]);
}
