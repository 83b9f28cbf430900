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
