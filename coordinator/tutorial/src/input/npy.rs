//! numpy `.npy` files: the header read with `npyz`, the rows cut into ranges that the
//! workers read for themselves.

use std::{io::Read, path::Path};

use crate::values::{FileRows, MAX_ROW_VALUES, RawDtype, RawKind};
use npyz::{DType, Endianness, NpyHeader, Order, TypeChar};

use super::{InputError, source::DataError};

/// What a `.npy` file's header says, checked: a 2-D array of numbers in C order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyLayout {
    /// The file, as the workers will open it (absolute, as they may run elsewhere in the
    /// tree; they run on this machine).
    pub path: String,
    /// The element type.
    pub dtype: RawDtype,
    /// Rows.
    pub rows: u64,
    /// Values per row.
    pub cols: u64,
    /// Where the data starts.
    pub data_offset: u64,
}

/// Counts the bytes read through it: where the header ends.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Reads and checks the header of the `.npy` file at `path`; `name` is the name errors give.
pub fn open_npy(path: &Path, name: &str) -> Result<NpyLayout, DataError> {
    let npy_error = |message: String| DataError::Npy { file: name.to_owned(), message };
    let file = std::fs::File::open(path).map_err(|source| InputError::Read { path: path.to_path_buf(), source })?;
    let size = file.metadata().map_err(|source| InputError::Read { path: path.to_path_buf(), source })?.len();
    let mut counting = Counting { inner: std::io::BufReader::with_capacity(4096, file), read: 0 };
    let header = NpyHeader::from_reader(&mut counting).map_err(|e| {
        if e.kind() == std::io::ErrorKind::IsADirectory {
            DataError::Input(InputError::Read { path: path.to_path_buf(), source: e })
        } else {
            npy_error(format!("not a .npy file numpy wrote: {e}"))
        }
    })?;
    let data_offset = counting.read;
    let DType::Plain(type_str) = header.dtype() else {
        return Err(npy_error(format!(
            "a structured array ({}); corepool counts plain numbers",
            header.dtype().descr()
        )));
    };
    let kind = match type_str.type_char() {
        TypeChar::Int => RawKind::Int,
        TypeChar::Uint => RawKind::Uint,
        TypeChar::Float => RawKind::Float,
        _ => return Err(npy_error(format!("elements of type {type_str} are not integers or floats"))),
    };
    let dtype = RawDtype {
        kind,
        bytes: u8::try_from(type_str.size_field()).unwrap_or(0),
        big_endian: type_str.endianness() == Endianness::Big,
    };
    if !dtype.supported() {
        return Err(npy_error(format!(
            "elements of type {type_str} are not supported (1 to 8 bytes, floats of 2 to 8)"
        )));
    }
    let shape = header.shape();
    let &[rows, cols] = shape else {
        return Err(npy_error(format!(
            "a {}-D array of shape {shape:?}; corepool counts 2-D arrays (rows x columns)",
            shape.len()
        )));
    };
    if header.order() == Order::Fortran && rows > 1 && cols > 1 {
        return Err(npy_error(
            "a Fortran-order array; save it in C order (numpy.ascontiguousarray) to count its rows".to_owned(),
        ));
    }
    if rows == 0 {
        return Err(InputError::Empty { file: name.to_owned() }.into());
    }
    if cols == 0 {
        return Err(npy_error(format!("a {rows} x 0 array: its rows hold no values to count (as --cols 0 would)")));
    }
    if cols > u64::from(MAX_ROW_VALUES) {
        return Err(npy_error(format!(
            "rows of {cols} values: a row's count is a 32-bit number, so a row holds at most {MAX_ROW_VALUES} values"
        )));
    }
    let need = rows.checked_mul(cols).and_then(|n| n.checked_mul(u64::from(dtype.bytes)));
    match need {
        Some(need) if data_offset + need <= size => {}
        _ => {
            return Err(npy_error(format!(
                "cut short: its header says {rows} x {cols} of {type_str}, but it holds {} bytes of data",
                size.saturating_sub(data_offset)
            )));
        }
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let path = absolute.to_str().ok_or_else(|| npy_error("its path is not UTF-8".to_owned()))?.to_owned();
    Ok(NpyLayout { path, dtype, rows, cols, data_offset })
}

impl NpyLayout {
    /// Bytes per row.
    pub fn row_bytes(&self) -> u64 {
        self.cols * u64::from(self.dtype.bytes)
    }

    /// The rows cut into chunks of `rows_per_chunk` rows.
    pub fn chunks(&self, rows_per_chunk: u64) -> impl Iterator<Item = FileRows> + use<> {
        let (path, rows, cols, offset, row_bytes) =
            (self.path.clone(), self.rows, self.cols, self.data_offset, self.row_bytes());
        let step = rows_per_chunk.max(1);
        (0..rows.div_ceil(step)).map(move |index| {
            let first = index * step;
            FileRows { path: path.clone(), offset: offset + first * row_bytes, rows: step.min(rows - first), cols }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, descr: &str, shape: &[u64], fortran: bool, data: &[u8]) {
        let mut file = std::fs::File::create(path).unwrap();
        let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
        let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
        let order = if fortran { "True" } else { "False" };
        let mut dict = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        use std::io::Write;
        file.write_all(b"\x93NUMPY\x01\x00").unwrap();
        file.write_all(&(dict.len() as u16).to_le_bytes()).unwrap();
        file.write_all(dict.as_bytes()).unwrap();
        file.write_all(data).unwrap();
    }

    #[test]
    fn reads_the_header_and_cuts_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        write(&path, ">i2", &[5, 3], false, &[0; 30]);
        let layout = open_npy(&path, "m.npy").unwrap();
        assert_eq!(layout.dtype, RawDtype { kind: RawKind::Int, bytes: 2, big_endian: true });
        assert_eq!((layout.rows, layout.cols, layout.data_offset), (5, 3, 128));
        let chunks: Vec<FileRows> = layout.chunks(2).collect();
        assert_eq!(chunks.iter().map(|c| (c.offset, c.rows)).collect::<Vec<_>>(), [(128, 2), (140, 2), (152, 1)]);
    }

    #[test]
    fn refuses_what_it_cannot_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npy");
        let error = |descr: &str, shape: &[u64], fortran: bool, data: &[u8]| {
            write(&path, descr, shape, fortran, data);
            open_npy(&path, "m.npy").unwrap_err().to_string()
        };
        assert!(error("<i8", &[4], false, &[0; 32]).contains("a 1-D array"), "1-D");
        assert!(error("<i8", &[2, 2, 2], false, &[0; 64]).contains("a 3-D array"), "3-D");
        assert!(error("<f8", &[2, 2], true, &[0; 32]).contains("Fortran-order"), "Fortran");
        assert!(error("|b1", &[2, 2], false, &[0; 4]).contains("not integers or floats"), "bool");
        assert!(error("<i8", &[2, 2], false, &[0; 31]).contains("cut short"), "short");
        assert!(error("<i8", &[1_000_000_000_000, 0], false, &[]).contains("a 1000000000000 x 0 array"), "no columns");
        assert!(error("|u1", &[1, 1 << 32], false, &[]).contains("at most 4294967295 values"), "too wide");
        std::fs::write(&path, b"not numpy at all").unwrap();
        assert!(open_npy(&path, "m.npy").unwrap_err().to_string().starts_with("m.npy: not a .npy file"));
    }
}
