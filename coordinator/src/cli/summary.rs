//! The per-worker summary people read at the end of a run.

use std::{io::Write, time::Duration};

use corepool::{Balance, WorkerStats};
use indicatif::HumanCount;

use super::count::Repetition;

/// One line per worker (rows, chunks, busy time, CPU time, peak memory, restarts), then
/// the balance across workers.
pub fn write_workers(out: &mut dyn Write, workers: &[WorkerStats]) -> std::io::Result<()> {
    if workers.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "{:<12} {:>8} {:>12} {:>7} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "worker", "pid", "rows", "chunks", "busy", "cpu user", "cpu sys", "peak rss", "restarts"
    )?;
    for (index, worker) in workers.iter().enumerate() {
        writeln!(
            out,
            "{:<12} {:>8} {:>12} {:>7} {:>9} {:>9} {:>9} {:>10} {:>9}",
            format!("corepool-w{index}"),
            worker.pid,
            HumanCount(worker.rows).to_string(),
            worker.chunks,
            secs(worker.busy),
            secs(worker.cpu_user),
            secs(worker.cpu_system),
            if worker.peak_rss == 0 { "-".to_owned() } else { mib(worker.peak_rss) },
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

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
