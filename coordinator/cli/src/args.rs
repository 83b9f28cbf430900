//! The command line's flags, as clap reads them; `settings` turns them into checked settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use corepool_tutorial::values::Number;

/// Seed of the generator when `--seed` is not given (the year of the tutorial).
pub const DEFAULT_SEED: u64 = 2019;

/// Help heading of the flags that say where the matrix comes from and how it is read.
const HEADING_INPUT: &str = "Input";
/// Help heading of the flags that say what is counted and how it is checked.
const HEADING_COUNT: &str = "The count";
/// Help heading of the flags that shape the pool and how work goes to it.
const HEADING_POOL: &str = "The pool";
/// Help heading of the flags that say where results and reports go.
const HEADING_OUTPUT: &str = "Output";
/// Help heading of the flags for watching a run.
const HEADING_WATCHING: &str = "Watching";

/// corepool: Python's multiprocessing.Pool, with real OS processes, in Rust.
///
/// Without a command, runs the tutorial's problem (count the values of each row of a
/// 200,000 x 5 random matrix that lie in [4, 8]) serially and with every pool method,
/// and compares them.
#[derive(Debug, Parser)]
#[command(name = "corepool", version, about, long_about)]
pub struct Cli {
    /// What to do (default: the tutorial demo).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the number of processors (logical and physical).
    Cpus,
    /// Count, for each row of a matrix, the values that lie in [--min, --max].
    // A negative number reaches its flag's own check, which names the flag.
    #[command(allow_negative_numbers = true)]
    Count(Box<CountArgs>),
    /// Run the tutorial: serial and every pool method on one matrix, timed and compared.
    #[command(allow_negative_numbers = true)]
    Demo(DemoArgs),
    /// Write a seeded random matrix to a CSV or .npy file (for Python and corepool alike).
    #[command(allow_negative_numbers = true)]
    Gen(GenArgs),
}

/// Where the matrix comes from.
#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// Read the matrix from FILE: CSV (integers or floats separated by commas, tabs or
    /// spaces, one row a line, an optional header line), numpy .npy, or `-` for CSV on
    /// standard input. `count` streams it: the coordinator never holds it whole.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rows", "cols", "low", "high", "seed"])]
    pub input: Option<PathBuf>,
    /// Otherwise, the seeded generator's matrix.
    #[command(flatten)]
    pub generator: GeneratorArgs,
}

/// The seeded generator's matrix, shared by `count`, `demo` and `gen`.
#[derive(Debug, Clone, Copy, Args)]
pub struct GeneratorArgs {
    /// Rows of the generated matrix.
    #[arg(long, default_value_t = 200_000)]
    pub rows: usize,
    /// Columns of the generated matrix.
    #[arg(long, default_value_t = 5)]
    pub cols: usize,
    /// Smallest generated value.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub low: i64,
    /// Generated values are below this one (like numpy's randint; floats are drawn
    /// uniformly from low..high).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub high: i64,
    /// Seed of the generator: the same seed gives the same matrix on every platform, for
    /// `count`, `demo` and `gen` alike.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
}

/// Longest `--task-timeout`, in seconds: a year (longer is no limit at all, in practice).
pub const MAX_TASK_TIMEOUT_S: f64 = 365.0 * 24.0 * 3600.0;

/// Shortest `--task-timeout`: a millisecond (less is shorter than any chunk's round trip).
pub const MIN_TASK_TIMEOUT_S: f64 = 0.001;

/// Arguments of `corepool count`.
#[derive(Debug, Args)]
pub struct CountArgs {
    #[command(flatten, next_help_heading = HEADING_INPUT)]
    pub matrix: MatrixArgs,
    /// Smallest value counted: an integer (exact, past 64 bits too), or a float such as
    /// 4.5 or -inf.
    #[arg(long, default_value_t = Number::Int(4), allow_hyphen_values = true, help_heading = HEADING_COUNT)]
    pub min: Number,
    /// Largest value counted: an integer (exact, past 64 bits too), or a float such as 8.5
    /// or inf (NaN is in no range).
    #[arg(long, default_value_t = Number::Int(8), allow_hyphen_values = true, help_heading = HEADING_COUNT)]
    pub max: Number,
    /// Worker processes, at most 1024 (Python's `Pool(processes=N)`; `--processes` works too) [default:
    /// the number of logical CPUs].
    #[arg(long, short = 'j', alias = "processes", help_heading = HEADING_POOL)]
    pub workers: Option<usize>,
    /// How to run: serially, or with one of the pool's methods (Python's spellings, such as
    /// `imap_unordered`, work too).
    #[arg(long, value_enum, default_value_t = Mode::Map, help_heading = HEADING_POOL)]
    pub mode: Mode,
    /// Rows per chunk (Python's `chunksize`; `--chunksize` works too) [default: Python's
    /// rule for Pool.map, ceil(rows / (4 x workers)), but at most 65,536 rows; with --input,
    /// a CSV file goes in pieces of 64-256 KiB of text (about 4 per worker) and a .npy file
    /// in the smaller of ceil(rows / (4 x workers)) rows and 8 MiB of rows; the last chunk
    /// holds the rest]. A K you give is
    /// used as given, with no cap, as long as a chunk encodes to at most 1 GiB; apply and
    /// apply-async always send one row at a time.
    #[arg(long, value_name = "K", alias = "chunksize", help_heading = HEADING_POOL)]
    pub chunk_size: Option<usize>,
    /// Write the counts to FILE (written whole or not at all): one count a line in row order,
    /// or `row,count` lines with `--order arrival`. `-` is standard output (the summary then
    /// goes to standard error); a device or FIFO is written into, a symlink's target replaced.
    #[arg(long, short = 'o', value_name = "FILE", help_heading = HEADING_OUTPUT)]
    pub output: Option<PathBuf>,
    /// Order of the lines in `--output`: by row, or as results arrived (imap-unordered and
    /// apply-async only).
    #[arg(long, value_enum, default_value_t = Order::Row, requires = "output", help_heading = HEADING_OUTPUT)]
    pub order: Order,
    /// Run the same job N times in the same pool (the workers stay up), so that the load
    /// lasts long enough to watch in `top`; every repetition must give the same counts.
    #[arg(long, value_name = "N", default_value_t = 1, help_heading = HEADING_WATCHING)]
    pub repeat: u32,
    /// Show a live view of the coordinator and every worker on standard error: PID, state,
    /// CPU % (100% is one core), resident memory, chunks, rows done and rows per second.
    /// On a terminal it is redrawn in place under the progress bar; otherwise it prints
    /// plain `key=value` lines twice a second.
    #[arg(long, conflicts_with = "quiet", help_heading = HEADING_WATCHING)]
    pub monitor: bool,
    /// Print nothing but errors: no progress bar and no monitor on standard error, and no
    /// summary on standard output or standard error. What you ask for by name still comes:
    /// the counts (--output), and the JSON report (--report json on standard output, or
    /// --report-file). The exit code tells how the run went.
    #[arg(long, short, help_heading = HEADING_OUTPUT)]
    pub quiet: bool,
    /// Write a report for scripts: one JSON document (schema in docs/report-schema.md) to
    /// standard output, which then holds nothing else (the human text moves to standard
    /// error), or to --report-file.
    #[arg(long, value_enum, value_name = "FORMAT", help_heading = HEADING_OUTPUT)]
    pub report: Option<ReportFormat>,
    /// Write the report to FILE instead of standard output (written whole or not at all);
    /// implies --report json.
    #[arg(long, value_name = "FILE", help_heading = HEADING_OUTPUT)]
    pub report_file: Option<PathBuf>,
    /// Also count serially and fail unless every row agrees.
    #[arg(long, help_heading = HEADING_COUNT)]
    pub verify: bool,
    /// Kill a worker that holds a chunk this long without answering, and send its chunks
    /// again [default: no limit].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true, help_heading = HEADING_POOL)]
    pub task_timeout: Option<f64>,
    /// How many workers a chunk may take down before the run fails [default: 3].
    #[arg(long, value_name = "N", help_heading = HEADING_POOL)]
    pub max_retries: Option<u32>,
    /// Replace each worker with a fresh one once it has run N chunks (Python's
    /// `maxtasksperchild`; `--maxtasksperchild` works too). Not a fault: nothing is sent
    /// again [default: workers live as long as the run].
    #[arg(long, value_name = "N", alias = "maxtasksperchild", help_heading = HEADING_POOL)]
    pub max_tasks_per_worker: Option<u64>,
    /// How the pool reaches its workers: local worker processes, or the other ranks of the
    /// MPI job this process is rank 0 of (`mpirun -np N+1 corepool count --transport mpi`;
    /// needs a build with the `mpi` feature).
    #[arg(long, value_enum, default_value_t = TransportArg::Local, help_heading = HEADING_POOL)]
    pub transport: TransportArg,
    #[command(flatten, next_help_heading = HEADING_INPUT)]
    pub data: DataArgs,
}

/// How `--input` is read (flags of `count` only).
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Format of --input [default: from the extension: .npy is numpy's, anything else CSV].
    #[arg(long, value_enum, requires = "input")]
    pub format: Option<InputFormat>,
    /// The first non-blank line of --input is a header [default: when its cells are not
    /// all numbers].
    #[arg(long, requires = "input", conflicts_with = "no_header")]
    pub header: bool,
    /// The first line of --input is data, even if it holds no number.
    #[arg(long, requires = "input")]
    pub no_header: bool,
    /// Read CSV values as integers or floats [default: integers if the first row holds only
    /// integers].
    #[arg(long, value_enum, requires = "input")]
    pub values: Option<ValuesArg>,
    /// The byte between CSV cells: `,` `;` `|` `:`, `tab`, or `' '` for runs of spaces and
    /// tabs [default: a comma if the first line has one, else runs of spaces and tabs].
    #[arg(long, value_name = "C", requires = "input")]
    pub delimiter: Option<String>,
    /// Skip the first N cells of every CSV line unread, such as the index column pandas
    /// writes.
    #[arg(long, value_name = "N", requires = "input", default_value_t = 0)]
    pub skip_cols: u64,
    /// Longest CSV line read, in bytes (suffixes K, M, G: powers of 1024); a longer line
    /// stops the run [default: 16M; at most 512M].
    #[arg(long, value_name = "BYTES", requires = "input")]
    pub max_line_bytes: Option<String>,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// Text, one row a line.
    Csv,
    /// numpy's .npy.
    Npy,
}

/// `--values`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValuesArg {
    /// 64-bit integers.
    Int,
    /// Doubles (nan, inf and exponents too).
    Float,
}

/// Arguments of `corepool gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// The matrix to write.
    #[command(flatten, next_help_heading = "The matrix")]
    pub generator: GeneratorArgs,
    /// Element type, with numpy's names.
    #[arg(long, value_enum, default_value_t = Dtype::Int64, help_heading = HEADING_OUTPUT)]
    pub dtype: Dtype,
    /// File format [default: from the extension, .csv or .npy].
    #[arg(long, value_enum, help_heading = HEADING_OUTPUT)]
    pub format: Option<Format>,
    /// The file to write (whole or not at all); `-` is standard output.
    #[arg(long, short = 'o', value_name = "FILE", help_heading = HEADING_OUTPUT)]
    pub output: PathBuf,
}

/// Arguments of `corepool demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten, next_help_heading = HEADING_INPUT)]
    pub matrix: MatrixArgs,
    /// Worker processes, at most 1024 (Python's `Pool(processes=N)`; `--processes` works too) [default:
    /// the number of logical CPUs].
    #[arg(long, short = 'j', alias = "processes", help_heading = HEADING_POOL)]
    pub workers: Option<usize>,
}

/// How the pool reaches its workers (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// Worker processes on this machine, over Unix sockets.
    Local,
    /// The other ranks of an MPI job, on any of its hosts.
    Mpi,
}

/// How `count` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// In this process, one row after another.
    Serial,
    /// One blocking round trip per row (Pool.apply).
    Apply,
    /// Chunks, results in row order (Pool.map).
    Map,
    /// Chunks of (row, min, max) items, results in row order (Pool.starmap).
    Starmap,
    /// Chunks, results streamed in row order (Pool.imap).
    Imap,
    /// Chunks, results streamed as they arrive (Pool.imap_unordered).
    #[value(alias = "imap_unordered")]
    ImapUnordered,
    /// One task per row, results through a callback as they arrive (Pool.apply_async).
    #[value(alias = "apply_async")]
    ApplyAsync,
    /// Chunks in the background, results in row order (Pool.map_async).
    #[value(alias = "map_async")]
    MapAsync,
    /// Chunks of (row, min, max) in the background, results in row order (Pool.starmap_async).
    #[value(alias = "starmap_async")]
    StarmapAsync,
}

impl Mode {
    /// Every mode, serial first, in the tutorial's order.
    pub const ALL: [Mode; 9] = [
        Mode::Serial,
        Mode::Apply,
        Mode::Map,
        Mode::Starmap,
        Mode::Imap,
        Mode::ImapUnordered,
        Mode::ApplyAsync,
        Mode::MapAsync,
        Mode::StarmapAsync,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Serial => "serial",
            Mode::Apply => "apply",
            Mode::Map => "map",
            Mode::Starmap => "starmap",
            Mode::Imap => "imap",
            Mode::ImapUnordered => "imap-unordered",
            Mode::ApplyAsync => "apply-async",
            Mode::MapAsync => "map-async",
            Mode::StarmapAsync => "starmap-async",
        }
    }

    /// Whether results reach the caller in arrival order.
    pub fn arrival_ordered(self) -> bool {
        matches!(self, Mode::ImapUnordered | Mode::ApplyAsync)
    }
}

/// Order of the output lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// One count a line, in row order.
    Row,
    /// `row,count` lines in the order results arrived.
    Arrival,
}

/// Formats of `--report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// One JSON document.
    Json,
}

/// Element types `gen` writes, with numpy's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// 8-bit signed integers.
    Int8,
    /// 16-bit signed integers.
    Int16,
    /// 32-bit signed integers.
    Int32,
    /// 64-bit signed integers.
    Int64,
    /// 8-bit unsigned integers.
    Uint8,
    /// 16-bit unsigned integers.
    Uint16,
    /// 32-bit unsigned integers.
    Uint32,
    /// 32-bit floats: reals drawn uniformly from low..high.
    Float32,
    /// 64-bit floats: reals drawn uniformly from low..high.
    Float64,
}

/// The file formats `gen` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Comma-separated text, one row a line.
    Csv,
    /// numpy's `.npy`: a 2-D array in C order.
    Npy,
}
