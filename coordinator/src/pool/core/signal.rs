//! A condition variable for the supervisor's wake-ups.

use std::{
    sync::{Condvar, MutexGuard},
    time::Duration,
};

/// A condition variable that skips the wake-up system call when nobody waits, which is
/// most of the time: it is signalled on every answer.
#[derive(Default)]
pub(super) struct Signal {
    pub(super) condvar: Condvar,
    pub(super) waiters: std::sync::atomic::AtomicUsize,
}

impl Signal {
    pub(super) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        // Counted while the lock is held, so a notifier that changes the state under the
        // lock afterwards sees the count.
        self.waiters.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = self.condvar.wait(guard).unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        guard
    }

    pub(super) fn wait_timeout<'a, T>(&self, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
        self.waiters.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = self.condvar.wait_timeout(guard, timeout).unwrap_or_else(|e| e.into_inner()).0;
        self.waiters.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        guard
    }

    pub(super) fn notify_all(&self) {
        if self.waiters.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            self.condvar.notify_all();
        }
    }
}
