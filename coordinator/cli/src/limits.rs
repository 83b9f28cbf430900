//! What a run can hold and write, checked before anything runs: a matrix or an output past
//! the machine is refused at once (exit 2, naming the flag or file), not found out by the
//! OOM killer or a full disk hours later.

use std::path::{Path, PathBuf};

use anyhow::bail;
use corepool::task::MAX_FRAME_LEN;
use corepool_tutorial::{tasks::Width, values::MAX_ROW_VALUES};
use indicatif::HumanBytes;

use super::args::{GeneratorArgs, Mode};

/// Below this, memory is not asked about: every machine corepool runs on has it.
const SURELY_AVAILABLE: u64 = 256 << 20;

/// Room in a chunk's frame for what goes with the values (message, task, sizes).
const FRAME_OVERHEAD: u64 = 4 << 10;

/// Bytes of memory this process may still take: what the system (or its cgroup) has
/// available, swap included.
pub fn available_memory() -> u64 {
    use sysinfo::{MemoryRefreshKind, System};
    let mut system = System::new();
    system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
    let machine = system.available_memory().saturating_add(system.free_swap());
    match system.cgroup_limits() {
        Some(cgroup) => machine.min(cgroup.free_memory.saturating_add(cgroup.free_swap)),
        None => machine,
    }
}

/// Fails, naming `what`, unless `bytes` of memory are available.
pub fn check_memory(what: &str, bytes: u64) -> anyhow::Result<()> {
    if bytes <= SURELY_AVAILABLE {
        return Ok(());
    }
    let available = available_memory();
    if bytes > available {
        bail!("{what} takes {} of memory, and {} is available", HumanBytes(bytes), HumanBytes(available));
    }
    Ok(())
}

/// Fails, naming `flag`, if a row of `cols` values is more than a count can hold.
pub fn check_row_width(flag: &str, cols: u64) -> anyhow::Result<()> {
    if cols > u64::from(MAX_ROW_VALUES) {
        bail!("{flag} {cols}: a row's count is a 32-bit number, so a row holds at most {MAX_ROW_VALUES} values");
    }
    Ok(())
}

/// Fails, naming `place` (a file, and a line), if its rows of `cols` values are more than a
/// count can hold.
pub fn check_file_row_width(place: &str, cols: u64) -> anyhow::Result<()> {
    if cols > u64::from(MAX_ROW_VALUES) {
        bail!(
            "{place}: rows of {cols} values: a row's count is a 32-bit number, so a row holds at most {MAX_ROW_VALUES} values"
        );
    }
    Ok(())
}

/// Fails, naming `--cols`, if one row of `row_bytes` cannot travel to a worker in a chunk.
pub fn check_row_fits_a_chunk(cols: usize, row_bytes: u64) -> anyhow::Result<()> {
    if row_bytes.saturating_add(FRAME_OVERHEAD) > u64::from(MAX_FRAME_LEN) {
        bail!(
            "--cols {cols}: one row is {}, more than a chunk sent to a worker may hold ({})",
            HumanBytes(row_bytes),
            HumanBytes(u64::from(MAX_FRAME_LEN))
        );
    }
    Ok(())
}

/// The folder whose file system takes the bytes of `path` (a file to be written), and the
/// bytes free to this user there: the file's own folder, or for `-`, a device or a FIFO,
/// the folder their bytes wait in until the run has succeeded. `None` where the file system
/// cannot say.
pub fn free_space_for(path: &Path) -> Option<(PathBuf, u64)> {
    let written_into = path.as_os_str() == "-" || std::fs::metadata(path).is_ok_and(|meta| !meta.is_file());
    let dir = if written_into {
        super::pending::spool_dir()?
    } else {
        path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
    };
    let free = free_space_in(&dir)?;
    Some((dir, free))
}

/// Bytes free to this user on the file system of `dir`, if it can say.
fn free_space_in(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `dir` is a NUL-terminated path and `stats` a buffer statvfs fills on success.
    if unsafe { libc::statvfs(dir.as_ptr(), stats.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    // The fields are narrower than 64 bits on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, block_size) = (u64::from(stats.f_bavail), u64::from(stats.f_frsize));
    Some(blocks.saturating_mul(block_size))
}

/// Fails, naming `flag`, if `what` (the file, the counts of ...), at least `bytes`, cannot
/// fit where `path` goes (a file being replaced gives its own room back, so it counts as
/// free).
pub fn check_output_space(flag: &str, path: &Path, what: &str, bytes: u64) -> anyhow::Result<()> {
    let Some((dir, free)) = free_space_for(path) else { return Ok(()) };
    let replaced = std::fs::metadata(path).ok().filter(|meta| meta.is_file()).map_or(0, |meta| meta.len());
    let room = free.saturating_add(replaced);
    if bytes > room {
        bail!(
            "{flag} {}: {what} take at least {}, and the file system of {} has {} free",
            path.display(),
            HumanBytes(bytes),
            dir.display(),
            HumanBytes(room)
        );
    }
    Ok(())
}

/// Bytes per row that `--output` takes at the least: a one-digit count and a newline, and
/// with `--order arrival` the row number and a comma in front.
pub fn least_output_bytes_per_row(arrival: bool) -> u64 {
    if arrival { 4 } else { 2 }
}

/// Fails, naming the flags, if a `count` of the generated matrix cannot be held or
/// written: the matrix and its counts in memory, or (when it streams to `--output`) its
/// chunks in flight in memory and its counts on disk; and a chunk must fit in the frame
/// that takes it to a worker.
pub fn check_generated_count(
    generator: &GeneratorArgs,
    mode: Mode,
    workers: usize,
    chunk_size: Option<usize>,
    output: Option<(&Path, bool)>,
) -> anyhow::Result<()> {
    let GeneratorArgs { rows, cols, low, high, .. } = *generator;
    let width = Width::narrowest(low, high - 1).bytes() as u64;
    let row_bytes = cols as u64 * width;
    let per_row = matches!(mode, Mode::Apply | Mode::ApplyAsync);
    if mode != Mode::Serial {
        check_row_fits_a_chunk(cols, row_bytes)?;
        if let Some(chunk) = chunk_size.filter(|_| !per_row) {
            let bytes = (chunk.min(rows) as u64).saturating_mul(row_bytes);
            if bytes.saturating_add(FRAME_OVERHEAD) > u64::from(MAX_FRAME_LEN) {
                bail!(
                    "--chunk-size {chunk}: a chunk of {} rows of --cols {cols} is {}, more than may be sent to a worker ({}): use at most {} rows",
                    chunk.min(rows),
                    HumanBytes(bytes),
                    HumanBytes(u64::from(MAX_FRAME_LEN)),
                    (u64::from(MAX_FRAME_LEN) - FRAME_OVERHEAD) / row_bytes.max(1)
                );
            }
        }
    }
    let shape = format!("--rows {rows} x --cols {cols}");
    match output {
        None => {
            // Held whole: the matrix, its counts and a second list of them (the serial check's
            // or a repetition's), and for apply-async each row's (row, count) as it arrived.
            let counts_per_row = if mode == Mode::ApplyAsync { 24 } else { 8 };
            let bytes = (rows as u64).saturating_mul(row_bytes.saturating_add(counts_per_row));
            check_memory(&format!("{shape}: holding the matrix and its counts"), bytes)
                .map_err(|error| anyhow::anyhow!("{error} (with --output, the matrix streams instead of being held)"))
        }
        Some((path, arrival)) => {
            let chunk_rows = match (per_row, chunk_size) {
                (true, _) => 1,
                (false, Some(chunk)) => chunk.min(rows),
                (false, None) => corepool_tutorial::matrix::default_chunk_rows(rows, workers, cols * 8),
            } as u64;
            // A chunk is made as 8-byte values, then narrowed; a window of them is in flight.
            let in_flight = if mode == Mode::Serial { 1 } else { 4 * workers as u64 + 1 };
            let chunk_bytes = chunk_rows.saturating_mul(row_bytes);
            let bytes =
                chunk_rows.saturating_mul(cols as u64 * 8).saturating_add(in_flight.saturating_mul(chunk_bytes));
            let chunks = match chunk_size {
                Some(chunk) if !per_row => format!(" --chunk-size {chunk}"),
                _ => String::new(),
            };
            check_memory(&format!("{shape}{chunks}: streaming the matrix in chunks"), bytes)?;
            let least = (rows as u64).saturating_mul(least_output_bytes_per_row(arrival));
            check_output_space("--output", path, &format!("the counts of --rows {rows}"), least)
        }
    }
}

/// Fails, naming the flags, if the demo's matrix cannot be held, or a row cannot be sent
/// to a worker: the demo runs every mode, apply-async's arrivals included, on it.
pub fn check_generated_demo(generator: &GeneratorArgs) -> anyhow::Result<()> {
    let GeneratorArgs { rows, cols, low, high, .. } = *generator;
    let row_bytes = cols as u64 * Width::narrowest(low, high - 1).bytes() as u64;
    check_row_fits_a_chunk(cols, row_bytes)?;
    let bytes = (rows as u64).saturating_mul(row_bytes.saturating_add(24));
    check_memory(&format!("--rows {rows} x --cols {cols}: holding the matrix and its counts"), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_past_a_u32_count_are_refused() {
        assert!(check_row_width("--cols", u64::from(u32::MAX)).is_ok());
        let error = check_row_width("--cols", u64::from(u32::MAX) + 1).unwrap_err().to_string();
        assert!(error.starts_with("--cols 4294967296: a row's count is a 32-bit number"), "{error}");
        let error = check_file_row_width("m.csv:3", 1 << 33).unwrap_err().to_string();
        assert!(error.starts_with("m.csv:3: rows of 8589934592 values: a row's count"), "{error}");
    }

    #[test]
    fn rows_past_a_frame_are_refused() {
        assert!(check_row_fits_a_chunk(5, 5).is_ok());
        assert!(check_row_fits_a_chunk(1 << 30, 1 << 30).unwrap_err().to_string().starts_with("--cols 1073741824"));
    }

    #[test]
    fn memory_past_the_machine_is_refused() {
        assert!(check_memory("a matrix", 1 << 20).is_ok());
        let error = check_memory("a matrix", u64::MAX).unwrap_err().to_string();
        assert!(error.starts_with("a matrix takes 16.00 EiB of memory"), "{error}");
    }

    #[test]
    fn output_space_is_that_of_the_folder_or_of_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        assert!(free_space_for(&path).is_some_and(|(folder, free)| folder == dir.path() && free > 0));
        assert!(check_output_space("--output", &path, "its values", 10).is_ok());
        let error = check_output_space("--output", &path, "its values", u64::MAX).unwrap_err().to_string();
        assert!(error.contains("out.txt: its values take at least 16.00 EiB"), "{error}");
        // Standard output and devices are written at the end, from a spool file.
        let spool = crate::pending::spool_dir().unwrap();
        assert!(free_space_for(Path::new("/dev/null")).is_some_and(|(folder, _)| folder == spool));
        assert!(free_space_for(Path::new("-")).is_some_and(|(folder, _)| folder == spool));
    }
}
