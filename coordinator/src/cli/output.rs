//! Writing results: whole or not at all.

use std::{
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::Context;

/// Writes `write`'s lines to `path` through a temporary file in the same folder, renamed
/// into place only once everything is written, so that a failed run leaves nothing.
pub fn write_atomically(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> anyhow::Result<()> {
    write_atomically_for("--output", path, write)
}

/// [`write_atomically`] for the file of another flag than `--output`, named in errors.
pub fn write_atomically_for(
    flag: &str,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file = tempfile::Builder::new()
        .prefix(".corepool-output-")
        .tempfile_in(dir)
        .with_context(|| format!("{flag} {}: cannot create a file in {}", path.display(), dir.display()))?;
    super::signals::set_pending_output(Some(file.path().to_path_buf()));
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    write(&mut writer).and_then(|()| writer.flush()).with_context(|| format!("writing {}", path.display()))?;
    let file =
        writer.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", path.display()))?;
    file.as_file().sync_all().with_context(|| format!("writing {}", path.display()))?;
    let persisted = file.persist(path);
    super::signals::set_pending_output(None);
    persisted.with_context(|| format!("{flag} {}: cannot put the file in place", path.display()))?;
    Ok(())
}

/// One count a line, in row order.
pub fn write_counts(out: &mut dyn Write, counts: &[u32]) -> std::io::Result<()> {
    counts.iter().try_for_each(|count| writeln!(out, "{count}"))
}

/// `row,count` lines in the order given.
pub fn write_arrivals(out: &mut dyn Write, arrival: &[(usize, u32)]) -> std::io::Result<()> {
    arrival.iter().try_for_each(|(row, count)| writeln!(out, "{row},{count}"))
}

/// Checks, before anything runs, that `path` can be written: its folder exists and it is
/// not itself a folder. `flag` names it in the error.
pub fn check_output_folder(flag: &str, path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("{flag} {}: folder {} is not there", path.display(), dir.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("{flag} {}: {} is not a folder", path.display(), dir.display());
    }
    if path.is_dir() {
        anyhow::bail!("{flag} {}: is a folder", path.display());
    }
    Ok(())
}
