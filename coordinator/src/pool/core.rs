//! The supervisor: worker processes, their connections, the queue of chunks, and the map
//! of chunks in flight.
//!
//! All bookkeeping lives in one [`State`] under one mutex; nothing slow
//! happens while it is held. The work on it is split by responsibility, each file adding
//! its part of [`Shared`]'s methods: `spawning` (starting workers, the watchdog),
//! `admission` (the engine's arrivals and their handshake), `connection` (each worker's
//! reader and writer threads), `submission` (jobs and the bounded queue), `dispatch` (which
//! worker takes the next chunk), `batching` (`apply_async` calls gathered into one frame),
//! `retries` (a dead worker's chunks), `delivery` (outcomes to their jobs) and `stop`.
//! Workers are reached only through the transport seam ([`super::transport::Transport`]
//! and its frame traits), never a socket by name.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, atomic::AtomicBool},
    time::Duration,
};

use super::transport::Engine;

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
pub use self::stop::{HeldWork, work_held_by_ranks};
use self::{delivery::CallbackRunner, signal::Signal, state::State};
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
    /// Chunks a worker is sent before it is replaced (Python's `maxtasksperchild`).
    pub max_tasks_per_worker: Option<u64>,
    /// Workers are named `{prefix}-w{index}`.
    pub worker_name_prefix: String,
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
    /// What carries frames to and from the workers: the supervisor's one way to them.
    engine: Engine,
    /// Set once the first workers are in, until the watchdog starts the acceptor thread
    /// that admits their replacements.
    acceptor_wanted: AtomicBool,
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
    /// The supervisor of a pool whose workers `engine` reaches; none is started yet.
    pub fn start(settings: Settings, engine: Engine) -> Arc<Self> {
        let state = State::new(settings.workers, settings.max_tasks_per_worker);
        let shared = Arc::new(Self {
            settings,
            state: Mutex::new(state),
            changed: Signal::default(),
            batch_sealed: Signal::default(),
            watch: Signal::default(),
            engine,
            acceptor_wanted: AtomicBool::new(false),
            callbacks: Mutex::new(CallbackRunner::default()),
            meters: observe::Meters::default(),
            watcher: Mutex::new(None),
        });
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|pool| pool.strong_count() > 0);
        pools.push(Arc::downgrade(&shared));
        drop(pools);
        shared
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
