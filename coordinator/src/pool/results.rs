//! Handles on results that arrive later: [`AsyncResult`] and the `imap` iterators.

use std::{
    collections::BTreeMap,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use corepool_worker::Task;

use super::{JobRun, PoolError};
use crate::Items;

type SuccessCallback<R> = Box<dyn FnOnce(&R) + Send>;
type ErrorCallback = Box<dyn FnOnce(&PoolError) + Send>;

/// What to run when an asynchronous call finishes: on success, on failure, both or
/// neither (Python's `callback` and `error_callback`).
pub struct Callbacks<R> {
    on_success: Option<SuccessCallback<R>>,
    on_error: Option<ErrorCallback>,
}

impl<R> Callbacks<R> {
    /// No callbacks: wait on the [`AsyncResult`] instead.
    pub fn none() -> Self {
        Self { on_success: None, on_error: None }
    }

    /// Runs `callback` with the result when the call succeeds.
    pub fn on_success(callback: impl FnOnce(&R) + Send + 'static) -> Self {
        Self { on_success: Some(Box::new(callback)), on_error: None }
    }

    /// Also runs `callback` with the error when the call fails.
    pub fn or_on_error(mut self, callback: impl FnOnce(&PoolError) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(callback));
        self
    }
}

/// The result, once there is one, and how many threads wait for it: waking waiters costs a
/// system call, which a result nobody waits on (most, with callbacks) should not pay.
struct SlotState<R> {
    value: Option<Result<R, PoolError>>,
    waiters: usize,
}

type Slot<R> = Arc<(Mutex<SlotState<R>>, Condvar)>;

/// The result of an asynchronous call, available once the workers have answered.
pub struct AsyncResult<R> {
    slot: Slot<R>,
}

/// The side of an [`AsyncResult`] that fills it.
pub(crate) struct Completer<R> {
    slot: Slot<R>,
}

impl<R> AsyncResult<R> {
    pub(crate) fn new() -> (Self, Completer<R>) {
        let slot = Arc::new((Mutex::new(SlotState { value: None, waiters: 0 }), Condvar::new()));
        (Self { slot: Arc::clone(&slot) }, Completer { slot })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<R>> {
        self.slot.0.lock().unwrap_or_else(|e| e.into_inner())
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
        let ready = &self.slot.1;
        let mut state = self.lock();
        state.waiters += 1;
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
        state.waiters -= 1;
        state.value.is_some()
    }

    /// The result, waiting at most `timeout` for it (`None`: no limit); after a
    /// [`PoolError::Timeout`] the result is lost, so call [`wait`](Self::wait) first to
    /// try again later.
    pub fn get(self, timeout: Option<Duration>) -> Result<R, PoolError> {
        if !self.wait(timeout) {
            return Err(PoolError::Timeout);
        }
        self.lock().value.take().unwrap_or(Err(PoolError::Terminated))
    }
}

impl<R> Completer<R> {
    /// Runs the matching callback, then makes the result available.
    pub(crate) fn complete(self, result: Result<R, PoolError>, callbacks: Callbacks<R>) {
        match (&result, callbacks) {
            (Ok(value), Callbacks { on_success: Some(callback), .. }) => callback(value),
            (Err(error), Callbacks { on_error: Some(callback), .. }) => callback(error),
            _ => {}
        }
        let (lock, ready) = &*self.slot;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state.value = Some(result);
        if state.waiters > 0 {
            ready.notify_all();
        }
    }
}

/// The outputs of [`Pool::imap`](crate::Pool::imap), in item order.
///
/// At most a bounded window of chunks is submitted ahead of the consumer. After an error,
/// the iterator ends.
pub struct IMap<'p, T: Task, I: ?Sized> {
    run: JobRun,
    task: &'p T,
    items: &'p I,
    window: u64,
    next_chunk: u64,
    early: BTreeMap<u64, Result<Vec<T::Output>, PoolError>>,
    current: std::vec::IntoIter<T::Output>,
    failed: bool,
}

impl<'p, T: Task, I: Items<T::Chunk> + ?Sized> IMap<'p, T, I> {
    pub(crate) fn new(run: JobRun, task: &'p T, items: &'p I, window: usize) -> Self {
        let (early, current) = (BTreeMap::new(), Vec::new().into_iter());
        Self { run, task, items, window: window.max(1) as u64, next_chunk: 0, early, current, failed: false }
    }

    fn advance(&mut self) -> Result<Option<T::Output>, PoolError> {
        loop {
            if let Some(output) = self.current.next() {
                return Ok(Some(output));
            }
            if self.next_chunk == self.run.total_chunks() {
                return Ok(None);
            }
            while self.run.outstanding() + (self.early.len() as u64) < self.window
                && self.run.submit_next(self.task, self.items)?
            {}
            // A failed chunk raises its error in its place in item order, as Python's
            // `imap` does: the items before it come out first.
            if let Some(outputs) = self.early.remove(&self.next_chunk) {
                self.current = outputs?.into_iter();
                self.next_chunk += 1;
                continue;
            }
            let (chunk, outputs) = self.run.next_chunk_result::<T>()?;
            self.early.insert(chunk, outputs);
        }
    }
}

impl<T: Task, I: Items<T::Chunk> + ?Sized> Iterator for IMap<'_, T, I> {
    type Item = Result<T::Output, PoolError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // Most calls take the next output of the chunk at hand: kept small enough to inline,
        // which matters when millions of items are taken one at a time.
        if let Some(output) = self.current.next() {
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
/// item index, in the order they arrive. After an error, the iterator ends.
pub struct IMapUnordered<'p, T: Task, I: ?Sized> {
    run: JobRun,
    task: &'p T,
    items: &'p I,
    window: u64,
    received: u64,
    current: std::iter::Zip<std::ops::RangeFrom<usize>, std::vec::IntoIter<T::Output>>,
    failed: bool,
}

impl<'p, T: Task, I: Items<T::Chunk> + ?Sized> IMapUnordered<'p, T, I> {
    pub(crate) fn new(run: JobRun, task: &'p T, items: &'p I, window: usize) -> Self {
        let current = (0..).zip(Vec::new());
        Self { run, task, items, window: window.max(1) as u64, received: 0, current, failed: false }
    }

    fn advance(&mut self) -> Result<Option<(usize, T::Output)>, PoolError> {
        loop {
            if let Some(pair) = self.current.next() {
                return Ok(Some(pair));
            }
            if self.received == self.run.total_chunks() {
                return Ok(None);
            }
            while self.run.outstanding() < self.window && self.run.submit_next(self.task, self.items)? {}
            let (chunk, outputs) = self.run.next_outcome::<T>()?;
            self.received += 1;
            self.current = (self.run.first_item(chunk)..).zip(outputs);
        }
    }
}

impl<T: Task, I: Items<T::Chunk> + ?Sized> Iterator for IMapUnordered<'_, T, I> {
    type Item = Result<(usize, T::Output), PoolError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        // As for `IMap`: the common case stays small enough to inline.
        if let Some(pair) = self.current.next() {
            return Some(Ok(pair));
        }
        self.next_from_another_chunk()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.current.size_hint().0, None)
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
