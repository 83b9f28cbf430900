//! The supervisor's side of watching: per-slot busy clocks and kernel usage, and the
//! coordinator's encode and decode meters. Kept apart from the supervisor so that
//! watching adds nothing to it but a note when a worker's load changes; the kernel is
//! only read with the state lock released.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use super::{
    Shared,
    state::{Slot, SlotState},
};
use crate::pool::{
    platform::{ProcessUsage, process_usage},
    stats::{CodecTime, WorkerState, WorkerStats},
    transport::Transport,
};

impl Slot {
    /// Starts the busy clock, if it is not running, as the worker is handed a chunk.
    pub(super) fn note_dispatch(&mut self) {
        self.watch.busy_since.get_or_insert_with(Instant::now);
    }

    /// Stops the busy clock once the worker holds no chunk.
    pub(super) fn note_load(&mut self) {
        if self.in_flight == 0 {
            self.stop_busy_clock();
        }
    }

    fn stop_busy_clock(&mut self) {
        if let Some(since) = self.watch.busy_since.take() {
            self.watch.busy += since.elapsed();
        }
    }

    fn worker_state(&self, stopping: bool) -> WorkerState {
        match self.state {
            _ if stopping => WorkerState::Stopped,
            SlotState::Ready if self.in_flight > 0 => WorkerState::Busy,
            SlotState::Ready => WorkerState::Idle,
            // Not joined: before the slot's first worker has joined, that is starting;
            // after, the slot is between a worker that died and its replacement.
            _ if self.stats.restarts == 0 && self.stats.retired == 0 => WorkerState::Starting,
            _ => WorkerState::Restarting,
        }
    }
}

/// Encode and decode time, summed lock-free by whichever thread does the work.
#[derive(Debug, Default)]
pub(crate) struct Meters {
    encode_nanos: AtomicU64,
    decode_nanos: AtomicU64,
}

impl Meters {
    /// Runs `encode`, adding its time to the encoding total.
    pub fn encoding<R>(&self, encode: impl FnOnce() -> R) -> R {
        Self::timed(&self.encode_nanos, encode)
    }

    /// Runs `decode`, adding its time to the decoding total.
    pub fn decoding<R>(&self, decode: impl FnOnce() -> R) -> R {
        Self::timed(&self.decode_nanos, decode)
    }

    /// The totals so far.
    pub fn codec_time(&self) -> CodecTime {
        CodecTime {
            encode: Duration::from_nanos(self.encode_nanos.load(Ordering::Relaxed)),
            decode: Duration::from_nanos(self.decode_nanos.load(Ordering::Relaxed)),
        }
    }

    fn timed<R>(total: &AtomicU64, work: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        let result = work();
        total.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }
}

impl Shared {
    /// Each slot's statistics with its state, busy time and last known usage.
    pub fn snapshot(&self) -> Vec<WorkerStats> {
        let state = self.lock();
        let now = Instant::now();
        state
            .slots
            .iter()
            .map(|slot| {
                let open = if state.stopping { None } else { slot.watch.busy_since };
                let usage = slot.watch.past.then(slot.watch.last);
                WorkerStats {
                    pid: slot.pid,
                    state: slot.worker_state(state.stopping),
                    busy: slot.watch.busy + open.map_or(Duration::ZERO, |since| now - since),
                    cpu_user: usage.cpu_user,
                    cpu_system: usage.cpu_system,
                    peak_rss: slot.watch.past.peak_rss.max(slot.watch.last.peak_rss),
                    rss: slot.watch.last.rss,
                    ..slot.stats.clone()
                }
            })
            .collect()
    }

    /// Rows answered so far, over every slot and job.
    pub fn rows_done(&self) -> u64 {
        self.lock().slots.iter().map(|slot| slot.stats.rows).sum()
    }

    /// Reads each live worker's usage from the kernel and keeps it in its slot.
    pub fn refresh_usage(&self) {
        let live: Vec<(usize, u64, u32)> = {
            let state = self.lock();
            state
                .slots
                .iter()
                .enumerate()
                .filter(|(_, slot)| slot.child.is_some())
                .map(|(index, slot)| (index, slot.generation, slot.pid))
                .collect()
        };
        let readings: Vec<_> = live
            .into_iter()
            .filter_map(|(index, generation, pid)| Some((index, generation, process_usage(pid)?)))
            .collect();
        let mut state = self.lock();
        for (index, generation, usage) in readings {
            let slot = &mut state.slots[index];
            // The worker may have been replaced while the kernel was read.
            if slot.generation == generation {
                slot.watch.last = slot.watch.last.latest(usage);
            }
        }
    }

    /// Keeps the usage a worker reported of itself (a worker whose process table this
    /// host cannot read), as the kernel's reading of a local one would be kept.
    pub(super) fn note_reported_usage(&self, index: usize, usage: ProcessUsage) {
        let mut state = self.lock();
        let watch = &mut state.slots[index].watch;
        watch.last = watch.last.latest(usage);
    }

    /// Moves a gone worker's usage into its slot's past, with `reading` its last usage:
    /// read just before it is reaped (a worker that died is a zombie until then, and still
    /// has its CPU times), or told by reaping it.
    pub fn retire_usage(&self, index: usize, reading: Option<ProcessUsage>) {
        let reading = reading.unwrap_or_default();
        let mut state = self.lock();
        let slot = &mut state.slots[index];
        // A dead worker holds nothing any more, whatever the books say until they are
        // settled.
        slot.stop_busy_clock();
        let watch = &mut slot.watch;
        watch.past = watch.past.then(watch.last.latest(reading));
        watch.last = ProcessUsage::default();
    }
}

impl Shared {
    /// A snapshot of each worker's statistics, and the count of peers turned away.
    pub(crate) fn stats(&self) -> (Vec<WorkerStats>, u64) {
        let state = self.lock();
        let stats = state.slots.iter().map(|slot| WorkerStats { pid: slot.pid, ..slot.stats.clone() }).collect();
        (stats, state.rejected_peers)
    }

    /// The transport the pool's engine is.
    pub(crate) fn transport(&self) -> crate::Transport {
        self.engine.transport()
    }

    /// Where the engine lives on the file system (the socket's private directory), until
    /// the pool stops.
    pub(crate) fn socket_dir(&self) -> Option<PathBuf> {
        self.engine.location()
    }

    /// Process ids of the live workers.
    pub(crate) fn worker_pids(&self) -> Vec<u32> {
        let state = self.lock();
        state
            .slots
            .iter()
            .filter(|slot| matches!(slot.state, SlotState::Starting | SlotState::Ready))
            .map(|slot| slot.pid)
            .collect()
    }
}
