//! Ctrl-C and SIGTERM. The first stops handing out work, kills the workers, removes the
//! socket directories and any half-written output, and exits with 128 + the signal's
//! number (130 for Ctrl-C, 143 for SIGTERM); a second Ctrl-C kills at once. Output is put
//! in place only while no signal has come (see [`committing`]), so that a run stopped by
//! one leaves no output, and a run whose output is in place is not reported as stopped.

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The output files' state, shared with the signal handler.
struct Files {
    /// Named temporary files being written, removed if a signal stops the run.
    named: Vec<PathBuf>,
    /// A signal is stopping the run: nothing is put in place any more.
    stopping: bool,
    /// The output is in place: the run succeeded, and only its last lines are left.
    committed: bool,
}

static FILES: Mutex<Files> = Mutex::new(Files { named: Vec::new(), stopping: false, committed: false });

/// Held while a pool starts or stops: its socket directory exists before the pool is
/// known to [`corepool::terminate_all`], and after it has begun to stop, and that
/// could not remove it then.
static STARTING: Mutex<()> = Mutex::new(());

/// How long a signal that comes after the output was put in place lets the run print its
/// last lines and exit with success before it exits with the signal's code.
const AFTER_COMMIT_GRACE: Duration = Duration::from_secs(2);

fn files() -> std::sync::MutexGuard<'static, Files> {
    FILES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the thread that handles the signals.
pub fn install() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("corepool-signals".into()).spawn(move || {
        let Some(signal) = signals.forever().next() else { return };
        // From now on a Ctrl-C takes the default action and kills this process at once;
        // the workers then die with it (parent-death signal).
        // SAFETY: restoring the default disposition installs no handler code.
        unsafe {
            libc::signal(SIGINT, libc::SIG_DFL);
        }
        // Waits for output being put in place; held until the exit, so that none is after.
        let mut files = files();
        if files.committed {
            drop(files);
            std::thread::sleep(AFTER_COMMIT_GRACE);
            std::process::exit(128 + signal);
        }
        files.stopping = true;
        INTERRUPTED.store(true, Ordering::SeqCst);
        let name = if signal == SIGINT { "interrupted" } else { "terminated" };
        // The progress bar and the monitor are wiped first, so that the message stands alone.
        super::progress::clear_live_view();
        eprintln!("corepool: {name}: stopping the workers (Ctrl-C again to kill at once)");
        for path in files.named.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        let _started = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        corepool::terminate_all();
        std::process::exit(128 + signal);
    })?;
    Ok(())
}

/// Starts or stops a pool with `run`; a signal that comes meanwhile waits until the pool
/// can be stopped whole, or is, its socket directory included.
pub fn while_starting_or_stopping<T>(run: impl FnOnce() -> T) -> T {
    let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    run()
}

/// Whether a signal has started stopping the process.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Names a temporary file being written, so that a signal removes it.
pub fn track(path: &Path) {
    files().named.push(path.to_path_buf());
}

/// Forgets a temporary file: it is in place, or removed.
pub fn untrack(path: &Path) {
    files().named.retain(|named| named != path);
}

/// Runs `place`, which puts the output in place, unless a signal is stopping the run; a
/// signal that comes meanwhile waits for it. Once it has succeeded, the run counts as
/// done.
pub fn committing(place: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut files = files();
    if files.stopping {
        anyhow::bail!("stopped by a signal");
    }
    place()?;
    files.committed = true;
    Ok(())
}
