//! Dispatch: which ready worker takes the next queued chunk, and handing it over.

use std::{sync::Arc, time::Instant};

use corepool_protocol::TaskId;

use super::{
    batching::{BATCH_GATHER, seal_open_batch},
    connection::Borrowed,
    outbox::{self, Outbox},
    state::{InFlight, SlotState, State},
};

/// What a caller that dispatches on its own thread takes on (see
/// [`Shared::dispatch_from_caller`]).
pub(super) struct ByCaller<'a> {
    /// The outboxes whose small frames it writes once it has let go of the state (see
    /// [`Outbox::write_here`]).
    pub(super) write_here: &'a mut Vec<Arc<Outbox>>,
    /// A chunk whose answer it reads itself, and where the borrowed connection goes, if
    /// the worker that takes the chunk has nothing else to answer.
    pub(super) read_here: Option<(TaskId, &'a mut Option<Borrowed>)>,
}

/// Hands queued chunks to ready workers with room, least loaded first. A suspect chunk
/// waits for a worker that holds nothing, and keeps it to itself. A worker given work
/// while it held none has its reader thread woken, unless the caller reads for it.
///
/// Writer threads send the frames, except small ones when `by_caller` is given: their
/// outboxes are listed there, and the caller must call [`Outbox::write_here`] on each once
/// it has let go of the state.
pub(super) fn dispatch(state: &mut State, window: usize, mut by_caller: Option<ByCaller<'_>>) {
    loop {
        if state.queue.is_empty() {
            // The open batch goes out only to a worker with nothing to do: while every
            // worker is busy, the calls that arrive gather into one message. While a
            // worker waits for it to fill, it goes once it is full enough.
            let idle = state
                .slots
                .iter()
                .any(|slot| slot.state == SlotState::Ready && slot.outbox.is_some() && slot.in_flight == 0);
            let Some(batch) = &state.open_batch else { return };
            if !idle || (state.gathering > 0 && batch.completions.len() < BATCH_GATHER) {
                return;
            }
            seal_open_batch(state);
        }
        let suspect = state.queue.front().expect("not empty").suspect;
        let Some((index, _)) = state
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.state == SlotState::Ready && slot.outbox.is_some() && !slot.isolated)
            .filter(|(_, slot)| if suspect { slot.in_flight == 0 } else { slot.in_flight < window })
            // Ties go to the worker that has done least, so one-at-a-time calls such as
            // `apply` spread over every worker instead of keeping the first one busy.
            .min_by_key(|(_, slot)| (slot.in_flight, slot.stats.chunks))
        else {
            return;
        };
        let chunk = state.queue.pop_front().expect("queue is not empty");
        let slot = &mut state.slots[index];
        slot.note_dispatch();
        let outbox = slot.outbox.as_ref().expect("ready slots have an outbox");
        let small = chunk.frame.frame_len() <= outbox::WRITE_HERE_MAX;
        let here = by_caller.as_mut().filter(|_| small);
        if outbox.push(Arc::clone(&chunk.frame), here.is_some()).is_err() {
            // The connection failed; the reader will report the loss. Keep the chunk.
            outbox.close();
            slot.outbox = None;
            state.queue.push_front(chunk);
            continue;
        }
        if let Some(here) = here
            && !here.write_here.iter().any(|listed| Arc::ptr_eq(listed, outbox))
        {
            here.write_here.push(Arc::clone(outbox));
        }
        if slot.in_flight == 0 {
            slot.last_progress = Instant::now();
            // Its reader thread waits for work, with the connection in the slot.
            let borrower = by_caller
                .as_mut()
                .and_then(|by| by.read_here.as_mut())
                .filter(|(id, borrowed)| *id == chunk.id && borrowed.is_none() && slot.reader.is_some());
            match borrower {
                Some((_, borrowed)) => {
                    let reader = slot.reader.take().expect("checked above");
                    **borrowed = Some(Borrowed { index, generation: slot.generation, reader });
                }
                None if slot.reader.is_some() => slot.reader_wake.notify_all(),
                None => {}
            }
        }
        slot.in_flight += 1;
        slot.isolated = suspect;
        state.dispatched += 1;
        let order = state.dispatched;
        state.in_flight.insert(chunk.id, InFlight { chunk, worker: index, order });
    }
}
