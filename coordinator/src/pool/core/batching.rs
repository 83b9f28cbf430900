//! One-item calls (`apply_async`) gathered into batches that go out as one frame, and a
//! batch that took its worker down split back into its calls.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use corepool_protocol::{TaskId, ToWorker, batch, codec};

use super::{
    Shared,
    delivery::{Batch, ItemCompletion},
    dispatch::{BATCH_GATHER, dispatch},
    state::{Chunk, OpenBatch, State},
};
use crate::{
    outgoing::{AsBytes, Outgoing, SharedBytes},
    pool::PoolError,
};

/// How many buffers of answered batches are kept for new ones.
pub(super) const SPARE_BATCH_BUFFERS: usize = 4;

/// A batch goes out when a worker has room for it, or when it is this full.
pub(super) const BATCH_TASKS: usize = 4096;

pub(super) const BATCH_BYTES: usize = 4 << 20;

/// How long a worker waits for the open batch to fill: enough for a caller in a loop to
/// add [`BATCH_GATHER`] calls; a caller that has stopped adding waits this much more for
/// its last ones.
pub(super) const BATCH_GATHER_WAIT: Duration = Duration::from_micros(200);

/// Splits a batch chunk that took down its worker into one-item batches, each a job of its
/// own and a suspect, so that the culprit alone fails and its batch-mates still run.
pub(super) fn split_batch(state: &mut State, chunk: &Chunk) -> Option<Vec<Chunk>> {
    if chunk.rows < 2 || !state.is_batch(chunk.id.job) {
        return None;
    }
    // A batch of two calls or more was sealed with its calls as its frame's tail.
    let entries: Vec<(corepool_protocol::TaskRef<&str>, &[u8])> =
        batch::tasks(chunk.frame.tail()).collect::<Result<_, _>>().ok()?;
    let completions = state.jobs.remove(&chunk.id.job)?.as_batch()?.take_calls();
    let mut pieces = Vec::with_capacity(entries.len());
    for ((task, payload), completion) in entries.into_iter().zip(completions) {
        let job = state.next_job;
        state.next_job += 1;
        let mut one = Vec::new();
        batch::push_task(&mut one, task, payload);
        let id = TaskId { job, chunk: 0, first_row: 0 };
        let frame = codec::encode_frame(&ToWorker::Batch { id, tasks: 1 }, one.len(), |out| {
            out.extend_from_slice(&one);
            Ok(())
        })
        .expect("one task of a batch fits a frame");
        state.jobs.insert(job, Batch::new(vec![completion]));
        let frame = Arc::new(Outgoing::encoded(frame));
        pieces.push(Chunk { id, rows: 1, frame, attempts: chunk.attempts, suspect: true });
    }
    Some(pieces)
}

impl Shared {
    /// Waits, for at most [`BATCH_GATHER_WAIT`], while the open batch of `job` fills up
    /// (its caller sends it once it holds [`BATCH_GATHER`] calls), then sends whatever it
    /// holds. Meanwhile the worker of slot `index` has nothing to do, so its reader has
    /// nothing to read.
    pub(super) fn gather_batch(&self, index: usize, job: u64) {
        let deadline = Instant::now() + BATCH_GATHER_WAIT;
        let mut state = self.lock();
        loop {
            let still_open = state.open_batch.as_ref().is_some_and(|batch| batch.job == job);
            let now = Instant::now();
            if !still_open || now >= deadline || state.stopping || state.slots[index].in_flight > 0 {
                break;
            }
            state = self.batch_sealed.wait_timeout(state, deadline - now);
        }
        state.gathering -= 1;
        if state.open_batch.as_ref().is_some_and(|batch| batch.job == job) {
            state.seal_open_batch();
        }
        // Whatever batch is open now (another, if this one went out meanwhile) went
        // unsent while this thread gathered: with the last gatherer gone, it goes out
        // here, or it could wait for ever once the caller has stopped adding calls and
        // every worker is idle.
        dispatch(&mut state, self.settings.chunks_in_flight, None);
    }

    /// Adds a one-item call to the open batch, which goes out as one frame as soon as a
    /// worker has room (at once, while workers are idle), or once it is full. A burst of
    /// calls while every worker is busy thus costs one message, not one per call. Waits
    /// while the queue is full, so that memory stays bounded.
    pub(crate) fn submit_one(
        &self,
        task: corepool_protocol::TaskRef<&str>,
        payload: &[u8],
        completion: ItemCompletion,
    ) -> Result<(), PoolError> {
        let limit = self.queue_limit();
        let mut state = self.lock();
        loop {
            if let Some(reason) = &state.broken {
                return Err(PoolError::Broken(reason.clone()));
            }
            if state.closed || state.stopping {
                return Err(PoolError::Closed);
            }
            if state.queue.len() < limit {
                break;
            }
            state = self.changed.wait(state);
        }
        if state.open_batch.is_none() {
            let job = state.next_job;
            state.next_job += 1;
            let tasks = state.free_batch_buffer();
            let completions = Vec::with_capacity(BATCH_GATHER);
            state.open_batch = Some(OpenBatch { job, tasks, completions });
        }
        let open = state.open_batch.as_mut().expect("opened above");
        batch::push_task(&mut open.tasks, task, payload);
        open.completions.push(completion);
        if open.completions.len() >= BATCH_TASKS || open.tasks.len() >= BATCH_BYTES {
            state.seal_open_batch();
        }
        self.dispatch_from_caller(state, None);
        Ok(())
    }
}

impl State {
    /// Turns the open batch, if any, into a chunk at the back of the queue.
    pub(super) fn seal_open_batch(&mut self) {
        let Some(open) = self.open_batch.take() else { return };
        let tasks = open.completions.len();
        let id = TaskId { job: open.job, chunk: 0, first_row: 0 };
        let head = codec::encode_frame_head_before(&ToWorker::Batch { id, tasks: tasks as u32 }, open.tasks.len())
            .expect("a batch stays far below the frame limit");
        self.jobs.insert(open.job, Batch::new(open.completions));
        // The calls go out from the buffer they were gathered in, which comes back once the
        // frame is gone (see `State::free_batch_buffer`).
        let buffer = Arc::new(open.tasks);
        let calls = SharedBytes::new(Arc::clone(&buffer) as Arc<dyn AsBytes>, 0..buffer.len());
        // Free buffers beyond a few are let go: a burst of batches leaves no hoard behind.
        let mut free = 0;
        self.batch_buffers.retain(|buffer| {
            free += usize::from(Arc::strong_count(buffer) == 1);
            Arc::strong_count(buffer) > 1 || free <= SPARE_BATCH_BUFFERS
        });
        self.batch_buffers.push(buffer);
        let frame = Arc::new(Outgoing::with_tail(head, calls));
        self.queue.push_back(Chunk { id, rows: tasks, frame, attempts: 0, suspect: false });
    }

    /// An empty buffer for a new batch's calls: a sent batch's, if its frame is gone.
    pub(super) fn free_batch_buffer(&mut self) -> Vec<u8> {
        // Only frames share a buffer, and only a new batch takes one back, under the lock:
        // a buffer held here alone stays so.
        let free = self.batch_buffers.iter().position(|buffer| Arc::strong_count(buffer) == 1);
        match free.map(|index| Arc::try_unwrap(self.batch_buffers.swap_remove(index))) {
            Some(Ok(mut buffer)) => {
                buffer.clear();
                buffer
            }
            _ => Vec::new(),
        }
    }
}
