//! Admission: accepting connections, turning away peers this pool did not start, and the
//! handshake through which a started worker proves itself and joins its slot.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use corepool_protocol::{
    handshake::{coordinator_handshake, refuse},
    transport::{Link, Listener},
};

use super::{Shared, dispatch::dispatch, outbox::Outbox, state::SlotState};
use crate::pool::{
    PoolError,
    transport::{Receiver, socket_connection},
};

/// A worker just admitted: its slot, its generation, the reading half of its connection
/// and the outbox of the writing half.
pub(super) type Admitted = (usize, u64, Receiver, Arc<Outbox>);

impl Shared {
    /// Admits workers from `listener` on this thread until every slot has one. Workers
    /// that die or hang while starting are replaced by the watchdog; this fails once a slot
    /// has failed to start more than `max_retries` times in a row, or when the start
    /// timeout runs out. Admitting here, rather than on the acceptor thread that takes
    /// over afterwards, spares each first worker the wait for two other threads to be
    /// scheduled on cores that are busy loading workers.
    pub(crate) fn admit_until_ready(self: &Arc<Self>, listener: &Listener) -> Result<(), PoolError> {
        let deadline = Instant::now() + self.settings.start_timeout;
        loop {
            {
                let state = self.lock();
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
            if listener.wait_for_connection(wait).map_err(PoolError::Socket)?
                && let Ok(link) = listener.accept()
                && let Some(admitted) = self.admit(link)
            {
                self.start_connection_thread(move |shared| shared.serve_connection(admitted));
            }
        }
    }

    /// Has the watchdog start the acceptor on `listener` (see [`accept_loop`](Self::accept_loop)): the pool's
    /// start then does not wait for a thread that only replacements need.
    pub(crate) fn hand_over_listener(&self, listener: Listener) {
        // Under the state's lock, which the watchdog holds from its look at the listener
        // to its wait, so that the wake-up cannot fall in between.
        let state = self.lock();
        *self.listener_for_acceptor.lock().unwrap_or_else(|e| e.into_inner()) = Some(listener);
        drop(state);
        self.watch.notify_all();
    }

    /// Accepts connections until the pool stops: the replacements of workers that died,
    /// once the pool has started. Each gets a thread that authenticates the peer and, if it
    /// is the worker its slot waits for, goes on to read its answers.
    pub(crate) fn accept_loop(self: Arc<Self>, listener: Listener) {
        loop {
            let link = listener.accept();
            if self.lock().stopping {
                return;
            }
            let Ok(link) = link else { continue };
            self.start_connection_thread(move |shared| {
                if let Some(admitted) = shared.admit(link) {
                    shared.serve_connection(admitted);
                }
            });
        }
    }

    /// Admits the peer on `link` if it is the worker its slot waits for.
    pub(super) fn admit(&self, link: Link) -> Option<Admitted> {
        let peer_pid = link.peer_pid();
        // Only a process this pool started and waits for is heard at all; anyone else is
        // turned away before a byte is read, so that no stranger can hold up a start.
        let (expected, stopping) = {
            let state = self.lock();
            ((0..state.slots.len()).any(|index| state.starting(index, peer_pid).is_some()), state.stopping)
        };
        let mut generation = None;
        let hello = {
            let (mut reader, mut writer) = link.halves();
            // A stopping pool hangs up on its workers rather than refuse them, which they
            // would report: a worker that finds its coordinator gone exits without a word.
            if stopping {
                return None;
            }
            if !expected {
                refuse(&mut writer, "not a worker this pool started");
                self.lock().rejected_peers += 1;
                return None;
            }
            // Our own child, but it must not hold this thread for ever either.
            let _ = link.set_read_timeout(Some(Duration::from_secs(5)));
            coordinator_handshake(&mut reader, &mut writer, &self.secret, |hello| {
                let state = self.lock();
                let index = hello.worker_index as usize;
                // Its slot is no longer starting if the pool began to stop meanwhile: the
                // worker still proves itself, then is hung up on (below), not refused.
                let slot = match state.stopping {
                    true => state.slots.get(index).filter(|slot| Some(slot.pid) == peer_pid),
                    false => state.starting(index, peer_pid),
                };
                let slot = slot.filter(|slot| slot.pid == hello.pid)?;
                generation = Some(slot.generation);
                slot.challenge
            })
        };
        let _ = link.set_read_timeout(None);
        let mut state = self.lock();
        let admitted = hello.ok().map(|hello| hello.worker_index as usize).filter(|&index| {
            // The slot may have moved on while the proof was checked (its worker timed out).
            generation.is_some() && state.starting(index, peer_pid).map(|slot| slot.generation) == generation
        });
        let Some(index) = admitted.filter(|_| !state.stopping) else {
            state.rejected_peers += 1;
            return None;
        };
        let generation = state.slots[index].generation;
        let (reader, writer) = socket_connection(link);
        let outbox = Outbox::new(writer);
        let slot = &mut state.slots[index];
        slot.state = SlotState::Ready;
        slot.outbox = Some(Arc::clone(&outbox));
        slot.start_failures = 0;
        slot.since = Instant::now();
        dispatch(&mut state, self.settings.chunks_in_flight, None);
        drop(state);
        self.changed.notify_all();
        Some((index, generation, reader, outbox))
    }
}
