//! Handles on results that arrive later: [`AsyncResult`] and the `imap` iterators.

use std::{
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use corepool_worker::Task;

use corepool_protocol::codec::CodecError;

use super::{
    ChunkOutputs, JobRun, PoolError,
    arrivals::{AsArrived, InTurn, Order},
    core::{ItemCall, ItemError, Outcome},
};
use crate::Items;

/// What runs when a call finishes, given its result or its error.
type Callback<R> = Box<dyn FnOnce(Result<&R, &PoolError>) + Send>;

/// What to run when an asynchronous call finishes: on success, on failure, both or
/// neither (Python's `callback` and `error_callback`). A callback that panics has its
/// message printed by the panic hook; its call's result still becomes ready.
pub struct Callbacks<R> {
    /// Both in one box, so that a call's result slot stays small: `apply_async` makes one
    /// per call, in fresh memory.
    run: Option<Callback<R>>,
}

impl<R: 'static> Callbacks<R> {
    /// No callbacks: wait on the [`AsyncResult`] instead.
    pub fn none() -> Self {
        Self { run: None }
    }

    /// Runs `callback` with the result when the call succeeds.
    pub fn on_success(callback: impl FnOnce(&R) + Send + 'static) -> Self {
        Self {
            run: Some(Box::new(move |result| {
                if let Ok(value) = result {
                    callback(value);
                }
            })),
        }
    }

    /// Runs `callback` with the result or the error when the call finishes: one callback
    /// for both, where one closure should see every outcome.
    pub fn on_result(callback: impl FnOnce(Result<&R, &PoolError>) + Send + 'static) -> Self {
        Self { run: Some(Box::new(callback)) }
    }

    /// Also runs `callback` with the error when the call fails (in place of one given
    /// before).
    pub fn or_on_error(self, callback: impl FnOnce(&PoolError) + Send + 'static) -> Self {
        let on_success = self.run;
        Self {
            run: Some(Box::new(move |result| match result {
                Ok(value) => {
                    if let Some(on_success) = on_success {
                        on_success(Ok(value));
                    }
                }
                Err(error) => callback(error),
            })),
        }
    }
}

/// The result, once there is one, and the callbacks to run before it is made available.
struct SlotState<R> {
    /// The error boxed, so that the slot of a small result stays small: `apply_async`
    /// makes one per call, and every one is fresh memory.
    value: Option<Result<R, Box<PoolError>>>,
    callback: Option<Callback<R>>,
}

/// What an [`AsyncResult`] shares with the side that fills it: for a one-item call, the
/// one allocation the call makes (80 bytes for a count).
pub(crate) struct Slot<R> {
    state: Mutex<SlotState<R>>,
    ready: Condvar,
    /// How many threads wait on `ready`: waking waiters costs a system call, which a result
    /// nobody waits on, as most with callbacks, should not pay. Changed and read under the
    /// lock of `state`; an atomic only so that it fits beside `ready` rather than in
    /// `state`, which keeps the slot a size class smaller.
    waiters: AtomicU32,
    /// For a one-item call (`apply_async`): how to read its answer.
    item: Option<ItemDecoder<R>>,
}

/// How a one-item call reads its output from the worker's answer.
struct ItemDecoder<R> {
    index: usize,
    decode: fn(&[u8]) -> Result<R, CodecError>,
}

/// The result of an asynchronous call, available once the workers have answered.
pub struct AsyncResult<R> {
    slot: Arc<Slot<R>>,
}

/// The side of an [`AsyncResult`] that fills it.
pub(crate) struct Completer<R> {
    slot: Arc<Slot<R>>,
}

impl<R> Slot<R> {
    fn new(callbacks: Callbacks<R>, item: Option<ItemDecoder<R>>) -> Arc<Self> {
        let state = SlotState { value: None, callback: callbacks.run };
        Arc::new(Self { state: Mutex::new(state), ready: Condvar::new(), waiters: AtomicU32::new(0), item })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the matching callback, then makes the result available, even if the callback
    /// panics (the panic hook has printed its message by then).
    fn complete(&self, result: Result<R, PoolError>) {
        let callback = self.lock().callback.take();
        if let Some(callback) = callback {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(result.as_ref())));
        }
        let mut state = self.lock();
        state.value = Some(result.map_err(Box::new));
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.ready.notify_all();
        }
    }
}

impl<R> AsyncResult<R> {
    /// A result and its completer; `callbacks` run when it completes.
    pub(crate) fn new(callbacks: Callbacks<R>) -> (Self, Completer<R>) {
        let slot = Slot::new(callbacks, None);
        (Self { slot: Arc::clone(&slot) }, Completer { slot })
    }

    /// A result for one-item call `index`, which completes itself from its answer in a
    /// batch, decoded by `decode`.
    pub(crate) fn for_item(
        index: usize,
        callbacks: Callbacks<R>,
        decode: fn(&[u8]) -> Result<R, CodecError>,
    ) -> (Self, Arc<dyn ItemCall>)
    where
        R: Send + 'static,
    {
        let slot = Slot::new(callbacks, Some(ItemDecoder { index, decode }));
        (Self { slot: Arc::clone(&slot) }, slot)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<R>> {
        self.slot.lock()
    }

    /// Whether the call has finished.
    pub fn ready(&self) -> bool {
        self.lock().value.is_some()
    }

    /// Whether the call finished without error; `None` while it is running.
    pub fn successful(&self) -> Option<bool> {
        self.lock().value.as_ref().map(Result::is_ok)
    }

    /// Waits until the call has finished or `timeout` has passed (`None`: no limit);
    /// returns whether it has finished.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let ready = &self.slot.ready;
        let mut state = self.lock();
        if state.value.is_some() {
            return true;
        }
        self.slot.waiters.fetch_add(1, Ordering::Relaxed);
        while state.value.is_none() {
            state = match deadline {
                None => ready.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    ready.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
        self.slot.waiters.fetch_sub(1, Ordering::Relaxed);
        state.value.is_some()
    }

    /// The result, waiting at most `timeout` for it (`None`: no limit); after a
    /// [`PoolError::Timeout`] the result is lost, so call [`wait`](Self::wait) first to
    /// try again later.
    pub fn get(self, timeout: Option<Duration>) -> Result<R, PoolError> {
        if !self.wait(timeout) {
            return Err(PoolError::Timeout);
        }
        self.lock().value.take().unwrap_or(Err(Box::new(PoolError::Terminated))).map_err(|error| *error)
    }
}

impl<R> Completer<R> {
    /// Whether completing runs a callback: the user's code, which may take its time.
    pub(crate) fn has_callbacks(&self) -> bool {
        let state = self.slot.lock();
        state.callback.is_some()
    }

    /// Runs the matching callback, then makes the result available.
    pub(crate) fn complete(self, result: Result<R, PoolError>) {
        self.slot.complete(result);
    }
}

impl<R: Send + 'static> ItemCall for Slot<R> {
    fn finish(&self, answer: Result<&[u8], ItemError>) {
        let Some(ItemDecoder { index, decode }) = self.item else {
            unreachable!("only one-item calls are handed to batches")
        };
        let rows = index as u64..index as u64 + 1;
        let value = match answer {
            Ok(bytes) => decode(bytes).map_err(|e| PoolError::Protocol(format!("item {index}: {e}"))),
            Err(ItemError::Failed(failure)) => Err(PoolError::Task { rows, failure }),
            // A batch's chunk has no rows of its own: the error names this item's.
            Err(ItemError::Pool(PoolError::WorkerDied { attempts, death, .. })) => {
                Err(PoolError::WorkerDied { rows, attempts, death })
            }
            Err(ItemError::Pool(error)) => Err(error),
        };
        self.complete(value);
    }
}

/// The outputs of [`Pool::imap`](crate::Pool::imap), in item order.
///
/// Iterating yields one output at a time; [`next_chunk`](Self::next_chunk) hands over a
/// whole chunk's outputs at once, which is cheaper for many items. At most a bounded
/// window of chunks is submitted ahead of the consumer. After an error, the iterator ends.
pub struct IMap<'p, T: Task, I: ?Sized> {
    /// Its answers, taken in chunk order (an answer that comes early waits, undecoded).
    run: JobRun<InTurn<Outcome>>,
    task: &'p T,
    items: &'p I,
    window: u64,
    /// The outputs of the chunk at hand not yet taken, last first (see [`refill`]).
    current: Vec<T::Output>,
    /// One past the item index of the last output of the chunk at hand.
    current_end: usize,
    failed: bool,
}

impl<'p, T: Task, I: Items<T::Chunk> + ?Sized> IMap<'p, T, I> {
    pub(crate) fn new(run: JobRun<InTurn<Outcome>>, task: &'p T, items: &'p I, window: usize) -> Self {
        let window = window.max(1) as u64;
        Self { run, task, items, window, current: Vec::new(), current_end: 0, failed: false }
    }

    /// The next chunk's first item index and outputs, in item order; `None` at the end.
    /// If some of a chunk's outputs were taken one at a time, the rest of it comes first.
    ///
    /// Cheaper than taking outputs one at a time: one call and one check a chunk, not an
    /// item.
    pub fn next_chunk(&mut self) -> Option<Result<ChunkOutputs<T>, PoolError>> {
        if !self.current.is_empty() {
            let rest = take_in_order(&mut self.current);
            return Some(Ok((self.current_end - rest.len(), rest)));
        }
        if self.failed {
            return None;
        }
        let next = self.next_in_turn();
        decoded_in_order::<T, _>(&self.run, next, &mut self.failed)
    }

    /// The answer of the chunk whose turn it is, waiting for it; `None` after the last. A
    /// failed chunk raises its error in its place in item order, as Python's `imap` does:
    /// the items before it come out first.
    fn next_in_turn(&mut self) -> Result<Option<Outcome>, PoolError> {
        self.run.next_within(self.window, self.task, self.items)
    }

    fn advance(&mut self) -> Result<Option<T::Output>, PoolError> {
        loop {
            if let Some(output) = self.current.pop() {
                return Ok(Some(output));
            }
            let Some(outcome) = self.next_in_turn()? else { return Ok(None) };
            self.current_end = self.run.first_item(outcome.id.chunk) + outcome.rows;
            refill::<T, _>(&self.run, &mut self.current, outcome)?;
        }
    }
}

/// Decodes `outcome`'s outputs into `current`, which is empty, in the memory it already has,
/// last output first: taking them one at a time is then a `pop`, the cheapest way out of a
/// vector, which matters when millions are taken (turning a chunk round costs a pass over
/// it, about a microsecond per 10,000 counts).
fn refill<T: Task, Q: Order<Outcome>>(
    run: &JobRun<Q>,
    current: &mut Vec<T::Output>,
    outcome: Outcome,
) -> Result<(), PoolError> {
    run.decode_into::<T>(outcome, current)?;
    current.reverse();
    Ok(())
}

/// The first item index and outputs, in item order, of the answer `next` gave, if any;
/// after an error, the iterator is `failed`.
fn decoded_in_order<T: Task, Q: Order<Outcome>>(
    run: &JobRun<Q>,
    next: Result<Option<Outcome>, PoolError>,
    failed: &mut bool,
) -> Option<Result<ChunkOutputs<T>, PoolError>> {
    let decode = |outcome: Outcome| {
        let first = run.first_item(outcome.id.chunk);
        let mut outputs = Vec::new();
        run.decode_into::<T>(outcome, &mut outputs).map(|()| (first, outputs))
    };
    let chunk = next.and_then(|outcome| outcome.map(decode).transpose());
    chunk.inspect_err(|_| *failed = true).transpose()
}

/// What is left of a chunk that [`refill`] turned round, put back in item order.
fn take_in_order<O>(current: &mut Vec<O>) -> Vec<O> {
    let mut rest = std::mem::take(current);
    rest.reverse();
    rest
}

impl<T: Task, I: Items<T::Chunk> + ?Sized> Iterator for IMap<'_, T, I> {
    type Item = Result<T::Output, PoolError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // Most calls take the next output of the chunk at hand: kept small enough to inline,
        // which matters when millions of items are taken one at a time.
        if let Some(output) = self.current.pop() {
            return Some(Ok(output));
        }
        self.next_from_another_chunk()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.current.len(), None)
    }
}

impl<T: Task, I: Items<T::Chunk> + ?Sized> IMap<'_, T, I> {
    #[inline(never)]
    fn next_from_another_chunk(&mut self) -> Option<Result<T::Output, PoolError>> {
        if self.failed {
            return None;
        }
        self.advance().inspect_err(|_| self.failed = true).transpose()
    }
}

/// The outputs of [`Pool::imap_unordered`](crate::Pool::imap_unordered), each with its
/// item index, in the order they arrive.
///
/// Iterating yields one output at a time; [`next_chunk`](Self::next_chunk) hands over a
/// whole chunk's outputs at once. After an error, the iterator ends.
pub struct IMapUnordered<'p, T: Task, I: ?Sized> {
    run: JobRun<AsArrived<Outcome>>,
    task: &'p T,
    items: &'p I,
    window: u64,
    /// The outputs of the chunk at hand not yet taken, last first (see [`refill`]).
    current: Vec<T::Output>,
    /// The item index of the next output `current` gives.
    next_item: usize,
    failed: bool,
}

impl<'p, T: Task, I: Items<T::Chunk> + ?Sized> IMapUnordered<'p, T, I> {
    pub(crate) fn new(run: JobRun<AsArrived<Outcome>>, task: &'p T, items: &'p I, window: usize) -> Self {
        let window = window.max(1) as u64;
        Self { run, task, items, window, current: Vec::new(), next_item: 0, failed: false }
    }

    /// The next chunk to arrive: its first item index and outputs; `None` at the end. If
    /// some of a chunk's outputs were taken one at a time, the rest of it comes first.
    /// Cheaper than taking many items one at a time (see [`IMap::next_chunk`]).
    pub fn next_chunk(&mut self) -> Option<Result<ChunkOutputs<T>, PoolError>> {
        if !self.current.is_empty() {
            let rest = take_in_order(&mut self.current);
            let first = self.next_item;
            self.next_item += rest.len();
            return Some(Ok((first, rest)));
        }
        if self.failed {
            return None;
        }
        let next = self.next_arrival();
        decoded_in_order::<T, _>(&self.run, next, &mut self.failed)
    }

    /// The next answer to arrive, waiting for it; `None` after the last.
    fn next_arrival(&mut self) -> Result<Option<Outcome>, PoolError> {
        self.run.next_within(self.window, self.task, self.items)
    }

    fn advance(&mut self) -> Result<Option<(usize, T::Output)>, PoolError> {
        loop {
            if let Some(pair) = self.take_current() {
                return Ok(Some(pair));
            }
            let Some(outcome) = self.next_arrival()? else { return Ok(None) };
            self.next_item = self.run.first_item(outcome.id.chunk);
            refill::<T, _>(&self.run, &mut self.current, outcome)?;
        }
    }

    #[inline]
    fn take_current(&mut self) -> Option<(usize, T::Output)> {
        let output = self.current.pop()?;
        self.next_item += 1;
        Some((self.next_item - 1, output))
    }
}

impl<T: Task, I: Items<T::Chunk> + ?Sized> Iterator for IMapUnordered<'_, T, I> {
    type Item = Result<(usize, T::Output), PoolError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // As for `IMap`: the common case stays small enough to inline.
        if let Some(pair) = self.take_current() {
            return Some(Ok(pair));
        }
        self.next_from_another_chunk()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.current.len(), None)
    }
}

impl<T: Task, I: Items<T::Chunk> + ?Sized> IMapUnordered<'_, T, I> {
    #[inline(never)]
    fn next_from_another_chunk(&mut self) -> Option<Result<(usize, T::Output), PoolError>> {
        if self.failed {
            return None;
        }
        self.advance().inspect_err(|_| self.failed = true).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counts_slot_with_its_reference_counts_fits_in_80_bytes() {
        // `apply_async` makes one per call, all alive at once: each size class down is
        // memory that 200,000 calls do not touch.
        assert!(std::mem::size_of::<Slot<u32>>() + 2 * std::mem::size_of::<usize>() <= 80);
    }
}
