//! The command line's flags turned into checked settings, before anything runs: every
//! flag against the others, and the input file's kind.

use std::path::PathBuf;

use anyhow::bail;
use corepool_tutorial::values::ValueRange;

use super::args::{
    CountArgs, DataArgs, DemoArgs, GeneratorArgs, InputFormat, MAX_TASK_TIMEOUT_S, MIN_TASK_TIMEOUT_S, MatrixArgs,
    Mode, Order, ReportFormat, ValuesArg,
};

impl GeneratorArgs {
    /// Checks the flags against each other.
    pub fn check(self) -> anyhow::Result<Self> {
        if self.low >= self.high {
            bail!("--low {} must be below --high {} (values are drawn from low..high)", self.low, self.high);
        }
        if self.cols == 0 {
            bail!("--cols must be at least 1");
        }
        super::limits::check_row_width("--cols", self.cols as u64)?;
        if self.rows.checked_mul(self.cols).is_none_or(|n| n > isize::MAX as usize / 8) {
            bail!("--rows {} x --cols {} is too large a matrix", self.rows, self.cols);
        }
        Ok(self)
    }
}

/// How a file or standard input is streamed, checked.
#[derive(Debug, Clone)]
pub struct StreamInput {
    /// The file, or standard input.
    pub origin: corepool_tutorial::input::source::Origin,
    /// Its format.
    pub format: corepool_tutorial::input::source::Format,
    /// The header rule.
    pub header: corepool_tutorial::input::csv::HeaderRule,
    /// How values are read, if forced.
    pub kind: Option<corepool_tutorial::text::ValueKind>,
    /// How cells are separated, if named.
    pub separator: Option<corepool_tutorial::text::Separator>,
    /// Leading cells of every line to skip.
    pub skip_cols: u64,
    /// Longest line read.
    pub max_line_bytes: usize,
}

/// Where the report goes, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// Standard output; the human text moves to standard error.
    Stdout,
    /// A file, written atomically.
    File(PathBuf),
}

/// Where the matrix comes from, checked.
#[derive(Debug, Clone)]
pub enum MatrixSource {
    /// Read from a file.
    File(PathBuf),
    /// Made by the seeded generator.
    Random(GeneratorArgs),
}

/// How to run a pool, checked.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Worker processes.
    pub workers: usize,
    /// Rows per chunk, or Python's default.
    pub chunk_size: Option<usize>,
    /// Longest a worker may hold a chunk.
    pub task_timeout: Option<std::time::Duration>,
    /// Workers a chunk may take down before the run fails.
    pub max_retries: u32,
    /// Chunks a worker runs before it is replaced.
    pub max_tasks_per_worker: Option<u64>,
    /// How the pool reaches its workers.
    pub transport: corepool::Transport,
}

impl PoolOptions {
    /// The defaults, with `workers` workers.
    pub fn with_workers(workers: usize) -> Self {
        Self {
            workers,
            chunk_size: None,
            task_timeout: None,
            max_retries: 3,
            max_tasks_per_worker: None,
            transport: corepool::Transport::Local,
        }
    }

    /// A builder for a pool with these options.
    pub fn builder(&self) -> corepool::PoolBuilder {
        let builder =
            corepool::Pool::builder().workers(self.workers).task_timeout(self.task_timeout).transport(self.transport);
        // Neither applies to MPI's ranks, and the builder refuses them there.
        match self.transport == corepool::Transport::Local {
            true => builder.max_retries(self.max_retries).max_tasks_per_worker(self.max_tasks_per_worker),
            false => builder,
        }
    }
}

/// `--transport`, checked against the other pool flags and the MPI job this runs in: the
/// transport, and the number of workers.
fn check_transport(
    transport: super::args::TransportArg,
    workers: Option<usize>,
    max_retries: Option<u32>,
    max_tasks_per_worker: Option<u64>,
    serial: bool,
) -> anyhow::Result<(corepool::Transport, usize)> {
    if transport == super::args::TransportArg::Local {
        return Ok((corepool::Transport::Local, check_workers(workers)?));
    }
    // The worker ranks wait for rank 0's pool: without one, the job would never end.
    if serial {
        bail!("--mode serial starts no pool, and --transport mpi needs one for its worker ranks");
    }
    if max_retries.is_some() {
        bail!("--max-retries is not available with --transport mpi: a lost rank's chunks cannot be sent again");
    }
    if max_tasks_per_worker.is_some() {
        bail!("--max-tasks-per-worker is not available with --transport mpi: a rank cannot be replaced");
    }
    mpi_transport(workers)
}

#[cfg(feature = "mpi")]
fn mpi_transport(workers: Option<usize>) -> anyhow::Result<(corepool::Transport, usize)> {
    let Some(ranks) = corepool::mpi::size_from_env() else {
        bail!("--transport mpi: not started by mpirun or srun (no MPI job in the environment)");
    };
    match workers {
        _ if ranks < 2 => bail!("--transport mpi: the MPI job has 1 rank; it needs one per worker besides rank 0"),
        Some(n) if n != ranks - 1 => bail!(
            "--workers {n}: the MPI job has {ranks} ranks, which gives {} workers (rank 0 is the coordinator)",
            ranks - 1
        ),
        _ => Ok((corepool::Transport::Mpi, ranks - 1)),
    }
}

#[cfg(not(feature = "mpi"))]
fn mpi_transport(_workers: Option<usize>) -> anyhow::Result<(corepool::Transport, usize)> {
    bail!("--transport mpi: this corepool was built without MPI (cargo build --features mpi)")
}

/// `corepool count`'s settings, checked.
#[derive(Debug, Clone)]
pub struct CountSettings {
    pub source: MatrixSource,
    /// The integers counted, `min..=max` (an empty range if none lies in `range`).
    pub min: i64,
    pub max: i64,
    /// The range as given, integers or floats.
    pub range: ValueRange,
    /// Set when the matrix is streamed from `--input`.
    pub stream: Option<StreamInput>,
    pub pool: PoolOptions,
    pub mode: Mode,
    pub output: Option<PathBuf>,
    pub order: Order,
    pub verify: bool,
    /// Runs of the job in the same pool, at least 1.
    pub repeat: u32,
    /// Show the live monitor (never with `quiet`, never in serial mode).
    pub monitor: bool,
    /// Nothing on standard error but errors.
    pub quiet: bool,
    /// Where the JSON report goes, if one is asked for.
    pub report: Option<ReportTarget>,
}

impl MatrixArgs {
    fn check(self) -> anyhow::Result<MatrixSource> {
        if let Some(path) = self.input {
            return Ok(MatrixSource::File(path));
        }
        Ok(MatrixSource::Random(self.generator.check()?))
    }
}

/// Most worker processes a run may start: past this a run is a fork storm, not a pool.
pub const MAX_WORKERS: usize = 1024;

/// `--workers`, checked: at least one, default one per logical CPU.
pub fn check_workers(workers: Option<usize>) -> anyhow::Result<usize> {
    match workers {
        Some(0) => bail!("--workers must be at least 1"),
        Some(n) if n > MAX_WORKERS => bail!(
            "--workers {n}: at most {MAX_WORKERS} worker processes (this machine has {} logical CPUs)",
            corepool::logical_cpus()
        ),
        Some(n) => Ok(n),
        None => Ok(corepool::logical_cpus()),
    }
}

impl CountArgs {
    /// Checks every flag against the others; nothing has run yet.
    pub fn check(self) -> anyhow::Result<CountSettings> {
        if self.min.cmp_exact(self.max) == Some(std::cmp::Ordering::Greater) {
            bail!("--min {} is greater than --max {}", self.min, self.max);
        }
        let range = ValueRange { min: self.min, max: self.max };
        // No integer in the range (`[4.2, 4.8]`): an empty integer range counts nothing.
        let (min, max) = range.int_bounds().unwrap_or((1, 0));
        let stream = self.data.check(self.matrix.input.as_deref(), self.repeat)?;
        if self.chunk_size == Some(0) {
            bail!("--chunk-size must be at least 1");
        }
        if self.order == Order::Arrival && !self.mode.arrival_ordered() {
            bail!(
                "--order arrival needs --mode imap-unordered or --mode apply-async (--mode {} gives row order)",
                self.mode.name()
            );
        }
        if self.repeat == 0 {
            bail!("--repeat must be at least 1");
        }
        if self.monitor && self.mode == Mode::Serial {
            bail!("--monitor watches a pool's workers, and --mode serial starts none");
        }
        if let Some(path) = &self.report_file {
            super::output::check_output_folder("--report-file", path)?;
        }
        let report = match (self.report, self.report_file) {
            (_, Some(path)) => Some(ReportTarget::File(path)),
            (Some(ReportFormat::Json), None) => Some(ReportTarget::Stdout),
            (None, None) => None,
        };
        if let Some(output) = &self.output {
            super::output::check_output_folder("--output", output)?;
        }
        let report_file = match &report {
            Some(ReportTarget::File(path)) => Some(path.as_path()),
            _ => None,
        };
        let report_to_stdout = matches!(report, Some(ReportTarget::Stdout));
        let input = self.matrix.input.as_deref();
        super::output::check_distinct(input, self.output.as_deref(), report_file, report_to_stdout)?;
        if self.max_retries == Some(0) {
            bail!("--max-retries must be at least 1");
        }
        if self.max_tasks_per_worker == Some(0) {
            bail!("--max-tasks-per-worker must be at least 1");
        }
        let task_timeout = match self.task_timeout {
            None => None,
            Some(seconds) if (MIN_TASK_TIMEOUT_S..=MAX_TASK_TIMEOUT_S).contains(&seconds) => {
                Some(std::time::Duration::from_secs_f64(seconds))
            }
            Some(seconds) => bail!(
                "--task-timeout {}: must be a number of seconds from {MIN_TASK_TIMEOUT_S} to {MAX_TASK_TIMEOUT_S} (a year)",
                corepool_tutorial::values::Readable(seconds)
            ),
        };
        let (transport, workers) = check_transport(
            self.transport,
            self.workers,
            self.max_retries,
            self.max_tasks_per_worker,
            self.mode == Mode::Serial,
        )?;
        let pool = PoolOptions {
            workers,
            chunk_size: self.chunk_size,
            task_timeout,
            max_retries: self.max_retries.unwrap_or(3),
            max_tasks_per_worker: self.max_tasks_per_worker,
            transport,
        };
        let source = self.matrix.check()?;
        if let MatrixSource::Random(generator) = &source {
            let output = self.output.as_deref().map(|path| (path, self.order == Order::Arrival));
            super::limits::check_generated_count(generator, self.mode, pool.workers, pool.chunk_size, output)?;
        }
        Ok(CountSettings {
            source,
            min,
            max,
            range,
            stream,
            pool,
            mode: self.mode,
            output: self.output,
            order: self.order,
            verify: self.verify,
            repeat: self.repeat,
            monitor: self.monitor,
            quiet: self.quiet,
            report,
        })
    }
}

impl DataArgs {
    /// How `--input` (if given) is streamed.
    fn check(&self, input: Option<&std::path::Path>, repeat: u32) -> anyhow::Result<Option<StreamInput>> {
        use corepool_tutorial::input::{
            csv::HeaderRule,
            source::{Format, Origin},
        };
        use corepool_tutorial::text::ValueKind;
        let Some(path) = input else { return Ok(None) };
        let origin = Origin::from_arg(path);
        let format = match (self.format, &origin) {
            (Some(InputFormat::Csv), _) | (None, Origin::Stdin) => Format::Csv,
            (Some(InputFormat::Npy), _) => Format::Npy,
            (None, Origin::File(path)) => Format::of_path(path),
        };
        if origin == Origin::Stdin && format == Format::Npy {
            bail!("--input -: standard input is read as CSV; save the .npy array to a file");
        }
        if origin == Origin::Stdin && repeat > 1 {
            bail!("--repeat {repeat} reads the input again, and standard input can be read only once");
        }
        let header = match (self.header, self.no_header) {
            (true, _) => HeaderRule::Yes,
            (_, true) => HeaderRule::No,
            _ => HeaderRule::Detect,
        };
        let kind = self.values.map(|values| match values {
            ValuesArg::Int => ValueKind::Int,
            ValuesArg::Float => ValueKind::Float,
        });
        if format == Format::Npy {
            let csv_only = [
                ("--header", self.header),
                ("--no-header", self.no_header),
                ("--values", self.values.is_some()),
                ("--delimiter", self.delimiter.is_some()),
                ("--skip-cols", self.skip_cols > 0),
                ("--max-line-bytes", self.max_line_bytes.is_some()),
            ];
            if let Some((flag, _)) = csv_only.iter().find(|(_, given)| *given) {
                bail!("{flag} applies to CSV input, and {} is read as .npy", path.display());
            }
        }
        let separator = self.delimiter.as_deref().map(parse_delimiter).transpose()?;
        let max_line_bytes = match self.max_line_bytes.as_deref() {
            Some(text) => parse_line_limit(text)?,
            None => corepool_tutorial::input::csv::DEFAULT_MAX_LINE_BYTES,
        };
        Ok(Some(StreamInput { origin, format, header, kind, separator, skip_cols: self.skip_cols, max_line_bytes }))
    }
}

/// `--delimiter`: one ASCII byte that cannot be part of a number or a quote, `tab`, or a
/// space for runs of blanks.
fn parse_delimiter(text: &str) -> anyhow::Result<corepool_tutorial::text::Separator> {
    use corepool_tutorial::text::Separator;
    match text {
        "tab" | "\\t" | "\t" => return Ok(Separator::Char(b'\t')),
        " " | "space" => return Ok(Separator::Blanks),
        _ => {}
    }
    match text.as_bytes() {
        &[byte] if byte.is_ascii_punctuation() && !b"\"+-.".contains(&byte) => Ok(Separator::Char(byte)),
        _ => bail!(
            "--delimiter {text:?}: one character that is not part of a number or a quote, such as ',' ';' '|' ':', or tab"
        ),
    }
}

/// `--max-line-bytes`: a number of bytes, maybe with a K, M or G suffix (powers of 1024).
fn parse_line_limit(text: &str) -> anyhow::Result<usize> {
    use corepool_tutorial::input::csv::MAX_LINE_BYTES_LIMIT;
    let upper = text.trim().to_ascii_uppercase();
    let digits = upper.trim_end_matches("IB").trim_end_matches('B');
    let (number, shift) = match digits.as_bytes().last() {
        Some(b'K') => (&digits[..digits.len() - 1], 10),
        Some(b'M') => (&digits[..digits.len() - 1], 20),
        Some(b'G') => (&digits[..digits.len() - 1], 30),
        _ => (digits, 0),
    };
    let bytes = number.parse::<u64>().ok().and_then(|n| n.checked_mul(1 << shift));
    match bytes {
        Some(bytes) if bytes >= 1 && bytes <= MAX_LINE_BYTES_LIMIT as u64 => Ok(bytes as usize),
        Some(_) => bail!(
            "--max-line-bytes {text}: must be from 1 to {}M (lines travel to the workers in messages of at most 1 GiB)",
            MAX_LINE_BYTES_LIMIT >> 20
        ),
        None => bail!("--max-line-bytes {text}: not a number of bytes, such as 1048576 or 64M"),
    }
}

impl DemoArgs {
    /// Checks the flags.
    pub fn check(self) -> anyhow::Result<(MatrixSource, usize)> {
        let source = self.matrix.check()?;
        if let MatrixSource::Random(generator) = &source {
            super::limits::check_generated_demo(generator)?;
        }
        Ok((source, check_workers(self.workers)?))
    }
}
