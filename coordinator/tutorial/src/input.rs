//! Reading the reference problem's matrix from a text file (CSV or whitespace-separated).
//!
//! A file held whole (`demo --input`) is read by the same code as a streamed one: the
//! first lines by [`csv::open_csv`] (byte-order mark, header, separator, width), the rows
//! by the workers' parser ([`crate::text::TextFormat::read_integers`]), so both
//! follow one set of rules and name a bad cell alike. Parsing works on the raw bytes, and
//! the file need not be valid UTF-8 as a whole, since only a bad cell should be blamed, at
//! its own line and column.

use std::path::{Path, PathBuf};

use crate::matrix::Matrix;

pub mod csv;
pub mod npy;
pub mod source;

use source::DataError;

/// Why an input file could not be read; Display is ONE line naming the place.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file itself could not be read; the cause is kept for callers that inspect it.
    // The cause is left to the error chain, which callers print after a colon.
    #[error("{}: cannot read", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// Nothing but blank lines, so there is no matrix shape to speak of.
    #[error("{file}: no rows: the file is empty")]
    Empty {
        /// The input's name, as given to `parse_matrix`.
        file: String,
    },
}

/// Reads a matrix of integers from the file at `path` (see `parse_matrix` for the format).
pub fn read_matrix(path: &Path) -> Result<Matrix, DataError> {
    read_matrix_and_header(path).map(|(matrix, _)| matrix)
}

/// [`read_matrix`], and the line number of the header it skipped, if any.
pub fn read_matrix_and_header(path: &Path) -> Result<(Matrix, Option<u64>), DataError> {
    let text = std::fs::read(path).map_err(|source| InputError::Read { path: path.to_path_buf(), source })?;
    parse_matrix_and_header(&text, &path.display().to_string())
}

/// Parses `text` as a matrix of 64-bit integers, naming `source` (e.g. the file path as the
/// user gave it) in errors.
///
/// The rules are the streamed reader's with its default options: one row per line, `\n`
/// or `\r\n`; a byte-order mark is dropped; the first non-blank line decides the
/// separator (with a comma it is CSV: cells trimmed of spaces and tabs, and maybe quoted;
/// otherwise runs of spaces and tabs) and is a header if a cell is not a number. Blank
/// lines are skipped but still counted, so error line numbers match an editor's.
pub fn parse_matrix(text: &[u8], source: &str) -> Result<Matrix, DataError> {
    parse_matrix_and_header(text, source).map(|(matrix, _)| matrix)
}

/// [`parse_matrix`], and the line number of the header it skipped, if any.
pub fn parse_matrix_and_header(text: &[u8], source: &str) -> Result<(Matrix, Option<u64>), DataError> {
    use crate::text::ValueKind;
    let options = csv::CsvOptions { kind: Some(ValueKind::Int), ..csv::CsvOptions::default() };
    let (layout, mut pieces) = csv::open_csv(text, source, options)?;
    let format = layout.format();
    let mut values = Vec::new();
    let mut rows = 0;
    for piece in &mut pieces {
        if rows == 0 {
            // One guess from the first piece saves most of the re-allocations of a large file.
            values.reserve(text.len() / piece.text.len().max(1) * piece.rows as usize * layout.cols as usize);
        }
        rows += format
            .read_integers(&piece.text, piece.first_line, &mut values)
            .map_err(|fault| DataError::Cell { file: source.to_owned(), fault: fault.to_string() })?;
    }
    if let Some(error) = pieces.take_error() {
        return Err(error);
    }
    Ok((Matrix::from_parts(rows as usize, layout.cols as usize, values), layout.header_line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Matrix, DataError> {
        parse_matrix(text.as_bytes(), "in.csv")
    }

    fn matrix(rows: usize, cols: usize, values: &[i64]) -> Matrix {
        Matrix::from_parts(rows, cols, values.to_vec())
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("should not parse").to_string()
    }

    #[test]
    fn csv() {
        assert_eq!(parse("1,2,3\n4,5,6\n").unwrap(), matrix(2, 3, &[1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn csv_cells_are_trimmed() {
        assert_eq!(parse(" 1 ,\t2\t, 3\n4, 5 ,6 \n").unwrap(), matrix(2, 3, &[1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn whitespace_separated() {
        assert_eq!(parse("1 2  3\n  4 5 6   \n").unwrap(), matrix(2, 3, &[1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn tabs() {
        assert_eq!(parse("1\t2\t\t3\n4 \t5\t6\n").unwrap(), matrix(2, 3, &[1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn crlf() {
        assert_eq!(parse("1,2\r\n3,4\r\n").unwrap(), matrix(2, 2, &[1, 2, 3, 4]));
        assert_eq!(parse("1 2\r\n3 4\r\n").unwrap(), matrix(2, 2, &[1, 2, 3, 4]));
    }

    #[test]
    fn no_trailing_newline() {
        assert_eq!(parse("1,2\n3,4").unwrap(), matrix(2, 2, &[1, 2, 3, 4]));
        assert_eq!(parse("7").unwrap(), matrix(1, 1, &[7]));
    }

    #[test]
    fn blank_lines_are_skipped_but_counted() {
        let text = "\n  \n1,2\n\t\n\r\n3,4\n\n5,x\n";
        assert_eq!(error(text), r#"in.csv:8:3: not a number: "x""#);
        assert_eq!(parse("\n\n1 2\n \n3 4\n\n").unwrap(), matrix(2, 2, &[1, 2, 3, 4]));
    }

    #[test]
    fn single_column_is_whitespace_separated_and_fine() {
        assert_eq!(parse("1\n-2\n+3\n").unwrap(), matrix(3, 1, &[1, -2, 3]));
    }

    #[test]
    fn signs() {
        assert_eq!(parse("-1,+2,-0,007\n").unwrap(), matrix(1, 4, &[-1, 2, 0, 7]));
    }

    #[test]
    fn extremes() {
        let text = format!("{},{}\n", i64::MIN, i64::MAX);
        assert_eq!(parse(&text).unwrap(), matrix(1, 2, &[i64::MIN, i64::MAX]));
    }

    #[test]
    fn just_beyond_extremes() {
        assert_eq!(
            error("1,-9223372036854775809\n"),
            r#"in.csv:1:3: value out of range for a 64-bit integer: "-9223372036854775809""#
        );
        assert_eq!(
            error("9223372036854775808 1\n"),
            r#"in.csv:1:1: value out of range for a 64-bit integer: "9223372036854775808""#
        );
        assert_eq!(
            error("1\n2\n 99999999999999999999999999\n"),
            r#"in.csv:3:2: value out of range for a 64-bit integer: "99999999999999999999999999""#
        );
    }

    #[test]
    fn overlong_garbage_is_not_an_integer_rather_than_out_of_range() {
        assert_eq!(error("99999999999999999999999x\n"), r#"in.csv:1:1: not a number: "99999999999999999999999x""#);
    }

    #[test]
    fn empty_file() {
        assert_eq!(error(""), "in.csv: no rows: the file is empty");
        assert_eq!(error("\n \r\n\t\n"), "in.csv: no rows: the file is empty");
    }

    #[test]
    fn not_an_integer() {
        assert_eq!(error("1,2\n3, 4.5\n"), r#"in.csv:2:4: not an integer: "4.5""#);
        assert_eq!(error("1 2\n1 abc\n"), r#"in.csv:2:3: not a number: "abc""#);
        assert_eq!(error("1,-\n"), r#"in.csv:1:3: not a number: "-""#);
        assert_eq!(error("1,+-1\n"), r#"in.csv:1:3: not a number: "+-1""#);
        assert_eq!(error("1,1 2\n"), r#"in.csv:1:3: not a number: "1 2""#);
        // Commas in a whitespace-separated file are just bad characters.
        assert_eq!(error("1 2\n3,4 5\n"), r#"in.csv:2:1: not a number: "3,4""#);
    }

    #[test]
    fn the_streamed_readers_rules() {
        // A header is skipped, a numeric first line is data, a byte-order mark is dropped.
        assert_eq!(parse("a,b\n1,2\n").unwrap(), matrix(1, 2, &[1, 2]));
        assert_eq!(parse("0,1\n1,2\n").unwrap(), matrix(2, 2, &[0, 1, 1, 2]));
        assert_eq!(parse("\u{feff}0,1\n1,2\n").unwrap(), matrix(2, 2, &[0, 1, 1, 2]));
        assert_eq!(parse("\"8\",\" 9\"\n").unwrap(), matrix(1, 2, &[8, 9]));
        assert_eq!(error("0x10,4,5\n"), r#"in.csv:1:1: not a number: "0x10""#);
        assert_eq!(error("a,b\n"), "in.csv: no rows: only a header (line 1)");
    }

    #[test]
    fn not_an_integer_quotes_are_escaped_and_stay_on_one_line() {
        assert_eq!(error("1,2\n1,\"2\"\"\"\n"), r#"in.csv:2:3: not a number: "2\"""#);
        let message = error("1,2\r3\n");
        assert_eq!(message, r#"in.csv:1:3: not a number: "2\r3""#);
        assert!(!message.contains(['\n', '\r']));
    }

    #[test]
    fn invalid_utf8_is_not_an_integer() {
        let err = parse_matrix(b"1,2\n3,\xff4\n", "in.csv").unwrap_err();
        assert_eq!(err.to_string(), "in.csv:2:3: not a number: \"\u{fffd}4\"");
    }

    #[test]
    fn long_cells_are_shortened() {
        let cell = "a".repeat(1000);
        let expected = format!("in.csv:1:3: not a number: \"{}…\"", "a".repeat(40));
        assert_eq!(error(&format!("1,{cell}\n")), expected);
        let digits = "9".repeat(41);
        let expected = format!("in.csv:1:1: value out of range for a 64-bit integer: \"{}…\"", "9".repeat(40));
        assert_eq!(error(&digits), expected);
        // Exactly 40 characters, multi-byte ones included, are not shortened.
        let wide = "é".repeat(40);
        assert_eq!(error(&format!("1\n{wide}\n")), format!("in.csv:2:1: not a number: \"{wide}\""));
    }

    #[test]
    fn empty_cells() {
        assert_eq!(error("1,,3\n"), "in.csv:1:3: empty cell");
        assert_eq!(error("1,2,3\n4,5,\n"), "in.csv:2:5: empty cell");
        assert_eq!(error(",1\n"), "in.csv:1:1: empty cell");
        assert_eq!(error("1, \t,3\n"), "in.csv:1:3: empty cell");
        assert_eq!(error("1,2\r\n3,\r\n"), "in.csv:2:3: empty cell");
    }

    #[test]
    fn ragged_rows() {
        assert_eq!(error("\n1,2,3\n4,5\n"), "in.csv:3: row has 2 values, but line 2 has 3");
        assert_eq!(error("1 2\n3 4\n\n5 6 7\n"), "in.csv:4: row has 3 values, but line 1 has 2");
        // A CSV file's row without a comma is a one-value row.
        assert_eq!(error("1,2\n3\n"), "in.csv:2: row has 1 value, but line 1 has 2");
    }

    #[test]
    fn read_matrix_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, "1,2\n3,4\n").unwrap();
        assert_eq!(read_matrix(&path).unwrap(), matrix(2, 2, &[1, 2, 3, 4]));

        std::fs::write(&path, "1,2\n3,x\n").unwrap();
        let message = read_matrix(&path).unwrap_err().to_string();
        assert_eq!(message, format!("{}:2:3: not a number: \"x\"", path.display()));
    }

    #[test]
    fn missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.csv");
        let err = read_matrix(&path).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: cannot read", path.display()));
        assert!(!err.to_string().contains('\n'));
        let source = std::error::Error::source(&err).expect("io error kept as source");
        let source = source.downcast_ref::<std::io::Error>().expect("an io::Error");
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    }

    /// Text in the given layout: `separator` between cells, `newline` after each row.
    fn render(m: &Matrix, separator: &str, newline: &str, trailing_newline: bool, blank_lines: bool) -> String {
        let lines: Vec<String> =
            m.iter_rows().map(|row| row.iter().map(i64::to_string).collect::<Vec<_>>().join(separator)).collect();
        let joiner = if blank_lines { format!("{newline} \t{newline}") } else { newline.to_owned() };
        let mut text = lines.join(&joiner);
        if trailing_newline {
            text.push_str(newline);
        }
        text
    }

    fn any_matrix() -> impl Strategy<Value = Matrix> {
        (1usize..12, 1usize..8).prop_flat_map(|(rows, cols)| {
            let value = prop_oneof![any::<i64>(), -1000i64..1000, Just(i64::MIN), Just(i64::MAX)];
            proptest::collection::vec(value, rows * cols).prop_map(move |values| Matrix::from_parts(rows, cols, values))
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_matrix(&bytes, "fuzz");
        }

        #[test]
        fn random_matrix_bytes_never_panic(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b','), Just(b' '), Just(b'\t'), Just(b'-'), Just(b'+'),
                    b'0'..=b'9', any::<u8>()],
                0..512,
            )
        ) {
            if let Err(err) = parse_matrix(&bytes, "fuzz") {
                prop_assert!(!err.to_string().contains('\n'));
            }
        }

        #[test]
        fn written_matrices_parse_back(
            m in any_matrix(),
            separator in prop_oneof![Just(","), Just(", "), Just(" , "), Just("\t,"), Just(" "), Just("\t"), Just("  \t ")],
            newline in prop_oneof![Just("\n"), Just("\r\n")],
            trailing_newline in any::<bool>(),
            blank_lines in any::<bool>(),
        ) {
            let text = render(&m, separator, newline, trailing_newline, blank_lines);
            prop_assert_eq!(parse_matrix(text.as_bytes(), "prop").unwrap(), m);
        }
    }
}
