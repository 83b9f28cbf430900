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
//! # Streaming
//!
//! [`Pool::imap_iter`] and [`Pool::imap_unordered_iter`] map over chunks that an iterator
//! yields one at a time, never collected: a bounded window of chunks is read ahead, so the
//! input may be far larger than memory. [`input::csv`] cuts a CSV stream into pieces of
//! whole lines that the workers parse themselves ([`corepool_worker::text::CountText`]);
//! [`input::npy`] cuts a `.npy` file's rows into ranges the workers read
//! ([`corepool_worker::values::CountNpyRows`]):
//!
//! ```no_run
//! use corepool::{Pool, input::csv::{CsvOptions, open_csv}};
//! use corepool_worker::{text::CountText, values::{Number, ValueRange}};
//!
//! let file = std::fs::File::open("matrix.csv")?;
//! let (layout, mut pieces) = open_csv(file, "matrix.csv", CsvOptions::default())?;
//! let task: CountText = layout.count_task(ValueRange { min: Number::Int(4), max: Number::Float(8.5) });
//! let pool = Pool::new(0)?;
//! let mut results = pool.imap_iter(&task, &mut pieces)?;
//! while let Some(chunk) = results.next_chunk() {
//!     let (first_row, counts) = chunk?; // in row order, a piece at a time
//!     println!("rows {first_row}..{}: {} values in range", first_row + counts.len(), counts.iter().sum::<u32>());
//! }
//! drop(results);
//! if let Some(error) = pieces.take_error() {
//!     eprintln!("{error}"); // an I/O error ended the file early
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
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
pub mod outgoing;
pub mod pool;

pub use items::{Items, WithBounds};
pub use matrix::Matrix;
pub use pool::{
    AsyncResult, Balance, Callbacks, CodecTime, IMap, IMapUnordered, MAX_DEFAULT_CHUNK, Monitor, Pool, PoolBuilder,
    PoolError, PoolObserver, WorkerState, WorkerStats, default_chunk_size,
};
pub use pool::{ChunkLen, IMapIter, IMapUnorderedIter, OneChunk};
