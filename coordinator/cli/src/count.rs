//! Counting in range with each of the pool's methods, timed.

use std::{
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use corepool::{Callbacks, Pool, PoolError, WorkerStats};
use corepool_tutorial::{
    Matrix, WithBounds,
    matrix::{Values, default_chunk_rows},
    tasks::{CountInRange, CountInRangeStar},
};

use super::progress::Progress;
use super::{
    args::{GeneratorArgs, Mode},
    settings::{MatrixSource, PoolOptions},
};

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
    /// What each worker did, over every repetition.
    pub workers: Vec<WorkerStats>,
    /// Each repetition's times, in order (one for a run without `--repeat`).
    pub repetitions: Vec<Repetition>,
}

/// One run of the job, timed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Repetition {
    /// From submitting the first chunk until the last result was in.
    pub wall: Duration,
    /// Of that, the coordinator's time encoding chunks (distribution).
    pub encode: Duration,
    /// Of that, the coordinator's time decoding answers (gathering).
    pub decode: Duration,
}

impl Repetition {
    /// The rest of the wall time: the coordinator waiting while the workers compute.
    pub fn compute(&self) -> Duration {
        self.wall.saturating_sub(self.encode + self.decode)
    }
}

/// How [`count_in_pool`] runs, beyond what to count.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Runs of the job in the same pool.
    pub repeat: u32,
    /// Show the pool's live monitor.
    pub monitor: bool,
    /// Show a progress bar (if standard error is a terminal and the run lasts).
    pub progress: bool,
    /// Keep the order results arrived in (for `--order arrival`), not only the counts.
    pub keep_arrival: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { repeat: 1, monitor: false, progress: false, keep_arrival: false }
    }
}

impl Counted {
    /// Start, compute and stop together.
    pub fn total(&self) -> Duration {
        self.start + self.compute + self.stop
    }
}

/// Makes or reads the matrix; with it, the line number of a header the file had.
pub fn load_matrix(source: &MatrixSource) -> anyhow::Result<(Matrix, Option<u64>)> {
    match source {
        MatrixSource::File(path) => Ok(corepool_tutorial::input::read_matrix_and_header(path)?),
        &MatrixSource::Random(GeneratorArgs { rows, cols, low, high, seed }) => {
            Ok((Matrix::random(rows, cols, low, high, seed), None))
        }
    }
}

/// The serial count: a plain loop in this process, written apart from the task's code so
/// that it checks it.
pub fn count_serially(matrix: &Matrix, min: i64, max: i64) -> Vec<u32> {
    fn count<T: Copy + Into<i64>>(values: &[T], cols: usize, min: i64, max: i64) -> Vec<u32> {
        let in_range = |&value: &T| (min..=max).contains(&value.into());
        values.chunks_exact(cols).map(|row| row.iter().filter(|v| in_range(v)).count() as u32).collect()
    }
    let cols = matrix.cols();
    if cols == 0 {
        return vec![0; matrix.rows()];
    }
    match matrix.values() {
        Values::I8(values) => count(values, cols, min, max),
        Values::I16(values) => count(values, cols, min, max),
        Values::I32(values) => count(values, cols, min, max),
        Values::I64(values) => count(values, cols, min, max),
    }
}

/// Counts with `mode` as `options` say, starting and stopping a pool of `workers` for it.
pub fn count_with(
    matrix: &Arc<Matrix>,
    mode: Mode,
    bounds: (i64, i64),
    settings: &PoolOptions,
    options: RunOptions,
) -> anyhow::Result<Counted> {
    match mode {
        Mode::Serial => count_serially_repeated(matrix, bounds, options.repeat),
        _ => count_in_pool(start_pool(settings, options.monitor)?, matrix, mode, bounds, settings, options),
    }
}

/// Counts serially in this process `repeat` times; fails if a repetition disagrees with
/// the first.
pub fn count_serially_repeated(matrix: &Matrix, (min, max): (i64, i64), repeat: u32) -> anyhow::Result<Counted> {
    let mut repetitions = Vec::new();
    let mut counts = Vec::new();
    for repetition in 0..repeat {
        let started = Instant::now();
        let again = count_serially(matrix, min, max);
        repetitions.push(Repetition { wall: started.elapsed(), ..Repetition::default() });
        check_repetition(repetition, &counts, &again)?;
        counts = again;
    }
    let compute = repetitions.iter().map(|r| r.wall).sum();
    Ok(Counted {
        counts,
        arrival: None,
        start: Duration::ZERO,
        compute,
        stop: Duration::ZERO,
        chunk_size: 0,
        workers: vec![],
        repetitions,
    })
}

/// A pool started for a count, and how long it took to start.
pub struct StartedPool {
    pool: Pool,
    start: Duration,
}

/// Starts the pool for a count; [`count_in_pool`] runs the count in it.
pub fn start_pool(settings: &PoolOptions, monitor: bool) -> anyhow::Result<StartedPool> {
    let started = Instant::now();
    let pool = settings.builder();
    let pool = crate::monitor::shown_if(pool, monitor);
    let pool = super::signals::while_starting_or_stopping(|| pool.build()).context("starting the pool")?;
    Ok(StartedPool { pool, start: started.elapsed() })
}

/// Counts with `mode` (not serial) `options.repeat` times in `started`, then stops it;
/// fails if a repetition disagrees with the first.
pub fn count_in_pool(
    started: StartedPool,
    matrix: &Arc<Matrix>,
    mode: Mode,
    (min, max): (i64, i64),
    settings: &PoolOptions,
    options: RunOptions,
) -> anyhow::Result<Counted> {
    let StartedPool { mut pool, start } = started;
    let workers = pool.workers();
    let rows = matrix.rows();
    let chunk_size = match mode {
        Mode::Apply | Mode::ApplyAsync => 1,
        _ => settings
            .chunk_size
            .unwrap_or_else(|| default_chunk_rows(rows, workers, matrix.cols() * matrix.value_bytes())),
    };
    let progress = options.progress.then(|| Progress::start(pool.observer(), rows as u64, options.repeat));
    let mut repetitions = Vec::new();
    let (mut counts, mut arrival) = (Vec::new(), None);
    for repetition in 0..options.repeat {
        let codec = pool.codec_time();
        let started = Instant::now();
        let (again, again_arrival) = count_once(&pool, mode, matrix, (min, max), chunk_size, options.keep_arrival)?;
        let wall = started.elapsed();
        let codec = pool.codec_time() - codec;
        repetitions.push(Repetition { wall, encode: codec.encode, decode: codec.decode });
        check_repetition(repetition, &counts, &again)?;
        (counts, arrival) = (again, again_arrival);
    }
    drop(progress);
    let compute = repetitions.iter().map(|r| r.wall).sum();
    let workers = pool.worker_stats();
    let started = Instant::now();
    super::signals::while_starting_or_stopping(|| {
        pool.close();
        pool.join();
    });
    let stop = started.elapsed();
    Ok(Counted { counts, arrival, start, compute, stop, chunk_size, workers, repetitions })
}

/// Fails if repetition `repetition` (from 0) gave other counts than the one before.
fn check_repetition(repetition: u32, before: &[u32], counts: &[u32]) -> anyhow::Result<()> {
    match first_difference(counts, before) {
        Some(difference) if repetition > 0 => {
            bail!("repetition {} disagrees with the one before: {difference}", repetition + 1)
        }
        _ => Ok(()),
    }
}

/// The counts, and the arrival order for arrival-ordered modes, of one run in `pool`.
type Once = (Vec<u32>, Option<Vec<(usize, u32)>>);

/// Runs the job once in `pool`.
fn count_once(
    pool: &Pool,
    mode: Mode,
    matrix: &Arc<Matrix>,
    (min, max): (i64, i64),
    chunk_size: usize,
    keep_arrival: bool,
) -> anyhow::Result<Once> {
    let rows = matrix.rows();
    let task = CountInRange { min, max };
    Ok(match mode {
        Mode::Serial => unreachable!("handled above"),
        Mode::Apply => ((0..rows).map(|row| pool.apply_task(&task, &**matrix, row)).collect::<Result<_, _>>()?, None),
        Mode::Map => (pool.map_task(&task, &**matrix, Some(chunk_size))?, None),
        Mode::Starmap => {
            let items = WithBounds { matrix: &**matrix, min, max };
            (pool.starmap_task(&CountInRangeStar, &items, Some(chunk_size))?, None)
        }
        // `imap`'s outputs are taken a chunk at a time, as each becomes ready (cheaper than
        // one at a time: see `IMap::next_chunk`).
        Mode::Imap => {
            let mut outputs = pool.imap_task(&task, &**matrix, Some(chunk_size))?;
            let mut counts = Vec::with_capacity(rows);
            while let Some(chunk) = outputs.next_chunk() {
                counts.extend_from_slice(&chunk?.1);
            }
            (counts, None)
        }
        Mode::ImapUnordered => {
            let mut outputs = pool.imap_unordered_task(&task, &**matrix, Some(chunk_size))?;
            gather_arrivals(rows, std::iter::from_fn(|| outputs.next_chunk()), keep_arrival)?
        }
        Mode::ApplyAsync => {
            let arrivals = apply_async_all(pool, &task, matrix)?.into_iter().map(|(row, count)| Ok((row, [count])));
            gather_arrivals(rows, arrivals, keep_arrival)?
        }
        Mode::MapAsync => {
            (pool.map_async_task(task, Arc::clone(matrix), Some(chunk_size), Callbacks::none())?.get(None)?, None)
        }
        Mode::StarmapAsync => {
            let items = WithBounds { matrix: Arc::clone(matrix), min, max };
            (pool.starmap_async_task(CountInRangeStar, items, Some(chunk_size), Callbacks::none())?.get(None)?, None)
        }
    })
}

/// The tutorial's `apply_async` loop: one task per row, every one submitted before any
/// result is read; a callback collects `(row, count)` as results arrive, and the handles
/// are dropped, as the tutorial's are. Rather than close the pool, so that `--repeat` can
/// run it again, it waits until every callback has run.
fn apply_async_all(pool: &Pool, task: &CountInRange, matrix: &Matrix) -> anyhow::Result<Vec<(usize, u32)>> {
    let rows = matrix.rows();
    let gathered = Arc::new(Gathered {
        arrivals: Mutex::new(Arrivals { results: Vec::with_capacity(rows), finished: 0, first_error: None }),
        all_in: Condvar::new(),
    });
    for row in 0..rows {
        let gathered = Arc::clone(&gathered);
        // One callback for a result or an error, so that a call makes one allocation for it.
        let callbacks = Callbacks::on_result(move |result: Result<&u32, &PoolError>| gathered.take(row, rows, result));
        pool.apply_async_task(task, matrix, row, callbacks)?;
    }
    let mut arrivals = gathered.arrivals.lock().unwrap_or_else(|e| e.into_inner());
    while arrivals.finished < rows {
        arrivals = gathered.all_in.wait(arrivals).unwrap_or_else(|e| e.into_inner());
    }
    // A row that failed has its error here (the first, in row order, is reported).
    if let Some((_, error)) = arrivals.first_error.take() {
        bail!(error);
    }
    Ok(std::mem::take(&mut arrivals.results))
}

/// What [`apply_async_all`]'s callbacks share.
struct Gathered {
    arrivals: Mutex<Arrivals>,
    /// Signalled when the last callback has run.
    all_in: Condvar,
}

struct Arrivals {
    results: Vec<(usize, u32)>,
    finished: usize,
    first_error: Option<(usize, String)>,
}

impl Gathered {
    /// Takes row `row`'s result, one of `rows`.
    fn take(&self, row: usize, rows: usize, result: Result<&u32, &PoolError>) {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(&count) => arrivals.results.push((row, count)),
            Err(error) => {
                if arrivals.first_error.as_ref().is_none_or(|(first, _)| row < *first) {
                    arrivals.first_error = Some((row, error.to_string()));
                }
            }
        }
        arrivals.finished += 1;
        if arrivals.finished == rows {
            self.all_in.notify_all();
        }
    }
}

/// Puts results that arrive in any order, as runs of consecutive rows (a chunk's, or one
/// row's), back in row order, refusing a lost or repeated row; keeps the arrival order too
/// if asked.
fn gather_arrivals<Counts: AsRef<[u32]>>(
    rows: usize,
    arrivals: impl Iterator<Item = Result<(usize, Counts), PoolError>>,
    keep_arrival: bool,
) -> anyhow::Result<Once> {
    let mut counts = vec![0; rows];
    let mut order = keep_arrival.then(|| Vec::with_capacity(rows));
    // The rows that came back, as runs of consecutive rows: checked once at the end,
    // rather than row by row. The first run is empty and ends past every row, so that no
    // row extends it.
    let mut runs = Vec::new();
    let mut run = usize::MAX..usize::MAX;
    for arrival in arrivals {
        let (first, arrived) = arrival?;
        let arrived = arrived.as_ref();
        let end = first + arrived.len();
        let slots = counts
            .get_mut(first..end)
            .ok_or_else(|| anyhow!("a result came back for row {}, past the last row", first.max(rows)))?;
        slots.copy_from_slice(arrived);
        if first == run.end {
            run.end = end;
        } else {
            runs.push(std::mem::replace(&mut run, first..end));
        }
        if let Some(order) = &mut order {
            order.extend((first..).zip(arrived.iter().copied()));
        }
    }
    runs.push(run);
    runs.retain(|run| !run.is_empty());
    runs.sort_unstable_by_key(|run| run.start);
    let mut covered = 0;
    for run in runs {
        if run.start < covered {
            bail!("row {} came back twice", run.start);
        }
        if run.start > covered {
            bail!("no result came back for row {covered}");
        }
        covered = run.end;
    }
    if covered < rows {
        bail!("no result came back for row {covered}");
    }
    Ok((counts, order))
}

/// The first row where `counts` differs from `expected`, if any.
pub fn first_difference(counts: &[u32], expected: &[u32]) -> Option<String> {
    if counts.len() != expected.len() {
        return Some(format!("{} counts for {} rows", counts.len(), expected.len()));
    }
    let row = counts.iter().zip(expected).position(|(a, b)| a != b)?;
    Some(format!("row {row}: {} instead of {}", counts[row], expected[row]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(rows: usize, arrivals: &[(usize, u32)]) -> anyhow::Result<Once> {
        gather_arrivals(rows, arrivals.iter().map(|&(row, count)| Ok((row, [count]))), true)
    }

    #[test]
    fn arrivals_in_any_chunk_order_are_put_back_in_row_order() {
        let arrivals = [(4, 40), (5, 50), (0, 0), (1, 10), (6, 60), (2, 20), (3, 30)];
        let (counts, order) = gather(7, &arrivals).unwrap();
        assert_eq!(counts, [0, 10, 20, 30, 40, 50, 60]);
        assert_eq!(order.unwrap(), arrivals);
        assert_eq!(gather(0, &[]).unwrap().0, Vec::<u32>::new());
    }

    #[test]
    fn a_row_twice_missing_or_past_the_end_is_an_error() {
        let error = |rows, arrivals: &[(usize, u32)]| gather(rows, arrivals).unwrap_err().to_string();
        assert_eq!(error(3, &[(0, 1), (1, 1), (1, 1), (2, 1)]), "row 1 came back twice");
        assert_eq!(error(3, &[(2, 1), (0, 1), (1, 1), (2, 1)]), "row 2 came back twice");
        assert_eq!(error(4, &[(0, 1), (1, 1), (3, 1)]), "no result came back for row 2");
        assert_eq!(error(3, &[(1, 1), (2, 1)]), "no result came back for row 0");
        assert_eq!(error(3, &[(0, 1), (1, 1)]), "no result came back for row 2");
        assert_eq!(error(2, &[(0, 1), (2, 1)]), "a result came back for row 2, past the last row");
    }

    #[test]
    fn chunks_are_put_in_place_whole_and_checked_like_rows() {
        let chunks = [(3, vec![30, 40]), (0, vec![0, 10, 20]), (5, vec![50])];
        let (counts, order) = gather_arrivals(6, chunks.iter().map(|(first, c)| Ok((*first, c))), true).unwrap();
        assert_eq!(counts, [0, 10, 20, 30, 40, 50]);
        assert_eq!(order.unwrap(), [(3, 30), (4, 40), (0, 0), (1, 10), (2, 20), (5, 50)]);
        let error = |chunks: &[(usize, Vec<u32>)]| {
            gather_arrivals(5, chunks.iter().map(|(first, c)| Ok((*first, c))), false).unwrap_err().to_string()
        };
        assert_eq!(error(&[(0, vec![1, 1, 1]), (2, vec![1, 1, 1])]), "row 2 came back twice");
        assert_eq!(error(&[(0, vec![1, 1]), (3, vec![1, 1])]), "no result came back for row 2");
        assert_eq!(error(&[(0, vec![1, 1]), (2, vec![1, 1, 1, 1])]), "a result came back for row 5, past the last row");
    }
}
