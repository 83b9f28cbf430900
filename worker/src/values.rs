//! Values that may be integers or floats, the range they are counted in, and the count
//! over rows of a numpy `.npy` file that a worker reads for itself.
//!
//! Integers are compared as integers and floats as floats, so that no 64-bit integer is
//! rounded on its way to a comparison; a NaN is in no range.

use std::{fmt, os::unix::fs::FileExt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::Task;

/// A number as the user wrote it: an integer, or a float (`4.5`, `1e3`, `inf`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Number {
    /// A 64-bit signed integer.
    Int(i64),
    /// A double.
    Float(f64),
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(value) => write!(f, "{value}"),
            Number::Float(value) => write!(f, "{value}"),
        }
    }
}

impl FromStr for Number {
    type Err = String;

    /// An integer if the text is one, else a float; NaN is refused, as no value lies
    /// beside it.
    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(value) = text.parse::<i64>() {
            return Ok(Number::Int(value));
        }
        match text.parse::<f64>() {
            Ok(value) if value.is_nan() => Err(format!("{text:?} is not a number to compare with")),
            Ok(value) => Ok(Number::Float(value)),
            Err(_) => Err(format!("{text:?} is not a number")),
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
}

/// Bit 63: doubles at or past it are beyond every `i64`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// The closed range `[min, max]` that values are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValueRange {
    /// Smallest value counted.
    pub min: Number,
    /// Largest value counted.
    pub max: Number,
}

impl ValueRange {
    /// The integers in the range, as `lo..=hi`; `None` if there is none (`[4.2, 4.8]`).
    pub fn int_bounds(&self) -> Option<(i64, i64)> {
        let lo = match self.min {
            Number::Int(value) => value,
            Number::Float(value) if value.is_nan() || value >= TWO_POW_63 => return None,
            Number::Float(value) if value < -TWO_POW_63 => i64::MIN,
            Number::Float(value) => value.ceil() as i64,
        };
        let hi = match self.max {
            Number::Int(value) => value,
            Number::Float(value) if value.is_nan() || value < -TWO_POW_63 => return None,
            Number::Float(value) if value >= TWO_POW_63 => i64::MAX,
            Number::Float(value) => value.floor() as i64,
        };
        (lo <= hi).then_some((lo, hi))
    }

    /// Whether the integer `value` lies in the range.
    pub fn contains_i64(&self, value: i64) -> bool {
        self.int_bounds().is_some_and(|(lo, hi)| (lo..=hi).contains(&value))
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
        // For an integer bound, `value >= bound` exactly when `floor(value) >= bound`.
        Number::Int(_) if value.is_nan() || value < -TWO_POW_63 => false,
        Number::Int(_) if value >= TWO_POW_63 => true,
        Number::Int(bound) => value.floor() as i64 >= bound,
    }
}

/// `value <= bound`, exact even for integer bounds beyond 2^53.
#[inline]
fn at_most(value: f64, bound: Number) -> bool {
    match bound {
        Number::Float(bound) => value <= bound,
        Number::Int(bound) if bound.unsigned_abs() <= 1 << 53 => value <= bound as f64,
        // For an integer bound, `value <= bound` exactly when `ceil(value) <= bound`.
        Number::Int(_) if value.is_nan() || value >= TWO_POW_63 => false,
        Number::Int(_) if value < -TWO_POW_63 => true,
        Number::Int(bound) => value.ceil() as i64 <= bound,
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

/// Bytes read at a time: whole rows of about this much, so the buffer stays in cache.
const READ_BLOCK: usize = 1 << 20;

impl Task for CountNpyRows {
    const NAME: &'static str = "count-npy-rows";
    type Chunk = FileRows;
    type Output = u32;

    fn run(&self, chunk: FileRows) -> Result<Vec<u32>, String> {
        if !self.dtype.supported() {
            return Err(format!("cannot count elements of type {}", self.dtype.name()));
        }
        let width = usize::from(self.dtype.bytes);
        let row_bytes = usize::try_from(chunk.cols).ok().and_then(|cols| cols.checked_mul(width));
        let rows = usize::try_from(chunk.rows).map_err(|_| "too many rows".to_owned())?;
        let row_bytes = row_bytes.ok_or_else(|| format!("{} columns are too many", chunk.cols))?;
        if row_bytes == 0 {
            return Ok(vec![0; rows]);
        }
        let file = std::fs::File::open(&chunk.path).map_err(|e| format!("{}: cannot open: {e}", chunk.path))?;
        let rows_per_block = (READ_BLOCK / row_bytes).max(1);
        let mut buffer = vec![0u8; rows_per_block.min(rows) * row_bytes];
        let mut counts = Vec::with_capacity(rows);
        let mut offset = chunk.offset;
        let mut left = rows;
        while left > 0 {
            let take = left.min(rows_per_block);
            let block = &mut buffer[..take * row_bytes];
            file.read_exact_at(block, offset).map_err(|e| {
                format!(
                    "{}: cannot read {} bytes at offset {offset} (was the file cut short?): {e}",
                    chunk.path,
                    block.len()
                )
            })?;
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
    let Some((lo, hi)) = range.int_bounds().or(match dtype.kind {
        // Floats are compared as floats, whether or not an integer lies in the range.
        RawKind::Float => Some((1, 0)),
        _ => None,
    }) else {
        counts.extend(std::iter::repeat_n(0, data.len() / row_bytes));
        return;
    };
    // `lo <= v <= hi` as one unsigned comparison, without a branch.
    let span = hi.wrapping_sub(lo) as u64;
    let int = move |value: i64| (value.wrapping_sub(lo) as u64) <= span;
    let range = *range;
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
    match (dtype.kind, dtype.bytes) {
        (RawKind::Int, 1) => by_endianness!(i8, 1, |v: i8| int(v.into())),
        (RawKind::Int, 2) => by_endianness!(i16, 2, |v: i16| int(v.into())),
        (RawKind::Int, 4) => by_endianness!(i32, 4, |v: i32| int(v.into())),
        (RawKind::Int, 8) => by_endianness!(i64, 8, int),
        (RawKind::Uint, 1) => by_endianness!(u8, 1, |v: u8| int(v.into())),
        (RawKind::Uint, 2) => by_endianness!(u16, 2, |v: u16| int(v.into())),
        (RawKind::Uint, 4) => by_endianness!(u32, 4, |v: u32| int(v.into())),
        // Beyond i64, only a float bound can reach: compared as floats.
        (RawKind::Uint, 8) => by_endianness!(u64, 8, |v: u64| match i64::try_from(v) {
            Ok(v) => int(v),
            Err(_) => range.contains_f64(v as f64),
        }),
        (RawKind::Float, 2) => by_endianness!(u16, 2, |v: u16| range.contains_f64(half_to_f32(v).into())),
        (RawKind::Float, 4) => by_endianness!(f32, 4, |v: f32| range.contains_f64(v.into())),
        (RawKind::Float, 8) => by_endianness!(f64, 8, |v: f64| range.contains_f64(v)),
        _ => counts.extend(std::iter::repeat_n(0, data.len() / row_bytes)),
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
        let big = (1i64 << 53) + 1;
        let above = range(Number::Int(big), Number::Int(i64::MAX));
        // 2^53 as a double is below 2^53 + 1, though `big as f64` rounds to it.
        assert!(!above.contains_f64((1u64 << 53) as f64));
        assert!(above.contains_f64((1u64 << 54) as f64));
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
