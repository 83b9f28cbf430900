//! Ctrl-C and SIGTERM. The first stops handing out work, kills the workers, removes the
//! socket directories and any half-written output, and exits with 128 + the signal's
//! number (130 for Ctrl-C, 143 for SIGTERM); a second Ctrl-C kills at once.

use std::{
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static PENDING_OUTPUT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Starts the thread that handles the signals.
pub fn install() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new().name("corepool-signals".into()).spawn(move || {
        let Some(signal) = signals.forever().next() else { return };
        INTERRUPTED.store(true, Ordering::SeqCst);
        // From now on a Ctrl-C takes the default action and kills this process at once;
        // the workers then die with it (parent-death signal).
        // SAFETY: restoring the default disposition installs no handler code.
        unsafe {
            libc::signal(SIGINT, libc::SIG_DFL);
        }
        let name = if signal == SIGINT { "interrupted" } else { "terminated" };
        // The progress bar and the monitor are wiped first, so that the message stands alone.
        super::progress::clear_live_view();
        eprintln!("corepool: {name}: stopping the workers (Ctrl-C again to kill at once)");
        corepool::pool::terminate_all();
        if let Some(path) = PENDING_OUTPUT.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = std::fs::remove_file(path);
        }
        std::process::exit(128 + signal);
    })?;
    Ok(())
}

/// Whether a signal has started stopping the process.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Names the temporary file being written (or `None` once it is in place), so that an
/// interrupted run leaves nothing half-written.
pub fn set_pending_output(path: Option<PathBuf>) {
    *PENDING_OUTPUT.lock().unwrap_or_else(|e| e.into_inner()) = path;
}
