//! The supervisor: worker processes, their connections, the queue of chunks, and the map
//! of chunks in flight.
//!
//! All bookkeeping lives in one [`State`] under one mutex; nothing slow
//! happens while it is held. The work on it is split by responsibility, each file adding
//! its part of [`Shared`]'s methods: `spawning` (starting workers, the watchdog),
//! `admission` (accepting and authenticating peers), `connection` (each worker's reader
//! and writer threads), `submission` (jobs and the bounded queue), `dispatch` (which
//! worker takes the next chunk), `batching` (`apply_async` calls gathered into one frame),
//! `retries` (a dead worker's chunks), `delivery` (outcomes to their jobs) and `stop`.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use corepool_protocol::{handshake::Secret, transport::Listener};

use super::{
    PoolError, WorkerStats,
    socket_dir::{SOCKET_NAME, SocketDir},
};

mod admission;
mod batching;
mod connection;
mod delivery;
mod dispatch;
mod observe;
mod outbox;
mod retries;
mod signal;
mod spawning;
mod state;
mod stop;
mod submission;

#[cfg(test)]
pub(crate) use self::delivery::{Payload, testing};
use self::{
    delivery::CallbackRunner,
    signal::Signal,
    state::{Slot, SlotState, State},
};
pub(crate) use self::{
    delivery::{Delivery, ItemCall, ItemError, Outcome, PoolSide},
    state::Chunk,
};

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
    /// What [`super::PoolBuilder::watch`] started, if anything; dropped first when the
    /// pool stops, while the workers can still be seen.
    pub watcher: Mutex<Option<Box<dyn Send>>>,
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
                watch: state::SlotWatch::default(),
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
            watcher: Mutex::new(None),
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
}
