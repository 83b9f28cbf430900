//! `map_async`'s delivery: outputs put in item order on the threads that receive the
//! answers, so that no thread is started for them; the last answer completes the result.

use std::sync::{Arc, Mutex};

use corepool_worker::Task;

use super::{
    PoolError,
    arrivals::{InTurn, Order},
    core::{Delivery, Outcome, PoolSide, Shared},
    encode_nth_chunk,
    job::outputs_into,
    results::Completer,
};
use crate::Items;

/// A `map_async` job's outputs, gathered in item order on the threads that receive its
/// answers: a chunk next in line is decoded straight into the result, one that arrives
/// early waits, undecoded, until those before it are in. The last answer, or the first
/// failure, completes the job's result.
pub(crate) struct Gathered<T: Task> {
    job: u64,
    chunks: u64,
    /// `None` once the job is complete.
    state: Mutex<Option<Gathering<T>>>,
}

struct Gathering<T: Task> {
    in_turn: InTurn<Outcome>,
    outputs: Vec<T::Output>,
    completer: Completer<Vec<T::Output>>,
}

impl<T: Task> Gathered<T> {
    /// The delivery of job `job`: `items` items in `chunks` chunks.
    pub fn new(job: u64, items: usize, chunks: u64, completer: Completer<Vec<T::Output>>) -> Self {
        let gathering = Gathering { in_turn: InTurn::failing_fast(), outputs: Vec::with_capacity(items), completer };
        Self { job, chunks, state: Mutex::new(Some(gathering)) }
    }

    /// Completes the job with `error`, unless it is complete already.
    pub fn fail(&self, error: PoolError, pool: &dyn PoolSide) {
        self.finish(Err(error), pool);
    }

    /// Completes the job with the outputs gathered, or with an error, unless it is
    /// complete already.
    fn finish(&self, result: Result<(), PoolError>, pool: &dyn PoolSide) {
        let taken = self.state.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.complete(taken, result, pool);
    }

    /// Forgets the job, then makes its result available, if `taken` holds it (not yet
    /// complete). Callbacks are the user's code: they run on the pool's callback thread,
    /// not on the thread that read the answer.
    fn complete(&self, taken: Option<Gathering<T>>, result: Result<(), PoolError>, pool: &dyn PoolSide) {
        let Some(Gathering { outputs, completer, .. }) = taken else { return };
        let result = result.map(|()| outputs);
        pool.close_job(self.job);
        if completer.has_callbacks() {
            pool.run_callback(Box::new(move || completer.complete(result)));
        } else {
            completer.complete(result);
        }
    }
}

impl<T: Task> Delivery for Gathered<T> {
    fn take(&self, outcome: Outcome, pool: &dyn PoolSide) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(gathering) = state.as_mut() else { return };
        gathering.in_turn.push(outcome);
        let mut placed = Ok(());
        while let Some(outcome) = gathering.in_turn.pop() {
            placed = pool.decoding(|| outputs_into::<T>(outcome, &mut gathering.outputs));
            if placed.is_err() {
                break;
            }
        }
        if placed.is_ok() && gathering.in_turn.taken_in_turn() < self.chunks {
            return;
        }
        let taken = state.take();
        drop(state);
        self.complete(taken, placed, pool);
    }

    fn stop(&self, error: PoolError, pool: &dyn PoolSide) {
        self.fail(error, pool);
    }
}

/// Submits every chunk of a `map_async` job: on the caller's thread while the pool's queue
/// has room, which for a job of a few chunks is all of them, so that the frames come from
/// memory the caller's thread already has and no thread is started; the rest from a thread
/// of its own, which waits for room as `map` does.
pub(crate) fn submit_async<T: Task, I: Items<T::Chunk> + Send + 'static>(
    shared: &Arc<Shared>,
    gather: Arc<Gathered<T>>,
    task: T,
    items: I,
    chunk_size: usize,
) {
    if gather.chunks == 0 {
        return gather.finish(Ok(()), &**shared);
    }
    for chunk in 0..gather.chunks {
        let all = 0..items.len();
        let waiting = match encode_nth_chunk(shared, (gather.job, chunk), &all, chunk_size, &task, &items)
            .and_then(|encoded| shared.try_enqueue(encoded))
        {
            Ok(None) => continue,
            Ok(Some(waiting)) => waiting,
            Err(error) => return gather.fail(error, &**shared),
        };
        let (feeder_shared, feeder_gather) = (Arc::clone(shared), Arc::clone(&gather));
        let feeder = move || {
            let (shared, mut waiting) = (&*feeder_shared, Some(waiting));
            for chunk in chunk..feeder_gather.chunks {
                let encoded = match waiting.take() {
                    Some(encoded) => Ok(encoded),
                    None => encode_nth_chunk(shared, (feeder_gather.job, chunk), &all, chunk_size, &task, &items),
                };
                if let Err(error) = encoded.and_then(|encoded| shared.enqueue(encoded)) {
                    return feeder_gather.fail(error, shared);
                }
            }
        };
        if let Err(error) = std::thread::Builder::new().name("corepool-map-async".into()).spawn(feeder) {
            gather.fail(PoolError::Thread(error), &**shared);
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::Ordering, time::Duration};

    use corepool_protocol::TaskId;

    use super::*;
    use crate::pool::{
        AsyncResult, Callbacks,
        core::testing::FakePool,
        job::tests::{CountInRange, counts_of},
    };

    fn gathered(chunks: u64, callbacks: Callbacks<Vec<u32>>) -> (Gathered<CountInRange>, AsyncResult<Vec<u32>>) {
        let (result, completer) = AsyncResult::new(callbacks);
        (Gathered::new(1, 2 * chunks as usize, chunks, completer), result)
    }

    #[test]
    fn answers_are_put_in_item_order_and_the_last_completes_the_result() {
        let pool = FakePool::default();
        let (gather, result) = gathered(3, Callbacks::none());
        gather.take(counts_of(2, 4, &[5, 6]), &pool);
        gather.take(counts_of(0, 0, &[1, 2]), &pool);
        assert!(!result.ready(), "chunk 1 is still out");
        gather.take(counts_of(1, 2, &[3, 4]), &pool);
        assert_eq!(*pool.closed.lock().unwrap(), [1], "the job is forgotten once complete");
        assert_eq!(pool.callbacks.load(Ordering::SeqCst), 0, "no callbacks: completed on the reader");
        assert_eq!(result.get(Some(Duration::ZERO)).expect("complete"), [1, 2, 3, 4, 5, 6]);

        gather.take(counts_of(1, 2, &[9, 9]), &pool);
        assert_eq!(*pool.closed.lock().unwrap(), [1], "a late answer changes nothing");
    }

    #[test]
    fn a_failure_mid_job_completes_the_result_at_once() {
        let pool = FakePool::default();
        let (gather, result) = gathered(3, Callbacks::none());
        gather.take(counts_of(0, 0, &[1, 2]), &pool);
        let id = TaskId { job: 1, chunk: 2, first_row: 4 };
        gather.take(Outcome { id, rows: 2, result: Err(PoolError::Protocol("chunk 2 went wrong".into())) }, &pool);
        let error = result.get(Some(Duration::ZERO)).unwrap_err();
        assert!(error.to_string().contains("chunk 2 went wrong"), "{error}");
        gather.take(counts_of(1, 2, &[3, 4]), &pool);
        gather.stop(PoolError::Terminated, &pool);
        assert_eq!(*pool.closed.lock().unwrap(), [1]);
    }

    #[test]
    fn callbacks_run_on_the_callback_thread_and_a_stop_fails_the_result() {
        let pool = FakePool::default();
        let seen = Arc::new(Mutex::new(None));
        let noted = Arc::clone(&seen);
        let callbacks = Callbacks::on_result(move |result: Result<&Vec<u32>, &PoolError>| {
            *noted.lock().unwrap() = Some(result.map(Vec::len).map_err(PoolError::to_string));
        });
        let (gather, result) = gathered(2, callbacks);
        gather.take(counts_of(1, 2, &[3, 4]), &pool);
        gather.stop(PoolError::Terminated, &pool);
        assert_eq!(pool.callbacks.load(Ordering::SeqCst), 1);
        assert!(seen.lock().unwrap().as_ref().is_some_and(Result::is_err));
        assert!(matches!(result.get(Some(Duration::ZERO)), Err(PoolError::Terminated)));
    }
}
