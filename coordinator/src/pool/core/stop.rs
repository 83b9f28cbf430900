//! Stopping: a pool broken beyond going on, and a pool told to stop, politely or not.

use std::{sync::Arc, time::Duration};

use corepool_protocol::{ToWorker, codec};

use super::{
    Shared,
    delivery::{Batch, Delivery, Outcome},
    state::{Chunk, SlotState},
};
use crate::{
    outgoing::Outgoing,
    pool::{
        PoolError,
        platform::{Child, reap_all},
        transport::Transport,
    },
};

/// The frame that tells a worker to finish.
pub(super) fn shutdown_frame() -> Outgoing {
    Outgoing::encoded(
        codec::encode_frame(&ToWorker::Shutdown, 0, |_| Ok(())).expect("a message with no payload fits a frame"),
    )
}

impl Shared {
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
