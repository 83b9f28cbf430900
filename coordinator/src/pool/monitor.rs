//! A live view of a pool's processes on standard error: one line for the coordinator and
//! one for each worker, with PID, state, CPU %, resident memory, chunks and rows done.
//!
//! On a terminal the view is redrawn in place; otherwise each refresh prints plain
//! `key=value` lines that a log keeps and `grep` reads. The monitor runs on its own
//! thread, holds the pool's lock only to copy its counters, and reads the kernel (through
//! `sysinfo`) with the lock released, so the pool does not wait on it.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{IsTerminal, Write},
    sync::mpsc::{self, RecvTimeoutError, Sender},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::{PoolObserver, platform};

/// How often the monitor refreshes unless told otherwise: about twice a second.
pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_millis(500);

/// A running monitor. Stopping it (or dropping it) draws one last refresh.
pub struct Monitor {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Starts a monitor of `observer`'s pool on standard error, refreshed every
    /// `interval`; it redraws in place when standard error is a terminal.
    pub fn start(observer: PoolObserver, interval: Duration) -> std::io::Result<Monitor> {
        let style = if std::io::stderr().is_terminal() { Style::Redraw } else { Style::Plain };
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("corepool-monitor".into()).spawn(move || {
            let mut view = View::new(style);
            loop {
                view.refresh(&observer);
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            view.refresh(&observer);
        })?;
        Ok(Monitor { stop: Some(stop), thread: Some(thread) })
    }

    /// Draws a last refresh and stops.
    pub fn stop(mut self) {
        self.finish();
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
    /// Cursor up and overwrite: a terminal.
    Redraw,
    /// Plain lines at every refresh: a file or a pipe.
    Plain,
}

/// One process's line.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    pid: u32,
    state: &'static str,
    /// `None` until the process has been sampled twice (CPU % is a difference).
    cpu: Option<f32>,
    rss: Option<u64>,
    chunks: u64,
    rows: u64,
}

struct View {
    style: Style,
    system: System,
    started: Instant,
    /// Each process's CPU time (ms) when last sampled, and when: CPU % is the difference
    /// over the wall time between two samples.
    last_cpu: HashMap<u32, (u64, Instant)>,
    /// Lines on screen, to move back over (redraw style).
    drawn: usize,
}

impl View {
    fn new(style: Style) -> Self {
        Self { style, system: System::new(), started: Instant::now(), last_cpu: HashMap::new(), drawn: 0 }
    }

    fn refresh(&mut self, observer: &PoolObserver) {
        let lines = self.sample(observer);
        let elapsed = self.started.elapsed();
        let text = match self.style {
            Style::Plain => plain(&lines, elapsed),
            Style::Redraw => {
                let width = platform::terminal_width(2).map_or(usize::MAX, |w| usize::from(w).saturating_sub(1));
                let table = table(&lines, elapsed, width);
                let text = redraw(self.drawn, &table);
                self.drawn = table.len();
                text
            }
        };
        // One write per refresh, so that the frame reaches the terminal whole.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn sample(&mut self, observer: &PoolObserver) -> Vec<Line> {
        let workers = observer.worker_states();
        let me = std::process::id();
        let pids: Vec<Pid> = std::iter::once(me)
            .chain(workers.iter().map(|w| w.pid).filter(|&pid| pid != 0))
            .map(Pid::from_u32)
            .collect();
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let now = Instant::now();
        let last_cpu = std::mem::take(&mut self.last_cpu);
        let mut usage = |pid: u32| {
            let process = self.system.process(Pid::from_u32(pid))?;
            // sysinfo's own CPU % stays 0 for a process whose first sample had no CPU time
            // yet (a worker just started), so it is worked out here from the totals.
            let cpu_ms = process.accumulated_cpu_time();
            let cpu = last_cpu.get(&pid).and_then(|&(before, then)| {
                let wall = now.duration_since(then).as_secs_f64();
                (wall > 0.0).then(|| cpu_ms.saturating_sub(before) as f32 / (wall as f32 * 10.0))
            });
            self.last_cpu.insert(pid, (cpu_ms, now));
            Some((cpu, process.memory()))
        };
        let (cpu, rss) = usage(me).map_or((None, None), |(cpu, rss)| (cpu, Some(rss)));
        let mut lines = vec![Line {
            name: coordinator_name(),
            pid: me,
            state: "running",
            cpu,
            rss,
            chunks: workers.iter().map(|w| w.chunks).sum(),
            rows: workers.iter().map(|w| w.rows).sum(),
        }];
        for (index, worker) in workers.iter().enumerate() {
            let (cpu, rss) = if worker.pid == 0 { None } else { usage(worker.pid) }
                .map_or((None, None), |(cpu, rss)| (cpu, Some(rss)));
            lines.push(Line {
                name: format!("corepool-w{index}"),
                pid: worker.pid,
                state: worker.state.name(),
                cpu,
                rss,
                chunks: worker.chunks,
                rows: worker.rows,
            });
        }
        lines
    }
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
            "[corepool monitor {:.1}s] {} pid={} state={} cpu={} rss={} chunks={} rows={}",
            elapsed.as_secs_f64(),
            line.name,
            if line.pid == 0 { "-".to_owned() } else { line.pid.to_string() },
            line.state,
            line.cpu.map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.1}%")),
            line.rss.map_or_else(|| "-".to_owned(), |rss| mib(rss).replace(' ', "")),
            line.chunks,
            line.rows
        );
    }
    text
}

/// The table a terminal shows, one string a line, each cut to `width` characters.
fn table(lines: &[Line], elapsed: Duration, width: usize) -> Vec<String> {
    let rows_done = lines.first().map_or(0, |coordinator| coordinator.rows);
    let mut table = vec![
        format!("corepool monitor, {:.1} s, {} rows done", elapsed.as_secs_f64(), thousands(rows_done)),
        format!(
            "{:<14} {:>8}  {:<10} {:>7} {:>11} {:>7} {:>13}",
            "process", "pid", "state", "cpu", "rss", "chunks", "rows"
        ),
    ];
    for line in lines {
        table.push(format!(
            "{:<14} {:>8}  {:<10} {:>7} {:>11} {:>7} {:>13}",
            line.name,
            if line.pid == 0 { "-".to_owned() } else { line.pid.to_string() },
            line.state,
            line.cpu.map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.1}%")),
            line.rss.map_or_else(|| "-".to_owned(), mib),
            line.chunks,
            thousands(line.rows)
        ));
    }
    for line in &mut table {
        if let Some((cut, _)) = line.char_indices().nth(width) {
            line.truncate(cut);
        }
    }
    table
}

/// Moves the cursor back over the `drawn` lines of the last frame and overwrites them.
fn redraw(drawn: usize, table: &[String]) -> String {
    let mut text = String::new();
    if drawn > 0 {
        let _ = write!(text, "\x1b[{drawn}A");
    }
    for line in table {
        let _ = writeln!(text, "\r\x1b[2K{line}");
    }
    // Clears whatever a longer earlier frame left below.
    text.push_str("\x1b[J");
    text
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// 1234567 as "1,234,567".
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Vec<Line> {
        vec![
            Line {
                name: "corepool".into(),
                pid: 100,
                state: "running",
                cpu: Some(3.25),
                rss: Some(3 << 20),
                chunks: 4,
                rows: 1000,
            },
            Line { name: "corepool-w0".into(), pid: 0, state: "starting", cpu: None, rss: None, chunks: 0, rows: 0 },
        ]
    }

    #[test]
    fn plain_lines_name_every_process_without_escapes() {
        let text = plain(&lines(), Duration::from_millis(1500));
        assert_eq!(
            text,
            "[corepool monitor 1.5s] corepool pid=100 state=running cpu=3.2% rss=3.0MiB chunks=4 rows=1000\n\
             [corepool monitor 1.5s] corepool-w0 pid=- state=starting cpu=- rss=- chunks=0 rows=0\n"
        );
    }

    #[test]
    fn table_fits_the_terminal() {
        let wide = table(&lines(), Duration::from_secs(2), usize::MAX);
        assert_eq!(wide.len(), 4);
        assert_eq!(wide[0], "corepool monitor, 2.0 s, 1,000 rows done");
        assert!(wide[3].starts_with("corepool-w0           -  starting"), "{}", wide[3]);
        let narrow = table(&lines(), Duration::from_secs(2), 30);
        assert!(narrow.iter().all(|line| line.chars().count() <= 30));
    }

    #[test]
    fn redraw_moves_back_over_the_last_frame() {
        let table = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(redraw(0, &table), "\r\x1b[2Ka\n\r\x1b[2Kb\n\x1b[J");
        assert!(redraw(2, &table).starts_with("\x1b[2A"));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }
}
