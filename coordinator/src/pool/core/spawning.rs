//! Starting workers, and the watchdog that starts replacements, gives up on workers that
//! fail to start, and kills workers that hold a chunk past the task timeout.

use std::{
    ffi::OsString,
    io::Write,
    os::unix::process::ExitStatusExt,
    sync::Arc,
    time::{Duration, Instant},
};

use corepool_protocol::handshake::{Challenge, Credentials};
use corepool_worker::serve::{ENDPOINT_ENV, INDEX_ENV, PARENT_ENV};

use super::{Shared, state::SlotState};
use crate::pool::{
    PoolError,
    error::with_causes,
    platform::{Child, spawn_dying_with_this_process},
};

/// Waits briefly for a worker that closed its connection to exit, then makes sure it is
/// gone, and says how it ended.
pub(super) fn reap(mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_millis(200);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return describe_exit(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            _ => {
                let _ = child.kill();
                return child
                    .wait()
                    .map_or_else(|e| format!("could not be reaped: {e}"), |_| "killed by the pool".into());
            }
        }
    }
}

/// "exited with code 3", "killed by signal 9 (SIGKILL)".
pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with code {code}")
    } else if let Some(signal) = status.signal() {
        let name = match signal {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGINT => " (SIGINT)",
            _ => "",
        };
        format!("killed by signal {signal}{name}")
    } else {
        format!("ended with {status}")
    }
}

impl Shared {
    /// Starts (or restarts) the worker in slot `index`, and hands it the run's secret and
    /// a challenge made for this start, through a pipe only the child can read, never the
    /// command line. If they cannot be sent, the child exits and the watchdog counts a
    /// failed start.
    ///
    /// Only the watchdog thread calls this, or the process's main thread for the first
    /// workers: Linux delivers the workers' parent-death signal when the *thread* that
    /// started them exits, so that thread must live as long as the pool.
    pub(super) fn spawn_worker(&self, index: usize) -> Result<(), PoolError> {
        let challenge = Challenge::generate().map_err(PoolError::Socket)?;
        let mut env: Vec<(OsString, OsString)> = vec![
            (ENDPOINT_ENV.into(), self.endpoint.clone().into()),
            (INDEX_ENV.into(), index.to_string().into()),
            (PARENT_ENV.into(), std::process::id().to_string().into()),
        ];
        env.extend(self.settings.env.iter().map(|(key, value)| (key.into(), value.into())));
        let (mut child, stdin) =
            spawn_dying_with_this_process(&self.settings.program, &format!("corepool-w{index}"), &env)
                .map_err(|error| PoolError::Spawn { index, program: self.settings.program.clone(), error })?;
        let mut state = self.lock();
        if state.stopping {
            // The pool stopped while this worker was starting: it must not outlive it.
            drop(state);
            let _ = child.kill();
            let _ = child.wait();
            return Err(PoolError::Terminated);
        }
        // The slot must know the child before the child can prove itself: it cannot until
        // it has its credentials, which it gets below.
        let slot = &mut state.slots[index];
        slot.generation += 1;
        slot.state = SlotState::Starting;
        slot.pid = child.id();
        slot.child = Some(child);
        slot.challenge = Some(challenge);
        slot.since = Instant::now();
        slot.kill_reason = None;
        drop(state);
        // At once: the pipe holds the line until the child, still loading, reads it.
        let _ = (&stdin).write_all(Credentials { secret: self.secret.clone(), challenge }.to_line().as_bytes());
        Ok(())
    }

    /// The watchdog: starts every worker (first ones and replacements), replaces workers
    /// that die or hang before joining, and kills workers that hold a chunk longer than the
    /// task timeout (their reader thread then reports the loss, and their chunks go to
    /// other workers).
    pub(crate) fn watch_loop(self: Arc<Self>) {
        let tick = Duration::from_millis(10);
        let mut swept = false;
        let mut state = self.lock();
        while !state.stopping && state.broken.is_none() {
            let listener = self.listener_for_acceptor.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(listener) = listener {
                let shared = Arc::clone(&self);
                let started = std::thread::Builder::new()
                    .name("corepool-accept".into())
                    .spawn(move || shared.accept_loop(listener));
                if let Err(error) = started {
                    drop(state);
                    self.break_pool(format!("cannot start the acceptor thread: {error}"));
                    return;
                }
            }
            let mut to_start = Vec::new();
            let mut give_up = None;
            for (index, slot) in state.slots.iter_mut().enumerate() {
                match slot.state {
                    SlotState::Waiting => to_start.push(index),
                    SlotState::Starting => {
                        let exited = slot.child.as_mut().and_then(|child| child.try_wait().ok().flatten());
                        let late = slot.since.elapsed() > self.settings.start_timeout;
                        if exited.is_none() && !late {
                            continue;
                        }
                        let how = match exited {
                            Some(status) => describe_exit(status),
                            None => format!("did not join within {:?}", self.settings.start_timeout),
                        };
                        // It has exited, or is killed now: reaping it cannot wait long.
                        if let Some(mut child) = slot.child.take() {
                            let _ = child.kill();
                            let _ = child.wait();
                        }
                        slot.start_failures += 1;
                        slot.stats.restarts += 1;
                        if slot.start_failures > self.settings.max_retries {
                            slot.state = SlotState::Gone;
                            give_up = Some(format!(
                                "worker {index} failed to start {} times in a row (last: {how})",
                                slot.start_failures
                            ));
                        } else {
                            slot.state = SlotState::Waiting;
                            to_start.push(index);
                        }
                    }
                    SlotState::Ready => {
                        let Some(limit) = self.settings.task_timeout else { continue };
                        if slot.in_flight > 0 && slot.kill_reason.is_none() && slot.last_progress.elapsed() > limit {
                            slot.kill_reason = Some(format!("did not answer within {limit:?}"));
                            // The reader thread sees the connection close and handles the loss.
                            if let Some(child) = slot.child.as_mut() {
                                let _ = child.kill();
                            }
                        }
                    }
                    SlotState::Gone => {}
                }
            }
            drop(state);
            if let Some(reason) = give_up {
                self.break_pool(reason);
                return;
            }
            if !self.start_workers(&to_start) {
                return;
            }
            if !swept {
                swept = true;
                // Others' leftovers lie beside this pool's own directory.
                if let Some(base) = self.endpoint.parent().and_then(std::path::Path::parent) {
                    crate::pool::socket_dir::sweep_dead_runs(base);
                }
            }
            state = self.lock();
            if to_start.is_empty() && !state.stopping {
                state = self.watch.wait_timeout(state, tick);
            }
        }
    }

    /// Starts the first workers on this thread, which must be the process's main thread
    /// (see [`spawn_worker`](Self::spawn_worker)): it spares them the wait for the
    /// supervisor thread to be scheduled. A worker that cannot be started breaks the pool.
    pub(crate) fn start_first_workers_here(&self) {
        let waiting: Vec<usize> = {
            let state = self.lock();
            (0..state.slots.len()).filter(|&index| state.slots[index].state == SlotState::Waiting).collect()
        };
        self.start_workers(&waiting);
    }

    /// Starts the workers of slots `indices`. Returns false, the pool broken or stopping,
    /// if one could not be started.
    pub(super) fn start_workers(&self, indices: &[usize]) -> bool {
        for &index in indices {
            if let Err(error) = self.spawn_worker(index) {
                if !matches!(error, PoolError::Terminated) {
                    self.break_pool(with_causes(&error));
                }
                return false;
            }
        }
        self.changed.notify_all();
        true
    }
}
