//! What a pool's workers did: each slot's counters and state, the coordinator's codec
//! time, and how evenly the work was spread.

use std::time::Duration;

/// What one worker slot has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Process id of the slot's current (or last) worker, on its host.
    pub pid: u32,
    /// The host the slot's worker runs on: this machine's name for a local pool, the
    /// rank's host under MPI; empty until its worker joins.
    pub host: String,
    /// Chunks answered.
    pub chunks: u64,
    /// Items in the chunks answered.
    pub rows: u64,
    /// Times the slot's worker died (or failed to start) and was replaced.
    pub restarts: u64,
    /// Times the slot's worker was replaced as planned, having run its
    /// [`PoolBuilder::max_tasks_per_worker`](super::PoolBuilder::max_tasks_per_worker) chunks:
    /// not a fault, and not in `restarts`.
    pub retired: u64,
    /// Chunks that were sent again because the slot's worker died holding them.
    pub retried_chunks: u64,
    /// What the slot is doing now.
    pub state: WorkerState,
    /// Time the slot's workers held at least one chunk.
    pub busy: Duration,
    /// CPU time of the slot's workers in user mode (0 where the platform cannot say):
    /// read from the process table on this host, told by the worker itself on another
    /// (under MPI, as of its last answer).
    pub cpu_user: Duration,
    /// CPU time of the slot's workers in the kernel.
    pub cpu_system: Duration,
    /// Peak resident memory of any of the slot's workers, in bytes (`VmHWM`).
    pub peak_rss: u64,
    /// Resident memory of the slot's worker at the last reading, in bytes (0 when unknown,
    /// or once it has exited).
    pub rss: u64,
}

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
