//! Counting in range with each of the pool's methods, timed.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use corepool::{Callbacks, Matrix, Pool, PoolError, WithBounds, WorkerStats, default_chunk_size};
use corepool_worker::tasks::{CountInRange, CountInRangeStar};

use super::args::{MatrixSource, Mode, PoolOptions};

/// The counts of one run, and how long its parts took.
#[derive(Debug)]
pub struct Counted {
    /// Count for each row, in row order.
    pub counts: Vec<u32>,
    /// `(row, count)` in the order results reached the caller, for arrival-ordered modes.
    pub arrival: Option<Vec<(usize, u32)>>,
    /// Starting the workers until all had joined.
    pub start: Duration,
    /// Submitting the work until the last result was in.
    pub compute: Duration,
    /// Stopping the workers and waiting for them to exit.
    pub stop: Duration,
    /// Rows per chunk (1 for per-row modes; 0 for serial).
    pub chunk_size: usize,
    /// What each worker did.
    pub workers: Vec<WorkerStats>,
}

impl Counted {
    /// Start, compute and stop together.
    pub fn total(&self) -> Duration {
        self.start + self.compute + self.stop
    }
}

/// Makes or reads the matrix.
pub fn load_matrix(source: &MatrixSource) -> anyhow::Result<Matrix> {
    match source {
        MatrixSource::File(path) => Ok(corepool::input::read_matrix(path)?),
        &MatrixSource::Random { rows, cols, low, high, seed } => Ok(Matrix::random(rows, cols, low, high, seed)),
    }
}

/// The serial count: a plain loop in this process, written apart from the task's code so
/// that it checks it.
pub fn count_serially(matrix: &Matrix, min: i64, max: i64) -> Vec<u32> {
    matrix.iter_rows().map(|row| row.iter().filter(|&&value| min <= value && value <= max).count() as u32).collect()
}

/// Counts with `mode`, starting and stopping a pool of `workers` for it.
pub fn count_with(
    matrix: &Arc<Matrix>,
    mode: Mode,
    (min, max): (i64, i64),
    options: &PoolOptions,
) -> anyhow::Result<Counted> {
    let (workers, chunk_size) = (options.workers, options.chunk_size);
    if mode == Mode::Serial {
        let started = Instant::now();
        let counts = count_serially(matrix, min, max);
        let compute = started.elapsed();
        let zero = Duration::ZERO;
        return Ok(Counted { counts, arrival: None, start: zero, compute, stop: zero, chunk_size: 0, workers: vec![] });
    }
    let started = Instant::now();
    let mut pool = Pool::builder()
        .workers(workers)
        .task_timeout(options.task_timeout)
        .max_retries(options.max_retries)
        .self_serving()?
        .build()
        .context("starting the pool")?;
    let start = started.elapsed();

    let rows = matrix.rows();
    let chunk_size = match mode {
        Mode::Apply | Mode::ApplyAsync => 1,
        _ => chunk_size.unwrap_or_else(|| default_chunk_size(rows, workers)),
    };
    let task = CountInRange { min, max };
    let started = Instant::now();
    let (counts, arrival) = match mode {
        Mode::Serial => unreachable!("handled above"),
        Mode::Apply => ((0..rows).map(|row| pool.apply(&task, &**matrix, row)).collect::<Result<_, _>>()?, None),
        Mode::Map => (pool.map(&task, &**matrix, Some(chunk_size))?, None),
        Mode::Starmap => {
            let items = WithBounds { matrix: &**matrix, min, max };
            (pool.starmap(&CountInRangeStar, &items, Some(chunk_size))?, None)
        }
        Mode::Imap => (pool.imap(&task, &**matrix, Some(chunk_size))?.collect::<Result<_, _>>()?, None),
        Mode::ImapUnordered => {
            let arrival: Vec<(usize, u32)> =
                pool.imap_unordered(&task, &**matrix, Some(chunk_size))?.collect::<Result<_, _>>()?;
            (place_by_row(rows, &arrival)?, Some(arrival))
        }
        Mode::ApplyAsync => {
            let arrival = apply_async_all(&mut pool, &task, matrix)?;
            (place_by_row(rows, &arrival)?, Some(arrival))
        }
        Mode::MapAsync => {
            (pool.map_async(task, Arc::clone(matrix), Some(chunk_size), Callbacks::none())?.get(None)?, None)
        }
        Mode::StarmapAsync => {
            let items = WithBounds { matrix: Arc::clone(matrix), min, max };
            (pool.starmap_async(CountInRangeStar, items, Some(chunk_size), Callbacks::none())?.get(None)?, None)
        }
    };
    let compute = started.elapsed();
    let workers = pool.worker_stats();
    let started = Instant::now();
    pool.close();
    pool.join();
    let stop = started.elapsed();
    Ok(Counted { counts, arrival, start, compute, stop, chunk_size, workers })
}

/// The tutorial's `apply_async` loop: one task per row, every one submitted before any
/// result is read; a callback collects `(row, count)` as results arrive.
fn apply_async_all(pool: &mut Pool, task: &CountInRange, matrix: &Matrix) -> anyhow::Result<Vec<(usize, u32)>> {
    let arrival = Arc::new(Mutex::new(Vec::with_capacity(matrix.rows())));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    for row in 0..matrix.rows() {
        let arrival = Arc::clone(&arrival);
        let first_error = Arc::clone(&first_error);
        let callbacks = Callbacks::on_success(move |&count| arrival.lock().unwrap().push((row, count))).or_on_error(
            move |error: &PoolError| {
                first_error.lock().unwrap().get_or_insert_with(|| error.to_string());
            },
        );
        pool.apply_async(task, matrix, row, callbacks)?;
    }
    pool.close();
    pool.join();
    if let Some(error) = first_error.lock().unwrap().take() {
        bail!(error);
    }
    Ok(std::mem::take(&mut *arrival.lock().unwrap()))
}

/// Puts arrival-ordered results back in row order, refusing a lost or repeated row.
fn place_by_row(rows: usize, arrival: &[(usize, u32)]) -> anyhow::Result<Vec<u32>> {
    let mut counts = vec![None; rows];
    for &(row, count) in arrival {
        let slot = counts.get_mut(row).ok_or_else(|| anyhow!("a result came back for row {row}, past the last row"))?;
        if slot.replace(count).is_some() {
            bail!("row {row} came back twice");
        }
    }
    counts
        .iter()
        .enumerate()
        .map(|(row, count)| count.ok_or_else(|| anyhow!("no result came back for row {row}")))
        .collect()
}

/// The first row where `counts` differs from `expected`, if any.
pub fn first_difference(counts: &[u32], expected: &[u32]) -> Option<String> {
    if counts.len() != expected.len() {
        return Some(format!("{} counts for {} rows", counts.len(), expected.len()));
    }
    let row = counts.iter().zip(expected).position(|(a, b)| a != b)?;
    Some(format!("row {row}: {} instead of {}", counts[row], expected[row]))
}
