//! The text parser against hand-made rows, random bytes, and `csv-core`.

use super::{
    quoted::{QuotedRows, trim},
    *,
};
use crate::values::Number;
use proptest::prelude::*;

fn format(separator: Separator, kind: ValueKind, cols: u64) -> TextFormat {
    TextFormat { separator, kind, cols, skip_cols: 0, first_data_line: 1 }
}

fn task(separator: Separator, kind: ValueKind, cols: u64) -> CountText {
    let range = ValueRange { min: Number::Int(4), max: Number::Int(8) };
    CountText { range, format: format(separator, kind, cols) }
}

fn run(task: &CountText, text: &str, first_line: u64) -> Result<Vec<u32>, String> {
    let mut counts = Vec::new();
    task.count(text.as_bytes(), first_line, &mut counts).map_err(|f| f.to_string())?;
    Ok(counts)
}

#[test]
fn counts_comma_and_blank_rows() {
    let comma = task(Separator::COMMA, ValueKind::Int, 3);
    assert_eq!(run(&comma, "1,4,8\n 5 ,\t9,6\r\n\n7,7,7", 1).unwrap(), [2, 2, 3]);
    let blanks = task(Separator::Blanks, ValueKind::Int, 3);
    assert_eq!(run(&blanks, "1 4  8\n\t5 9 6 \r\n \n7\t7 7", 1).unwrap(), [2, 2, 3]);
}

#[test]
fn floats_and_nan() {
    let floats = task(Separator::COMMA, ValueKind::Float, 4);
    assert_eq!(run(&floats, "4.0,nan,8.5,-inf\n3.99,4,1e0,7.5e0\n", 1).unwrap(), [1, 2]);
    assert_eq!(run(&floats, "1,2,x,4\n", 1).unwrap_err(), "1:5: not a number: \"x\"");
    // Empty cells are missing values in a float file (pandas writes NaN so).
    assert_eq!(run(&floats, "4.5,,8,\n", 1).unwrap(), [2]);
}

#[test]
fn faults_name_the_line_in_the_file_and_the_column() {
    let comma = task(Separator::COMMA, ValueKind::Int, 2);
    assert_eq!(run(&comma, "1,2\n3, 4.5\n", 300_000).unwrap_err(), "300001:4: not an integer: \"4.5\"");
    assert_eq!(run(&comma, "1,2\n3, x\n", 1).unwrap_err(), "2:4: not a number: \"x\"");
    assert_eq!(run(&comma, "1,,3\n", 7).unwrap_err(), "7:3: empty cell");
    assert_eq!(run(&comma, "1,2\n3\n", 1).unwrap_err(), "2: row has 1 value, but line 1 has 2");
    assert_eq!(
        run(&comma, "1,99999999999999999999\n", 1).unwrap_err().split(':').nth(2).unwrap().trim(),
        "value out of range for a 64-bit integer"
    );
    assert_eq!(run(&comma, "1,2\r3\n", 1).unwrap_err(), "1:3: not a number: \"2\\r3\"");
    let blanks = task(Separator::Blanks, ValueKind::Int, 2);
    assert_eq!(run(&blanks, "1 2\n3,4 5\n", 1).unwrap_err(), "2:1: not a number: \"3,4\"");
}

#[test]
fn quoted_cells() {
    let comma = task(Separator::COMMA, ValueKind::Int, 3);
    assert_eq!(run(&comma, "\"8\",\"4\",1\n\" 5 \",9,\"+6\"\r\n", 1).unwrap(), [2, 2]);
    // The comma inside quotes is part of one cell, so the row has three cells.
    assert_eq!(run(&comma, "1,\"1,5\",3\n", 1).unwrap_err(), "1:3: not a number: \"1,5\"");
    assert_eq!(run(&comma, "1,\"a\"\"b\",3\n", 1).unwrap_err(), "1:3: not a number: \"a\\\"b\"");
    assert_eq!(run(&comma, "1,2,3\n4,\"5\n6\",7\n", 1).unwrap_err(), format!("2:3: {SPANS_LINES}"));
    assert_eq!(run(&comma, "1,2,\"3", 9).unwrap_err(), format!("9:5: {SPANS_LINES}"));
    // A row after a quoted one is read from its start (no state is left behind).
    assert_eq!(run(&comma, "\"4\",4,4\n\u{feff}4,4,4\n", 1).unwrap_err(), "2:1: not a number: \"\\u{feff}4\"");
    let blanks = task(Separator::Blanks, ValueKind::Int, 2);
    assert_eq!(run(&blanks, "\"4\" \"9\"\n", 1).unwrap(), [1]);
}

#[test]
fn delimiters_and_skipped_columns() {
    let semicolons = task(Separator::Char(b';'), ValueKind::Float, 2);
    assert_eq!(run(&semicolons, "4;8.5\n\"4,5\";5\n", 1).unwrap_err(), "2:1: not a number: \"4,5\"");
    assert_eq!(run(&semicolons, "4;8.5\n5 ; 6\n", 1).unwrap(), [1, 2]);
    let tabs = task(Separator::Char(b'\t'), ValueKind::Float, 3);
    assert_eq!(run(&tabs, "4\t\t5\n", 1).unwrap(), [2]);
    let mut index = task(Separator::COMMA, ValueKind::Int, 2);
    index.format.skip_cols = 1;
    assert_eq!(run(&index, "0,4,9\n1,5,5\n2020-01-01,1,4\n\"a,b\",4,4\n", 1).unwrap(), [1, 2, 1, 2]);
    assert_eq!(run(&index, "0,4\n", 1).unwrap_err(), "1: row has 1 value, but line 1 has 2");
    assert_eq!(run(&index, "x\n", 1).unwrap_err(), "1: row has 0 values, but line 1 has 2");
    let mut blank_index = task(Separator::Blanks, ValueKind::Int, 1);
    blank_index.format.skip_cols = 2;
    assert_eq!(run(&blank_index, "a b 5\n", 1).unwrap(), [1]);
}

#[test]
fn one_cell_lines_suggest_a_delimiter() {
    let blanks = task(Separator::Blanks, ValueKind::Int, 1);
    assert_eq!(
        run(&blanks, "1;5;9\n", 1).unwrap_err(),
        "1:1: not a number: \"1;5;9\" (the line is one cell: if ';' separates the values, use --delimiter ';')"
    );
    let comma = task(Separator::COMMA, ValueKind::Int, 1);
    assert!(run(&comma, "1\t5\n", 1).unwrap_err().ends_with("use --delimiter tab)"));
    assert_eq!(run(&comma, "1|x,2\n", 1).unwrap_err(), "1:1: not a number: \"1|x\"");
}

#[test]
fn integers_are_read_with_the_same_rules() {
    let mut index = format(Separator::Char(b';'), ValueKind::Float, 2);
    index.skip_cols = 1;
    let mut values = Vec::new();
    assert_eq!(index.read_integers(b"a;\"1\";-2\n\nb;3;4", 5, &mut values), Ok(2));
    assert_eq!(values, [1, -2, 3, 4]);
    assert_eq!(
        index.read_integers(b"a;1;2.5\n", 5, &mut values).unwrap_err().to_string(),
        "5:5: not an integer: \"2.5\""
    );
}

#[test]
fn rows_must_match_the_coordinators_count() {
    let comma = task(Separator::COMMA, ValueKind::Int, 1);
    let piece = TextPiece { first_line: 1, rows: 3, text: b"1\n\n2\n".to_vec() };
    assert!(comma.run(piece).unwrap_err().contains("holds 2 rows"));
}

/// A cell written as a CSV writer might: bare, or quoted with its quotes doubled.
fn write_cell(cell: &str, quote: bool) -> String {
    if quote { format!("\"{}\"", cell.replace('"', "\"\"")) } else { cell.to_owned() }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(
        prop_oneof![Just(b'\n'), Just(b'\r'), Just(b','), Just(b' '), Just(b'-'), Just(b'.'), Just(b'"'),
            b'0'..=b'9', any::<u8>()],
        0..256,
    ), kind in prop_oneof![Just(ValueKind::Int), Just(ValueKind::Float)], skip in 0u64..2) {
        for separator in [Separator::COMMA, Separator::Blanks, Separator::Char(b';')] {
            let mut task = task(separator, kind, 3);
            task.format.skip_cols = skip;
            let mut counts = Vec::new();
            if let Err(fault) = task.count(&bytes, 1, &mut counts) {
                prop_assert!(!fault.to_string().contains('\n'));
            }
        }
    }

    #[test]
    fn fast_count_agrees_with_the_reference(
        rows in proptest::collection::vec(proptest::collection::vec(
            prop_oneof![-20i64..20, any::<i64>()].prop_map(|v| v.to_string()), 3), 0..20),
        separator in prop_oneof![Just(", "), Just(","), Just(" "), Just("\t")],
    ) {
        let text: String = rows.iter().map(|row| row.join(separator) + "\n").collect();
        let sep = Separator::of_line(separator.as_bytes());
        let task = task(sep, ValueKind::Int, 3);
        let expected: Vec<u32> = text.lines().map(|line| task.reference_count(line.as_bytes()).unwrap()).collect();
        prop_assert_eq!(run(&task, &text, 1).unwrap(), expected);
    }

    /// Lines of quoted and bare cells, the quoted ones holding delimiters, quotes, blanks
    /// and numbers: every cell the row reader sees is the one `csv-core` sees.
    #[test]
    fn quoted_rows_are_cut_as_csv_core_cuts_them(
        cells in proptest::collection::vec((
            prop_oneof![
                "[0-9]{1,3}",
                "-?[0-9]{1,2}\\.[0-9]",
                "[ ,;\"a-c0-9]{0,6}",
            ],
            any::<bool>(),
        ), 1..6),
        delimiter in prop_oneof![Just(b','), Just(b';'), Just(b'\t'), Just(b'|')],
    ) {
        let separator = Separator::Char(delimiter);
        let line = cells.iter()
            .map(|(cell, quote)| write_cell(cell, *quote || cell.contains(['"', char::from(delimiter)])))
            .collect::<Vec<_>>()
            .join(&char::from(delimiter).to_string());
        // csv-core skips an empty line; the row reader never sees a blank one.
        prop_assume!(!is_blank_line(line.as_bytes()));
        let mut seen = Vec::new();
        let mut quoted = QuotedRows::new(delimiter);
        quoted.cells(line.as_bytes(), |_, cell| { seen.push(cell.to_vec()); Ok::<(), ()>(()) }, |_| ()).unwrap();
        let reference = cells_of(line.as_bytes(), separator).unwrap();
        prop_assert_eq!(&seen, &reference);
        let expected: Vec<Vec<u8>> = cells.iter().map(|(cell, _)| trim(cell.as_bytes()).to_vec()).collect();
        prop_assert_eq!(seen, expected);
        // And the count of the row, through the fast path or the careful one.
        let task = CountText { format: format(separator, ValueKind::Float, cells.len() as u64), ..task(separator, ValueKind::Float, 1) };
        let numeric = cells.iter().all(|(cell, _)| { let cell = trim(cell.as_bytes()); cell.is_empty() || is_number(cell) });
        if numeric {
            prop_assert_eq!(run(&task, &line, 1).unwrap(), vec![task.reference_count(line.as_bytes()).unwrap()]);
        }
    }
}

#[test]
fn every_int64_and_uint64_value_is_a_value() {
    assert_eq!(parse_wide_integer(b"18446744073709551615"), Ok(u64::MAX.into()));
    assert_eq!(parse_wide_integer(b"-9223372036854775808"), Ok(i64::MIN.into()));
    assert_eq!(parse_wide_integer(b"+9223372036854775808"), Ok(1 << 63));
    assert_eq!(parse_wide_integer(b"18446744073709551616"), Err(IntegerError::OutOfRange));
    assert_eq!(parse_wide_integer(b"-9223372036854775809"), Err(IntegerError::OutOfRange));
    assert_eq!(parse_integer(b"9223372036854775808"), Err(IntegerError::OutOfRange));
    let range = ValueRange { min: Number::Float(1e19), max: Number::Int(u64::MAX.into()) };
    for separator in [Separator::COMMA, Separator::Blanks] {
        let task = CountText { range, ..task(separator, ValueKind::Int, 4) };
        let text = "9223372036854775808 9223372036854775809 18446744073709551615 5\n"
            .replace(' ', if separator == Separator::COMMA { "," } else { " " });
        assert_eq!(run(&task, &text, 1).unwrap(), [1]);
        assert_eq!(task.reference_count(text.trim_end().as_bytes()), Some(1));
    }
}
