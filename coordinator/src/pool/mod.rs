//! The pool: worker processes, and the calls that hand them work.

mod arrivals;
mod builder;
mod core;
mod error;
mod function;
mod gather;
mod job;
#[cfg(feature = "mpi")]
pub mod mpi;
mod observer;
mod platform;
mod results;
mod socket_dir;
mod stats;
mod stream;
mod transport;

use std::{ops::Range, path::PathBuf, sync::Arc};

use corepool_protocol::{TaskId, TaskRef, ToWorker};
use corepool_worker::{Task, decode_output};

pub use self::builder::{DEFAULT_WORKER_NAME_PREFIX, MAX_WORKER_NAME_PREFIX, PoolBuilder, Transport, logical_cpus};
pub use self::core::{HeldWork, terminate_all, work_held_by_ranks};
pub use error::PoolError;
pub use function::{Chunked, IntoItem, Wire};
pub use observer::PoolObserver;
pub use results::{AsyncResult, Callbacks, IMap, IMapUnordered};
pub use stats::{Balance, CodecTime, WorkerState, WorkerStats};
pub use stream::{ChunkLen, ChunkOutputs, IMapIter, IMapUnorderedIter, OneChunk};

use self::arrivals::{AsArrived, InTurn, Order};
use self::core::{Chunk, Delivery, Outcome, Shared};
use self::gather::Gathered;
pub(crate) use self::job::{ChunkResult, JobRun};
use crate::Items;

/// The chunk size used when none is given: Python's rule for `Pool.map` (about four chunks
/// per worker), but at most [`MAX_DEFAULT_CHUNK`] items.
pub fn default_chunk_size(items: usize, workers: usize) -> usize {
    items.div_ceil(workers.max(1) * 4).clamp(1, MAX_DEFAULT_CHUNK)
}

/// Most items in a chunk by default. Python's rule alone makes a chunk of 2,500,000 items
/// out of 20,000,000 items for 2 workers: each worker then waits for a whole chunk to
/// arrive before it starts, and every buffer on the way is fresh memory. Smaller chunks
/// stream, and their buffers are reused (docs/performance.md has the figures).
pub const MAX_DEFAULT_CHUNK: usize = 1 << 16;

/// A pool of worker processes, in the manner of Python's `multiprocessing.Pool`.
///
/// Calls with a plain function ([`apply`](Pool::apply), [`map`](Pool::map),
/// [`starmap`](Pool::starmap), [`imap`](Pool::imap)) give results in submission order;
/// asynchronous ones ([`apply_async`](Pool::apply_async),
/// [`map_async`](Pool::map_async), [`imap_unordered`](Pool::imap_unordered)) return at
/// once and receive from every worker at the same time. The `*_task` calls do the same
/// with a [`Task`](crate::task::Task), which chooses its chunks' wire form. Dropping the
/// pool stops and reaps every worker and removes its socket directory.
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Starts one worker process per logical CPU, each a copy of this program, with the
    /// default settings ([`builder`](Pool::builder) for others).
    pub fn new() -> Result<Self, PoolError> {
        Self::builder().build()
    }

    /// A builder for a pool with other settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// How many workers the pool runs.
    pub fn workers(&self) -> usize {
        self.shared.settings.workers
    }

    /// Process ids of the workers now running.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.worker_pids()
    }

    /// What each worker slot has done so far, in slot order. CPU times and peak memory
    /// are read from the kernel for the live workers; call it before
    /// [`join`](Pool::join) to have them final, as the workers are then still there to ask.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.observer().worker_stats()
    }

    /// Rows (items) answered so far, over all jobs: what a progress bar counts.
    pub fn rows_done(&self) -> u64 {
        self.shared.rows_done()
    }

    /// Time this process has spent encoding chunks and decoding answers so far.
    pub fn codec_time(&self) -> CodecTime {
        self.shared.meters.codec_time()
    }

    /// A handle that watches the pool from other threads (progress, monitors).
    pub fn observer(&self) -> PoolObserver {
        PoolObserver { shared: Arc::clone(&self.shared) }
    }

    /// How many peers connected to the pool's socket and were turned away.
    pub fn rejected_peers(&self) -> u64 {
        self.shared.stats().1
    }

    /// The private directory holding the pool's socket.
    pub fn socket_dir(&self) -> Option<PathBuf> {
        self.shared.socket_dir()
    }

    /// Runs `task` on item `index` of `items` alone, waiting for the answer: one round
    /// trip, like Python's `Pool.apply`.
    pub fn apply_task<T: Task, I: Items<T::Chunk> + ?Sized>(
        &self,
        task: &T,
        items: &I,
        index: usize,
    ) -> Result<T::Output, PoolError> {
        check_index(index, items.len())?;
        let mut run = JobRun::open(&self.shared, index..index + 1, 1, AsArrived::new())?;
        run.poll_first = self.shared.settings.answer_poll;
        run.reads_own_answers = true;
        run.submit_next(task, items)?;
        let outputs = run.next_outcome::<T>()?;
        Ok(outputs.into_iter().next().expect("one output per item is checked"))
    }

    /// Runs `task` on every item, `chunk_size` items to a chunk (`None`:
    /// [`default_chunk_size`]), and returns the outputs in item order.
    pub fn map_task<T: Task, I: Items<T::Chunk> + ?Sized>(
        &self,
        task: &T,
        items: &I,
        chunk_size: Option<usize>,
    ) -> Result<Vec<T::Output>, PoolError> {
        self.open_run(items.len(), chunk_size, InTurn::failing_fast())?.run_to_end(task, items)
    }

    /// [`map_task`](Pool::map_task) over items that are argument tuples, such as
    /// the tutorial's `(row, min, max)`: the task receives each
    /// item's own arguments, as Python's `Pool.starmap` unpacks them.
    pub fn starmap_task<T: Task, I: Items<T::Chunk> + ?Sized>(
        &self,
        task: &T,
        items: &I,
        chunk_size: Option<usize>,
    ) -> Result<Vec<T::Output>, PoolError> {
        self.map_task(task, items, chunk_size)
    }

    /// Like [`map_task`](Pool::map_task), but yields outputs in item order as soon as each is
    /// ready, keeping only a bounded window of chunks in flight.
    pub fn imap_task<'p, T: Task, I: Items<T::Chunk> + ?Sized>(
        &'p self,
        task: &'p T,
        items: &'p I,
        chunk_size: Option<usize>,
    ) -> Result<IMap<'p, T, I>, PoolError> {
        let run = self.open_run(items.len(), chunk_size, InTurn::new())?;
        Ok(IMap::new(run, task, items, self.window()))
    }

    /// Like [`imap_task`](Pool::imap_task), but yields `(item index, output)` in the order
    /// results arrive from the workers.
    pub fn imap_unordered_task<'p, T: Task, I: Items<T::Chunk> + ?Sized>(
        &'p self,
        task: &'p T,
        items: &'p I,
        chunk_size: Option<usize>,
    ) -> Result<IMapUnordered<'p, T, I>, PoolError> {
        let run = self.open_run(items.len(), chunk_size, AsArrived::new())?;
        Ok(IMapUnordered::new(run, task, items, self.window()))
    }

    /// Submits `task` on item `index` and returns at once. When the answer arrives,
    /// `callbacks` run on the pool's callback thread (one at a time, in arrival order),
    /// then the returned handle becomes ready.
    pub fn apply_async_task<T: Task, I: Items<T::Chunk> + ?Sized>(
        &self,
        task: &T,
        items: &I,
        index: usize,
        callbacks: Callbacks<T::Output>,
    ) -> Result<AsyncResult<T::Output>, PoolError> {
        check_index(index, items.len())?;
        // One-item calls are too small to time one by one: reading the clock would cost
        // more than the work, so the pool's encode and decode meters leave them out.
        thread_local! {
            // Reused from call to call: a new buffer would cost several allocations.
            static PAYLOAD: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let (result, call) = AsyncResult::for_item(index, callbacks, decode_output::<T>);
        PAYLOAD.with_borrow_mut(|payload| {
            payload.clear();
            items
                .encode_chunk(task, index..index + 1, payload)
                .map_err(|e| PoolError::Protocol(format!("item {index}: {e}")))?;
            self.shared.submit_one(T::task_ref(), payload, call)
        })?;
        Ok(result)
    }

    /// Starts [`map_task`](Pool::map_task) in the background and returns at once; the
    /// handle gives the outputs in item order. `items` is moved in (an `Arc<Matrix>`, a
    /// `Vec`, ...).
    pub fn map_async_task<T: Task, I: Items<T::Chunk> + Send + 'static>(
        &self,
        task: T,
        items: I,
        chunk_size: Option<usize>,
        callbacks: Callbacks<Vec<T::Output>>,
    ) -> Result<AsyncResult<Vec<T::Output>>, PoolError> {
        let chunk_size = self.chunk_size_for(items.len(), chunk_size);
        let chunks = items.len().div_ceil(chunk_size) as u64;
        let (result, completer) = AsyncResult::new(callbacks);
        // Answers are gathered on the threads that read them, and the chunks submitted on
        // this one while the queue has room: no thread is started for a job of a few
        // chunks: a started thread costs fresh memory for its own heap.
        let mut gather = None;
        self.shared.open_job_with(|job| {
            let made = Arc::new(Gathered::<T>::new(job, items.len(), chunks, completer));
            Arc::clone(gather.insert(made)) as Arc<dyn Delivery>
        })?;
        let gather = gather.expect("set when the job opened");
        gather::submit_async(&self.shared, gather, task, items, chunk_size);
        Ok(result)
    }

    /// [`map_async_task`](Pool::map_async_task) over argument tuples, as
    /// [`starmap_task`](Pool::starmap_task) is to [`map_task`](Pool::map_task).
    pub fn starmap_async_task<T: Task, I: Items<T::Chunk> + Send + 'static>(
        &self,
        task: T,
        items: I,
        chunk_size: Option<usize>,
        callbacks: Callbacks<Vec<T::Output>>,
    ) -> Result<AsyncResult<Vec<T::Output>>, PoolError> {
        self.map_async_task(task, items, chunk_size, callbacks)
    }

    /// Takes no more work; work already submitted goes on. See [`join`](Pool::join).
    pub fn close(&self) {
        self.shared.close();
    }

    /// Waits for all submitted work to finish, then stops the workers and waits for them
    /// to exit. Call [`close`](Pool::close) first, as in Python. An `imap` job lasts as
    /// long as its iterator ([`IMap`], [`IMapUnordered`]), even once all its outputs are
    /// taken: drop the iterator before joining.
    pub fn join(&mut self) {
        self.shared.wait_idle();
        self.shutdown(true);
    }

    /// Kills every worker now; outstanding work fails with [`PoolError::Terminated`].
    pub fn terminate(&mut self) {
        self.shutdown(false);
    }

    fn shutdown(&mut self, graceful: bool) {
        let watcher = self.shared.watcher.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(watcher);
        // The workers' final CPU times and peak memory come from reaping them.
        self.shared.stop(graceful);
    }

    /// A job over `items` items in chunks of `chunk_size` (`None`: [`default_chunk_size`]),
    /// its answers taken in `order`.
    fn open_run<Q: Order<Outcome>>(
        &self,
        items: usize,
        chunk_size: Option<usize>,
        order: Q,
    ) -> Result<JobRun<Q>, PoolError> {
        JobRun::open(&self.shared, 0..items, self.chunk_size_for(items, chunk_size), order)
    }

    /// The chunk size of a job over `items` items: `chunk_size`, or [`default_chunk_size`].
    fn chunk_size_for(&self, items: usize, chunk_size: Option<usize>) -> usize {
        chunk_size.unwrap_or_else(|| default_chunk_size(items, self.workers())).max(1)
    }

    fn window(&self) -> usize {
        self.workers() * self.shared.settings.chunks_in_flight * 2
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown(true);
    }
}

fn check_index(index: usize, len: usize) -> Result<(), PoolError> {
    if index < len { Ok(()) } else { Err(PoolError::IndexOutOfRange { index, len }) }
}

fn encode_chunk<T: Task, I: Items<T::Chunk> + ?Sized>(
    job: u64,
    chunk: u64,
    range: Range<usize>,
    task: &T,
    items: &I,
) -> Result<Chunk, PoolError> {
    let id = TaskId { job, chunk, first_row: range.start as u64 };
    let rows = range.len();
    let message = ToWorker::Task {
        id,
        task: match T::task_ref() {
            TaskRef::Named(name) => TaskRef::Named(name.to_owned()),
            TaskRef::Function(offset) => TaskRef::Function(offset),
        },
    };
    let frame = items
        .chunk_frame(&message, task, range)
        .map_err(|e| PoolError::Protocol(format!("chunk at item {}: {e}", id.first_row)))?;
    Ok(Chunk { id, rows, frame: Arc::new(frame), attempts: 0, suspect: false })
}

/// Chunk `chunk` of job `job`, whose items `range` are cut in chunks of `chunk_size`,
/// encoded (timed as encoding).
fn encode_nth_chunk<T: Task, I: Items<T::Chunk> + ?Sized>(
    shared: &Shared,
    (job, chunk): (u64, u64),
    range: &Range<usize>,
    chunk_size: usize,
    task: &T,
    items: &I,
) -> Result<Chunk, PoolError> {
    let start = range.start + chunk as usize * chunk_size;
    let end = (start + chunk_size).min(range.end);
    shared.meters.encoding(|| encode_chunk(job, chunk, start..end, task, items))
}
