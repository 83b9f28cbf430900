//! corepool: Python's `multiprocessing.Pool`, with real OS processes, in Rust.
//!
//! A [`Pool`] starts worker processes (by default one per logical CPU), sends them chunks
//! of items over local sockets, and gathers the results either in submission order
//! ([`Pool::map`], [`Pool::imap`], ...) or as they arrive ([`Pool::imap_unordered`],
//! [`Pool::apply_async`] with callbacks, ...).
//!
//! A worker is this same program, started again: call [`init`] (or [`init_with`]) first
//! thing in `main`, which turns that copy into a worker and returns at once in any other.
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

pub mod items;
pub mod outgoing;
pub mod pool;

pub use corepool_protocol::{FailureKind, TaskFailure, codec, frame::MAX_FRAME_LEN};
pub use corepool_worker::{Registry, Task, WorkerError, encode_payload, init, init_with};
pub use items::Items;
pub use pool::{
    AsyncResult, Balance, Callbacks, CodecTime, IMap, IMapUnordered, MAX_DEFAULT_CHUNK, Pool, PoolBuilder, PoolError,
    PoolObserver, WorkerState, WorkerStats, default_chunk_size,
};
pub use pool::{ChunkLen, IMapIter, IMapUnorderedIter, OneChunk};
