//! Stopping: a pool broken beyond going on, and a pool told to stop, politely or not.

use std::{ops::Range, sync::Arc, time::Duration};

use corepool_protocol::{ToWorker, codec};

use super::{
    Shared,
    delivery::{Batch, Delivery, Outcome},
    state::{Chunk, SlotState, row_range},
};
use crate::{
    outgoing::Outgoing,
    pool::{
        PoolError,
        error::ItemRanges,
        platform::{Child, reap_all},
        transport::Transport,
    },
};

/// What one worker of a pool that cannot run a lost worker's chunks again (MPI) held when
/// asked; see [`work_held_by_ranks`]. Shown as one line, such as
/// `rank 2 on host node1 (pid 4711) was lost holding items 6000..7000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldWork {
    /// Who it is (under MPI: its rank, host and process id).
    pub worker: String,
    /// The items of each chunk it held, in the order it was sent them.
    pub items: Vec<Range<u64>>,
    /// Its process is known to have ended (under MPI: a rank on this host).
    pub lost: bool,
}

impl std::fmt::Display for HeldWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.lost { "was lost holding" } else { "held" };
        match self.items.is_empty() {
            true => write!(f, "{} {verb} no items", self.worker),
            false => write!(f, "{} {verb} items {}", self.worker, ItemRanges(&self.items)),
        }
    }
}

/// For every running pool whose workers' chunks cannot run again elsewhere (an MPI pool),
/// what each worker holds now: every worker that holds a chunk, and every worker known
/// to be gone. For a handler of the launcher's SIGTERM, which is how Open MPI's `mpirun`
/// ends the job when a rank dies, to say what was lost before the process ends.
pub fn work_held_by_ranks() -> Vec<HeldWork> {
    let pools: Vec<Arc<Shared>> =
        super::POOLS.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(std::sync::Weak::upgrade).collect();
    pools.iter().filter(|pool| !pool.engine.reruns_lost_work()).flat_map(|pool| pool.work_held()).collect()
}

/// The frame that tells a worker to finish.
pub(super) fn shutdown_frame() -> Outgoing {
    Outgoing::encoded(
        codec::encode_frame(&ToWorker::Shutdown, 0, |_| Ok(())).expect("a message with no payload fits a frame"),
    )
}

impl Shared {
    /// What each worker of this pool holds now (see [`work_held_by_ranks`]).
    fn work_held(&self) -> Vec<HeldWork> {
        let state = self.lock();
        let mut held = Vec::new();
        for (index, slot) in state.slots.iter().enumerate() {
            let mut chunks: Vec<_> = state.in_flight.values().filter(|flight| flight.worker == index).collect();
            chunks.sort_by_key(|flight| flight.order);
            let items: Vec<_> = chunks.iter().map(|flight| row_range(&flight.chunk)).collect();
            // Ranks told to stop end as planned.
            let lost = !state.stopping && slot.state != SlotState::Gone && self.engine.known_gone(index);
            if items.is_empty() && !lost {
                continue;
            }
            let worker = self.engine.describe(index).unwrap_or_else(|| format!("worker {index} (pid {})", slot.pid));
            held.push(HeldWork { worker, items, lost });
        }
        held
    }

    /// Marks the pool as unable to go on, and fails all its outstanding work.
    pub(super) fn break_pool(&self, reason: String) {
        self.lock().broken.get_or_insert_with(|| reason.clone());
        self.fail_everything(&reason);
    }

    /// Fails every queued and in-flight chunk: the pool cannot go on.
    pub(crate) fn fail_everything(&self, why: &str) {
        let mut state = self.lock();
        let mut doomed: Vec<Chunk> = state.queue.drain(..).collect();
        doomed.extend(state.in_flight.drain().map(|(_, flight)| flight.chunk));
        let failed: Vec<_> = doomed
            .into_iter()
            .map(|chunk| {
                let outcome =
                    Outcome { id: chunk.id, rows: chunk.rows, result: Err(PoolError::Broken(why.to_owned())) };
                (state.take_delivery(chunk.id.job), outcome)
            })
            .collect();
        drop(state);
        for (delivery, outcome) in failed {
            self.deliver(delivery, outcome);
        }
        self.changed.notify_all();
    }

    /// Stops every worker: politely if `graceful` (a shutdown message, then a grace
    /// period), then by force. Every outstanding job fails with [`PoolError::Terminated`].
    pub(crate) fn stop(&self, graceful: bool) {
        let mut state = self.lock();
        if state.stopping {
            return;
        }
        state.stopping = true;
        state.closed = true;
        let mut children = Vec::new();
        let mut outboxes = Vec::new();
        for (index, slot) in state.slots.iter_mut().enumerate() {
            // A worker with nothing in flight has read all it was sent: a small frame to it
            // cannot wait on a full socket.
            outboxes.extend(slot.outbox.take().map(|outbox| (outbox, slot.in_flight == 0)));
            slot.state = SlotState::Gone;
            slot.reader = None;
            slot.reader_wake.notify_all();
            children.extend(slot.child.take().map(|child| (index, child)));
        }
        let threads = std::mem::take(&mut state.threads);
        let mut jobs: Vec<Arc<dyn Delivery>> = state.jobs.drain().map(|(_, delivery)| delivery).collect();
        jobs.extend(state.open_batch.take().map(|batch| Batch::new(batch.completions) as Arc<dyn Delivery>));
        state.queue.clear();
        state.in_flight.clear();
        drop(state);
        self.changed.notify_all();
        // To an idle worker, the stop frame is written on this thread (where the connection
        // is free), which spares the worker a wake-up of its writer thread before it can
        // start to exit. A busy worker may not be reading: its frame goes to the writer thread, so
        // that no stop waits on a worker that hangs.
        for (outbox, idle) in outboxes {
            if graceful && outbox.push(Arc::new(shutdown_frame()), idle).is_ok() && idle {
                outbox.write_here();
            }
            outbox.close();
        }
        for delivery in jobs {
            delivery.stop(PoolError::Terminated, self);
        }
        // The last callbacks are queued: the callback thread ends once it has run them.
        let callback_thread = self.callbacks.lock().unwrap_or_else(|e| e.into_inner()).stop();
        // Wakes the acceptor, which sees `stopping` and returns, and frees what the engine
        // holds while the workers exit.
        self.engine.stop();

        // Workers told to stop exit within a fraction of a millisecond; whatever is left
        // after the grace period is killed. Reaping them tells their final usage.
        let grace = if graceful { Duration::from_secs(2) } else { Duration::ZERO };
        let (indices, children): (Vec<usize>, Vec<Child>) = children.into_iter().unzip();
        let usages = reap_all(children, grace);
        // The supervisor goes last: a worker gets SIGKILL when the thread that started it ends.
        self.watch.notify_all();
        for (index, usage) in indices.into_iter().zip(usages) {
            self.retire_usage(index, usage);
        }
        for thread in threads.into_iter().chain(callback_thread) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_work_reads_as_one_line() {
        let worker = String::from("rank 2 on host node1 (pid 4711)");
        let lost = HeldWork { worker: worker.clone(), items: std::iter::once(6000..7000).collect(), lost: true };
        assert_eq!(lost.to_string(), "rank 2 on host node1 (pid 4711) was lost holding items 6000..7000");
        let idle = HeldWork { worker: worker.clone(), items: Vec::new(), lost: true };
        assert_eq!(idle.to_string(), "rank 2 on host node1 (pid 4711) was lost holding no items");
        let busy = HeldWork { worker, items: vec![0..10, 30..40, 10..20], lost: false };
        assert_eq!(busy.to_string(), "rank 2 on host node1 (pid 4711) held items 0..20, 30..40");
    }
}
