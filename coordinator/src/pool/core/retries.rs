//! A worker lost: its chunks go to other workers, alone if any may have killed it, or
//! fail once they have used up their retries, or, where the transport cannot run them
//! again (MPI without fault tolerance), fail at once with the worker, named.

use corepool_protocol::TaskId;

use super::{
    Shared,
    batching::split_batch,
    delivery::Outcome,
    dispatch::dispatch,
    spawning::reap,
    state::{SlotState, row_range},
};
use crate::pool::{PoolError, platform::process_usage, transport::Transport};

impl Shared {
    /// Takes note that the worker of slot `index` (of `generation`) is gone, for `reason`:
    /// decides the fate of each chunk it held ([`on_death`]), and has the watchdog replace it.
    pub(super) fn on_worker_lost(&self, index: usize, generation: u64, reason: &str) {
        let mut state = self.lock();
        let slot = &mut state.slots[index];
        if slot.generation != generation || slot.state == SlotState::Gone {
            return;
        }
        slot.state = SlotState::Gone;
        // A worker told to stop after its share of chunks has gone as planned.
        let retired = std::mem::take(&mut slot.retiring);
        if let Some(outbox) = slot.outbox.take() {
            outbox.close();
        }
        slot.reader = None;
        // A reader thread waiting for work learns that there is none to come.
        slot.reader_wake.notify_all();
        let child = slot.child.take();
        let reason = slot.kill_reason.take().unwrap_or_else(|| reason.to_owned());
        let stopping = state.stopping;
        drop(state);
        self.retire_usage(index, child.as_ref().and_then(|child| process_usage(child.id())));

        let death = child.map(reap).map_or_else(|| reason.clone(), |status| format!("{reason}, {status}"));
        let mut state = self.lock();
        let mut lost: Vec<(u64, TaskId)> = state
            .in_flight
            .iter()
            .filter(|(_, flight)| flight.worker == index)
            .map(|(id, flight)| (flight.order, *id))
            .collect();
        // Newest first, so that pushing each to the front leaves them in their old order.
        lost.sort_unstable_by(|a, b| b.cmp(a));
        let held = lost.len();
        let max_retries = self.settings.max_retries;
        let rerunnable = self.engine.reruns_lost_work();
        // Every item the worker held, oldest first: a chunk lost with its worker names them all.
        let held_items: Vec<_> = lost.iter().rev().map(|(_, id)| row_range(&state.in_flight[id].chunk)).collect();
        let worker = self.engine.describe(index).unwrap_or_else(|| format!("worker {index}"));
        let mut failed = Vec::new();
        for (_, id) in lost {
            let mut chunk = state.in_flight.remove(&id).expect("listed above").chunk;
            let batch_of_several = chunk.rows >= 2 && state.is_batch(id.job);
            let facts = LostChunk { attempts: chunk.attempts, suspect: chunk.suspect, batch_of_several, rerunnable };
            let Retry { attempts, suspect, mut fate } = on_death(facts, held, max_retries, stopping);
            (chunk.attempts, chunk.suspect) = (attempts, suspect);
            if fate == Fate::SplitIntoCalls {
                if let Some(pieces) = split_batch(&mut state, &chunk) {
                    for piece in pieces.into_iter().rev() {
                        state.slots[index].stats.retried_chunks += 1;
                        state.queue.push_front(piece);
                    }
                    continue;
                }
                // Its calls could not be read back: it goes again whole.
                fate = requeue_or_fail(attempts, max_retries, stopping);
            }
            if fate == Fate::LostWithWorker {
                let reason = reason_apart_from(&worker, &death);
                let error = PoolError::RankLost {
                    rows: row_range(&chunk),
                    held: held_items.clone(),
                    worker: worker.clone(),
                    reason,
                };
                failed.push((state.take_delivery(id.job), Outcome { id, rows: chunk.rows, result: Err(error) }));
            } else if fate == Fate::Fail {
                let error =
                    PoolError::WorkerDied { rows: row_range(&chunk), attempts: chunk.attempts, death: death.clone() };
                failed.push((state.take_delivery(id.job), Outcome { id, rows: chunk.rows, result: Err(error) }));
            } else {
                state.slots[index].stats.retried_chunks += 1;
                state.queue.push_front(chunk);
            }
        }
        state.slots[index].in_flight = 0;
        state.slots[index].isolated = false;
        // The survivors take the chunks back at once, while the replacement starts.
        dispatch(&mut state, self.settings.chunks_in_flight, None);
        if self.settings.respawn && !stopping {
            // The watchdog starts the replacement (see `spawn_worker` for why it, and
            // not this short-lived thread).
            let slot = &mut state.slots[index];
            slot.state = SlotState::Waiting;
            match retired {
                true => slot.stats.retired += 1,
                false => slot.stats.restarts += 1,
            }
        }
        drop(state);
        self.watch.notify_all();
        for (delivery, outcome) in failed {
            self.deliver(delivery, outcome);
        }
        self.changed.notify_all();
    }
}

/// How a worker was lost, without its name in front, which the worker's own line gives
/// (the task timeout's and the MPI link's reasons begin with it).
fn reason_apart_from(worker: &str, death: &str) -> String {
    death.strip_prefix(worker).map_or(death, |rest| rest.trim_start_matches([':', ' '])).to_owned()
}

/// What the retry decision needs to know of a chunk whose worker died holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LostChunk {
    /// Deaths charged to it so far.
    pub(super) attempts: u32,
    /// Already suspected of killing a worker.
    pub(super) suspect: bool,
    /// A batch of two `apply_async` calls or more, which can go out again call by call.
    pub(super) batch_of_several: bool,
    /// The transport can run a lost worker's chunks again (not MPI without fault
    /// tolerance, where a lost rank ends the job).
    pub(super) rerunnable: bool,
}

/// What becomes of a chunk whose worker died holding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Retry {
    /// Deaths charged to it, this one included.
    pub(super) attempts: u32,
    /// It goes only to a worker that holds nothing else, and keeps that worker to itself.
    pub(super) suspect: bool,
    /// Where it goes.
    pub(super) fate: Fate,
}

/// Where a chunk whose worker died goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Back to the front of the queue.
    Requeue,
    /// Split into its calls, each sent again alone as a suspect, so that the culprit
    /// alone fails and its batch-mates still run.
    SplitIntoCalls,
    /// Fails with the worker's death.
    Fail,
    /// Fails with the worker, as one of the chunks it held: it cannot run again.
    LostWithWorker,
}

/// The retry decision for `chunk`, one of `held` chunks its worker died holding
/// unanswered. A worker buffers answers, so a finished chunk can die unanswered with it:
/// only a chunk that was the worker's one unanswered chunk is surely the culprit, and it
/// alone is charged with the death. When it held several, each goes again alone (a
/// suspect) until the culprit shows itself. Where the transport cannot run it again, it
/// is lost with its worker, whatever its retries: this is the one place to change when a
/// fault-tolerant MPI (ULFM) can run a lost rank's chunks on the others.
pub(super) fn on_death(chunk: LostChunk, held: usize, max_retries: u32, stopping: bool) -> Retry {
    let alone = held == 1;
    let attempts = chunk.attempts + u32::from(alone);
    let suspect = chunk.suspect || !alone;
    let fate = if !chunk.rerunnable {
        Fate::LostWithWorker
    } else if alone && chunk.batch_of_several {
        Fate::SplitIntoCalls
    } else {
        requeue_or_fail(attempts, max_retries, stopping)
    };
    Retry { attempts, suspect, fate }
}

/// A chunk charged with `attempts` deaths fails once they reach `max_retries`, and at
/// once while the pool stops; otherwise it goes again.
pub(super) fn requeue_or_fail(attempts: u32, max_retries: u32, stopping: bool) -> Fate {
    if attempts >= max_retries || stopping { Fate::Fail } else { Fate::Requeue }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: LostChunk = LostChunk { attempts: 0, suspect: false, batch_of_several: false, rerunnable: true };

    #[test]
    fn a_lost_rank_is_named_once() {
        let rank = "rank 2 on host node1 (pid 4711)";
        assert_eq!(
            reason_apart_from(rank, "rank 2 on host node1 (pid 4711) did not answer within 2s"),
            "did not answer within 2s"
        );
        assert_eq!(reason_apart_from(rank, "rank 2 on host node1 (pid 4711): MPI failed: x"), "MPI failed: x");
        assert_eq!(reason_apart_from(rank, "closed its connection"), "closed its connection");
    }

    #[test]
    fn a_chunk_that_cannot_run_again_is_lost_with_its_worker_however_many_it_held() {
        let fixed = LostChunk { rerunnable: false, ..CHUNK };
        for held in [1, 2, 5] {
            for stopping in [false, true] {
                assert_eq!(on_death(fixed, held, 3, stopping).fate, Fate::LostWithWorker);
                let batch = LostChunk { batch_of_several: true, ..fixed };
                assert_eq!(on_death(batch, held, 0, stopping).fate, Fate::LostWithWorker);
            }
        }
    }

    #[test]
    fn a_chunk_that_died_alone_is_charged_and_goes_again_until_max_retries() {
        let first = on_death(CHUNK, 1, 3, false);
        assert_eq!(first, Retry { attempts: 1, suspect: false, fate: Fate::Requeue });
        let second = on_death(LostChunk { attempts: 1, ..CHUNK }, 1, 3, false);
        assert_eq!(second, Retry { attempts: 2, suspect: false, fate: Fate::Requeue });
        let third = on_death(LostChunk { attempts: 2, ..CHUNK }, 1, 3, false);
        assert_eq!(third, Retry { attempts: 3, suspect: false, fate: Fate::Fail });
    }

    #[test]
    fn chunks_that_died_together_are_not_charged_but_go_again_alone() {
        for held in [2, 3, 8] {
            let retry = on_death(LostChunk { attempts: 2, ..CHUNK }, held, 3, false);
            assert_eq!(retry, Retry { attempts: 2, suspect: true, fate: Fate::Requeue });
        }
    }

    #[test]
    fn a_suspect_that_dies_alone_is_charged_and_stays_a_suspect() {
        let suspect = LostChunk { suspect: true, ..CHUNK };
        assert_eq!(on_death(suspect, 1, 3, false), Retry { attempts: 1, suspect: true, fate: Fate::Requeue });
    }

    #[test]
    fn a_batch_that_died_alone_is_split_into_its_calls_even_past_its_retries() {
        let batch = LostChunk { batch_of_several: true, ..CHUNK };
        assert_eq!(on_death(batch, 1, 3, false), Retry { attempts: 1, suspect: false, fate: Fate::SplitIntoCalls });
        let spent = LostChunk { attempts: 5, ..batch };
        assert_eq!(on_death(spent, 1, 3, true).fate, Fate::SplitIntoCalls);
    }

    #[test]
    fn a_batch_that_died_with_others_goes_again_whole() {
        let batch = LostChunk { batch_of_several: true, ..CHUNK };
        assert_eq!(on_death(batch, 2, 3, false), Retry { attempts: 0, suspect: true, fate: Fate::Requeue });
    }

    #[test]
    fn nothing_goes_again_while_the_pool_stops() {
        assert_eq!(on_death(CHUNK, 1, 3, true).fate, Fate::Fail);
        assert_eq!(on_death(CHUNK, 2, 3, true).fate, Fate::Fail);
    }

    #[test]
    fn with_no_retries_a_chunk_fails_at_its_first_death_even_uncharged() {
        assert_eq!(on_death(CHUNK, 1, 0, false).fate, Fate::Fail);
        assert_eq!(on_death(CHUNK, 2, 0, false).fate, Fate::Fail);
        assert_eq!(requeue_or_fail(0, 1, false), Fate::Requeue);
        assert_eq!(requeue_or_fail(1, 1, false), Fate::Fail);
    }
}
