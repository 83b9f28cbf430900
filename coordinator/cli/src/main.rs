//! `corepool`: the command-line face of the pool. See `corepool --help`.
//!
//! Flags in, checked settings, runs, results out.

mod args;
mod count;
mod generate;
mod limits;
mod monitor;
mod output;
mod pending;
mod progress;
mod reference;
mod report;
mod settings;
mod signals;
mod sink;
mod stream;
mod summary;

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    sync::Arc,
    time::Instant,
};

use anyhow::Context;
pub use args::Cli;
use args::{Command, GeneratorArgs, Mode, Order};
use clap::Parser;
use count::{
    Counted, RunOptions, count_in_pool, count_serially, count_serially_repeated, count_with, first_difference,
    load_matrix, start_pool,
};
use indicatif::HumanCount;
use settings::{CountSettings, MatrixSource, PoolOptions, ReportTarget};
fn main() -> ExitCode {
    // Started by a pool as one of its workers? Then serve, and never reach the CLI.
    corepool::task::init_with(corepool_tutorial::registry);
    // Before anything else, so that no signal finds a half-done run without its handler.
    if let Err(error) = signals::install() {
        eprintln!("corepool: cannot handle signals: {error}");
        return ExitCode::from(EXIT_FAILED);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version.
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            eprintln!("corepool: {}", one_line(&error.render().to_string()));
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A signal is stopping the run; its handler exits with the signal's code.
        Err(_) if signals::interrupted() => loop {
            std::thread::park();
        },
        Err(failure) => {
            eprintln!("corepool: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// clap's multi-line message as one line: what is wrong, and the hints, without the
/// usage block.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:"))
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .map(|line| line.strip_prefix("error: ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Exit code of a run that went wrong after it started (a worker failed for good, a
/// result disagreed with `--verify`, an output could not be written).
pub const EXIT_FAILED: u8 = 1;
/// Exit code of bad input: flags, or the input file.
pub const EXIT_BAD_INPUT: u8 = 2;

/// An error, with the exit code it maps to.
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

fn bad_input(error: anyhow::Error) -> Failure {
    Failure { code: EXIT_BAD_INPUT, error }
}

fn failed(error: anyhow::Error) -> Failure {
    Failure { code: EXIT_FAILED, error }
}

/// Runs what the command line asks for.
/// [`signals::install`] must have run first.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Some(Command::Cpus) => {
            print_cpus();
            Ok(())
        }
        Some(Command::Count(args)) => {
            let settings = args.check().map_err(bad_input)?;
            count(&settings)
        }
        Some(Command::Gen(args)) => {
            let settings = args.check().map_err(bad_input)?;
            generate::generate(&settings).map_err(failed)
        }
        Some(Command::Demo(args)) => {
            let (source, workers) = args.check().map_err(bad_input)?;
            demo(&source, workers)
        }
        None => demo(&tutorial_matrix(), corepool::logical_cpus()),
    }
}

fn tutorial_matrix() -> MatrixSource {
    MatrixSource::Random(GeneratorArgs { rows: 200_000, cols: 5, low: 0, high: 10, seed: args::DEFAULT_SEED })
}

fn print_cpus() {
    let logical = corepool::logical_cpus();
    match sysinfo::System::physical_core_count() {
        Some(physical) => println!("Number of processors: {logical} logical, {physical} physical"),
        None => println!("Number of processors: {logical} logical (physical cores unknown)"),
    }
}

fn describe(source: &MatrixSource, rows: usize, cols: usize) -> String {
    match source {
        MatrixSource::File(path) => format!("{rows} x {cols} matrix from {}", path.display()),
        MatrixSource::Random(GeneratorArgs { low, high, seed, .. }) => {
            format!("{rows} x {cols} matrix of random integers in {low}..{high} (seed {seed})")
        }
    }
}

fn count(settings: &CountSettings) -> Result<(), Failure> {
    progress::set_enabled(!settings.quiet);
    if stream::streams(settings) {
        return stream::count_stream(settings, settings.stream.as_ref());
    }
    // The workers start first: forking copies the page tables of a matrix already made
    // (docs/performance.md).
    let pool = match settings.mode {
        Mode::Serial => None,
        _ => Some(start_pool(&settings.pool, settings.monitor).map_err(failed)?),
    };
    let started = Instant::now();
    // `count --input` streams, so a matrix loaded here is generated and has no header.
    let (matrix, _) = load_matrix(&settings.source).map_err(bad_input)?;
    let matrix = Arc::new(matrix);
    let made = started.elapsed();
    let bounds = (settings.min, settings.max);
    let options = RunOptions {
        repeat: settings.repeat,
        monitor: settings.monitor,
        // With the monitor too: both are drawn in the one live view.
        progress: !settings.quiet,
        keep_arrival: settings.order == Order::Arrival,
    };
    let run = match pool {
        Some(pool) => count_in_pool(pool, &matrix, settings.mode, bounds, &settings.pool, options),
        None => count_serially_repeated(&matrix, bounds, options.repeat),
    }
    .map_err(failed)?;
    if settings.verify {
        let expected = count_serially(&matrix, settings.min, settings.max);
        if let Some(difference) = first_difference(&run.counts, &expected) {
            return Err(failed(anyhow::anyhow!(
                "--verify: {} disagrees with serial at {difference}",
                settings.mode.name()
            )));
        }
    }
    let output = match &settings.output {
        Some(path) => {
            let mut file = pending::Pending::create("--output", path).map_err(failed)?;
            let mut out = std::io::BufWriter::new(&mut file);
            let written = match (settings.order, &run.arrival) {
                (Order::Arrival, Some(arrival)) => output::write_arrivals(&mut out, arrival),
                _ => output::write_counts(&mut out, &run.counts),
            };
            written
                .and_then(|()| out.flush())
                .with_context(|| format!("writing {}", path.display()))
                .map_err(failed)?;
            drop(out);
            Some(file)
        }
        None => None,
    };
    let shape = (matrix.rows(), matrix.cols());
    let result = report::ResultReport::of(&run.counts);
    let report = settings.report.as_ref().map(|_| report::Report::new(settings, shape, made, &run, result.clone()));
    deliver(settings, output, report.as_ref()).map_err(failed)?;
    let mut human = human_output(settings);
    write_human(&mut *human, settings, shape, made, &run, &result).context("writing the summary").map_err(failed)
}

/// Puts the run's files in place together, the counts and the report file, once both
/// are written (a report that cannot be written leaves no counts either); then writes the
/// report to standard output if that is where it goes.
fn deliver(
    settings: &CountSettings,
    output: Option<pending::Pending>,
    report: Option<&impl serde::Serialize>,
) -> anyhow::Result<()> {
    let write_json = |out: &mut dyn Write, report| -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, report).map_err(std::io::Error::from)?;
        writeln!(out)
    };
    let report_file = match (&settings.report, report) {
        (Some(ReportTarget::File(path)), Some(report)) => {
            let mut file = pending::Pending::create("--report-file", path)?;
            write_json(&mut file, report).with_context(|| format!("writing {}", path.display()))?;
            Some(file)
        }
        _ => None,
    };
    pending::commit(output.into_iter().chain(report_file))?;
    if let (Some(ReportTarget::Stdout), Some(report)) = (&settings.report, report) {
        write_json(&mut std::io::stdout().lock(), report).context("writing the report to standard output")?;
    }
    Ok(())
}

/// Where the text for people goes: nowhere with `--quiet`; standard output stays pure JSON
/// when it carries the report, and pure counts with `--output -`, so the text moves to
/// standard error.
fn human_output(settings: &CountSettings) -> Box<dyn Write> {
    let stdout_taken = match &settings.report {
        Some(ReportTarget::Stdout) => true,
        Some(ReportTarget::File(path)) => output::is_stdout(path),
        None => false,
    } || settings.output.as_deref().is_some_and(output::is_stdout);
    match (stdout_taken, settings.quiet) {
        (_, true) => Box::new(std::io::sink()),
        (true, false) => Box::new(std::io::stderr()),
        (false, false) => Box::new(std::io::stdout()),
    }
}

/// The line that says how the run went about it: mode, workers, chunk size, range.
fn write_mode_line(out: &mut dyn Write, settings: &CountSettings, chunk_size: usize) -> std::io::Result<()> {
    let workers = if settings.mode == Mode::Serial { 0 } else { settings.pool.workers };
    writeln!(
        out,
        "mode {}: {workers} workers, {chunk_size} rows per chunk; counted values in [{}, {}]",
        settings.mode.name(),
        settings.range.min,
        settings.range.max
    )
}

/// The run told for people: the matrix, the mode, the first counts, the times, and what
/// each worker did.
fn write_human(
    out: &mut dyn Write,
    settings: &CountSettings,
    (rows, cols): (usize, usize),
    made: std::time::Duration,
    run: &Counted,
    result: &report::ResultReport,
) -> std::io::Result<()> {
    writeln!(out, "{}, read or made in {}", describe(&settings.source, rows, cols), ms(made))?;
    write_mode_line(out, settings, run.chunk_size)?;
    writeln!(out, "first 10 counts: {:?}", &run.counts[..rows.min(10)])?;
    writeln!(out, "values in range: {} of {}", result.values_in_range, rows as u64 * cols as u64)?;
    summary::write_times(out, settings, run, "compute", summary::Decoding::InLine)?;
    writeln!(out, "checksum: {}", result.checksum)?;
    summary::write_workers(out, &run.workers, settings.pool.transport != corepool::Transport::Local)?;
    summary::write_files_written(out, settings)?;
    out.flush()
}

/// "3.1x faster" or "740x slower": how `time` compares with `reference`.
fn speed_ratio(reference: std::time::Duration, time: std::time::Duration) -> String {
    let ratio = reference.as_secs_f64() / time.as_secs_f64().max(1e-9);
    if ratio >= 1.0 { format!("{ratio:.1}x faster") } else { format!("{:.1}x slower", 1.0 / ratio) }
}

fn ms(duration: std::time::Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

fn demo(source: &MatrixSource, workers: usize) -> Result<(), Failure> {
    println!("corepool {}: the tutorial's count in range, with real worker processes", env!("CARGO_PKG_VERSION"));
    print_cpus();
    let started = Instant::now();
    let (matrix, header_line) = load_matrix(source).map_err(bad_input)?;
    let matrix = Arc::new(matrix);
    let made = started.elapsed();
    let (min, max) = (4, 8);
    println!("{}, made in {}", describe(source, matrix.rows(), matrix.cols()), ms(made));
    if let MatrixSource::File(_) = source {
        summary::write_header(&mut std::io::stdout(), header_line).map_err(|e| failed(e.into()))?;
    }
    println!(
        "Counting, for each row, the values in [{min}, {max}] with {workers} workers; pool times include starting and stopping the workers."
    );
    println!();
    println!(
        "{:<15} {:<32} {:>11} {:>11} {:>11} {:>13}  agrees with serial",
        "method", "first 10 counts", "pool start", "compute", "total", "vs serial"
    );
    let mut serial: Option<Counted> = None;
    let mut disagreements = Vec::new();
    for mode in Mode::ALL {
        // apply takes seconds (a blocking round trip per row): show that it is running.
        let progress = mode == Mode::Apply;
        if progress && !std::io::stderr().is_terminal() {
            println!("(apply: {} blocking round trips, one per row; running...)", HumanCount(matrix.rows() as u64));
        }
        let options = RunOptions { progress, ..RunOptions::default() };
        let run =
            count_with(&matrix, mode, (min, max), &PoolOptions::with_workers(workers), options).map_err(failed)?;
        let (relative, agrees) = match &serial {
            None => ("-".to_owned(), "(reference)".to_owned()),
            Some(reference) => {
                let relative = speed_ratio(reference.total(), run.total());
                let agrees = match first_difference(&run.counts, &reference.counts) {
                    None => "yes, every row".to_owned(),
                    Some(difference) => {
                        disagreements.push(format!("{}: {difference}", mode.name()));
                        format!("NO: {difference}")
                    }
                };
                (relative, agrees)
            }
        };
        let first = format!("{:?}", &run.counts[..run.counts.len().min(10)]);
        let start = if mode == Mode::Serial { "-".to_owned() } else { ms(run.start) };
        println!(
            "{:<15} {:<32} {:>11} {:>11} {:>11} {:>13}  {}",
            mode.name(),
            first,
            start,
            ms(run.compute),
            ms(run.total()),
            relative,
            agrees
        );
        if serial.is_none() {
            serial = Some(run);
        }
    }
    println!();
    if !disagreements.is_empty() {
        return Err(failed(anyhow::anyhow!("methods disagree with serial: {}", disagreements.join("; "))));
    }
    println!("All {} pool methods agree with serial on every row.", Mode::ALL.len() - 1);
    Ok(())
}
