//! Where results go, and how: `-` is standard output; a device, FIFO or `/dev/stdout` is
//! written into; a regular file (or a new name) is replaced whole, only once the run has
//! succeeded (see `pending`). A symlink is followed: its target is what gets written.

use std::{
    io::Write,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

/// Where a file flag's bytes end up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// One of this process's descriptors: `-` is 1, and `/dev/stdout` or
    /// `/proc/self/fd/N` lead here too. Written into.
    Descriptor(i32),
    /// Something that is not a regular file (a device, a FIFO): written into, never
    /// replaced.
    Special(PathBuf),
    /// A regular file, or a name not taken yet: replaced whole. When the name given was a
    /// symlink, this is the file it leads to, and the link stays.
    Replace(PathBuf),
}

/// Symlinks followed at most, as the kernel does.
const MAX_LINKS: usize = 40;

/// Finds where `path` leads: through symlinks, to a descriptor, a special file or a
/// regular file (or a free name). `flag` names it in errors.
pub fn resolve(flag: &str, path: &Path) -> anyhow::Result<Destination> {
    if path.as_os_str() == "-" {
        return Ok(Destination::Descriptor(1));
    }
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        if let Some(fd) = own_descriptor(&current) {
            return Ok(Destination::Descriptor(fd));
        }
        let meta = match std::fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Destination::Replace(current)),
            Err(error) => return Err(error).with_context(|| format!("{flag} {}", path.display())),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = std::fs::read_link(&current).with_context(|| format!("{flag} {}", path.display()))?;
            current = folder_of(&current).join(target);
        } else if kind.is_file() {
            return Ok(Destination::Replace(current));
        } else if kind.is_dir() {
            bail!("{flag} {}: is a folder", path.display());
        } else {
            return Ok(Destination::Special(current));
        }
    }
    bail!("{flag} {}: too many levels of symbolic links", path.display())
}

/// The descriptor `path` names, when it is one of this process's (`/proc/self/fd/N`,
/// `/dev/fd/N`, or a link to them).
fn own_descriptor(path: &Path) -> Option<i32> {
    let fd: i32 = path.file_name()?.to_str()?.parse().ok()?;
    let folder = std::fs::canonicalize(path.parent()?).ok()?;
    let own = Path::new("/proc").join(std::process::id().to_string());
    let ours = folder == own.join("fd")
        || (folder.starts_with(own.join("task")) && folder.file_name().is_some_and(|name| name == "fd"));
    ours.then_some(fd)
}

/// The folder a file's name lives in (`.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Whether `path` leads to standard output.
pub fn is_stdout(path: &Path) -> bool {
    resolve("", path).is_ok_and(|destination| destination == Destination::Descriptor(1))
}

/// Checks, before anything runs, that `path` can be written: a descriptor that is open,
/// a special file, or a regular file (or free name) in a folder that exists. `flag` names
/// it in the error.
pub fn check_output_folder(flag: &str, path: &Path) -> anyhow::Result<()> {
    match resolve(flag, path)? {
        Destination::Descriptor(fd) => {
            descriptor_metadata(fd).map_err(|_| match fd {
                1 => anyhow::anyhow!("{flag} {}: standard output is closed", path.display()),
                _ => anyhow::anyhow!("{flag} {}: descriptor {fd} is not open", path.display()),
            })?;
        }
        Destination::Special(_) => {}
        Destination::Replace(real) => {
            let dir = folder_of(&real);
            let meta = std::fs::metadata(dir)
                .with_context(|| format!("{flag} {}: folder {} is not there", path.display(), dir.display()))?;
            if !meta.is_dir() {
                bail!("{flag} {}: {} is not a folder", path.display(), dir.display());
            }
        }
    }
    Ok(())
}

/// What a file is on disk: device and inode of the file, or of its folder and its name
/// when it does not exist yet.
#[derive(Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    /// The name in the folder, for a file not there yet.
    name: Option<std::ffi::OsString>,
    /// A character device (a terminal, `/dev/null`) may take several streams at once.
    shareable: bool,
}

impl FileId {
    fn of(meta: &std::fs::Metadata, name: Option<std::ffi::OsString>) -> Self {
        let shareable = name.is_none() && meta.file_type().is_char_device();
        Self { dev: meta.dev(), ino: meta.ino(), name, shareable }
    }

    /// Where `destination` writes; `None` when that cannot be told (the run then fails
    /// later with the real error).
    fn of_destination(destination: &Destination) -> Option<Self> {
        match destination {
            Destination::Descriptor(fd) => descriptor_metadata(*fd).ok().map(|meta| Self::of(&meta, None)),
            Destination::Special(path) => std::fs::metadata(path).ok().map(|meta| Self::of(&meta, None)),
            Destination::Replace(real) => match std::fs::metadata(real) {
                Ok(meta) => Some(Self::of(&meta, None)),
                Err(_) => {
                    let folder = std::fs::metadata(folder_of(real)).ok()?;
                    Some(Self::of(&folder, Some(real.file_name()?.to_owned())))
                }
            },
        }
    }

    /// The input read: `-` is standard input.
    fn of_input(path: &Path) -> Option<Self> {
        let meta = if path.as_os_str() == "-" { descriptor_metadata(0).ok()? } else { std::fs::metadata(path).ok()? };
        Some(Self::of(&meta, None))
    }
}

fn descriptor_metadata(fd: i32) -> std::io::Result<std::fs::Metadata> {
    use std::os::fd::FromRawFd;
    // SAFETY: the File is never dropped (ManuallyDrop), so `fd` stays open and ours;
    // fstat on a closed descriptor fails with EBADF.
    let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    file.metadata()
}

/// Refuses files that would clobber one another, by what they are on disk (after links),
/// not by name: `--output` or `--report-file` being the input, or each other; and
/// counts on standard output while the JSON report takes it.
pub fn check_distinct(
    input: Option<&Path>,
    output: Option<&Path>,
    report_file: Option<&Path>,
    report_to_stdout: bool,
) -> anyhow::Result<()> {
    let output_to = output.map(|path| resolve("--output", path)).transpose()?;
    let report_to = report_file.map(|path| resolve("--report-file", path)).transpose()?;
    let input_id = input.and_then(FileId::of_input);
    let output_id = output_to.as_ref().and_then(FileId::of_destination);
    let report_id = report_to.as_ref().and_then(FileId::of_destination);
    let clash = |a: &Option<FileId>, b: &Option<FileId>| matches!((a, b), (Some(a), Some(b)) if a == b && !a.shareable);
    let input = input.map(|path| if path.as_os_str() == "-" { Path::new("given on standard input") } else { path });
    if let (Some(output), Some(input)) = (output, input)
        && clash(&output_id, &input_id)
    {
        bail!("--output {}: is the input file {} (the same file on disk)", output.display(), input.display());
    }
    if let (Some(report), Some(input)) = (report_file, input)
        && clash(&report_id, &input_id)
    {
        bail!("--report-file {}: is the input file {} (the same file on disk)", report.display(), input.display());
    }
    if let (Some(report), Some(output)) = (report_file, output)
        && (clash(&report_id, &output_id)
            || (matches!(output_to, Some(Destination::Descriptor(_))) && output_to == report_to))
    {
        bail!("--report-file {}: is the same file as --output {}", report.display(), output.display());
    }
    if let Some(output) = output
        && report_to_stdout
        && output_to == Some(Destination::Descriptor(1))
    {
        bail!(
            "--output {}: standard output carries the JSON report; give the report a --report-file, or the counts a file",
            output.display()
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_lead_to_their_target_and_descriptors_to_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.csv");
        std::fs::write(&real, "1\n").unwrap();
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink("real.csv", &link).unwrap();
        assert_eq!(resolve("--output", &link).unwrap(), Destination::Replace(dir.path().join("real.csv")));
        let dangling = dir.path().join("dangling.csv");
        std::os::unix::fs::symlink("new.csv", &dangling).unwrap();
        assert_eq!(resolve("--output", &dangling).unwrap(), Destination::Replace(dir.path().join("new.csv")));
        assert_eq!(resolve("--output", Path::new("-")).unwrap(), Destination::Descriptor(1));
        assert_eq!(resolve("--output", Path::new("/proc/self/fd/2")).unwrap(), Destination::Descriptor(2));
        let to_stdout = dir.path().join("out");
        std::os::unix::fs::symlink("/dev/fd/1", &to_stdout).unwrap();
        assert!(is_stdout(&to_stdout));
        let looped = dir.path().join("loop");
        std::os::unix::fs::symlink("loop", &looped).unwrap();
        assert!(resolve("--output", &looped).unwrap_err().to_string().contains("too many levels"));
        assert!(resolve("--output", dir.path()).unwrap_err().to_string().ends_with("is a folder"));
    }

    #[test]
    fn the_same_file_under_another_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("m.csv");
        std::fs::write(&input, "1,2\n").unwrap();
        let hard = dir.path().join("hard.csv");
        std::fs::hard_link(&input, &hard).unwrap();
        let error = check_distinct(Some(&input), Some(&hard), None, false).unwrap_err().to_string();
        assert!(error.starts_with("--output ") && error.contains("is the input file"), "{error}");
        let new = dir.path().join("new.csv");
        let dotted = dir.path().join(".").join("new.csv");
        let error = check_distinct(Some(&input), Some(&new), Some(&dotted), false).unwrap_err().to_string();
        assert!(error.contains("is the same file as --output"), "{error}");
        check_distinct(Some(&input), Some(&new), Some(&dir.path().join("r.json")), false).unwrap();
        assert!(check_distinct(None, Some(Path::new("-")), None, true).is_err());
        check_distinct(None, Some(Path::new("-")), None, false).unwrap();
    }
}
