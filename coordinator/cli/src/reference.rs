//! `--verify`'s reference for streamed input: each chunk counted again by a careful, slow
//! reader that shares nothing with the workers' fast path.

use corepool_tutorial::{
    input::npy::NpyLayout,
    text::{CountText, TextPiece},
    values::{FileRows, RawKind, ValueRange},
};

/// The counts of one piece by the careful, slow parser: `--verify`'s reference. A row it
/// cannot read gets `u32::MAX`, which no count equals.
pub fn serial_text_counts(piece: &TextPiece, task: &CountText) -> Vec<u32> {
    let body = piece.text.strip_suffix(b"\n").unwrap_or(&piece.text);
    body.split(|&b| b == b'\n')
        .filter(|line| !corepool_tutorial::text::is_blank_line(line))
        .map(|line| task.reference_count(line).unwrap_or(u32::MAX))
        .collect()
}

/// The counts of one chunk of a `.npy` file, read by `npyz` element by element:
/// `--verify`'s reference. A chunk it cannot read gets `u32::MAX` counts, which no count
/// equals.
pub fn serial_npy_counts(layout: &NpyLayout, chunk: &FileRows, range: &ValueRange) -> Vec<u32> {
    let skip = (chunk.offset - layout.data_offset) / u64::from(layout.dtype.bytes);
    let take = (chunk.rows * layout.cols) as usize;
    // Every integer type compared as an `i128` with the range's exact integer bounds.
    let bounds = range.integer_bounds();
    let int = |value: i128| bounds.is_some_and(|(lo, hi)| lo <= value && value <= hi);
    let path = layout.path.as_str();
    let cols = layout.cols;
    let inside = match (layout.dtype.kind, layout.dtype.bytes) {
        (RawKind::Int, 1) => row_hits::<i8>(path, skip, take, cols, |v| int(v.into())),
        (RawKind::Int, 2) => row_hits::<i16>(path, skip, take, cols, |v| int(v.into())),
        (RawKind::Int, 4) => row_hits::<i32>(path, skip, take, cols, |v| int(v.into())),
        (RawKind::Int, 8) => row_hits::<i64>(path, skip, take, cols, |v| int(v.into())),
        (RawKind::Uint, 1) => row_hits::<u8>(path, skip, take, cols, |v| int(v.into())),
        (RawKind::Uint, 2) => row_hits::<u16>(path, skip, take, cols, |v| int(v.into())),
        (RawKind::Uint, 4) => row_hits::<u32>(path, skip, take, cols, |v| int(v.into())),
        (RawKind::Uint, 8) => row_hits::<u64>(path, skip, take, cols, |v| int(v.into())),
        (RawKind::Float, 4) => row_hits::<f32>(path, skip, take, cols, |v| range.contains_f64(v.into())),
        (RawKind::Float, 8) => row_hits::<f64>(path, skip, take, cols, |v| range.contains_f64(v)),
        // npyz reads float16 only with a crate feature: the raw halves are read here.
        (RawKind::Float, 2) => halves(layout, chunk).map(|values| {
            let cols = layout.cols.max(1) as usize;
            let inside = |&bits: &u16| range.contains_f64(corepool_tutorial::values::half_to_f32(bits).into());
            values.chunks(cols).map(|row| row.iter().filter(|bits| inside(bits)).count() as u32).collect()
        }),
        _ => Err(std::io::Error::other("no independent reader for this type")),
    };
    inside.unwrap_or_else(|_| vec![u32::MAX; chunk.rows as usize])
}

/// The raw float16 elements of a chunk, in the file's byte order.
fn halves(layout: &NpyLayout, chunk: &FileRows) -> std::io::Result<Vec<u16>> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0u8; (chunk.rows * layout.cols * 2) as usize];
    std::fs::File::open(&layout.path)?.read_exact_at(&mut bytes, chunk.offset)?;
    let big = layout.dtype.big_endian;
    Ok(bytes
        .chunks_exact(2)
        .map(|b| if big { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
        .collect())
}

/// For each row of `cols` elements among the `take` from element `skip` on, how many lie
/// in the range, by `inside`: a row at a time, so that even a very wide row costs no more
/// than its count.
fn row_hits<T: npyz::Deserialize>(
    path: &str,
    skip: u64,
    take: usize,
    cols: u64,
    inside: impl Fn(T) -> bool,
) -> std::io::Result<Vec<u32>> {
    let npy = npyz::NpyFile::new(std::io::BufReader::new(std::fs::File::open(path)?))?;
    let mut data = npy.data::<T>().map_err(|e| std::io::Error::other(e.to_string()))?;
    data.seek_to(skip)?;
    let mut values = data.take(take);
    let rows = take as u64 / cols.max(1);
    let mut counts = Vec::with_capacity(rows as usize);
    for _ in 0..rows {
        let mut hits = 0u32;
        for _ in 0..cols {
            let value = values.next().ok_or_else(|| std::io::Error::other("the file ends early"))??;
            hits += u32::from(inside(value));
        }
        counts.push(hits);
    }
    Ok(counts)
}
