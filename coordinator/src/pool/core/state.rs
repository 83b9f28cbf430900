//! The supervisor's bookkeeping: each worker's slot, the queue of chunks, the chunks in
//! flight and the jobs they belong to, all under the one lock of [`Shared`](super::Shared).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use corepool_protocol::TaskId;

use super::{
    delivery::{Delivery, ItemCompletion},
    outbox::Outbox,
    signal::Signal,
};
use crate::{
    outgoing::Outgoing,
    pool::{
        WorkerStats,
        platform::{Child, ProcessUsage},
        transport::{Receiver, Ticket, Vouched},
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
    /// What its current worker was started with, and must prove it holds to join.
    pub(super) ticket: Option<Ticket>,
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
    /// Chunks sent to the current worker, against the pool's `max_tasks_per_worker`.
    pub(super) sent: u64,
    /// The current worker has run its share and was told to stop: its end is a planned
    /// retirement, not a death.
    pub(super) retiring: bool,
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
    pub(super) jobs: HashMap<u64, Arc<dyn Delivery>>,
    pub(super) next_job: u64,
    pub(super) closed: bool,
    pub(super) stopping: bool,
    pub(super) rejected_peers: u64,
    /// Connection threads still running, joined when the pool stops (see [`State::keep_thread`]).
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
    /// A worker's program built a pool instead of serving: the start fails with
    /// [`PoolError::InsideWorker`](crate::pool::PoolError::InsideWorker).
    pub(super) init_forgotten: bool,
    /// Chunks a worker is sent before it retires (see [`quota_spent`](super::dispatch::quota_spent)).
    pub(super) max_tasks_per_worker: Option<u64>,
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
    /// The state of a pool of `workers` slots, each waiting for its first worker.
    pub(super) fn new(workers: usize, max_tasks_per_worker: Option<u64>) -> Self {
        State {
            slots: (0..workers).map(|_| Slot::waiting()).collect(),
            queue: VecDeque::new(),
            in_flight: HashMap::new(),
            jobs: HashMap::new(),
            next_job: 0,
            closed: false,
            stopping: false,
            rejected_peers: 0,
            threads: Vec::new(),
            dispatched: 0,
            open_batch: None,
            gathering: 0,
            batch_buffers: Vec::new(),
            broken: None,
            init_forgotten: false,
            max_tasks_per_worker,
        }
    }

    /// Slot `index`, if it waits for the worker it started, and `peer` is that worker as
    /// far as the engine can vouch.
    pub(super) fn starting(&self, index: usize, peer: Vouched) -> Option<&Slot> {
        self.slots.get(index).filter(|slot| slot.state == SlotState::Starting && slot.is(index, peer))
    }

    /// Whether the engine vouches that `peer` is the worker some slot waits for.
    pub(super) fn awaits(&self, peer: Vouched) -> bool {
        (0..self.slots.len()).any(|index| self.starting(index, peer).is_some())
    }
}

impl Slot {
    /// A slot waiting for its first worker.
    pub(super) fn waiting() -> Self {
        Slot {
            state: SlotState::Waiting,
            generation: 0,
            child: None,
            ticket: None,
            watch: SlotWatch::default(),
            pid: 0,
            outbox: None,
            reader: None,
            reader_wake: Arc::default(),
            in_flight: 0,
            stats: WorkerStats::default(),
            since: Instant::now(),
            sent: 0,
            retiring: false,
            last_progress: Instant::now(),
            start_failures: 0,
            kill_reason: None,
            isolated: false,
        }
    }

    /// Whether `peer` is the current worker of this slot, number `index`, as far as the
    /// engine can vouch.
    pub(super) fn is(&self, index: usize, peer: Vouched) -> bool {
        match peer {
            Vouched::Pid(pid) => self.pid == pid,
            Vouched::Slot(slot) => slot == index,
            Vouched::Nothing => false,
        }
    }
}

impl State {
    /// Keeps `thread` to join when the pool stops, and lets go of the threads that have
    /// finished: a finished thread never joined nor detached keeps its stack mapped, and a
    /// pool that replaces its workers starts two threads per worker, for ever.
    pub(super) fn keep_thread(&mut self, thread: JoinHandle<()>) {
        // Dropping the handle of a finished thread detaches it, which frees its stack.
        self.threads.retain(|kept| !kept.is_finished());
        self.threads.push(thread);
    }

    /// Where an outcome of `job` goes: a batch is taken out (its one outcome ends the job);
    /// any other delivery is shared.
    pub(super) fn take_delivery(&mut self, job: u64) -> Option<Arc<dyn Delivery>> {
        let delivery = self.jobs.get(&job)?;
        if delivery.as_batch().is_some() { self.jobs.remove(&job) } else { Some(Arc::clone(delivery)) }
    }

    /// Whether `job` is a batch of one-item calls.
    pub(super) fn is_batch(&self, job: u64) -> bool {
        self.jobs.get(&job).is_some_and(|delivery| delivery.as_batch().is_some())
    }
}

/// The rows of `chunk`, for messages.
pub(super) fn row_range(chunk: &Chunk) -> std::ops::Range<u64> {
    chunk.id.first_row..chunk.id.first_row + chunk.rows as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starting(pid: u32) -> Slot {
        Slot { state: SlotState::Starting, pid, ..Slot::waiting() }
    }

    #[test]
    fn a_peer_is_heard_only_if_the_engine_vouches_for_a_worker_a_slot_waits_for() {
        let mut state = State { slots: vec![starting(40), starting(41), Slot::waiting()], ..State::new(0, None) };
        assert!(state.awaits(Vouched::Pid(41)));
        assert!(!state.awaits(Vouched::Pid(42)), "a process this pool did not start");
        assert!(!state.awaits(Vouched::Nothing), "a peer the engine cannot vouch for");
        assert!(state.awaits(Vouched::Slot(1)), "a rank for a starting slot");
        assert!(!state.awaits(Vouched::Slot(2)), "a slot with no worker on its way");
        assert!(!state.awaits(Vouched::Slot(7)), "no such slot");
        assert_eq!(state.starting(0, Vouched::Pid(40)).map(|slot| slot.pid), Some(40));
        assert!(state.starting(0, Vouched::Pid(41)).is_none(), "slot 1's worker claiming slot 0");
        assert!(state.starting(1, Vouched::Slot(0)).is_none(), "rank of slot 0 claiming slot 1");
        state.slots[0].state = SlotState::Ready;
        assert!(!state.awaits(Vouched::Pid(40)), "a slot whose worker has joined waits for nobody");
    }
}
