//! Counting straight from CSV text: the coordinator only cuts the file into pieces of
//! whole lines, and each worker parses its own pieces, so parsing runs on every core.
//!
//! The rules are those of `corepool::input`: one row per line (`\n` or `\r\n`); with a
//! delimiter (a comma, or `--delimiter`), cells are trimmed of spaces and tabs, may be
//! quoted as RFC 4180 says (`"8"`, `"a,b"`, `"say ""hi"""`), and may not be empty in an
//! integer file; otherwise cells are separated by runs of spaces and tabs. Leading cells
//! may be skipped unread (`--skip-cols`). Blank lines are skipped but counted, so that line
//! numbers match an editor's. Errors name the line and the byte column.
//!
//! Rows of plain cells take a one-pass path; a row holding a quote is read by `csv-core`,
//! one line at a time, so a quoted cell may not span lines.

use serde::{Deserialize, Serialize};

use corepool::task::Task;

use crate::{excerpt::quotable, values::ValueRange};

mod quoted;

use quoted::{QuotedRows, trim, unquote_blank_cell};
pub use quoted::{cells_of, visit_cells};

/// How cells are separated on a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Separator {
    /// One byte (a comma, a semicolon, a tab, ...); spaces and tabs around cells are
    /// ignored, and cells may be quoted.
    Char(u8),
    /// Runs of spaces and tabs.
    Blanks,
}

impl Separator {
    /// Commas: what a file with a comma on its first line is read with.
    pub const COMMA: Separator = Separator::Char(b',');

    /// The separator a file's first non-blank line implies.
    pub fn of_line(line: &[u8]) -> Self {
        if line.contains(&b',') { Separator::COMMA } else { Separator::Blanks }
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

/// How the rows of a CSV text are read: what the coordinator learned from its first lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextFormat {
    /// How cells are separated.
    pub separator: Separator,
    /// How values are read.
    pub kind: ValueKind,
    /// Values every row must have (the first data row's), skipped cells not included.
    pub cols: u64,
    /// Leading cells of every row that are skipped unread (an index column, say).
    pub skip_cols: u64,
    /// Line number of the first data row, named when another row's width differs.
    pub first_data_line: u64,
}

/// The tutorial's count over rows of CSV text: how many values of each row lie in `range`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CountText {
    /// The range counted.
    pub range: ValueRange,
    /// How the rows are read.
    pub format: TextFormat,
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

impl std::error::Error for TextFault {}

/// The message for a quote left open at the end of its line.
pub const SPANS_LINES: &str = "a quoted cell spans lines, which corepool does not read";

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

impl TextFormat {
    /// Reads one non-blank `row` (line `line`, without its `\n` and `\r`): `visit` is given
    /// each counted cell that is not empty. Checks the row's width.
    fn visit_row(
        &self,
        row: &[u8],
        line: u64,
        quoted: &mut Option<QuotedRows>,
        mut visit: impl FnMut(&[u8]) -> Result<(), CellError>,
    ) -> Result<(), TextFault> {
        let (skip, kind, separator) = (self.skip_cols, self.kind, self.separator);
        let mut seen = 0u64;
        let mut on_cell = |start: usize, cell: &[u8]| -> Result<(), (usize, String)> {
            seen += 1;
            if seen <= skip {
                return Ok(());
            }
            if cell.is_empty() {
                // A missing value, as pandas writes NaN: out of every range in a float file,
                // an error in an integer one.
                return if kind == ValueKind::Int { Err((start, "empty cell".to_owned())) } else { Ok(()) };
            }
            visit(cell).map_err(|error| (start, describe(error, kind, cell, separator, row)))
        };
        let walked = match separator {
            Separator::Char(delimiter) if memchr::memchr(b'"', row).is_some() => quoted
                .get_or_insert_with(|| QuotedRows::new(delimiter))
                .cells(row, &mut on_cell, |start| (start, SPANS_LINES.to_owned())),
            Separator::Char(delimiter) => {
                let mut start = 0;
                loop {
                    let end = memchr::memchr(delimiter, &row[start..]).map_or(row.len(), |at| start + at);
                    let raw = &row[start..end];
                    let cell = trim(raw);
                    let leading = if cell.is_empty() { 0 } else { raw.iter().take_while(|&&b| is_blank(b)).count() };
                    if let Err(fault) = on_cell(start + leading, cell) {
                        break Err(fault);
                    }
                    if end == row.len() {
                        break Ok(());
                    }
                    start = end + 1;
                }
            }
            Separator::Blanks => {
                let mut at = 0;
                loop {
                    while at < row.len() && is_blank(row[at]) {
                        at += 1;
                    }
                    if at == row.len() {
                        break Ok(());
                    }
                    let length = row[at..].iter().take_while(|&&byte| !is_blank(byte)).count();
                    if let Err(fault) = on_cell(at, unquote_blank_cell(&row[at..at + length])) {
                        break Err(fault);
                    }
                    at += length;
                }
            }
        };
        walked.map_err(|(column, message)| TextFault { line, column: Some(column as u64 + 1), message })?;
        let cells = seen.saturating_sub(skip);
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
        Ok(())
    }

    /// Walks the rows of `text`, whose first line is `first_line`, putting each row's
    /// result in `out`: `fast` may take a row whole at a byte offset (giving where the next
    /// line starts), and `row` reads the rest.
    fn walk<T>(
        &self,
        text: &[u8],
        first_line: u64,
        out: &mut Vec<T>,
        fast: impl Fn(usize) -> Option<(T, usize)>,
        mut row: impl FnMut(&[u8], u64, &mut Option<QuotedRows>) -> Result<T, TextFault>,
    ) -> Result<(), TextFault> {
        let mut quoted = None;
        let mut line = first_line;
        let mut start = 0;
        while start < text.len() {
            if let Some((result, next)) = fast(start) {
                out.push(result);
                line += 1;
                start = next;
                continue;
            }
            let end = memchr::memchr(b'\n', &text[start..]).map_or(text.len(), |at| start + at);
            let raw = &text[start..end];
            let stripped = raw.strip_suffix(b"\r").unwrap_or(raw);
            if !is_blank_line(stripped) {
                out.push(row(stripped, line, &mut quoted)?);
            }
            line += 1;
            start = end + 1;
        }
        Ok(())
    }

    /// Reads every row of `text` (whose first line is `first_line`) as 64-bit integers,
    /// appended to `values`; gives the number of rows. The reader of a file held whole.
    pub fn read_integers(&self, text: &[u8], first_line: u64, values: &mut Vec<i64>) -> Result<u64, TextFault> {
        let format = TextFormat { kind: ValueKind::Int, ..*self };
        let mut rows: Vec<()> = Vec::new();
        format.walk(
            text,
            first_line,
            &mut rows,
            |_| None,
            |row, line, quoted| {
                format.visit_row(row, line, quoted, |cell| {
                    values.push(parse_integer(cell).map_err(cell_error)?);
                    Ok(())
                })
            },
        )?;
        Ok(rows.len() as u64)
    }
}

impl CountText {
    /// Counts every row of `text`, whose first line is `first_line`, appending to `counts`.
    pub fn count(&self, text: &[u8], first_line: u64, counts: &mut Vec<u32>) -> Result<(), TextFault> {
        let ints = self.range.int_bounds();
        // An empty integer range is written as lo > hi, which the fast path's test refutes.
        let (lo, hi) = ints.unwrap_or((1, 0));
        let careful = |row: &[u8], line, quoted: &mut Option<QuotedRows>| self.careful_row(row, line, quoted, ints);
        self.format.walk(text, first_line, counts, |start| self.fast_row(text, start, lo, hi), careful)
    }

    /// The count of a row the fast path left, read cell by cell; out of line, so that the
    /// loop around the fast path stays small.
    #[inline(never)]
    fn careful_row(
        &self,
        row: &[u8],
        line: u64,
        quoted: &mut Option<QuotedRows>,
        ints: Option<(i64, i64)>,
    ) -> Result<u32, TextFault> {
        let mut hits = 0u32;
        self.format.visit_row(row, line, quoted, |cell| {
            hits += u32::from(self.cell_in_range(cell, ints)?);
            Ok(())
        })?;
        Ok(hits)
    }

    /// The common row, in one pass and no allocation: `cols` plain integers with one
    /// separator between them (after `skip_cols` cells holding no quote), ended by `\n` (or
    /// `\r\n`, or the end of the text). Gives the row's count and where the next line
    /// starts; anything else (blanks in a delimited cell, quotes, floats, a bad cell, a
    /// blank line, the wrong width) is left to the careful path, which also finds the
    /// fault's column.
    #[inline]
    fn fast_row(&self, text: &[u8], start: usize, lo: i64, hi: i64) -> Option<(u32, usize)> {
        let (blanks, separator) = match self.format.separator {
            Separator::Char(delimiter) => (false, delimiter),
            Separator::Blanks => (true, b' '),
        };
        let mut at = start;
        if self.format.skip_cols > 0 {
            at = self.skip_plain_cells(text, at)?;
        }
        let mut hits = 0u32;
        let mut cells = 0u64;
        let cols = self.format.cols;
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
                None => return (cells == cols).then_some((hits, at)),
                Some(b'\n') => return (cells == cols).then_some((hits, at + 1)),
                Some(b'\r') if text.get(at + 1) == Some(&b'\n') => return (cells == cols).then_some((hits, at + 2)),
                Some(&byte) if byte == separator && !blanks => at += 1,
                Some(_) if blanks && at > after => {}
                Some(_) => return None,
            }
            if cells == cols {
                return None;
            }
        }
    }

    /// Where the row at `at` goes on after its `skip_cols` leading cells, if they hold no
    /// quote and the row is delimited.
    // Out of line: rows with no cell to skip keep the fast loop as tight as it was.
    #[inline(never)]
    fn skip_plain_cells(&self, text: &[u8], mut at: usize) -> Option<usize> {
        let Separator::Char(delimiter) = self.format.separator else { return None };
        for _ in 0..self.format.skip_cols {
            loop {
                match text.get(at) {
                    Some(&byte) if byte == delimiter => break,
                    None | Some(b'\n' | b'"') => return None,
                    Some(_) => at += 1,
                }
            }
            at += 1;
        }
        Some(at)
    }

    /// Whether the value in `cell` (trimmed, not empty) lies in the range.
    fn cell_in_range(&self, cell: &[u8], ints: Option<(i64, i64)>) -> Result<bool, CellError> {
        match parse_wide(cell) {
            Ok(value) => Ok(match i64::try_from(value) {
                Ok(value) => ints.is_some_and(|(lo, hi)| lo <= value && value <= hi),
                // Past `i64` (a `uint64` value): compared with the range exactly.
                Err(_) => self.range.contains_int(value),
            }),
            Err(error) if self.format.kind == ValueKind::Int => Err(error),
            Err(_) => parse_f64(cell).map(|value| self.range.contains_f64(value)),
        }
    }

    /// The count of one row (without its `\n`) the way a careful, slow reader sees it:
    /// `csv-core` cuts every delimited row, quoted or not, and the standard library parses
    /// the numbers; for checking [`CountText`] against an independent count. `None` for a
    /// row it cannot read.
    pub fn reference_count(&self, line: &[u8]) -> Option<u32> {
        let (mut hits, mut seen, mut readable) = (0, 0, true);
        visit_cells(line, self.format.separator, |cell| {
            seen += 1;
            // A missing value (the fast count accepts it in float files only): in no range.
            if seen <= self.format.skip_cols || cell.is_empty() {
                return;
            }
            let inside = match std::str::from_utf8(cell).ok() {
                Some(text) => match text.parse::<i128>() {
                    Ok(value) if (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&value) => {
                        Some(self.range.contains_int(value))
                    }
                    _ => text.parse::<f64>().ok().map(|value| self.range.contains_f64(value)),
                },
                None => None,
            };
            match inside {
                Some(inside) => hits += u32::from(inside),
                None => readable = false,
            }
        })?;
        readable.then_some(hits)
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

/// Bytes that separate values in files from elsewhere, named when a line reads as one cell.
pub const SEPARATOR_LOOKING: [u8; 5] = [b';', b'|', b':', b'\t', b','];

/// A bad cell's message; a line that reads as one cell holding a separator-looking byte
/// suggests `--delimiter`.
fn describe(error: CellError, kind: ValueKind, cell: &[u8], separator: Separator, row: &[u8]) -> String {
    let quoted = quotable(cell);
    let not_number = match error {
        CellError::NotInteger if kind == ValueKind::Int && parse_f64(cell).is_ok() => {
            return format!("not an integer: {quoted:?}");
        }
        CellError::NotInteger | CellError::NotNumber => format!("not a number: {quoted:?}"),
        CellError::OutOfRange => return format!("value out of range for a 64-bit integer: {quoted:?}"),
    };
    let one_cell = match separator {
        Separator::Char(delimiter) => !row.contains(&delimiter),
        Separator::Blanks => !trim(row).iter().any(|&byte| is_blank(byte)),
    };
    let hint = SEPARATOR_LOOKING
        .into_iter()
        .filter(|&byte| separator != Separator::Char(byte))
        .find(|byte| one_cell && cell.contains(byte));
    match hint {
        Some(b'\t') => format!("{not_number} (the line is one cell: if tabs separate the values, use --delimiter tab)"),
        Some(byte) => {
            let byte = char::from(byte);
            format!("{not_number} (the line is one cell: if '{byte}' separates the values, use --delimiter '{byte}')")
        }
        None => not_number,
    }
}

#[cfg(test)]
mod tests;
