//! Bad input: one line on stderr naming the problem and its place, exit code 2, no
//! output file, and nothing left behind.

use corepool_tests::run_corepool;

#[test]
fn every_bad_input_gives_one_line_exit_code_2_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let files = [
        ("bad.csv", "1,2,3\n4,x,6\n"),
        ("ragged.csv", "1,2,3\n4,5\n"),
        ("big.txt", "1 2\n3 99999999999999999999\n"),
        ("empty.csv", ""),
        ("deep.csv", &format!("{}1,2.5\n{}", "1,2\n".repeat(3999), "1,2\n".repeat(1000))),
    ];
    for (name, text) in files {
        std::fs::write(work.join(name), text).unwrap();
    }
    std::fs::create_dir(work.join("a-folder")).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--input", "missing.csv"], "missing.csv: cannot read: No such file or directory"),
        (&["--input", "a-folder"], "a-folder: cannot read: Is a directory"),
        (&["--input", "empty.csv"], "empty.csv: no rows: the file is empty"),
        (&["--input", "bad.csv"], "bad.csv:2:3: not a number: \"x\""),
        (&["--input", "deep.csv"], "deep.csv:4000:3: not an integer: \"2.5\""),
        (&["--input", "ragged.csv"], "ragged.csv:2: row has 2 values, but line 1 has 3"),
        (&["--input", "big.txt"], "big.txt:2:3: value out of range for a 64-bit integer"),
        (&["--min", "9", "--max", "2"], "--min 9 is greater than --max 2"),
        (&["--workers", "0"], "--workers must be at least 1"),
        (&["--chunk-size", "0"], "--chunk-size must be at least 1"),
        (&["--mode", "fast"], "invalid value 'fast' for '--mode <MODE>'"),
        (
            &["--output", "missing-folder/out.txt"],
            "--output missing-folder/out.txt: folder missing-folder is not there",
        ),
        (&["--low", "5", "--high", "5"], "--low 5 must be below --high 5"),
        (&["--task-timeout", "-1"], "--task-timeout -1: must be a number of seconds from 0.001"),
        (&["--max-retries", "0"], "--max-retries must be at least 1"),
        (&["--mode", "map", "--order", "arrival"], "--order arrival needs --mode imap-unordered or --mode apply-async"),
        (&["--rows", "10", "--input", "bad.csv"], "'--rows <ROWS>' cannot be used with '--input <FILE>'"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["count"];
        args.extend_from_slice(flags);
        if !flags.contains(&"--output") {
            args.extend(["--output", "out.txt"]);
        }
        let run = run_corepool(&work, &args, &[("TMPDIR", tmp.to_str().unwrap())]);
        assert_eq!(run.status.code(), Some(2), "{flags:?}: {}", run.stderr);
        let stderr = run.stderr.trim_end();
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: not one line: {stderr}");
        assert!(stderr.starts_with("corepool: ") && stderr.contains(message), "{flags:?}: {stderr}");
        assert!(!work.join("out.txt").exists(), "{flags:?}: an output file was written");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "{flags:?}: a socket directory was left");
    }
    // Nothing half-written beside the inputs either.
    let mut names: Vec<String> =
        std::fs::read_dir(&work).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["a-folder", "bad.csv", "big.txt", "deep.csv", "empty.csv", "ragged.csv"]);
}
