//! corepool: Python's `multiprocessing.Pool`, with real OS processes, in Rust.
//!
//! A [`Pool`] starts worker processes (by default one per logical CPU), sends them chunks
//! of items over local sockets, and gathers the results either in submission order
//! ([`Pool::map`], [`Pool::imap`], ...) or as they arrive ([`Pool::imap_unordered`],
//! [`Pool::apply_async`] with callbacks, ...).
//!
//! # Example
//!
//! ```no_run
//! use corepool::{Matrix, Pool};
//! use corepool_worker::tasks::CountInRange;
//!
//! let matrix = Matrix::random(200_000, 5, 0, 10, 2019);
//! let pool = Pool::new(0)?; // one worker per logical CPU
//! let counts = pool.map(&CountInRange { min: 4, max: 8 }, &matrix, None)?;
//! assert_eq!(counts.len(), 200_000);
//! # Ok::<(), corepool::PoolError>(())
//! ```
//!
//! Workers run tasks their [`corepool_worker::Registry`] knows. The default worker
//! program, `corepool-worker`, knows corepool's own tasks; for tasks of your own, see
//! [`corepool_worker`].
//!
//! # Watching
//!
//! Workers are named `corepool-w0`, `corepool-w1`, ... in `top`, `htop` and `ps` (their
//! process name and `argv[0]`). [`PoolBuilder::monitor`] shows a live view of every
//! process on standard error; [`Pool::worker_stats`] gives what each worker did (rows,
//! chunks, busy time, CPU time, peak memory, restarts), and [`Pool::observer`] a handle
//! that another thread can poll, for a progress bar:
//!
//! ```no_run
//! use corepool::{Balance, Matrix, Pool};
//! use corepool_worker::tasks::CountInRange;
//!
//! let matrix = Matrix::random(2_000_000, 5, 0, 10, 2019);
//! let pool = Pool::builder().workers(4).monitor(true).build()?;
//! let observer = pool.observer();
//! std::thread::spawn(move || loop {
//!     eprintln!("{} rows done", observer.rows_done());
//!     std::thread::sleep(std::time::Duration::from_secs(1));
//! });
//! pool.map(&CountInRange { min: 4, max: 8 }, &matrix, None)?;
//! let workers = pool.worker_stats(); // before the workers exit, for their CPU times
//! for (index, worker) in workers.iter().enumerate() {
//!     println!("corepool-w{index}: {} rows, busy {:?}, cpu {:?}", worker.rows, worker.busy, worker.cpu_user);
//! }
//! println!("rows min/max: {:.2}", Balance::of(&workers).map_or(1.0, |b| b.rows_ratio));
//! # Ok::<(), corepool::PoolError>(())
//! ```
//!
//! # Shutdown
//!
//! [`Pool::close`] then [`Pool::join`] finish the submitted work and let the workers exit;
//! [`Pool::terminate`] kills them at once. Dropping a pool stops its workers (a shutdown
//! message, then a kill after a grace period), reaps them, and removes its private socket
//! directory. Workers also exit by themselves when their connection closes, and on Linux
//! when the coordinator process dies.

pub mod input;
pub mod items;
pub mod matrix;
pub mod pool;

pub use items::{Items, WithBounds};
pub use matrix::Matrix;
pub use pool::{
    AsyncResult, Balance, Callbacks, CodecTime, IMap, IMapUnordered, Monitor, Pool, PoolBuilder, PoolError,
    PoolObserver, WorkerState, WorkerStats, default_chunk_size,
};
pub use pool::{ChunkLen, IMapIter, IMapUnorderedIter, OneChunk};
