//! Mapping over chunks that an iterator yields one at a time (a file being read, a
//! generator), without collecting them first: at most a bounded window of chunks is read
//! ahead of the consumer, so memory stays flat however long the stream.

use std::{cell::Cell, iter::Fuse, ops::Range, time::Duration};

use corepool_worker::Task;

use super::{
    ChunkResult, Pool, PoolError,
    arrivals::{Arrival, AsArrived, InTurn, Order, Receiving},
    core::{Outcome, PoolSide},
    encode_chunk,
    job::outputs_of,
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

/// A streamed chunk's answer, decoded on the thread that received it, so that the
/// caller's thread only reads the source and hands out chunks: the two overlap.
struct Decoded<T: Task> {
    chunk: u64,
    first: usize,
    outputs: ChunkResult<T>,
}

impl<T: Task> Arrival for Decoded<T> {
    fn chunk(&self) -> u64 {
        self.chunk
    }

    fn failed(&self) -> bool {
        self.outputs.is_err()
    }

    fn from_outcome(outcome: Outcome, pool: &dyn PoolSide) -> Self {
        let (chunk, first) = (outcome.id.chunk, outcome.id.first_row as usize);
        Self { chunk, first, outputs: pool.decoding(|| outputs_of::<T>(outcome)) }
    }
}

/// A streamed job: reads chunks from the source and hands them to the pool, numbering
/// items as it goes; their answers come in order `Q`, decoded.
struct Feed<'p, T: Task, S: Iterator<Item = T::Chunk>, Q> {
    task: &'p T,
    source: Fuse<S>,
    receiving: Receiving<Decoded<T>, Q>,
    window: u64,
    next_item: usize,
    submitted: u64,
}

impl<'p, T: Task, S: Iterator<Item = T::Chunk>, Q: Order<Decoded<T>>> Feed<'p, T, S, Q>
where
    T::Chunk: ChunkLen,
{
    fn open(pool: &'p Pool, task: &'p T, source: S, order: Q) -> Result<Self, PoolError> {
        let receiving = Receiving::open(&pool.shared, order)?;
        let window = pool.window().max(1) as u64;
        Ok(Self { task, source: source.fuse(), receiving, window, next_item: 0, submitted: 0 })
    }

    fn outstanding(&self) -> u64 {
        self.submitted - self.receiving.taken()
    }

    /// Submits chunks while the source has more and the window has room beside the
    /// `held` chunks the consumer has taken but keeps back.
    fn fill(&mut self, held: u64) -> Result<(), PoolError> {
        while self.outstanding() + held < self.window {
            let Some(chunk) = self.source.next() else { return Ok(()) };
            let items = chunk.items();
            if items == 0 {
                continue;
            }
            let first = self.next_item;
            let one = OneChunk::new(chunk, first);
            let (shared, job) = (&self.receiving.shared, self.receiving.job);
            let encoded =
                shared.meters.encoding(|| encode_chunk(job, self.submitted, first..first + items, self.task, &one))?;
            shared.enqueue(encoded)?;
            self.submitted += 1;
            self.next_item += items;
        }
        Ok(())
    }

    /// The next chunk in turn, with its first item, and outputs or error; `None` once
    /// every chunk submitted is taken.
    fn next(&mut self) -> Result<Option<(usize, ChunkResult<T>)>, PoolError> {
        if self.outstanding() == 0 {
            return Ok(None);
        }
        let Decoded { first, outputs, .. } = self.receiving.next(Duration::ZERO)?;
        Ok(Some((first, outputs)))
    }
}

/// The outputs of [`Pool::imap_iter`], in item order.
///
/// Iterating yields one output at a time; [`next_chunk`](Self::next_chunk) hands over a
/// whole chunk's outputs at once, which is cheaper for millions of items. After an error
/// the iterator ends.
pub struct IMapIter<'p, T: Task, S: Iterator<Item = T::Chunk>> {
    /// Its answers in chunk order: a failed chunk raises its error in its place in item
    /// order, as `imap` does.
    feed: Feed<'p, T, S, InTurn<Decoded<T>>>,
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
        self.feed.fill(0)?;
        let Some((first, outputs)) = self.feed.next()? else { return Ok(None) };
        outputs.map(|outputs| Some((first, outputs)))
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
    feed: Feed<'p, T, S, AsArrived<Decoded<T>>>,
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
        let Some((first, outputs)) = self.feed.next()? else { return Ok(None) };
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
        let feed = Feed::open(self, task, chunks.into_iter(), InTurn::new())?;
        Ok(IMapIter { feed, current: Vec::new().into_iter(), failed: false })
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
        let feed = Feed::open(self, task, chunks.into_iter(), AsArrived::new())?;
        Ok(IMapUnorderedIter { feed, current: (0..).zip(Vec::new()), failed: false })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::pool::{
        arrivals::Inbox,
        core::{Delivery, testing::FakePool},
        job::tests::{CountInRange, counts_of},
    };

    #[test]
    fn a_streamed_answer_is_decoded_on_arrival_and_taken_in_turn() {
        let pool = FakePool::default();
        let inbox = Inbox::<Decoded<CountInRange>, _>::new(InTurn::new());
        inbox.take(counts_of(1, 2, &[3]), &pool);
        assert!(inbox.try_next().is_none(), "chunk 0 is still out");
        assert_eq!(pool.decodings.load(Ordering::SeqCst), 1, "decoded on arrival, and timed");
        inbox.take(counts_of(0, 0, &[1, 2]), &pool);
        let taken: Vec<(usize, Vec<u32>)> = std::iter::from_fn(|| inbox.try_next())
            .map(|next| next.map(|decoded| (decoded.first, decoded.outputs.expect("decoded"))).expect("in turn"))
            .collect();
        assert_eq!(taken, [(0, vec![1, 2]), (2, vec![3])]);
    }
}
