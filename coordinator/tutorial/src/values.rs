//! Values that may be integers or floats, the range they are counted in, and the count
//! over rows of a numpy `.npy` file that a worker reads for itself.
//!
//! Integers are compared as integers and floats as floats, so that no 64-bit integer is
//! rounded on its way to a comparison; a NaN is in no range.

use std::{cmp::Ordering, fmt, os::unix::fs::FileExt, str::FromStr};

use serde::{Deserialize, Serialize};

use corepool::task::Task;

/// A number as the user wrote it: an integer, or a float (`4.5`, `1e3`, `inf`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Number {
    /// An integer, held exactly: wide enough for every `int64` and `uint64` value and more.
    Int(i128),
    /// A double.
    Float(f64),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(value) => write!(f, "{value}"),
            Number::Float(value) => write!(f, "{}", Readable(*value)),
        }
    }
}

/// A double as people read it: `1e300` rather than its 301 digits, `0.5` as it is.
#[derive(Debug, Clone, Copy)]
pub struct Readable(pub f64);

impl fmt::Display for Readable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let magnitude = self.0.abs();
        if magnitude.is_finite() && magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
            write!(f, "{:e}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl FromStr for Number {
    type Err = String;

    /// An integer if the text is one (exactly, up to 39 digits), else a float; NaN is
    /// refused, as no value lies beside it.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(value) = text.parse::<i128>() {
            return Ok(Number::Int(value));
        }
        match text.parse::<f64>() {
            Ok(value) if value.is_nan() => Err(format!("{text:?} is not a number to compare with")),
            Ok(value) => Ok(Number::Float(value)),
            Err(_) => Err(format!("{:?} is not a number", crate::excerpt::quotable(text.as_bytes()))),
        }
    }
}

impl Number {
    /// The number as a double (rounded, for integers beyond 2^53).
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(value) => value as f64,
            Number::Float(value) => value,
        }
    }

    /// How `self` compares with `other`, exactly (no integer is rounded to a double);
    /// `None` beside a NaN.
    pub fn cmp_exact(self, other: Number) -> Option<Ordering> {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => Some(a.cmp(&b)),
            (Number::Float(a), Number::Float(b)) => a.partial_cmp(&b),
            (Number::Int(a), Number::Float(b)) => int_cmp_float(a, b),
            (Number::Float(a), Number::Int(b)) => int_cmp_float(b, a).map(Ordering::reverse),
        }
    }
}

/// How the integer `int` compares with the double `float`, exactly.
fn int_cmp_float(int: i128, float: f64) -> Option<Ordering> {
    if float.is_nan() {
        return None;
    }
    if float >= TWO_POW_127 {
        return Some(Ordering::Less);
    }
    if float < -TWO_POW_127 {
        return Some(Ordering::Greater);
    }
    // Every double of this size is exact as an `i128` once its fraction is dropped.
    let floor = float.floor();
    Some(match int.cmp(&(floor as i128)) {
        Ordering::Equal if floor < float => Ordering::Less,
        other => other,
    })
}

/// 2^127: doubles at or past it are beyond every `i128`.
const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

/// The closed range `[min, max]` that values are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValueRange {
    /// Smallest value counted.
    pub min: Number,
    /// Largest value counted.
    pub max: Number,
}

impl ValueRange {
    /// The integers in the range, exactly, as `lo..=hi` (a float bound rounded inwards,
    /// beyond `i128` clamped); `None` if there is none (`[4.2, 4.8]`).
    pub fn integer_bounds(&self) -> Option<(i128, i128)> {
        let lo = match self.min {
            Number::Int(value) => value,
            Number::Float(value) if value.is_nan() || value == f64::INFINITY => return None,
            // `as` saturates: past `i128` on either side is as good as its end here.
            Number::Float(value) => value.ceil() as i128,
        };
        let hi = match self.max {
            Number::Int(value) => value,
            Number::Float(value) if value.is_nan() || value == f64::NEG_INFINITY => return None,
            Number::Float(value) => value.floor() as i128,
        };
        (lo <= hi).then_some((lo, hi))
    }

    /// The `i64` values in the range, as `lo..=hi`; `None` if there is none.
    pub fn int_bounds(&self) -> Option<(i64, i64)> {
        let (lo, hi) = self.integer_bounds()?;
        // A bound past the type's end on its own side leaves no value; on the other, the end.
        let lo = i64::try_from(lo.max(i64::MIN.into())).ok()?;
        let hi = i64::try_from(hi.min(i64::MAX.into())).ok()?;
        Some((lo, hi))
    }

    /// The `u64` values in the range, as `lo..=hi`; `None` if there is none.
    pub fn u64_bounds(&self) -> Option<(u64, u64)> {
        let (lo, hi) = self.integer_bounds()?;
        let lo = u64::try_from(lo.max(0)).ok()?;
        let hi = u64::try_from(hi.min(u64::MAX.into())).ok()?;
        Some((lo, hi))
    }

    /// Whether the integer `value` lies in the range, exactly.
    pub fn contains_int(&self, value: i128) -> bool {
        self.integer_bounds().is_some_and(|(lo, hi)| (lo..=hi).contains(&value))
    }

    /// Whether the integer `value` lies in the range.
    pub fn contains_i64(&self, value: i64) -> bool {
        self.contains_int(value.into())
    }

    /// Whether the double `value` lies in the range; never for a NaN.
    #[inline]
    pub fn contains_f64(&self, value: f64) -> bool {
        at_least(value, self.min) && at_most(value, self.max)
    }
}

/// `value >= bound`, exact even for integer bounds beyond 2^53.
#[inline]
fn at_least(value: f64, bound: Number) -> bool {
    match bound {
        Number::Float(bound) => value >= bound,
        Number::Int(bound) if bound.unsigned_abs() <= 1 << 53 => value >= bound as f64,
        Number::Int(bound) => int_cmp_float(bound, value).is_some_and(Ordering::is_le),
    }
}

/// `value <= bound`, exact even for integer bounds beyond 2^53.
#[inline]
fn at_most(value: f64, bound: Number) -> bool {
    match bound {
        Number::Float(bound) => value <= bound,
        Number::Int(bound) if bound.unsigned_abs() <= 1 << 53 => value <= bound as f64,
        Number::Int(bound) => int_cmp_float(bound, value).is_some_and(Ordering::is_ge),
    }
}

/// What one element of a numpy array is: its kind, width and byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawDtype {
    /// Signed integer, unsigned integer or float.
    pub kind: RawKind,
    /// Bytes per element: 1, 2, 4 or 8 (2, 4 or 8 for floats).
    pub bytes: u8,
    /// Most significant byte first (`>` in numpy's type string).
    pub big_endian: bool,
}

/// The kinds of [`RawDtype`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RawKind {
    /// `i`: signed integers.
    Int,
    /// `u`: unsigned integers.
    Uint,
    /// `f`: IEEE floats (half, single, double).
    Float,
}

impl RawDtype {
    /// Whether corepool can count elements of this type.
    pub fn supported(&self) -> bool {
        match self.kind {
            RawKind::Int | RawKind::Uint => matches!(self.bytes, 1 | 2 | 4 | 8),
            RawKind::Float => matches!(self.bytes, 2 | 4 | 8),
        }
    }

    /// numpy's name for the type, as `float32` or `uint8`.
    pub fn name(&self) -> String {
        let kind = match self.kind {
            RawKind::Int => "int",
            RawKind::Uint => "uint",
            RawKind::Float => "float",
        };
        format!("{kind}{}", u32::from(self.bytes) * 8)
    }
}

/// Rows of a 2-D, C-order numpy array, left in their file: the worker reads them itself.
///
/// The coordinator reads the header (with `npyz`) and hands out row ranges; the bytes
/// never pass through it, so a file of any size costs it no memory and no copying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRows {
    /// The file, as a path the worker can open (workers run on the coordinator's machine).
    pub path: String,
    /// Byte offset of the first row in the file.
    pub offset: u64,
    /// Rows in this chunk.
    pub rows: u64,
    /// Elements per row.
    pub cols: u64,
}

/// The tutorial's count over rows of a `.npy` file: how many values of each row lie in
/// `range`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CountNpyRows {
    /// The range counted.
    pub range: ValueRange,
    /// The file's element type.
    pub dtype: RawDtype,
}

/// Bytes read at a time: whole rows of about this much, so the buffer stays in cache (a
/// multiple of every element's width, so that a wider row is cut between elements).
const READ_BLOCK: usize = 1 << 20;

/// Most values a row may have: its count is a `u32`.
pub const MAX_ROW_VALUES: u32 = u32::MAX;

impl Task for CountNpyRows {
    const NAME: &'static str = "count-npy-rows";
    type Chunk = FileRows;
    type Output = u32;

    fn run(&self, chunk: FileRows) -> Result<Vec<u32>, String> {
        if !self.dtype.supported() {
            return Err(format!("cannot count elements of type {}", self.dtype.name()));
        }
        if chunk.cols > u64::from(MAX_ROW_VALUES) {
            return Err(format!("a row of {} values is more than a count can hold ({MAX_ROW_VALUES})", chunk.cols));
        }
        let width = usize::from(self.dtype.bytes);
        let row_bytes = usize::try_from(chunk.cols).ok().and_then(|cols| cols.checked_mul(width));
        let rows = usize::try_from(chunk.rows).map_err(|_| "too many rows".to_owned())?;
        let row_bytes = row_bytes.ok_or_else(|| format!("{} columns are too many", chunk.cols))?;
        if row_bytes == 0 {
            return Ok(vec![0; rows]);
        }
        let file = std::fs::File::open(&chunk.path).map_err(|e| format!("{}: cannot open: {e}", chunk.path))?;
        let read = |block: &mut [u8], offset: u64| {
            file.read_exact_at(block, offset).map_err(|e| {
                format!(
                    "{}: cannot read {} bytes at offset {offset} (was the file cut short?): {e}",
                    chunk.path,
                    block.len()
                )
            })
        };
        let mut counts = Vec::with_capacity(rows);
        let mut offset = chunk.offset;
        if row_bytes > READ_BLOCK {
            // A row wider than a block is read a block at a time, its counts added up.
            let mut buffer = vec![0u8; READ_BLOCK];
            let mut part = Vec::with_capacity(1);
            for _ in 0..rows {
                let mut hits = 0u32;
                let mut left = row_bytes;
                while left > 0 {
                    let block = &mut buffer[..left.min(READ_BLOCK)];
                    read(block, offset)?;
                    part.clear();
                    count_raw_rows(block, block.len(), self.dtype, &self.range, &mut part);
                    // At most `MAX_ROW_VALUES` values a row, checked above: no overflow.
                    hits += part.iter().sum::<u32>();
                    offset += block.len() as u64;
                    left -= block.len();
                }
                counts.push(hits);
            }
            return Ok(counts);
        }
        let rows_per_block = READ_BLOCK / row_bytes;
        let mut buffer = vec![0u8; rows_per_block.min(rows) * row_bytes];
        let mut left = rows;
        while left > 0 {
            let take = left.min(rows_per_block);
            let block = &mut buffer[..take * row_bytes];
            read(block, offset)?;
            count_raw_rows(block, row_bytes, self.dtype, &self.range, &mut counts);
            offset += block.len() as u64;
            left -= take;
        }
        Ok(counts)
    }

    crate::tasks::counts_as_raw_bytes!();
}

/// Appends, for each row of `data` (`row_bytes` each), how many of its elements lie in
/// `range`.
pub fn count_raw_rows(data: &[u8], row_bytes: usize, dtype: RawDtype, range: &ValueRange, counts: &mut Vec<u32>) {
    let zeros = |counts: &mut Vec<u32>| counts.extend(std::iter::repeat_n(0, data.len() / row_bytes));
    let big = dtype.big_endian;
    // Each arm picks its decoding once, outside the loop, so every loop is a tight one.
    macro_rules! by_endianness {
        ($t:ty, $n:literal, $test:expr) => {{
            let test = $test;
            if big {
                count_rows_with::<$n>(data, row_bytes, |b| test(<$t>::from_be_bytes(b)), counts)
            } else {
                count_rows_with::<$n>(data, row_bytes, |b| test(<$t>::from_le_bytes(b)), counts)
            }
        }};
    }
    if dtype.kind == RawKind::Float {
        let range = *range;
        return match dtype.bytes {
            2 => by_endianness!(u16, 2, |v: u16| range.contains_f64(half_to_f32(v).into())),
            4 => by_endianness!(f32, 4, |v: f32| range.contains_f64(v.into())),
            8 => by_endianness!(f64, 8, |v: f64| range.contains_f64(v)),
            _ => zeros(counts),
        };
    }
    if (dtype.kind, dtype.bytes) == (RawKind::Uint, 8) {
        // Past `i64`: compared with the range's `u64` bounds, exactly.
        let Some((lo, hi)) = range.u64_bounds() else { return zeros(counts) };
        let span = hi - lo;
        return by_endianness!(u64, 8, move |v: u64| v.wrapping_sub(lo) <= span);
    }
    let Some((lo, hi)) = range.int_bounds() else { return zeros(counts) };
    // `lo <= v <= hi` as one unsigned comparison, without a branch.
    let span = hi.wrapping_sub(lo) as u64;
    let int = move |value: i64| (value.wrapping_sub(lo) as u64) <= span;
    match (dtype.kind, dtype.bytes) {
        (RawKind::Int, 1) => by_endianness!(i8, 1, |v: i8| int(v.into())),
        (RawKind::Int, 2) => by_endianness!(i16, 2, |v: i16| int(v.into())),
        (RawKind::Int, 4) => by_endianness!(i32, 4, |v: i32| int(v.into())),
        (RawKind::Int, 8) => by_endianness!(i64, 8, int),
        (RawKind::Uint, 1) => by_endianness!(u8, 1, |v: u8| int(v.into())),
        (RawKind::Uint, 2) => by_endianness!(u16, 2, |v: u16| int(v.into())),
        (RawKind::Uint, 4) => by_endianness!(u32, 4, |v: u32| int(v.into())),
        _ => zeros(counts),
    }
}

/// For each row, how many of its `W`-byte elements pass `inside`.
#[inline(always)]
fn count_rows_with<const W: usize>(
    data: &[u8],
    row_bytes: usize,
    inside: impl Fn([u8; W]) -> bool,
    counts: &mut Vec<u32>,
) {
    counts.extend(data.chunks_exact(row_bytes).map(|row| {
        let mut hits = 0u32;
        for element in row.chunks_exact(W) {
            hits += u32::from(inside(element.try_into().expect("W bytes")));
        }
        hits
    }));
}

/// An IEEE half (numpy's `float16`) as a single, exactly.
pub fn half_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match (exponent, mantissa) {
        (0, 0) => 0,
        // Subnormal: mantissa x 2^-24, exact in a single.
        (0, m) => {
            let value = m as f32 / (1 << 24) as f32;
            return if sign != 0 { -value } else { value };
        }
        (0x1f, 0) => 0xff << 23,
        (0x1f, m) => (0xff << 23) | (m << 13),
        (e, m) => ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(sign | magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(min: Number, max: Number) -> ValueRange {
        ValueRange { min, max }
    }

    #[test]
    fn numbers_parse_as_integers_first() {
        assert_eq!("4".parse::<Number>().unwrap(), Number::Int(4));
        assert_eq!("-4.5".parse::<Number>().unwrap(), Number::Float(-4.5));
        assert_eq!("inf".parse::<Number>().unwrap(), Number::Float(f64::INFINITY));
        assert!("nan".parse::<Number>().is_err());
        assert!("x".parse::<Number>().is_err());
    }

    #[test]
    fn float_bounds_round_inwards_for_integers() {
        assert_eq!(range(Number::Float(4.5), Number::Int(8)).int_bounds(), Some((5, 8)));
        assert_eq!(range(Number::Float(4.2), Number::Float(4.8)).int_bounds(), None);
        assert_eq!(
            range(Number::Float(f64::NEG_INFINITY), Number::Float(f64::INFINITY)).int_bounds(),
            Some((i64::MIN, i64::MAX))
        );
    }

    #[test]
    fn nan_is_in_no_range() {
        let all = range(Number::Float(f64::NEG_INFINITY), Number::Float(f64::INFINITY));
        assert!(!all.contains_f64(f64::NAN));
        assert!(all.contains_f64(1.0));
    }

    #[test]
    fn large_integer_bounds_compare_exactly_with_floats() {
        let big = (1i128 << 53) + 1;
        let above = range(Number::Int(big), Number::Int(i64::MAX.into()));
        // 2^53 as a double is below 2^53 + 1, though `big as f64` rounds to it.
        assert!(!above.contains_f64((1u64 << 53) as f64));
        assert!(above.contains_f64((1u64 << 54) as f64));
    }

    #[test]
    fn integers_past_i64_parse_and_compare_exactly() {
        assert_eq!("18446744073709551615".parse::<Number>().unwrap(), Number::Int(u64::MAX.into()));
        assert_eq!("-9223372036854775809".parse::<Number>().unwrap(), Number::Int(i128::from(i64::MIN) - 1));
        let two53 = 1i128 << 53;
        let float = |value: f64| Number::Float(value);
        assert_eq!(Number::Int(two53 + 1).cmp_exact(float(two53 as f64)), Some(Ordering::Greater));
        assert_eq!(Number::Int(two53).cmp_exact(float(two53 as f64)), Some(Ordering::Equal));
        assert_eq!(float(4.5).cmp_exact(Number::Int(4)), Some(Ordering::Greater));
        assert_eq!(float(-4.5).cmp_exact(Number::Int(-4)), Some(Ordering::Less));
        assert_eq!(Number::Int(i128::MAX).cmp_exact(float(1e300)), Some(Ordering::Less));
        assert_eq!(Number::Int(0).cmp_exact(float(f64::NAN)), None);
    }

    #[test]
    fn bounds_clamp_to_each_type_without_leaving_its_end_inside() {
        let past_i64 = range(Number::Int(1 << 63), Number::Int(u64::MAX.into()));
        assert_eq!(past_i64.int_bounds(), None);
        assert_eq!(past_i64.u64_bounds(), Some((1 << 63, u64::MAX)));
        let floats = range(Number::Float(1e19), Number::Float(2e19));
        assert_eq!(floats.int_bounds(), None);
        assert_eq!(floats.u64_bounds(), Some((10_000_000_000_000_000_000, u64::MAX)));
        let negative = range(Number::Float(f64::NEG_INFINITY), Number::Int(-1));
        assert_eq!(negative.u64_bounds(), None);
        assert_eq!(negative.int_bounds(), Some((i64::MIN, -1)));
    }

    #[test]
    fn large_floats_read_as_people_write_them() {
        assert_eq!(Number::Float(1e300).to_string(), "1e300");
        assert_eq!(Number::Float(-2.5e-9).to_string(), "-2.5e-9");
        assert_eq!(Number::Float(8.5).to_string(), "8.5");
        assert_eq!(Number::Float(f64::NEG_INFINITY).to_string(), "-inf");
        assert_eq!(Number::Int(u64::MAX.into()).to_string(), "18446744073709551615");
    }

    #[test]
    fn uint64_rows_count_exactly_past_i64() {
        // numpy's own example: [2^63, 2^63 + 1, 2^64 - 1, 5] has one value in [1e19, 2e19].
        let data: Vec<u8> = [1u64 << 63, (1 << 63) + 1, u64::MAX, 5].iter().flat_map(|v| v.to_be_bytes()).collect();
        let dtype = RawDtype { kind: RawKind::Uint, bytes: 8, big_endian: true };
        let mut counts = Vec::new();
        count_raw_rows(&data, 32, dtype, &range(Number::Float(1e19), Number::Float(2e19)), &mut counts);
        count_raw_rows(&data, 32, dtype, &range(Number::Int(1 << 63), Number::Int(u64::MAX.into())), &mut counts);
        count_raw_rows(&data, 32, dtype, &range(Number::Int(-9), Number::Int(5)), &mut counts);
        assert_eq!(counts, [1, 3, 1]);
    }

    #[test]
    fn rows_wider_than_a_read_block_are_counted_in_parts() {
        let cols = READ_BLOCK / 2 + 3;
        let values: Vec<u16> = (0..2 * cols).map(|i| (i % 10) as u16).collect();
        let path = std::env::temp_dir().join(format!("corepool-wide-rows-{}.bin", std::process::id()));
        std::fs::write(&path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        let task = CountNpyRows {
            range: range(Number::Int(4), Number::Int(8)),
            dtype: RawDtype { kind: RawKind::Uint, bytes: 2, big_endian: false },
        };
        let chunk = FileRows { path: path.to_str().unwrap().to_owned(), offset: 0, rows: 2, cols: cols as u64 };
        let counts = task.run(chunk);
        std::fs::remove_file(&path).unwrap();
        let want: Vec<u32> =
            values.chunks(cols).map(|row| row.iter().filter(|&&v| (4..=8).contains(&v)).count() as u32).collect();
        assert_eq!(counts.unwrap(), want);
        let too_wide = FileRows { path: String::new(), offset: 0, rows: 1, cols: 1 << 32 };
        assert!(task.run(too_wide).unwrap_err().contains("more than a count can hold"));
    }

    proptest! {
        #[test]
        fn every_64_bit_integer_counts_as_exact_i128_comparison_does(
            values in proptest::collection::vec(any::<u64>(), 1..16),
            min in prop_oneof![any::<u64>().prop_map(i128::from), any::<i64>().prop_map(i128::from), -10i128..10],
            span in prop_oneof![any::<u64>(), 0u64..10],
            float_bounds in any::<bool>(),
        ) {
            let max = min + i128::from(span);
            let bounds = if float_bounds {
                range(Number::Float(min as f64), Number::Float(max as f64))
            } else {
                range(Number::Int(min), Number::Int(max))
            };
            let (lo, hi) = match (bounds.min, bounds.max) {
                (Number::Float(lo), Number::Float(hi)) => (lo as i128, hi as i128),
                _ => (min, max),
            };
            let want = values.iter().filter(|&&v| (lo..=hi).contains(&i128::from(v))).count() as u32;
            let unsigned: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut counts = Vec::new();
            let dtype = RawDtype { kind: RawKind::Uint, bytes: 8, big_endian: false };
            count_raw_rows(&unsigned, unsigned.len(), dtype, &bounds, &mut counts);
            // The same bits as int64 values.
            let signed_want = values.iter().filter(|&&v| (lo..=hi).contains(&i128::from(v as i64))).count() as u32;
            let dtype = RawDtype { kind: RawKind::Int, bytes: 8, big_endian: false };
            count_raw_rows(&unsigned, unsigned.len(), dtype, &bounds, &mut counts);
            prop_assert_eq!(counts, vec![want, signed_want]);
        }
    }

    #[test]
    fn halves_convert_exactly() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), 2f32.powi(-24));
        assert!(half_to_f32(0x7e00).is_nan());
        assert_eq!(half_to_f32(0x7c00), f32::INFINITY);
    }

    #[test]
    fn raw_rows_count_every_dtype() {
        let range = range(Number::Int(4), Number::Int(8));
        let mut counts = Vec::new();
        let data: Vec<u8> = [1i16, 4, 8, 9].iter().flat_map(|v| v.to_be_bytes()).collect();
        count_raw_rows(&data, 4, RawDtype { kind: RawKind::Int, bytes: 2, big_endian: true }, &range, &mut counts);
        let data: Vec<u8> = [4.0f32, f32::NAN, 8.5, 5.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        count_raw_rows(&data, 8, RawDtype { kind: RawKind::Float, bytes: 4, big_endian: false }, &range, &mut counts);
        let data: Vec<u8> = [u64::MAX, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        count_raw_rows(&data, 16, RawDtype { kind: RawKind::Uint, bytes: 8, big_endian: false }, &range, &mut counts);
        assert_eq!(counts, [1, 1, 1, 1, 1]);
    }
}
