//! The per-worker summary people read at the end of a run.

use std::{io::Write, time::Duration};

use corepool::{Balance, WorkerStats};
use indicatif::{HumanBytes, HumanCount};

use super::{
    args::Mode,
    count::{Counted, Repetition},
    ms,
    settings::{CountSettings, ReportTarget},
};

/// Where a run decoded the answers: in the thread that waited for them, or on the threads
/// that read them while the caller went on (a streamed run), so not out of the waiting time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// In the waiting thread.
    InLine,
    /// On the threads that read the answers.
    AsRead,
}

/// The time line (`compute` names what the compute time covers), then for a pool run how
/// the compute time split and what faults there were, then each repetition if several.
pub fn write_times(
    out: &mut dyn Write,
    settings: &CountSettings,
    run: &Counted,
    compute: &str,
    decoding: Decoding,
) -> std::io::Result<()> {
    writeln!(
        out,
        "time: {} total (pool start {}, {compute} {}, pool stop {}){}",
        ms(run.total()),
        ms(run.start),
        ms(run.compute),
        ms(run.stop),
        if settings.verify { "; --verify: every row agrees with serial" } else { "" }
    )?;
    if settings.mode != Mode::Serial {
        let encode: Duration = run.repetitions.iter().map(|r| r.encode).sum();
        let decode: Duration = run.repetitions.iter().map(|r| r.decode).sum();
        let (waiting, where_decoded) = match decoding {
            Decoding::InLine => (run.compute.saturating_sub(encode + decode), ""),
            Decoding::AsRead => (run.compute.saturating_sub(encode), ", as the answers were read"),
        };
        writeln!(
            out,
            "compute split: distribution (encoding) {}, waiting on workers {}, gathering (decoding{where_decoded}) {}",
            ms(encode),
            ms(waiting),
            ms(decode)
        )?;
        let restarts: u64 = run.workers.iter().map(|worker| worker.restarts).sum();
        let retried: u64 = run.workers.iter().map(|worker| worker.retried_chunks).sum();
        writeln!(out, "faults: {restarts} worker restarts, {retried} chunks sent again")?;
        let retired: u64 = run.workers.iter().map(|worker| worker.retired).sum();
        if retired > 0 {
            writeln!(out, "retired: {retired} workers replaced after their share of chunks, as planned")?;
        }
    }
    if run.repetitions.len() > 1 {
        write_repetitions(out, &run.repetitions)?;
    }
    Ok(())
}

/// Whether a CSV input's line was skipped as its header, and which.
pub fn write_header(out: &mut dyn Write, header_line: Option<u64>) -> std::io::Result<()> {
    match header_line {
        Some(line) => writeln!(out, "header: line {line} skipped"),
        None => writeln!(out, "header: none, every line is data"),
    }
}

/// The files the run wrote: the counts, the report.
pub fn write_files_written(out: &mut dyn Write, settings: &CountSettings) -> std::io::Result<()> {
    match &settings.output {
        Some(path) if path.as_os_str() == "-" => writeln!(out, "wrote the counts to standard output")?,
        Some(path) => writeln!(out, "wrote {}", path.display())?,
        None => {}
    }
    if let Some(ReportTarget::File(path)) = &settings.report {
        writeln!(out, "wrote report {}", path.display())?;
    }
    Ok(())
}

/// One line per worker (rows, chunks, busy time, CPU time, peak memory, restarts), then
/// the balance across workers. With `ranks` (an MPI pool) each worker is named by its rank
/// and shown with its host.
pub fn write_workers(out: &mut dyn Write, workers: &[WorkerStats], ranks: bool) -> std::io::Result<()> {
    if workers.is_empty() {
        return Ok(());
    }
    let host_width = workers.iter().map(|worker| worker.host.chars().count()).max().unwrap_or(0).max(4);
    let host = |name: &str| if ranks { format!(" {name:<host_width$}") } else { String::new() };
    writeln!(
        out,
        "{:<12}{} {:>8} {:>12} {:>7} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "worker",
        host("host"),
        "pid",
        "rows",
        "chunks",
        "busy",
        "cpu user",
        "cpu sys",
        "peak rss",
        "restarts"
    )?;
    for (index, worker) in workers.iter().enumerate() {
        writeln!(
            out,
            "{:<12}{} {:>8} {:>12} {:>7} {:>9} {:>9} {:>9} {:>10} {:>9}",
            if ranks { format!("rank {}", index + 1) } else { format!("corepool-w{index}") },
            host(&worker.host),
            worker.pid,
            HumanCount(worker.rows).to_string(),
            worker.chunks,
            secs(worker.busy),
            secs(worker.cpu_user),
            secs(worker.cpu_system),
            if worker.peak_rss == 0 { "-".to_owned() } else { HumanBytes(worker.peak_rss).to_string() },
            worker.restarts
        )?;
    }
    if let Some(balance) = Balance::of(workers) {
        writeln!(
            out,
            "balance: rows min/max {:.2} ({} / {}), busy min/max {:.2}",
            balance.rows_ratio,
            HumanCount(balance.min_rows),
            HumanCount(balance.max_rows),
            balance.busy_ratio
        )?;
    }
    Ok(())
}

/// "10 repetitions: min 80.1 ms, median 82.0 ms, max 95.3 ms".
pub fn write_repetitions(out: &mut dyn Write, repetitions: &[Repetition]) -> std::io::Result<()> {
    let mut walls: Vec<Duration> = repetitions.iter().map(|r| r.wall).collect();
    walls.sort();
    let (Some(min), Some(max)) = (walls.first(), walls.last()) else { return Ok(()) };
    let median = walls[walls.len() / 2];
    writeln!(
        out,
        "{} repetitions: min {}, median {}, max {}",
        walls.len(),
        super::ms(*min),
        super::ms(median),
        super::ms(*max)
    )
}

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}
