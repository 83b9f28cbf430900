//! How a finished chunk reaches whoever waits for it: the [`Delivery`] a job registers
//! when it opens, the batch of `apply_async` calls (the one delivery the supervisor makes
//! itself), and the callback thread that runs the user's code.

use std::{
    sync::{
        Arc, Mutex,
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

/// Where a job's outcomes go: registered with the supervisor when the job opens, and the
/// one thing the supervisor knows of how results reach a caller. Its methods run on the
/// thread that received the outcome (a worker's reader, a caller reading its own answer,
/// or a thread that saw a worker die, the pool break or stop): they must not block, and
/// run the user's code only through [`PoolSide::run_callback`].
pub(crate) trait Delivery: Send + Sync {
    /// Takes one outcome of the job: a chunk's answer, or why the chunk failed.
    fn take(&self, outcome: Outcome, pool: &dyn PoolSide);

    /// Ends the job with `error`: the pool stopped before the job was done.
    fn stop(&self, error: PoolError, pool: &dyn PoolSide);

    /// The batch of one-item calls this is, if it is one: its one outcome ends its job,
    /// and a batch that took its worker down is split into its calls.
    fn as_batch(&self) -> Option<&Batch> {
        None
    }
}

/// What a [`Delivery`] may ask of its pool.
pub(crate) trait PoolSide {
    /// Runs `decode`, adding its time to the pool's decoding meter (see
    /// [`decoding`](Self::decoding), the form to call).
    fn timed_decoding(&self, decode: &mut dyn FnMut());

    /// Runs `job`, which runs the user's code, on the pool's callback thread.
    fn run_callback(&self, job: Job);

    /// Forgets job `job`, which has all it needs: its queued chunks are dropped and late
    /// answers ignored.
    fn close_job(&self, job: u64);
}

impl dyn PoolSide + '_ {
    /// Runs `decode`, timed as decoding.
    pub(crate) fn decoding<R>(&self, decode: impl FnOnce() -> R) -> R {
        let (mut decode, mut decoded) = (Some(decode), None);
        self.timed_decoding(&mut || decoded = decode.take().map(|decode| decode()));
        decoded.expect("timed_decoding runs its work once")
    }
}

impl PoolSide for Shared {
    fn timed_decoding(&self, decode: &mut dyn FnMut()) {
        self.meters.decoding(decode);
    }

    fn run_callback(&self, job: Job) {
        Shared::run_callback(self, job);
    }

    fn close_job(&self, job: u64) {
        Shared::close_job(self, job);
    }
}

/// A batch of one-item calls (`apply_async`) that went out as one chunk: its one outcome
/// holds an answer for each call, handed to each on the pool's callback thread.
pub(crate) struct Batch {
    /// Taken by the one outcome, or by a split.
    calls: Mutex<Vec<ItemCompletion>>,
}

impl Batch {
    /// A batch of `calls`, in the order of their answers.
    pub(crate) fn new(calls: Vec<ItemCompletion>) -> Arc<Self> {
        Arc::new(Self { calls: Mutex::new(calls) })
    }

    /// Takes the calls out, to go again one by one.
    pub(super) fn take_calls(&self) -> Vec<ItemCompletion> {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn finish(&self, result: Result<Payload, PoolError>, pool: &dyn PoolSide) {
        let calls = self.take_calls();
        if !calls.is_empty() {
            pool.run_callback(Box::new(move || complete_batch(result, calls)));
        }
    }
}

impl Delivery for Batch {
    fn take(&self, outcome: Outcome, pool: &dyn PoolSide) {
        self.finish(outcome.result, pool);
    }

    fn stop(&self, error: PoolError, pool: &dyn PoolSide) {
        self.finish(Err(error), pool);
    }

    fn as_batch(&self) -> Option<&Batch> {
        Some(self)
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
                // A job that panics must not take the callbacks queued after it down with it.
                .spawn(move || {
                    receiver.into_iter().for_each(|callback| {
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback));
                    })
                });
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
fn complete_batch(result: Result<Payload, PoolError>, completions: Vec<ItemCompletion>) {
    match result {
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
    /// Hands `outcome` to its job's delivery (taken under the lock with
    /// [`State::take_delivery`](super::state::State::take_delivery), used here without it);
    /// none if the job is over.
    pub(super) fn deliver(&self, delivery: Option<Arc<dyn Delivery>>, outcome: Outcome) {
        if let Some(delivery) = delivery {
            delivery.take(outcome, self);
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

/// A pool side for deliveries tested without a pool.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use super::{Job, PoolSide};

    /// Runs callbacks at once, on the calling thread, and lists the jobs closed.
    #[derive(Default)]
    pub(crate) struct FakePool {
        pub(crate) decodings: AtomicUsize,
        pub(crate) closed: Mutex<Vec<u64>>,
        pub(crate) callbacks: AtomicUsize,
    }

    impl PoolSide for FakePool {
        fn timed_decoding(&self, decode: &mut dyn FnMut()) {
            self.decodings.fetch_add(1, Ordering::SeqCst);
            decode();
        }

        fn run_callback(&self, job: Job) {
            self.callbacks.fetch_add(1, Ordering::SeqCst);
            job();
        }

        fn close_job(&self, job: u64) {
            self.closed.lock().unwrap().push(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use corepool_protocol::{FailureKind, TaskFailure, batch};

    use super::{testing::FakePool, *};

    /// A call that notes the answer it finished with.
    #[derive(Default)]
    struct Noted(Mutex<Option<Result<Vec<u8>, String>>>);

    impl ItemCall for Noted {
        fn finish(&self, answer: Result<&[u8], ItemError>) {
            let noted = match answer {
                Ok(bytes) => Ok(bytes.to_vec()),
                Err(ItemError::Failed(failure)) => Err(format!("failed: {}", failure.message)),
                Err(ItemError::Pool(error)) => Err(format!("pool: {error}")),
            };
            *self.0.lock().unwrap() = Some(noted);
        }
    }

    fn noted(calls: &[Arc<Noted>]) -> Vec<Option<Result<Vec<u8>, String>>> {
        calls.iter().map(|call| call.0.lock().unwrap().clone()).collect()
    }

    fn batch_of(calls: &[Arc<Noted>]) -> Arc<Batch> {
        Batch::new(calls.iter().map(|call| Arc::clone(call) as ItemCompletion).collect())
    }

    fn outcome(result: Result<Payload, PoolError>) -> Outcome {
        Outcome { id: TaskId { job: 7, chunk: 0, first_row: 0 }, rows: 3, result }
    }

    #[test]
    fn each_call_of_a_batch_gets_its_own_answer_on_the_callback_thread() {
        let pool = FakePool::default();
        let calls: Vec<Arc<Noted>> = (0..3).map(|_| Arc::default()).collect();
        let batch = batch_of(&calls);
        let mut answers = Vec::new();
        batch::push_answer(&mut answers, |out| {
            out.extend_from_slice(&[1, 2]);
            Ok(())
        })
        .unwrap();
        let failure = TaskFailure { kind: FailureKind::Error, message: "bad row".into(), location: None };
        batch::push_answer(&mut answers, |_| Err(failure)).unwrap();
        batch.take(outcome(Ok(Payload::from_bytes(answers))), &pool);
        assert_eq!(pool.callbacks.load(Ordering::SeqCst), 1, "one callback job for the whole batch");
        let [first, second, third] = noted(&calls).try_into().unwrap();
        assert_eq!(first, Some(Ok(vec![1, 2])));
        assert!(second.unwrap().unwrap_err().contains("bad row"));
        assert!(third.unwrap().unwrap_err().contains("missing or malformed"), "the third has no answer");

        batch.take(outcome(Ok(Payload::from_bytes(Vec::new()))), &pool);
        assert_eq!(pool.callbacks.load(Ordering::SeqCst), 1, "a batch finishes once");
    }

    #[test]
    fn a_failed_or_stopped_batch_fails_every_call() {
        let pool = FakePool::default();
        let calls: Vec<Arc<Noted>> = (0..2).map(|_| Arc::default()).collect();
        batch_of(&calls).take(outcome(Err(PoolError::Broken("gone".into()))), &pool);
        assert!(noted(&calls).into_iter().all(|call| call.unwrap().unwrap_err().contains("gone")));

        let stopped: Vec<Arc<Noted>> = (0..2).map(|_| Arc::default()).collect();
        batch_of(&stopped).stop(PoolError::Terminated, &pool);
        assert!(noted(&stopped).into_iter().all(|call| call.is_some_and(|call| call.is_err())));
    }

    #[test]
    fn a_split_batch_gives_its_calls_back_and_finishes_no_one() {
        let pool = FakePool::default();
        let calls: Vec<Arc<Noted>> = (0..2).map(|_| Arc::default()).collect();
        let batch = batch_of(&calls);
        assert!(batch.as_batch().is_some());
        assert_eq!(batch.take_calls().len(), 2);
        batch.stop(PoolError::Terminated, &pool);
        assert_eq!(pool.callbacks.load(Ordering::SeqCst), 0);
        assert_eq!(noted(&calls), [None, None]);
    }
}
