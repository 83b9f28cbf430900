//! Cutting a CSV stream into pieces of whole lines for the workers to parse.
//!
//! The coordinator reads large blocks, cuts each at its last newline, and counts the
//! lines and rows of the piece (a fast, vectorized scan) so that every piece carries its
//! first line number and every row its index; it never parses a cell beyond the first
//! lines, which tell the separator, the header, the width and the kind of values.

use std::io::Read;

use corepool_worker::text::{Separator, TextPiece, ValueKind, cells_of, is_blank_line, is_integer, is_number};

use super::{InputError, source::DataError};

/// Whether the first non-blank line is a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeaderRule {
    /// A header if a cell is neither a number nor empty.
    #[default]
    Detect,
    /// Always a header (`--header`).
    Yes,
    /// Never a header (`--no-header`): a bad first line is reported as such.
    No,
}

/// How to read a CSV stream.
#[derive(Debug, Clone, Copy)]
pub struct CsvOptions {
    /// The header rule.
    pub header: HeaderRule,
    /// What values are read as; `None`: integers if the first row holds only integers.
    pub kind: Option<ValueKind>,
    /// About how many bytes go in a piece (it is cut at the last newline before).
    pub piece_bytes: usize,
    /// Rows per piece instead, when given (`--chunk-size`).
    pub piece_rows: Option<usize>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self { header: HeaderRule::Detect, kind: None, piece_bytes: 4 << 20, piece_rows: None }
    }
}

/// What the first lines of a CSV stream say about all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvLayout {
    /// How cells are separated.
    pub separator: Separator,
    /// How values are read.
    pub kind: ValueKind,
    /// Values per row.
    pub cols: u64,
    /// The header's line number, if there is one.
    pub header_line: Option<u64>,
    /// The first data row's line number.
    pub first_data_line: u64,
}

/// Longest line accepted: a piece must fit in one frame.
pub const MAX_LINE_BYTES: usize = 256 << 20;

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
    error: Option<DataError>,
    /// Rows handed out so far.
    rows: u64,
}

/// Reads the first lines of `reader` and returns what they say, and the pieces of the
/// whole stream (the header left out). `name` is the input's name for errors.
pub fn open_csv<R: Read>(reader: R, name: &str, options: CsvOptions) -> Result<(CsvLayout, CsvPieces<R>), DataError> {
    let options = CsvOptions { piece_bytes: options.piece_bytes.clamp(1, MAX_LINE_BYTES), ..options };
    let mut pieces = CsvPieces {
        reader,
        name: name.to_owned(),
        buffer: Vec::new(),
        next_line: 1,
        eof: false,
        options,
        error: None,
        rows: 0,
    };
    // The first non-blank line, and the next one after it in case the first is a header.
    let mut found: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
    let mut scanned = 0;
    let mut line = 1;
    while found.len() < 2 {
        let Some(at) = pieces.buffer[scanned..].iter().position(|&b| b == b'\n') else {
            if pieces.eof {
                if scanned < pieces.buffer.len() && !is_blank_line(&pieces.buffer[scanned..]) {
                    found.push((line, scanned..pieces.buffer.len()));
                }
                break;
            }
            if pieces.buffer.len() - scanned > MAX_LINE_BYTES {
                return Err(DataError::LineTooLong { file: pieces.name, line, limit: MAX_LINE_BYTES });
            }
            pieces.read_more(64 << 10)?;
            continue;
        };
        let end = scanned + at;
        if !is_blank_line(&pieces.buffer[scanned..end]) {
            found.push((line, scanned..end));
        }
        scanned = end + 1;
        line += 1;
    }
    let Some((first_line, first)) = found.first().cloned() else {
        return Err(InputError::Empty { file: pieces.name }.into());
    };
    let separator = Separator::of_line(&pieces.buffer[first.clone()]);
    let header = match options.header {
        HeaderRule::Yes => true,
        HeaderRule::No => false,
        HeaderRule::Detect => looks_like_header(&cells_of(&pieces.buffer[first.clone()], separator)),
    };
    let data = if header { found.get(1).cloned() } else { Some((first_line, first.clone())) };
    let Some((data_line, data)) = data else {
        return Err(DataError::HeaderOnly { file: pieces.name, line: first_line });
    };
    let cells = cells_of(&pieces.buffer[data], separator);
    let cols = cells.len() as u64;
    // Floats if any cell is a number that is not an integer, or empty (a missing value, as
    // pandas writes NaN); a cell that is no number at all decides nothing (the worker
    // reports it).
    let floats = cells.iter().any(|cell| cell.is_empty() || (is_number(cell) && !is_integer(cell)));
    let kind = options.kind.unwrap_or(if floats { ValueKind::Float } else { ValueKind::Int });
    if header {
        // The header and the blank lines before it are not handed out.
        let after_header = pieces.buffer[first.end..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(pieces.buffer.len(), |at| first.end + at + 1);
        pieces.buffer.drain(..after_header);
        pieces.next_line = first_line + 1;
    }
    let layout =
        CsvLayout { separator, kind, cols, header_line: header.then_some(first_line), first_data_line: data_line };
    Ok((layout, pieces))
}

/// Whether a first line is a header: a cell is neither a number nor empty (an empty cell is
/// a missing value, not a name), or the cells read `0,1,2,...`, the column names pandas
/// gives a frame without names (`pandas.DataFrame(array).to_csv(path, index=False)`).
fn looks_like_header(cells: &[&[u8]]) -> bool {
    let named = cells.iter().any(|cell| !cell.is_empty() && !is_number(cell));
    let pandas_names = cells.len() >= 2 && cells.iter().enumerate().all(|(i, cell)| *cell == i.to_string().as_bytes());
    named || pandas_names
}

impl<R: Read> CsvPieces<R> {
    /// The error that ended the iteration early, if any.
    pub fn take_error(&mut self) -> Option<DataError> {
        self.error.take()
    }

    /// Rows handed out so far.
    pub fn rows(&self) -> u64 {
        self.rows
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
        loop {
            if let Some(rows) = self.options.piece_rows {
                if let Some(end) = end_of_rows(&self.buffer, rows) {
                    return Ok(Some(end));
                }
            } else if self.buffer.len() >= self.options.piece_bytes {
                let window = &self.buffer[..self.options.piece_bytes];
                if let Some(at) = window.iter().rposition(|&b| b == b'\n') {
                    return Ok(Some(at + 1));
                }
                // A line longer than a piece: the piece grows to its end.
                if let Some(at) = self.buffer[self.options.piece_bytes..].iter().position(|&b| b == b'\n') {
                    return Ok(Some(self.options.piece_bytes + at + 1));
                }
            }
            if self.eof {
                return Ok((!self.buffer.is_empty()).then_some(self.buffer.len()));
            }
            if self.buffer.len() > MAX_LINE_BYTES + self.options.piece_bytes {
                return Err(DataError::LineTooLong {
                    file: self.name.clone(),
                    line: self.next_line,
                    limit: MAX_LINE_BYTES,
                });
            }
            let want = self.options.piece_bytes.saturating_sub(self.buffer.len()).max(64 << 10);
            self.read_more(want)?;
        }
    }

    fn next_piece(&mut self) -> Result<Option<TextPiece>, DataError> {
        loop {
            let Some(end) = self.cut()? else { return Ok(None) };
            // The rest (a partial line) moves to a fresh buffer; the piece keeps the old
            // one, so the bulk of the bytes is never copied here.
            let mut rest = Vec::with_capacity(self.options.piece_bytes.max(self.buffer.len() - end) + (64 << 10));
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
            self.error = Some(error);
            None
        })
    }
}

/// Where the `rows`-th non-blank line of `text` ends (after its newline), if the text
/// holds that many whole lines.
fn end_of_rows(text: &[u8], rows: usize) -> Option<usize> {
    let mut seen = 0;
    let mut start = 0;
    while let Some(at) = text[start..].iter().position(|&b| b == b'\n') {
        let end = start + at;
        seen += usize::from(!is_blank_line(&text[start..end]));
        start = end + 1;
        if seen == rows.max(1) {
            return Some(start);
        }
    }
    None
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
mod tests {
    use super::*;

    fn open(text: &str, options: CsvOptions) -> Result<(CsvLayout, Vec<TextPiece>), String> {
        let (layout, pieces) = open_csv(text.as_bytes(), "in.csv", options).map_err(|e| e.to_string())?;
        Ok((layout, pieces.collect()))
    }

    fn small(bytes: usize) -> CsvOptions {
        CsvOptions { piece_bytes: bytes, ..CsvOptions::default() }
    }

    #[test]
    fn lines_and_rows() {
        assert_eq!(count_lines_and_rows(b"1,2\n3,4\n"), (2, 2));
        assert_eq!(count_lines_and_rows(b"1,2\n3,4"), (2, 2));
        assert_eq!(count_lines_and_rows(b"\n1\n \r\n\t\n2\n \n"), (6, 2));
        assert_eq!(count_lines_and_rows(b" 1\n"), (1, 1));
        assert_eq!(count_lines_and_rows(b"1\n  "), (2, 1));
    }

    #[test]
    fn detects_header_separator_kind_and_width() {
        let (layout, pieces) = open("\na,b,c\n1,2,3\n4,5,6\n", CsvOptions::default()).unwrap();
        assert_eq!(layout.header_line, Some(2));
        assert_eq!(
            (layout.separator, layout.kind, layout.cols, layout.first_data_line),
            (Separator::Comma, ValueKind::Int, 3, 3)
        );
        assert_eq!(pieces, [TextPiece { first_line: 3, rows: 2, text: b"1,2,3\n4,5,6\n".to_vec() }]);

        let (layout, _) = open("1\t2.5\n3\t4\n", CsvOptions::default()).unwrap();
        assert_eq!(
            (layout.separator, layout.kind, layout.cols, layout.header_line),
            (Separator::Blanks, ValueKind::Float, 2, None)
        );

        let (layout, pieces) =
            open("1,2\n3,4\n", CsvOptions { header: HeaderRule::Yes, ..CsvOptions::default() }).unwrap();
        assert_eq!((layout.header_line, pieces[0].first_line, pieces[0].rows), (Some(1), 2, 1));
    }

    #[test]
    fn pandas_default_names_are_a_header() {
        let (layout, _) = open("0,1,2\n1.5,2,3\n", CsvOptions::default()).unwrap();
        assert_eq!((layout.header_line, layout.kind), (Some(1), ValueKind::Float));
        let (layout, _) = open("0,2,1\n1,2,3\n", CsvOptions::default()).unwrap();
        assert_eq!(layout.header_line, None);
        let (layout, _) = open("1,,3\n4,5,6\n", CsvOptions::default()).unwrap();
        assert_eq!((layout.header_line, layout.kind), (None, ValueKind::Float));
    }

    #[test]
    fn empty_and_header_only() {
        assert_eq!(open(" \n\n", CsvOptions::default()).unwrap_err(), "in.csv: no rows: the file is empty");
        assert_eq!(open("x,y\n\n", CsvOptions::default()).unwrap_err(), "in.csv: no rows: only a header (line 1)");
    }

    #[test]
    fn pieces_are_whole_lines_numbered_in_the_file() {
        let text: String = (0..100).map(|i| format!("{i},{}\n", i * 2)).collect::<String>() + "7,7";
        let (_, pieces) = open(&text, small(64)).unwrap();
        assert!(pieces.len() > 5);
        let joined: Vec<u8> = pieces.iter().flat_map(|p| p.text.clone()).collect();
        assert_eq!(joined, text.as_bytes());
        let mut line = 1;
        for piece in &pieces {
            assert_eq!(piece.first_line, line);
            assert!(piece.text.len() <= 64 || piece.text.iter().filter(|&&b| b == b'\n').count() == 1);
            line += count_lines_and_rows(&piece.text).0;
        }
        assert_eq!(pieces.iter().map(|p| p.rows).sum::<u64>(), 101);
    }

    #[test]
    fn fixed_rows_per_piece_and_long_lines() {
        let (_, pieces) = open("1\n\n2\n3\n4\n", CsvOptions { piece_rows: Some(2), ..CsvOptions::default() }).unwrap();
        assert_eq!(pieces.iter().map(|p| (p.first_line, p.rows)).collect::<Vec<_>>(), [(1, 2), (4, 2)]);
        let long = format!("1\n{}\n2\n", "3,".repeat(100) + "3");
        let (_, pieces) = open(&long, small(8)).unwrap();
        assert_eq!(pieces.iter().map(|p| p.rows).collect::<Vec<_>>(), [1, 1, 1]);
    }
}
