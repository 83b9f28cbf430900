//! `corepool gen`: a seeded random matrix written to CSV or `.npy`, streamed (any size, in
//! constant memory) and put in place whole, so that Python (`numpy.load`,
//! `pandas.read_csv`) and corepool can run on the very same file.

use std::io::Write;

use anyhow::bail;
use npyz::WriterBuilder;

use super::args::{Dtype, Format, GenArgs, GeneratorArgs};

impl Dtype {
    /// The range of values the type holds, for integer types.
    fn integer_range(self) -> Option<(i128, i128)> {
        Some(match self {
            Dtype::Int8 => (i8::MIN.into(), i8::MAX.into()),
            Dtype::Int16 => (i16::MIN.into(), i16::MAX.into()),
            Dtype::Int32 => (i32::MIN.into(), i32::MAX.into()),
            Dtype::Int64 => (i64::MIN.into(), i64::MAX.into()),
            Dtype::Uint8 => (0, u8::MAX.into()),
            Dtype::Uint16 => (0, u16::MAX.into()),
            Dtype::Uint32 => (0, u32::MAX.into()),
            Dtype::Float32 | Dtype::Float64 => return None,
        })
    }
}

/// `corepool gen`'s settings, checked.
#[derive(Debug, Clone)]
pub struct GenSettings {
    rows: usize,
    cols: usize,
    low: i64,
    high: i64,
    seed: u64,
    dtype: Dtype,
    format: Format,
    output: std::path::PathBuf,
}

impl GenArgs {
    /// Checks every flag; nothing is written yet.
    pub fn check(self) -> anyhow::Result<GenSettings> {
        let GeneratorArgs { rows, cols, low, high, seed } = self.generator.check()?;
        if let Some((min, max)) = self.dtype.integer_range()
            && (i128::from(low) < min || i128::from(high) - 1 > max)
        {
            bail!("--dtype {}: holds {min}..={max}, not {low}..{high}", self.dtype.name());
        }
        let format = match (self.format, self.output.extension().and_then(|e| e.to_str())) {
            (Some(format), _) => format,
            (None, Some(ext)) if ext.eq_ignore_ascii_case("npy") => Format::Npy,
            (None, Some(ext)) if ["csv", "txt"].iter().any(|known| ext.eq_ignore_ascii_case(known)) => Format::Csv,
            (None, _) => bail!("--output {}: name it .csv or .npy, or give --format", self.output.display()),
        };
        super::output::check_output_folder("--output", &self.output)?;
        let least = least_file_bytes(rows as u64 * cols as u64, low, high, self.dtype, format);
        let what = format!("the {} values of --rows {rows} x --cols {cols}", self.dtype.name());
        super::limits::check_output_space("--output", &self.output, &what, least)?;
        let Self { dtype, output, .. } = self;
        Ok(GenSettings { rows, cols, low, high, seed, dtype, format, output })
    }
}

impl Dtype {
    /// numpy's name for the type.
    fn name(self) -> &'static str {
        match self {
            Dtype::Int8 => "int8",
            Dtype::Int16 => "int16",
            Dtype::Int32 => "int32",
            Dtype::Int64 => "int64",
            Dtype::Uint8 => "uint8",
            Dtype::Uint16 => "uint16",
            Dtype::Uint32 => "uint32",
            Dtype::Float32 => "float32",
            Dtype::Float64 => "float64",
        }
    }
}

/// The fewest bytes a file of `values` values drawn from `low..high` can take: each value's
/// bytes in `.npy` (after a header of at least 64), or in CSV its fewest digits and a
/// separator.
fn least_file_bytes(values: u64, low: i64, high: i64, dtype: Dtype, format: Format) -> u64 {
    let per_value = match (format, dtype) {
        (Format::Npy, Dtype::Int8 | Dtype::Uint8) => 1,
        (Format::Npy, Dtype::Int16 | Dtype::Uint16) => 2,
        (Format::Npy, Dtype::Int32 | Dtype::Uint32 | Dtype::Float32) => 4,
        (Format::Npy, Dtype::Int64 | Dtype::Float64) => 8,
        // "0.0" at the shortest.
        (Format::Csv, Dtype::Float32 | Dtype::Float64) => 4,
        (Format::Csv, _) => {
            let top = high - 1;
            let shortest = if low <= 0 && top >= 0 {
                0
            } else if low > 0 {
                low
            } else {
                top
            };
            itoa::Buffer::new().format(shortest).len() as u64 + 1
        }
    };
    let header = if format == Format::Npy { 64 } else { 0 };
    values.saturating_mul(per_value).saturating_add(header)
}

/// Writes the matrix `settings` describe.
pub fn generate(settings: &GenSettings) -> anyhow::Result<()> {
    let count = settings.rows * settings.cols;
    let (low, high, seed) = (settings.low, settings.high, settings.seed);
    let integers = || corepool_tutorial::matrix::random_integers(low, high, seed).take(count);
    let reals = || corepool_tutorial::matrix::random_reals(low as f64, high as f64, seed).take(count);
    let shape = [settings.rows as u64, settings.cols as u64];
    super::pending::write_whole("--output", &settings.output, |out| match settings.format {
        Format::Csv => match settings.dtype {
            Dtype::Float32 => write_csv_reals(out, settings.cols, reals().map(|v| v as f32)),
            Dtype::Float64 => write_csv_reals(out, settings.cols, reals()),
            _ => write_csv_integers(out, settings.cols, integers()),
        },
        Format::Npy => match settings.dtype {
            Dtype::Int8 => write_npy(out, &shape, integers().map(|v| v as i8)),
            Dtype::Int16 => write_npy(out, &shape, integers().map(|v| v as i16)),
            Dtype::Int32 => write_npy(out, &shape, integers().map(|v| v as i32)),
            Dtype::Int64 => write_npy(out, &shape, integers()),
            Dtype::Uint8 => write_npy(out, &shape, integers().map(|v| v as u8)),
            Dtype::Uint16 => write_npy(out, &shape, integers().map(|v| v as u16)),
            Dtype::Uint32 => write_npy(out, &shape, integers().map(|v| v as u32)),
            Dtype::Float32 => write_npy(out, &shape, reals().map(|v| v as f32)),
            Dtype::Float64 => write_npy(out, &shape, reals()),
        },
    })?;
    Ok(())
}

fn write_npy<T: npyz::AutoSerialize>(
    out: &mut dyn Write,
    shape: &[u64],
    values: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    let mut writer = npyz::WriteOptions::new().default_dtype().shape(shape).writer(out).begin_nd()?;
    writer.extend(values)?;
    writer.finish()
}

fn write_csv_integers(out: &mut dyn Write, cols: usize, values: impl Iterator<Item = i64>) -> std::io::Result<()> {
    let mut buffer = itoa::Buffer::new();
    for (index, value) in values.enumerate() {
        out.write_all(buffer.format(value).as_bytes())?;
        out.write_all(if (index + 1) % cols == 0 { b"\n" } else { b"," })?;
    }
    Ok(())
}

fn write_csv_reals<T: ryu::Float>(
    out: &mut dyn Write,
    cols: usize,
    values: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    let mut buffer = ryu::Buffer::new();
    for (index, value) in values.enumerate() {
        out.write_all(buffer.format(value).as_bytes())?;
        out.write_all(if (index + 1) % cols == 0 { b"\n" } else { b"," })?;
    }
    Ok(())
}
