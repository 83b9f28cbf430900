//! Outputs put in item order as chunks arrive: for `map`, which gathers on the caller's
//! thread, and for `map_async`, which gathers on the threads that receive the answers, so
//! that no thread is started for it.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, Weak},
};

use corepool_worker::Task;

use super::{
    PoolError,
    core::{Gatherer, Meters, Outcome, Shared},
    encode_nth_chunk, outputs_into,
    results::Completer,
};
use crate::Items;

/// Outputs put in chunk order as chunks arrive: a chunk next in line is decoded straight
/// into the result, one that arrives early waits, undecoded, until those before it are in.
pub(crate) struct InOrder<O> {
    pub outputs: Vec<O>,
    early: BTreeMap<u64, Outcome>,
    next: u64,
}

impl<O> InOrder<O> {
    pub fn with_capacity(items: usize) -> Self {
        Self { outputs: Vec::with_capacity(items), early: BTreeMap::new(), next: 0 }
    }

    /// How many chunks, from the first, are in.
    pub fn chunks_in(&self) -> u64 {
        self.next
    }

    /// Takes in one chunk's answer; a failed chunk fails the whole at once.
    pub fn place<T: Task<Output = O>>(&mut self, outcome: Outcome, meters: &Meters) -> Result<(), PoolError> {
        if outcome.id.chunk != self.next {
            return match outcome.result {
                Err(error) => Err(error),
                Ok(_) => {
                    self.early.insert(outcome.id.chunk, outcome);
                    Ok(())
                }
            };
        }
        meters.decoding(|| outputs_into::<T>(outcome, &mut self.outputs))?;
        self.next += 1;
        while let Some(outcome) = self.early.remove(&self.next) {
            meters.decoding(|| outputs_into::<T>(outcome, &mut self.outputs))?;
            self.next += 1;
        }
        Ok(())
    }
}

/// A `map_async` job's outputs, gathered in item order on the threads that receive its
/// answers; the last answer, or the first failure, completes the job's result.
pub(crate) struct AsyncGather<T: Task> {
    /// Weak, because the pool holds this as the job's sink.
    shared: Weak<Shared>,
    job: u64,
    chunks: u64,
    /// `None` once the job is complete.
    state: Mutex<Option<Gathering<T>>>,
}

struct Gathering<T: Task> {
    in_order: InOrder<T::Output>,
    completer: Completer<Vec<T::Output>>,
}

impl<T: Task> AsyncGather<T> {
    /// A gatherer for job `job` of `shared`: `items` items in `chunks` chunks.
    pub fn new(
        shared: &Arc<Shared>,
        job: u64,
        items: usize,
        chunks: u64,
        completer: Completer<Vec<T::Output>>,
    ) -> Self {
        let gathering = Gathering { in_order: InOrder::with_capacity(items), completer };
        Self { shared: Arc::downgrade(shared), job, chunks, state: Mutex::new(Some(gathering)) }
    }

    /// Completes the job with `error`, unless it is complete already.
    pub fn fail(&self, error: PoolError) {
        self.finish(Err(error));
    }

    /// Completes the job with the outputs gathered, or with an error, unless it is
    /// complete already.
    fn finish(&self, result: Result<(), PoolError>) {
        let taken = self.state.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.complete(taken, result);
    }

    /// Forgets the job, then makes its result available, if `taken` holds it (not yet
    /// complete). Callbacks are the user's code: they run on the pool's callback thread,
    /// not on the thread that read the answer.
    fn complete(&self, taken: Option<Gathering<T>>, result: Result<(), PoolError>) {
        let Some(Gathering { in_order, completer }) = taken else { return };
        let result = result.map(|()| in_order.outputs);
        let Some(shared) = self.shared.upgrade() else {
            return completer.complete(result);
        };
        shared.close_job(self.job);
        if completer.has_callbacks() {
            shared.run_callback(Box::new(move || completer.complete(result)));
        } else {
            completer.complete(result);
        }
    }
}

impl<T: Task> Gatherer for AsyncGather<T> {
    fn take(&self, outcome: Outcome) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gathering) = state.as_mut() else { return };
        let shared = self.shared.upgrade();
        let placed = match &shared {
            Some(shared) if outcome.id.job == self.job => gathering.in_order.place::<T>(outcome, &shared.meters),
            // Not about one chunk: the pool stopped every job at once.
            _ => Err(outcome.result.err().unwrap_or(PoolError::Terminated)),
        };
        if placed.is_ok() && gathering.in_order.chunks_in() < self.chunks {
            return;
        }
        let taken = state.take();
        drop(state);
        self.complete(taken, placed);
    }
}

/// Submits every chunk of a `map_async` job: on the caller's thread while the pool's queue
/// has room, which for a job of a few chunks is all of them, so that the frames come from
/// memory the caller's thread already has and no thread is started; the rest from a thread
/// of its own, which waits for room as `map` does.
pub(crate) fn submit_async<T: Task, I: Items<T::Chunk> + Send + 'static>(
    shared: &Arc<Shared>,
    gather: Arc<AsyncGather<T>>,
    task: T,
    items: I,
    chunk_size: usize,
) {
    if gather.chunks == 0 {
        return gather.finish(Ok(()));
    }
    for chunk in 0..gather.chunks {
        let all = 0..items.len();
        let waiting = match encode_nth_chunk(shared, (gather.job, chunk), &all, chunk_size, &task, &items)
            .and_then(|encoded| shared.try_enqueue(encoded))
        {
            Ok(None) => continue,
            Ok(Some(waiting)) => waiting,
            Err(error) => return gather.fail(error),
        };
        let (shared, feeder_gather) = (Arc::clone(shared), Arc::clone(&gather));
        let feeder = move || {
            let mut waiting = Some(waiting);
            for chunk in chunk..feeder_gather.chunks {
                let encoded = match waiting.take() {
                    Some(encoded) => Ok(encoded),
                    None => encode_nth_chunk(&shared, (feeder_gather.job, chunk), &all, chunk_size, &task, &items),
                };
                if let Err(error) = encoded.and_then(|encoded| shared.enqueue(encoded)) {
                    return feeder_gather.fail(error);
                }
            }
        };
        if let Err(error) = std::thread::Builder::new().name("corepool-map-async".into()).spawn(feeder) {
            gather.fail(PoolError::Thread(error));
        }
        return;
    }
}
