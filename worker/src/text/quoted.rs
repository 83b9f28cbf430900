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

/// The cells of a line (without its `\n`), unquoted and trimmed, the careful way: `csv-core`
/// cuts a delimited line whether it holds a quote or not. `None` if a quote is left open at
/// the line's end. What the coordinator reads the first lines with, and the reference
/// [`CountText`] is checked against.
pub fn cells_of(line: &[u8], separator: Separator) -> Option<Vec<Vec<u8>>> {
    use csv_core::ReadFieldResult;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Separator::Char(delimiter) = separator else {
        return Some(
            line.split(|&byte| is_blank(byte))
                .filter(|cell| !cell.is_empty())
                .map(|cell| unquote_blank_cell(cell).to_vec())
                .collect(),
        );
    };
    let mut reader =
        csv_core::ReaderBuilder::new().delimiter(delimiter).terminator(csv_core::Terminator::Any(b'\n')).build();
    let input = [line, b"\n"].concat();
    // The first byte goes alone: a reader that has read nothing drops a byte-order mark,
    // and a line that is not the stream's first keeps it.
    let (mut at, mut cells, mut cell) = (0, Vec::new(), vec![0u8; input.len() + 1]);
    let mut written = 0;
    loop {
        let end = if at == 0 { 1 } else { input.len() };
        let (result, read, wrote) = reader.read_field(&input[at..end], &mut cell[written..]);
        at += read;
        written += wrote;
        match result {
            ReadFieldResult::Field { record_end } => {
                cells.push(trim(&cell[..written]).to_vec());
                written = 0;
                if record_end {
                    return Some(cells);
                }
            }
            // Input left after the newline only if a quote swallowed it.
            ReadFieldResult::InputEmpty if at >= input.len() => return None,
            ReadFieldResult::InputEmpty | ReadFieldResult::OutputFull => {}
            ReadFieldResult::End => return None,
        }
    }
}
