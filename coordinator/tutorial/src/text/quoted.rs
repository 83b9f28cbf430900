//! Cells in quotes: `csv-core` reads a row that holds a quote, and is the careful reader
//! the fast one is checked against.

use super::{Separator, is_blank};

/// `csv-core`'s reader for the rows that hold a quote, made when a piece first has one.
pub(super) struct QuotedRows {
    reader: csv_core::Reader,
    /// Whether the reader has been given input: until then it would take a line's first
    /// three bytes for a byte-order mark and drop them, which only the stream's start may have.
    primed: bool,
    /// The unquoted text of the cell being read.
    cell: Vec<u8>,
}

impl QuotedRows {
    pub(super) fn new(delimiter: u8) -> Self {
        let reader =
            csv_core::ReaderBuilder::new().delimiter(delimiter).terminator(csv_core::Terminator::Any(b'\n')).build();
        Self { reader, primed: false, cell: vec![0; 64] }
    }

    /// Calls `each(start, cell)` for every cell of `row` (without its line end): `start` is
    /// the 0-based byte where the cell's text begins, `cell` its text unquoted and trimmed.
    /// A quote still open at the row's end is an error at the cell's start.
    pub(super) fn cells<E>(
        &mut self,
        row: &[u8],
        mut each: impl FnMut(usize, &[u8]) -> Result<(), E>,
        spans_lines: impl Fn(usize) -> E,
    ) -> Result<(), E> {
        use csv_core::ReadFieldResult;
        let mut at = 0;
        loop {
            let start = at;
            let mut written = 0;
            let record_end = loop {
                if self.cell.len() - written < 64 {
                    self.cell.resize(self.cell.len() * 2, 0);
                }
                // The row is followed by the newline it had, so that the record ends there and
                // the reader is ready for the next row; a quote left open swallows it.
                let feeding_end = at >= row.len();
                let mut input = if feeding_end { &b"\n"[..] } else { &row[at..] };
                if !self.primed {
                    input = &input[..1];
                    self.primed = true;
                }
                let (result, read, wrote) = self.reader.read_field(input, &mut self.cell[written..]);
                written += wrote;
                if !feeding_end {
                    at += read;
                }
                match result {
                    ReadFieldResult::Field { record_end } => break record_end,
                    ReadFieldResult::End => break true,
                    ReadFieldResult::InputEmpty if feeding_end => {
                        self.reader.reset();
                        self.primed = false;
                        return Err(spans_lines(start));
                    }
                    ReadFieldResult::InputEmpty | ReadFieldResult::OutputFull => {}
                }
            };
            let leading = row[start..at].iter().take_while(|&&byte| is_blank(byte)).count();
            each(start + leading.min(row.len() - start), trim(&self.cell[..written]))?;
            if record_end {
                return Ok(());
            }
        }
    }
}

/// A cell without the spaces and tabs around it.
pub(super) fn trim(cell: &[u8]) -> &[u8] {
    let leading = cell.iter().take_while(|&&byte| is_blank(byte)).count();
    let trailing = cell[leading..].iter().rev().take_while(|&&byte| is_blank(byte)).count();
    &cell[leading..cell.len() - trailing]
}

/// A blank-separated cell without the quotes around it, if it has them (`"8"`).
pub(super) fn unquote_blank_cell(cell: &[u8]) -> &[u8] {
    match cell {
        [b'"', inner @ .., b'"'] => inner,
        _ => cell,
    }
}

/// Calls `each` with every cell of a line (without its `\n`), unquoted and trimmed, the
/// careful way, apart from the workers' row reader: `csv-core` cuts a delimited line that
/// holds a quote, a plain split the others. Gives the
/// number of cells, or `None` if a quote is left open at the line's end. What the
/// coordinator reads the first lines with, and the reference [`CountText`] is checked
/// against.
///
/// [`CountText`]: super::CountText
pub fn visit_cells(line: &[u8], separator: Separator, mut each: impl FnMut(&[u8])) -> Option<usize> {
    use csv_core::ReadFieldResult;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Separator::Char(delimiter) = separator else {
        let mut cells = 0;
        for cell in line.split(|&byte| is_blank(byte)).filter(|cell| !cell.is_empty()) {
            each(unquote_blank_cell(cell));
            cells += 1;
        }
        return Some(cells);
    };
    if !line.contains(&b'"') {
        // Without a quote, csv-core cuts at every delimiter, and so does this, far faster
        // than a reader built for each line.
        let mut cells = 0;
        for cell in line.split(|&byte| byte == delimiter) {
            each(trim(cell));
            cells += 1;
        }
        return Some(cells);
    }
    let mut reader =
        csv_core::ReaderBuilder::new().delimiter(delimiter).terminator(csv_core::Terminator::Any(b'\n')).build();
    let (mut at, mut cells, mut cell, mut written) = (0, 0, vec![0u8; 64], 0);
    loop {
        if cell.len() - written < 64 {
            cell.resize(cell.len() * 2, 0);
        }
        // The line, then its newline. The first byte goes alone: a reader that has read
        // nothing drops a byte-order mark, and a line that is not the stream's first keeps it.
        let newline = at >= line.len();
        let input = match at {
            _ if newline => &b"\n"[..],
            0 => &line[..1],
            _ => &line[at..],
        };
        let (result, read, wrote) = reader.read_field(input, &mut cell[written..]);
        at += read;
        written += wrote;
        match result {
            ReadFieldResult::Field { record_end } => {
                each(trim(&cell[..written]));
                cells += 1;
                written = 0;
                if record_end {
                    return Some(cells);
                }
            }
            // The newline was read into a cell: a quote is open.
            ReadFieldResult::InputEmpty if newline => return None,
            ReadFieldResult::InputEmpty | ReadFieldResult::OutputFull => {}
            ReadFieldResult::End => return None,
        }
    }
}

/// The cells of a line, collected: [`visit_cells`] for a line known to be short.
pub fn cells_of(line: &[u8], separator: Separator) -> Option<Vec<Vec<u8>>> {
    let mut cells = Vec::new();
    visit_cells(line, separator, |cell| cells.push(cell.to_vec()))?;
    Some(cells)
}
