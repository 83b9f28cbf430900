//! The reference problem's data: a dense row-major matrix of integers.

use std::sync::Arc;

use corepool::task::{AsBytes, SharedBytes};

/// A dense, row-major matrix of integers, each stored in the narrowest width that holds
/// every value of the matrix: the tutorial's values 0..10 take one byte each, not eight,
/// and go to the workers as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    values: Values,
}

/// The values of a [`Matrix`], row after row, in the width it stores them in. They are
/// shared, so that chunks go to the workers straight from here, without a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Values {
    /// One byte each.
    I8(Arc<Vec<i8>>),
    /// Two bytes each.
    I16(Arc<Vec<i16>>),
    /// Four bytes each.
    I32(Arc<Vec<i32>>),
    /// Eight bytes each.
    I64(Arc<Vec<i64>>),
}

impl Default for Matrix {
    fn default() -> Self {
        Self { rows: 0, cols: 0, values: Values::I8(Arc::default()) }
    }
}

/// Calls `$body` with `$slice` bound to the typed slice of `$values`, whatever its width.
macro_rules! with_slice {
    ($values:expr, $slice:ident => $body:expr) => {
        match $values {
            Values::I8($slice) => $body,
            Values::I16($slice) => $body,
            Values::I32($slice) => $body,
            Values::I64($slice) => $body,
        }
    };
}

impl Values {
    /// Narrows `values` to the narrowest width that holds them all.
    fn narrowest(values: Vec<i64>) -> Self {
        let (min, max) = values.iter().fold((0, 0), |(lo, hi), &v| (v.min(lo), v.max(hi)));
        Self::collect(min, max, values.into_iter())
    }

    /// Collects `values`, all within `min..=max`, in the narrowest width for that range.
    fn collect(min: i64, max: i64, values: impl Iterator<Item = i64>) -> Self {
        let fits = |lo: i64, hi: i64| min >= lo && max <= hi;
        if fits(i8::MIN.into(), i8::MAX.into()) {
            Values::I8(Arc::new(values.map(|v| v as i8).collect()))
        } else if fits(i16::MIN.into(), i16::MAX.into()) {
            Values::I16(Arc::new(values.map(|v| v as i16).collect()))
        } else if fits(i32::MIN.into(), i32::MAX.into()) {
            Values::I32(Arc::new(values.map(|v| v as i32).collect()))
        } else {
            Values::I64(Arc::new(values.collect()))
        }
    }

    // One arm of `with_slice!` holds `i64` values already; the others widen.
    #[allow(clippy::useless_conversion)]
    fn get(&self, index: usize) -> i64 {
        with_slice!(self, values => i64::from(values[index]))
    }
}

impl Matrix {
    /// Wraps `values`, which hold `rows` rows of `cols` values each, row after row; they
    /// are stored in the narrowest width that holds them all.
    ///
    /// # Panics
    /// If `values.len() != rows * cols`.
    pub fn from_parts(rows: usize, cols: usize, values: Vec<i64>) -> Self {
        assert_eq!(values.len(), rows * cols, "a {rows} x {cols} matrix needs {} values", rows * cols);
        Self { rows, cols, values: Values::narrowest(values) }
    }

    /// Makes a `rows` x `cols` matrix of integers drawn uniformly from `low..high`
    /// (`high` excluded, like numpy's `randint`), the same for a given seed on every
    /// platform and in every version of corepool.
    ///
    /// # Panics
    /// If `low >= high`.
    pub fn random(rows: usize, cols: usize, low: i64, high: i64, seed: u64) -> Self {
        let values = Values::collect(low, high - 1, random_integers(low, high, seed).take(rows * cols));
        Self { rows, cols, values }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of values in each row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes each value is stored in.
    pub fn value_bytes(&self) -> usize {
        match self.values {
            Values::I8(_) => 1,
            Values::I16(_) => 2,
            Values::I32(_) => 4,
            Values::I64(_) => 8,
        }
    }

    /// Every value, row after row, in the width the matrix stores them in.
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// The value at `row`, `col`.
    ///
    /// # Panics
    /// If either is out of range.
    pub fn get(&self, row: usize, col: usize) -> i64 {
        assert!(row < self.rows && col < self.cols, "({row}, {col}) is outside a {} x {} matrix", self.rows, self.cols);
        self.values.get(row * self.cols + col)
    }

    /// Row `index`, widened to `i64`.
    ///
    /// # Panics
    /// If `index >= self.rows()`.
    // One arm of `with_slice!` holds `i64` values already; the others widen.
    #[allow(clippy::useless_conversion)]
    pub fn row(&self, index: usize) -> Vec<i64> {
        let range = index * self.cols..(index + 1) * self.cols;
        with_slice!(&self.values, values => values[range].iter().map(|&v| i64::from(v)).collect())
    }

    /// The rows in order, each widened to `i64`.
    pub fn iter_rows(&self) -> impl ExactSizeIterator<Item = Vec<i64>> + '_ {
        (0..self.rows).map(move |index| self.row(index))
    }

    /// Every value widened to `i64`, row after row.
    // One arm of `with_slice!` holds `i64` values already; the others widen.
    #[allow(clippy::useless_conversion)]
    pub fn to_i64(&self) -> Vec<i64> {
        with_slice!(&self.values, values => values.iter().map(|&v| i64::from(v)).collect())
    }

    /// Rows `range` as they are stored, viewed as a packed block, where the machine's byte
    /// order is the wire's (little-endian); `None` elsewhere.
    pub(crate) fn block_view(&self, range: std::ops::Range<usize>) -> Option<crate::tasks::RowBlockView<'_>> {
        use crate::tasks::{RowBlockView, Width};
        if cfg!(target_endian = "big") {
            return None;
        }
        let (rows, values) = (range.len(), range.start * self.cols..range.end * self.cols);
        Some(match &self.values {
            Values::I8(v) => RowBlockView::new(rows, self.cols, Width::One, bytemuck::cast_slice(&v[values])),
            Values::I16(v) => RowBlockView::new(rows, self.cols, Width::Two, bytemuck::cast_slice(&v[values])),
            Values::I32(v) => RowBlockView::new(rows, self.cols, Width::Four, bytemuck::cast_slice(&v[values])),
            Values::I64(v) => RowBlockView::new(rows, self.cols, Width::Eight, bytemuck::cast_slice(&v[values])),
        })
    }

    /// The stored bytes of rows `range`, shared with the matrix.
    pub(crate) fn shared_bytes(&self, range: std::ops::Range<usize>) -> SharedBytes {
        fn share<T: bytemuck::Pod + Send + Sync>(values: &Arc<Vec<T>>, range: std::ops::Range<usize>) -> SharedBytes {
            let width = std::mem::size_of::<T>();
            let owner: Arc<dyn AsBytes> = Arc::clone(values) as _;
            SharedBytes::new(owner, range.start * width..range.end * width)
        }
        let values = range.start * self.cols..range.end * self.cols;
        with_slice!(&self.values, stored => share(stored, values))
    }

    /// Rows `range` as a [`RowBlock`](crate::tasks::RowBlock), copied as they
    /// are stored.
    pub(crate) fn block(&self, range: std::ops::Range<usize>) -> crate::tasks::RowBlock {
        use crate::tasks::RowBlock;
        let (rows, values) = (range.len(), range.start * self.cols..range.end * self.cols);
        match &self.values {
            Values::I8(v) => RowBlock::from_i8(rows, self.cols, &v[values]),
            Values::I16(v) => RowBlock::from_i16(rows, self.cols, &v[values]),
            Values::I32(v) => RowBlock::from_i32(rows, self.cols, &v[values]),
            Values::I64(v) => RowBlock::new(rows, self.cols, &v[values]),
        }
    }
}

/// Most bytes of values in a chunk cut by default: rows of many values go a few at a time,
/// so that a chunk (and the window of them in flight) stays small whatever the width.
pub const CHUNK_BYTES: usize = 8 << 20;

/// Rows per chunk by default for rows of `row_bytes` bytes each: Python's rule
/// ([`default_chunk_size`](corepool::task::default_chunk_size)), within [`CHUNK_BYTES`] (one row at
/// the least).
pub fn default_chunk_rows(rows: usize, workers: usize, row_bytes: usize) -> usize {
    corepool::task::default_chunk_size(rows, workers).min((CHUNK_BYTES / row_bytes.max(1)).max(1))
}

/// The endless stream of integers in `low..high` behind [`Matrix::random`]: row after row,
/// so that a writer can stream a matrix of any size without holding it.
///
/// # Panics
/// If `low >= high`.
pub fn random_integers(low: i64, high: i64, seed: u64) -> impl Iterator<Item = i64> {
    assert!(low < high, "empty range {low}..{high}");
    let span = high.abs_diff(low);
    let mut generator = SplitMix64(seed);
    std::iter::repeat_with(move || low.wrapping_add_unsigned(generator.below(span)))
}

/// An endless stream of reals drawn uniformly from `low..high`, fixed for a seed like
/// [`random_integers`].
///
/// # Panics
/// If `low >= high`.
pub fn random_reals(low: f64, high: f64, seed: u64) -> impl Iterator<Item = f64> {
    assert!(low < high, "empty range {low}..{high}");
    let mut generator = SplitMix64(seed);
    // 53 random bits: every double in [0, 1) that is a multiple of 2^-53.
    std::iter::repeat_with(move || low + (generator.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) * (high - low))
        .map(move |value| if value < high { value } else { low })
}

/// SplitMix64 (Steele, Lea and Flood): tiny, fast, and fixed forever, unlike the
/// generators of `rand`, whose streams may change between versions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..span` (Lemire's multiply-and-reject, without bias).
    fn below(&mut self, span: u64) -> u64 {
        let threshold = span.wrapping_neg() % span;
        loop {
            let product = u128::from(self.next()) * u128::from(span);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_deterministic_and_in_range() {
        let a = Matrix::random(1000, 5, 0, 10, 7);
        assert_eq!(a, Matrix::random(1000, 5, 0, 10, 7));
        assert_ne!(a, Matrix::random(1000, 5, 0, 10, 8));
        let values = a.to_i64();
        assert!(values.iter().all(|v| (0..10).contains(v)));
        for digit in 0..10 {
            assert!(values.contains(&digit), "{digit} never drawn");
        }
        assert!(matches!(a.values(), Values::I8(_)), "0..10 is stored in one byte");
    }

    #[test]
    fn random_values_are_pinned_across_versions() {
        // Changing the generator changes every user's data set: this test makes that loud.
        assert_eq!(Matrix::random(2, 5, 0, 10, 2019).to_i64(), [3, 2, 6, 5, 0, 8, 3, 2, 6, 3]);
    }

    #[test]
    fn stores_each_matrix_in_the_narrowest_width() {
        assert!(matches!(Matrix::from_parts(1, 2, vec![-128, 127]).values(), Values::I8(_)));
        assert!(matches!(Matrix::from_parts(1, 2, vec![0, 128]).values(), Values::I16(_)));
        assert!(matches!(Matrix::from_parts(1, 1, vec![-40_000]).values(), Values::I32(_)));
        let wide = Matrix::from_parts(1, 2, vec![i64::MIN, i64::MAX]);
        assert!(matches!(wide.values(), Values::I64(_)));
        assert_eq!(wide.row(0), [i64::MIN, i64::MAX]);
        assert_eq!(Matrix::random(3, 2, 1000, 1001, 1).to_i64(), [1000; 6]);
    }

    #[test]
    fn default_chunks_hold_a_bounded_number_of_bytes() {
        // The tutorial's rows keep Python's rule (capped at 65,536 rows).
        assert_eq!(default_chunk_rows(20_000_000, 2, 5), corepool::task::default_chunk_size(20_000_000, 2));
        assert_eq!(default_chunk_rows(1000, 2, 1 << 20), 8);
        assert_eq!(default_chunk_rows(1000, 2, 1 << 30), 1, "at least one row");
        assert_eq!(Matrix::random(2, 2, 0, 1000, 1).value_bytes(), 2);
    }

    #[test]
    fn reals_are_deterministic_and_in_range() {
        let a: Vec<f64> = random_reals(-1.5, 2.5, 3).take(1000).collect();
        assert_eq!(a, random_reals(-1.5, 2.5, 3).take(1000).collect::<Vec<_>>());
        assert!(a.iter().all(|v| (-1.5..2.5).contains(v)));
    }

    #[test]
    fn full_i64_range_does_not_overflow() {
        let m = Matrix::random(3, 3, i64::MIN, i64::MAX, 1);
        assert_eq!(m.to_i64().len(), 9);
    }

    #[test]
    fn rows_are_slices_of_the_values() {
        let m = Matrix::from_parts(2, 3, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(m.row(1), [4, 5, 6]);
        assert_eq!(m.get(1, 2), 6);
        assert_eq!(m.iter_rows().count(), 2);
    }
}
