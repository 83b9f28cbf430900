//! The machine's limits, measured, so that each corepool figure can be shown as a ratio to them.
//!
//! ```text
//! probe inproc --input matrix.npy [--runs 5 --min 4 --max 8]  one-thread count of i64 values
//! probe floors [--workers 1,2] [--runs 5] [--quick]          every floor below, one document
//! probe spawn [--runs 50]                                     spawn a process and wait for it
//! probe roundtrip [--iterations 20000 --runs 5]               small request/response, Unix socket
//! probe bandwidth [--mib 1024 --runs 5]                       streaming over a Unix socket
//! probe spawn-connect --workers N [--runs 10]                 N processes connect and say hello
//! ```
//!
//! Each prints one JSON document on standard output. The children are this same binary,
//! started with a hidden `child-*` subcommand, so they cost what a small Rust program costs.

use std::fs::{self, DirBuilder};
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use corepool_bench_peers::{Flags, checksum, count_rows, fail, read_npy_i64, seconds, summary};
use serde_json::{Value, json};

/// What a child says when it has connected.
const HELLO: &[u8; 8] = b"hello!\0\0";
/// Values a row in the round-trip probe: the tutorial's 5 columns.
const ROW_VALUES: usize = 5;

fn main() {
    let command = std::env::args().nth(1).unwrap_or_default();
    // The children first: they must cost as little as possible.
    match command.as_str() {
        "child-exit" => return,
        "child-hello" => return child_hello(&socket_arg()),
        "child-echo" => return child_echo(&socket_arg()),
        "child-sink" => return child_sink(&socket_arg()),
        _ => {}
    }
    let flags = Flags::from_env(2);
    let quick = std::env::args().any(|arg| arg == "--quick");
    let report = match command.as_str() {
        "inproc" => inproc(&flags),
        "spawn" => spawn(flags.get("--runs", if quick { 20 } else { 50 })),
        "roundtrip" => roundtrip(
            flags.get("--iterations", if quick { 5_000 } else { 20_000 }),
            flags.get("--runs", if quick { 3 } else { 5 }),
        ),
        "bandwidth" => bandwidth(
            flags.get("--mib", if quick { 256 } else { 1024 }),
            flags.get("--runs", if quick { 3 } else { 5 }),
        ),
        "spawn-connect" => spawn_connect(flags.get("--workers", 2), flags.get("--runs", if quick { 5 } else { 10 })),
        "floors" => floors(&flags, quick),
        _ => fail(
            "usage: probe inproc --input M.npy | floors [--workers 1,2] [--quick] | spawn | \
             roundtrip | bandwidth | spawn-connect --workers N  (see the source's header)",
        ),
    };
    println!("{report:#}");
}

fn socket_arg() -> PathBuf {
    std::env::args().nth(2).map(PathBuf::from).unwrap_or_else(|| fail("a child needs a socket path"))
}

/// Every floor in one document: spawn, round trip, bandwidth and spawn-and-connect for each
/// worker count in `--workers` (comma-separated).
fn floors(flags: &Flags, quick: bool) -> Value {
    let workers: String = flags.get("--workers", "1,2".to_string());
    let counts: Vec<usize> = workers
        .split(',')
        .map(|n| n.trim().parse().unwrap_or_else(|_| fail("--workers takes numbers: 1,2,4")))
        .collect();
    let runs = flags.get("--runs", if quick { 3 } else { 5 });
    json!({
        "spawn": spawn(if quick { 20 } else { 50 }),
        "roundtrip": roundtrip(if quick { 5_000 } else { 20_000 }, runs),
        "bandwidth": bandwidth(if quick { 256 } else { 1024 }, runs),
        "spawn_connect": counts
            .iter()
            .map(|&n| spawn_connect(n, if quick { 5 } else { 10 }))
            .collect::<Vec<_>>(),
    })
}

/// The in-process count: one thread, the matrix held as i64, the count only (no loading).
fn inproc(flags: &Flags) -> Value {
    let input = PathBuf::from(flags.required("--input"));
    let runs: usize = flags.get("--runs", 5);
    let (min, max): (i64, i64) = (flags.get("--min", 4), flags.get("--max", 8));
    let matrix = read_npy_i64(&input).unwrap_or_else(|error| fail(&format!("{}: {error}", input.display())));
    let cols = matrix.cols.max(1);
    let mut samples = Vec::with_capacity(runs);
    let mut counts = Vec::new();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        counts = Vec::with_capacity(matrix.rows);
        count_rows(std::hint::black_box(&matrix.data), cols, min, max, &mut counts);
        std::hint::black_box(&counts);
        samples.push(seconds(start));
    }
    let sum: u64 = counts.iter().map(|&count| u64::from(count)).sum();
    json!({
        "probe": "inproc",
        "what": "one thread counts the matrix held as Vec<i64> (load not timed)",
        "rows": matrix.rows,
        "cols": matrix.cols,
        "timing": summary(&samples),
        "result": { "rows": counts.len(), "values_in_range": sum, "checksum": checksum(&counts) },
    })
}

/// A private folder (mode 0700) for the probe's sockets, removed on drop.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new() -> SocketDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("corepool-probe-{}-{nanos}", std::process::id()));
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .unwrap_or_else(|error| fail(&format!("creating {}: {error}", path.display())));
        SocketDir(path)
    }

    fn listen(&self, name: &str) -> (UnixListener, PathBuf) {
        let path = self.0.join(name);
        let listener =
            UnixListener::bind(&path).unwrap_or_else(|error| fail(&format!("binding {}: {error}", path.display())));
        (listener, path)
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        fs::remove_dir_all(&self.0).ok();
    }
}

fn start_child(command: &str, socket: Option<&Path>) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap_or_else(|_| "probe".into()));
    child.arg(command).stdin(Stdio::null());
    if let Some(socket) = socket {
        child.arg(socket);
    }
    child.spawn().unwrap_or_else(|error| fail(&format!("starting a child: {error}")))
}

fn connect(socket: &Path) -> UnixStream {
    UnixStream::connect(socket).unwrap_or_else(|error| fail(&format!("connecting: {error}")))
}

/// Start a process (this binary, which exits at once) and wait for it.
fn spawn(runs: usize) -> Value {
    let samples: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let start = Instant::now();
            start_child("child-exit", None).wait().ok();
            seconds(start)
        })
        .collect();
    json!({ "probe": "spawn", "what": "start a small Rust process and wait for its exit", "timing": summary(&samples) })
}

/// Small request/response round trips with a child over a Unix socket: the request is a length
/// prefix and one row of 5 i64 values, the answer a length prefix and a u32 count. Each run
/// does `iterations` round trips; a sample is one run's time divided by `iterations`.
fn roundtrip(iterations: usize, runs: usize) -> Value {
    let dir = SocketDir::new();
    let (listener, path) = dir.listen("echo");
    let mut child = start_child("child-echo", Some(&path));
    let (mut stream, _) = listener.accept().unwrap_or_else(|error| fail(&format!("accept: {error}")));
    let mut request = [0u8; 4 + 8 * ROW_VALUES];
    request[..4].copy_from_slice(&((8 * ROW_VALUES) as u32).to_le_bytes());
    for (at, value) in [2i64, 4, 6, 8, 9].iter().enumerate() {
        request[4 + 8 * at..12 + 8 * at].copy_from_slice(&value.to_le_bytes());
    }
    let mut answer = [0u8; 8];
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        for _ in 0..iterations.max(1) {
            stream.write_all(&request).unwrap_or_else(|error| fail(&format!("write: {error}")));
            stream.read_exact(&mut answer).unwrap_or_else(|error| fail(&format!("read: {error}")));
        }
        samples.push(seconds(start) / iterations.max(1) as f64);
    }
    drop(stream);
    child.wait().ok();
    json!({
        "probe": "roundtrip",
        "what": "one 44-byte request (a row) and one 8-byte answer over a Unix socket between two processes; seconds per round trip",
        "iterations": iterations,
        "timing": summary(&samples),
    })
}

/// Streams `mib` MiB to a child over a Unix socket in 1 MiB writes; the clock stops when the
/// child has read it all and said so. A sample is bytes per second.
fn bandwidth(mib: usize, runs: usize) -> Value {
    let dir = SocketDir::new();
    let block = vec![7u8; 1 << 20];
    let mut samples = Vec::with_capacity(runs);
    let mut rates = Vec::with_capacity(runs);
    for run in 0..runs.max(1) {
        let (listener, path) = dir.listen(&format!("sink{run}"));
        let mut child = start_child("child-sink", Some(&path));
        let (mut stream, _) = listener.accept().unwrap_or_else(|error| fail(&format!("accept: {error}")));
        let start = Instant::now();
        for _ in 0..mib.max(1) {
            stream.write_all(&block).unwrap_or_else(|error| fail(&format!("write: {error}")));
        }
        stream.shutdown(std::net::Shutdown::Write).ok();
        let mut got = [0u8; 8];
        stream.read_exact(&mut got).unwrap_or_else(|error| fail(&format!("read: {error}")));
        let elapsed = seconds(start);
        if u64::from_le_bytes(got) != (mib.max(1) as u64) << 20 {
            fail("the sink did not get every byte");
        }
        child.wait().ok();
        samples.push(elapsed);
        rates.push(((mib.max(1) as f64) * 1_048_576.0) / elapsed);
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    json!({
        "probe": "bandwidth",
        "what": "stream bytes to another process over a Unix socket in 1 MiB writes",
        "bytes": (mib.max(1) as u64) << 20,
        "timing": summary(&samples),
        "bytes_per_s": { "median": sorted[sorted.len() / 2], "min": sorted[0], "max": sorted[sorted.len() - 1] },
    })
}

/// Starts `workers` processes that each connect to a Unix socket and say hello; the start-up
/// sample ends when every hello has been read, the stop sample when every child, its socket
/// closed, has exited and been reaped.
fn spawn_connect(workers: usize, runs: usize) -> Value {
    let dir = SocketDir::new();
    let mut startup = Vec::with_capacity(runs);
    let mut stop = Vec::with_capacity(runs);
    for run in 0..runs.max(1) {
        let (listener, path) = dir.listen(&format!("pool{run}"));
        let start = Instant::now();
        let mut children: Vec<Child> = (0..workers).map(|_| start_child("child-hello", Some(&path))).collect();
        let mut streams = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (mut stream, _) = listener.accept().unwrap_or_else(|error| fail(&format!("accept: {error}")));
            let mut hello = [0u8; 8];
            stream.read_exact(&mut hello).unwrap_or_else(|error| fail(&format!("hello: {error}")));
            if &hello != HELLO {
                fail("a child said something else than hello");
            }
            streams.push(stream);
        }
        startup.push(seconds(start));
        let stopping = Instant::now();
        drop(streams);
        for child in &mut children {
            child.wait().ok();
        }
        stop.push(seconds(stopping));
    }
    json!({
        "probe": "spawn-connect",
        "what": "start N processes that each connect to a Unix socket and say hello (startup), then close the sockets and reap them (stop)",
        "workers": workers,
        "startup": summary(&startup),
        "stop": summary(&stop),
    })
}

fn child_hello(socket: &Path) {
    let mut stream = connect(socket);
    stream.write_all(HELLO).ok();
    // Wait for the parent to close the socket, like a worker waiting for work.
    let mut rest = [0u8; 1];
    while matches!(stream.read(&mut rest), Ok(n) if n > 0) {}
}

fn child_echo(socket: &Path) {
    let mut stream = connect(socket);
    let mut request = [0u8; 4 + 8 * ROW_VALUES];
    let mut answer = [0u8; 8];
    answer[..4].copy_from_slice(&4u32.to_le_bytes());
    while stream.read_exact(&mut request).is_ok() {
        let count = request[4..]
            .chunks_exact(8)
            .map(|value| i64::from_le_bytes(value.try_into().expect("8 bytes")))
            .filter(|value| (4..=8).contains(value))
            .count() as u32;
        answer[4..].copy_from_slice(&count.to_le_bytes());
        if stream.write_all(&answer).is_err() {
            break;
        }
    }
}

fn child_sink(socket: &Path) {
    let mut stream = connect(socket);
    let mut buffer = vec![0u8; 1 << 20];
    let mut total: u64 = 0;
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    stream.write_all(&total.to_le_bytes()).ok();
}
