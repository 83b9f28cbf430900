//! Admission: taking the engine's arrivals, turning away peers this pool did not start,
//! and the handshake through which a started worker proves itself and joins its slot.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use super::{Shared, dispatch::dispatch, outbox::Outbox, state::SlotState};
use crate::pool::{
    PoolError,
    transport::{Arrival, Joined, Receiver, Transport, Vouched},
};

/// A worker just admitted: its slot, its generation, the reading half of its connection
/// and the outbox of the writing half.
pub(super) type Admitted = (usize, u64, Receiver, Arc<Outbox>);

impl Shared {
    /// Admits workers on this thread until every slot has one. Workers that die or hang
    /// while starting are replaced by the watchdog; this fails once a slot has failed to
    /// start more than `max_retries` times in a row, or when the start timeout runs out.
    /// Admitting here, rather than on the acceptor thread that takes over afterwards,
    /// spares each first worker the wait for two other threads to be scheduled on cores
    /// that are busy loading workers.
    pub(crate) fn admit_until_ready(self: &Arc<Self>) -> Result<(), PoolError> {
        let deadline = Instant::now() + self.settings.start_timeout;
        loop {
            {
                let state = self.lock();
                if state.init_forgotten {
                    return Err(PoolError::InsideWorker);
                }
                if let Some(reason) = &state.broken {
                    return Err(PoolError::Broken(reason.clone()));
                }
                if state.slots.iter().all(|slot| slot.state == SlotState::Ready) {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    let index = state.slots.iter().position(|slot| slot.state != SlotState::Ready).unwrap_or(0);
                    return Err(PoolError::StartFailed {
                        index,
                        reason: format!("it did not join within {:?}", self.settings.start_timeout),
                    });
                }
            }
            // Short waits, so that a pool broken by failed starts is noticed soon.
            let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(10));
            if let Some(arrival) = self.engine.next_arrival(Some(wait)).map_err(PoolError::Socket)?
                && let Some(admitted) = self.admit(arrival)
            {
                self.start_connection_thread(move |shared| shared.serve_connection(admitted));
            }
        }
    }

    /// Has the watchdog start the acceptor (see [`accept_loop`](Self::accept_loop)): the
    /// pool's start then does not wait for a thread that only replacements need.
    pub(crate) fn start_acceptor_later(&self) {
        // Under the state's lock, which the watchdog holds from its look at the flag to
        // its wait, so that the wake-up cannot fall in between.
        let state = self.lock();
        self.acceptor_wanted.store(true, Ordering::SeqCst);
        drop(state);
        self.watch.notify_all();
    }

    /// Takes arrivals until the pool stops: the replacements of workers that died, once
    /// the pool has started. Each gets a thread that admits the peer and, if it is the
    /// worker its slot waits for, goes on to read its answers.
    pub(crate) fn accept_loop(self: Arc<Self>) {
        loop {
            let arrival = self.engine.next_arrival(None);
            if self.lock().stopping {
                return;
            }
            let Ok(Some(arrival)) = arrival else { continue };
            self.start_connection_thread(move |shared| {
                if let Some(admitted) = shared.admit(arrival) {
                    shared.serve_connection(admitted);
                }
            });
        }
    }

    /// Admits the peer `arrival` if it is the worker its slot waits for.
    pub(super) fn admit(&self, arrival: Arrival) -> Option<Admitted> {
        let peer = self.engine.vouch(&arrival);
        // Only a process this pool started and waits for is heard at all; anyone else is
        // turned away before a byte is read, so that no stranger can hold up a start.
        let (expected, stopping) = {
            let state = self.lock();
            (state.awaits(peer), state.stopping)
        };
        // A stopping pool hangs up on its workers rather than refuse them, which they
        // would report: a worker that finds its coordinator gone exits without a word.
        if stopping {
            return None;
        }
        if !expected {
            self.engine.refuse(&arrival, "not a worker this pool started");
            self.lock().rejected_peers += 1;
            // Hung up on only now, which leaves the peer time to read the refusal.
            drop(arrival);
            return None;
        }
        let mut generation = None;
        let joined = self.engine.admit(arrival, |claim| {
            let state = self.lock();
            // Its slot is no longer starting if the pool began to stop meanwhile: the
            // worker still proves itself, then is hung up on (below), not refused.
            let slot = match state.stopping {
                true => state.slots.get(claim.index).filter(|slot| slot.is(claim.index, peer)),
                false => state.starting(claim.index, peer),
            };
            // A worker the pool started has told its process id already; one that ran
            // already tells it now.
            let slot = slot.filter(|slot| slot.pid == claim.pid || slot.child.is_none())?;
            generation = Some(slot.generation);
            slot.ticket
        });
        if let (Err(reason), Vouched::Slot(_)) = (&joined, peer) {
            // A member of the job the engine vouched for, which no replacement can follow
            // (an MPI rank of another protocol version): the pool cannot start, and says why.
            self.break_pool(format!("cannot admit {reason}"));
            return None;
        }
        // Asked before the lock is taken: a local engine asks the kernel.
        let host = joined.as_ref().map_or_else(|_| String::new(), |joined| self.engine.host(joined.claim.index));
        let mut state = self.lock();
        let admitted = joined.ok().filter(|Joined { claim, .. }| {
            // The slot may have moved on while the proof was checked (its worker timed out).
            generation.is_some() && state.starting(claim.index, peer).map(|slot| slot.generation) == generation
        });
        let Some(Joined { claim, receiver, sender }) = admitted.filter(|_| !state.stopping) else {
            state.rejected_peers += 1;
            return None;
        };
        let index = claim.index;
        let generation = state.slots[index].generation;
        let outbox = Outbox::new(sender);
        let slot = &mut state.slots[index];
        slot.state = SlotState::Ready;
        slot.pid = claim.pid;
        slot.stats.host = host;
        slot.outbox = Some(Arc::clone(&outbox));
        slot.start_failures = 0;
        slot.since = Instant::now();
        dispatch(&mut state, self.settings.chunks_in_flight, None);
        drop(state);
        self.changed.notify_all();
        Some((index, generation, receiver, outbox))
    }
}
