//! corepool's own tasks: the tutorial's count in range (per row, and starmap-style with
//! per-row bounds) and its "normalize each row" exercise.

use corepool::task::{Task, codec::CodecError};
use serde::{Deserialize, Serialize};

/// How many bytes each value takes in a [`RowBlock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Width {
    /// `i8`.
    One,
    /// `i16`.
    Two,
    /// `i32`.
    Four,
    /// `i64`.
    Eight,
}

impl Width {
    /// The narrowest width that holds every value in `min..=max`.
    pub fn narrowest(min: i64, max: i64) -> Self {
        if min >= i64::from(i8::MIN) && max <= i64::from(i8::MAX) {
            Self::One
        } else if min >= i64::from(i16::MIN) && max <= i64::from(i16::MAX) {
            Self::Two
        } else if min >= i64::from(i32::MIN) && max <= i64::from(i32::MAX) {
            Self::Four
        } else {
            Self::Eight
        }
    }

    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            Self::One => 1,
            Self::Two => 2,
            Self::Four => 4,
            Self::Eight => 8,
        }
    }
}

/// Rows of integers in their compact wire form: each value little-endian in the
/// narrowest [`Width`] that holds every value of the block, with no per-value framing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowBlock {
    rows: u64,
    cols: u64,
    width: Width,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// A borrowed [`RowBlock`]: values already packed little-endian somewhere else (a matrix
/// stored in the chunk's width), encoded exactly as a `RowBlock` would be, without copying
/// them into one first.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RowBlockView<'a> {
    rows: u64,
    cols: u64,
    width: Width,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

impl<'a> RowBlockView<'a> {
    /// Views `data`: `rows` rows of `cols` little-endian values of `width` each.
    ///
    /// # Panics
    /// If `data` is not exactly that long.
    pub fn new(rows: usize, cols: usize, width: Width, data: &'a [u8]) -> Self {
        assert_eq!(data.len(), rows * cols * width.bytes(), "a {rows} x {cols} block of {width:?} values");
        Self { rows: rows as u64, cols: cols as u64, width, data }
    }
}

impl RowBlock {
    /// Packs `rows` rows of `cols` values each, taken row after row from `values`.
    ///
    /// # Panics
    /// If `values.len() != rows * cols`.
    pub fn new(rows: usize, cols: usize, values: &[i64]) -> Self {
        assert_eq!(values.len(), rows * cols, "a {rows} x {cols} block needs {} values", rows * cols);
        let mut data = Vec::with_capacity(values.len());
        // Most data fits one byte (the tutorial's does): try that in one pass first.
        if narrow_to_bytes(values, &mut data) {
            return Self { rows: rows as u64, cols: cols as u64, width: Width::One, data };
        }
        data.clear();
        let (min, max) = values.iter().fold((0, 0), |(lo, hi), &v| (v.min(lo), v.max(hi)));
        let width = Width::narrowest(min, max);
        data.reserve(values.len() * width.bytes());
        match width {
            Width::One => data.extend(values.iter().map(|&v| v as i8 as u8)),
            Width::Two => values.iter().for_each(|&v| data.extend_from_slice(&(v as i16).to_le_bytes())),
            Width::Four => values.iter().for_each(|&v| data.extend_from_slice(&(v as i32).to_le_bytes())),
            Width::Eight => values.iter().for_each(|&v| data.extend_from_slice(&v.to_le_bytes())),
        }
        Self { rows: rows as u64, cols: cols as u64, width, data }
    }

    /// Packs values already held as `i8`: a plain copy.
    ///
    /// # Panics
    /// If `values.len() != rows * cols`.
    pub fn from_i8(rows: usize, cols: usize, values: &[i8]) -> Self {
        assert_eq!(values.len(), rows * cols, "a {rows} x {cols} block needs {} values", rows * cols);
        let data = values.iter().map(|&v| v as u8).collect();
        Self { rows: rows as u64, cols: cols as u64, width: Width::One, data }
    }

    /// Packs values already held as `i16`.
    ///
    /// # Panics
    /// If `values.len() != rows * cols`.
    pub fn from_i16(rows: usize, cols: usize, values: &[i16]) -> Self {
        assert_eq!(values.len(), rows * cols, "a {rows} x {cols} block needs {} values", rows * cols);
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self { rows: rows as u64, cols: cols as u64, width: Width::Two, data }
    }

    /// Packs values already held as `i32`.
    ///
    /// # Panics
    /// If `values.len() != rows * cols`.
    pub fn from_i32(rows: usize, cols: usize, values: &[i32]) -> Self {
        assert_eq!(values.len(), rows * cols, "a {rows} x {cols} block needs {} values", rows * cols);
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self { rows: rows as u64, cols: cols as u64, width: Width::Four, data }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows as usize
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols as usize
    }

    /// The width each value was packed in.
    pub fn width(&self) -> Width {
        self.width
    }

    /// Unpacks every value, row after row.
    pub fn to_values(&self) -> Result<Vec<i64>, String> {
        self.check()?;
        Ok(match self.width {
            Width::One => self.data.iter().map(|&b| i64::from(b as i8)).collect(),
            Width::Two => self.data.chunks_exact(2).map(|b| i64::from(i16::from_le_bytes([b[0], b[1]]))).collect(),
            Width::Four => {
                self.data.chunks_exact(4).map(|b| i64::from(i32::from_le_bytes(b.try_into().unwrap()))).collect()
            }
            Width::Eight => self.data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
        })
    }

    /// For each row, how many of its values lie in `min..=max`.
    pub fn count_in_range(&self, min: i64, max: i64) -> Result<Vec<u32>, String> {
        self.count_rows_in_range(0..self.rows(), min, max)
    }

    /// For each row of `rows`, how many of its values lie in `min..=max`.
    pub fn count_rows_in_range(&self, rows: std::ops::Range<usize>, min: i64, max: i64) -> Result<Vec<u32>, String> {
        self.check()?;
        if rows.end > self.rows() || rows.start > rows.end {
            return Err(format!("rows {rows:?} of a block of {}", self.rows()));
        }
        if self.cols == 0 {
            return Ok(vec![0; rows.len()]);
        }
        let cols = self.cols();
        let row_bytes = cols * self.width.bytes();
        let data = &self.data[rows.start * row_bytes..rows.end * row_bytes];
        // One loop per width, so that each compiles to a tight loop over its own lane type.
        Ok(match self.width {
            Width::One => count_bytes(data, cols, min, max),
            Width::Two => count_rows(data, cols, |b| i64::from(i16::from_le_bytes([b[0], b[1]])), 2, min, max),
            Width::Four => {
                count_rows(data, cols, |b| i64::from(i32::from_le_bytes(b.try_into().unwrap())), 4, min, max)
            }
            Width::Eight => count_rows(data, cols, |b| i64::from_le_bytes(b.try_into().unwrap()), 8, min, max),
        })
    }

    fn check(&self) -> Result<(), String> {
        let expected = self.rows.checked_mul(self.cols).and_then(|n| n.checked_mul(self.width.bytes() as u64));
        if expected != Some(self.data.len() as u64) {
            return Err(format!(
                "malformed row block: {} x {} values of {} bytes do not fill {} bytes",
                self.rows,
                self.cols,
                self.width.bytes(),
                self.data.len()
            ));
        }
        Ok(())
    }
}

/// Counts one-byte values per row. A value is in range when `value - lo`, taken as an
/// unsigned byte, is at most `hi - lo`: one comparison, which the compiler turns into vector
/// code. Rows of up to 8 values are summed eight bytes at a time ([`count_short_rows`]);
/// rows of up to 16 get a loop unrolled for their exact length.
fn count_bytes(data: &[u8], cols: usize, min: i64, max: i64) -> Vec<u32> {
    let (lo, hi) = (min.max(i64::from(i8::MIN)), max.min(i64::from(i8::MAX)));
    if lo > hi {
        return vec![0; data.len() / cols];
    }
    let (lo, span) = (lo as i8, (hi - lo) as u8);
    macro_rules! by_width {
        ($($n:literal)*) => {
            match cols {
                1..=8 => count_short_rows(data, cols, lo, span),
                $($n => count_fixed::<$n>(data, lo, span),)*
                _ => data.chunks_exact(cols).map(|row| count_row(row, lo, span)).collect(),
            }
        };
    }
    by_width!(9 10 11 12 13 14 15 16)
}

/// Rows of at most 8 one-byte values, a block of rows at a time: first a mark (0 or 1) for
/// every value of the block, in one vectorised pass over contiguous bytes; then each row's
/// sum from one 8-byte load of its marks, the bytes past the row masked off, and one
/// multiplication that adds all eight bytes into the top one (each is 0 or 1, so no byte
/// carries into the next). The tutorial's rows of 5 take about a quarter of the time of the
/// unrolled loop of [`count_fixed`], which must gather values 5 bytes apart.
fn count_short_rows(data: &[u8], cols: usize, lo: i8, span: u8) -> Vec<u32> {
    const BLOCK_ROWS: usize = 2048;
    /// Fewer rows than this are counted row by row: clearing the block's marks (16 KiB)
    /// would cost more than they save, and took half of a worker's time when
    /// `apply_async` sent one row a task.
    const FEW_ROWS: usize = 64;
    debug_assert!((1..=8).contains(&cols));
    if data.len() < FEW_ROWS * cols {
        return data.chunks_exact(cols).map(|row| count_row(row, lo, span)).collect();
    }
    let row_mask = u64::MAX >> (8 * (8 - cols));
    // 8 bytes of slack: the last row's load reads past its own marks (then masked off).
    let mut marks = [0u8; BLOCK_ROWS * 8 + 8];
    let mut counts = Vec::with_capacity(data.len() / cols);
    for block in data.chunks(BLOCK_ROWS * cols) {
        for (mark, &byte) in marks.iter_mut().zip(block) {
            *mark = in_byte_range(byte, lo, span) as u8;
        }
        counts.extend((0..block.len() / cols).map(|row| {
            let at = row * cols;
            let word = u64::from_le_bytes(marks[at..at + 8].try_into().expect("8 bytes"));
            ((word & row_mask).wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
        }));
    }
    counts
}

#[inline(always)]
fn in_byte_range(byte: u8, lo: i8, span: u8) -> u32 {
    u32::from((byte as i8).wrapping_sub(lo) as u8 <= span)
}

fn count_row(row: &[u8], lo: i8, span: u8) -> u32 {
    row.iter().map(|&byte| in_byte_range(byte, lo, span)).sum()
}

fn count_fixed<const N: usize>(data: &[u8], lo: i8, span: u8) -> Vec<u32> {
    data.chunks_exact(N)
        .map(|row| {
            let row: &[u8; N] = row.try_into().expect("chunks of N");
            row.iter().map(|&byte| in_byte_range(byte, lo, span)).sum()
        })
        .collect()
}

/// Appends every value as one byte, if every value fits one; returns whether they did.
fn narrow_to_bytes(values: &[i64], data: &mut Vec<u8>) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { narrow_to_bytes_avx2(values, data) };
    }
    narrow_to_bytes_portable(values, data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn narrow_to_bytes_avx2(values: &[i64], data: &mut Vec<u8>) -> bool {
    narrow_to_bytes_portable(values, data)
}

// Blocks small enough to stay in the first-level cache: checking and narrowing a block are
// two tight loops the compiler turns into vector code.
#[inline(always)]
fn narrow_to_bytes_portable(values: &[i64], data: &mut Vec<u8>) -> bool {
    for block in values.chunks(2048) {
        if !block.iter().fold(true, |fits, &v| fits & (v as i8 as i64 == v)) {
            return false;
        }
        data.extend(block.iter().map(|&v| v as i8 as u8));
    }
    true
}

/// The [`Task`] methods that send a counting task's outputs as narrow raw bytes
/// ([`encode_counts`]), for every task whose output is a `u32` count a row.
macro_rules! counts_as_raw_bytes {
    () => {
        fn encode_outputs(outputs: &[u32], out: &mut Vec<u8>) -> Result<(), corepool::task::codec::CodecError> {
            $crate::tasks::encode_counts(outputs, out);
            Ok(())
        }

        fn decode_outputs(bytes: &[u8]) -> Result<Vec<u32>, corepool::task::codec::CodecError> {
            $crate::tasks::decode_counts(bytes)
        }

        fn decode_outputs_into(bytes: &[u8], outputs: &mut Vec<u32>) -> Result<(), corepool::task::codec::CodecError> {
            $crate::tasks::decode_counts_into(bytes, outputs)
        }

        fn decode_output(bytes: &[u8]) -> Result<u32, corepool::task::codec::CodecError> {
            $crate::tasks::decode_count(bytes)
        }
    };
}
pub(crate) use counts_as_raw_bytes;

/// Writes counts in the narrowest of one, two or four bytes each, after a width byte.
pub(crate) fn encode_counts(counts: &[u32], out: &mut Vec<u8>) {
    let max = counts.iter().copied().max().unwrap_or(0);
    if max <= u32::from(u8::MAX) {
        out.push(1);
        out.extend(counts.iter().map(|&c| c as u8));
    } else if max <= u32::from(u16::MAX) {
        out.push(2);
        counts.iter().for_each(|&c| out.extend_from_slice(&(c as u16).to_le_bytes()));
    } else {
        out.push(4);
        counts.iter().for_each(|&c| out.extend_from_slice(&c.to_le_bytes()));
    }
}

/// Reads back what [`encode_counts`] wrote.
pub(crate) fn decode_counts(bytes: &[u8]) -> Result<Vec<u32>, CodecError> {
    let mut counts = Vec::new();
    decode_counts_into(bytes, &mut counts)?;
    Ok(counts)
}

/// Appends to `counts` what [`encode_counts`] wrote; on error, `counts` is left as it was.
pub(crate) fn decode_counts_into(bytes: &[u8], counts: &mut Vec<u32>) -> Result<(), CodecError> {
    let malformed = || CodecError::Decode(bincode::error::DecodeError::Other("malformed counts"));
    let (&width, data) = bytes.split_first().ok_or_else(malformed)?;
    match width {
        1 => counts.extend(data.iter().map(|&c| u32::from(c))),
        2 if data.len().is_multiple_of(2) => {
            counts.extend(data.chunks_exact(2).map(|c| u32::from(u16::from_le_bytes([c[0], c[1]]))))
        }
        4 if data.len().is_multiple_of(4) => {
            counts.extend(data.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())))
        }
        _ => return Err(malformed()),
    }
    Ok(())
}

/// The error for the answer to a one-item chunk that holds `outputs` outputs.
fn not_one_output(outputs: usize) -> CodecError {
    CodecError::Decode(bincode::error::DecodeError::OtherString(format!("{outputs} outputs for one item")))
}

/// Reads back what [`encode_counts`] wrote for one count.
pub(crate) fn decode_count(bytes: &[u8]) -> Result<u32, CodecError> {
    match bytes {
        [1, count] => Ok(u32::from(*count)),
        [2, a, b] => Ok(u32::from(u16::from_le_bytes([*a, *b]))),
        [4, a, b, c, d] => Ok(u32::from_le_bytes([*a, *b, *c, *d])),
        _ => decode_counts(bytes).and_then(|counts| match counts[..] {
            [count] => Ok(count),
            _ => Err(not_one_output(counts.len())),
        }),
    }
}

#[inline(always)]
fn count_rows(data: &[u8], cols: usize, read: impl Fn(&[u8]) -> i64, width: usize, min: i64, max: i64) -> Vec<u32> {
    data.chunks_exact(cols * width)
        .map(|row| row.chunks_exact(width).map(|value| u32::from((min..=max).contains(&read(value)))).sum())
        .collect()
}

/// The tutorial's task: how many values of each row lie in `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountInRange {
    /// Smallest value counted.
    pub min: i64,
    /// Largest value counted.
    pub max: i64,
}

impl Task for CountInRange {
    const NAME: &'static str = "count-in-range";
    type Chunk = RowBlock;
    type Output = u32;

    fn run(&self, chunk: RowBlock) -> Result<Vec<u32>, String> {
        chunk.count_in_range(self.min, self.max)
    }

    crate::tasks::counts_as_raw_bytes!();
}

/// Rows with their own bounds each: the items of `starmap`, `(row, min, max)`. Each row
/// has its own bounds; consecutive rows with the same bounds share one [`BoundsRun`] on the
/// wire, so the tutorial's items (every row with (4, 8)) cost a few bytes a chunk, not a
/// pair of numbers a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundedRows {
    /// The rows' bounds, run after run, covering every row in order.
    pub bounds: Vec<BoundsRun>,
    /// The rows; last on the wire, so that a coordinator can send their values from where
    /// they lie.
    pub rows: RowBlock,
}

/// `rows` consecutive rows that share the bounds `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundsRun {
    /// Smallest value counted.
    pub min: i64,
    /// Largest value counted.
    pub max: i64,
    /// How many rows share them.
    pub rows: u64,
}

impl BoundsRun {
    /// Runs for per-row bounds, `(min, max)` a row.
    pub fn runs(bounds: impl IntoIterator<Item = (i64, i64)>) -> Vec<BoundsRun> {
        let mut runs: Vec<BoundsRun> = Vec::new();
        for (min, max) in bounds {
            match runs.last_mut() {
                Some(run) if (run.min, run.max) == (min, max) => run.rows += 1,
                _ => runs.push(BoundsRun { min, max, rows: 1 }),
            }
        }
        runs
    }
}

/// A borrowed [`BoundedRows`], encoded exactly like it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BoundedRowsView<'a> {
    /// The rows' bounds, run after run.
    pub bounds: &'a [BoundsRun],
    /// The rows.
    pub rows: RowBlockView<'a>,
}

/// The count in range with the bounds given per row, as the tutorial's `starmap` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CountInRangeStar;

impl Task for CountInRangeStar {
    const NAME: &'static str = "count-in-range-star";
    type Chunk = BoundedRows;
    type Output = u32;

    fn run(&self, chunk: BoundedRows) -> Result<Vec<u32>, String> {
        let covered = chunk.bounds.iter().try_fold(0u64, |total, run| total.checked_add(run.rows));
        if covered != Some(chunk.rows.rows() as u64) {
            return Err(format!("{} rows but bounds for {covered:?}", chunk.rows.rows()));
        }
        let mut counts = Vec::with_capacity(chunk.rows.rows());
        let mut start = 0;
        for run in &chunk.bounds {
            let end = start + run.rows as usize;
            counts.extend(chunk.rows.count_rows_in_range(start..end, run.min, run.max)?);
            start = end;
        }
        Ok(counts)
    }

    crate::tasks::counts_as_raw_bytes!();
}

/// The tutorial's exercise: rescale each row linearly so that its smallest value becomes
/// 0 and its largest 1. A row whose values are all equal becomes all zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NormalizeRows;

impl Task for NormalizeRows {
    const NAME: &'static str = "normalize-rows";
    type Chunk = RowBlock;
    type Output = Vec<f64>;

    fn run(&self, chunk: RowBlock) -> Result<Vec<Vec<f64>>, String> {
        let values = chunk.to_values()?;
        let cols = chunk.cols();
        if cols == 0 {
            return Ok(vec![Vec::new(); chunk.rows()]);
        }
        Ok(values.chunks_exact(cols).map(normalize_row).collect())
    }
}

/// One row rescaled to `0.0..=1.0`; all zeros if its values are all equal.
pub fn normalize_row(row: &[i64]) -> Vec<f64> {
    let (Some(&lo), Some(&hi)) = (row.iter().min(), row.iter().max()) else { return Vec::new() };
    let span = (hi as f64) - (lo as f64);
    row.iter().map(|&v| if span == 0.0 { 0.0 } else { ((v as f64) - (lo as f64)) / span }).collect()
}

#[cfg(test)]
mod tests;
