//! Watching a pool from another thread: its workers' states and counters, rows done, and
//! time spent encoding and decoding.

use std::sync::Arc;

use super::{CodecTime, WorkerStats, core::Shared};

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

    /// Each slot's statistics now, in slot order. CPU times and memory are read from the
    /// kernel for live local workers; for workers that died or stopped, they are the last
    /// values read; MPI ranks tell their own with each answer.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.shared.refresh_usage();
        self.shared.snapshot()
    }

    /// Each slot's state and counters now, without asking the kernel (cheap enough to
    /// call many times a second).
    pub fn worker_states(&self) -> Vec<WorkerStats> {
        self.shared.snapshot()
    }

    /// How the pool reaches its workers: with [`crate::Transport::Local`] they are child
    /// processes on this machine, whose process table a watcher may read itself.
    pub fn transport(&self) -> crate::Transport {
        self.shared.transport()
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
