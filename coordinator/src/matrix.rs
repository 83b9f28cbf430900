//! The reference problem's data: a dense row-major matrix of integers.

/// A dense, row-major matrix of `i64` values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    values: Vec<i64>,
}

impl Matrix {
    /// Wraps `values`, which hold `rows` rows of `cols` values each, row after row.
    ///
    /// # Panics
    /// If `values.len() != rows * cols`.
    pub fn from_parts(rows: usize, cols: usize, values: Vec<i64>) -> Self {
        assert_eq!(values.len(), rows * cols, "a {rows} x {cols} matrix needs {} values", rows * cols);
        Self { rows, cols, values }
    }

    /// Makes a `rows` x `cols` matrix of integers drawn uniformly from `low..high`
    /// (`high` excluded, like numpy's `randint`), the same for a given seed on every
    /// platform and in every version of corepool.
    ///
    /// # Panics
    /// If `low >= high`.
    pub fn random(rows: usize, cols: usize, low: i64, high: i64, seed: u64) -> Self {
        let values = random_integers(low, high, seed).take(rows * cols).collect();
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

    /// Row `index`.
    ///
    /// # Panics
    /// If `index >= self.rows()`.
    pub fn row(&self, index: usize) -> &[i64] {
        &self.values[index * self.cols..(index + 1) * self.cols]
    }

    /// Every value, row after row.
    pub fn values(&self) -> &[i64] {
        &self.values
    }

    /// The rows in order.
    pub fn iter_rows(&self) -> impl ExactSizeIterator<Item = &[i64]> + '_ {
        (0..self.rows).map(move |index| self.row(index))
    }
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
        assert!(a.values().iter().all(|v| (0..10).contains(v)));
        for digit in 0..10 {
            assert!(a.values().contains(&digit), "{digit} never drawn");
        }
    }

    #[test]
    fn random_values_are_pinned_across_versions() {
        // Changing the generator changes every user's data set: this test makes that loud.
        assert_eq!(Matrix::random(2, 5, 0, 10, 2019).values(), [3, 2, 6, 5, 0, 8, 3, 2, 6, 3]);
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
        assert_eq!(m.values().len(), 9);
    }

    #[test]
    fn rows_are_slices_of_the_values() {
        let m = Matrix::from_parts(2, 3, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(m.row(1), [4, 5, 6]);
        assert_eq!(m.iter_rows().count(), 2);
    }
}
