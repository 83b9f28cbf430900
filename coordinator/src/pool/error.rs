//! What can go wrong in a pool, as values a caller can match.

use std::{ops::Range, path::PathBuf};

use corepool_protocol::TaskFailure;

/// An error from a [`crate::Pool`].
#[derive(thiserror::Error)]
pub enum PoolError {
    // The I/O errors below are part of their variant's text, and not also its `source()`:
    // a caller that prints the chain of causes would name them twice.
    /// The pool could not set up its private socket directory or listener.
    #[error("cannot set up the pool's socket: {0}")]
    Socket(std::io::Error),
    /// A thread the pool needs could not be started (the system's limit on threads or
    /// processes, or memory).
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    /// This process was started as a pool's worker, yet builds a pool itself: its `main`
    /// does not call [`crate::init`] first, or a task tries to start a pool.
    /// Refused, so that such a program cannot start workers that start workers in turn.
    #[error(
        "this process was started as a corepool worker but builds a pool of its own: call \
         corepool::init() first thing in main (and start no pool inside a task)"
    )]
    InsideWorker,
    /// The pool's settings cannot be used (an initializer's arguments that do not encode).
    #[error("invalid pool settings: {0}")]
    Settings(String),
    /// The worker name prefix given to [`crate::PoolBuilder::worker_name_prefix`] cannot
    /// name a process.
    #[error("worker name prefix {prefix:?}: {reason}")]
    BadWorkerName {
        /// The prefix as given.
        prefix: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A worker process could not be started.
    #[error("cannot start worker {index} ({}): {error}", program.display())]
    Spawn {
        /// The worker's index.
        index: usize,
        /// The program that failed to start.
        program: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A worker did not join the pool in time, or died before joining.
    #[error("worker {index} did not start: {reason}")]
    StartFailed {
        /// The worker's index.
        index: usize,
        /// What happened to it.
        reason: String,
    },
    /// A task failed inside a worker (an error or a panic), which reported it.
    #[error("items {}..{}: {failure}", rows.start, rows.end)]
    Task {
        /// The items of the chunk that failed.
        rows: Range<u64>,
        /// What the worker reported.
        failure: TaskFailure,
    },
    /// A chunk took down its worker too many times.
    #[error("items {}..{}: gave up after {attempts} workers died running them (last: {death})", rows.start, rows.end)]
    WorkerDied {
        /// The items of the chunk.
        rows: Range<u64>,
        /// How many workers died running it.
        attempts: u32,
        /// How the last one died.
        death: String,
    },
    /// A worker was lost (it died, or stopped answering and was given up on) holding
    /// chunks that cannot be run again: under MPI without fault tolerance, a lost rank
    /// takes its chunks with it. Every chunk it held fails with this error, which names
    /// them all.
    #[error("{worker} was lost holding items {}: {reason}", ItemRanges(held))]
    RankLost {
        /// The items of this chunk.
        rows: Range<u64>,
        /// The items of every chunk the worker held, this one's among them, in order.
        held: Vec<Range<u64>>,
        /// Who it was (under MPI: its rank, host and process id).
        worker: String,
        /// How it was lost.
        reason: String,
    },
    /// A worker answered with something that does not fit what it was sent.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An item index past the end of the items.
    #[error("item {index} is out of range: there are {len} items")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// How many items there are.
        len: usize,
    },
    /// The pool cannot go on (workers cannot be started or replaced); outstanding work
    /// failed with this error.
    #[error("the pool cannot go on: {0}")]
    Broken(String),
    /// The pool was closed: it takes no new work.
    #[error("the pool is closed and takes no new work")]
    Closed,
    /// The pool was terminated while this work was outstanding.
    #[error("the pool was terminated")]
    Terminated,
    /// A wait with a time limit ran out.
    #[error("timed out")]
    Timeout,
}

/// The message itself, so that a `main` returning `Result<(), PoolError>` prints it when it
/// fails, not the variant's fields.
impl std::fmt::Debug for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl PoolError {
    /// The same error, for another receiver of it (the items of a batch share their
    /// chunk's fate); an error that carries an I/O error becomes [`PoolError::Broken`] with
    /// its message.
    pub fn share(&self) -> PoolError {
        match self {
            PoolError::Task { rows, failure } => PoolError::Task { rows: rows.clone(), failure: failure.clone() },
            PoolError::WorkerDied { rows, attempts, death } => {
                PoolError::WorkerDied { rows: rows.clone(), attempts: *attempts, death: death.clone() }
            }
            PoolError::RankLost { rows, held, worker, reason } => PoolError::RankLost {
                rows: rows.clone(),
                held: held.clone(),
                worker: worker.clone(),
                reason: reason.clone(),
            },
            PoolError::StartFailed { index, reason } => {
                PoolError::StartFailed { index: *index, reason: reason.clone() }
            }
            PoolError::IndexOutOfRange { index, len } => PoolError::IndexOutOfRange { index: *index, len: *len },
            PoolError::Broken(reason) => PoolError::Broken(reason.clone()),
            PoolError::Protocol(text) => PoolError::Protocol(text.clone()),
            PoolError::Closed => PoolError::Closed,
            PoolError::Terminated => PoolError::Terminated,
            PoolError::Timeout => PoolError::Timeout,
            other => PoolError::Broken(with_causes(other)),
        }
    }
}

/// Ranges of items as one list (`0..10, 20..30`), each run of touching ranges as one;
/// `no items` for none.
pub(crate) struct ItemRanges<'a>(pub(crate) &'a [Range<u64>]);

impl std::fmt::Display for ItemRanges<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sorted = self.0.to_vec();
        sorted.sort_by_key(|range| (range.start, range.end));
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
        for range in sorted {
            match merged.last_mut() {
                Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                _ => merged.push(range),
            }
        }
        if merged.is_empty() {
            return f.write_str("no items");
        }
        for (at, range) in merged.iter().enumerate() {
            let comma = if at == 0 { "" } else { ", " };
            write!(f, "{comma}{}..{}", range.start, range.end)?;
        }
        Ok(())
    }
}

/// `error` and each of its causes after a colon, in one line: how the chain prints.
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_rank_names_every_item_it_held_in_one_line() {
        let error = PoolError::RankLost {
            rows: 7000..8000,
            held: vec![7000..8000, 5000..6000, 6000..7000, 9000..9500],
            worker: "rank 2 on host node1 (pid 4711)".into(),
            reason: "did not answer within 2s".into(),
        };
        let line =
            "rank 2 on host node1 (pid 4711) was lost holding items 5000..8000, 9000..9500: did not answer within 2s";
        assert_eq!(error.to_string(), line);
        assert_eq!(error.share().to_string(), line);
        assert_eq!(ItemRanges(&[]).to_string(), "no items");
        assert_eq!(ItemRanges(std::slice::from_ref(&(3..4))).to_string(), "3..4");
    }

    /// Every cause once, whether printed alone (`{}`) or with its chain (`{:#}` of anyhow).
    #[test]
    fn io_causes_are_named_once() {
        let again = || std::io::Error::from_raw_os_error(libc::EAGAIN);
        let errors = [
            PoolError::Thread(again()),
            PoolError::Socket(again()),
            PoolError::Spawn { index: 1, program: "/bin/w".into(), error: again() },
        ];
        for error in errors {
            let line = format!("{:#}", anyhow::Error::new(error.share()));
            assert_eq!(line.matches("os error 11").count(), 1, "{line}");
            assert_eq!(error.to_string().matches("os error 11").count(), 1, "{error}");
            let line = format!("{:#}", anyhow::Error::new(error).context("starting the pool"));
            assert_eq!(line.matches("os error 11").count(), 1, "{line}");
        }
        let thread = PoolError::Thread(again());
        assert_eq!(with_causes(&thread), format!("cannot start a thread: {}", again()));
        let spawn = PoolError::Spawn { index: 1, program: "/bin/w".into(), error: again() };
        assert_eq!(with_causes(&spawn), format!("cannot start worker 1 (/bin/w): {}", again()));
    }
}
