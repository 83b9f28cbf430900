//! Watching a pool from outside: worker states, rows done, time the coordinator spends
//! encoding and decoding, and how evenly the work was spread.

use std::{sync::Arc, time::Duration};

use super::{WorkerStats, core::Shared};

/// What a worker slot is doing now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum WorkerState {
    /// Its first worker was started and has not joined yet.
    #[default]
    Starting,
    /// Joined, and holds no chunk.
    Idle,
    /// Holds at least one chunk.
    Busy,
    /// Its worker died; a replacement is on its way or joining.
    Restarting,
    /// The pool has stopped.
    Stopped,
}

impl WorkerState {
    /// The lower-case name that monitors and reports show.
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Restarting => "restarting",
            WorkerState::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Time the coordinator has spent turning chunks into frames and answers into outputs,
/// summed over the pool's life; the rest of a call's wall time is spent waiting on
/// workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodecTime {
    /// Encoding chunks into task frames (the items' wire form, then the frame).
    pub encode: Duration,
    /// Decoding answers into outputs and checking their count.
    pub decode: Duration,
}

impl std::ops::Sub for CodecTime {
    type Output = CodecTime;

    fn sub(self, earlier: CodecTime) -> CodecTime {
        CodecTime {
            encode: self.encode.saturating_sub(earlier.encode),
            decode: self.decode.saturating_sub(earlier.decode),
        }
    }
}

/// How evenly the work was spread over the workers, at a glance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Balance {
    /// Fewest rows any worker did.
    pub min_rows: u64,
    /// Most rows any worker did.
    pub max_rows: u64,
    /// `min_rows / max_rows`: 1.0 is perfectly even, 0.0 means a worker did nothing.
    pub rows_ratio: f64,
    /// Shortest busy time over longest: how evenly the workers were kept busy.
    pub busy_ratio: f64,
}

impl Balance {
    /// The balance of `workers`; `None` for no workers.
    pub fn of(workers: &[WorkerStats]) -> Option<Balance> {
        let min_rows = workers.iter().map(|w| w.rows).min()?;
        let max_rows = workers.iter().map(|w| w.rows).max()?;
        let min_busy = workers.iter().map(|w| w.busy).min()?;
        let max_busy = workers.iter().map(|w| w.busy).max()?;
        let ratio = |low: f64, high: f64| if high > 0.0 { low / high } else { 1.0 };
        Some(Balance {
            min_rows,
            max_rows,
            rows_ratio: ratio(min_rows as f64, max_rows as f64),
            busy_ratio: ratio(min_busy.as_secs_f64(), max_busy.as_secs_f64()),
        })
    }
}

/// A handle that watches a pool from another thread, for progress bars and monitors.
/// It does not keep the workers alive: once the pool is dropped, it sees them stopped.
#[derive(Clone)]
pub struct PoolObserver {
    pub(crate) shared: Arc<Shared>,
}

impl PoolObserver {
    /// Rows (items) answered so far by every worker, over all jobs.
    pub fn rows_done(&self) -> u64 {
        self.shared.rows_done()
    }

    /// Each slot's statistics now, in slot order. CPU times and peak memory are read
    /// from the kernel for live workers; for workers that died or stopped, they are the
    /// last values read.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.shared.refresh_usage();
        self.shared.snapshot()
    }

    /// Each slot's state and counters now, without asking the kernel (cheap enough to
    /// call many times a second).
    pub fn worker_states(&self) -> Vec<WorkerStats> {
        self.shared.snapshot()
    }

    /// Encoding and decoding time so far.
    pub fn codec_time(&self) -> CodecTime {
        self.shared.meters.codec_time()
    }
}

impl std::fmt::Debug for PoolObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolObserver").field("workers", &self.shared.settings.workers).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_of_uneven_workers() {
        let worker = |rows, busy_ms| WorkerStats { rows, busy: Duration::from_millis(busy_ms), ..Default::default() };
        let balance = Balance::of(&[worker(50, 100), worker(100, 400)]).unwrap();
        assert_eq!((balance.min_rows, balance.max_rows), (50, 100));
        assert!((balance.rows_ratio - 0.5).abs() < 1e-9);
        assert!((balance.busy_ratio - 0.25).abs() < 1e-9);
        assert!(Balance::of(&[]).is_none());
        assert_eq!(Balance::of(&[worker(0, 0)]).unwrap().rows_ratio, 1.0);
    }
}
