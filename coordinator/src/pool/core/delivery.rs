//! How a finished chunk reaches whoever waits for it: the outcome, the job's sink, and
//! the callback thread that answers `apply_async` calls.

use std::{
    sync::{
        Arc,
        mpsc::{self, Sender},
    },
    thread::JoinHandle,
};

use corepool_protocol::{TaskId, batch};

use super::Shared;
use crate::pool::{PoolError, error::with_causes};

/// What a finished chunk delivers to its job.
pub(crate) struct Outcome {
    pub id: TaskId,
    pub rows: usize,
    pub result: Result<Payload, PoolError>,
}

/// Where a job's outcomes go.
pub(crate) enum Sink {
    /// To a gatherer that takes each outcome on the thread that received it: a channel
    /// read by the caller that submitted the job ([`Sink::channel`]), or a result that
    /// fills itself.
    Gather(Arc<dyn Gatherer>),
    /// To the items of a batch of one-item calls (`apply_async`), each answered on the
    /// pool's callback thread. The batch's one outcome ends the job.
    Batch(Vec<ItemCompletion>),
}

impl Sink {
    /// To a channel, read by the caller that submitted the job.
    pub(crate) fn channel(sender: Sender<Outcome>) -> Self {
        Self::Gather(Arc::new(sender))
    }
}

/// Takes a job's outcomes as they arrive, on the thread that received each (a worker's
/// reader, or one stopping the pool): it must not block, and must not run a user's code.
pub(crate) trait Gatherer: Send + Sync {
    /// Takes one outcome of the job, or one for every job (`id.job` is another) when the
    /// pool stops them all.
    fn take(&self, outcome: Outcome);
}

impl Gatherer for Sender<Outcome> {
    fn take(&self, outcome: Outcome) {
        // A closed channel means the caller stopped listening: nothing to do.
        let _ = self.send(outcome);
    }
}

/// Why one item of a batch got no outputs.
pub(crate) enum ItemError {
    /// Its task failed, and the worker said why.
    Failed(corepool_protocol::TaskFailure),
    /// The pool could not run it.
    Pool(PoolError),
}

/// One call of a batch, which finishes itself (on the callback thread) with its answer:
/// its encoded outputs, or why there are none.
pub(crate) trait ItemCall: Send + Sync {
    /// Decodes the answer, runs the call's callback and makes its result available.
    fn finish(&self, answer: Result<&[u8], ItemError>);
}

/// A batch's hold on one of its calls.
pub(crate) type ItemCompletion = Arc<dyn ItemCall>;

/// A worker's answer: the frame it came in, and where its payload starts, handed on
/// without copying it.
pub(crate) struct Payload {
    pub(super) frame: Vec<u8>,
    pub(super) start: usize,
}

#[cfg(test)]
impl Payload {
    /// A payload that is the whole of `bytes`.
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Self {
        Self { frame: bytes, start: 0 }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.frame[self.start..]
    }
}

/// A piece of work for the callback thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The thread that runs `apply_async` callbacks, one at a time, in the order their results
/// arrive (as Python's result-handler thread does). It starts with the first callback, so
/// that pools that never call `apply_async` neither start nor join it.
#[derive(Default)]
pub(crate) struct CallbackRunner {
    pub(super) sender: Option<Sender<Job>>,
    pub(super) thread: Option<JoinHandle<()>>,
    pub(super) stopped: bool,
}

impl CallbackRunner {
    /// Queues `job` for the callback thread; gives it back if the pool has stopped, or
    /// with the error if the thread cannot be started.
    pub(super) fn run(&mut self, job: Job) -> Result<Option<Job>, (Job, std::io::Error)> {
        if self.stopped {
            return Ok(Some(job));
        }
        if self.sender.is_none() {
            let (sender, receiver) = mpsc::channel::<Job>();
            let started = std::thread::Builder::new()
                .name("corepool-callbacks".into())
                .spawn(move || receiver.into_iter().for_each(|callback| callback()));
            match started {
                Ok(thread) => (self.sender, self.thread) = (Some(sender), Some(thread)),
                Err(error) => return Err((job, error)),
            }
        }
        let sender = self.sender.as_ref().expect("started above");
        Ok(sender.send(job).err().map(|refused| refused.0))
    }

    /// Takes no more callbacks; returns the thread, which ends once it has run those queued.
    pub(super) fn stop(&mut self) -> Option<JoinHandle<()>> {
        self.stopped = true;
        self.sender = None;
        self.thread.take()
    }
}

/// Hands each item of a batch its answer, in order.
pub(super) fn complete_batch(outcome: Outcome, completions: Vec<ItemCompletion>) {
    match outcome.result {
        Ok(payload) => {
            let mut answers = batch::answers(&payload);
            for completion in completions {
                completion.finish(match answers.next() {
                    Some(Ok(Ok(outputs))) => Ok(outputs),
                    Some(Ok(Err(failure))) => Err(ItemError::Failed(failure)),
                    _ => Err(ItemError::Pool(PoolError::Protocol("a batch answer is missing or malformed".into()))),
                });
            }
        }
        Err(error) => {
            for completion in completions {
                completion.finish(Err(ItemError::Pool(error.share())));
            }
        }
    }
}

impl Shared {
    /// Hands `outcome` to its job's sink (taken under the lock with
    /// [`State::take_delivery`](super::state::State::take_delivery), used here without it);
    /// none if the job is over.
    pub(super) fn deliver(&self, sink: Option<Sink>, outcome: Outcome) {
        match sink {
            Some(Sink::Gather(gatherer)) => gatherer.take(outcome),
            Some(Sink::Batch(completions)) => {
                self.run_callback(Box::new(move || complete_batch(outcome, completions)));
            }
            None => {}
        }
    }

    /// Runs `job` on the pool's callback thread, or here if the pool has stopped (or
    /// cannot start that thread, which breaks it: its waiters hear why, rather than wait
    /// for ever).
    pub(crate) fn run_callback(&self, job: Job) {
        let refused = self.callbacks.lock().unwrap_or_else(|e| e.into_inner()).run(job);
        match refused {
            Ok(None) => {}
            Ok(Some(job)) => job(),
            Err((job, error)) => {
                self.break_pool(with_causes(&PoolError::Thread(error)));
                job();
            }
        }
    }
}
