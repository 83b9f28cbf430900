//! The supervisor: worker processes, their connections, the queue of chunks, and the map
//! of chunks in flight.
//!
//! Each worker connection has a reader thread, which never writes (so two processes
//! writing large frames at each other cannot block for ever), and an [`Outbox`] with a
//! writer thread (so handing out work never waits on a socket; a caller may write its own
//! small frames). While its worker has nothing in flight, the reader thread leaves the
//! connection in the worker's slot, where a blocking one-chunk call may borrow it to read
//! its own answer ([`Shared::enqueue_and_read`]). All bookkeeping lives in one [`State`]
//! under one mutex; nothing slow happens while it is held.

use std::{
    collections::{HashMap, VecDeque},
    io::{BufReader, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        mpsc::{self, Sender},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use corepool_protocol::{
    TaskId, ToCoordinator, ToWorker, batch, codec,
    frame::{MAX_FRAME_LEN, read_frame},
    handshake::{Challenge, Credentials, Secret, coordinator_handshake, refuse},
    transport::{Link, LinkReader, Listener},
};
use corepool_worker::serve::{ENDPOINT_ENV, INDEX_ENV, PARENT_ENV};

use super::{
    PoolError, WorkerStats,
    error::with_causes,
    socket_dir::{SOCKET_NAME, SocketDir},
};
use crate::outgoing::{AsBytes, Outgoing, SharedBytes};

mod observe;
mod outbox;

pub(crate) use self::observe::Meters;
use self::outbox::Outbox;

/// Settings fixed when the pool is built.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub workers: usize,
    pub program: PathBuf,
    pub env: Vec<(String, String)>,
    pub max_retries: u32,
    pub chunks_in_flight: usize,
    pub start_timeout: Duration,
    pub task_timeout: Option<Duration>,
    pub respawn: bool,
    /// How long a blocking one-item call polls for its answer before it sleeps.
    pub answer_poll: Duration,
}

/// What a finished chunk delivers to its job.
pub(crate) struct Outcome {
    pub id: TaskId,
    pub rows: usize,
    pub result: Result<Payload, PoolError>,
}

/// A worker just admitted: its slot, its generation, the reading half of its connection
/// and the outbox of the writing half.
type Admitted = (usize, u64, LinkReader, Arc<Outbox>);

/// Where a job's outcomes go.
pub(crate) enum Sink {
    /// To a channel, read by the caller that submitted the job.
    Channel(Sender<Outcome>),
    /// To the items of a batch of one-item calls (`apply_async`), each answered on the
    /// pool's callback thread.
    Batch(Vec<ItemCompletion>),
    /// To a gatherer that takes each outcome on the thread that received it.
    Gather(Arc<dyn Gatherer>),
}

/// Takes a job's outcomes as they arrive, on the thread that received each (a worker's
/// reader, or one stopping the pool): it must not block, and must not run a user's code.
pub(crate) trait Gatherer: Send + Sync {
    /// Takes one outcome of the job, or one for every job (`id.job` is another) when the
    /// pool stops them all.
    fn take(&self, outcome: Outcome);
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

/// One-item calls gathered to go out as one frame (see [`Shared::submit_one`]).
struct OpenBatch {
    job: u64,
    tasks: Vec<u8>,
    completions: Vec<ItemCompletion>,
}

/// How many buffers of answered batches are kept for new ones.
const SPARE_BATCH_BUFFERS: usize = 4;

/// A batch goes out when a worker has room for it, or when it is this full.
const BATCH_TASKS: usize = 4096;
const BATCH_BYTES: usize = 4 << 20;

/// While calls keep coming, a worker that has just answered waits for the open batch to
/// hold this many before taking it (see [`Shared::gather_batch`]): each batch costs
/// several thread wake-ups, which, at one batch per round trip, would cost more than the
/// calls themselves.
const BATCH_GATHER: usize = 512;

/// How long a worker waits for the open batch to fill: enough for a caller in a loop to
/// add [`BATCH_GATHER`] calls; a caller that has stopped adding waits this much more for
/// its last ones.
const BATCH_GATHER_WAIT: Duration = Duration::from_micros(200);

/// How often a reader thread whose worker has nothing to answer looks whether the worker
/// has closed its connection (died while idle).
const IDLE_READER_CHECK: Duration = Duration::from_millis(50);

/// The receiving side of a worker's connection.
type Reader = BufReader<LinkReader>;

/// A worker's connection, lent by its slot to a caller that reads its own answer (see
/// [`Shared::enqueue_and_read`]).
pub(crate) struct Borrowed {
    index: usize,
    generation: u64,
    reader: Reader,
}

/// A chunk, encoded as a whole frame ready to write.
#[derive(Clone)]
pub(crate) struct Chunk {
    pub id: TaskId,
    pub rows: usize,
    pub frame: Arc<Outgoing>,
    pub attempts: u32,
    /// The chunk was unanswered on a worker that died holding several: it may be the
    /// culprit, so it goes to a worker that holds nothing else.
    pub suspect: bool,
}

struct InFlight {
    chunk: Chunk,
    worker: usize,
    /// Dispatch order: a worker runs its chunks in this order.
    order: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Needs a worker: the watchdog starts one.
    Waiting,
    /// Started, not yet through the handshake.
    Starting,
    /// Joined: takes chunks.
    Ready,
    /// No worker, and none to come (the pool is stopping).
    Gone,
}

struct Slot {
    state: SlotState,
    generation: u64,
    child: Option<Child>,
    /// The challenge its current worker was started with, which it must answer to join.
    challenge: Option<Challenge>,
    /// Busy clock and kernel usage, for observers.
    watch: observe::SlotWatch,
    pid: u32,
    outbox: Option<Arc<Outbox>>,
    /// The connection's receiving side while nobody reads it: its reader thread has put
    /// it here to wait for work, and a caller may borrow it.
    reader: Option<Reader>,
    /// Wakes the slot's reader thread: work for it to read, or its worker gone.
    reader_wake: Arc<Signal>,
    in_flight: usize,
    stats: WorkerStats,
    /// When the slot entered its state (for the start timeout).
    since: Instant,
    /// When the worker last answered, or was handed work while idle (for the task timeout).
    last_progress: Instant,
    /// Starts in a row that died or timed out before joining.
    start_failures: u32,
    /// Why the pool killed this worker, if it did.
    kill_reason: Option<String>,
    /// The worker holds a suspect chunk, alone.
    isolated: bool,
}

pub(crate) struct State {
    slots: Vec<Slot>,
    queue: VecDeque<Chunk>,
    in_flight: HashMap<TaskId, InFlight>,
    jobs: HashMap<u64, Sink>,
    next_job: u64,
    closed: bool,
    stopping: bool,
    rejected_peers: u64,
    threads: Vec<JoinHandle<()>>,
    /// Dispatches so far, to order [`InFlight`] entries.
    dispatched: u64,
    /// One-item calls waiting for a worker with room.
    open_batch: Option<OpenBatch>,
    /// Reader threads whose worker waits for the open batch to fill; while there are
    /// any, a batch goes out only once it holds [`BATCH_GATHER`] calls.
    gathering: usize,
    /// The buffers of batches sent, which their frames share: once a batch is answered and
    /// its frame gone, its buffer takes the next batch's calls. A new buffer is fresh memory
    /// on whichever thread seals the batch (a reader, mostly), and grows call by call.
    batch_buffers: Vec<Arc<Vec<u8>>>,
    /// Why the pool cannot go on, once it cannot.
    broken: Option<String>,
}

/// A condition variable that skips the wake-up system call when nobody waits, which is
/// most of the time: it is signalled on every answer.
#[derive(Default)]
struct Signal {
    condvar: Condvar,
    waiters: std::sync::atomic::AtomicUsize,
}

impl Signal {
    fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        // Counted while the lock is held, so a notifier that changes the state under the
        // lock afterwards sees the count.
        self.waiters.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = self.condvar.wait(guard).unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        guard
    }

    fn wait_timeout<'a, T>(&self, guard: MutexGuard<'a, T>, timeout: Duration) -> MutexGuard<'a, T> {
        self.waiters.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let guard = self.condvar.wait_timeout(guard, timeout).unwrap_or_else(|e| e.into_inner()).0;
        self.waiters.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        guard
    }

    fn notify_all(&self) {
        if self.waiters.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            self.condvar.notify_all();
        }
    }
}

/// A piece of work for the callback thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// The part of a pool that its threads share.
pub(crate) struct Shared {
    pub settings: Settings,
    state: Mutex<State>,
    changed: Signal,
    /// Wakes the readers that wait for the open batch to fill, once it has gone out.
    batch_sealed: Signal,
    /// Wakes the watchdog: a worker needs starting, or the pool is stopping.
    watch: Signal,
    secret: Secret,
    endpoint: PathBuf,
    socket_dir: Mutex<Option<SocketDir>>,
    /// The listening socket once the first workers are in, until the watchdog hands it to
    /// the acceptor thread it starts for it.
    listener_for_acceptor: Mutex<Option<Listener>>,
    callbacks: Mutex<CallbackRunner>,
    /// Encode and decode time, for reports.
    pub meters: observe::Meters,
    /// The live monitor, if the pool shows one; the pool stops it first when it stops.
    pub monitor: Mutex<Option<super::Monitor>>,
}

/// Every live pool of this process, so that a signal handler can stop them all.
static POOLS: Mutex<Vec<std::sync::Weak<Shared>>> = Mutex::new(Vec::new());

/// Kills the workers of every pool in this process and removes their socket
/// directories; for a signal handler that is about to exit the process.
pub fn terminate_all() {
    let pools: Vec<Arc<Shared>> =
        POOLS.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(std::sync::Weak::upgrade).collect();
    for pool in pools {
        pool.stop(false);
    }
}

/// The frame that tells a worker to finish.
fn shutdown_frame() -> Outgoing {
    Outgoing::encoded(
        codec::encode_frame(&ToWorker::Shutdown, 0, |_| Ok(())).expect("a message with no payload fits a frame"),
    )
}

/// A worker's answer: the frame it came in, and where its payload starts, handed on
/// without copying it.
pub(crate) struct Payload {
    frame: Vec<u8>,
    start: usize,
}

#[cfg(test)]
impl Payload {
    /// A payload that is the whole of `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self { frame: bytes, start: 0 }
    }
}

impl std::ops::Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.frame[self.start..]
    }
}

impl Shared {
    /// Sets up the socket, starts every worker at once, and waits until all have joined.
    pub fn start(settings: Settings, socket_dir: SocketDir) -> Result<(Arc<Self>, Listener), PoolError> {
        let endpoint = socket_dir.path().join(SOCKET_NAME);
        let listener = Listener::bind(&endpoint).map_err(PoolError::Socket)?;
        let secret = Secret::generate().map_err(PoolError::Socket)?;
        let slots = (0..settings.workers)
            .map(|_| Slot {
                state: SlotState::Waiting,
                generation: 0,
                child: None,
                challenge: None,
                watch: observe::SlotWatch::default(),
                pid: 0,
                outbox: None,
                reader: None,
                reader_wake: Arc::default(),
                in_flight: 0,
                stats: WorkerStats::default(),
                since: Instant::now(),
                last_progress: Instant::now(),
                start_failures: 0,
                kill_reason: None,
                isolated: false,
            })
            .collect();
        let shared = Arc::new(Self {
            settings,
            state: Mutex::new(State {
                slots,
                queue: VecDeque::new(),
                in_flight: HashMap::new(),
                jobs: HashMap::new(),
                next_job: 0,
                closed: false,
                stopping: false,
                rejected_peers: 0,
                threads: Vec::new(),
                dispatched: 0,
                open_batch: None,
                gathering: 0,
                batch_buffers: Vec::new(),
                broken: None,
            }),
            changed: Signal::default(),
            batch_sealed: Signal::default(),
            watch: Signal::default(),
            secret,
            endpoint,
            socket_dir: Mutex::new(Some(socket_dir)),
            listener_for_acceptor: Mutex::new(None),
            callbacks: Mutex::new(CallbackRunner::default()),
            meters: observe::Meters::default(),
            monitor: Mutex::new(None),
        });
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|pool| pool.strong_count() > 0);
        pools.push(Arc::downgrade(&shared));
        drop(pools);
        Ok((shared, listener))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts (or restarts) the worker in slot `index`, and hands it the run's secret and
    /// a challenge made for this start, through a pipe only the child can read, never the
    /// command line. If they cannot be sent, the child exits and the watchdog counts a
    /// failed start.
    ///
    /// Only the watchdog thread calls this, or the process's main thread for the first
    /// workers: Linux delivers the workers' parent-death signal when the *thread* that
    /// started them exits, so that thread must live as long as the pool.
    fn spawn_worker(&self, index: usize) -> Result<(), PoolError> {
        let challenge = Challenge::generate().map_err(PoolError::Socket)?;
        let mut command = Command::new(&self.settings.program);
        command
            .arg0(format!("corepool-w{index}"))
            .env(ENDPOINT_ENV, &self.endpoint)
            .env(INDEX_ENV, index.to_string())
            .env(PARENT_ENV, std::process::id().to_string())
            .envs(self.settings.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        super::platform::die_with_this_process(&mut command);
        let mut child = command.spawn().map_err(|error| PoolError::Spawn {
            index,
            program: self.settings.program.clone(),
            error,
        })?;
        let stdin = child.stdin.take();
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
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(Credentials { secret: self.secret.clone(), challenge }.to_line().as_bytes());
        }
        Ok(())
    }

    /// Admits workers from `listener` on this thread until every slot has one. Workers
    /// that die or hang while starting are replaced by the watchdog; this fails once a slot
    /// has failed to start more than `max_retries` times in a row, or when the start
    /// timeout runs out. Admitting here, rather than on the acceptor thread that takes
    /// over afterwards, spares each first worker the wait for two other threads to be
    /// scheduled on cores that are busy loading workers.
    pub fn admit_until_ready(self: &Arc<Self>, listener: &Listener) -> Result<(), PoolError> {
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

    /// The watchdog: starts every worker (first ones and replacements), replaces workers
    /// that die or hang before joining, and kills workers that hold a chunk longer than the
    /// task timeout (their reader thread then reports the loss, and their chunks go to
    /// other workers).
    pub fn watch_loop(self: Arc<Self>) {
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
                    super::socket_dir::sweep_dead_runs(base);
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
    pub fn start_first_workers_here(&self) {
        let waiting: Vec<usize> = {
            let state = self.lock();
            (0..state.slots.len()).filter(|&index| state.slots[index].state == SlotState::Waiting).collect()
        };
        self.start_workers(&waiting);
    }

    /// Starts the workers of slots `indices`. Returns false, the pool broken or stopping,
    /// if one could not be started.
    fn start_workers(&self, indices: &[usize]) -> bool {
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

    /// Marks the pool as unable to go on, and fails all its outstanding work.
    fn break_pool(&self, reason: String) {
        self.lock().broken.get_or_insert_with(|| reason.clone());
        self.fail_everything(&reason);
    }

    /// Has the watchdog start the acceptor on `listener` (see [`accept_loop`]): the pool's
    /// start then does not wait for a thread that only replacements need.
    pub fn hand_over_listener(&self, listener: Listener) {
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
    pub fn accept_loop(self: Arc<Self>, listener: Listener) {
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

    /// Starts a thread that serves one worker's connection, joined when the pool stops: by
    /// then its worker is gone (and its connection closed).
    fn start_connection_thread(self: &Arc<Self>, serve: impl FnOnce(&Self) + Send + 'static) {
        let shared = Arc::clone(self);
        match std::thread::Builder::new().name("corepool-recv".into()).spawn(move || serve(&shared)) {
            Ok(handle) => self.lock().threads.push(handle),
            // Without its reader a worker's answers would never be heard.
            Err(error) => self.break_pool(with_causes(&PoolError::Thread(error))),
        }
    }

    /// Serves an admitted worker's connection on this thread: starts the thread that
    /// writes to it, then reads its answers until it closes. The writer is started here
    /// rather than by the thread that admitted the worker, which may have other workers to
    /// admit while the pool's start waits on it; frames dispatched meanwhile wait in the
    /// outbox.
    fn serve_connection(&self, (index, generation, reader, outbox): Admitted) {
        let writer =
            std::thread::Builder::new().name(format!("corepool-send-{index}")).spawn(move || outbox.run_writer());
        match writer {
            Ok(writer) => self.lock().threads.push(writer),
            Err(error) => return self.break_pool(with_causes(&PoolError::Thread(error))),
        }
        self.read_loop(index, generation, reader);
    }

    /// Admits the peer on `link` if it is the worker its slot waits for.
    fn admit(&self, link: Link) -> Option<Admitted> {
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
        let (reader, writer) = link.split();
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

    fn read_loop(&self, index: usize, generation: u64, reader: LinkReader) {
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        let mut frame = Vec::new();
        let reason = loop {
            reader = match self.await_reading(index, generation, reader) {
                Some(reader) => reader,
                // Whoever saw the worker go has dealt with it.
                None => return,
            };
            match read_answer(&mut reader, &mut frame) {
                Ok(answer) => {
                    if let Some(batch) = self.on_answer(index, answer, true) {
                        self.gather_batch(index, batch);
                    }
                }
                Err(reason) => break reason,
            }
        };
        self.on_worker_lost(index, generation, &reason);
    }

    /// Gives slot `index`'s reader thread its connection back once there is something to
    /// read: a chunk in flight, or bytes that came anyway (answers to an abandoned job, or
    /// the end of the stream of a worker that died idle). Meanwhile the connection waits
    /// in the slot, where a caller may borrow it. `None`: the worker is gone, and whoever
    /// saw it go has dealt with it.
    fn await_reading(&self, index: usize, generation: u64, reader: Reader) -> Option<Reader> {
        let mut state = self.lock();
        if state.slots[index].in_flight > 0 || !reader.buffer().is_empty() {
            return Some(reader);
        }
        state.slots[index].reader = Some(reader);
        let wake = Arc::clone(&state.slots[index].reader_wake);
        loop {
            let slot = &mut state.slots[index];
            if slot.generation != generation || slot.state != SlotState::Ready {
                return None;
            }
            let readable = slot.reader.as_ref().is_some_and(|reader| {
                slot.in_flight > 0
                    || !reader.buffer().is_empty()
                    || reader.get_ref().wait_readable(Some(Duration::ZERO)).unwrap_or(true)
            });
            if readable {
                return slot.reader.take();
            }
            state = wake.wait_timeout(state, IDLE_READER_CHECK);
        }
    }

    /// Puts a borrowed connection back in its slot, and wakes the slot's reader thread
    /// if work came for it meanwhile; drops it if its worker is gone.
    fn hand_back(&self, Borrowed { index, generation, reader }: Borrowed) {
        let mut state = self.lock();
        let slot = &mut state.slots[index];
        if slot.generation == generation && slot.state == SlotState::Ready {
            slot.reader = Some(reader);
            if slot.in_flight > 0 {
                slot.reader_wake.notify_all();
            }
        }
    }

    /// Reads answers from a borrowed connection until the one to chunk `id` is in, and
    /// hands each on as the reader thread would.
    fn read_borrowed(&self, mut borrowed: Borrowed, id: TaskId) {
        let mut frame = Vec::new();
        loop {
            // Polling for the answer spares this thread a sleep and a wake-up, while the
            // worker, on another core, works on it.
            let poll = self.settings.answer_poll;
            if !poll.is_zero() && borrowed.reader.buffer().is_empty() {
                let deadline = Instant::now() + poll;
                while !borrowed.reader.get_ref().wait_readable(Some(Duration::ZERO)).unwrap_or(true)
                    && Instant::now() < deadline
                {
                    std::hint::spin_loop();
                }
            }
            match read_answer(&mut borrowed.reader, &mut frame) {
                Ok(answer) => {
                    let ours = answer.0 == id;
                    self.on_answer(borrowed.index, answer, false);
                    if ours {
                        return self.hand_back(borrowed);
                    }
                }
                Err(reason) => return self.on_worker_lost(borrowed.index, borrowed.generation, &reason),
            }
        }
    }

    /// Hands on an answer, and gives more work to the worker that sent it. Returns the open
    /// batch's job if the worker should wait for that batch to fill
    /// ([`Shared::gather_batch`]), which only a reader thread may do (`may_gather`).
    fn on_answer(&self, index: usize, (id, result): Answer, may_gather: bool) -> Option<u64> {
        let mut state = self.lock();
        // Only the worker that holds a chunk may answer for it: a late answer from a worker
        // given up on, or a duplicate, finds nothing here and is dropped.
        let flight = state.in_flight.remove_if_held_by(&id, index)?;
        let slot = &mut state.slots[index];
        slot.in_flight -= 1;
        slot.isolated &= slot.in_flight > 0;
        slot.last_progress = Instant::now();
        slot.stats.chunks += 1;
        slot.stats.rows += flight.chunk.rows as u64;
        slot.note_load();
        let rows = flight.chunk.rows;
        let result = result.map_err(|failure| PoolError::Task { rows: row_range(&flight.chunk), failure });
        let delivery = state.take_delivery(id.job);
        // An idle worker and a small open batch: calls are likely still coming.
        let gather = match &state.open_batch {
            Some(batch) if may_gather && state.slots[index].in_flight == 0 && state.queue.is_empty() => {
                (batch.completions.len() < BATCH_GATHER).then_some(batch.job)
            }
            _ => None,
        };
        state.gathering += usize::from(gather.is_some());
        dispatch(&mut state, self.settings.chunks_in_flight, None);
        drop(state);
        self.changed.notify_all();
        self.deliver(delivery, Outcome { id, rows, result });
        gather
    }

    /// Waits, for at most [`BATCH_GATHER_WAIT`], while the open batch of `job` fills up
    /// (its caller sends it once it holds [`BATCH_GATHER`] calls), then sends whatever it
    /// holds. Meanwhile the worker of slot `index` has nothing to do, so its reader has
    /// nothing to read.
    fn gather_batch(&self, index: usize, job: u64) {
        let deadline = Instant::now() + BATCH_GATHER_WAIT;
        let mut state = self.lock();
        loop {
            let still_open = state.open_batch.as_ref().is_some_and(|batch| batch.job == job);
            let now = Instant::now();
            if !still_open || now >= deadline || state.stopping || state.slots[index].in_flight > 0 {
                break;
            }
            state = self.batch_sealed.wait_timeout(state, deadline - now);
        }
        state.gathering -= 1;
        if state.open_batch.as_ref().is_some_and(|batch| batch.job == job) {
            seal_open_batch(&mut state);
        }
        // Whatever batch is open now (another, if this one went out meanwhile) went
        // unsent while this thread gathered: with the last gatherer gone, it goes out
        // here, or it could wait for ever once the caller has stopped adding calls and
        // every worker is idle.
        dispatch(&mut state, self.settings.chunks_in_flight, None);
    }

    fn on_worker_lost(&self, index: usize, generation: u64, reason: &str) {
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

    /// Fails every queued and in-flight chunk: the pool cannot go on.
    pub fn fail_everything(&self, why: &str) {
        let mut state = self.lock();
        let mut doomed: Vec<Chunk> = state.queue.drain(..).collect();
        doomed.extend(state.in_flight.drain().map(|(_, flight)| flight.chunk));
        let failed: Vec<_> = doomed
            .into_iter()
            .map(|chunk| {
                let outcome =
                    Outcome { id: chunk.id, rows: chunk.rows, result: Err(PoolError::Broken(why.to_owned())) };
                (state.take_delivery(chunk.id.job), outcome)
            })
            .collect();
        drop(state);
        for (delivery, outcome) in failed {
            self.deliver(delivery, outcome);
        }
        self.changed.notify_all();
    }

    fn deliver(&self, delivery: Option<Delivery>, outcome: Outcome) {
        match delivery {
            Some(Delivery::Channel(sender)) => {
                // A closed channel means the caller stopped listening: nothing to do.
                let _ = sender.send(outcome);
            }
            Some(Delivery::Batch(completions)) => {
                self.run_callback(Box::new(move || complete_batch(outcome, completions)));
            }
            Some(Delivery::Gather(gatherer)) => gatherer.take(outcome),
            None => {}
        }
    }

    /// Runs `job` on the pool's callback thread, or here if the pool has stopped (or
    /// cannot start that thread, which breaks it: its waiters hear why, rather than wait
    /// for ever).
    pub fn run_callback(&self, job: Job) {
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

    /// Registers a new job, returning its id.
    pub fn open_job(&self, sink: Sink) -> Result<u64, PoolError> {
        self.open_job_with(|_| sink)
    }

    /// Registers a new job whose sink `make_sink` makes from the job's id, returning the id.
    pub fn open_job_with(&self, make_sink: impl FnOnce(u64) -> Sink) -> Result<u64, PoolError> {
        let mut state = self.lock();
        if let Some(reason) = &state.broken {
            return Err(PoolError::Broken(reason.clone()));
        }
        if state.closed || state.stopping {
            return Err(PoolError::Closed);
        }
        let job = state.next_job;
        state.next_job += 1;
        state.jobs.insert(job, make_sink(job));
        Ok(job)
    }

    /// Forgets a job: its queued chunks are dropped and late answers are ignored.
    pub fn close_job(&self, job: u64) {
        let mut state = self.lock();
        state.jobs.remove(&job);
        state.queue.retain(|chunk| chunk.id.job != job);
        let abandoned: Vec<TaskId> = state.in_flight.keys().filter(|id| id.job == job).copied().collect();
        for id in abandoned {
            if let Some(flight) = state.in_flight.remove(&id) {
                let slot = &mut state.slots[flight.worker];
                slot.in_flight -= 1;
                slot.isolated &= slot.in_flight > 0;
            }
        }
        state.slots.iter_mut().for_each(|slot| slot.note_load());
        dispatch(&mut state, self.settings.chunks_in_flight, None);
        drop(state);
        self.changed.notify_all();
    }

    /// Queues a chunk, waiting while the queue is full so that memory stays bounded.
    pub fn enqueue(&self, chunk: Chunk) -> Result<(), PoolError> {
        self.enqueue_with(chunk, None).map(drop)
    }

    /// Like [`enqueue`](Self::enqueue), for a caller that waits for this one chunk's
    /// answer (`apply`). If a worker with nothing else to answer takes it at once, this
    /// thread reads the answer from that worker's connection itself, which spares the
    /// reader thread's hand-off: a wake-up, which on a small machine costs as much as the
    /// rest of the round trip. The answer goes to the job as any other.
    pub fn enqueue_and_read(&self, chunk: Chunk) -> Result<(), PoolError> {
        let id = chunk.id;
        if let Some(borrowed) = self.enqueue_with(chunk, Some(id))? {
            self.read_borrowed(borrowed, id);
        }
        Ok(())
    }

    /// Like [`enqueue`](Self::enqueue), but gives the chunk back rather than wait while
    /// the queue is full.
    pub fn try_enqueue(&self, chunk: Chunk) -> Result<Option<Chunk>, PoolError> {
        let state = self.lock();
        if must_wait_for_room(&state, self.queue_limit(), &chunk) {
            return Ok(Some(chunk));
        }
        self.push_chunk(state, chunk, None).map(|_| None)
    }

    fn enqueue_with(&self, chunk: Chunk, read_here: Option<TaskId>) -> Result<Option<Borrowed>, PoolError> {
        let limit = self.queue_limit();
        let mut state = self.lock();
        while must_wait_for_room(&state, limit, &chunk) {
            state = self.changed.wait(state);
        }
        self.push_chunk(state, chunk, read_here)
    }

    /// Queues `chunk` unless its job or the pool is over, and dispatches.
    fn push_chunk(
        &self,
        mut state: MutexGuard<'_, State>,
        chunk: Chunk,
        read_here: Option<TaskId>,
    ) -> Result<Option<Borrowed>, PoolError> {
        if let Some(reason) = &state.broken {
            return Err(PoolError::Broken(reason.clone()));
        }
        if state.stopping {
            return Err(PoolError::Terminated);
        }
        if !state.jobs.contains_key(&chunk.id.job) {
            // The job already failed; its outcome is on its way to the caller.
            return Ok(None);
        }
        state.queue.push_back(chunk);
        Ok(self.dispatch_from_caller(state, read_here))
    }

    /// Adds a one-item call to the open batch, which goes out as one frame as soon as a
    /// worker has room (at once, while workers are idle), or once it is full. A burst of
    /// calls while every worker is busy thus costs one message, not one per call. Waits
    /// while the queue is full, so that memory stays bounded.
    pub fn submit_one(&self, task: &str, payload: &[u8], completion: ItemCompletion) -> Result<(), PoolError> {
        let limit = self.queue_limit();
        let mut state = self.lock();
        loop {
            if let Some(reason) = &state.broken {
                return Err(PoolError::Broken(reason.clone()));
            }
            if state.closed || state.stopping {
                return Err(PoolError::Closed);
            }
            if state.queue.len() < limit {
                break;
            }
            state = self.changed.wait(state);
        }
        if state.open_batch.is_none() {
            let job = state.next_job;
            state.next_job += 1;
            let tasks = state.free_batch_buffer();
            let completions = Vec::with_capacity(BATCH_GATHER);
            state.open_batch = Some(OpenBatch { job, tasks, completions });
        }
        let open = state.open_batch.as_mut().expect("opened above");
        batch::push_task(&mut open.tasks, task, payload);
        open.completions.push(completion);
        if open.completions.len() >= BATCH_TASKS || open.tasks.len() >= BATCH_BYTES {
            seal_open_batch(&mut state);
        }
        self.dispatch_from_caller(state, None);
        Ok(())
    }

    /// Dispatches on the caller's thread, which then writes the small frames itself: a
    /// one-row call then costs no wake-up of a writer thread. With `read_here`, borrows
    /// the connection of the worker that takes that chunk, if it has nothing else to answer.
    fn dispatch_from_caller(&self, mut state: MutexGuard<'_, State>, read_here: Option<TaskId>) -> Option<Borrowed> {
        let mut write_here = Vec::new();
        let mut borrowed = None;
        let had_batch = state.open_batch.is_some();
        let by_caller = ByCaller { write_here: &mut write_here, read_here: read_here.map(|id| (id, &mut borrowed)) };
        dispatch(&mut state, self.settings.chunks_in_flight, Some(by_caller));
        let sealed = had_batch && state.open_batch.is_none();
        drop(state);
        if sealed {
            self.batch_sealed.notify_all();
        }
        for outbox in write_here {
            outbox.write_here();
        }
        borrowed
    }

    fn queue_limit(&self) -> usize {
        self.settings.workers * self.settings.chunks_in_flight * 2
    }

    /// Stops taking new work; work already submitted goes on.
    pub fn close(&self) {
        self.lock().closed = true;
    }

    /// Waits until no job is outstanding.
    pub fn wait_idle(&self) {
        let mut state = self.lock();
        while (!state.jobs.is_empty() || state.open_batch.is_some()) && !state.stopping {
            state = self.changed.wait(state);
        }
    }

    /// Stops every worker: politely if `graceful` (a shutdown message, then a grace
    /// period), then by force. Every outstanding job fails with [`PoolError::Terminated`].
    pub fn stop(&self, graceful: bool) {
        let mut state = self.lock();
        if state.stopping {
            return;
        }
        state.stopping = true;
        state.closed = true;
        let mut children = Vec::new();
        let mut outboxes = Vec::new();
        for (index, slot) in state.slots.iter_mut().enumerate() {
            // A worker with nothing in flight has read all it was sent: a small frame to it
            // cannot wait on a full socket.
            outboxes.extend(slot.outbox.take().map(|outbox| (outbox, slot.in_flight == 0)));
            slot.state = SlotState::Gone;
            slot.reader = None;
            slot.reader_wake.notify_all();
            children.extend(slot.child.take().map(|child| (index, child)));
        }
        let threads = std::mem::take(&mut state.threads);
        let mut jobs: Vec<Sink> = state.jobs.drain().map(|(_, sink)| sink).collect();
        jobs.extend(state.open_batch.take().map(|batch| Sink::Batch(batch.completions)));
        state.queue.clear();
        state.in_flight.clear();
        drop(state);
        self.changed.notify_all();
        // To an idle worker, the stop frame is written on this thread (where the connection
        // is free), which spares the worker a wake-up of its writer thread before it can
        // start to exit: stop 0.77-0.82 -> 0.68-0.75 ms with 2 workers (41 runs in each
        // order). A busy worker may not be reading: its frame goes to the writer thread, so
        // that no stop waits on a worker that hangs.
        for (outbox, idle) in outboxes {
            if graceful && outbox.push(Arc::new(shutdown_frame()), idle).is_ok() && idle {
                outbox.write_here();
            }
            outbox.close();
        }
        for sink in jobs {
            let outcome = Outcome {
                id: TaskId { job: u64::MAX, chunk: 0, first_row: 0 },
                rows: 0,
                result: Err(PoolError::Terminated),
            };
            let delivery = match sink {
                Sink::Channel(sender) => Delivery::Channel(sender),
                Sink::Batch(completions) => Delivery::Batch(completions),
                Sink::Gather(gatherer) => Delivery::Gather(gatherer),
            };
            self.deliver(Some(delivery), outcome);
        }
        // The last callbacks are queued: the callback thread ends once it has run them.
        let callback_thread = self.callbacks.lock().unwrap_or_else(|e| e.into_inner()).stop();
        // Wake the acceptor so that it sees `stopping` and returns; then nothing needs the
        // socket any more, and its directory goes while the workers exit.
        let _ = Link::connect(&self.endpoint);
        self.socket_dir.lock().unwrap_or_else(|e| e.into_inner()).take();

        // Workers told to stop exit within a fraction of a millisecond; whatever is left
        // after the grace period is killed. Reaping them tells their final usage.
        let grace = if graceful { Duration::from_secs(2) } else { Duration::ZERO };
        let (indices, children): (Vec<usize>, Vec<Child>) = children.into_iter().unzip();
        let usages = reap_all(children, grace);
        // The supervisor goes last: a worker gets SIGKILL when the thread that started it ends.
        self.watch.notify_all();
        for (index, usage) in indices.into_iter().zip(usages) {
            self.retire_usage(index, usage);
        }
        for thread in threads.into_iter().chain(callback_thread) {
            let _ = thread.join();
        }
    }

    /// A snapshot of each worker's statistics, and the count of peers turned away.
    pub fn stats(&self) -> (Vec<WorkerStats>, u64) {
        let state = self.lock();
        let stats = state.slots.iter().map(|slot| WorkerStats { pid: slot.pid, ..slot.stats.clone() }).collect();
        (stats, state.rejected_peers)
    }

    /// The private directory holding the socket, until the pool stops.
    pub fn socket_dir(&self) -> Option<PathBuf> {
        self.socket_dir.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|dir| dir.path().to_path_buf())
    }

    /// Process ids of the live workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        let state = self.lock();
        state
            .slots
            .iter()
            .filter(|slot| matches!(slot.state, SlotState::Starting | SlotState::Ready))
            .map(|slot| slot.pid)
            .collect()
    }
}

/// The thread that runs `apply_async` callbacks, one at a time, in the order their results
/// arrive (as Python's result-handler thread does). It starts with the first callback, so
/// that pools that never call `apply_async` neither start nor join it.
#[derive(Default)]
pub(crate) struct CallbackRunner {
    sender: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    stopped: bool,
}

impl CallbackRunner {
    /// Queues `job` for the callback thread; gives it back if the pool has stopped, or
    /// with the error if the thread cannot be started.
    fn run(&mut self, job: Job) -> Result<Option<Job>, (Job, std::io::Error)> {
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
    fn stop(&mut self) -> Option<JoinHandle<()>> {
        self.stopped = true;
        self.sender = None;
        self.thread.take()
    }
}

enum Delivery {
    Channel(Sender<Outcome>),
    Batch(Vec<ItemCompletion>),
    Gather(Arc<dyn Gatherer>),
}

/// Whether `chunk` must wait for room in a queue of at most `limit` chunks: not if the
/// pool or the chunk's job is over, which the chunk is then told.
fn must_wait_for_room(state: &State, limit: usize, chunk: &Chunk) -> bool {
    state.queue.len() >= limit && !state.stopping && state.broken.is_none() && state.jobs.contains_key(&chunk.id.job)
}

/// Hands each item of a batch its answer, in order.
fn complete_batch(outcome: Outcome, completions: Vec<ItemCompletion>) {
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

/// Turns the open batch, if any, into a chunk at the back of the queue.
fn seal_open_batch(state: &mut State) {
    let Some(open) = state.open_batch.take() else { return };
    let tasks = open.completions.len();
    let id = TaskId { job: open.job, chunk: 0, first_row: 0 };
    let head = codec::encode_frame_head_before(&ToWorker::Batch { id, tasks: tasks as u32 }, open.tasks.len())
        .expect("a batch stays far below the frame limit");
    state.jobs.insert(open.job, Sink::Batch(open.completions));
    // The calls go out from the buffer they were gathered in, which comes back once the
    // frame is gone (see `State::free_batch_buffer`).
    let buffer = Arc::new(open.tasks);
    let calls = SharedBytes::new(Arc::clone(&buffer) as Arc<dyn AsBytes>, 0..buffer.len());
    // Free buffers beyond a few are let go: a burst of batches leaves no hoard behind.
    let mut free = 0;
    state.batch_buffers.retain(|buffer| {
        free += usize::from(Arc::strong_count(buffer) == 1);
        Arc::strong_count(buffer) > 1 || free <= SPARE_BATCH_BUFFERS
    });
    state.batch_buffers.push(buffer);
    let frame = Arc::new(Outgoing::with_tail(head, calls));
    state.queue.push_back(Chunk { id, rows: tasks, frame, attempts: 0, suspect: false });
}

/// Splits a batch chunk that took down its worker into one-item batches, each a job of its
/// own and a suspect, so that the culprit alone fails and its batch-mates still run.
fn split_batch(state: &mut State, chunk: &Chunk) -> Option<Vec<Chunk>> {
    if chunk.rows < 2 || !matches!(state.jobs.get(&chunk.id.job), Some(Sink::Batch(_))) {
        return None;
    }
    // A batch of two calls or more was sealed with its calls as its frame's tail.
    let entries: Vec<(&str, &[u8])> = batch::tasks(chunk.frame.tail()).collect::<Result<_, _>>().ok()?;
    let Some(Sink::Batch(completions)) = state.jobs.remove(&chunk.id.job) else { return None };
    let mut pieces = Vec::with_capacity(entries.len());
    for ((task, payload), completion) in entries.into_iter().zip(completions) {
        let job = state.next_job;
        state.next_job += 1;
        let mut one = Vec::new();
        batch::push_task(&mut one, task, payload);
        let id = TaskId { job, chunk: 0, first_row: 0 };
        let frame = codec::encode_frame(&ToWorker::Batch { id, tasks: 1 }, one.len(), |out| {
            out.extend_from_slice(&one);
            Ok(())
        })
        .expect("one task of a batch fits a frame");
        state.jobs.insert(job, Sink::Batch(vec![completion]));
        let frame = Arc::new(Outgoing::encoded(frame));
        pieces.push(Chunk { id, rows: 1, frame, attempts: chunk.attempts, suspect: true });
    }
    Some(pieces)
}

impl State {
    /// An empty buffer for a new batch's calls: a sent batch's, if its frame is gone.
    fn free_batch_buffer(&mut self) -> Vec<u8> {
        // Only frames share a buffer, and only a new batch takes one back, under the lock:
        // a buffer held here alone stays so.
        let free = self.batch_buffers.iter().position(|buffer| Arc::strong_count(buffer) == 1);
        match free.map(|index| Arc::try_unwrap(self.batch_buffers.swap_remove(index))) {
            Some(Ok(mut buffer)) => {
                buffer.clear();
                buffer
            }
            _ => Vec::new(),
        }
    }

    /// Slot `index`, if it waits for the worker it started, and that worker has process id
    /// `pid`.
    fn starting(&self, index: usize, pid: Option<u32>) -> Option<&Slot> {
        self.slots.get(index).filter(|slot| slot.state == SlotState::Starting && Some(slot.pid) == pid)
    }

    /// How to deliver an outcome of `job`: a one-shot callback is taken out (its job is
    /// over); a channel is cloned.
    fn take_delivery(&mut self, job: u64) -> Option<Delivery> {
        match self.jobs.get(&job)? {
            Sink::Channel(sender) => Some(Delivery::Channel(sender.clone())),
            Sink::Gather(gatherer) => Some(Delivery::Gather(Arc::clone(gatherer))),
            Sink::Batch(_) => match self.jobs.remove(&job) {
                Some(Sink::Batch(completions)) => Some(Delivery::Batch(completions)),
                _ => unreachable!("matched a batch above"),
            },
        }
    }
}

trait InFlightMap {
    fn remove_if_held_by(&mut self, id: &TaskId, worker: usize) -> Option<InFlight>;
}

impl InFlightMap for HashMap<TaskId, InFlight> {
    fn remove_if_held_by(&mut self, id: &TaskId, worker: usize) -> Option<InFlight> {
        if self.get(id)?.worker == worker { self.remove(id) } else { None }
    }
}

/// What a caller that dispatches on its own thread takes on (see
/// [`Shared::dispatch_from_caller`]).
struct ByCaller<'a> {
    /// The outboxes whose small frames it writes once it has let go of the state (see
    /// [`Outbox::write_here`]).
    write_here: &'a mut Vec<Arc<Outbox>>,
    /// A chunk whose answer it reads itself, and where the borrowed connection goes, if
    /// the worker that takes the chunk has nothing else to answer.
    read_here: Option<(TaskId, &'a mut Option<Borrowed>)>,
}

/// Hands queued chunks to ready workers with room, least loaded first. A suspect chunk
/// waits for a worker that holds nothing, and keeps it to itself. A worker given work
/// while it held none has its reader thread woken, unless the caller reads for it.
///
/// Writer threads send the frames, except small ones when `by_caller` is given: their
/// outboxes are listed there, and the caller must call [`Outbox::write_here`] on each once
/// it has let go of the state.
fn dispatch(state: &mut State, window: usize, mut by_caller: Option<ByCaller<'_>>) {
    loop {
        if state.queue.is_empty() {
            // The open batch goes out only to a worker with nothing to do: while every
            // worker is busy, the calls that arrive gather into one message. While a
            // worker waits for it to fill, it goes once it is full enough.
            let idle = state
                .slots
                .iter()
                .any(|slot| slot.state == SlotState::Ready && slot.outbox.is_some() && slot.in_flight == 0);
            let Some(batch) = &state.open_batch else { return };
            if !idle || (state.gathering > 0 && batch.completions.len() < BATCH_GATHER) {
                return;
            }
            seal_open_batch(state);
        }
        let suspect = state.queue.front().expect("not empty").suspect;
        let Some((index, _)) = state
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.state == SlotState::Ready && slot.outbox.is_some() && !slot.isolated)
            .filter(|(_, slot)| if suspect { slot.in_flight == 0 } else { slot.in_flight < window })
            // Ties go to the worker that has done least, so one-at-a-time calls such as
            // `apply` spread over every worker instead of keeping the first one busy.
            .min_by_key(|(_, slot)| (slot.in_flight, slot.stats.chunks))
        else {
            return;
        };
        let chunk = state.queue.pop_front().expect("queue is not empty");
        let slot = &mut state.slots[index];
        slot.note_dispatch();
        let outbox = slot.outbox.as_ref().expect("ready slots have an outbox");
        let small = chunk.frame.frame_len() <= outbox::WRITE_HERE_MAX;
        let here = by_caller.as_mut().filter(|_| small);
        if outbox.push(Arc::clone(&chunk.frame), here.is_some()).is_err() {
            // The connection failed; the reader will report the loss. Keep the chunk.
            outbox.close();
            slot.outbox = None;
            state.queue.push_front(chunk);
            continue;
        }
        if let Some(here) = here
            && !here.write_here.iter().any(|listed| Arc::ptr_eq(listed, outbox))
        {
            here.write_here.push(Arc::clone(outbox));
        }
        if slot.in_flight == 0 {
            slot.last_progress = Instant::now();
            // Its reader thread waits for work, with the connection in the slot.
            let borrower = by_caller
                .as_mut()
                .and_then(|by| by.read_here.as_mut())
                .filter(|(id, borrowed)| *id == chunk.id && borrowed.is_none() && slot.reader.is_some());
            match borrower {
                Some((_, borrowed)) => {
                    let reader = slot.reader.take().expect("checked above");
                    **borrowed = Some(Borrowed { index, generation: slot.generation, reader });
                }
                None if slot.reader.is_some() => slot.reader_wake.notify_all(),
                None => {}
            }
        }
        slot.in_flight += 1;
        slot.isolated = suspect;
        state.dispatched += 1;
        let order = state.dispatched;
        state.in_flight.insert(chunk.id, InFlight { chunk, worker: index, order });
    }
}

/// A worker's answer: the chunk it is about, and its outputs or why there are none.
type Answer = (TaskId, Result<Payload, corepool_protocol::TaskFailure>);

/// Reads one answer from a worker's connection; the error says why the connection is over.
fn read_answer(reader: &mut Reader, frame: &mut Vec<u8>) -> Result<Answer, String> {
    match read_frame(reader, frame, MAX_FRAME_LEN) {
        Ok(true) => {}
        Ok(false) => return Err("closed its connection".to_owned()),
        Err(error) => return Err(format!("connection failed: {error}")),
    }
    let (message, payload_len) = match codec::decode_prefix::<ToCoordinator>(frame) {
        Ok((message, payload)) => (message, payload.len()),
        Err(error) => return Err(format!("sent a malformed message: {error}")),
    };
    Ok(match message {
        ToCoordinator::Done { id } => {
            // The frame becomes the payload; the next read gets a new buffer.
            let start = frame.len() - payload_len;
            (id, Ok(Payload { frame: std::mem::take(frame), start }))
        }
        ToCoordinator::Failed { id, failure } => (id, Err(failure)),
    })
}

use super::platform::{process_usage, reap_all};

fn row_range(chunk: &Chunk) -> std::ops::Range<u64> {
    chunk.id.first_row..chunk.id.first_row + chunk.rows as u64
}

/// Waits briefly for a worker that closed its connection to exit, then makes sure it is
/// gone, and says how it ended.
fn reap(mut child: Child) -> String {
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
