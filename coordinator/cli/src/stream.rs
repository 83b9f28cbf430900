//! `corepool count --input`: the matrix streamed from a CSV file, standard input or a
//! `.npy` file, with bounded memory in every mode.
//!
//! CSV is cut into pieces of whole lines that the workers parse; a `.npy` file's rows are
//! cut into ranges that the workers read. Results are gathered in row order (or as they
//! arrive, for `imap-unordered` and `apply-async`) and written as they come. Modes that
//! in Python build a whole list (`map`, `starmap`, `map_async`, `starmap_async`) stream
//! here too, in row order; they then differ from `imap` only in name, since a file's rows
//! carry their bounds in the task rather than in each item.

use std::{
    io::Read,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use anyhow::anyhow;
use corepool::{
    FailureKind, Pool, PoolError, WorkerStats,
    task::{ChunkLen, OneChunk, Task},
};
use corepool_tutorial::{
    input::{
        csv::{CsvLayout, CsvOptions, CsvPieces, open_csv},
        npy::{NpyLayout, open_npy},
        source::{DataError, Format, Origin},
    },
    tasks::{CountInRange, RowBlock},
    text::TextPiece,
    values::{CountNpyRows, FileRows},
};

use super::{
    Failure,
    args::{GeneratorArgs, Mode, Order},
    bad_input,
    count::{Counted, Repetition},
    failed, limits, ms,
    pending::Pending,
    progress::Progress,
    reference, report,
    settings::{CountSettings, MatrixSource, StreamInput},
    sink::{CountSink, Expected, OutputFile, Totals},
    summary,
};

/// Rows per chunk for `.npy` files when `--chunk-size` is not given: about this many bytes
/// of the file.
const NPY_CHUNK_BYTES: u64 = 8 << 20;

/// An opened input: what its first bytes said, and how to read the rest.
enum Opened {
    Csv {
        layout: CsvLayout,
        pieces: CsvPieces<Box<dyn Read>>,
    },
    Npy {
        layout: NpyLayout,
    },
    /// The seeded generator, made chunk by chunk as it streams.
    Random(GeneratorArgs),
}

impl Opened {
    /// The line skipped as a CSV input's header, if one was.
    fn header_line(&self) -> Option<u64> {
        match self {
            Opened::Csv { layout, .. } => layout.header_line,
            _ => None,
        }
    }

    fn cols(&self) -> u64 {
        match self {
            Opened::Csv { layout, .. } => layout.cols,
            Opened::Npy { layout } => layout.cols,
            Opened::Random(generator) => generator.cols as u64,
        }
    }
}

/// Opens the input (the generator without one); the CSV pieces are cut for the workers.
fn open(input: Option<&StreamInput>, settings: &CountSettings, per_row: bool) -> Result<Opened, DataError> {
    let Some(input) = input else {
        let MatrixSource::Random(generator) = settings.source else {
            unreachable!("a file source streams with its input settings")
        };
        return Ok(Opened::Random(generator));
    };
    let name = input.origin.name();
    match input.format {
        Format::Npy => {
            let Origin::File(path) = &input.origin else { unreachable!("checked: standard input is CSV") };
            Ok(Opened::Npy { layout: open_npy(path, &name)? })
        }
        Format::Csv => {
            let (reader, size): (Box<dyn Read>, Option<u64>) = match &input.origin {
                Origin::Stdin => (Box::new(std::io::stdin().lock()), None),
                Origin::File(path) => {
                    let file = std::fs::File::open(path)
                        .map_err(|source| corepool_tutorial::input::InputError::Read { path: path.clone(), source })?;
                    let size = file.metadata().ok().map(|meta| meta.len());
                    (Box::new(file), size)
                }
            };
            // About four pieces per worker, as Python's chunk size rule aims for, within
            // 64 KiB (small files still spread) and 256 KiB (a piece and its copies stay in
            // cache, freed buffers are reused rather than faulted in afresh, and the window
            // of pieces in flight stays small).
            let workers = settings.pool.workers.max(1) as u64;
            let piece_bytes = size.map_or(256 << 10, |size| (size / (4 * workers)).clamp(64 << 10, 256 << 10)) as usize;
            let piece_rows = if per_row { Some(1) } else { settings.pool.chunk_size };
            let options = CsvOptions {
                header: input.header,
                kind: input.kind,
                separator: input.separator,
                skip_cols: input.skip_cols,
                max_line_bytes: input.max_line_bytes,
                piece_bytes,
                piece_rows,
            };
            let (layout, pieces) = open_csv(reader, &name, options)?;
            Ok(Opened::Csv { layout, pieces })
        }
    }
}

/// Whether a run streams: always from `--input`, and from the generator whenever the counts
/// go to `--output` (so that neither the matrix nor the counts are ever held whole). Other
/// runs make the matrix first, then time the pool on it, in every mode alike, as the
/// tutorial times Python's.
pub fn streams(settings: &CountSettings) -> bool {
    settings.stream.is_some() || settings.output.is_some()
}

/// Counts the streamed input (`None`: the generator) as `settings` say, prints the
/// summary and writes the report.
pub fn count_stream(settings: &CountSettings, input: Option<&StreamInput>) -> Result<(), Failure> {
    let per_row = matches!(settings.mode, Mode::Apply | Mode::ApplyAsync);
    let started = Instant::now();
    let opened = open(input, settings, per_row).map_err(|e| bad_input(e.into()))?;
    if let (Opened::Csv { layout, .. }, Some(input)) = (&opened, input) {
        let place = format!("{}:{}", input.origin.name(), layout.first_data_line);
        limits::check_file_row_width(&place, layout.cols).map_err(bad_input)?;
    }
    if let (Opened::Npy { layout }, Some(path)) = (&opened, &settings.output) {
        let least = layout.rows.saturating_mul(limits::least_output_bytes_per_row(settings.order == Order::Arrival));
        let what = format!("the counts of its {} rows", layout.rows);
        limits::check_output_space("--output", path, &what, least).map_err(bad_input)?;
    }
    let load = started.elapsed();
    let cols = opened.cols();
    let header_line = opened.header_line();
    let (pool, start) = if settings.mode == Mode::Serial {
        (None, Duration::ZERO)
    } else {
        let started = Instant::now();
        let builder = settings.pool.builder();
        let builder = crate::monitor::shown_if(builder, settings.monitor);
        let pool = super::signals::while_starting_or_stopping(|| builder.build())
            .map_err(|e| failed(anyhow!("starting the pool: {e}")))?;
        (Some(pool), started.elapsed())
    };
    let mut repetitions = Vec::new();
    let mut totals: Option<Totals> = None;
    let mut chunk_size = 0;
    let mut opened = Some(opened);
    // The counts wait here, out of sight, until every repetition has agreed.
    let mut output_file = None;
    for repetition in 0..settings.repeat {
        let input_now = match opened.take() {
            Some(opened) => opened,
            None => open(input, settings, per_row).map_err(|e| bad_input(e.into()))?,
        };
        // Only the first repetition writes the output; the others must agree with it.
        let output = match (&settings.output, repetition) {
            (Some(path), 0) => {
                let file = OutputFile::create(path, settings.order == Order::Arrival).map_err(failed)?;
                output_file = Some(file.finished());
                Some(file)
            }
            _ => None,
        };
        let codec = pool.as_ref().map(Pool::codec_time);
        let started = Instant::now();
        let (again, size) = run_once(pool.as_ref(), settings, input_now, output)?;
        let wall = started.elapsed();
        let (encode, decode) = match (&pool, codec) {
            (Some(pool), Some(before)) => {
                let spent = pool.codec_time() - before;
                (spent.encode, spent.decode)
            }
            _ => (Duration::ZERO, Duration::ZERO),
        };
        repetitions.push(Repetition { wall, encode, decode });
        chunk_size = size;
        if let Some(first) = &totals
            && *first != again
        {
            return Err(failed(anyhow!(
                "repetition {} disagrees with the first: checksum {:016x} instead of {:016x}",
                repetition + 1,
                again.checksum,
                first.checksum
            )));
        }
        totals = Some(again);
    }
    let totals = totals.expect("at least one repetition");
    let workers: Vec<WorkerStats> = pool.as_ref().map(Pool::worker_stats).unwrap_or_default();
    let started = Instant::now();
    if let Some(mut pool) = pool {
        super::signals::while_starting_or_stopping(|| {
            pool.close();
            pool.join();
        });
    }
    let stop = if settings.mode == Mode::Serial { Duration::ZERO } else { started.elapsed() };
    let compute = repetitions.iter().map(|r| r.wall).sum();
    let run = Counted { counts: Vec::new(), arrival: None, start, compute, stop, chunk_size, workers, repetitions };
    let output = output_file.and_then(|finished| finished.lock().unwrap_or_else(|e| e.into_inner()).take());
    finish(settings, (totals.rows as usize, cols as usize), (load, header_line), &run, &totals, output)
}

/// Rows per chunk that a run reports: `--chunk-size`, else `rows_per_chunk`, the rows of
/// every chunk the input was cut into but the last (or their mean, for CSV pieces).
fn reported_chunk_size(settings: &CountSettings, rows_per_chunk: u64) -> usize {
    match settings.mode {
        Mode::Apply | Mode::ApplyAsync => 1,
        Mode::Serial => 0,
        _ => settings.pool.chunk_size.unwrap_or(rows_per_chunk as usize),
    }
}

/// Runs the job once over `opened`; gives the totals and the rows per chunk.
fn run_once(
    pool: Option<&Pool>,
    settings: &CountSettings,
    opened: Opened,
    output: Option<OutputFile>,
) -> Result<(Totals, usize), Failure> {
    let expected: Option<Expected> = settings.verify.then(Expected::default);
    let sink = CountSink::new(output, expected.clone(), settings.mode.name());
    let range = settings.range;
    match opened {
        Opened::Csv { layout, mut pieces } => {
            let task = layout.count_task(range);
            let name = settings.stream.as_ref().map(|input| input.origin.name()).unwrap_or_default();
            let mut next_row = 0usize;
            let mut chunks = 0u64;
            let source = (&mut pieces).inspect(|piece: &TextPiece| {
                chunks += 1;
                if let Some(expected) = &expected {
                    let counts = reference::serial_text_counts(piece, &task);
                    expected.lock().unwrap_or_else(|e| e.into_inner()).push_back((next_row, counts));
                }
                next_row += piece.rows as usize;
            });
            let result = run_mode(pool, settings, &task, source, sink);
            if let Some(error) = pieces.take_error() {
                return Err(bad_input(error.into()));
            }
            let totals = result.map_err(|error| text_failure(error, &name))?;
            if totals.rows == 0 {
                return Err(bad_input(corepool_tutorial::input::InputError::Empty { file: name }.into()));
            }
            // Pieces of text hold rows by the line: their mean.
            let chunk_size = reported_chunk_size(settings, totals.rows.div_ceil(chunks.max(1)));
            Ok((totals, chunk_size))
        }
        Opened::Random(GeneratorArgs { rows, cols, low, high, seed }) => {
            let task = CountInRange { min: settings.min, max: settings.max };
            let per_chunk = match settings.mode {
                Mode::Apply | Mode::ApplyAsync => 1,
                // Chunks are made as 8-byte values before they are narrowed.
                _ => settings.pool.chunk_size.unwrap_or_else(|| {
                    corepool_tutorial::matrix::default_chunk_rows(rows, settings.pool.workers, cols * 8)
                }),
            };
            let mut values = corepool_tutorial::matrix::random_integers(low, high, seed);
            let (min, max) = (settings.min, settings.max);
            let mut next_row = 0usize;
            let source = (0..rows).step_by(per_chunk.max(1)).map(move |start| {
                let take = per_chunk.min(rows - start);
                let chunk: Vec<i64> = values.by_ref().take(take * cols).collect();
                RowBlock::new(take, cols, &chunk)
            });
            let source = source.inspect(|block: &RowBlock| {
                if let Some(expected) = &expected {
                    // The plain loop of `count_serially`, over the block's values.
                    let values = block.to_values().unwrap_or_default();
                    let counts = values
                        .chunks(cols.max(1))
                        .map(|row| row.iter().filter(|&&v| min <= v && v <= max).count() as u32)
                        .collect();
                    expected.lock().unwrap_or_else(|e| e.into_inner()).push_back((next_row, counts));
                }
                next_row += block.rows();
            });
            let progress = pool.map(|pool| Progress::start(pool.observer(), rows as u64, 1));
            let totals =
                run_mode(pool, settings, &task, source, sink).map_err(|error| match error.downcast::<PoolError>() {
                    Ok(error) => failed(error.into()),
                    Err(other) => failed(other),
                })?;
            drop(progress);
            Ok((totals, reported_chunk_size(settings, per_chunk as u64)))
        }
        Opened::Npy { layout } => {
            let task = CountNpyRows { range, dtype: layout.dtype };
            let rows_per_chunk = match settings.mode {
                Mode::Apply | Mode::ApplyAsync => 1,
                _ => settings.pool.chunk_size.map_or_else(
                    || {
                        let by_bytes = (NPY_CHUNK_BYTES / layout.row_bytes().max(1)).max(1);
                        let by_workers = layout.rows.div_ceil(4 * settings.pool.workers.max(1) as u64).max(1);
                        by_bytes.min(by_workers)
                    },
                    |rows| rows as u64,
                ),
            };
            let mut next_row = 0usize;
            let source = layout.chunks(rows_per_chunk).inspect(|chunk: &FileRows| {
                if let Some(expected) = &expected {
                    let counts = reference::serial_npy_counts(&layout, chunk, &range);
                    expected.lock().unwrap_or_else(|e| e.into_inner()).push_back((next_row, counts));
                }
                next_row += chunk.rows as usize;
            });
            let total = pool.map(|pool| Progress::start(pool.observer(), layout.rows, 1));
            let totals =
                run_mode(pool, settings, &task, source, sink).map_err(|error| match error.downcast::<PoolError>() {
                    Ok(PoolError::Task { failure, .. }) if failure.kind == FailureKind::Error => {
                        bad_input(anyhow!("{}", failure.message))
                    }
                    Ok(other) => failed(other.into()),
                    Err(other) => failed(other),
                })?;
            drop(total);
            Ok((totals, reported_chunk_size(settings, rows_per_chunk)))
        }
    }
}

/// A CSV run's error: a worker's report of a bad cell is bad input, with the file's name
/// put in front of its line and column.
fn text_failure(error: anyhow::Error, name: &str) -> Failure {
    match error.downcast::<PoolError>() {
        Ok(PoolError::Task { failure, .. }) if failure.kind == FailureKind::Error => {
            bad_input(DataError::Cell { file: name.to_owned(), fault: failure.message }.into())
        }
        Ok(other) => failed(other.into()),
        Err(other) => match other.downcast::<corepool_tutorial::text::TextFault>() {
            Ok(fault) => bad_input(DataError::Cell { file: name.to_owned(), fault: fault.to_string() }.into()),
            Err(other) => failed(other),
        },
    }
}

/// Runs `task` over `source` with the mode's pool method (or serially), handing every
/// chunk's counts to `sink`.
fn run_mode<T, S>(
    pool: Option<&Pool>,
    settings: &CountSettings,
    task: &T,
    source: S,
    mut sink: CountSink,
) -> anyhow::Result<Totals>
where
    T: Task<Output = u32> + Clone,
    T::Chunk: ChunkLen,
    S: Iterator<Item = T::Chunk>,
{
    let Some(pool) = pool else {
        // Serial: the task's own code, in this process, one chunk after another.
        let mut first = 0;
        for chunk in source {
            let rows = chunk.items();
            let counts = task.run(chunk).map_err(|message| PoolError::Task {
                rows: first as u64..(first + rows) as u64,
                failure: corepool::TaskFailure { kind: FailureKind::Error, message, location: None },
            })?;
            sink.add(first, counts)?;
            first += rows;
        }
        return sink.finish();
    };
    match settings.mode {
        Mode::Serial => unreachable!("no pool in serial mode"),
        Mode::ImapUnordered => {
            let mut results = pool.imap_unordered_iter(task, source)?;
            while let Some(chunk) = results.next_chunk_holding(sink.pending()) {
                let (first, counts) = chunk?;
                sink.add(first, counts)?;
            }
        }
        Mode::Apply => {
            let mut row = 0;
            for chunk in source {
                let rows = chunk.items();
                let count = pool.apply_task(task, &OneChunk::new(chunk, row), row)?;
                sink.add(row, vec![count])?;
                row += rows;
            }
        }
        Mode::ApplyAsync => return apply_async_stream(pool, task, source, sink),
        Mode::Map | Mode::Starmap | Mode::Imap | Mode::MapAsync | Mode::StarmapAsync => {
            let mut results = pool.imap_iter(task, source)?;
            while let Some(chunk) = results.next_chunk() {
                let (first, counts) = chunk?;
                sink.add(first, counts)?;
            }
        }
    }
    sink.finish()
}

/// The tutorial's `apply_async` loop over a stream: one task per row, a callback handing
/// each count to the sink as it arrives. Memory stays bounded because submitting waits
/// while the pool's queue is full, and no handle is kept.
fn apply_async_stream<T, S>(pool: &Pool, task: &T, source: S, sink: CountSink) -> anyhow::Result<Totals>
where
    T: Task<Output = u32> + Clone,
    T::Chunk: ChunkLen,
    S: Iterator<Item = T::Chunk>,
{
    struct Shared {
        sink: CountSink,
        done: u64,
        error: Option<anyhow::Error>,
    }
    let shared = Arc::new((Mutex::new(Shared { sink, done: 0, error: None }), Condvar::new()));
    let mut submitted = 0u64;
    let mut row = 0;
    // Rows may wait in the reorder buffer for an earlier one; submitting pauses while
    // this many do, so that the buffer stays bounded. The row they wait for is already
    // submitted (rows go in order), so the pause always ends.
    let most_pending = 4096;
    for chunk in source {
        let rows = chunk.items();
        {
            let (lock, changed) = &*shared;
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            while state.sink.pending() >= most_pending && state.error.is_none() {
                state = changed.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.error.is_some() {
                break;
            }
        }
        let on_success = {
            let shared = Arc::clone(&shared);
            move |&count: &u32| {
                let mut state = shared.0.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(error) = state.sink.add(row, vec![count]) {
                    state.error.get_or_insert(error);
                }
                state.done += 1;
                shared.1.notify_all();
            }
        };
        let on_error = {
            let shared = Arc::clone(&shared);
            move |error: &PoolError| {
                let mut state = shared.0.lock().unwrap_or_else(|e| e.into_inner());
                state.error.get_or_insert_with(|| anyhow::Error::new(error.share()));
                state.done += 1;
                shared.1.notify_all();
            }
        };
        let callbacks = corepool::Callbacks::on_success(on_success).or_on_error(on_error);
        pool.apply_async_task(task, &OneChunk::new(chunk, row), row, callbacks)?;
        submitted += 1;
        row += rows;
    }
    let (lock, changed) = &*shared;
    let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
    while state.done < submitted && state.error.is_none() {
        state = changed.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    if let Some(error) = state.error.take() {
        return Err(error);
    }
    let sink = std::mem::replace(&mut state.sink, CountSink::new(None, None, ""));
    drop(state);
    sink.finish()
}

/// Puts the counts and the report in place together, and prints the summary, of a
/// streamed run.
fn finish(
    settings: &CountSettings,
    shape: (usize, usize),
    (load, header_line): (Duration, Option<u64>),
    run: &Counted,
    totals: &Totals,
    output: Option<Pending>,
) -> Result<(), Failure> {
    let peak = super::report::own_peak_rss();
    let report = settings.report.as_ref().map(|_| {
        let result = report::ResultReport::from_totals(totals.rows, totals.in_range, totals.checksum);
        let mut report = report::Report::new(settings, shape, load, run, result).with_header_line(header_line);
        report.coordinator_peak_rss_bytes = peak;
        report
    });
    super::deliver(settings, output, report.as_ref()).map_err(failed)?;
    let mut human = super::human_output(settings);
    write_summary(&mut *human, settings, shape, (load, header_line), run, totals, peak)
        .map_err(|e| failed(anyhow!("writing the summary: {e}")))
}

fn write_summary(
    out: &mut dyn std::io::Write,
    settings: &CountSettings,
    (rows, cols): (usize, usize),
    (load, header_line): (Duration, Option<u64>),
    run: &Counted,
    totals: &Totals,
    peak: u64,
) -> std::io::Result<()> {
    match &settings.source {
        MatrixSource::Random(GeneratorArgs { low, high, seed, .. }) => writeln!(
            out,
            "{rows} x {cols} matrix of random integers in {low}..{high} (seed {seed}), made chunk by chunk as it streams"
        )?,
        MatrixSource::File(_) => {
            let name = settings.stream.as_ref().map(|input| input.origin.name()).unwrap_or_default();
            writeln!(out, "{rows} x {cols} matrix streamed from {name} (first lines read in {})", ms(load))?;
            if settings.stream.as_ref().is_some_and(|input| input.format == Format::Csv) {
                summary::write_header(out, header_line)?;
            }
        }
    }
    super::write_mode_line(out, settings, run.chunk_size)?;
    writeln!(out, "first 10 counts: {:?}", totals.first)?;
    writeln!(out, "values in range: {} of {}", totals.in_range, rows as u64 * cols as u64)?;
    summary::write_times(out, settings, run, "read and compute", summary::Decoding::AsRead)?;
    writeln!(out, "coordinator peak memory: {:.1} MiB", peak as f64 / (1024.0 * 1024.0))?;
    writeln!(out, "checksum: fnv1a64:{:016x}", totals.checksum)?;
    summary::write_workers(out, &run.workers, settings.pool.transport != corepool::Transport::Local)?;
    summary::write_files_written(out, settings)?;
    out.flush()
}
