//! Dispatch: which ready worker takes the next queued chunk, and handing it over.

use std::{sync::Arc, time::Instant};

use corepool_protocol::TaskId;

use super::{
    outbox::{self, Outbox},
    state::{Borrowed, InFlight, SlotState, State},
};

/// While calls keep coming, a worker that has just answered waits for the open batch to
/// hold this many before taking it (see
/// [`Shared::gather_batch`](super::Shared::gather_batch)): each batch costs several thread
/// wake-ups, which, at one batch per round trip, would cost more than the calls themselves.
pub(super) const BATCH_GATHER: usize = 512;

/// What a caller that dispatches on its own thread takes on (see
/// [`Shared::dispatch_from_caller`](super::Shared::dispatch_from_caller)).
pub(super) struct ByCaller<'a> {
    /// The outboxes whose small frames it writes once it has let go of the state (see
    /// [`Outbox::write_here`]).
    pub(super) write_here: &'a mut Vec<Arc<Outbox>>,
    /// A chunk whose answer it reads itself, and where the borrowed connection goes, if
    /// the worker that takes the chunk has nothing else to answer.
    pub(super) read_here: Option<(TaskId, &'a mut Option<Borrowed>)>,
}

/// Hands queued chunks, then the open batch, to the workers [`pick_worker`] and
/// [`open_batch_goes_out`] choose. A worker given work while it held none has its reader
/// thread woken, unless the caller reads for it.
///
/// Writer threads send the frames, except small ones when `by_caller` is given: their
/// outboxes are listed there, and the caller must call [`Outbox::write_here`] on each once
/// it has let go of the state.
pub(super) fn dispatch(state: &mut State, window: usize, mut by_caller: Option<ByCaller<'_>>) {
    loop {
        if state.queue.is_empty() {
            let idle = state
                .slots
                .iter()
                .any(|slot| slot.state == SlotState::Ready && slot.outbox.is_some() && slot.in_flight == 0);
            let Some(batch) = &state.open_batch else { return };
            if !open_batch_goes_out(idle, state.gathering, batch.completions.len()) {
                return;
            }
            state.seal_open_batch();
        }
        let suspect = state.queue.front().expect("not empty").suspect;
        let loads = state.slots.iter().map(|slot| SlotLoad {
            ready: slot.state == SlotState::Ready && slot.outbox.is_some(),
            isolated: slot.isolated,
            in_flight: slot.in_flight,
            chunks_done: slot.stats.chunks,
            spent: quota_spent(slot.sent, state.max_tasks_per_worker),
        });
        let Some(index) = pick_worker(loads, suspect, window) else { return };
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
        slot.sent += 1;
        slot.isolated = suspect;
        state.dispatched += 1;
        let order = state.dispatched;
        state.in_flight.insert(chunk.id, InFlight { chunk, worker: index, order });
    }
}

/// What the choice of a worker needs to know of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotLoad {
    /// Joined, with a connection that takes frames.
    pub(super) ready: bool,
    /// Holds a suspect chunk, alone.
    pub(super) isolated: bool,
    /// Chunks sent and not yet answered.
    pub(super) in_flight: usize,
    /// Chunks answered so far.
    pub(super) chunks_done: u64,
    /// Its worker has been sent all the chunks it may run ([`quota_spent`]).
    pub(super) spent: bool,
}

/// Which slot takes the next chunk, if any has room: the least loaded of the ready slots
/// with fewer than `window` chunks in flight, whose worker has not spent its quota. A `suspect` chunk (it may kill its worker)
/// goes only to a slot that holds nothing, and an isolated slot takes nothing more. Ties
/// go to the slot that has done least, then to the first, so that one-at-a-time calls
/// such as `apply` spread over every worker instead of keeping the first one busy.
pub(super) fn pick_worker(slots: impl IntoIterator<Item = SlotLoad>, suspect: bool, window: usize) -> Option<usize> {
    slots
        .into_iter()
        .enumerate()
        .filter(|(_, slot)| slot.ready && !slot.isolated && !slot.spent)
        .filter(|(_, slot)| if suspect { slot.in_flight == 0 } else { slot.in_flight < window })
        .min_by_key(|(_, slot)| (slot.in_flight, slot.chunks_done))
        .map(|(index, _)| index)
}

/// Whether a worker that has been sent `sent` chunks has had its share, with at most
/// `max_tasks` per worker (Python's `maxtasksperchild`): it takes no more, and retires once
/// it has answered them ([`retires_now`]).
pub(super) fn quota_spent(sent: u64, max_tasks: Option<u64>) -> bool {
    max_tasks.is_some_and(|max| sent >= max)
}

/// Whether a worker is told to stop now, to be replaced: it has spent its quota and holds
/// no chunk unanswered.
pub(super) fn retires_now(sent: u64, in_flight: usize, max_tasks: Option<u64>) -> bool {
    in_flight == 0 && quota_spent(sent, max_tasks)
}

/// Whether the open batch of `apply_async` calls, holding `calls`, goes out now that the
/// queue is empty: only to a worker with nothing to do (while every worker is busy, the
/// calls that arrive gather into one message), and, while `gathering` workers wait for it
/// to fill, once it holds [`BATCH_GATHER`] calls.
pub(super) fn open_batch_goes_out(any_idle: bool, gathering: usize, calls: usize) -> bool {
    any_idle && (gathering == 0 || calls >= BATCH_GATHER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(in_flight: usize, chunks_done: u64) -> SlotLoad {
        SlotLoad { ready: true, isolated: false, in_flight, chunks_done, spent: false }
    }

    #[test]
    fn the_least_loaded_worker_takes_the_chunk() {
        assert_eq!(pick_worker([slot(2, 0), slot(1, 9), slot(0, 50)], false, 2), Some(2));
        assert_eq!(pick_worker([slot(1, 0), slot(0, 9)], false, 2), Some(1));
    }

    #[test]
    fn ties_go_to_the_worker_that_has_done_least_then_to_the_first() {
        assert_eq!(pick_worker([slot(0, 5), slot(0, 3), slot(0, 4)], false, 2), Some(1));
        assert_eq!(pick_worker([slot(1, 3), slot(1, 3)], false, 2), Some(0));
    }

    #[test]
    fn no_worker_takes_more_than_the_window() {
        assert_eq!(pick_worker([slot(2, 0), slot(2, 0)], false, 2), None);
        assert_eq!(pick_worker([slot(2, 0), slot(1, 0)], false, 2), Some(1));
        assert_eq!(pick_worker([slot(1, 0)], false, 1), None);
        assert_eq!(pick_worker([slot(3, 0)], false, 4), Some(0));
    }

    #[test]
    fn workers_not_ready_take_nothing() {
        let starting = SlotLoad { ready: false, ..slot(0, 0) };
        assert_eq!(pick_worker([starting, slot(1, 0)], false, 2), Some(1));
        assert_eq!(pick_worker([starting], false, 2), None);
        assert_eq!(pick_worker([], false, 2), None);
    }

    #[test]
    fn a_suspect_chunk_goes_only_to_a_worker_that_holds_nothing() {
        assert_eq!(pick_worker([slot(1, 0), slot(1, 0)], true, 2), None);
        assert_eq!(pick_worker([slot(1, 0), slot(0, 7)], true, 2), Some(1));
    }

    #[test]
    fn a_worker_that_holds_a_suspect_chunk_takes_nothing_more() {
        let isolated = SlotLoad { isolated: true, ..slot(1, 0) };
        assert_eq!(pick_worker([isolated, slot(2, 0)], false, 2), None);
        assert_eq!(pick_worker([isolated, slot(1, 0)], false, 2), Some(1));
    }

    #[test]
    fn a_worker_that_spent_its_quota_takes_nothing_more() {
        let spent = SlotLoad { spent: true, ..slot(0, 0) };
        assert_eq!(pick_worker([spent, slot(1, 9)], false, 2), Some(1));
        assert_eq!(pick_worker([spent], false, 2), None);
        assert_eq!(pick_worker([spent, slot(0, 0)], true, 2), Some(1));
    }

    #[test]
    fn the_quota_counts_chunks_sent_and_is_spent_at_the_limit() {
        assert!(!quota_spent(1_000_000, None), "no limit by default");
        assert!(!quota_spent(0, Some(1)));
        assert!(quota_spent(1, Some(1)));
        assert!(!quota_spent(2, Some(3)));
        assert!(quota_spent(3, Some(3)));
    }

    #[test]
    fn a_worker_retires_once_its_quota_is_spent_and_every_chunk_answered() {
        assert!(!retires_now(3, 1, Some(3)), "one answer still to come");
        assert!(retires_now(3, 0, Some(3)));
        assert!(!retires_now(2, 0, Some(3)), "it may take one more");
        assert!(!retires_now(7, 0, None));
    }

    #[test]
    fn the_open_batch_waits_for_an_idle_worker_and_for_its_gatherers() {
        assert!(!open_batch_goes_out(false, 0, 1));
        assert!(open_batch_goes_out(true, 0, 1));
        assert!(!open_batch_goes_out(true, 1, BATCH_GATHER - 1));
        assert!(open_batch_goes_out(true, 1, BATCH_GATHER));
        assert!(!open_batch_goes_out(false, 1, BATCH_GATHER));
    }
}
