//! Counting straight from CSV text: the coordinator only cuts the file into pieces of
//! whole lines, and each worker parses its own pieces, so parsing runs on every core.
//!
//! The rules are those of `corepool::input`: one row per line (`\n` or `\r\n`); with a
//! comma separator, cells are trimmed of spaces and tabs and may not be empty; otherwise
//! cells are separated by runs of spaces and tabs. Blank lines are skipped but counted,
//! so that line numbers match an editor's. Errors name the line and the byte column.

use serde::{Deserialize, Serialize};

use crate::{Task, values::ValueRange};

/// How cells are separated on a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Separator {
    /// Commas; spaces and tabs around cells are ignored.
    Comma,
    /// Runs of spaces and tabs.
    Blanks,
}

impl Separator {
    /// The separator a file's first non-blank line implies.
    pub fn of_line(line: &[u8]) -> Self {
        if line.contains(&b',') { Separator::Comma } else { Separator::Blanks }
    }
}

/// What the values of a file are read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueKind {
    /// 64-bit integers, signed or not (`-2^63..=2^64-1`): any other cell is an error.
    Int,
    /// Doubles, integers included (`nan`, `inf` and exponents too).
    Float,
}

/// Whole lines of a text file, with the number of the first one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextPiece {
    /// 1-based number of the piece's first line in its file.
    pub first_line: u64,
    /// Rows (non-blank lines) in the piece, as the coordinator counted them.
    pub rows: u64,
    /// The lines, each ended by `\n` except perhaps the file's last.
    #[serde(with = "serde_bytes")]
    pub text: Vec<u8>,
}

/// The tutorial's count over rows of CSV text: how many values of each row lie in `range`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CountText {
    /// The range counted.
    pub range: ValueRange,
    /// How cells are separated.
    pub separator: Separator,
    /// How values are read.
    pub kind: ValueKind,
    /// Values every row must have (the first data row's).
    pub cols: u64,
    /// Line number of the first data row, named when another row's width differs.
    pub first_data_line: u64,
}

impl Task for CountText {
    const NAME: &'static str = "count-text";
    type Chunk = TextPiece;
    type Output = u32;

    /// Errors read `LINE:COLUMN: what` (or `LINE: what`), with the line numbered in the
    /// whole file; the coordinator puts the file's name in front.
    fn run(&self, piece: TextPiece) -> Result<Vec<u32>, String> {
        let mut counts = Vec::with_capacity(usize::try_from(piece.rows).unwrap_or(0));
        self.count(&piece.text, piece.first_line, &mut counts).map_err(|fault| fault.to_string())?;
        if counts.len() as u64 != piece.rows {
            return Err(format!(
                "{}: the piece holds {} rows, not the {} the coordinator counted",
                piece.first_line,
                counts.len(),
                piece.rows
            ));
        }
        Ok(counts)
    }

    crate::tasks::counts_as_raw_bytes!();
}

/// A bad line or cell, with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFault {
    /// 1-based line number.
    pub line: u64,
    /// 1-based byte column, for a fault in one cell.
    pub column: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for TextFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.column {
            Some(column) => write!(f, "{}:{column}: {}", self.line, self.message),
            None => write!(f, "{}: {}", self.line, self.message),
        }
    }
}

/// Longest cell text quoted in an error: the whole of a runaway cell would flood the terminal.
const MAX_QUOTED_CHARS: usize = 40;

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// Whether a line (without its `\n`) holds nothing but spaces, tabs and a final `\r`.
pub fn is_blank_line(line: &[u8]) -> bool {
    line.strip_suffix(b"\r").unwrap_or(line).iter().all(|&byte| is_blank(byte))
}

/// Why a cell is not a value, before its place is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CellError {
    NotInteger,
    NotNumber,
    OutOfRange,
}

impl CountText {
    /// Counts every row of `text`, whose first line is `first_line`, appending to `counts`.
    pub fn count(&self, text: &[u8], first_line: u64, counts: &mut Vec<u32>) -> Result<(), TextFault> {
        let ints = self.range.int_bounds();
        // An empty integer range is written as lo > hi, which the fast path's test refutes.
        let (lo, hi) = ints.unwrap_or((1, 0));
        let mut line = first_line;
        let mut start = 0;
        while start < text.len() {
            if let Some((hits, next)) = self.fast_row(text, start, lo, hi) {
                counts.push(hits);
                line += 1;
                start = next;
                continue;
            }
            let end = match text[start..].iter().position(|&b| b == b'\n') {
                Some(at) => start + at,
                None => text.len(),
            };
            let row = &text[start..end];
            let row = row.strip_suffix(b"\r").unwrap_or(row);
            if !is_blank_line(row) {
                let (cells, hits) = match self.separator {
                    Separator::Comma => self.comma_row(row, ints),
                    Separator::Blanks => self.blank_row(row, ints),
                }
                .map_err(|(column, message)| TextFault {
                    line,
                    column: Some(column as u64 + 1),
                    message,
                })?;
                if cells != self.cols {
                    return Err(TextFault {
                        line,
                        column: None,
                        message: format!(
                            "row has {cells} value{}, but line {} has {}",
                            if cells == 1 { "" } else { "s" },
                            self.first_data_line,
                            self.cols
                        ),
                    });
                }
                counts.push(hits);
            }
            line += 1;
            start = end + 1;
        }
        Ok(())
    }

    /// The common row, in one pass and no allocation: `cols` plain integers with one
    /// separator between them, ended by `\n` (or `\r\n`, or the end of the text). Gives
    /// the row's count and where the next line starts; anything else (blanks in a CSV
    /// cell, floats, a bad cell, a blank line, the wrong width) is left to the careful
    /// path, which also finds the fault's column.
    #[inline]
    fn fast_row(&self, text: &[u8], start: usize, lo: i64, hi: i64) -> Option<(u32, usize)> {
        let blanks = self.separator == Separator::Blanks;
        let separator = if blanks { b' ' } else { b',' };
        let mut at = start;
        let mut hits = 0u32;
        let mut cells = 0u64;
        loop {
            if blanks {
                while at < text.len() && is_blank(text[at]) {
                    at += 1;
                }
            }
            let (value, after) = quick_integer(text, at)?;
            hits += u32::from(lo <= value && value <= hi);
            cells += 1;
            at = after;
            if blanks {
                while at < text.len() && is_blank(text[at]) {
                    at += 1;
                }
            }
            match text.get(at) {
                None => return (cells == self.cols).then_some((hits, at)),
                Some(b'\n') => return (cells == self.cols).then_some((hits, at + 1)),
                Some(b'\r') if text.get(at + 1) == Some(&b'\n') => {
                    return (cells == self.cols).then_some((hits, at + 2));
                }
                Some(&byte) if byte == separator && !blanks => at += 1,
                Some(_) if blanks && at > after => {}
                Some(_) => return None,
            }
            if cells == self.cols {
                return None;
            }
        }
    }

    /// Cells and values in range of one comma-separated row; a fault gives its 0-based
    /// column and message.
    fn comma_row(&self, row: &[u8], ints: Option<(i64, i64)>) -> Result<(u64, u32), (usize, String)> {
        let (mut cells, mut hits) = (0u64, 0u32);
        let mut start = 0;
        loop {
            // The common cell: an integer of a few digits, maybe padded, then a comma.
            let mut at = start;
            while at < row.len() && is_blank(row[at]) {
                at += 1;
            }
            let cell_start = at;
            if let Some((value, after)) = quick_integer(row, at) {
                let mut next = after;
                while next < row.len() && is_blank(row[next]) {
                    next += 1;
                }
                if next == row.len() || row[next] == b',' {
                    cells += 1;
                    hits += u32::from(ints.is_some_and(|(lo, hi)| lo <= value && value <= hi));
                    if next == row.len() {
                        return Ok((cells, hits));
                    }
                    start = next + 1;
                    continue;
                }
            }
            let end = row[start..].iter().position(|&b| b == b',').map_or(row.len(), |at| start + at);
            let raw = &row[cell_start..end];
            let trailing = raw.iter().rev().take_while(|&&byte| is_blank(byte)).count();
            let cell = &raw[..raw.len() - trailing];
            // A missing value, as pandas writes NaN: out of every range in a float file, an
            // error in an integer one.
            if cell.is_empty() && self.kind == ValueKind::Int {
                return Err((start, "empty cell".to_owned()));
            }
            cells += 1;
            if cell.is_empty() {
                if end == row.len() {
                    return Ok((cells, hits));
                }
                start = end + 1;
                continue;
            }
            hits += u32::from(self.cell_in_range(cell, ints).map_err(|e| (cell_start, describe(e, cell)))?);
            if end == row.len() {
                return Ok((cells, hits));
            }
            start = end + 1;
        }
    }

    /// Cells and values in range of one row separated by runs of blanks.
    fn blank_row(&self, row: &[u8], ints: Option<(i64, i64)>) -> Result<(u64, u32), (usize, String)> {
        let (mut cells, mut hits) = (0u64, 0u32);
        let mut at = 0;
        loop {
            while at < row.len() && is_blank(row[at]) {
                at += 1;
            }
            if at == row.len() {
                return Ok((cells, hits));
            }
            let cell_start = at;
            if let Some((value, after)) = quick_integer(row, at)
                && (after == row.len() || is_blank(row[after]))
            {
                cells += 1;
                hits += u32::from(ints.is_some_and(|(lo, hi)| lo <= value && value <= hi));
                at = after;
                continue;
            }
            let length = row[at..].iter().take_while(|&&byte| !is_blank(byte)).count();
            let cell = &row[at..at + length];
            cells += 1;
            hits += u32::from(self.cell_in_range(cell, ints).map_err(|e| (cell_start, describe(e, cell)))?);
            at += length;
        }
    }

    /// Whether the value in `cell` (trimmed, not empty) lies in the range.
    fn cell_in_range(&self, cell: &[u8], ints: Option<(i64, i64)>) -> Result<bool, CellError> {
        match parse_wide(cell) {
            Ok(value) => Ok(match i64::try_from(value) {
                Ok(value) => ints.is_some_and(|(lo, hi)| lo <= value && value <= hi),
                // Past `i64` (a `uint64` value): compared with the range exactly.
                Err(_) => self.range.contains_int(value),
            }),
            Err(error) if self.kind == ValueKind::Int => Err(error),
            Err(_) => parse_f64(cell).map(|value| self.range.contains_f64(value)),
        }
    }
}

/// A plain integer of 1 to 18 digits (maybe signed) at `row[at..]`, and where it ends: the
/// fast path. Anything else (more digits, a dot, a letter) is left to the careful parse.
#[inline(always)]
fn quick_integer(row: &[u8], at: usize) -> Option<(i64, usize)> {
    let mut at = at;
    let negative = match row.get(at) {
        Some(b'-') => {
            at += 1;
            true
        }
        Some(b'+') => {
            at += 1;
            false
        }
        _ => false,
    };
    let digits_start = at;
    let mut magnitude: i64 = 0;
    while let Some(&byte) = row.get(at) {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        if at - digits_start == 18 {
            return None;
        }
        magnitude = magnitude * 10 + i64::from(digit);
        at += 1;
    }
    if at == digits_start {
        return None;
    }
    Some((if negative { -magnitude } else { magnitude }, at))
}

/// Why a cell is not a 64-bit integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegerError {
    /// Not a decimal integer at all.
    NotInteger,
    /// Digits only, but too many for 64 bits.
    OutOfRange,
}

/// A decimal integer with an optional sign, parsed by hand from bytes: `str::parse` would
/// need UTF-8 validation first, and could not tell too many digits from not a number. Too
/// many digits is "out of range" only when every character is a digit.
pub fn parse_integer(cell: &[u8]) -> Result<i64, IntegerError> {
    parse_wide_integer(cell).and_then(|value| i64::try_from(value).map_err(|_| IntegerError::OutOfRange))
}

/// A decimal integer that numpy's `int64` or `uint64` holds (`-2^63..=2^64-1`), exactly;
/// as [`parse_integer`] otherwise.
pub fn parse_wide_integer(cell: &[u8]) -> Result<i128, IntegerError> {
    let (negative, digits) = match cell {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, cell),
    };
    if digits.is_empty() {
        return Err(IntegerError::NotInteger);
    }
    let mut magnitude: Option<u64> = Some(0);
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return Err(IntegerError::NotInteger);
        }
        magnitude = magnitude.and_then(|m| m.checked_mul(10)).and_then(|m| m.checked_add(u64::from(digit)));
    }
    let magnitude = i128::from(magnitude.ok_or(IntegerError::OutOfRange)?);
    match negative {
        true if magnitude > -i128::from(i64::MIN) => Err(IntegerError::OutOfRange),
        true => Ok(-magnitude),
        false => Ok(magnitude),
    }
}

fn parse_wide(cell: &[u8]) -> Result<i128, CellError> {
    parse_wide_integer(cell).map_err(cell_error)
}

fn cell_error(error: IntegerError) -> CellError {
    match error {
        IntegerError::NotInteger => CellError::NotInteger,
        IntegerError::OutOfRange => CellError::OutOfRange,
    }
}

/// A float cell: what Rust's parser takes (`4.5`, `-1e3`, `nan`, `inf`, `infinity`).
fn parse_f64(cell: &[u8]) -> Result<f64, CellError> {
    std::str::from_utf8(cell).ok().and_then(|text| text.parse::<f64>().ok()).ok_or(CellError::NotNumber)
}

/// Whether a cell holds a number (an integer or a float): what a header's cells are not.
pub fn is_number(cell: &[u8]) -> bool {
    parse_wide(cell).is_ok() || parse_f64(cell).is_ok()
}

/// Whether a cell holds an integer (in or beyond 64 bits).
pub fn is_integer(cell: &[u8]) -> bool {
    !matches!(parse_wide(cell), Err(CellError::NotInteger))
}

/// The cells of a line (without its `\n`), trimmed, as [`CountText`] cuts them.
pub fn cells_of(line: &[u8], separator: Separator) -> Vec<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match separator {
        Separator::Comma => line
            .split(|&byte| byte == b',')
            .map(|raw| {
                let leading = raw.iter().take_while(|&&byte| is_blank(byte)).count();
                let trailing = raw[leading..].iter().rev().take_while(|&&byte| is_blank(byte)).count();
                &raw[leading..raw.len() - trailing]
            })
            .collect(),
        Separator::Blanks => line.split(|&byte| is_blank(byte)).filter(|cell| !cell.is_empty()).collect(),
    }
}

fn describe(error: CellError, cell: &[u8]) -> String {
    let quoted = quotable(cell);
    match error {
        CellError::NotInteger => format!("not an integer: {quoted:?}"),
        CellError::NotNumber => format!("not a number: {quoted:?}"),
        CellError::OutOfRange => format!("value out of range for a 64-bit integer: {quoted:?}"),
    }
}

/// The cell as text for a message: lossy, since the input need not be UTF-8, and shortened.
pub fn quotable(cell: &[u8]) -> String {
    // Enough bytes for MAX_QUOTED_CHARS characters of up to four bytes, plus one to see there is more.
    let head = &cell[..cell.len().min(4 * MAX_QUOTED_CHARS + 1)];
    let text = String::from_utf8_lossy(head);
    let mut chars = text.chars();
    let mut quoted: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() || head.len() < cell.len() {
        quoted.push('…');
    }
    quoted
}

/// The floats of a row the way a careful, slow reader sees them: for checking
/// [`CountText`] against an independent count.
pub fn reference_count(line: &[u8], separator: Separator, range: &ValueRange) -> Option<u32> {
    let mut hits = 0;
    for cell in cells_of(line, separator) {
        if cell.is_empty() {
            // A missing value (the fast count accepts it in float files only): in no range.
            continue;
        }
        let text = std::str::from_utf8(cell).ok()?;
        let inside = match text.parse::<i128>() {
            Ok(value) if (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&value) => range.contains_int(value),
            _ => range.contains_f64(text.parse::<f64>().ok()?),
        };
        hits += u32::from(inside);
    }
    Some(hits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Number;
    use proptest::prelude::*;

    fn task(separator: Separator, kind: ValueKind, cols: u64) -> CountText {
        let range = ValueRange { min: Number::Int(4), max: Number::Int(8) };
        CountText { range, separator, kind, cols, first_data_line: 1 }
    }

    fn run(task: &CountText, text: &str, first_line: u64) -> Result<Vec<u32>, String> {
        let mut counts = Vec::new();
        task.count(text.as_bytes(), first_line, &mut counts).map_err(|f| f.to_string())?;
        Ok(counts)
    }

    #[test]
    fn counts_comma_and_blank_rows() {
        let comma = task(Separator::Comma, ValueKind::Int, 3);
        assert_eq!(run(&comma, "1,4,8\n 5 ,\t9,6\r\n\n7,7,7", 1).unwrap(), [2, 2, 3]);
        let blanks = task(Separator::Blanks, ValueKind::Int, 3);
        assert_eq!(run(&blanks, "1 4  8\n\t5 9 6 \r\n \n7\t7 7", 1).unwrap(), [2, 2, 3]);
    }

    #[test]
    fn floats_and_nan() {
        let floats = task(Separator::Comma, ValueKind::Float, 4);
        assert_eq!(run(&floats, "4.0,nan,8.5,-inf\n3.99,4,1e0,7.5e0\n", 1).unwrap(), [1, 2]);
        assert_eq!(run(&floats, "1,2,x,4\n", 1).unwrap_err(), "1:5: not a number: \"x\"");
        // Empty cells are missing values in a float file (pandas writes NaN so).
        assert_eq!(run(&floats, "4.5,,8,\n", 1).unwrap(), [2]);
    }

    #[test]
    fn faults_name_the_line_in_the_file_and_the_column() {
        let comma = task(Separator::Comma, ValueKind::Int, 2);
        assert_eq!(run(&comma, "1,2\n3, 4.5\n", 300_000).unwrap_err(), "300001:4: not an integer: \"4.5\"");
        assert_eq!(run(&comma, "1,,3\n", 7).unwrap_err(), "7:3: empty cell");
        assert_eq!(run(&comma, "1,2\n3\n", 1).unwrap_err(), "2: row has 1 value, but line 1 has 2");
        assert_eq!(
            run(&comma, "1,99999999999999999999\n", 1).unwrap_err().split(':').nth(2).unwrap().trim(),
            "value out of range for a 64-bit integer"
        );
        assert_eq!(run(&comma, "1,2\r3\n", 1).unwrap_err(), "1:3: not an integer: \"2\\r3\"");
        let blanks = task(Separator::Blanks, ValueKind::Int, 2);
        assert_eq!(run(&blanks, "1 2\n3,4 5\n", 1).unwrap_err(), "2:1: not an integer: \"3,4\"");
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
        for separator in [Separator::Comma, Separator::Blanks] {
            let task = CountText { range, ..task(separator, ValueKind::Int, 4) };
            let text = "9223372036854775808 9223372036854775809 18446744073709551615 5\n"
                .replace(' ', if separator == Separator::Comma { "," } else { " " });
            assert_eq!(run(&task, &text, 1).unwrap(), [1]);
            assert_eq!(reference_count(text.trim_end().as_bytes(), separator, &range), Some(1));
        }
    }

    #[test]
    fn rows_must_match_the_coordinators_count() {
        let comma = task(Separator::Comma, ValueKind::Int, 1);
        let piece = TextPiece { first_line: 1, rows: 3, text: b"1\n\n2\n".to_vec() };
        assert!(comma.run(piece).unwrap_err().contains("holds 2 rows"));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b','), Just(b' '), Just(b'-'), Just(b'.'), b'0'..=b'9', any::<u8>()],
            0..256,
        ), kind in prop_oneof![Just(ValueKind::Int), Just(ValueKind::Float)]) {
            for separator in [Separator::Comma, Separator::Blanks] {
                let task = task(separator, kind, 3);
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
            let expected: Vec<u32> = text.lines()
                .map(|line| reference_count(line.as_bytes(), sep, &task.range).unwrap())
                .collect();
            prop_assert_eq!(run(&task, &text, 1).unwrap(), expected);
        }
    }
}
