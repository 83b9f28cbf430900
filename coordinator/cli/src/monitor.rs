//! A live view of a pool's processes on standard error: one line for the coordinator and
//! one for each worker, with PID, state, CPU %, resident memory, chunks, rows done and rows
//! per second.
//!
//! On a terminal the lines are drawn through [`Monitor::live_view`], the process's one
//! `indicatif` view of standard error, so that a progress bar drawn there too stays with
//! them rather than fighting over the screen; otherwise each refresh prints plain
//! `key=value` lines that a log keeps and `grep` reads. The monitor runs on its own thread,
//! holds the pool's lock only to copy its counters, and reads the kernel with the lock
//! released, so the pool does not wait on it.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{IsTerminal, Write},
    sync::{
        OnceLock,
        mpsc::{self, RecvTimeoutError, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use indicatif::{HumanBytes, HumanCount, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use corepool::{PoolBuilder, PoolObserver, WorkerStats};

mod terminal;

/// How often the monitor refreshes unless told otherwise: about twice a second.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_millis(500);

/// Shortest time over which a rate (CPU %, rows per second) is worked out: the last refresh
/// can come a few milliseconds after the one before, and a rate over so short a time says
/// little. Until this much time has passed, the line keeps the rate it showed.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(250);

/// `builder`, with a monitor shown for the pool's life when `on`.
pub fn shown_if(builder: PoolBuilder, on: bool) -> PoolBuilder {
    if on { builder.watch(|observer| Monitor::start(observer, DEFAULT_MONITOR_INTERVAL)) } else { builder }
}

/// A running monitor. Stopping it (or dropping it) draws one last refresh.
pub struct Monitor {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts a monitor of `observer`'s pool on standard error, refreshed every
    /// `interval`; on a terminal it is drawn in [`Monitor::live_view`].
    pub fn start(observer: PoolObserver, interval: Duration) -> std::io::Result<Monitor> {
        let style = if std::io::stderr().is_terminal() { Style::Live } else { Style::Plain };
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("corepool-monitor".into()).spawn(move || {
            let mut view = View::new(style, observer.transport() != corepool::Transport::Local);
            loop {
                view.refresh(&observer);
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            view.finish(&observer);
        })?;
        Ok(Monitor { stop: Some(stop), thread: Some(thread) })
    }

    /// The process's live view of standard error, shared by every monitor and by any
    /// progress bar added to it, so that what redraws the screen draws it as one. It draws
    /// nothing when standard error is not a terminal. To leave the screen clean before the
    /// process exits in the middle of a run (a signal), [`MultiProgress::clear`] it, then
    /// give it a hidden draw target.
    pub fn live_view() -> &'static MultiProgress {
        static VIEW: OnceLock<MultiProgress> = OnceLock::new();
        VIEW.get_or_init(|| {
            let target = if std::io::stderr().is_terminal() {
                ProgressDrawTarget::term_like_with_hz(Box::<terminal::LineBreakingStderr>::default(), 20)
            } else {
                ProgressDrawTarget::hidden()
            };
            MultiProgress::with_draw_target(target)
        })
    }

    fn finish(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.finish();
    }
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").field("running", &self.thread.is_some()).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Lines in the live view: a terminal.
    Live,
    /// Plain lines at every refresh: a file or a pipe.
    Plain,
}

/// One process's line.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    /// Shown when the workers are MPI ranks, which may run on other hosts.
    host: Option<String>,
    pid: u32,
    state: &'static str,
    /// `None` until the process has been sampled twice (CPU % is a difference).
    cpu: Option<f64>,
    rss: Option<u64>,
    chunks: u64,
    rows: u64,
    /// `None` until the rows have been sampled twice.
    rows_per_sec: Option<f64>,
}

/// A rate worked out from a counter read now and then: the difference since a reference
/// reading at least [`MIN_RATE_WINDOW`] old, per second.
#[derive(Debug, Clone, Copy)]
struct Rate {
    value: f64,
    at: Instant,
    shown: Option<f64>,
}

impl Rate {
    /// Takes the counter's reading `value` made at `at`, and gives the rate to show.
    fn update(rates: &mut HashMap<u64, Rate>, key: u64, value: f64, at: Instant) -> Option<f64> {
        let rate = rates.entry(key).or_insert(Rate { value, at, shown: None });
        let window = at.saturating_duration_since(rate.at);
        if window >= MIN_RATE_WINDOW {
            rate.shown = Some((value - rate.value).max(0.0) / window.as_secs_f64());
            (rate.value, rate.at) = (value, at);
        }
        rate.shown
    }
}

/// Key of the coordinator's rows in [`View::rows`] (workers are keyed by slot).
const COORDINATOR_KEY: u64 = u64::MAX;
/// Ranks' CPU readings in [`View::cpu`] are keyed from here on, past any process id.
const RANK_KEYS: u64 = 1 << 32;

struct View {
    style: Style,
    /// The workers are MPI ranks: their hosts are shown, and their CPU and memory are
    /// what they report (this host's process table may not hold them).
    ranks: bool,
    system: System,
    started: Instant,
    /// CPU seconds of each process, by PID.
    cpu: HashMap<u64, Rate>,
    /// Rows done by each slot, and by the whole pool.
    rows: HashMap<u64, Rate>,
    /// One bar per line of the table (live style).
    lines: Vec<ProgressBar>,
}

impl View {
    fn new(style: Style, ranks: bool) -> Self {
        Self {
            style,
            ranks,
            system: System::new(),
            started: Instant::now(),
            cpu: HashMap::new(),
            rows: HashMap::new(),
            lines: Vec::new(),
        }
    }

    fn refresh(&mut self, observer: &PoolObserver) {
        let lines = self.sample(observer);
        let elapsed = self.started.elapsed();
        match self.style {
            Style::Plain => {
                // One write per refresh, so that the lines reach a log whole.
                let _ = std::io::stderr().lock().write_all(plain(&lines, elapsed).as_bytes());
            }
            Style::Live => {
                // Two columns spare, where a Ctrl-C's echoed `^C` fits.
                let width = terminal::terminal_size(2).map_or(80, |(cols, _)| usize::from(cols)).saturating_sub(2);
                let table = table(&lines, elapsed, width);
                let view = Monitor::live_view();
                while self.lines.len() < table.len() {
                    let style = ProgressStyle::with_template("{msg}").expect("the template is valid");
                    self.lines.push(view.add(ProgressBar::hidden().with_style(style)));
                }
                for (bar, text) in self.lines.iter().zip(table) {
                    bar.set_message(text);
                }
            }
        }
    }

    /// The last refresh. On a terminal the lines leave the live view, and their last
    /// state is printed above it, where it stays (unless the view was cleared for good).
    fn finish(&mut self, observer: &PoolObserver) {
        self.refresh(observer);
        if self.lines.is_empty() {
            return;
        }
        let mut last = String::new();
        for bar in self.lines.drain(..) {
            let _ = writeln!(last, "{}", bar.message());
            bar.finish_and_clear();
            Monitor::live_view().remove(&bar);
        }
        let view = Monitor::live_view();
        if !view.is_hidden() {
            view.suspend(|| std::io::stderr().lock().write_all(last.as_bytes()).ok());
        }
    }

    fn sample(&mut self, observer: &PoolObserver) -> Vec<Line> {
        let workers = observer.worker_states();
        let me = std::process::id();
        let local_workers = if self.ranks { &[][..] } else { &workers[..] };
        let pids: Vec<Pid> = std::iter::once(me)
            .chain(local_workers.iter().map(|w| w.pid).filter(|&pid| pid != 0))
            .map(Pid::from_u32)
            .collect();
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let (cpu, rss) = self.usage(me);
        let now = Instant::now();
        let rows: u64 = workers.iter().map(|w| w.rows).sum();
        let mut lines = vec![Line {
            name: coordinator_name(),
            host: self.ranks.then(host_name),
            pid: me,
            state: "running",
            cpu,
            rss,
            chunks: workers.iter().map(|w| w.chunks).sum(),
            rows,
            rows_per_sec: Rate::update(&mut self.rows, COORDINATOR_KEY, rows as f64, now),
        }];
        for (index, worker) in workers.iter().enumerate() {
            let (cpu, rss) = match worker.pid {
                0 => (None, None),
                _ if self.ranks => self.reported_usage(index, worker, now),
                pid => self.usage(pid),
            };
            lines.push(Line {
                name: if self.ranks { format!("rank {}", index + 1) } else { format!("corepool-w{index}") },
                host: self.ranks.then(|| worker.host.clone()),
                pid: worker.pid,
                state: worker.state.name(),
                cpu,
                rss,
                chunks: worker.chunks,
                rows: worker.rows,
                rows_per_sec: Rate::update(&mut self.rows, index as u64, worker.rows as f64, now),
            });
        }
        lines
    }
}

impl View {
    /// Process `pid`'s CPU % and resident memory, as last refreshed.
    fn usage(&mut self, pid: u32) -> (Option<f64>, Option<u64>) {
        let rss = self.system.process(Pid::from_u32(pid)).map(sysinfo::Process::memory);
        (self.cpu_percent(pid), rss)
    }

    /// A rank's CPU % and resident memory, from what it reported with its last answer.
    fn reported_usage(&mut self, index: usize, worker: &WorkerStats, now: Instant) -> (Option<f64>, Option<u64>) {
        let seconds = (worker.cpu_user + worker.cpu_system).as_secs_f64();
        // Keyed apart from process ids: a rank's pid is on its own host.
        let cpu = Rate::update(&mut self.cpu, RANK_KEYS + index as u64, seconds, now).map(|per_sec| per_sec * 100.0);
        (cpu, (worker.rss > 0).then_some(worker.rss))
    }

    /// Process `pid`'s CPU use since the last reading at least [`MIN_RATE_WINDOW`] ago, in
    /// percent of one core (a process with several threads busy goes past 100%).
    fn cpu_percent(&mut self, pid: u32) -> Option<f64> {
        let (seconds, at) = cpu_time(pid, &self.system)?;
        Rate::update(&mut self.cpu, u64::from(pid), seconds, at).map(|per_sec| per_sec * 100.0)
    }
}

/// The CPU time, in seconds, that process `pid` has used so far (user and system, every
/// thread), and when it was read. Linux gives it to the nanosecond through the process's
/// CPU clock; `/proc/PID/stat` counts in clock ticks (10 ms), too coarse for a rate over
/// a short time (20 ms over 8 ms read as 250%).
fn cpu_time(pid: u32, _system: &System) -> Option<(f64, Instant)> {
    #[cfg(target_os = "linux")]
    {
        let clock = if pid == std::process::id() {
            libc::CLOCK_PROCESS_CPUTIME_ID
        } else {
            let mut clock: libc::clockid_t = 0;
            // SAFETY: the call writes one clockid_t into the pointer, which is valid for it.
            if unsafe { libc::clock_getcpuclockid(libc::pid_t::try_from(pid).ok()?, &mut clock) } != 0 {
                return None;
            }
            clock
        };
        let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: the call writes one timespec into the pointer, which is valid for it.
        if unsafe { libc::clock_gettime(clock, &mut time) } != 0 {
            return None;
        }
        Some((time.tv_sec as f64 + time.tv_nsec as f64 * 1e-9, Instant::now()))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let process = _system.process(Pid::from_u32(pid))?;
        Some((process.accumulated_cpu_time() as f64 / 1e3, Instant::now()))
    }
}

/// A host name, or `-` for one not known yet (a rank that has not joined).
fn or_dash(host: &str) -> &str {
    if host.is_empty() { "-" } else { host }
}

/// This machine's name, as `hostname` prints it.
fn host_name() -> String {
    sysinfo::System::host_name().unwrap_or_default()
}

/// The coordinator's process name, as `top` shows it.
fn coordinator_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name().map(|name| name.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "coordinator".into())
}

fn plain(lines: &[Line], elapsed: Duration) -> String {
    let mut text = String::new();
    for line in lines {
        let _ = writeln!(
            text,
            "[corepool monitor {:.1}s] {}{} pid={} state={} cpu={} rss={} chunks={} rows={} rows_per_s={}",
            elapsed.as_secs_f64(),
            line.name,
            line.host.as_deref().map_or_else(String::new, |host| format!(" host={}", or_dash(host))),
            if line.pid == 0 { "-".to_owned() } else { line.pid.to_string() },
            line.state,
            line.cpu.map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.1}%")),
            line.rss.map_or_else(|| "-".to_owned(), |rss| HumanBytes(rss).to_string().replace(' ', "")),
            line.chunks,
            line.rows,
            line.rows_per_sec.map_or_else(|| "-".to_owned(), |rate| format!("{rate:.0}"))
        );
    }
    text
}

/// The table a terminal shows, one string a line, each cut to `width` characters.
fn table(lines: &[Line], elapsed: Duration, width: usize) -> Vec<String> {
    let rows_done = lines.first().map_or(0, |coordinator| coordinator.rows);
    // A host column only for ranks, as wide as their longest host name.
    let host_width = lines.iter().filter_map(|line| line.host.as_ref()).map(|host| host.chars().count().max(4)).max();
    let host_cell = |host: Option<&str>| match host_width {
        Some(host_width) => format!(" {:<host_width$}", or_dash(host.unwrap_or_default())),
        None => String::new(),
    };
    let mut table = vec![
        format!("corepool monitor, {:.1} s, {} rows done", elapsed.as_secs_f64(), HumanCount(rows_done)),
        format!(
            "{:<14}{} {:>8}  {:<10} {:>7} {:>11} {:>7} {:>13} {:>12}",
            "process",
            host_cell(Some("host")),
            "pid",
            "state",
            "cpu",
            "rss",
            "chunks",
            "rows",
            "rows/s"
        ),
    ];
    for line in lines {
        table.push(format!(
            "{:<14}{} {:>8}  {:<10} {:>7} {:>11} {:>7} {:>13} {:>12}",
            line.name,
            host_cell(line.host.as_deref()),
            if line.pid == 0 { "-".to_owned() } else { line.pid.to_string() },
            line.state,
            line.cpu.map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.1}%")),
            line.rss.map_or_else(|| "-".to_owned(), |rss| HumanBytes(rss).to_string()),
            line.chunks,
            HumanCount(line.rows).to_string(),
            line.rows_per_sec.map_or_else(|| "-".to_owned(), |rate| HumanCount(rate as u64).to_string()),
        ));
    }
    for line in &mut table {
        if let Some((cut, _)) = line.char_indices().nth(width) {
            line.truncate(cut);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Vec<Line> {
        vec![
            Line {
                name: "corepool".into(),
                host: None,
                pid: 100,
                state: "running",
                cpu: Some(3.25),
                rss: Some(3 << 20),
                chunks: 4,
                rows: 1000,
                rows_per_sec: Some(2000.4),
            },
            Line {
                name: "corepool-w0".into(),
                host: None,
                pid: 0,
                state: "starting",
                cpu: None,
                rss: None,
                chunks: 0,
                rows: 0,
                rows_per_sec: None,
            },
        ]
    }

    #[test]
    fn plain_lines_name_every_process_without_escapes() {
        let text = plain(&lines(), Duration::from_millis(1500));
        assert_eq!(
            text,
            "[corepool monitor 1.5s] corepool pid=100 state=running cpu=3.2% rss=3.00MiB chunks=4 rows=1000 rows_per_s=2000\n\
             [corepool monitor 1.5s] corepool-w0 pid=- state=starting cpu=- rss=- chunks=0 rows=0 rows_per_s=-\n"
        );
    }

    #[test]
    fn table_fits_the_terminal() {
        let wide = table(&lines(), Duration::from_secs(2), usize::MAX);
        assert_eq!(wide.len(), 4);
        assert_eq!(wide[0], "corepool monitor, 2.0 s, 1,000 rows done");
        assert!(wide[2].ends_with("1,000        2,000"), "{}", wide[2]);
        assert!(wide[3].starts_with("corepool-w0           -  starting"), "{}", wide[3]);
        let narrow = table(&lines(), Duration::from_secs(2), 30);
        assert!(narrow.iter().all(|line| line.chars().count() <= 30));
    }

    #[test]
    fn ranks_show_their_hosts() {
        let mut ranks = lines();
        ranks[0].host = Some("node0".into());
        ranks[1] = Line { name: "rank 1".into(), host: Some("compute-17".into()), pid: 4711, ..ranks[1].clone() };
        let text = plain(&ranks, Duration::from_millis(1500));
        assert!(text.contains("] corepool host=node0 pid=100 "), "{text}");
        assert!(text.contains("] rank 1 host=compute-17 pid=4711 "), "{text}");
        let wide = table(&ranks, Duration::from_secs(2), usize::MAX);
        assert!(wide[1].starts_with("process        host       "), "{}", wide[1]);
        assert!(wide[3].starts_with("rank 1         compute-17     4711  starting"), "{}", wide[3]);
    }

    #[test]
    fn a_rank_cpu_is_the_rate_of_what_it_reported() {
        let mut view = View::new(Style::Plain, true);
        let start = Instant::now();
        let worker = |cpu_ms, rss| WorkerStats { cpu_user: Duration::from_millis(cpu_ms), rss, ..Default::default() };
        assert_eq!(view.reported_usage(0, &worker(100, 0), start), (None, None));
        let later = start + Duration::from_millis(500);
        let (cpu, rss) = view.reported_usage(0, &worker(350, 4 << 20), later);
        assert!(cpu.is_some_and(|cpu| (cpu - 50.0).abs() < 1e-6), "{cpu:?}");
        assert_eq!(rss, Some(4 << 20));
    }

    #[test]
    fn a_rate_needs_a_long_enough_window() {
        let mut rates = HashMap::new();
        let start = Instant::now();
        assert_eq!(Rate::update(&mut rates, 1, 0.0, start), None);
        // 20 ms of CPU 8 ms later is no reading: too short a window to say anything.
        assert_eq!(Rate::update(&mut rates, 1, 0.020, start + Duration::from_millis(8)), None);
        let rate = Rate::update(&mut rates, 1, 0.250, start + Duration::from_millis(500)).unwrap();
        assert!((rate - 0.5).abs() < 1e-9, "{rate}");
        // A refresh right after keeps the rate shown, rather than one over 3 ms.
        assert_eq!(Rate::update(&mut rates, 1, 0.260, start + Duration::from_millis(503)), Some(rate));
    }

    #[test]
    fn cpu_percent_is_never_worked_out_over_a_few_milliseconds() {
        let spin = |time: Duration| {
            let start = Instant::now();
            while start.elapsed() < time {
                std::hint::black_box(0);
            }
        };
        let mut view = View::new(Style::Plain, false);
        let me = std::process::id();
        assert_eq!(view.cpu_percent(me), None);
        // Clock ticks of 10 ms over these 5 ms would read as 0% or 200% and more.
        spin(Duration::from_millis(5));
        assert_eq!(view.cpu_percent(me), None);
        spin(MIN_RATE_WINDOW);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let percent = view.cpu_percent(me).unwrap();
        assert!(percent > 0.0 && percent <= 100.0 * cores * 1.02, "{percent}% on {cores} cores");
    }

    #[test]
    fn cpu_time_is_read_finer_than_clock_ticks_for_this_process_and_a_child() {
        let system = System::new();
        let me = std::process::id();
        let readings: Vec<f64> = (0..5)
            .map(|_| {
                let spin = Instant::now();
                while spin.elapsed() < Duration::from_millis(2) {
                    std::hint::black_box(0);
                }
                cpu_time(me, &system).unwrap().0
            })
            .collect();
        assert!(readings.is_sorted(), "{readings:?}");
        // Ticks of /proc/PID/stat are whole hundredths of a second.
        assert!(readings.iter().any(|seconds| (seconds * 100.0).fract() != 0.0), "{readings:?}");
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let child_cpu = cpu_time(child.id(), &system);
        let _ = child.kill();
        let _ = child.wait();
        assert!(child_cpu.is_some_and(|(seconds, _)| seconds < 1.0), "{child_cpu:?}");
    }
}
