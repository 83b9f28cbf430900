//! The report for scripts: one JSON document per run. Its schema, version
//! [`REPORT_VERSION`], is documented in `docs/report-schema.md`; fields are only ever
//! added within a version.

use std::time::Duration;

use corepool::{Balance, WorkerStats};
use corepool_tutorial::values::Number;
use serde::Serialize;

use super::{
    args::GeneratorArgs,
    count::{Counted, Repetition},
    settings::{CountSettings, MatrixSource},
};

/// Version of the report's schema: bumped when a field changes meaning or goes away.
pub const REPORT_VERSION: u32 = 1;

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// Version of corepool that wrote it.
    pub corepool: &'static str,
    /// What was run.
    pub parameters: Parameters,
    /// Where the time went, in seconds, over every repetition.
    pub timings: Timings,
    /// Each repetition's times, in order.
    pub repetitions: Vec<RepetitionReport>,
    /// What each worker slot did, over every repetition.
    pub workers: Vec<WorkerReport>,
    /// How evenly the work was spread; `null` without workers (serial mode).
    pub balance: Option<BalanceReport>,
    /// Workers that died and were replaced, over every slot.
    pub restarts: u64,
    /// The counts, summed up.
    pub result: ResultReport,
    /// Peak resident memory of the coordinator process over the run (`VmHWM`), bytes; 0
    /// where unknown. Flat however large the input, when it is streamed.
    pub coordinator_peak_rss_bytes: u64,
}

/// What was run.
#[derive(Debug, Serialize)]
pub struct Parameters {
    /// Rows of the matrix.
    pub rows: usize,
    /// Columns of the matrix.
    pub cols: usize,
    /// Smallest value counted (an integer, or a float as given).
    #[serde(serialize_with = "plain_number")]
    pub min: Number,
    /// Largest value counted.
    #[serde(serialize_with = "plain_number")]
    pub max: Number,
    /// Worker processes (0 in serial mode).
    pub workers: usize,
    /// The mode's name on the command line (`map`, `imap-unordered`, ...).
    pub mode: &'static str,
    /// Rows per chunk; `null` in serial mode.
    pub chunk_size: Option<usize>,
    /// Runs of the job in the same pool.
    pub repeat: u32,
    /// How the pool reached its workers: `local` (child processes over Unix sockets) or
    /// `mpi` (the other ranks of an MPI job).
    pub transport: &'static str,
    /// Where the matrix came from.
    pub input: Input,
}

/// Where the matrix came from.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Input {
    /// The seeded generator.
    Random {
        /// Smallest value.
        low: i64,
        /// Values are below this.
        high: i64,
        /// Generator seed.
        seed: u64,
    },
    /// A file, as given on the command line.
    File {
        /// The path.
        path: String,
        /// The line of a CSV file skipped as its header; `null` if none was.
        header_line: Option<u64>,
    },
}

/// Where the time went, in seconds.
#[derive(Debug, Serialize)]
pub struct Timings {
    /// Making or reading the matrix.
    pub load_s: f64,
    /// Starting the workers until every one had joined.
    pub startup_s: f64,
    /// The coordinator encoding chunks into frames and queueing them.
    pub distribution_s: f64,
    /// The rest of the jobs' wall time: the coordinator waiting on the workers.
    pub compute_s: f64,
    /// The coordinator decoding answers into outputs.
    pub gathering_s: f64,
    /// Stopping the workers and waiting for them to exit.
    pub shutdown_s: f64,
    /// `startup_s + distribution_s + compute_s + gathering_s + shutdown_s`.
    pub total_s: f64,
}

/// One repetition's times, in seconds.
#[derive(Debug, Serialize)]
pub struct RepetitionReport {
    /// Wall time, from submitting the first chunk until the last result was in.
    pub wall_s: f64,
    /// Of it, encoding.
    pub distribution_s: f64,
    /// Of it, waiting on the workers.
    pub compute_s: f64,
    /// Of it, decoding.
    pub gathering_s: f64,
}

/// One worker slot.
#[derive(Debug, Serialize)]
pub struct WorkerReport {
    /// Slot index: the worker is named `corepool-w{index}`.
    pub index: usize,
    /// The MPI rank of the slot's worker (`index + 1`); `null` for a local pool.
    pub rank: Option<usize>,
    /// The host the slot's worker ran on.
    pub host: String,
    /// Process id of the slot's last worker, on its host.
    pub pid: u32,
    /// Rows answered.
    pub rows: u64,
    /// Chunks answered.
    pub chunks: u64,
    /// Time holding at least one chunk.
    pub busy_s: f64,
    /// CPU time in user mode.
    pub cpu_user_s: f64,
    /// CPU time in the kernel.
    pub cpu_system_s: f64,
    /// Peak resident memory (VmHWM), bytes; 0 where unknown.
    pub peak_rss_bytes: u64,
    /// Times the slot's worker died and was replaced.
    pub restarts: u64,
    /// Times the slot's worker was replaced as planned (`--max-tasks-per-worker`).
    pub retired: u64,
    /// Chunks sent again because the worker died holding them.
    pub retried_chunks: u64,
}

/// How evenly the work was spread.
#[derive(Debug, Serialize)]
pub struct BalanceReport {
    /// Fewest rows any worker did.
    pub min_rows: u64,
    /// Most rows any worker did.
    pub max_rows: u64,
    /// `min_rows / max_rows` (1.0: perfectly even).
    pub rows_ratio: f64,
    /// Shortest busy time over the longest.
    pub busy_ratio: f64,
}

/// The counts, summed up.
#[derive(Debug, Clone, Serialize)]
pub struct ResultReport {
    /// Counts produced (one a row).
    pub rows: usize,
    /// Sum of the counts: values in [min, max] in the whole matrix.
    pub values_in_range: u64,
    /// [`checksum`] of the counts, as `fnv1a64:` and 16 lower-case hex digits.
    pub checksum: String,
}

impl ResultReport {
    /// The summary of counts held in memory.
    pub fn of(counts: &[u32]) -> Self {
        Self::from_totals(counts.len() as u64, counts.iter().map(|&c| u64::from(c)).sum(), checksum(counts))
    }

    /// The summary of counts already summed up as they streamed by.
    pub fn from_totals(rows: u64, values_in_range: u64, checksum: u64) -> Self {
        Self { rows: rows as usize, values_in_range, checksum: format!("fnv1a64:{checksum:016x}") }
    }
}

impl Report {
    /// The report of `run`, made with `settings` from a matrix of `rows` x `cols` that
    /// took `load` to make or read, with its counts summed up as `result` (by the caller,
    /// which also shows them to people, so that no count is read twice).
    pub fn new(
        settings: &CountSettings,
        (rows, cols): (usize, usize),
        load: Duration,
        run: &Counted,
        result: ResultReport,
    ) -> Report {
        let pooled = !run.workers.is_empty() || run.chunk_size > 0;
        let parameters = Parameters {
            rows,
            cols,
            min: settings.range.min,
            max: settings.range.max,
            workers: if pooled { settings.pool.workers } else { 0 },
            mode: settings.mode.name(),
            chunk_size: pooled.then_some(run.chunk_size),
            repeat: settings.repeat,
            transport: transport_name(settings.pool.transport),
            input: match &settings.source {
                MatrixSource::File(path) => Input::File { path: path.display().to_string(), header_line: None },
                &MatrixSource::Random(GeneratorArgs { low, high, seed, .. }) => Input::Random { low, high, seed },
            },
        };
        let sum = |part: fn(&Repetition) -> Duration| run.repetitions.iter().map(part).sum::<Duration>();
        let (distribution, compute, gathering) = (sum(|r| r.encode), sum(Repetition::compute), sum(|r| r.decode));
        let timings = Timings {
            load_s: load.as_secs_f64(),
            startup_s: run.start.as_secs_f64(),
            distribution_s: distribution.as_secs_f64(),
            compute_s: compute.as_secs_f64(),
            gathering_s: gathering.as_secs_f64(),
            shutdown_s: run.stop.as_secs_f64(),
            total_s: (run.start + distribution + compute + gathering + run.stop).as_secs_f64(),
        };
        let repetitions = run
            .repetitions
            .iter()
            .map(|r| RepetitionReport {
                wall_s: r.wall.as_secs_f64(),
                distribution_s: r.encode.as_secs_f64(),
                compute_s: r.compute().as_secs_f64(),
                gathering_s: r.decode.as_secs_f64(),
            })
            .collect();
        let ranks = settings.pool.transport != corepool::Transport::Local;
        let workers = run.workers.iter().enumerate().map(|(index, w)| WorkerReport::new(index, w, ranks)).collect();
        let balance = Balance::of(&run.workers).map(|b| BalanceReport {
            min_rows: b.min_rows,
            max_rows: b.max_rows,
            rows_ratio: b.rows_ratio,
            busy_ratio: b.busy_ratio,
        });
        Report {
            version: REPORT_VERSION,
            corepool: env!("CARGO_PKG_VERSION"),
            parameters,
            timings,
            repetitions,
            workers,
            balance,
            restarts: run.workers.iter().map(|w| w.restarts).sum(),
            result,
            coordinator_peak_rss_bytes: own_peak_rss(),
        }
    }
}

impl Report {
    /// The report, saying which line of its CSV input was skipped as a header.
    pub fn with_header_line(mut self, line: Option<u64>) -> Self {
        if let Input::File { header_line, .. } = &mut self.parameters.input {
            *header_line = line;
        }
        self
    }
}

impl WorkerReport {
    fn new(index: usize, w: &WorkerStats, ranks: bool) -> Self {
        Self {
            index,
            rank: ranks.then_some(index + 1),
            host: w.host.clone(),
            pid: w.pid,
            rows: w.rows,
            chunks: w.chunks,
            busy_s: w.busy.as_secs_f64(),
            cpu_user_s: w.cpu_user.as_secs_f64(),
            cpu_system_s: w.cpu_system.as_secs_f64(),
            peak_rss_bytes: w.peak_rss,
            restarts: w.restarts,
            retired: w.retired,
            retried_chunks: w.retried_chunks,
        }
    }
}

/// The name `--transport` gives `transport`.
fn transport_name(transport: corepool::Transport) -> &'static str {
    match transport {
        corepool::Transport::Local => "local",
        _ => "mpi",
    }
}

/// A number as JSON has it: integers stay integers, so that reports of integer runs
/// read as they always did.
fn plain_number<S: serde::Serializer>(number: &Number, serializer: S) -> Result<S::Ok, S::Error> {
    match *number {
        Number::Int(value) => serializer.serialize_i128(value),
        Number::Float(value) => serializer.serialize_f64(value),
    }
}

/// FNV-1a (64 bits) over the counts in row order, each as 4 little-endian bytes: a
/// fingerprint that any language recomputes in a few lines to compare two runs.
pub fn checksum(counts: &[u32]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in counts.iter().flat_map(|count| count.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Peak resident memory of this process so far, in bytes (`VmHWM`); 0 where the platform
/// cannot say.
pub fn own_peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|status| peak_rss_in(&status)).unwrap_or(0)
}

/// The `VmHWM` of a `/proc/PID/status` text, in bytes.
fn peak_rss_in(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_rss_is_read_from_vmhwm_in_kib() {
        let status = "Name:\tcorepool\nVmPeak:\t  900 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(peak_rss_in(status), Some(1234 * 1024));
        assert_eq!(peak_rss_in("Name:\tcorepool\n"), None);
        assert!(own_peak_rss() > 0, "this process has a peak");
    }

    #[test]
    fn checksum_is_fnv1a_64_over_little_endian_counts() {
        // The offset basis for no bytes; for 01 00 00 00 02 00 00 00 03 00 00 00, the value
        // Python's few-line FNV-1a gives.
        assert_eq!(checksum(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(checksum(&[1, 2, 3]), 0xfd1f_0f43_81eb_0395);
        assert_ne!(checksum(&[1, 2]), checksum(&[2, 1]));
    }
}
