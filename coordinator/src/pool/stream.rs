//! Mapping over chunks that an iterator yields one at a time (a file being read, a
//! generator), without collecting them first: at most a bounded window of chunks is read
//! ahead of the consumer, so memory stays flat however long the stream.

use std::{cell::Cell, collections::BTreeMap, iter::Fuse, ops::Range, sync::mpsc};

use corepool_worker::Task;

use super::{
    ChunkResult, Pool, PoolError,
    core::{Outcome, Sink},
    encode_chunk, outputs_of,
};
use crate::Items;

/// A chunk's first item index and its outputs, one per item.
pub type ChunkOutputs<T> = (usize, Vec<<T as Task>::Output>);

/// A chunk that knows how many items it holds before it runs, so that a stream of them
/// can be numbered item by item.
pub trait ChunkLen {
    /// Items in the chunk: the task returns one output for each.
    fn items(&self) -> usize;
}

impl<T> ChunkLen for Vec<T> {
    fn items(&self) -> usize {
        self.len()
    }
}

/// One chunk made up already, seen as [`Items`] so that it goes through the same encoding
/// as the chunks the pool cuts itself. Its items are numbered from `first`.
pub struct OneChunk<C> {
    chunk: Cell<Option<C>>,
    items: Range<usize>,
}

impl<C: ChunkLen> OneChunk<C> {
    /// Wraps `chunk`, whose first item is item `first` of its job.
    pub fn new(chunk: C, first: usize) -> Self {
        let items = first..first + chunk.items();
        Self { chunk: Cell::new(Some(chunk)), items }
    }
}

impl<C> Items<C> for OneChunk<C> {
    /// One past the last item, so that any index in the chunk is valid.
    fn len(&self) -> usize {
        self.items.end
    }

    /// The chunk itself, once: a second call panics.
    fn chunk(&self, _range: Range<usize>) -> C {
        self.chunk.take().expect("a OneChunk is cut only once")
    }
}

/// The submitting half of a streamed job: reads chunks from the source and hands them to
/// the pool, numbering items as it goes.
struct Feed<'p, T: Task, S: Iterator<Item = T::Chunk>> {
    pool: &'p Pool,
    task: &'p T,
    source: Fuse<S>,
    job: u64,
    outcomes: mpsc::Receiver<Decoded<T>>,
    decoder: Option<std::thread::JoinHandle<()>>,
    window: u64,
    next_item: usize,
    submitted: u64,
    received: u64,
}

impl<'p, T: Task, S: Iterator<Item = T::Chunk>> Feed<'p, T, S>
where
    T::Chunk: ChunkLen,
{
    fn open(pool: &'p Pool, task: &'p T, source: S) -> Result<Self, PoolError> {
        let (sender, raw) = mpsc::channel::<Outcome>();
        let job = pool.shared.open_job(Sink::channel(sender))?;
        // Answers are decoded on a thread of their own, so that the caller's thread only
        // reads the source and hands out chunks: the two overlap.
        let (decoded, outcomes) = mpsc::channel();
        let shared = std::sync::Arc::clone(&pool.shared);
        let decoder = std::thread::Builder::new()
            .name("corepool-decode".into())
            .spawn(move || {
                for outcome in raw {
                    let message = if outcome.id.job != job {
                        // Not about one chunk: the pool stopped every job at once.
                        Decoded::Stopped(outcome.result.err().unwrap_or(PoolError::Terminated))
                    } else {
                        let (chunk, first) = (outcome.id.chunk, outcome.id.first_row as usize);
                        Decoded::Chunk(chunk, first, shared.meters.decoding(|| outputs_of::<T>(outcome)))
                    };
                    if decoded.send(message).is_err() {
                        return;
                    }
                }
            })
            .map_err(PoolError::Thread)?;
        let window = pool.window().max(1) as u64;
        let source = source.fuse();
        Ok(Self {
            pool,
            task,
            source,
            job,
            outcomes,
            decoder: Some(decoder),
            window,
            next_item: 0,
            submitted: 0,
            received: 0,
        })
    }

    fn outstanding(&self) -> u64 {
        self.submitted - self.received
    }

    /// Submits chunks while the source has more and the window has room beside the
    /// `held` chunks the consumer has received but not yet taken.
    fn fill(&mut self, held: u64) -> Result<(), PoolError> {
        while self.outstanding() + held < self.window {
            let Some(chunk) = self.source.next() else { return Ok(()) };
            let items = chunk.items();
            if items == 0 {
                continue;
            }
            let first = self.next_item;
            let one = OneChunk::new(chunk, first);
            let shared = &self.pool.shared;
            let encoded = shared
                .meters
                .encoding(|| encode_chunk(self.job, self.submitted, first..first + items, self.task, &one))?;
            shared.enqueue(encoded)?;
            self.submitted += 1;
            self.next_item += items;
        }
        Ok(())
    }

    /// The next chunk to arrive: its index, first item, and outputs or error.
    fn receive(&mut self) -> Result<(u64, usize, ChunkResult<T>), PoolError> {
        match self.outcomes.recv().map_err(|_| PoolError::Terminated)? {
            Decoded::Stopped(error) => Err(error),
            Decoded::Chunk(chunk, first, outputs) => {
                self.received += 1;
                Ok((chunk, first, outputs))
            }
        }
    }
}

impl<T: Task, S: Iterator<Item = T::Chunk>> Drop for Feed<'_, T, S> {
    fn drop(&mut self) {
        // Closing the job drops its channel's sender, which ends the decoder's loop.
        self.pool.shared.close_job(self.job);
        if let Some(decoder) = self.decoder.take() {
            let _ = decoder.join();
        }
    }
}

/// What the decoder thread passes on.
enum Decoded<T: Task> {
    /// One chunk's index, first item, and outputs or error.
    Chunk(u64, usize, ChunkResult<T>),
    /// The pool stopped every job.
    Stopped(PoolError),
}

/// The outputs of [`Pool::imap_iter`], in item order.
///
/// Iterating yields one output at a time; [`next_chunk`](Self::next_chunk) hands over a
/// whole chunk's outputs at once, which is cheaper for millions of items. After an error
/// the iterator ends.
pub struct IMapIter<'p, T: Task, S: Iterator<Item = T::Chunk>> {
    feed: Feed<'p, T, S>,
    early: BTreeMap<u64, (usize, ChunkResult<T>)>,
    next_chunk: u64,
    current: std::vec::IntoIter<T::Output>,
    failed: bool,
}

impl<'p, T: Task, S: Iterator<Item = T::Chunk>> IMapIter<'p, T, S>
where
    T::Chunk: ChunkLen,
{
    /// The next chunk's first item index and outputs, in item order; `None` at the end.
    /// Do not mix with item-by-item iteration of the same chunk.
    pub fn next_chunk(&mut self) -> Option<Result<ChunkOutputs<T>, PoolError>> {
        if self.failed {
            return None;
        }
        self.advance_chunk().inspect_err(|_| self.failed = true).transpose()
    }

    fn advance_chunk(&mut self) -> Result<Option<ChunkOutputs<T>>, PoolError> {
        loop {
            self.feed.fill(self.early.len() as u64)?;
            // A failed chunk raises its error in its place in item order, as `imap` does.
            if let Some((first, outputs)) = self.early.remove(&self.next_chunk) {
                self.next_chunk += 1;
                return outputs.map(|outputs| Some((first, outputs)));
            }
            if self.feed.outstanding() == 0 {
                return Ok(None);
            }
            let (chunk, first, outputs) = self.feed.receive()?;
            self.early.insert(chunk, (first, outputs));
        }
    }
}

impl<T: Task, S: Iterator<Item = T::Chunk>> Iterator for IMapIter<'_, T, S>
where
    T::Chunk: ChunkLen,
{
    type Item = Result<T::Output, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(output) = self.current.next() {
                return Some(Ok(output));
            }
            match self.next_chunk()? {
                Ok((_, outputs)) => self.current = outputs.into_iter(),
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

/// The outputs of [`Pool::imap_unordered_iter`], each with its item index, in the order
/// they arrive. After an error the iterator ends.
pub struct IMapUnorderedIter<'p, T: Task, S: Iterator<Item = T::Chunk>> {
    feed: Feed<'p, T, S>,
    current: std::iter::Zip<std::ops::RangeFrom<usize>, std::vec::IntoIter<T::Output>>,
    failed: bool,
}

impl<'p, T: Task, S: Iterator<Item = T::Chunk>> IMapUnorderedIter<'p, T, S>
where
    T::Chunk: ChunkLen,
{
    /// The next chunk to arrive: its first item index and outputs; `None` at the end.
    /// Do not mix with item-by-item iteration of the same chunk.
    pub fn next_chunk(&mut self) -> Option<Result<ChunkOutputs<T>, PoolError>> {
        self.next_chunk_holding(0)
    }

    /// [`next_chunk`](Self::next_chunk) for a consumer that keeps `held` chunks back, as
    /// a reorder buffer does: they count against the window, so that the buffer and the
    /// chunks in flight together stay within it.
    pub fn next_chunk_holding(&mut self, held: usize) -> Option<Result<ChunkOutputs<T>, PoolError>> {
        if self.failed {
            return None;
        }
        self.advance_chunk(held as u64).inspect_err(|_| self.failed = true).transpose()
    }

    fn advance_chunk(&mut self, held: u64) -> Result<Option<ChunkOutputs<T>>, PoolError> {
        // Chunks are submitted in order, so a consumer holding chunks back waits for one
        // that is still outstanding: holding never stalls the stream.
        self.feed.fill(held)?;
        if self.feed.outstanding() == 0 {
            return Ok(None);
        }
        let (_, first, outputs) = self.feed.receive()?;
        Ok(Some((first, outputs?)))
    }
}

impl<T: Task, S: Iterator<Item = T::Chunk>> Iterator for IMapUnorderedIter<'_, T, S>
where
    T::Chunk: ChunkLen,
{
    type Item = Result<(usize, T::Output), PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(pair) = self.current.next() {
                return Some(Ok(pair));
            }
            match self.next_chunk()? {
                Ok((first, outputs)) => self.current = (first..).zip(outputs),
                Err(error) => return Some(Err(error)),
            }
        }
    }
}

impl Pool {
    /// Like [`imap`](Pool::imap), over chunks that `chunks` yields one at a time, which
    /// are never collected: a file being read, a generator, a channel. Outputs come in
    /// item order (items numbered from 0 across the chunks); at most a bounded window of
    /// chunks is read ahead, so the stream may be far larger than memory.
    ///
    /// ```no_run
    /// use corepool::{
    ///     Pool,
    ///     task::{Registry, Task},
    /// };
    /// use serde::{Deserialize, Serialize};
    ///
    /// /// The sum of each row.
    /// #[derive(Serialize, Deserialize)]
    /// struct RowSums;
    ///
    /// impl Task for RowSums {
    ///     const NAME: &'static str = "row-sums";
    ///     type Chunk = Vec<Vec<i64>>;
    ///     type Output = i64;
    ///
    ///     fn run(&self, rows: Vec<Vec<i64>>) -> Result<Vec<i64>, String> {
    ///         Ok(rows.iter().map(|row| row.iter().sum()).collect())
    ///     }
    /// }
    ///
    /// fn main() -> Result<(), corepool::PoolError> {
    ///     corepool::task::init_with(|| Registry::new().register::<RowSums>());
    ///     // Rows made on the fly, 10,000 to a chunk, never all in memory.
    ///     let chunks = (0..1_000).map(|chunk| (0..10_000).map(|row| vec![chunk, row, 1]).collect::<Vec<_>>());
    ///     let pool = Pool::new()?;
    ///     let mut total = 0;
    ///     for sum in pool.imap_iter(&RowSums, chunks)? {
    ///         total += sum?;
    ///     }
    ///     println!("{total}");
    ///     Ok(())
    /// }
    /// ```
    pub fn imap_iter<'p, T: Task, S: IntoIterator<Item = T::Chunk>>(
        &'p self,
        task: &'p T,
        chunks: S,
    ) -> Result<IMapIter<'p, T, S::IntoIter>, PoolError>
    where
        T::Chunk: ChunkLen,
    {
        let feed = Feed::open(self, task, chunks.into_iter())?;
        Ok(IMapIter { feed, early: BTreeMap::new(), next_chunk: 0, current: Vec::new().into_iter(), failed: false })
    }

    /// Like [`imap_iter`](Pool::imap_iter), but yields `(item index, output)` in the
    /// order results arrive from the workers.
    pub fn imap_unordered_iter<'p, T: Task, S: IntoIterator<Item = T::Chunk>>(
        &'p self,
        task: &'p T,
        chunks: S,
    ) -> Result<IMapUnorderedIter<'p, T, S::IntoIter>, PoolError>
    where
        T::Chunk: ChunkLen,
    {
        let feed = Feed::open(self, task, chunks.into_iter())?;
        Ok(IMapUnorderedIter { feed, current: (0..).zip(Vec::new()), failed: false })
    }
}

/// Peak resident memory of this process so far, in bytes (`VmHWM`); 0 where the platform
/// cannot say.
pub fn own_peak_rss() -> u64 {
    super::platform::process_usage(std::process::id()).map_or(0, |usage| usage.peak_rss)
}
