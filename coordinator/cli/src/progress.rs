//! A progress bar on standard error, for people at a terminal.
//!
//! It appears only when standard error is a terminal and the run has lasted over a
//! second (a quick run would only flash it), and it clears itself at the end, so that
//! what stays on screen is the result. Output to a file or a pipe never gets one. It is
//! drawn in the process's live view ([`corepool::Monitor::live_view`]), above the
//! monitor's lines when `--monitor` shows them, so that both stay on screen together.

use std::{
    io::IsTerminal,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use corepool::PoolObserver;

use crate::monitor::Monitor;
use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How long a run goes before the bar shows.
const SHOW_AFTER: Duration = Duration::from_secs(1);
/// How often the bar reads the pool's counter.
const POLL: Duration = Duration::from_millis(100);

/// Whether progress bars may show at all (`--quiet` turns them off for the whole run).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Lets progress bars show, or not, for the rest of the process.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::SeqCst);
}

/// Clears the live view (progress bar and monitor lines) for good, so that a message
/// printed next starts on a clean line and nothing is drawn over or after it.
pub fn clear_live_view() {
    let view = Monitor::live_view();
    let _ = view.clear();
    view.set_draw_target(ProgressDrawTarget::hidden());
}

/// A running progress bar; dropping it removes the bar.
pub struct Progress {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Follows `observer`'s rows done, out of `rows` for each of `repeat` repetitions.
    /// Does nothing unless standard error is a terminal (or with `--quiet`).
    pub fn start(observer: PoolObserver, rows: u64, repeat: u32) -> Progress {
        if !ENABLED.load(Ordering::SeqCst) || !std::io::stderr().is_terminal() {
            return Progress { stop: None, thread: None };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("corepool-progress".into())
            .spawn(move || follow(&observer, rows, repeat, &stopped))
            .ok();
        Progress { stop: Some(stop), thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn follow(observer: &PoolObserver, rows: u64, repeat: u32, stopped: &mpsc::Receiver<()>) {
    let base = observer.rows_done();
    let total = rows * u64::from(repeat);
    // The bar counts from the start while hidden, so that its rate and ETA are already
    // right when it appears.
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    bar.set_style(style(repeat > 1));
    let started = Instant::now();
    let mut shown = false;
    loop {
        let done = observer.rows_done().saturating_sub(base).min(total);
        bar.set_position(done);
        if repeat > 1 {
            let current = (done / rows.max(1) + 1).min(u64::from(repeat));
            bar.set_message(format!("repetition {current}/{repeat}"));
        }
        if !shown && started.elapsed() >= SHOW_AFTER {
            // First in the view: above the monitor's lines, if it shows them.
            Monitor::live_view().insert(0, bar.clone());
            shown = true;
        }
        match stopped.recv_timeout(POLL) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    bar.finish_and_clear();
    if shown {
        Monitor::live_view().remove(&bar);
    }
}

fn style(with_message: bool) -> ProgressStyle {
    let template = if with_message {
        "{elapsed:>4} [{bar:30}] {human_pos}/{human_len} rows, {rate}, ETA {eta}  {msg}"
    } else {
        "{elapsed:>4} [{bar:30}] {human_pos}/{human_len} rows, {rate}, ETA {eta}"
    };
    ProgressStyle::with_template(template).expect("the template is valid").progress_chars("=> ").with_key(
        "rate",
        |state: &ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = write!(out, "{} rows/s", HumanCount(state.per_sec() as u64));
        },
    )
}
