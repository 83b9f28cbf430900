//! The supervisor's bookkeeping: each worker's slot, the queue of chunks, the chunks in
//! flight and the jobs they belong to, all under the one lock of [`Shared`](super::Shared).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use corepool_protocol::{TaskId, handshake::Challenge};

use super::{
    delivery::{ItemCompletion, Sink},
    outbox::Outbox,
    signal::Signal,
};
use crate::{
    outgoing::Outgoing,
    pool::{
        WorkerStats,
        platform::{Child, ProcessUsage},
        transport::Receiver,
    },
};

/// A chunk, encoded as a whole frame ready to write.
#[derive(Clone)]
pub(crate) struct Chunk {
    pub id: TaskId,
    pub rows: usize,
    pub frame: Arc<Outgoing>,
    pub attempts: u32,
    /// The chunk was unanswered on a worker that died holding several: it may be the
    /// culprit, so it goes to a worker that holds nothing else.
    pub suspect: bool,
}

pub(super) struct InFlight {
    pub(super) chunk: Chunk,
    pub(super) worker: usize,
    /// Dispatch order: a worker runs its chunks in this order.
    pub(super) order: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    /// Needs a worker: the watchdog starts one.
    Waiting,
    /// Started, not yet through the handshake.
    Starting,
    /// Joined: takes chunks.
    Ready,
    /// No worker, and none to come (the pool is stopping).
    Gone,
}

/// What a slot keeps for observers.
#[derive(Debug, Default)]
pub(super) struct SlotWatch {
    /// When the slot's worker last went from holding no chunk to holding one.
    pub(super) busy_since: Option<Instant>,
    /// Time spent holding at least one chunk, up to `busy_since`.
    pub(super) busy: Duration,
    /// Usage of the slot's earlier workers, which died.
    pub(super) past: ProcessUsage,
    /// The last reading of the current worker, kept for when it can no longer be read.
    pub(super) last: ProcessUsage,
}

pub(super) struct Slot {
    pub(super) state: SlotState,
    pub(super) generation: u64,
    pub(super) child: Option<Child>,
    /// The challenge its current worker was started with, which it must answer to join.
    pub(super) challenge: Option<Challenge>,
    /// Busy clock and kernel usage, for observers.
    pub(super) watch: SlotWatch,
    pub(super) pid: u32,
    pub(super) outbox: Option<Arc<Outbox>>,
    /// The connection's receiving side while nobody reads it: its reader thread has put
    /// it here to wait for work, and a caller may borrow it.
    pub(super) reader: Option<Receiver>,
    /// Wakes the slot's reader thread: work for it to read, or its worker gone.
    pub(super) reader_wake: Arc<Signal>,
    pub(super) in_flight: usize,
    pub(super) stats: WorkerStats,
    /// When the slot entered its state (for the start timeout).
    pub(super) since: Instant,
    /// When the worker last answered, or was handed work while idle (for the task timeout).
    pub(super) last_progress: Instant,
    /// Starts in a row that died or timed out before joining.
    pub(super) start_failures: u32,
    /// Why the pool killed this worker, if it did.
    pub(super) kill_reason: Option<String>,
    /// The worker holds a suspect chunk, alone.
    pub(super) isolated: bool,
}

/// One-item calls gathered to go out as one frame (see [`Shared::submit_one`](super::Shared::submit_one)).
pub(super) struct OpenBatch {
    pub(super) job: u64,
    pub(super) tasks: Vec<u8>,
    pub(super) completions: Vec<ItemCompletion>,
}

/// A worker's connection, lent by its slot to a caller that reads its own answer (see
/// [`Shared::enqueue_and_read`](super::Shared::enqueue_and_read)).
pub(crate) struct Borrowed {
    pub(super) index: usize,
    pub(super) generation: u64,
    pub(super) reader: Receiver,
}

pub(crate) struct State {
    pub(super) slots: Vec<Slot>,
    pub(super) queue: VecDeque<Chunk>,
    pub(super) in_flight: HashMap<TaskId, InFlight>,
    pub(super) jobs: HashMap<u64, Sink>,
    pub(super) next_job: u64,
    pub(super) closed: bool,
    pub(super) stopping: bool,
    pub(super) rejected_peers: u64,
    pub(super) threads: Vec<JoinHandle<()>>,
    /// Dispatches so far, to order [`InFlight`] entries.
    pub(super) dispatched: u64,
    /// One-item calls waiting for a worker with room.
    pub(super) open_batch: Option<OpenBatch>,
    /// Reader threads whose worker waits for the open batch to fill; while there are
    /// any, a batch goes out only once it holds [`BATCH_GATHER`](super::dispatch::BATCH_GATHER) calls.
    pub(super) gathering: usize,
    /// The buffers of batches sent, which their frames share: once a batch is answered and
    /// its frame gone, its buffer takes the next batch's calls. A new buffer is fresh memory
    /// on whichever thread seals the batch (a reader, mostly), and grows call by call.
    pub(super) batch_buffers: Vec<Arc<Vec<u8>>>,
    /// Why the pool cannot go on, once it cannot.
    pub(super) broken: Option<String>,
}

/// The chunks in flight, by id.
pub(super) trait InFlightMap {
    /// Takes chunk `id` out if `worker` holds it: only its holder may answer for it.
    fn remove_if_held_by(&mut self, id: &TaskId, worker: usize) -> Option<InFlight>;
}

impl InFlightMap for HashMap<TaskId, InFlight> {
    fn remove_if_held_by(&mut self, id: &TaskId, worker: usize) -> Option<InFlight> {
        if self.get(id)?.worker == worker { self.remove(id) } else { None }
    }
}

impl State {
    /// Slot `index`, if it waits for the worker it started, and that worker has process id
    /// `pid`.
    pub(super) fn starting(&self, index: usize, pid: Option<u32>) -> Option<&Slot> {
        self.slots.get(index).filter(|slot| slot.state == SlotState::Starting && Some(slot.pid) == pid)
    }

    /// Where an outcome of `job` goes: a batch's sink is taken out (its one outcome ends
    /// the job); a gatherer is shared.
    pub(super) fn take_delivery(&mut self, job: u64) -> Option<Sink> {
        match self.jobs.get(&job)? {
            Sink::Gather(gatherer) => Some(Sink::Gather(Arc::clone(gatherer))),
            Sink::Batch(_) => self.jobs.remove(&job),
        }
    }
}

/// The rows of `chunk`, for messages.
pub(super) fn row_range(chunk: &Chunk) -> std::ops::Range<u64> {
    chunk.id.first_row..chunk.id.first_row + chunk.rows as u64
}
