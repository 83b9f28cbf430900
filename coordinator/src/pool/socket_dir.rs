//! The pool's private socket directory: where it goes, the lock that marks its run as
//! alive, and the sweep of the directories that dead runs left behind.
//!
//! A run holds an `flock` on the `lock` file inside its directory for as long as the
//! directory exists. The kernel drops the lock when the run's process dies, however it
//! dies, and a lock means the same thing in every PID namespace that sees the file, so a
//! lock that can be taken is a dead run's, and a busy one a live run's.

use std::{
    ffi::OsStr,
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Once,
};

use super::PoolError;

/// Directories are named `corepool-PID-XXXXXX`, PID being the coordinator's.
const PREFIX: &str = "corepool-";
/// The socket the workers connect to, inside the directory.
pub(crate) const SOCKET_NAME: &str = "pool.sock";
/// Locked by the run for the directory's whole life.
const LOCK_NAME: &str = "lock";
/// The lock file until it is locked: renamed to [`LOCK_NAME`] only then, so that a sweeper
/// never finds a live run's `lock` free.
const NEW_LOCK_NAME: &str = "lock.new";
/// The longest socket path Linux takes: `sun_path` holds 108 bytes, a NUL ending them.
pub(crate) const MAX_SOCKET_PATH: usize = 107;
/// Tries at making a directory that a sweeper keeps taking for a dead run's while it is
/// still empty (each try has a new name, so one retry is all it ever takes).
const MAKE_ATTEMPTS: usize = 4;
/// Entries of the parent directory a sweep reads at most: a crowded `/tmp` costs a start
/// no more than this.
const SWEEP_SCAN_LIMIT: usize = 4096;
/// Run directories a sweep looks into at most; a pile of leftovers goes over several runs.
const SWEEP_EXAMINE_LIMIT: usize = 64;

/// The pool's private (`0700`) socket directory, locked while it exists; removed on drop.
pub(crate) struct SocketDir {
    // Fields drop in order: the directory goes while the lock still says its run lives.
    dir: tempfile::TempDir,
    _lock: File,
}

impl SocketDir {
    /// Makes the directory in the first place that can hold it: `TMPDIR` if set; else in
    /// memory (`XDG_RUNTIME_DIR`, else `/dev/shm`); else `/tmp`. A `TMPDIR` that cannot
    /// hold it (too long for a socket path, missing, not writable) is passed over with a
    /// one-line notice on standard error.
    pub fn create() -> Result<Self, PoolError> {
        let mut passed_over: Option<String> = None;
        let mut last_error = None;
        for place in places() {
            match make_in(&place.dir) {
                Ok(dir) => {
                    if let Some(why) = passed_over {
                        notice_once(&format!("corepool: {why}; the pool's socket goes in {}", place.dir.display()));
                    }
                    return Ok(dir);
                }
                Err(error) => {
                    if let Some(variable) = place.named_by
                        && passed_over.is_none()
                    {
                        passed_over = Some(why_unusable(variable, &place.dir, &error));
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(PoolError::Socket(last_error.unwrap_or_else(|| io::Error::other("no place for the socket directory"))))
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A place the directory may go, and the environment variable that chose it, if a
/// user's choice that a notice should name when it cannot be used.
struct Place {
    dir: PathBuf,
    named_by: Option<&'static str>,
}

/// Places in order of preference. In memory (`XDG_RUNTIME_DIR`, `/dev/shm`), making and
/// removing the directory and its socket take tens of microseconds, against hundreds on
/// a disk's file system, on every pool start and stop.
fn places() -> Vec<Place> {
    let mut places = Vec::new();
    if let Some(tmpdir) = std::env::var_os("TMPDIR").filter(|dir| !dir.is_empty()) {
        places.push(Place { dir: tmpdir.into(), named_by: Some("TMPDIR") });
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).filter(|dir| dir.is_absolute()) {
        places.push(Place { dir: runtime, named_by: None });
    }
    places.push(Place { dir: "/dev/shm".into(), named_by: None });
    places.push(Place { dir: "/tmp".into(), named_by: None });
    places
}

/// Makes and locks a run directory in `base`.
fn make_in(base: &Path) -> io::Result<SocketDir> {
    let prefix = format!("{PREFIX}{}-", std::process::id());
    let longest = socket_path_len(base, &prefix);
    if longest > MAX_SOCKET_PATH {
        return Err(io::Error::new(io::ErrorKind::InvalidFilename, TooLong { bytes: longest }));
    }
    for _ in 0..MAKE_ATTEMPTS {
        let dir =
            tempfile::Builder::new().prefix(&prefix).permissions(fs::Permissions::from_mode(0o700)).tempdir_in(base)?;
        match lock_inside(dir.path()) {
            Ok(lock) => return Ok(SocketDir { dir, _lock: lock }),
            // A sweeper took it for a dead run's while it was empty: make another.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        }
    }
    Err(io::Error::other("the socket directory was removed as soon as it was made, every time"))
}

/// Creates the directory's lock file and locks it, before it takes the name sweepers
/// look at. `NotFound` if the directory went meanwhile.
fn lock_inside(dir: &Path) -> io::Result<File> {
    let new = dir.join(NEW_LOCK_NAME);
    let file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&new)?;
    // Waits only if a sweeper holds it, which then removes the directory: the rename fails.
    file.lock()?;
    fs::rename(&new, dir.join(LOCK_NAME))?;
    Ok(file)
}

/// Bytes of the socket path of a directory named `prefix` + 6 characters in `base`.
fn socket_path_len(base: &Path, prefix: &str) -> usize {
    base.join(format!("{prefix}XXXXXX")).join(SOCKET_NAME).as_os_str().len()
}

/// A base directory whose socket paths would not fit in `sun_path`.
#[derive(Debug)]
struct TooLong {
    bytes: usize,
}

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a socket path in it takes {} bytes, more than the {MAX_SOCKET_PATH} a Unix socket allows",
            self.bytes
        )
    }
}

impl std::error::Error for TooLong {}

/// One clause saying why `variable`'s directory `dir` cannot hold the socket directory.
fn why_unusable(variable: &str, dir: &Path, error: &io::Error) -> String {
    if let Some(too_long) = error.get_ref().and_then(|inner| inner.downcast_ref::<TooLong>()) {
        return format!("{variable} is too long for a socket path ({too_long})");
    }
    let dir = dir.display();
    match error.kind() {
        io::ErrorKind::NotFound => format!("{variable} ({dir}) does not exist"),
        io::ErrorKind::NotADirectory => format!("{variable} ({dir}) is not a directory"),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            format!("{variable} ({dir}) is not writable ({})", without_os_code(error))
        }
        _ => format!("{variable} ({dir}) cannot hold the pool's socket ({})", without_os_code(error)),
    }
}

/// An I/O error's message without tempfile's path suffix or the `(os error N)` tail.
fn without_os_code(error: &io::Error) -> String {
    // tempfile wraps the system's error with the path it tried.
    let mut cause: &(dyn std::error::Error + 'static) = error;
    loop {
        if let Some(code) = cause.downcast_ref::<io::Error>().and_then(io::Error::raw_os_error) {
            let text = io::Error::from_raw_os_error(code).to_string();
            return text.split(" (os error").next().unwrap_or_default().to_string();
        }
        match cause.source().or_else(|| cause.downcast_ref::<io::Error>().and_then(|io| io.get_ref().map(|e| e as _))) {
            Some(next) => cause = next,
            None => return error.to_string(),
        }
    }
}

/// Prints `line` on standard error, once in the process's life (a `--repeat` run starts
/// many pools, all in the same place).
fn notice_once(line: &str) {
    static NOTICE: Once = Once::new();
    NOTICE.call_once(|| eprintln!("{line}"));
}

/// Removes, from `base`, the directories of runs that died without cleaning up (killed
/// with SIGKILL, say, or cut short in their first moments). A new run never needs them
/// gone, but they are litter, so each pool sweeps a bounded number once its workers are
/// on their way.
pub(crate) fn sweep_dead_runs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut examined = 0;
    for entry in entries.take(SWEEP_SCAN_LIMIT).flatten() {
        let Some(pid) = run_pid(&entry.file_name()) else { continue };
        if examined == SWEEP_EXAMINE_LIMIT {
            break;
        }
        examined += 1;
        let path = entry.path();
        let ours = fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir() && meta.uid() == uid);
        if !ours {
            continue;
        }
        match verdict(&path, pid) {
            // Removed with the lock held, so that no other sweeper takes it meanwhile.
            Verdict::Dead(lock) => {
                let _ = fs::remove_dir_all(&path);
                drop(lock);
            }
            // `remove_dir` fails if something was put in it since.
            Verdict::Empty => {
                let _ = fs::remove_dir(&path);
            }
            Verdict::Alive | Verdict::Unknown => {}
        }
    }
}

/// The coordinator's pid in a run directory's name, `corepool-PID-XXXXXX`.
fn run_pid(name: &OsStr) -> Option<u32> {
    let rest = name.to_str()?.strip_prefix(PREFIX)?;
    rest.split_once('-').and_then(|(pid, _)| pid.parse().ok())
}

/// What a run directory says of its run.
#[derive(Debug)]
enum Verdict {
    /// Its lock is held: the run lives, in this PID namespace or another.
    Alive,
    /// Its run is dead; the lock, if it has one, is now held by the sweeper.
    Dead(Option<File>),
    /// Nothing in it: a start cut short before its lock was made (a live run that is
    /// making it finds the directory gone, and makes another).
    Empty,
    /// Something this version does not know: left alone.
    Unknown,
}

fn verdict(dir: &Path, pid: u32) -> Verdict {
    for name in [LOCK_NAME, NEW_LOCK_NAME] {
        let opened =
            OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(dir.join(name));
        match opened {
            Ok(file) => {
                return match file.try_lock() {
                    Ok(()) => Verdict::Dead(Some(file)),
                    Err(std::fs::TryLockError::WouldBlock) => Verdict::Alive,
                    Err(std::fs::TryLockError::Error(_)) => Verdict::Unknown,
                };
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => return Verdict::Unknown,
        }
    }
    let Ok(mut entries) = fs::read_dir(dir) else { return Verdict::Unknown };
    match (entries.next(), entries.next()) {
        (None, _) => Verdict::Empty,
        (Some(Ok(only)), None) if only.file_name() == SOCKET_NAME => unlocked_run_verdict(&only.path(), pid),
        _ => Verdict::Unknown,
    }
}

/// The verdict on a directory made by an older version, with a socket and no lock. A
/// `pid` that names a process here may be the run (or a process of another namespace
/// that has the same pid): it is left. Otherwise the socket decides: a refused
/// connection means that no process listens on it, in any namespace.
fn unlocked_run_verdict(socket: &Path, pid: u32) -> Verdict {
    if Path::new(&format!("/proc/{pid}")).exists() {
        return Verdict::Alive;
    }
    match std::os::unix::net::UnixStream::connect(socket) {
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Verdict::Dead(None),
        Err(_) => Verdict::Unknown,
        Ok(_) => Verdict::Alive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory named as a run of `pid` would name it, in `base`.
    fn run_dir(base: &Path, pid: u32, tail: &str) -> PathBuf {
        let dir = base.join(format!("{PREFIX}{pid}-{tail}"));
        fs::create_dir(&dir).unwrap();
        dir
    }

    /// A pid that no process has here (above the kernel's largest).
    const NO_SUCH_PID: u32 = 4_999_999;

    #[test]
    fn a_live_runs_directory_is_kept_whatever_its_pid_and_a_dead_ones_goes() {
        let base = tempfile::tempdir().unwrap();
        let made = make_in(base.path()).unwrap();
        // As if from another PID namespace: a pid unknown here, its lock held.
        let foreign = run_dir(base.path(), NO_SUCH_PID, "aaaaaa");
        fs::write(foreign.join(SOCKET_NAME), b"").unwrap();
        let foreign_lock = File::create(foreign.join(LOCK_NAME)).unwrap();
        foreign_lock.lock().unwrap();
        // A dead run: its lock free.
        let dead = run_dir(base.path(), std::process::id(), "bbbbbb");
        fs::write(dead.join(SOCKET_NAME), b"").unwrap();
        File::create(dead.join(LOCK_NAME)).unwrap();

        sweep_dead_runs(base.path());
        assert!(made.path().join(LOCK_NAME).exists(), "this run's own directory stays");
        assert!(foreign.join(SOCKET_NAME).exists(), "a live run in another namespace keeps its socket");
        assert!(!dead.exists(), "a dead run's directory goes");

        drop(foreign_lock);
        sweep_dead_runs(base.path());
        assert!(!foreign.exists(), "gone once its run has died");
        let path = made.path().to_path_buf();
        drop(made);
        assert!(!path.exists(), "a run removes its own directory");
    }

    #[test]
    fn empty_directories_go_and_unknown_ones_stay() {
        let base = tempfile::tempdir().unwrap();
        let empty = run_dir(base.path(), std::process::id(), "cccccc");
        let strange = run_dir(base.path(), NO_SUCH_PID, "dddddd");
        fs::write(strange.join("notes"), b"mine").unwrap();
        let not_ours = base.path().join("corepool-notes");
        fs::create_dir(&not_ours).unwrap();
        sweep_dead_runs(base.path());
        assert!(!empty.exists());
        assert!(strange.join("notes").exists());
        assert!(not_ours.exists());
    }

    #[test]
    fn an_older_versions_directory_goes_only_when_nothing_listens_on_its_socket() {
        let base = tempfile::tempdir().unwrap();
        let listening = run_dir(base.path(), NO_SUCH_PID, "eeeeee");
        let _listener = std::os::unix::net::UnixListener::bind(listening.join(SOCKET_NAME)).unwrap();
        let deaf = run_dir(base.path(), NO_SUCH_PID, "ffffff");
        drop(std::os::unix::net::UnixListener::bind(deaf.join(SOCKET_NAME)).unwrap());
        sweep_dead_runs(base.path());
        assert!(listening.join(SOCKET_NAME).exists(), "a listener lives somewhere");
        assert!(!deaf.exists());
    }

    #[test]
    fn a_directory_swept_while_being_made_is_made_again() {
        let base = tempfile::tempdir().unwrap();
        let dir = tempfile::Builder::new().prefix("corepool-1-").tempdir_in(base.path()).unwrap();
        let path = dir.path().to_path_buf();
        sweep_dead_runs(base.path());
        assert!(!path.exists(), "empty, so swept");
        assert_eq!(lock_inside(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_base_too_long_for_a_socket_path_is_refused_by_name() {
        let long = PathBuf::from(format!("/{}", "a".repeat(120)));
        let error = make_in(&long).err().expect("too long");
        let why = why_unusable("TMPDIR", &long, &error);
        assert!(why.starts_with("TMPDIR is too long for a socket path ("), "{why}");
        assert!(why.contains("107"), "{why}");
        let missing = why_unusable("TMPDIR", Path::new("/nowhere"), &io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(missing, "TMPDIR (/nowhere) does not exist");
        let read_only = why_unusable("TMPDIR", Path::new("/ro"), &io::Error::from_raw_os_error(libc::EROFS));
        assert_eq!(read_only, "TMPDIR (/ro) is not writable (Read-only file system)");
    }
}
