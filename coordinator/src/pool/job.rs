//! A job submitted lazily from the caller's thread, whose answers the caller takes from
//! its inbox (see `arrivals.rs`) and decodes in place: `apply`, `map`, `imap`,
//! `imap_unordered`.

use std::{ops::Range, sync::Arc, time::Duration};

use corepool_worker::{Task, decode_outputs_into};

use super::{
    PoolError,
    arrivals::{InTurn, Order, Receiving},
    core::{Outcome, Shared},
    encode_nth_chunk,
};
use crate::Items;

/// Appends the outputs of `outcome`'s chunk to `outputs`, checking that there is one per
/// item; on error, `outputs` is left as it was.
pub(crate) fn outputs_into<T: Task>(outcome: Outcome, outputs: &mut Vec<T::Output>) -> Result<(), PoolError> {
    let first_row = outcome.id.first_row;
    let before = outputs.len();
    let checked = decode_outputs_into::<T>(&outcome.result?, outputs)
        .map_err(|e| PoolError::Protocol(format!("chunk at item {first_row}: {e}")))
        .and_then(|()| match outputs.len() - before {
            returned if returned == outcome.rows => Ok(()),
            returned => Err(PoolError::Protocol(format!(
                "chunk at item {first_row} has {} items but the worker returned {returned} outputs",
                outcome.rows
            ))),
        });
    if checked.is_err() {
        outputs.truncate(before);
    }
    checked
}

/// The outputs of `outcome`'s chunk, one per item.
pub(crate) fn outputs_of<T: Task>(outcome: Outcome) -> ChunkResult<T> {
    let mut outputs = Vec::new();
    outputs_into::<T>(outcome, &mut outputs).map(|()| outputs)
}

/// One chunk's outputs, or why it failed.
pub(crate) type ChunkResult<T> = Result<Vec<<T as Task>::Output>, PoolError>;

/// One job's chunks: submitted lazily by the caller's thread, their answers taken in order
/// `Q`. Dropping it forgets the job, so late answers are ignored.
pub(crate) struct JobRun<Q> {
    receiving: Receiving<Outcome, Q>,
    range: Range<usize>,
    chunk_size: usize,
    submitted: u64,
    /// How long to poll for an outcome before sleeping until it comes.
    pub(crate) poll_first: Duration,
    /// Whether the caller reads a chunk's answer from its worker's connection itself,
    /// where it can (see [`Shared::enqueue_and_read`]): for a blocking call of one chunk.
    pub(crate) reads_own_answers: bool,
}

impl<Q: Order<Outcome>> JobRun<Q> {
    /// A job of `shared` over `range`, in chunks of `chunk_size`, answers taken in `order`.
    pub(crate) fn open(
        shared: &Arc<Shared>,
        range: Range<usize>,
        chunk_size: usize,
        order: Q,
    ) -> Result<Self, PoolError> {
        Ok(Self {
            receiving: Receiving::open(shared, order)?,
            range,
            chunk_size: chunk_size.max(1),
            submitted: 0,
            poll_first: Duration::ZERO,
            reads_own_answers: false,
        })
    }

    /// How many chunks the job has in all.
    pub(crate) fn total_chunks(&self) -> u64 {
        self.range.len().div_ceil(self.chunk_size) as u64
    }

    /// Whether every chunk's answer has been taken.
    pub(crate) fn all_received(&self) -> bool {
        self.receiving.taken() == self.total_chunks()
    }

    /// Chunks submitted and not yet taken.
    pub(crate) fn outstanding(&self) -> u64 {
        self.submitted - self.receiving.taken()
    }

    /// Submits the next chunk, if any is left; waits while the pool's queue is full.
    pub(crate) fn submit_next<T: Task, I: Items<T::Chunk> + ?Sized>(
        &mut self,
        task: &T,
        items: &I,
    ) -> Result<bool, PoolError> {
        if self.submitted == self.total_chunks() {
            return Ok(false);
        }
        let shared = &self.receiving.shared;
        let chunk =
            encode_nth_chunk(shared, (self.receiving.job, self.submitted), &self.range, self.chunk_size, task, items)?;
        if self.reads_own_answers {
            shared.enqueue_and_read(chunk)?;
        } else {
            shared.enqueue(chunk)?;
        }
        self.submitted += 1;
        Ok(true)
    }

    /// The next chunk's outputs in turn.
    pub(crate) fn next_outcome<T: Task>(&mut self) -> Result<Vec<T::Output>, PoolError> {
        let outcome = self.next_arrival()?;
        self.receiving.shared.meters.decoding(|| outputs_of::<T>(outcome))
    }

    /// The next chunk's answer in turn, undecoded, whether it succeeded or failed; the
    /// error is for the whole job (the pool was terminated or cannot go on).
    pub(crate) fn next_arrival(&mut self) -> Result<Outcome, PoolError> {
        self.receiving.next(self.poll_first)
    }

    /// The next answer in turn, with chunks submitted first while fewer than `window` are
    /// outstanding; `None` after the last.
    pub(crate) fn next_within<T: Task, I: Items<T::Chunk> + ?Sized>(
        &mut self,
        window: u64,
        task: &T,
        items: &I,
    ) -> Result<Option<Outcome>, PoolError> {
        if self.all_received() {
            return Ok(None);
        }
        while self.outstanding() < window && self.submit_next(task, items)? {}
        self.next_arrival().map(Some)
    }

    /// Appends the outputs of `outcome`'s chunk to `outputs` (see [`outputs_into`]), timed
    /// as decoding.
    pub(crate) fn decode_into<T: Task>(&self, outcome: Outcome, outputs: &mut Vec<T::Output>) -> Result<(), PoolError> {
        self.receiving.shared.meters.decoding(|| outputs_into::<T>(outcome, outputs))
    }

    /// Index of the first item of chunk `chunk`.
    pub(crate) fn first_item(&self, chunk: u64) -> usize {
        self.range.start + chunk as usize * self.chunk_size
    }
}

impl JobRun<InTurn<Outcome>> {
    /// Submits every chunk and decodes each answer straight into the result, in item
    /// order, as soon as those before it are in.
    pub(crate) fn run_to_end<T: Task, I: Items<T::Chunk> + ?Sized>(
        mut self,
        task: &T,
        items: &I,
    ) -> Result<Vec<T::Output>, PoolError> {
        let total = self.total_chunks();
        let mut outputs = Vec::with_capacity(self.range.len());
        while self.receiving.taken() < total {
            // Submitting waits only while the pool's queue is full; answers wait in the
            // inbox meanwhile, so no chunk waits on this loop.
            if !self.submit_next(task, items)? || self.outstanding() > 0 {
                while let Some(outcome) = self.receiving.try_next() {
                    self.decode_into::<T>(outcome?, &mut outputs)?;
                }
                if self.submitted == total && self.receiving.taken() < total {
                    let outcome = self.next_arrival()?;
                    self.decode_into::<T>(outcome, &mut outputs)?;
                }
            }
        }
        Ok(outputs)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use corepool_protocol::TaskId;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::pool::core::Payload;

    /// A task whose outputs are counts in the codec's own form.
    #[derive(Serialize, Deserialize)]
    pub(crate) struct CountInRange;

    impl Task for CountInRange {
        const NAME: &'static str = "count";
        type Chunk = Vec<u32>;
        type Output = u32;

        fn run(&self, chunk: Vec<u32>) -> Result<Vec<u32>, String> {
            Ok(chunk)
        }
    }

    fn answer(rows: usize, bytes: Vec<u8>) -> Outcome {
        Outcome { id: TaskId { job: 0, chunk: 0, first_row: 40 }, rows, result: Ok(Payload::from_bytes(bytes)) }
    }

    fn counts(rows: usize, counts: &[u32]) -> Outcome {
        let mut bytes = Vec::new();
        CountInRange::encode_outputs(counts, &mut bytes).expect("counts encode");
        answer(rows, bytes)
    }

    /// Chunk `chunk` of job 1 answered with `outputs`, one per item.
    pub(crate) fn counts_of(chunk: u64, first_row: u64, outputs: &[u32]) -> Outcome {
        Outcome { id: TaskId { job: 1, chunk, first_row }, ..counts(outputs.len(), outputs) }
    }

    #[test]
    fn a_chunks_outputs_are_appended_only_when_there_is_one_per_item() {
        let mut outputs = vec![7];
        outputs_into::<CountInRange>(counts(3, &[1, 2, 3]), &mut outputs).expect("one output per item");
        assert_eq!(outputs, [7, 1, 2, 3]);

        let short = outputs_into::<CountInRange>(counts(3, &[4, 5]), &mut outputs).unwrap_err();
        assert!(
            short.to_string().contains("chunk at item 40 has 3 items but the worker returned 2 outputs"),
            "{short}"
        );
        let junk = outputs_into::<CountInRange>(answer(1, vec![9, 9]), &mut outputs).unwrap_err();
        assert!(junk.to_string().contains("chunk at item 40"), "{junk}");
        assert_eq!(outputs, [7, 1, 2, 3], "a rejected answer leaves the result as it was");
    }
}
