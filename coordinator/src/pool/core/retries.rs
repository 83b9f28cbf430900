//! A worker lost: its chunks go to other workers, alone if any may have killed it, or
//! fail once they have used up their retries.

use corepool_protocol::TaskId;

use super::{
    Shared,
    batching::split_batch,
    delivery::Outcome,
    dispatch::dispatch,
    spawning::reap,
    state::{SlotState, row_range},
};
use crate::pool::{PoolError, platform::process_usage};

impl Shared {
    pub(super) fn on_worker_lost(&self, index: usize, generation: u64, reason: &str) {
        let mut state = self.lock();
        let slot = &mut state.slots[index];
        if slot.generation != generation || slot.state == SlotState::Gone {
            return;
        }
        slot.state = SlotState::Gone;
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
        // A worker buffers answers, so a finished chunk can die unanswered with it: only
        // a chunk that was the worker's one unanswered chunk is surely the culprit. When
        // it held several, each is sent again alone until the culprit shows itself.
        let alone = lost.len() == 1;
        let mut failed = Vec::new();
        for (_, id) in lost {
            let mut chunk = state.in_flight.remove(&id).expect("listed above").chunk;
            if alone {
                chunk.attempts += 1;
                if let Some(pieces) = split_batch(&mut state, &chunk) {
                    for piece in pieces.into_iter().rev() {
                        state.slots[index].stats.retried_chunks += 1;
                        state.queue.push_front(piece);
                    }
                    continue;
                }
            } else {
                chunk.suspect = true;
            }
            if chunk.attempts >= self.settings.max_retries || stopping {
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
            slot.stats.restarts += 1;
        }
        drop(state);
        self.watch.notify_all();
        for (delivery, outcome) in failed {
            self.deliver(delivery, outcome);
        }
        self.changed.notify_all();
    }
}
