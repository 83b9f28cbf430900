//! Starting workers, and the watchdog that starts replacements, gives up on workers that
//! fail to start, and kills workers that hold a chunk past the task timeout.

use std::{
    ffi::OsString,
    io::Write,
    os::unix::process::ExitStatusExt,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use corepool_worker::serve::{INDEX_ENV, NAME_ENV, PARENT_ENV};

use super::{Shared, state::SlotState};
use crate::pool::{
    PoolError,
    error::with_causes,
    platform::{Child, spawn_dying_with_this_process},
    transport::{Launch, Transport},
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
    /// Starts (or restarts) the worker in slot `index`, with what the engine adds to reach
    /// it (see [`Transport::launch`]); the engine's first line for it goes through a pipe
    /// only the child can read, never the command line. If it cannot be sent, the child
    /// exits and the watchdog counts a failed start. An engine whose workers run already
    /// starts nothing: the slot waits for its worker to join.
    ///
    /// Only the watchdog thread calls this, or the process's main thread for the first
    /// workers: Linux delivers the workers' parent-death signal when the *thread* that
    /// started them exits, so that thread must live as long as the pool.
    pub(super) fn spawn_worker(&self, index: usize) -> Result<(), PoolError> {
        let name = format!("{}-w{index}", self.settings.worker_name_prefix);
        let mut env: Vec<(OsString, OsString)> = vec![
            (NAME_ENV.into(), name.clone().into()),
            (INDEX_ENV.into(), index.to_string().into()),
            (PARENT_ENV.into(), std::process::id().to_string().into()),
        ];
        env.extend(self.settings.env.iter().map(|(key, value)| (key.into(), value.into())));
        let spawn_error = |error| PoolError::Spawn { index, program: self.settings.program.clone(), error };
        let (ticket, child, line) = match self.engine.launch(index, &mut env).map_err(spawn_error)? {
            Launch::Process { ticket, stdin } => {
                let started =
                    spawn_dying_with_this_process(&self.settings.program, &name, &env).map_err(spawn_error)?;
                (ticket, Some(started), stdin)
            }
            Launch::Running { ticket } => (ticket, None, Vec::new()),
        };
        let (child, stdin) = child.unzip();
        let mut state = self.lock();
        if state.stopping {
            // The pool stopped while this worker was starting: it must not outlive it.
            drop(state);
            if let Some(mut child) = child {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(PoolError::Terminated);
        }
        // The slot must know the child before the child can prove itself: it cannot until
        // it has its credentials, which it gets below.
        let slot = &mut state.slots[index];
        slot.generation += 1;
        slot.state = SlotState::Starting;
        // A worker that runs already tells its process id as it joins.
        slot.pid = child.as_ref().map_or(0, Child::id);
        slot.child = child;
        slot.ticket = Some(ticket);
        slot.since = Instant::now();
        slot.sent = 0;
        slot.kill_reason = None;
        drop(state);
        // At once: the pipe holds the line until the child, still loading, reads it.
        if let Some(stdin) = stdin {
            let _ = (&stdin).write_all(&line);
        }
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
            if self.acceptor_wanted.swap(false, Ordering::SeqCst) {
                let shared = Arc::clone(&self);
                let started =
                    std::thread::Builder::new().name("corepool-accept".into()).spawn(move || shared.accept_loop());
                if let Err(error) = started {
                    drop(state);
                    self.break_pool(format!("cannot start the acceptor thread: {error}"));
                    return;
                }
            }
            let mut to_start = Vec::new();
            let mut give_up = None;
            let mut init_forgotten = false;
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
                        if exited.is_some_and(|status| self.init_forgotten(index, status)) {
                            // Its program would do the same again in a replacement.
                            slot.state = SlotState::Gone;
                            init_forgotten = true;
                            give_up = Some(PoolError::InsideWorker.to_string());
                        } else if let Some(message) = exited.and_then(|status| self.initializer_failure(index, status))
                        {
                            // It would fail again in a replacement: the pool cannot start.
                            slot.state = SlotState::Gone;
                            give_up = Some(format!("worker {index}'s initializer failed: {message}"));
                        } else if slot.start_failures > self.settings.max_retries {
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
                    SlotState::Ready if slot.retiring => {
                        // Told to stop with nothing in flight: one that lingers is killed.
                        if slot.kill_reason.is_none() && slot.since.elapsed() > self.settings.start_timeout {
                            slot.kill_reason = Some("did not stop when told to".into());
                            if let Some(child) = slot.child.as_mut() {
                                let _ = child.kill();
                            }
                        }
                    }
                    SlotState::Ready => {
                        let Some(limit) = self.settings.task_timeout else { continue };
                        if slot.in_flight > 0 && slot.kill_reason.is_none() && slot.last_progress.elapsed() > limit {
                            let who = self.engine.describe(index).map_or_else(String::new, |who| who + " ");
                            slot.kill_reason = Some(format!("{who}did not answer within {limit:?}"));
                            // The reader thread sees the connection close and handles the loss.
                            match slot.child.as_mut() {
                                Some(child) => drop(child.kill()),
                                None => self.engine.cut_off(index),
                            }
                        }
                    }
                    SlotState::Gone => {}
                }
            }
            // For the pool's start, which then fails with the error its own program would get.
            state.init_forgotten |= init_forgotten;
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
                self.engine.sweep_leftovers();
            }
            state = self.lock();
            if to_start.is_empty() && !state.stopping {
                state = self.watch.wait_timeout(state, tick);
            }
        }
    }

    /// Whether worker `index` exited because its program built a pool instead of serving
    /// (its `main` does not call `corepool::init()`).
    fn init_forgotten(&self, index: usize, status: std::process::ExitStatus) -> bool {
        if status.code() != Some(i32::from(corepool_worker::EXIT_INIT_FORGOTTEN)) {
            return false;
        }
        // The note tells this exit from a program's own exit with the same code.
        let Some(folder) = self.socket_dir() else { return false };
        std::fs::remove_file(corepool_worker::initializer_failure_file(&folder, index as u32)).is_ok()
    }

    /// The message of worker `index`'s failed initializer, if that is how it exited.
    fn initializer_failure(&self, index: usize, status: std::process::ExitStatus) -> Option<String> {
        if status.code() != Some(i32::from(corepool_worker::EXIT_INITIALIZER_FAILED)) {
            return None;
        }
        let lost = || "(its message was lost)".to_owned();
        let Some(folder) = self.socket_dir() else { return Some(lost()) };
        let file = corepool_worker::initializer_failure_file(&folder, index as u32);
        let message = std::fs::read_to_string(&file).unwrap_or_else(|_| lost());
        let _ = std::fs::remove_file(file);
        Some(message)
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
