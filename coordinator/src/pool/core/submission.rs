//! Jobs and the queue: opening and closing a job, queueing its chunks with the queue kept
//! bounded, and dispatching on the caller's own thread.

use std::sync::{Arc, MutexGuard};

use corepool_protocol::TaskId;

use super::{
    Shared,
    delivery::Delivery,
    dispatch::{ByCaller, dispatch},
    state::{Borrowed, Chunk, State},
};
use crate::pool::PoolError;

/// Whether `chunk` must wait for room in a queue of at most `limit` chunks: not if the
/// pool or the chunk's job is over, which the chunk is then told.
pub(super) fn must_wait_for_room(state: &State, limit: usize, chunk: &Chunk) -> bool {
    state.queue.len() >= limit && !state.stopping && state.broken.is_none() && state.jobs.contains_key(&chunk.id.job)
}

impl Shared {
    /// Registers a new job, returning its id.
    pub(crate) fn open_job(&self, delivery: Arc<dyn Delivery>) -> Result<u64, PoolError> {
        self.open_job_with(|_| delivery)
    }

    /// Registers a new job whose delivery `make_delivery` makes from the job's id, returning
    /// the id.
    pub(crate) fn open_job_with(&self, make_delivery: impl FnOnce(u64) -> Arc<dyn Delivery>) -> Result<u64, PoolError> {
        let mut state = self.lock();
        if let Some(reason) = &state.broken {
            return Err(PoolError::Broken(reason.clone()));
        }
        if state.closed || state.stopping {
            return Err(PoolError::Closed);
        }
        let job = state.next_job;
        state.next_job += 1;
        state.jobs.insert(job, make_delivery(job));
        Ok(job)
    }

    /// Forgets a job: its queued chunks are dropped and late answers are ignored.
    pub(crate) fn close_job(&self, job: u64) {
        let mut state = self.lock();
        state.jobs.remove(&job);
        state.queue.retain(|chunk| chunk.id.job != job);
        let abandoned: Vec<TaskId> = state.in_flight.keys().filter(|id| id.job == job).copied().collect();
        for id in abandoned {
            if let Some(flight) = state.in_flight.remove(&id) {
                let slot = &mut state.slots[flight.worker];
                slot.in_flight -= 1;
                slot.isolated &= slot.in_flight > 0;
            }
        }
        state.slots.iter_mut().for_each(|slot| slot.note_load());
        dispatch(&mut state, self.settings.chunks_in_flight, None);
        drop(state);
        self.changed.notify_all();
    }

    /// Queues a chunk, waiting while the queue is full so that memory stays bounded.
    pub(crate) fn enqueue(&self, chunk: Chunk) -> Result<(), PoolError> {
        self.enqueue_with(chunk, None).map(drop)
    }

    /// Like [`enqueue`](Self::enqueue), for a caller that waits for this one chunk's
    /// answer (`apply`). If a worker with nothing else to answer takes it at once, this
    /// thread reads the answer from that worker's connection itself, which spares the
    /// reader thread's hand-off: a wake-up, which on a small machine costs as much as the
    /// rest of the round trip. The answer goes to the job as any other.
    pub(crate) fn enqueue_and_read(&self, chunk: Chunk) -> Result<(), PoolError> {
        let id = chunk.id;
        if let Some(borrowed) = self.enqueue_with(chunk, Some(id))? {
            self.read_borrowed(borrowed, id);
        }
        Ok(())
    }

    /// Like [`enqueue`](Self::enqueue), but gives the chunk back rather than wait while
    /// the queue is full.
    pub(crate) fn try_enqueue(&self, chunk: Chunk) -> Result<Option<Chunk>, PoolError> {
        let state = self.lock();
        if must_wait_for_room(&state, self.queue_limit(), &chunk) {
            return Ok(Some(chunk));
        }
        self.push_chunk(state, chunk, None).map(|_| None)
    }

    pub(super) fn enqueue_with(&self, chunk: Chunk, read_here: Option<TaskId>) -> Result<Option<Borrowed>, PoolError> {
        let limit = self.queue_limit();
        let mut state = self.lock();
        while must_wait_for_room(&state, limit, &chunk) {
            state = self.changed.wait(state);
        }
        self.push_chunk(state, chunk, read_here)
    }

    /// Queues `chunk` unless its job or the pool is over, and dispatches.
    pub(super) fn push_chunk(
        &self,
        mut state: MutexGuard<'_, State>,
        chunk: Chunk,
        read_here: Option<TaskId>,
    ) -> Result<Option<Borrowed>, PoolError> {
        if let Some(reason) = &state.broken {
            return Err(PoolError::Broken(reason.clone()));
        }
        if state.stopping {
            return Err(PoolError::Terminated);
        }
        if !state.jobs.contains_key(&chunk.id.job) {
            // The job already failed; its outcome is on its way to the caller.
            return Ok(None);
        }
        state.queue.push_back(chunk);
        Ok(self.dispatch_from_caller(state, read_here))
    }

    /// Dispatches on the caller's thread, which then writes the small frames itself: a
    /// one-row call then costs no wake-up of a writer thread. With `read_here`, borrows
    /// the connection of the worker that takes that chunk, if it has nothing else to answer.
    pub(super) fn dispatch_from_caller(
        &self,
        mut state: MutexGuard<'_, State>,
        read_here: Option<TaskId>,
    ) -> Option<Borrowed> {
        let mut write_here = Vec::new();
        let mut borrowed = None;
        let had_batch = state.open_batch.is_some();
        let by_caller = ByCaller { write_here: &mut write_here, read_here: read_here.map(|id| (id, &mut borrowed)) };
        dispatch(&mut state, self.settings.chunks_in_flight, Some(by_caller));
        let sealed = had_batch && state.open_batch.is_none();
        drop(state);
        if sealed {
            self.batch_sealed.notify_all();
        }
        for outbox in write_here {
            outbox.write_here();
        }
        borrowed
    }

    pub(super) fn queue_limit(&self) -> usize {
        self.settings.workers * self.settings.chunks_in_flight * 2
    }

    /// Stops taking new work; work already submitted goes on.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    /// Waits until no job is outstanding.
    pub(crate) fn wait_idle(&self) {
        let mut state = self.lock();
        while (!state.jobs.is_empty() || state.open_batch.is_some()) && !state.stopping {
            state = self.changed.wait(state);
        }
    }
}
