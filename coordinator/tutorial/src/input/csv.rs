//! Cutting a CSV stream into pieces of whole lines for the workers to parse.
//!
//! The coordinator reads large blocks, cuts each at its last newline, and counts the
//! lines and rows of the piece (a fast, vectorized scan) so that every piece carries its
//! first line number and every row its index; it never parses a cell beyond the first
//! lines, which tell the separator, the header, the width and the kind of values. Every
//! byte is searched for a newline once, however long its line: a search resumes where it
//! stopped when more of the stream comes in.

use std::io::Read;

use crate::{
    text::{
        CountText, SEPARATOR_LOOKING, Separator, TextFormat, TextPiece, ValueKind, is_blank_line, is_integer,
        is_number, visit_cells,
    },
    values::ValueRange,
};

use super::{InputError, source::DataError};

/// Whether the first non-blank line is a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderRule {
    /// A header if a counted cell is neither a number nor empty, or a skipped cell is
    /// empty (the blank name pandas writes for its index); a line of numbers is data.
    #[default]
    Detect,
    /// Always a header (`--header`).
    Yes,
    /// Never a header (`--no-header`): a bad first line is reported as such.
    No,
}

/// Longest line read unless `--max-line-bytes` says otherwise: room for a row of about a
/// million values, while the few pieces in flight per worker (each holds at least a line)
/// keep the coordinator's memory bounded.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 << 20;

/// The most `--max-line-bytes` may allow: a piece, a line and more, must fit in a frame.
pub const MAX_LINE_BYTES_LIMIT: usize = 512 << 20;

/// How to read a CSV stream.
#[derive(Debug, Clone, Copy)]
pub struct CsvOptions {
    /// The header rule.
    pub header: HeaderRule,
    /// What values are read as; `None`: integers if the first row holds only integers.
    pub kind: Option<ValueKind>,
    /// How cells are separated; `None`: by commas if the first line has one, else by blanks.
    pub separator: Option<Separator>,
    /// Leading cells of every row to skip unread (an index column).
    pub skip_cols: u64,
    /// Longest line accepted, in bytes without its newline (at most [`MAX_LINE_BYTES_LIMIT`]).
    pub max_line_bytes: usize,
    /// About how many bytes go in a piece (it is cut at the last newline before).
    pub piece_bytes: usize,
    /// Rows per piece instead, when given (`--chunk-size`).
    pub piece_rows: Option<usize>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header: HeaderRule::Detect,
            kind: None,
            separator: None,
            skip_cols: 0,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            piece_bytes: 4 << 20,
            piece_rows: None,
        }
    }
}

/// What the first lines of a CSV stream say about all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvLayout {
    /// How cells are separated.
    pub separator: Separator,
    /// How values are read.
    pub kind: ValueKind,
    /// Values per row (skipped cells not included).
    pub cols: u64,
    /// Leading cells of every row that are skipped.
    pub skip_cols: u64,
    /// The header's line number, if a line was skipped as one.
    pub header_line: Option<u64>,
    /// The first data row's line number.
    pub first_data_line: u64,
}

impl CsvLayout {
    /// How the workers read the rows.
    pub fn format(&self) -> TextFormat {
        TextFormat {
            separator: self.separator,
            kind: self.kind,
            cols: self.cols,
            skip_cols: self.skip_cols,
            first_data_line: self.first_data_line,
        }
    }

    /// The task that counts the rows' values in `range`.
    pub fn count_task(&self, range: ValueRange) -> CountText {
        CountText { range, format: self.format() }
    }
}

/// The pieces of a CSV stream, in order. An I/O error ends the iteration and is kept for
/// [`take_error`](Self::take_error).
pub struct CsvPieces<R: Read> {
    reader: R,
    name: String,
    /// Bytes read and not yet handed out: the start of a line.
    buffer: Vec<u8>,
    /// Line number of the buffer's first line.
    next_line: u64,
    eof: bool,
    options: CsvOptions,
    /// Boxed: an error is rare, and the pieces are moved around.
    error: Option<Box<DataError>>,
    /// Rows handed out so far.
    rows: u64,
    /// Where the search for the next piece's end goes on: bytes of the buffer before it
    /// are searched already.
    searched: usize,
    /// With `piece_rows`: rows and lines found in the buffer so far, and where the first
    /// line not yet ended starts.
    found_rows: usize,
    found_lines: u64,
    line_start: usize,
}

/// A stream's first bytes: a UTF-8 byte-order mark, which is no part of the first cell.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// Bytes read at a time while the first lines or a long line are searched.
const BLOCK: usize = 64 << 10;

/// Reads the first lines of `reader` and returns what they say, and the pieces of the
/// whole stream (the header left out). `name` is the input's name for errors.
pub fn open_csv<R: Read>(reader: R, name: &str, options: CsvOptions) -> Result<(CsvLayout, CsvPieces<R>), DataError> {
    let max_line_bytes = options.max_line_bytes.clamp(1, MAX_LINE_BYTES_LIMIT);
    // A piece no larger than the longest line: then only a piece grown past its size to
    // end its one line can hold a line over the limit, and that line is measured.
    let options = CsvOptions { piece_bytes: options.piece_bytes.clamp(1, max_line_bytes), max_line_bytes, ..options };
    let mut pieces = CsvPieces {
        reader,
        name: name.to_owned(),
        buffer: Vec::new(),
        next_line: 1,
        eof: false,
        options,
        error: None,
        rows: 0,
        searched: 0,
        found_rows: 0,
        found_lines: 0,
        line_start: 0,
    };
    pieces.read_more(BLOCK)?;
    if pieces.buffer.starts_with(BOM) {
        pieces.buffer.drain(..BOM.len());
    }
    // Binary data (`/dev/zero`, an image) fails here rather than after a long search for
    // the end of a line that never comes.
    if let Some(at) = memchr::memchr(0, &pieces.buffer) {
        let line = 1 + memchr::memchr_iter(b'\n', &pieces.buffer[..at]).count() as u64;
        return Err(DataError::Binary { file: pieces.name, line });
    }
    let found = pieces.first_lines()?;
    let Some((first_line, first)) = found.first().cloned() else {
        return Err(InputError::Empty { file: pieces.name }.into());
    };
    let separator = options.separator.unwrap_or_else(|| Separator::of_line(&pieces.buffer[first.clone()]));
    let skip = options.skip_cols as usize;
    let unclosed = |line| DataError::UnclosedQuote { file: name.to_owned(), line };
    let first_cells =
        LineSummary::of(&pieces.buffer[first.clone()], separator, skip).ok_or_else(|| unclosed(first_line))?;
    let header = match options.header {
        HeaderRule::Yes => true,
        HeaderRule::No => false,
        // A lone line is a header only if it is all names: otherwise it is data whose bad
        // cell the worker names (`0x10,4,5`, or `1;5;9` read as one cell).
        HeaderRule::Detect => first_cells.looks_like_header() && (found.len() > 1 || first_cells.all_names()),
    };
    let data = if header { found.get(1).cloned() } else { Some((first_line, first.clone())) };
    let Some((data_line, data)) = data else {
        return Err(DataError::HeaderOnly { file: pieces.name, line: first_line });
    };
    let cells = LineSummary::of(&pieces.buffer[data], separator, skip).ok_or_else(|| unclosed(data_line))?;
    if cells.cells <= skip {
        return Err(DataError::NoValuesLeft { file: pieces.name, line: data_line, cells: cells.cells, skip });
    }
    let kind = options.kind.unwrap_or(if cells.floats { ValueKind::Float } else { ValueKind::Int });
    if header {
        // The header and the blank lines before it are not handed out.
        let after_header =
            memchr::memchr(b'\n', &pieces.buffer[first.end..]).map_or(pieces.buffer.len(), |at| first.end + at + 1);
        pieces.buffer.drain(..after_header);
        pieces.next_line = first_line + 1;
    }
    let layout = CsvLayout {
        separator,
        kind,
        cols: (cells.cells - skip) as u64,
        skip_cols: options.skip_cols,
        header_line: header.then_some(first_line),
        first_data_line: data_line,
    };
    Ok((layout, pieces))
}

/// What the first lines' cells say, read in one pass without holding them (a first line
/// may hold millions of cells).
#[derive(Debug, Default)]
struct LineSummary {
    /// Cells on the line.
    cells: usize,
    /// A counted cell is neither a number nor empty.
    named: bool,
    /// A skipped cell is empty (pandas leaves its index's name blank).
    skipped_empty: bool,
    /// A counted cell is a number, or starts as one does (`0x10`).
    numeric_looking: bool,
    /// A counted cell is a number that is not an integer, or empty (a missing value, as
    /// pandas writes NaN); a cell that is no number at all decides nothing.
    floats: bool,
    /// The only cell holds a byte another separator would cut at.
    cut_by_another_separator: bool,
}

impl LineSummary {
    /// The summary of `line`, `None` if a quote is left open on it.
    fn of(line: &[u8], separator: Separator, skip: usize) -> Option<Self> {
        let mut summary = LineSummary::default();
        let cells = visit_cells(line, separator, |cell| {
            summary.cells += 1;
            if summary.cells <= skip {
                summary.skipped_empty |= cell.is_empty();
                return;
            }
            let number = is_number(cell);
            summary.named |= !cell.is_empty() && !number;
            summary.numeric_looking |= number || cell.first().is_some_and(|b| b.is_ascii_digit() || b"+-.".contains(b));
            summary.floats |= cell.is_empty() || (number && !is_integer(cell));
            summary.cut_by_another_separator = summary.cells == 1 && cell.iter().any(|b| SEPARATOR_LOOKING.contains(b));
        })?;
        summary.cut_by_another_separator &= cells == 1;
        Some(summary)
    }

    /// Whether the line is a header: a counted cell is neither a number nor empty (an empty
    /// cell is a missing value, not a name), or a skipped cell is empty. A line of numbers
    /// is data, always.
    fn looks_like_header(&self) -> bool {
        self.named || self.skipped_empty
    }

    /// Whether the counted cells are all names (none is a number, or starts as one does),
    /// and the line is not one cell that another separator would cut: a header with no data
    /// under it, rather than a bad row.
    fn all_names(&self) -> bool {
        !self.cut_by_another_separator && !self.numeric_looking
    }
}

impl<R: Read> CsvPieces<R> {
    /// The error that ended the iteration early, if any.
    pub fn take_error(&mut self) -> Option<DataError> {
        self.error.take().map(|error| *error)
    }

    /// Rows handed out so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The first two non-blank lines (line number and place in the buffer), or fewer if
    /// the stream has fewer.
    fn first_lines(&mut self) -> Result<Vec<(u64, std::ops::Range<usize>)>, DataError> {
        let mut found = Vec::new();
        let (mut line, mut line_start, mut searched) = (1, 0, 0);
        let limit = self.options.max_line_bytes;
        while found.len() < 2 {
            let end = match memchr::memchr(b'\n', &self.buffer[searched..]) {
                Some(at) => searched + at,
                None if self.eof => self.buffer.len(),
                None => {
                    if self.buffer.len() - line_start > limit {
                        return Err(DataError::LineTooLong { file: self.name.clone(), line, limit });
                    }
                    searched = self.buffer.len();
                    self.read_more(BLOCK)?;
                    continue;
                }
            };
            let text = &self.buffer[line_start..end];
            if text.len() > limit {
                return Err(DataError::LineTooLong { file: self.name.clone(), line, limit });
            }
            if !is_blank_line(text) {
                found.push((line, line_start..end));
            }
            if end == self.buffer.len() {
                break;
            }
            (line, line_start, searched) = (line + 1, end + 1, end + 1);
        }
        Ok(found)
    }

    /// Reads up to `more` bytes onto the buffer; notes the end of the stream.
    fn read_more(&mut self, more: usize) -> Result<(), DataError> {
        self.buffer.reserve(more);
        let before = self.buffer.len();
        let read = (&mut self.reader).take(more as u64).read_to_end(&mut self.buffer);
        let read = read.map_err(|source| InputError::Read { path: self.name.clone().into(), source })?;
        if read == 0 || self.buffer.len() - before < more {
            self.eof = true;
        }
        Ok(())
    }

    /// Where the next piece ends: after the last newline within the piece size (or
    /// after the `piece_rows`-th row), or at the end of the stream.
    fn cut(&mut self) -> Result<Option<usize>, DataError> {
        let piece_bytes = self.options.piece_bytes;
        loop {
            if let Some(rows) = self.options.piece_rows {
                if let Some(end) = self.end_of_rows(rows.max(1))? {
                    return Ok(Some(end));
                }
            } else if self.buffer.len() >= piece_bytes {
                if self.searched == 0 {
                    if let Some(at) = memchr::memrchr(b'\n', &self.buffer[..piece_bytes]) {
                        return Ok(Some(at + 1));
                    }
                    self.searched = piece_bytes;
                }
                // A line longer than a piece: the piece grows to its end.
                if let Some(at) = memchr::memchr(b'\n', &self.buffer[self.searched..]) {
                    let end = self.searched + at;
                    self.check_line(0, end, self.next_line)?;
                    return Ok(Some(end + 1));
                }
                self.searched = self.buffer.len();
            }
            // The line not yet ended: where it starts is known once a piece's worth is searched.
            let (start, line) = match self.options.piece_rows {
                Some(_) => (Some(self.line_start), self.next_line + self.found_lines),
                None => ((self.searched > 0).then_some(0), self.next_line),
            };
            if let Some(start) = start {
                self.check_line(start, self.buffer.len(), line)?;
            }
            if self.eof {
                return Ok((!self.buffer.is_empty()).then_some(self.buffer.len()));
            }
            let want = piece_bytes.saturating_sub(self.buffer.len()).max(BLOCK);
            self.read_more(want)?;
        }
    }

    /// Where the `rows`-th non-blank line of the buffer ends (after its newline), if the
    /// buffer holds that many whole lines; the search goes on from where it last stopped.
    fn end_of_rows(&mut self, rows: usize) -> Result<Option<usize>, DataError> {
        while let Some(at) = memchr::memchr(b'\n', &self.buffer[self.searched..]) {
            let end = self.searched + at;
            self.check_line(self.line_start, end, self.next_line + self.found_lines)?;
            self.found_rows += usize::from(!is_blank_line(&self.buffer[self.line_start..end]));
            self.found_lines += 1;
            (self.searched, self.line_start) = (end + 1, end + 1);
            if self.found_rows == rows {
                return Ok(Some(end + 1));
            }
        }
        self.searched = self.buffer.len();
        Ok(None)
    }

    /// Fails if the line at `start..end` of the buffer (its newline not included), line
    /// number `line`, is over the limit.
    fn check_line(&self, start: usize, end: usize, line: u64) -> Result<(), DataError> {
        let limit = self.options.max_line_bytes;
        if end - start > limit {
            return Err(DataError::LineTooLong { file: self.name.clone(), line, limit });
        }
        Ok(())
    }

    fn next_piece(&mut self) -> Result<Option<TextPiece>, DataError> {
        loop {
            let Some(end) = self.cut()? else { return Ok(None) };
            (self.searched, self.found_rows, self.found_lines, self.line_start) = (0, 0, 0, 0);
            // The rest (a partial line) moves to a fresh buffer; the piece keeps the old
            // one, so the bulk of the bytes is never copied here.
            let mut rest = Vec::with_capacity(self.options.piece_bytes.max(self.buffer.len() - end) + BLOCK);
            rest.extend_from_slice(&self.buffer[end..]);
            self.buffer.truncate(end);
            let text = std::mem::replace(&mut self.buffer, rest);
            let (lines, rows) = count_lines_and_rows(&text);
            let first_line = self.next_line;
            self.next_line += lines;
            if rows > 0 {
                self.rows += rows;
                return Ok(Some(TextPiece { first_line, rows, text }));
            }
        }
    }
}

impl<R: Read> Iterator for CsvPieces<R> {
    type Item = TextPiece;

    fn next(&mut self) -> Option<TextPiece> {
        if self.error.is_some() {
            return None;
        }
        self.next_piece().unwrap_or_else(|error| {
            self.error = Some(Box::new(error));
            None
        })
    }
}

fn starts_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// Lines in `text` (a last line without a newline counts) and rows (non-blank lines).
pub fn count_lines_and_rows(text: &[u8]) -> (u64, u64) {
    if text.is_empty() {
        return (0, 0);
    }
    // Plain byte arithmetic over blocks, which the compiler turns into vector code: the
    // newlines, and whether any line may be blank (starts with a blank or is empty). Only
    // then is each line looked at.
    let mut newlines = 0u64;
    let mut maybe_blank = u8::from(starts_blank(text[0]));
    // Blocks of 255 bytes, so that a count fits in a byte: bytes make the widest vectors.
    for (block, next) in text.chunks(255).zip(text[1..].chunks(255)) {
        let mut found = 0u8;
        let mut flags = 0u8;
        for (&byte, &after) in block.iter().zip(next) {
            let newline = u8::from(byte == b'\n');
            found += newline;
            let blank = u8::from(after == b' ')
                | u8::from(after == b'\t')
                | u8::from(after == b'\r')
                | u8::from(after == b'\n');
            flags |= newline & blank;
        }
        newlines += u64::from(found);
        maybe_blank |= flags;
    }
    // The last byte has no byte after it, so the loop above left it out.
    newlines += u64::from(text[text.len() - 1] == b'\n');
    let lines = newlines + u64::from(text.last() != Some(&b'\n'));
    if maybe_blank == 0 {
        return (lines, lines);
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let rows = body.split(|&b| b == b'\n').filter(|line| !is_blank_line(line)).count() as u64;
    (lines, rows)
}

#[cfg(test)]
mod tests;
