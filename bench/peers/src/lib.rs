//! Shared pieces of the bench-only binaries: reading the matrix that `corepool gen` writes
//! (`.npy`, int64, C order), the count itself, the report checksum, timing summaries and a
//! tiny flag reader.
//!
//! Everything here is for `scripts/bench`; nothing in corepool depends on it.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

/// A row-major matrix of `i64`, as the tutorial's numpy array holds it.
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` values, row after row.
    pub data: Vec<i64>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads a 2-D little-endian int64 `.npy` file in C order (`corepool gen --dtype int64`).
pub fn read_npy_i64(path: &Path) -> io::Result<Matrix> {
    let bytes = fs::read(path)?;
    let name = path.display();
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(invalid(format!("{name}: not a .npy file")));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        version => return Err(invalid(format!("{name}: .npy version {version} not supported"))),
    };
    let end = start + header_len;
    let header = bytes
        .get(start..end)
        .map(String::from_utf8_lossy)
        .ok_or_else(|| invalid(format!("{name}: truncated header")))?;
    if !header.contains("'descr': '<i8'") {
        return Err(invalid(format!("{name}: expected int64 ('<i8'), header {header}")));
    }
    if !header.contains("'fortran_order': False") {
        return Err(invalid(format!("{name}: expected C order")));
    }
    let shape = header
        .split_once("'shape': (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(shape, _)| shape)
        .ok_or_else(|| invalid(format!("{name}: no shape in header {header}")))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|dim| !dim.is_empty())
        .map(|dim| dim.parse().map_err(|_| invalid(format!("{name}: bad shape ({shape})"))))
        .collect::<io::Result<_>>()?;
    let [rows, cols] = dims[..] else {
        return Err(invalid(format!("{name}: expected 2 dimensions, shape ({shape})")));
    };
    let body = &bytes[end..];
    if body.len() != rows * cols * 8 {
        return Err(invalid(format!("{name}: {} data bytes for a {rows} x {cols} int64 matrix", body.len())));
    }
    let data = body.chunks_exact(8).map(|value| i64::from_le_bytes(value.try_into().expect("8 bytes"))).collect();
    Ok(Matrix { rows, cols, data })
}

/// Counts, for each row of `data` (`cols` values a row), the values `v` with `min <= v <= max`,
/// appending one count a row to `out`: the tutorial's `howmany_within_range`.
pub fn count_rows(data: &[i64], cols: usize, min: i64, max: i64, out: &mut Vec<u32>) {
    out.extend(data.chunks_exact(cols).map(|row| row.iter().filter(|&&v| min <= v && v <= max).count() as u32));
}

/// The checksum of corepool's JSON report: FNV-1a 64 over the counts, each as 4 little-endian
/// bytes, written `fnv1a64:` and 16 lower-case hex digits.
pub fn checksum(counts: &[u32]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for count in counts {
        for byte in count.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("fnv1a64:{hash:016x}")
}

/// Median, min and max of some samples (seconds), with the samples themselves.
pub fn summary(samples: &[f64]) -> Value {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    json!({
        "runs": n,
        "median_s": median,
        "min_s": sorted.first().copied().unwrap_or(f64::NAN),
        "max_s": sorted.last().copied().unwrap_or(f64::NAN),
        "samples_s": samples,
    })
}

/// Seconds since `start`.
pub fn seconds(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

/// The flags after the subcommand: `--name value` pairs.
pub struct Flags(Vec<String>);

impl Flags {
    /// Takes the program's arguments from `skip` on.
    pub fn from_env(skip: usize) -> Flags {
        Flags(std::env::args().skip(skip).collect())
    }

    /// The value after `--name`, parsed, or `default`; exits with a message on a bad value.
    pub fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        match self.0.iter().position(|arg| arg == name) {
            None => default,
            Some(at) => match self.0.get(at + 1).map(|value| value.parse()) {
                Some(Ok(value)) => value,
                _ => fail(&format!("{name} needs a valid value")),
            },
        }
    }

    /// The value after `--name`; exits with a message if it is missing.
    pub fn required(&self, name: &str) -> String {
        let value: String = self.get(name, String::new());
        if value.is_empty() {
            fail(&format!("{name} is required"));
        }
        value
    }
}

/// Prints `message` on standard error and exits with code 2.
pub fn fail(message: &str) -> ! {
    eprintln!("{}: {message}", program());
    std::process::exit(2)
}

fn program() -> String {
    std::env::args()
        .next()
        .and_then(|path| Path::new(&path).file_name().map(|name| name.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "bench".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_the_schema_example() {
        assert_eq!(checksum(&[1, 2, 3]), "fnv1a64:fd1f0f4381eb0395");
    }

    #[test]
    fn counts_in_range() {
        let mut out = Vec::new();
        count_rows(&[4, 8, 9, 3, 0, 5], 3, 4, 8, &mut out);
        assert_eq!(out, [2, 1]);
    }
}
