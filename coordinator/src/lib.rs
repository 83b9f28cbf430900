//! corepool: Python's `multiprocessing.Pool`, with real OS processes, in Rust.
//!
//! A [`Pool`] starts worker processes (one per logical CPU by default), each a copy of
//! this same program, sends them your items in chunks over local sockets, runs your
//! function on them there, and gives the results back in item order ([`Pool::map`],
//! [`Pool::imap`], ...) or as they arrive ([`Pool::imap_unordered`],
//! [`Pool::apply_async`] with callbacks, ...). A task that panics, or a worker that
//! dies, fails only its own items; a dead worker is replaced.
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Point {
//!     x: f64,
//!     y: f64,
//! }
//!
//! fn norm(p: Point) -> f64 {
//!     (p.x * p.x + p.y * p.y).sqrt()
//! }
//!
//! fn main() -> Result<(), corepool::PoolError> {
//!     corepool::init(); // in a worker, serves and exits; here, returns at once
//!     let points = (0..1000).map(|i| Point { x: i as f64, y: 1.0 });
//!     let pool = corepool::Pool::builder().workers(2).build()?;
//!     let norms = pool.map(norm, points)?;
//!     assert_eq!(norms[0], 1.0);
//!     let total: f64 = pool.imap(|x: f64| x * 2.0, norms)?.sum::<Result<f64, _>>()?;
//!     println!("{total}");
//!     Ok(())
//! }
//! ```
//!
//! The function is a plain `fn`, or a closure that captures nothing (the compiler says so
//! otherwise), over any serde types. It reaches a worker as an address within this
//! program, which a worker trusts only after checking that it runs the very same
//! executable file. A closure that captures a variable, or a `fn` pointer, does not compile
//! (at `cargo build`; `cargo check` does not see it):
//!
//! ```compile_fail,E0080
//! fn main() -> Result<(), corepool::PoolError> {
//!     corepool::init();
//!     let pool = corepool::Pool::new()?;
//!     let offset = 10;
//!     // "a function sent to workers must be a function item or a closure that captures
//!     // nothing": pass `offset` in the items.
//!     let shifted = pool.map(move |x: i64| x + offset, 0..100)?;
//!     Ok(())
//! }
//! ```
//!
//! Set-up each worker needs once goes in
//! [`PoolBuilder::initializer`]; the chunk size of a call in [`Pool::chunksize`].
//!
//! **Call [`init`] first thing in `main`.** A worker runs `main` from the start; `init`
//! turns it into a worker there. A program that forgets it gets
//! [`PoolError::InsideWorker`] from [`PoolBuilder::build`] at once (its first worker to run
//! `main` reports it and exits), never a cascade of processes.
//!
//! The [`task`] module holds the advanced path: a [`task::Task`] chooses the wire form of
//! its chunks (a matrix's rows sent straight from its memory, say), and a worker program
//! may be another binary that finds tasks by name.
//!
//! # Watching
//!
//! Workers are named `corepool-w0`, `corepool-w1`, ... in `top`, `htop` and `ps` (their
//! process name and `argv[0]`). [`Pool::worker_stats`] gives what each worker did (rows,
//! chunks, busy time, CPU time, peak memory, restarts), and [`Pool::observer`] a handle
//! that another thread can poll, for a progress bar or a live view
//! ([`PoolBuilder::watch`] starts one before the workers join).
//!
//! # Shutdown
//!
//! [`Pool::close`] then [`Pool::join`] finish the submitted work and let the workers exit;
//! [`Pool::terminate`] kills them at once. Dropping a pool stops its workers (a shutdown
//! message, then a kill after a grace period), reaps them, and removes its private socket
//! directory. Workers also exit by themselves when their connection closes, and on Linux
//! when the coordinator process dies.

mod items;
// The pool's modules name it from here.
use items::Items;
mod outgoing;
mod pool;

pub use corepool_protocol::{FailureKind, TaskFailure};
pub use corepool_worker::function::InitOutcome;
#[cfg(not(feature = "mpi"))]
pub use corepool_worker::init;
#[cfg(feature = "mpi")]
pub use pool::mpi;
#[cfg(feature = "mpi")]
pub use pool::mpi::process::init;
pub use pool::{
    AsyncResult, Balance, Callbacks, Chunked, DEFAULT_WORKER_NAME_PREFIX, IntoItem, MAX_WORKER_NAME_PREFIX, Pool,
    PoolBuilder, PoolError, PoolObserver, Transport, Wire, WorkerState, WorkerStats, logical_cpus, terminate_all,
};
pub use pool::{HeldWork, work_held_by_ranks};

pub mod task {
    //! The advanced path: tasks that choose the wire form of their chunks, and worker programs
    //! that find tasks by name.
    //!
    //! A [`Task`] is a type whose value travels with each chunk (its parameters), with a
    //! `run` over a whole chunk; a worker finds it by [`Task::NAME`] in the [`Registry`] given
    //! to [`init_with`]. The pool's `*_task` calls ([`Pool::map_task`](crate::Pool::map_task),
    //! ...) cut [`Items`] into chunks for it.

    pub use crate::items::{Items, whole_frame};
    pub use crate::outgoing::{AsBytes, Outgoing, SharedBytes};
    #[cfg(feature = "mpi")]
    pub use crate::pool::mpi::process::init_with;
    pub use crate::pool::{
        ChunkLen, ChunkOutputs, CodecTime, IMap, IMapIter, IMapUnordered, IMapUnorderedIter, MAX_DEFAULT_CHUNK,
        OneChunk, default_chunk_size,
    };
    pub use corepool_protocol::{codec, frame::MAX_FRAME_LEN};
    #[cfg(not(feature = "mpi"))]
    pub use corepool_worker::init_with;
    pub use corepool_worker::{Registry, Task, WorkerError, encode_payload};
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
