//! Files being written: kept out of sight until the whole run has succeeded, then put in
//! place together.
//!
//! A regular file (or a name not taken yet) is written to an unnamed file in its folder
//! (`O_TMPFILE`), which nothing can leave behind, and linked into place at the end; where
//! the file system has no unnamed files, to a named `.corepool-output-*` file, locked
//! while it lives so that a later run can tell a dead run's leftover from a live one's.
//! Anything else (standard output, a device, a FIFO) is written into, never replaced:
//! its bytes wait in an unnamed file of the temporary folder and are copied in at the end.

use std::{
    fs::{File, OpenOptions},
    io::{Seek, SeekFrom, Write},
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context, bail};

use super::output::{Destination, folder_of, resolve};

/// How the names of temporary files begin: the sweep of dead runs' files looks for it.
pub const TEMP_PREFIX: &str = ".corepool-output-";

/// A named temporary file younger than this is never swept: its writer may not have
/// taken its lock yet.
const SWEEP_AFTER: Duration = Duration::from_secs(10);

/// The folder where the bytes for standard output, a device or a FIFO wait until the run
/// has succeeded: the first of `TMPDIR` (or the system's temporary folder), `/var/tmp` and
/// `/dev/shm` that takes an unnamed file.
pub fn spool_dir() -> Option<PathBuf> {
    let candidates =
        [std::env::temp_dir(), PathBuf::from("/tmp"), PathBuf::from("/var/tmp"), PathBuf::from("/dev/shm")];
    candidates.into_iter().find(|dir| tempfile::tempfile_in(dir).is_ok())
}

/// One file flag's bytes, written out of sight until [`commit`] puts them in place.
pub struct Pending {
    /// The flag, for errors.
    flag: &'static str,
    /// The path as the user gave it, for errors.
    shown: PathBuf,
    destination: Destination,
    file: File,
    /// The temporary file's name, when it has one.
    named: Option<PathBuf>,
}

impl Pending {
    /// Starts writing what `flag` names at `path`; nothing is visible there until
    /// [`commit`].
    pub fn create(flag: &'static str, path: &Path) -> anyhow::Result<Self> {
        let destination = resolve(flag, path)?;
        let (file, named) = match &destination {
            Destination::Replace(real) => {
                let dir = folder_of(real);
                sweep_stale(dir);
                temp_in(dir)
                    .with_context(|| format!("{flag} {}: cannot create a file in {}", path.display(), dir.display()))?
            }
            // Written straight into at the end; the bytes wait in a spool file meanwhile.
            Destination::Descriptor(_) | Destination::Special(_) => {
                let dir = spool_dir().with_context(|| {
                    format!("{flag} {}: no folder to hold its bytes until the run ends", path.display())
                })?;
                let spool = tempfile::tempfile_in(&dir)
                    .with_context(|| format!("{flag} {}: cannot create a file in {}", path.display(), dir.display()))?;
                (spool, None)
            }
        };
        Ok(Self { flag, shown: path.to_path_buf(), destination, file, named })
    }

    fn context(&self) -> String {
        format!("writing {}", self.shown.display())
    }

    /// Puts a finished regular file in place over (or beside) `real`.
    fn place(&mut self, real: &Path) -> anyhow::Result<()> {
        let (flag, shown) = (self.flag, self.shown.display());
        match std::fs::symlink_metadata(real) {
            Ok(meta) if meta.is_file() => keep_mode_and_owner(&self.file, &meta).with_context(|| self.context())?,
            Ok(_) => bail!("{flag} {shown}: {} is no longer a regular file; left as it is", real.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error).with_context(|| self.context()),
        }
        let cannot = || format!("{flag} {shown}: cannot put the file in place");
        match &self.named {
            Some(name) => std::fs::rename(name, real).with_context(cannot)?,
            None => link_unnamed(&self.file, real).with_context(cannot)?,
        }
        self.named = None;
        // The rename itself must reach the disk too.
        if let Ok(dir) = File::open(folder_of(real)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Copies the waiting bytes into a destination that is written into, not replaced.
    fn copy_out(&mut self) -> anyhow::Result<()> {
        let context = self.context();
        let mut target = match &self.destination {
            Destination::Descriptor(fd) => duplicate(*fd).with_context(|| context.clone())?,
            Destination::Special(path) => OpenOptions::new().write(true).open(path).with_context(|| context.clone())?,
            Destination::Replace(_) => unreachable!("replaced, not copied"),
        };
        self.file.seek(SeekFrom::Start(0)).with_context(|| context.clone())?;
        std::io::copy(&mut self.file, &mut target).and_then(|_| target.flush()).with_context(|| context)?;
        Ok(())
    }
}

impl Write for Pending {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.file.write(bytes)
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Pending {
    fn seek(&mut self, position: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(position)
    }
}

impl AsRawFd for Pending {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(name) = self.named.take() {
            let _ = std::fs::remove_file(&name);
            super::signals::untrack(&name);
        }
    }
}

/// Puts every file in place, or as few as a failure allows: the ones written into (which
/// cannot be taken back) first, then the replaced ones, each an atomic rename. A signal
/// that arrived before stops it; one that arrives during the renames waits for them.
pub fn commit(files: impl IntoIterator<Item = Pending>) -> anyhow::Result<()> {
    let mut files: Vec<Pending> = files.into_iter().collect();
    for file in &mut files {
        file.file.flush().with_context(|| file.context())?;
        if matches!(file.destination, Destination::Replace(_)) {
            file.file.sync_all().with_context(|| file.context())?;
        }
    }
    for file in files.iter_mut().filter(|file| !matches!(file.destination, Destination::Replace(_))) {
        file.copy_out()?;
    }
    let names: Vec<PathBuf> = files.iter().filter_map(|file| file.named.clone()).collect();
    let placed = super::signals::committing(|| {
        for file in &mut files {
            if let Destination::Replace(real) = file.destination.clone() {
                file.place(&real)?;
            }
        }
        Ok(())
    });
    // The names that were renamed into place; the others go with their files.
    for name in names.iter().filter(|name| !files.iter().any(|file| file.named.as_ref() == Some(name))) {
        super::signals::untrack(name);
    }
    placed
}

/// Writes `write`'s bytes to what `flag` names at `path`, whole or not at all.
pub fn write_whole(
    flag: &'static str,
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut pending = Pending::create(flag, path)?;
    let context = pending.context();
    {
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, &mut pending);
        write(&mut writer).and_then(|()| writer.flush()).with_context(|| context)?;
    }
    commit([pending])
}

/// An unnamed file in `dir` where the file system has them (and `/proc` can link it into
/// place), else a named one; locked either way, and created with mode 0666 less the
/// umask, as a shell's `>` would.
fn temp_in(dir: &Path) -> std::io::Result<(File, Option<PathBuf>)> {
    if Path::new("/proc/self/fd").is_dir() {
        let unnamed = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o666)
            .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
            .open(dir);
        if let Ok(file) = unnamed {
            lock(&file)?;
            return Ok((file, None));
        }
    }
    temp_named_in(dir).map(|(file, name)| (file, Some(name)))
}

/// A named temporary file in `dir`, locked, and known to the signal handler.
pub fn temp_named_in(dir: &Path) -> std::io::Result<(File, PathBuf)> {
    let (file, name) = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)?
        .keep()
        .map_err(|e| e.error)?;
    super::signals::track(&name);
    if let Err(error) = lock(&file) {
        let _ = std::fs::remove_file(&name);
        super::signals::untrack(&name);
        return Err(error);
    }
    Ok((file, name))
}

/// Holds the temporary file's lock for as long as it is open: its name, if it gets one,
/// is then known to belong to a live run.
fn lock(file: &File) -> std::io::Result<()> {
    file.try_lock().map_err(|error| match error {
        std::fs::TryLockError::Error(error) => error,
        std::fs::TryLockError::WouldBlock => std::io::Error::other("a new file is locked already"),
    })
}

/// Removes temporary files that dead runs left in `dir`: old enough, and unlocked (a
/// lock is the file's, so this holds across process namespaces).
pub fn sweep_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        if !entry.file_name().as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
            continue;
        }
        let path = entry.path();
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path);
        let Ok(file) = opened else { continue };
        let Ok(meta) = file.metadata() else { continue };
        let young = meta.modified().ok().and_then(|at| now.duration_since(at).ok()).is_none_or(|age| age < SWEEP_AFTER);
        if !meta.is_file() || young {
            continue;
        }
        if file.try_lock().is_ok() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Gives a replacement the mode and, where allowed, the owner of the file it replaces.
fn keep_mode_and_owner(file: &File, old: &std::fs::Metadata) -> std::io::Result<()> {
    // The owner first: changing it clears set-user-ID bits that the mode then restores.
    if std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())).is_err() {
        let _ = std::os::unix::fs::fchown(file, None, Some(old.gid()));
    }
    file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))
}

/// Links an unnamed file in as `real`: straight to its name if that is free, else to a
/// fresh name beside it, renamed over `real` at once.
fn link_unnamed(file: &File, real: &Path) -> std::io::Result<()> {
    match link_fd(file, real) {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        done => return done,
    }
    let dir = folder_of(real);
    for attempt in 0u32.. {
        let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let name = dir.join(format!("{TEMP_PREFIX}{:x}-{stamp:x}-{attempt}", std::process::id()));
        match link_fd(file, &name) {
            Ok(()) => {
                let renamed = std::fs::rename(&name, real);
                if renamed.is_err() {
                    let _ = std::fs::remove_file(&name);
                }
                return renamed;
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => continue,
            Err(error) => return Err(error),
        }
    }
    unreachable!("the loop returns")
}

/// `linkat` of an open unnamed file to `name`, through `/proc/self/fd`.
fn link_fd(file: &File, name: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let source = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL");
    let target = std::ffi::CString::new(name.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a NUL byte in the name"))?;
    // SAFETY: two NUL-terminated paths that outlive the call.
    let linked = unsafe {
        libc::linkat(libc::AT_FDCWD, source.as_ptr(), libc::AT_FDCWD, target.as_ptr(), libc::AT_SYMLINK_FOLLOW)
    };
    if linked == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// A file of this process's own descriptor `fd`, closed on its own without closing `fd`.
fn duplicate(fd: i32) -> std::io::Result<File> {
    // SAFETY: dup makes a new descriptor, or fails without side effects.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `copy` is a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(copy) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_removes_old_unlocked_files_and_keeps_locked_or_young_ones() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        let (live, live_name) = temp_named_in(dir.path()).unwrap();
        live.set_modified(old).unwrap();
        let dead_name = dir.path().join(format!("{TEMP_PREFIX}dead"));
        File::create(&dead_name).unwrap().set_modified(old).unwrap();
        let young_name = dir.path().join(format!("{TEMP_PREFIX}young"));
        File::create(&young_name).unwrap();
        let other = dir.path().join("counts.csv");
        File::create(&other).unwrap().set_modified(old).unwrap();
        sweep_stale(dir.path());
        assert!(live_name.exists(), "a live run's locked file was swept");
        assert!(!dead_name.exists(), "a dead run's file was left");
        assert!(young_name.exists() && other.exists());
        drop(live);
        super::super::signals::untrack(&live_name);
    }

    #[test]
    fn a_named_file_in_place_replaces_the_target_whole_and_leaves_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("c.csv");
        std::fs::write(&target, "old\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).unwrap();
        let (file, name) = temp_named_in(dir.path()).unwrap();
        let mut pending = Pending {
            flag: "--output",
            shown: target.clone(),
            destination: Destination::Replace(target.clone()),
            file,
            named: Some(name),
        };
        pending.write_all(b"1\n2\n").unwrap();
        commit([pending]).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "1\n2\n");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["c.csv"]);
    }

    #[test]
    fn an_unnamed_file_is_linked_over_an_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("c.csv");
        std::fs::write(&target, "old\n").unwrap();
        write_whole("--output", &target, |out| out.write_all(b"new\n")).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["c.csv"]);
    }
}
