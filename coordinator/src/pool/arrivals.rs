//! The deliveries a caller waits on: a job's outcomes kept in the order the caller takes
//! them, in chunk order ([`InTurn`]: `map`, `imap`) or as they arrive ([`AsArrived`]:
//! `imap_unordered`, `apply`), undecoded for the caller to decode in place, or decoded on
//! arrival for a streamed job (see `stream.rs`).

use std::{
    collections::{BTreeMap, VecDeque},
    marker::PhantomData,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    PoolError,
    core::{Delivery, Outcome, PoolSide, Shared},
};

/// What an inbox keeps of one outcome, made on the thread that received it.
pub(crate) trait Arrival: Send + 'static {
    /// The index of the chunk it answers, in its job.
    fn chunk(&self) -> u64;

    /// Whether it says that its chunk failed.
    fn failed(&self) -> bool;

    /// Made from `outcome`, on the thread that received it.
    fn from_outcome(outcome: Outcome, pool: &dyn PoolSide) -> Self;
}

impl Arrival for Outcome {
    fn chunk(&self) -> u64 {
        self.id.chunk
    }

    fn failed(&self) -> bool {
        self.result.is_err()
    }

    fn from_outcome(outcome: Outcome, _pool: &dyn PoolSide) -> Self {
        outcome
    }
}

/// The order in which a job's arrivals are taken.
pub(crate) trait Order<A>: Send + 'static {
    /// Keeps `arrival` until its turn.
    fn push(&mut self, arrival: A);

    /// The next arrival whose turn it is, if it is in.
    fn pop(&mut self) -> Option<A>;
}

/// Chunk order: a chunk that arrives early waits until those before it are in. A failure
/// waits its turn too (as Python's `imap` raises it in its place), unless the order fails
/// fast: then the first failure comes out at once, for a job that fails whole.
pub(crate) struct InTurn<A> {
    /// The arrival whose turn it is, when it came in its turn: most do, and need no map.
    due: Option<A>,
    early: BTreeMap<u64, A>,
    next: u64,
    fail_fast: bool,
    failure: Option<A>,
}

impl<A> InTurn<A> {
    /// Failures in their turn.
    pub(crate) fn new() -> Self {
        Self { due: None, early: BTreeMap::new(), next: 0, fail_fast: false, failure: None }
    }

    /// The first failure at once.
    pub(crate) fn failing_fast() -> Self {
        Self { fail_fast: true, ..Self::new() }
    }

    /// How many chunks, from the first, have been taken in turn.
    pub(crate) fn taken_in_turn(&self) -> u64 {
        self.next
    }
}

impl<A: Arrival> Order<A> for InTurn<A> {
    fn push(&mut self, arrival: A) {
        if self.fail_fast && arrival.failed() {
            self.failure.get_or_insert(arrival);
        } else if arrival.chunk() == self.next {
            self.due = Some(arrival);
        } else {
            self.early.insert(arrival.chunk(), arrival);
        }
    }

    fn pop(&mut self) -> Option<A> {
        if let Some(failure) = self.failure.take() {
            return Some(failure);
        }
        let arrival = match self.due.take() {
            Some(arrival) => arrival,
            None => self.early.remove(&self.next)?,
        };
        self.next += 1;
        Some(arrival)
    }
}

/// Arrival order.
pub(crate) struct AsArrived<A>(VecDeque<A>);

impl<A> AsArrived<A> {
    pub(crate) fn new() -> Self {
        Self(VecDeque::new())
    }
}

impl<A: Arrival> Order<A> for AsArrived<A> {
    fn push(&mut self, arrival: A) {
        self.0.push_back(arrival);
    }

    fn pop(&mut self) -> Option<A> {
        self.0.pop_front()
    }
}

/// A job's arrivals, waiting in order `Q` for the caller that submitted the job: the
/// delivery of `map`, `imap`, `imap_unordered`, `apply` and the streamed `imap_iter`.
pub(crate) struct Inbox<A, Q> {
    state: Mutex<Waiting<Q>>,
    ready: Condvar,
    /// Arrivals and stops so far, which a polling caller watches without the lock.
    arrived: AtomicU64,
    arrival: PhantomData<fn() -> A>,
}

struct Waiting<Q> {
    order: Q,
    /// Why the job ended before it was done, once the pool has stopped.
    stopped: Option<PoolError>,
    /// The caller sleeps until an arrival wakes it: a wake-up costs a system call, which
    /// an arrival nobody sleeps for should not pay.
    sleeping: bool,
}

impl<A: Arrival, Q: Order<A>> Inbox<A, Q> {
    /// An empty inbox, taking arrivals in `order`.
    pub(crate) fn new(order: Q) -> Arc<Self> {
        let state = Mutex::new(Waiting { order, stopped: None, sleeping: false });
        Arc::new(Self { state, ready: Condvar::new(), arrived: AtomicU64::new(0), arrival: PhantomData })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting<Q>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The arrival whose turn it is, or why the job ended; `None` while neither is in.
    pub(crate) fn try_next(&self) -> Option<Result<A, PoolError>> {
        Self::ready_in(&mut self.lock())
    }

    fn ready_in(waiting: &mut Waiting<Q>) -> Option<Result<A, PoolError>> {
        match waiting.order.pop() {
            Some(arrival) => Some(Ok(arrival)),
            None => waiting.stopped.as_ref().map(|error| Err(error.share())),
        }
    }

    /// The arrival whose turn it is, polled for up to `poll` (sparing a sleep and a
    /// wake-up when it is about to come), then waited for.
    pub(crate) fn next(&self, poll: Duration) -> Result<A, PoolError> {
        if !poll.is_zero() {
            let deadline = Instant::now() + poll;
            loop {
                let seen = self.arrived.load(Ordering::Acquire);
                if let Some(ready) = self.try_next() {
                    return ready;
                }
                while self.arrived.load(Ordering::Acquire) == seen && Instant::now() < deadline {
                    std::hint::spin_loop();
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
        let mut waiting = self.lock();
        loop {
            if let Some(ready) = Self::ready_in(&mut waiting) {
                return ready;
            }
            waiting.sleeping = true;
            waiting = self.ready.wait(waiting).unwrap_or_else(|e| e.into_inner());
            waiting.sleeping = false;
        }
    }

    /// Adds to the inbox under its lock, and wakes the caller if it sleeps (once the lock
    /// is let go, so that the caller does not wake only to wait for it).
    fn add(&self, add: impl FnOnce(&mut Waiting<Q>)) {
        let mut waiting = self.lock();
        add(&mut waiting);
        self.arrived.fetch_add(1, Ordering::Release);
        let sleeping = waiting.sleeping;
        drop(waiting);
        if sleeping {
            self.ready.notify_one();
        }
    }
}

impl<A: Arrival, Q: Order<A>> Delivery for Inbox<A, Q> {
    fn take(&self, outcome: Outcome, pool: &dyn PoolSide) {
        let arrival = A::from_outcome(outcome, pool);
        self.add(|waiting| waiting.order.push(arrival));
    }

    fn stop(&self, error: PoolError, _pool: &dyn PoolSide) {
        self.add(|waiting| {
            waiting.stopped.get_or_insert(error);
        });
    }
}

/// A job's end on the caller's side: the job, and its inbox. Dropping it forgets the job,
/// so late answers are ignored.
pub(crate) struct Receiving<A, Q> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) job: u64,
    inbox: Arc<Inbox<A, Q>>,
    /// Arrivals taken so far.
    taken: u64,
}

impl<A: Arrival, Q: Order<A>> Receiving<A, Q> {
    /// Opens a job of `shared` whose arrivals come in `order`.
    pub(crate) fn open(shared: &Arc<Shared>, order: Q) -> Result<Self, PoolError> {
        let inbox = Inbox::new(order);
        let job = shared.open_job(Arc::clone(&inbox) as Arc<dyn Delivery>)?;
        Ok(Self { shared: Arc::clone(shared), job, inbox, taken: 0 })
    }

    /// How many arrivals were taken.
    pub(crate) fn taken(&self) -> u64 {
        self.taken
    }

    /// The next arrival in turn, if it is in; the error is for the whole job (the pool
    /// was terminated or cannot go on).
    pub(crate) fn try_next(&mut self) -> Option<Result<A, PoolError>> {
        let ready = self.inbox.try_next()?;
        self.taken += u64::from(ready.is_ok());
        Some(ready)
    }

    /// The next arrival in turn, polled for up to `poll`, then waited for.
    pub(crate) fn next(&mut self, poll: Duration) -> Result<A, PoolError> {
        let arrival = self.inbox.next(poll)?;
        self.taken += 1;
        Ok(arrival)
    }
}

impl<A, Q> Drop for Receiving<A, Q> {
    fn drop(&mut self) {
        self.shared.close_job(self.job);
    }
}

#[cfg(test)]
mod tests {
    use corepool_protocol::TaskId;

    use super::*;
    use crate::pool::core::{Payload, testing::FakePool};

    fn answer(chunk: u64) -> Outcome {
        let id = TaskId { job: 3, chunk, first_row: chunk * 10 };
        Outcome { id, rows: 10, result: Ok(Payload::from_bytes(vec![chunk as u8])) }
    }

    fn failure(chunk: u64) -> Outcome {
        let id = TaskId { job: 3, chunk, first_row: chunk * 10 };
        Outcome { id, rows: 10, result: Err(PoolError::Protocol(format!("chunk {chunk} failed"))) }
    }

    /// What the inbox hands out now: chunk indices, and `None` for a failure.
    fn drain<Q: Order<Outcome>>(inbox: &Inbox<Outcome, Q>) -> Vec<Option<u64>> {
        std::iter::from_fn(|| inbox.try_next())
            .map(|next| next.ok().filter(|o| o.result.is_ok()).map(|o| o.id.chunk))
            .collect()
    }

    #[test]
    fn in_turn_hands_out_chunks_in_order_whatever_order_they_arrive_in() {
        let pool = FakePool::default();
        let inbox = Inbox::new(InTurn::new());
        for chunk in [2, 1] {
            inbox.take(answer(chunk), &pool);
        }
        assert!(drain(&inbox).is_empty(), "nothing before chunk 0");
        inbox.take(answer(0), &pool);
        assert_eq!(drain(&inbox), [Some(0), Some(1), Some(2)]);
        inbox.take(answer(4), &pool);
        inbox.take(answer(3), &pool);
        assert_eq!(drain(&inbox), [Some(3), Some(4)]);
    }

    #[test]
    fn a_failure_waits_its_turn_unless_the_order_fails_fast() {
        let pool = FakePool::default();
        let in_place = Inbox::new(InTurn::new());
        let fast = Inbox::new(InTurn::failing_fast());
        for inbox in [&in_place, &fast] {
            inbox.take(answer(1), &pool);
            inbox.take(failure(2), &pool);
        }
        assert!(drain(&in_place).is_empty());
        assert_eq!(drain(&fast), [None], "the failure comes out at once");
        in_place.take(answer(0), &pool);
        assert_eq!(drain(&in_place), [Some(0), Some(1), None]);
    }

    #[test]
    fn as_arrived_hands_out_in_arrival_order() {
        let pool = FakePool::default();
        let inbox = Inbox::new(AsArrived::new());
        for outcome in [answer(2), failure(0), answer(1)] {
            inbox.take(outcome, &pool);
        }
        assert_eq!(drain(&inbox), [Some(2), None, Some(1)]);
    }

    #[test]
    fn a_stop_comes_after_what_already_arrived_and_stays() {
        let pool = FakePool::default();
        let inbox: Arc<Inbox<Outcome, _>> = Inbox::new(InTurn::new());
        inbox.take(answer(0), &pool);
        inbox.take(answer(2), &pool);
        inbox.stop(PoolError::Terminated, &pool);
        assert_eq!(inbox.try_next().map(|next| next.map(|o| o.id.chunk).ok()), Some(Some(0)));
        for _ in 0..2 {
            let stopped = inbox.next(Duration::ZERO).map(|o| o.id.chunk).unwrap_err();
            assert!(matches!(stopped, PoolError::Terminated), "{stopped}");
        }
    }

    #[test]
    fn a_waiting_caller_is_woken_by_an_answer_from_another_thread() {
        let inbox: Arc<Inbox<Outcome, _>> = Inbox::new(AsArrived::new());
        let sender = Arc::clone(&inbox);
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.take(answer(5), &FakePool::default());
        });
        let polled = inbox.next(Duration::from_micros(50)).expect("the answer comes");
        assert_eq!(polled.id.chunk, 5);
        late.join().expect("the sender ends");
    }
}
