//! Reading the reference problem's matrix from a text file (CSV or whitespace-separated).
//!
//! Input files may hold tens of millions of lines, so parsing works on the raw bytes,
//! without a `String` per line or per cell; and the file need not be valid UTF-8 as a whole,
//! since only a bad cell should be blamed, at its own line and column.

use std::path::{Path, PathBuf};

use crate::matrix::Matrix;

pub mod csv;
pub mod npy;
pub mod source;

/// Why an input file could not be read as a matrix; Display is ONE line naming the place.
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
    /// A cell that is not a (decimal, optionally signed) integer.
    #[error("{file}:{line}:{column}: not an integer: {cell:?}")]
    NotInteger {
        /// The input's name, as given to `parse_matrix`.
        file: String,
        /// 1-based line number, blank lines included.
        line: usize,
        /// 1-based byte column where the cell starts.
        column: usize,
        /// The cell's text, lossily decoded and shortened to about 40 characters.
        cell: String,
    },
    /// Nothing between two commas (or after the last one) in a CSV file.
    #[error("{file}:{line}:{column}: empty cell")]
    EmptyCell {
        /// The input's name, as given to `parse_matrix`.
        file: String,
        /// 1-based line number, blank lines included.
        line: usize,
        /// 1-based byte column where the cell starts.
        column: usize,
    },
    /// An integer that does not fit in an `i64`.
    #[error("{file}:{line}:{column}: value out of range for a 64-bit integer: {cell:?}")]
    OutOfRange {
        /// The input's name, as given to `parse_matrix`.
        file: String,
        /// 1-based line number, blank lines included.
        line: usize,
        /// 1-based byte column where the cell starts.
        column: usize,
        /// The cell's text, shortened to about 40 characters.
        cell: String,
    },
    /// A row whose length differs from the first row's, so the data is not a matrix.
    #[error("{file}:{line}: row has {values} value{}, but line {first_line} has {expected}", if *values == 1 { "" } else { "s" })]
    Ragged {
        /// The input's name, as given to `parse_matrix`.
        file: String,
        /// 1-based line number of the offending row.
        line: usize,
        /// How many values the offending row has.
        values: usize,
        /// 1-based line number of the first row, which sets the width.
        first_line: usize,
        /// How many values the first row has.
        expected: usize,
    },
}

/// Reads a matrix from the file at `path` (see `parse_matrix` for the format).
pub fn read_matrix(path: &Path) -> Result<Matrix, InputError> {
    let text = std::fs::read(path).map_err(|source| InputError::Read { path: path.to_path_buf(), source })?;
    parse_matrix(&text, &path.display().to_string())
}

/// Parses `text`, naming `source` (e.g. the file path as the user gave it) in errors.
///
/// One row per line, `\n` or `\r\n`; cells are integers with an optional `+` or `-`.
/// The first non-blank line decides the separator for the whole file: with a comma it is
/// CSV (spaces and tabs around cells are ignored), otherwise runs of spaces and tabs.
/// Blank lines are skipped but still counted, so error line numbers match an editor's.
pub fn parse_matrix(text: &[u8], source: &str) -> Result<Matrix, InputError> {
    let mut values: Vec<i64> = Vec::new();
    let mut separator = None;
    // Line number and width of the first row, which every other row must match.
    let mut first: Option<(usize, usize)> = None;
    let mut rows = 0usize;

    for (index, line) in text.split(|&byte| byte == b'\n').enumerate() {
        let line_number = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|&byte| is_blank(byte)) {
            continue;
        }
        let separator =
            *separator.get_or_insert_with(|| if line.contains(&b',') { Separator::Comma } else { Separator::Blanks });

        let before = values.len();
        let parsed = match separator {
            Separator::Comma => parse_csv_row(line, &mut values),
            Separator::Blanks => parse_blank_separated_row(line, &mut values),
        };
        parsed.map_err(|fault| fault.into_error(source, line_number))?;
        let count = values.len() - before;

        match first {
            None => {
                first = Some((line_number, count));
                // One guess from the first line's length saves most of the re-allocations of a
                // large file; capped because a line holding a value needs at least two bytes.
                let estimated_rows = text.len() / (line.len() + 1);
                values.reserve(estimated_rows.saturating_mul(count).min(text.len() / 2 + 1).saturating_sub(count));
            }
            Some((first_line, expected)) if count != expected => {
                return Err(InputError::Ragged {
                    file: source.to_owned(),
                    line: line_number,
                    values: count,
                    first_line,
                    expected,
                });
            }
            Some(_) => {}
        }
        rows += 1;
    }

    match first {
        Some((_, cols)) => Ok(Matrix::from_parts(rows, cols, values)),
        None => Err(InputError::Empty { file: source.to_owned() }),
    }
}

#[derive(Debug, Clone, Copy)]
enum Separator {
    Comma,
    Blanks,
}

/// A bad cell, before the line number and input name are known.
struct CellFault<'a> {
    kind: FaultKind,
    /// 0-based byte offset in the line.
    offset: usize,
    cell: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    NotInteger,
    OutOfRange,
    Empty,
}

impl CellFault<'_> {
    fn into_error(self, file: &str, line: usize) -> InputError {
        let file = file.to_owned();
        let column = self.offset + 1;
        match self.kind {
            FaultKind::NotInteger => InputError::NotInteger { file, line, column, cell: quotable(self.cell) },
            FaultKind::OutOfRange => InputError::OutOfRange { file, line, column, cell: quotable(self.cell) },
            FaultKind::Empty => InputError::EmptyCell { file, line, column },
        }
    }
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

fn parse_csv_row<'a>(line: &'a [u8], values: &mut Vec<i64>) -> Result<(), CellFault<'a>> {
    let mut start = 0;
    for raw in line.split(|&byte| byte == b',') {
        let leading = raw.iter().take_while(|&&byte| is_blank(byte)).count();
        let trailing = raw[leading..].iter().rev().take_while(|&&byte| is_blank(byte)).count();
        let cell = &raw[leading..raw.len() - trailing];
        if cell.is_empty() {
            return Err(CellFault { kind: FaultKind::Empty, offset: start, cell });
        }
        let offset = start + leading;
        values.push(parse_i64(cell).map_err(|kind| CellFault { kind, offset, cell })?);
        start += raw.len() + 1;
    }
    Ok(())
}

fn parse_blank_separated_row<'a>(line: &'a [u8], values: &mut Vec<i64>) -> Result<(), CellFault<'a>> {
    let mut position = 0;
    while position < line.len() {
        if is_blank(line[position]) {
            position += 1;
            continue;
        }
        let offset = position;
        let length = line[offset..].iter().take_while(|&&byte| !is_blank(byte)).count();
        let cell = &line[offset..offset + length];
        values.push(parse_i64(cell).map_err(|kind| CellFault { kind, offset, cell })?);
        position = offset + length;
    }
    Ok(())
}

use corepool_worker::text::quotable;

/// The worker's integer parser, so that a file read whole and a file read in pieces by the
/// workers agree on what an integer is.
fn parse_i64(cell: &[u8]) -> Result<i64, FaultKind> {
    use corepool_worker::text::{IntegerError, parse_integer};
    parse_integer(cell).map_err(|error| match error {
        IntegerError::NotInteger => FaultKind::NotInteger,
        IntegerError::OutOfRange => FaultKind::OutOfRange,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Matrix, InputError> {
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
        assert_eq!(error(text), r#"in.csv:8:3: not an integer: "x""#);
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
        assert_eq!(error("99999999999999999999999x\n"), r#"in.csv:1:1: not an integer: "99999999999999999999999x""#);
    }

    #[test]
    fn empty_file() {
        assert_eq!(error(""), "in.csv: no rows: the file is empty");
        assert_eq!(error("\n \r\n\t\n"), "in.csv: no rows: the file is empty");
    }

    #[test]
    fn not_an_integer() {
        assert_eq!(error("1,2\n3, 4.5\n"), r#"in.csv:2:4: not an integer: "4.5""#);
        assert_eq!(error("1 abc\n"), r#"in.csv:1:3: not an integer: "abc""#);
        assert_eq!(error("1,-\n"), r#"in.csv:1:3: not an integer: "-""#);
        assert_eq!(error("1,+-1\n"), r#"in.csv:1:3: not an integer: "+-1""#);
        assert_eq!(error("1,1 2\n"), r#"in.csv:1:3: not an integer: "1 2""#);
        // Commas in a whitespace-separated file are just bad characters.
        assert_eq!(error("1 2\n3,4 5\n"), r#"in.csv:2:1: not an integer: "3,4""#);
    }

    #[test]
    fn not_an_integer_quotes_are_escaped_and_stay_on_one_line() {
        assert_eq!(error("1,\"2\"\n"), r#"in.csv:1:3: not an integer: "\"2\"""#);
        let message = error("1,2\r3\n");
        assert_eq!(message, r#"in.csv:1:3: not an integer: "2\r3""#);
        assert!(!message.contains(['\n', '\r']));
    }

    #[test]
    fn invalid_utf8_is_not_an_integer() {
        let err = parse_matrix(b"1,2\n3,\xff4\n", "in.csv").unwrap_err();
        assert_eq!(err.to_string(), "in.csv:2:3: not an integer: \"\u{fffd}4\"");
    }

    #[test]
    fn long_cells_are_shortened() {
        let cell = "a".repeat(1000);
        let expected = format!("in.csv:1:3: not an integer: \"{}…\"", "a".repeat(40));
        assert_eq!(error(&format!("1,{cell}\n")), expected);
        let digits = "9".repeat(41);
        let expected = format!("in.csv:1:1: value out of range for a 64-bit integer: \"{}…\"", "9".repeat(40));
        assert_eq!(error(&digits), expected);
        // Exactly 40 characters, multi-byte ones included, are not shortened.
        let wide = "é".repeat(40);
        assert_eq!(error(&format!("{wide}\n")), format!("in.csv:1:1: not an integer: \"{wide}\""));
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
        assert_eq!(message, format!("{}:2:3: not an integer: \"x\"", path.display()));
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
