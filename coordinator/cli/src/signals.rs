//! Ctrl-C and SIGTERM. The first stops handing out work, kills the workers, removes the
//! socket directories and any half-written output, and exits with 128 + the signal's
//! number (130 for Ctrl-C, 143 for SIGTERM); a second Ctrl-C kills at once. Output is put
//! in place only while no signal has come (see [`committing`]), so that a run stopped by
//! one leaves no output, and a run whose output is in place is not reported as stopped.
//! Under MPI the launcher ends every rank with SIGTERM when one dies: rank 0 first names
//! the lost rank and the items it held (or, when it cannot tell which, what each held).

use std::{
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use signal_hook::{
    consts::{SIGCONT, SIGINT, SIGTERM},
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

/// How long rank 0 of an MPI pool lives on after its last lines at a signal, so that the
/// launcher forwards them (Open MPI kills it one second after its SIGTERM).
const LAUNCHER_OUTPUT_GRACE: Duration = Duration::from_millis(300);

fn files() -> std::sync::MutexGuard<'static, Files> {
    FILES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the thread that handles the signals.
pub fn install() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGCONT])?;
    std::thread::Builder::new().name("corepool-signals".into()).spawn(move || {
        let mut lost_named = false;
        for signal in signals.forever() {
            if signal != SIGCONT {
                let name = if signal == SIGINT { "interrupted" } else { "terminated" };
                let mut lines = vec![format!("{name}: stopping the workers (Ctrl-C again to kill at once)")];
                // Under MPI the launcher may end the job for a rank lost elsewhere: say what
                // each rank held, unless the lost one was named already.
                if !lost_named {
                    let held = corepool::work_held_by_ranks().into_iter().filter(|work| !work.items.is_empty());
                    lines.extend(held.map(|work| corepool::HeldWork { lost: false, ..work }.to_string()));
                }
                stop_run(&lines, 128 + signal);
            }
            // Open MPI's `mpirun` sends every rank a SIGCONT as soon as one dies, a second
            // before the SIGTERM that the other ranks die of too: a rank of this host gone
            // now is the lost one, and rank 0 names it while its output still reaches `mpirun`.
            let lost: Vec<String> = corepool::work_held_by_ranks()
                .into_iter()
                .filter(|work| work.lost)
                .map(|work| work.to_string())
                .collect();
            if !lost.is_empty() && !lost_named {
                lost_named = true;
                stop_run(&lost, RANK_LOST);
            }
        }
    })?;
    Ok(())
}

/// Exit code of a run whose MPI rank was lost.
const RANK_LOST: i32 = super::EXIT_FAILED as i32;

/// Stops the run for a signal: prints `lines` (each after `corepool: `), stops the
/// workers, removes any half-written output, and exits with `code`. A run whose output is
/// in place already prints them, then lets its last lines out for a moment, and exits so.
fn stop_run(lines: &[String], code: i32) {
    // From now on a Ctrl-C takes the default action and kills this process at once;
    // the workers then die with it (parent-death signal).
    // SAFETY: restoring the default disposition installs no handler code.
    unsafe {
        libc::signal(SIGINT, libc::SIG_DFL);
    }
    let ranks_named = lines.len() > 1 || code == RANK_LOST;
    // Waits for output being put in place; held until the exit, so that none is after.
    let mut files = files();
    if files.committed {
        drop(files);
        if code == RANK_LOST {
            // The results are in place: a rank lost after them is told, not failed.
            for line in lines {
                eprintln!("corepool: {line}");
            }
            return;
        }
        std::thread::sleep(AFTER_COMMIT_GRACE);
        std::process::exit(code);
    }
    files.stopping = true;
    INTERRUPTED.store(true, Ordering::SeqCst);
    // The progress bar and the monitor are wiped first, so that the message stands alone.
    super::progress::clear_live_view();
    for line in lines {
        eprintln!("corepool: {line}");
    }
    for path in files.named.drain(..) {
        let _ = std::fs::remove_file(path);
    }
    let _started = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    corepool::terminate_all();
    if ranks_named {
        // `mpirun` may stop forwarding a rank's output once every rank has ended: these
        // lines must reach it first.
        std::thread::sleep(LAUNCHER_OUTPUT_GRACE);
    }
    std::process::exit(code);
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
