//! The streamed CSV reader: first lines, pieces, and the rules read back through the workers' parser.

use super::*;
use std::io::Read;

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
        (Separator::COMMA, ValueKind::Int, 3, 3)
    );
    assert_eq!(pieces, [TextPiece { first_line: 3, rows: 2, text: b"1,2,3\n4,5,6\n".to_vec() }]);

    let (layout, _) = open("1\t2.5\n3\t4\n", CsvOptions::default()).unwrap();
    assert_eq!(
        (layout.separator, layout.kind, layout.cols, layout.header_line),
        (Separator::Blanks, ValueKind::Float, 2, None)
    );

    let (layout, pieces) = open("1,2\n3,4\n", CsvOptions { header: HeaderRule::Yes, ..CsvOptions::default() }).unwrap();
    assert_eq!((layout.header_line, pieces[0].first_line, pieces[0].rows), (Some(1), 2, 1));
}

#[test]
fn a_numeric_first_line_is_data() {
    // pandas' names for an unnamed frame read as numbers, and numbers are data.
    let (layout, pieces) = open("0,1,2\n1.5,2,3\n", CsvOptions::default()).unwrap();
    assert_eq!((layout.header_line, layout.kind, pieces[0].rows), (None, ValueKind::Int, 2));
    let (layout, _) = open("-1,-2\n1,2\n", CsvOptions::default()).unwrap();
    assert_eq!(layout.header_line, None);
    let (layout, _) = open("1,,3\n4,5,6\n", CsvOptions::default()).unwrap();
    assert_eq!((layout.header_line, layout.kind), (None, ValueKind::Float));
    // A byte-order mark is dropped: the first line is still numbers, and data.
    let (layout, pieces) = open("\u{feff}0,1\n1,1\n", CsvOptions::default()).unwrap();
    assert_eq!((layout.header_line, pieces[0].text.as_slice()), (None, &b"0,1\n1,1\n"[..]));
    let (layout, _) = open("\u{feff}a,b\n1,1\n", CsvOptions::default()).unwrap();
    assert_eq!(layout.header_line, Some(1));
}

#[test]
fn a_lone_line_with_a_number_is_data_with_a_bad_cell() {
    let (layout, pieces) = open("0x10,4,5\n", CsvOptions::default()).unwrap();
    assert_eq!((layout.header_line, layout.kind, pieces.len()), (None, ValueKind::Int, 1));
    let (layout, _) = open("1;5;9\n", CsvOptions::default()).unwrap();
    assert_eq!((layout.header_line, layout.separator, layout.cols), (None, Separator::Blanks, 1));
    assert_eq!(open("price\n", CsvOptions::default()).unwrap_err(), "in.csv: no rows: only a header (line 1)");
}

#[test]
fn delimiters_quotes_and_skipped_columns() {
    let semicolons = CsvOptions { separator: Some(Separator::Char(b';')), ..CsvOptions::default() };
    let (layout, _) = open("a;b\n1,5;2\n", semicolons).unwrap();
    assert_eq!((layout.header_line, layout.cols, layout.kind), (Some(1), 2, ValueKind::Int));
    let (layout, _) = open("\"a,b\",c\n\"1\",2\n", CsvOptions::default()).unwrap();
    assert_eq!((layout.header_line, layout.cols), (Some(1), 2));
    // pandas' index: its name is an empty cell, its values are skipped unread.
    let index = CsvOptions { skip_cols: 1, ..CsvOptions::default() };
    let (layout, _) = open(",0,1\n0,5,6\n1,7,8\n", index).unwrap();
    assert_eq!((layout.header_line, layout.cols, layout.skip_cols), (Some(1), 2, 1));
    let (layout, _) = open("2020-01-01,5,6\n", index).unwrap();
    assert_eq!((layout.header_line, layout.cols), (None, 2));
    assert_eq!(open("5\n", index).unwrap_err(), "in.csv:1: --skip-cols 1 leaves no values: the line has 1 cell");
    assert_eq!(
        open("1,\"2\n3\",4\n", CsvOptions::default()).unwrap_err(),
        "in.csv:1: a quoted cell spans lines, which corepool does not read"
    );
}

#[test]
fn binary_data_and_long_lines() {
    assert_eq!(
        open("1,2\n3,\u{0}\n", CsvOptions::default()).unwrap_err(),
        "in.csv:2: binary data (a NUL byte), not CSV text"
    );
    let zeros = std::io::repeat(0).take(1 << 30);
    let error = open_csv(zeros, "/dev/zero", CsvOptions::default()).err().unwrap();
    assert_eq!(error.to_string(), "/dev/zero:1: binary data (a NUL byte), not CSV text");
    let limit = CsvOptions { max_line_bytes: 1000, piece_bytes: 100, ..CsvOptions::default() };
    let endless = b"1\n2\n".chain(std::io::repeat(b'7').take(1 << 30));
    let error = open_csv(endless, "in.csv", limit).map(|(_, mut pieces)| {
        pieces.by_ref().for_each(drop);
        pieces.take_error()
    });
    assert_eq!(
        error.unwrap().unwrap().to_string(),
        "in.csv:3: line longer than 1000 bytes (--max-line-bytes raises the limit)"
    );
    let by_rows = CsvOptions { piece_rows: Some(1), ..limit };
    let endless = b"1\n\n2\n".chain(std::io::repeat(b'7').take(1 << 30));
    let (_, mut pieces) = open_csv(endless, "in.csv", by_rows).unwrap();
    assert_eq!(pieces.by_ref().count(), 2);
    assert_eq!(
        pieces.take_error().unwrap().to_string(),
        "in.csv:4: line longer than 1000 bytes (--max-line-bytes raises the limit)"
    );
    // A whole line over the limit among short ones, read in one block, in either mode.
    let short = CsvOptions { max_line_bytes: 10, ..CsvOptions::default() };
    for options in [short, CsvOptions { piece_rows: Some(2), ..short }] {
        let (_, mut pieces) = open_csv(&b"1\n2\n\n12345678901\n3\n"[..], "in.csv", options).unwrap();
        pieces.by_ref().for_each(drop);
        let error = pieces.take_error().unwrap().to_string();
        assert_eq!(error, "in.csv:4: line longer than 10 bytes (--max-line-bytes raises the limit)");
        let (_, pieces) = open_csv(&b"1\n2\n\n123456789\r\n3"[..], "in.csv", options).unwrap();
        assert_eq!(pieces.map(|piece| piece.rows).sum::<u64>(), 4, "the newline is not counted, a CR is");
    }
    let first = std::io::repeat(b'7').take(1 << 30);
    assert_eq!(
        open_csv(first, "in.csv", limit).err().unwrap().to_string(),
        "in.csv:1: line longer than 1000 bytes (--max-line-bytes raises the limit)"
    );
}

#[test]
fn a_long_line_is_cut_whole() {
    // 16 MiB in one line, read 64 KiB at a time: cut whole, by bytes and by rows. (How long
    // it takes is the end-to-end tests' watchdog's to judge, not a clock's in a unit test.)
    let line = 16usize << 20;
    let text = std::io::repeat(b'1').take(line as u64).chain(&b"\n2\n"[..]);
    let options = CsvOptions { max_line_bytes: line, piece_bytes: 256 << 10, ..CsvOptions::default() };
    let (_, pieces) = open_csv(text, "in.csv", options).unwrap();
    let sizes: Vec<usize> = pieces.map(|piece| piece.text.len()).collect();
    assert_eq!(sizes, [line + 1, 2]);
    let by_rows = CsvOptions { piece_rows: Some(1), ..options };
    let text = std::io::repeat(b'1').take(line as u64).chain(&b"\n2\n"[..]);
    let (_, pieces) = open_csv(text, "in.csv", by_rows).unwrap();
    assert_eq!(pieces.map(|piece| piece.rows).collect::<Vec<_>>(), [1, 1]);
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

mod written_and_read_back {
    use super::*;
    use crate::values::Number;
    use proptest::prelude::*;

    /// How a matrix is written, as people and programs write CSV.
    #[derive(Debug, Clone)]
    struct Style {
        /// `None`: runs of spaces (read with the default rules).
        delimiter: Option<u8>,
        /// Whether the delimiter is named (`--delimiter`) rather than detected.
        named: bool,
        /// Cells to quote, by a pattern over their index.
        quote_every: usize,
        crlf: bool,
        bom: bool,
        /// `None`, names (`c0,c1`), or pandas' names (`0,1`) under an index name.
        header: Option<bool>,
        /// An index column first, as pandas writes by default.
        index: bool,
        blank_lines: bool,
        piece_bytes: usize,
    }

    fn style() -> impl Strategy<Value = Style> {
        (
            prop_oneof![Just(Some(b',')), Just(Some(b';')), Just(Some(b'\t')), Just(Some(b'|')), Just(None)],
            any::<bool>(),
            0usize..4,
            (any::<bool>(), any::<bool>(), prop_oneof![Just(None), Just(Some(true)), Just(Some(false))]),
            (any::<bool>(), any::<bool>(), 1usize..200),
        )
            .prop_map(
                |(delimiter, named, quote_every, (crlf, bom, header), (index, blank_lines, piece_bytes))| Style {
                    // Only a comma is found without being named; tabs are blanks then.
                    named: named || !matches!(delimiter, Some(b',') | None),
                    delimiter,
                    quote_every,
                    crlf,
                    bom,
                    header,
                    index,
                    blank_lines,
                    piece_bytes,
                },
            )
    }

    fn matrix() -> impl Strategy<Value = Vec<Vec<i64>>> {
        (1usize..30, 1usize..6).prop_flat_map(|(rows, cols)| {
            // Small values make numeric first lines like `0,1,2` common.
            let value = prop_oneof![0i64..3, -20i64..20, any::<i64>()];
            proptest::collection::vec(proptest::collection::vec(value, cols), rows)
        })
    }

    fn write(matrix: &[Vec<i64>], style: &Style) -> String {
        let separator = style.delimiter.map_or(" ".to_owned(), |d| char::from(d).to_string());
        let newline = if style.crlf { "\r\n" } else { "\n" };
        let mut cell_index = 0;
        let mut cell = |text: String| {
            cell_index += 1;
            let quote = style.delimiter.is_some() && style.quote_every > 0 && cell_index % style.quote_every == 0;
            if quote { format!("\"{text}\"") } else { text }
        };
        let mut lines = Vec::new();
        let cols = matrix[0].len();
        match style.header {
            Some(true) => lines.push((0..cols).map(|c| cell(format!("c{c}"))).collect::<Vec<_>>()),
            Some(false) => lines.push((0..cols).map(|c| cell(c.to_string())).collect()),
            None => {}
        }
        if style.index && style.header.is_some() {
            // pandas leaves the index's name blank, which runs of blanks cannot hold.
            let name = if style.delimiter.is_some() { String::new() } else { "index".to_owned() };
            lines[0].insert(0, name);
        }
        for (r, row) in matrix.iter().enumerate() {
            let mut line: Vec<String> = row.iter().map(|v| cell(v.to_string())).collect();
            if style.index {
                line.insert(0, cell(r.to_string()));
            }
            lines.push(line);
        }
        let joiner = if style.blank_lines { format!("{newline}{newline}") } else { newline.to_owned() };
        let text = lines.iter().map(|line| line.join(&separator)).collect::<Vec<_>>().join(&joiner) + newline;
        if style.bom { format!("\u{feff}{text}") } else { text }
    }

    fn options(style: &Style) -> CsvOptions {
        let header = match style.header {
            // pandas' numeric names are data unless the index's blank name marks them.
            Some(false) if !(style.index && style.delimiter.is_some()) => HeaderRule::Yes,
            _ => HeaderRule::Detect,
        };
        let separator = match style.delimiter {
            Some(d) if style.named => Some(Separator::Char(d)),
            _ => None,
        };
        let skip_cols = u64::from(style.index);
        CsvOptions { header, separator, skip_cols, piece_bytes: style.piece_bytes, ..CsvOptions::default() }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matrices_read_back_as_written(matrix in matrix(), style in style()) {
            let text = write(&matrix, &style);
            let (layout, pieces) = open_csv(text.as_bytes(), "in.csv", options(&style)).unwrap();
            prop_assert_eq!(layout.header_line.is_some(), style.header.is_some());
            let format = layout.format();
            let task = layout.count_task(ValueRange { min: Number::Int(-5), max: Number::Int(1) });
            let (mut values, mut counts) = (Vec::new(), Vec::new());
            for piece in pieces {
                format.read_integers(&piece.text, piece.first_line, &mut values).unwrap();
                task.count(&piece.text, piece.first_line, &mut counts).unwrap();
            }
            prop_assert_eq!(values, matrix.concat());
            let expected: Vec<u32> =
                matrix.iter().map(|row| row.iter().filter(|&&v| (-5..=1).contains(&v)).count() as u32).collect();
            prop_assert_eq!(counts, expected);
        }
    }
}
