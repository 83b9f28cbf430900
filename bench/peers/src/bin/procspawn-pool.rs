//! The closest Rust peer: `procspawn`'s `Pool` (processes with a thread-like API) counting the
//! same matrix over the same chunks.
//!
//! ```text
//! procspawn-pool --input matrix.npy --workers 2 --chunk-size 65536 --runs 5 [--min 4 --max 8]
//! ```
//!
//! Each run starts a pool of `--workers` processes, submits one job per chunk (an owned
//! `Vec<i64>` of the chunk's rows, made before the clock starts, as a caller of `Pool::spawn`
//! must hand over owned arguments), joins the handles in chunk order and shuts the pool down:
//! pool start and stop included, as the tutorial times Python's pool. Prints one JSON document.

use std::path::PathBuf;
use std::time::Instant;

use corepool_bench_peers::{Flags, checksum, count_rows, fail, read_npy_i64, seconds, summary};
use serde_json::json;

/// One chunk: its values (row-major), the column count and the bounds.
type Job = (Vec<i64>, usize, i64, i64);

fn count_chunk((data, cols, min, max): Job) -> Vec<u32> {
    let mut out = Vec::with_capacity(data.len() / cols.max(1));
    count_rows(&data, cols, min, max, &mut out);
    out
}

fn main() {
    // A spawned process re-enters main: nothing may come before this.
    procspawn::init();

    let flags = Flags::from_env(1);
    let input = PathBuf::from(flags.required("--input"));
    let workers: usize = flags.get("--workers", 2);
    let chunk_size: usize = flags.get("--chunk-size", 65_536);
    let runs: usize = flags.get("--runs", 5);
    let (min, max): (i64, i64) = (flags.get("--min", 4), flags.get("--max", 8));
    if workers == 0 || chunk_size == 0 || runs == 0 {
        fail("--workers, --chunk-size and --runs must be at least 1");
    }
    let matrix = read_npy_i64(&input).unwrap_or_else(|error| fail(&format!("{}: {error}", input.display())));
    let cols = matrix.cols.max(1);

    let mut samples = Vec::with_capacity(runs);
    let mut result = None;
    for _ in 0..runs {
        let jobs: Vec<Job> =
            matrix.data.chunks(chunk_size * cols).map(|chunk| (chunk.to_vec(), cols, min, max)).collect();
        let start = Instant::now();
        let pool = procspawn::Pool::new(workers).unwrap_or_else(|error| fail(&format!("starting the pool: {error}")));
        let handles: Vec<_> = jobs.into_iter().map(|job| pool.spawn(job, count_chunk)).collect();
        let mut counts = Vec::with_capacity(matrix.rows);
        for handle in handles {
            let chunk = handle.join().unwrap_or_else(|error| fail(&format!("a job failed: {error}")));
            counts.extend(chunk);
        }
        pool.shutdown();
        samples.push(seconds(start));
        let sum: u64 = counts.iter().map(|&count| u64::from(count)).sum();
        result = Some(json!({ "rows": counts.len(), "values_in_range": sum, "checksum": checksum(&counts) }));
    }

    let report = json!({
        "peer": "procspawn-pool",
        "procspawn": "1",
        "rows": matrix.rows,
        "cols": matrix.cols,
        "workers": workers,
        "chunk_size": chunk_size,
        "timing": summary(&samples),
        "result": result,
    });
    println!("{report:#}");
}
