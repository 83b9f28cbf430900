//! Building a pool: its settings, and the start of its workers.

use std::{path::PathBuf, sync::Arc, time::Duration};

use corepool_worker::function::{
    IMAGE_ENV, INITIALIZER_ENV, InitOutcome, encode_hex, offset_of, own_program, program_identity, run_initializer,
};
use serde::{Serialize, de::DeserializeOwned};

#[cfg(feature = "mpi")]
use super::transport::mpi::{MpiEngine, RankSettings};
use super::{
    Pool, PoolError, PoolObserver,
    core::{Settings, Shared},
    platform,
    transport::{self, socket::SocketEngine},
};

/// Starts a watcher of a pool: given the pool's observer, returns what lives as long as the pool.
type StartWatcher = Box<dyn FnOnce(PoolObserver) -> std::io::Result<Box<dyn Send>> + Send>;

/// Builds a [`Pool`] with settings other than the defaults.
pub struct PoolBuilder {
    workers: usize,
    watcher: Option<StartWatcher>,
    program: Option<PathBuf>,
    env: Vec<(String, String)>,
    max_retries: u32,
    chunks_in_flight: usize,
    start_timeout: Duration,
    task_timeout: Option<Duration>,
    /// The initializer's setting for the workers' environment, or why it cannot be made.
    initializer: Option<Result<String, String>>,
    max_tasks_per_worker: Option<u64>,
    worker_name_prefix: String,
    transport: Transport,
    max_retries_given: bool,
}

/// How the pool reaches its workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// Worker processes on this machine, started by the pool, over Unix sockets.
    #[default]
    Local,
    /// The other ranks of the MPI job this process is rank 0 of (`mpirun`, `srun`): one
    /// worker per rank, on whichever hosts they run. Each rank's program calls
    /// [`crate::init`] first thing, as every worker does. Functions, closures and the
    /// initializer work as with local workers: a rank runs them only if it runs the same
    /// build as rank 0, known by its content (the executable's GNU build-id). A rank that
    /// is lost ends the run: workers are not replaced, and a lost rank's chunks are not
    /// sent again.
    #[cfg(feature = "mpi")]
    Mpi,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        Self {
            workers: 0,
            watcher: None,
            program: None,
            env: Vec::new(),
            max_retries: 3,
            chunks_in_flight: 2,
            start_timeout: Duration::from_secs(10),
            task_timeout: None,
            initializer: None,
            max_tasks_per_worker: None,
            worker_name_prefix: DEFAULT_WORKER_NAME_PREFIX.into(),
            transport: Transport::Local,
            max_retries_given: false,
        }
    }
}

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("workers", &self.workers)
            .field("watched", &self.watcher.is_some())
            .field("program", &self.program)
            .field("max_retries", &self.max_retries)
            .field("chunks_in_flight", &self.chunks_in_flight)
            .field("start_timeout", &self.start_timeout)
            .field("task_timeout", &self.task_timeout)
            .field("max_tasks_per_worker", &self.max_tasks_per_worker)
            .field("worker_name_prefix", &self.worker_name_prefix)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

impl PoolBuilder {
    /// How many worker processes to run; 0 (the default) means one per logical CPU.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Starts `watch` with an observer of the pool before the workers join, so that a live
    /// view sees them start. What it returns lives as long as the pool's workers: it is
    /// dropped first when the pool stops (a view draws its last refresh then).
    pub fn watch<W: Send + 'static>(
        mut self,
        watch: impl FnOnce(PoolObserver) -> std::io::Result<W> + Send + 'static,
    ) -> Self {
        self.watcher = Some(Box::new(move |observer| Ok(Box::new(watch(observer)?) as Box<dyn Send>)));
        self
    }

    /// Another program for the workers to run, one that calls [`init_with`](crate::task::init_with) with
    /// the [`Task`](crate::task::Task)s it runs by name. Without it (the usual case), each
    /// worker is a copy of this very program, which alone can run plain functions.
    pub fn worker_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Runs `initializer(args)` once in each worker (replacements too) before its first
    /// task, like Python's `initializer` and `initargs`: to open a file, load a model,
    /// set up what every task of that worker uses (in a `static`, say). It must capture
    /// nothing, as the pool's functions. If it returns an `Err` or panics, building the
    /// pool fails with its message (nothing is retried).
    pub fn initializer<F, A, O>(mut self, initializer: F, args: A) -> Self
    where
        F: Fn(A) -> O + Copy + 'static,
        A: Serialize + DeserializeOwned,
        O: InitOutcome,
    {
        let _ = initializer;
        let offset = offset_of(run_initializer::<F, A, O>);
        let setting = corepool_protocol::codec::encode(&args)
            .map(|args| format!("{offset:x}:{}", encode_hex(&args)))
            .map_err(|e| format!("the initializer's arguments: {e}"));
        self.initializer = Some(setting);
        self
    }

    /// Sets an environment variable for every worker.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// How many workers a chunk may take down before it fails (default 3; at least 1).
    /// Until then, each chunk a dead worker held is sent again.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries.max(1);
        self.max_retries_given = true;
        self
    }

    /// How many chunks each worker may hold at once (default 2): one to work on, one on
    /// its way, so that no worker waits for a round trip between chunks.
    pub fn chunks_in_flight(mut self, chunks: usize) -> Self {
        self.chunks_in_flight = chunks.max(1);
        self
    }

    /// How long every worker together may take to start and join (default 10 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long a worker may hold a chunk without answering (default: no limit). A worker
    /// over the limit is killed and its chunks are sent again, as for a worker that died;
    /// with a limit set, every call on the pool returns in bounded time.
    pub fn task_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.task_timeout = timeout;
        self
    }

    /// Replaces each worker once it has been sent `tasks` chunks and has answered them
    /// (Python's `maxtasksperchild`; `None`, the default: workers live as long as the
    /// pool). A worker so replaced is told to stop, as planned: no chunk is sent again and
    /// no retry is counted, and its slot counts it in [`WorkerStats::retired`](super::WorkerStats::retired),
    /// not in `restarts`. `Some(0)` is taken as `Some(1)`.
    pub fn max_tasks_per_worker(mut self, tasks: Option<u64>) -> Self {
        self.max_tasks_per_worker = tasks.map(|tasks| tasks.max(1));
        self
    }

    /// Names the workers `{prefix}-w0`, `{prefix}-w1`, ... (process name and `argv[0]`, as
    /// `ps` and `top` show them; default `corepool`). The prefix must be 1 to
    /// [`MAX_WORKER_NAME_PREFIX`] bytes, without `/` or NUL, so that the whole name fits
    /// Linux's 15-byte process name; [`build`](Self::build) fails otherwise.
    pub fn worker_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.worker_name_prefix = prefix.into();
        self
    }

    /// How the pool reaches its workers: local processes (the default) or, with the `mpi`
    /// feature, the ranks of an MPI job. Under MPI the number of workers is the job's ranks
    /// less one (a different [`workers`](Self::workers) is refused), and
    /// [`max_retries`](Self::max_retries) and
    /// [`max_tasks_per_worker`](Self::max_tasks_per_worker) are refused: a lost rank cannot
    /// be replaced.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Starts the workers and waits until every one has joined. Fails with
    /// [`PoolError::InsideWorker`] in a process that a pool started as its worker: inside
    /// a task; a worker whose `main` did not call [`crate::init`] exits instead, and its
    /// coordinator's `build` fails so.
    pub fn build(self) -> Result<Pool, PoolError> {
        corepool_worker::exit_if_init_forgotten();
        if corepool_worker::started_as_worker() {
            return Err(PoolError::InsideWorker);
        }
        check_worker_name_prefix(&self.worker_name_prefix)?;
        let initializer = self.initializer.transpose().map_err(PoolError::Settings)?;
        let (engine, workers) = match self.transport {
            Transport::Local => {
                let workers = if self.workers == 0 { logical_cpus() } else { self.workers };
                (transport::Engine::Socket(SocketEngine::open()?), workers)
            }
            #[cfg(feature = "mpi")]
            Transport::Mpi => {
                // A rank other than 0 that builds a pool runs `main` without `init`.
                if crate::mpi::rank_from_env().is_some_and(|rank| rank != crate::mpi::COORDINATOR) {
                    return Err(crate::pool::mpi::process::refuse_pool_on_worker_rank());
                }
                let refused = |what: &str| {
                    PoolError::Settings(format!("{what} is not available with MPI: a lost rank cannot be replaced"))
                };
                if self.max_retries_given {
                    return Err(refused("max_retries"));
                }
                if self.max_tasks_per_worker.is_some() {
                    return Err(refused("max_tasks_per_worker"));
                }
                // Ranks on other hosts hold other files: the same build is known by its content.
                let settings = RankSettings {
                    identity: corepool_worker::function::content_identity().ok(),
                    initializer: initializer.clone(),
                    name_prefix: self.worker_name_prefix.clone(),
                };
                let (engine, workers) = MpiEngine::open(self.workers, settings)?;
                (transport::Engine::Mpi(engine), workers)
            }
        };
        let local = matches!(engine, transport::Engine::Socket(_));
        let program = match self.program {
            Some(program) => program,
            None => own_program().map_err(|error| PoolError::Settings(format!("cannot find this program: {error}")))?,
        };
        let mut env = self.env;
        // A worker runs functions sent by address only if it runs this same file.
        if let Ok(identity) = program_identity() {
            env.push((IMAGE_ENV.to_owned(), identity));
        }
        if let Some(initializer) = initializer {
            env.push((INITIALIZER_ENV.to_owned(), initializer));
        }
        let settings = Settings {
            workers,
            program,
            env,
            // Under MPI a lost rank's chunks are not sent again: its loss ends their jobs.
            max_retries: if local { self.max_retries } else { 0 },
            chunks_in_flight: self.chunks_in_flight,
            start_timeout: self.start_timeout,
            task_timeout: self.task_timeout,
            respawn: local,
            max_tasks_per_worker: self.max_tasks_per_worker,
            worker_name_prefix: self.worker_name_prefix,
            // Polling needs a core of its own to be worth it.
            answer_poll: if platform::may_run_on_several_cpus() { ANSWER_POLL } else { Duration::ZERO },
        };
        let shared = Shared::start(settings, engine);
        // From here on, a failed start drops `pool`, which stops whatever did start.
        let pool = Pool { shared };
        if platform::on_main_thread() {
            // A failure breaks the pool, which the wait below reports.
            pool.shared.start_first_workers_here();
        }
        // The supervisor starts the workers (elsewhere than on the main thread) and
        // replaces them; the rest is set up while they load. Neither it nor the acceptor
        // is joined: both return as soon as the pool stops, and waiting for them to be
        // scheduled would only lengthen every stop.
        std::thread::Builder::new()
            // No coordinator thread is named like a worker (`corepool-wN`): a child takes its
            // spawning thread's name until it execs.
            .name("corepool-supervisor".into())
            .spawn({
                let shared = Arc::clone(&pool.shared);
                move || shared.watch_loop()
            })
            .map_err(PoolError::Thread)?;
        if let Some(start) = self.watcher {
            let watcher = start(PoolObserver { shared: Arc::clone(&pool.shared) }).map_err(PoolError::Thread)?;
            *pool.shared.watcher.lock().unwrap_or_else(|e| e.into_inner()) = Some(watcher);
        }
        pool.shared.admit_until_ready()?;
        // The acceptor, which admits the workers that replace those that die, is started
        // by the supervisor.
        pool.shared.start_acceptor_later();
        Ok(pool)
    }
}

/// The workers' name prefix when none is given: workers are `corepool-w0`, `corepool-w1`, ...
pub const DEFAULT_WORKER_NAME_PREFIX: &str = "corepool";

/// Longest worker name prefix, in bytes: with `-w` and a four-digit index it fills Linux's
/// 15-byte process name.
pub const MAX_WORKER_NAME_PREFIX: usize = 15 - "-w9999".len();

/// Refuses a worker name prefix that cannot name a process.
fn check_worker_name_prefix(prefix: &str) -> Result<(), PoolError> {
    let reason = if prefix.is_empty() {
        "must not be empty".to_owned()
    } else if prefix.len() > MAX_WORKER_NAME_PREFIX {
        format!(
            "is {} bytes long; at most {MAX_WORKER_NAME_PREFIX} fit the 15-byte process name with `-wNNNN`",
            prefix.len()
        )
    } else if prefix.contains('/') {
        "must not hold `/`".to_owned()
    } else if prefix.contains('\0') {
        "must not hold a NUL byte".to_owned()
    } else {
        return Ok(());
    };
    Err(PoolError::BadWorkerName { prefix: prefix.to_owned(), reason })
}

/// How long [`Pool::apply`] polls for its answer before it sleeps. The answer to a small
/// call comes back within a socket round trip, and a sleeping caller adds a wake-up to
/// every call: up to half a round trip again (docs/performance.md). Polling takes one
/// core for at most this long, while the worker that has the call uses another.
const ANSWER_POLL: Duration = Duration::from_micros(100);

/// Logical CPUs available to this process.
pub fn logical_cpus() -> usize {
    // Asked once: the answer reads the process's CPU affinity and its cgroup's quota
    // from the kernel, which costs a tenth of a millisecond, on every pool start.
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_name_prefix_must_fit_a_process_name() {
        assert!(check_worker_name_prefix("corepool").is_ok());
        assert!(check_worker_name_prefix("my_app.v2").is_ok());
        for bad in ["", "ten_bytes!", "my/app", "my\0app"] {
            let error = check_worker_name_prefix(bad).expect_err(bad).to_string();
            assert!(error.starts_with("worker name prefix "), "{error}");
        }
        let long = check_worker_name_prefix("ten_bytes!").unwrap_err().to_string();
        assert!(long.contains("is 10 bytes long; at most 9"), "{long}");
    }
}
