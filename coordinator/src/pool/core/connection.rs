//! A worker's connection once admitted: its reader thread, its writer thread, the reading
//! a blocking caller may do itself on a borrowed connection, and each answer handed on.
//!
//! The reader thread never writes (so two processes writing large frames at each other
//! cannot block for ever). While its worker has nothing in flight, it leaves the
//! connection in the worker's slot, where a blocking one-chunk call may borrow it to read
//! its own answer ([`Shared::enqueue_and_read`]).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use corepool_protocol::{TaskId, ToCoordinator, codec};

use super::{
    Shared,
    admission::Admitted,
    delivery::{Outcome, Payload},
    dispatch::{BATCH_GATHER, dispatch, retires_now},
    outbox::Outbox,
    state::{Borrowed, InFlightMap, Slot, SlotState, row_range},
    stop::shutdown_frame,
};
use crate::pool::{
    PoolError,
    error::with_causes,
    platform::ProcessUsage,
    transport::{FrameReceiver, Receiver},
};

/// How often a reader thread whose worker has nothing to answer looks whether the worker
/// has closed its connection (died while idle).
pub(super) const IDLE_READER_CHECK: Duration = Duration::from_millis(50);

/// A worker's answer: the chunk it is about, and its outputs or why there are none.
pub(super) type Answer = (TaskId, Result<Payload, corepool_protocol::TaskFailure>);

/// What a worker said in one frame.
pub(super) enum Heard {
    /// An answer to a chunk.
    Answer(Answer),
    /// Its own usage so far, which comes just before an answer.
    Usage(ProcessUsage),
}

/// Reads one frame from a worker's connection; the error says why the connection is over.
pub(super) fn read_answer(reader: &mut Receiver, frame: &mut Vec<u8>) -> Result<Heard, String> {
    match reader.receive(frame) {
        Ok(true) => {}
        Ok(false) => return Err("closed its connection".to_owned()),
        Err(error) => return Err(format!("connection failed: {error}")),
    }
    let (message, payload_len) = match codec::decode_prefix::<ToCoordinator>(frame) {
        Ok((message, payload)) => (message, payload.len()),
        Err(error) => return Err(format!("sent a malformed message: {error}")),
    };
    Ok(match message {
        ToCoordinator::Done { id } => {
            // The frame becomes the payload; the next read gets a new buffer.
            let start = frame.len() - payload_len;
            Heard::Answer((id, Ok(Payload { frame: std::mem::take(frame), start })))
        }
        ToCoordinator::Failed { id, failure } => Heard::Answer((id, Err(failure))),
        ToCoordinator::Usage(usage) => Heard::Usage(ProcessUsage::reported(usage)),
    })
}

impl Slot {
    /// Marks the slot's worker as retiring, having run its share of chunks, and takes its
    /// outbox, for the caller to send it the stop frame and close: it takes no more work.
    fn begin_retirement(&mut self) -> Option<Arc<Outbox>> {
        self.retiring = true;
        // For the watchdog, which kills a worker that takes too long to go.
        self.since = Instant::now();
        self.outbox.take()
    }
}

impl Shared {
    /// Starts a thread that serves one worker's connection, joined when the pool stops (by
    /// then its worker is gone, and its connection closed) or let go once it has finished.
    pub(super) fn start_connection_thread(self: &Arc<Self>, serve: impl FnOnce(&Self) + Send + 'static) {
        let shared = Arc::clone(self);
        match std::thread::Builder::new().name("corepool-recv".into()).spawn(move || serve(&shared)) {
            Ok(handle) => self.lock().keep_thread(handle),
            // Without its reader a worker's answers would never be heard.
            Err(error) => self.break_pool(with_causes(&PoolError::Thread(error))),
        }
    }

    /// Serves an admitted worker's connection on this thread: starts the thread that
    /// writes to it, then reads its answers until it closes. The writer is started here
    /// rather than by the thread that admitted the worker, which may have other workers to
    /// admit while the pool's start waits on it; frames dispatched meanwhile wait in the
    /// outbox.
    pub(super) fn serve_connection(&self, (index, generation, reader, outbox): Admitted) {
        let writer =
            std::thread::Builder::new().name(format!("corepool-send-{index}")).spawn(move || outbox.run_writer());
        match writer {
            Ok(writer) => self.lock().keep_thread(writer),
            Err(error) => return self.break_pool(with_causes(&PoolError::Thread(error))),
        }
        self.read_loop(index, generation, reader);
    }

    pub(super) fn read_loop(&self, index: usize, generation: u64, mut reader: Receiver) {
        let mut frame = Vec::new();
        let reason = loop {
            reader = match self.await_reading(index, generation, reader) {
                Some(reader) => reader,
                // Whoever saw the worker go has dealt with it.
                None => return,
            };
            match read_answer(&mut reader, &mut frame) {
                Ok(Heard::Answer(answer)) => {
                    if let Some(batch) = self.on_answer(index, answer, true) {
                        self.gather_batch(index, batch);
                    }
                }
                Ok(Heard::Usage(usage)) => self.note_reported_usage(index, usage),
                Err(reason) => break reason,
            }
        };
        self.on_worker_lost(index, generation, &reason);
    }

    /// Gives slot `index`'s reader thread its connection back once there is something to
    /// read: a chunk in flight, or bytes that came anyway (answers to an abandoned job, or
    /// the end of the stream of a worker that died idle). Meanwhile the connection waits
    /// in the slot, where a caller may borrow it. `None`: the worker is gone, and whoever
    /// saw it go has dealt with it.
    pub(super) fn await_reading(&self, index: usize, generation: u64, reader: Receiver) -> Option<Receiver> {
        let mut state = self.lock();
        let slot = &state.slots[index];
        // A retiring worker's end is all that is left to read.
        if slot.in_flight > 0 || slot.retiring || reader.holds_input() {
            return Some(reader);
        }
        state.slots[index].reader = Some(reader);
        let wake = Arc::clone(&state.slots[index].reader_wake);
        loop {
            let slot = &mut state.slots[index];
            if slot.generation != generation || slot.state != SlotState::Ready {
                return None;
            }
            let readable = slot.reader.as_ref().is_some_and(|reader| {
                slot.in_flight > 0
                    || slot.retiring
                    || reader.holds_input()
                    || reader.input_waiting(Some(Duration::ZERO))
            });
            if readable {
                return slot.reader.take();
            }
            state = wake.wait_timeout(state, IDLE_READER_CHECK);
        }
    }

    /// Puts a borrowed connection back in its slot, and wakes the slot's reader thread
    /// if work came for it meanwhile; drops it if its worker is gone.
    pub(super) fn hand_back(&self, Borrowed { index, generation, reader }: Borrowed) {
        let mut state = self.lock();
        let slot = &mut state.slots[index];
        if slot.generation == generation && slot.state == SlotState::Ready {
            slot.reader = Some(reader);
            if slot.in_flight > 0 || slot.retiring {
                slot.reader_wake.notify_all();
            }
        }
    }

    /// Reads answers from a borrowed connection until the one to chunk `id` is in, and
    /// hands each on as the reader thread would.
    pub(super) fn read_borrowed(&self, mut borrowed: Borrowed, id: TaskId) {
        let mut frame = Vec::new();
        loop {
            // Polling for the answer spares this thread a sleep and a wake-up, while the
            // worker, on another core, works on it.
            let poll = self.settings.answer_poll;
            if !poll.is_zero() && !borrowed.reader.holds_input() {
                let deadline = Instant::now() + poll;
                while !borrowed.reader.input_waiting(Some(Duration::ZERO)) && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
            }
            match read_answer(&mut borrowed.reader, &mut frame) {
                Ok(Heard::Answer(answer)) => {
                    let ours = answer.0 == id;
                    self.on_answer(borrowed.index, answer, false);
                    if ours {
                        return self.hand_back(borrowed);
                    }
                }
                Ok(Heard::Usage(usage)) => self.note_reported_usage(borrowed.index, usage),
                Err(reason) => return self.on_worker_lost(borrowed.index, borrowed.generation, &reason),
            }
        }
    }

    /// Hands on an answer, and gives more work to the worker that sent it. Returns the open
    /// batch's job if the worker should wait for that batch to fill
    /// ([`Shared::gather_batch`]), which only a reader thread may do (`may_gather`).
    pub(super) fn on_answer(&self, index: usize, (id, result): Answer, may_gather: bool) -> Option<u64> {
        let mut state = self.lock();
        // Only the worker that holds a chunk may answer for it: a late answer from a worker
        // given up on, or a duplicate, finds nothing here and is dropped.
        let flight = state.in_flight.remove_if_held_by(&id, index)?;
        let max_tasks = state.max_tasks_per_worker;
        let slot = &mut state.slots[index];
        slot.in_flight -= 1;
        slot.isolated &= slot.in_flight > 0;
        slot.last_progress = Instant::now();
        slot.stats.chunks += 1;
        slot.stats.rows += flight.chunk.rows as u64;
        slot.note_load();
        let retiring = retires_now(slot.sent, slot.in_flight, max_tasks);
        let retired_outbox = if retiring { slot.begin_retirement() } else { None };
        let rows = flight.chunk.rows;
        let result = result.map_err(|failure| PoolError::Task { rows: row_range(&flight.chunk), failure });
        let delivery = state.take_delivery(id.job);
        // An idle worker and a small open batch: calls are likely still coming.
        let gather = match &state.open_batch {
            Some(batch) if may_gather && !retiring && state.slots[index].in_flight == 0 && state.queue.is_empty() => {
                (batch.completions.len() < BATCH_GATHER).then_some(batch.job)
            }
            _ => None,
        };
        state.gathering += usize::from(gather.is_some());
        dispatch(&mut state, self.settings.chunks_in_flight, None);
        drop(state);
        if let Some(outbox) = retired_outbox {
            // Its reader thread reads on to the end of the connection, which the worker
            // closes as it exits: the slot is then free for its replacement.
            let _ = outbox.push(Arc::new(shutdown_frame()), false);
            outbox.close();
        }
        self.changed.notify_all();
        self.deliver(delivery, Outcome { id, rows, result });
        gather
    }
}
