//! Helpers shared by the end-to-end tests: finding the real binaries, running them under
//! a watchdog, and counting independently of corepool's own code.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

pub mod mpi;
pub mod netns;

/// How long any one run of a binary may take before the test fails as hung.
pub const WATCHDOG: Duration = Duration::from_secs(120);

/// The folder cargo put this test's binaries in (`target/<profile>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.parent().and_then(Path::parent).expect("tests run from target/<profile>/deps").to_path_buf()
}

/// The `corepool` binary, built by `cargo test --workspace`.
pub fn corepool_bin() -> PathBuf {
    let path = target_dir().join("corepool");
    assert!(path.is_file(), "{} is missing: run the tests with `cargo test --workspace`", path.display());
    path
}

/// What a finished run printed, and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Finished {
    /// Panics with everything printed unless the run succeeded.
    pub fn assert_success(self) -> Self {
        assert!(
            self.status.success(),
            "run failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// `program` set up to run in `dir` with no standard input and its output captured.
pub fn captured(program: impl AsRef<std::ffi::OsStr>, dir: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Runs `corepool` with `args` and extra environment, in `dir`, under the watchdog.
pub fn run_corepool(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let child = captured(corepool_bin(), dir).args(args).envs(env.iter().copied()).spawn().expect("corepool starts");
    wait_with_watchdog(child, WATCHDOG)
}

/// Waits for `child`, collecting its output; kills it and panics if it outlives `limit`.
pub fn wait_with_watchdog(mut child: Child, limit: Duration) -> Finished {
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting on the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("watchdog: the run took over {limit:?}; stderr so far:\n{}", stderr.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Finished { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// A reproducible matrix for tests, made here rather than by corepool.
pub fn test_matrix(rows: usize, cols: usize, seed: u64) -> Vec<Vec<i64>> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..rows)
        .map(|_| {
            (0..cols)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 33) % 10) as i64
                })
                .collect()
        })
        .collect()
}

/// Writes `matrix` as CSV (`sep` = ",") or whitespace-separated text (`sep` = " ").
pub fn write_matrix(path: &Path, matrix: &[Vec<i64>], sep: &str) {
    let text: String =
        matrix.iter().map(|row| row.iter().map(i64::to_string).collect::<Vec<_>>().join(sep) + "\n").collect();
    std::fs::write(path, text).expect("writing the test matrix");
}

/// The expected counts, by the plainest loop there is.
pub fn expected_counts(matrix: &[Vec<i64>], min: i64, max: i64) -> Vec<u32> {
    matrix.iter().map(|row| row.iter().filter(|&&v| v >= min && v <= max).count() as u32).collect()
}

/// Reads an output file of one count a line.
pub fn read_counts(path: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines().map(|line| line.parse().unwrap_or_else(|_| panic!("bad count line {line:?}"))).collect()
}

/// Reads an output file of `row,count` lines, in file order.
pub fn read_arrivals(path: &Path) -> Vec<(usize, u32)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|line| {
            let (row, count) = line.split_once(',').unwrap_or_else(|| panic!("bad arrival line {line:?}"));
            (row.parse().unwrap(), count.parse().unwrap())
        })
        .collect()
}

/// Every `corepool` mode that uses the pool.
pub const POOL_MODES: [&str; 8] =
    ["apply", "map", "starmap", "imap", "imap-unordered", "apply-async", "map-async", "starmap-async"];

/// Whether a process name is a worker's: `corepool-w` and its index.
pub fn is_worker_name(name: &str) -> bool {
    name.strip_prefix("corepool-w").is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
}

/// Process ids of the live children of `parent`, with their names (`/proc/PID/comm`).
pub fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc is readable").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The name in parentheses may hold spaces; the fields after the last ')' are fixed.
        let Some(after) = stat.rfind(')').map(|at| &stat[at + 2..]) else { continue };
        let mut fields = after.split(' ');
        let state = fields.next().unwrap_or("");
        let ppid: u32 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        if ppid == parent && state != "Z" {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            children.push((pid, comm.trim().to_owned()));
        }
    }
    children
}

/// Process ids of the live (not zombie) processes in process group `group`: a process
/// and every descendant that stayed in its group, orphans included.
pub fn process_group_members(group: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc is readable").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // After the name: state, parent, process group.
        let Some(after) = stat.rfind(')').map(|at| &stat[at + 2..]) else { continue };
        let fields: Vec<&str> = after.split(' ').take(3).collect();
        if fields.len() == 3 && fields[0] != "Z" && fields[2].parse() == Ok(group) {
            members.push(pid);
        }
    }
    members
}

/// Whether a process with this id exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rfind(')').map(|at| stat[at + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// Tasks of the tests' own, run by the `test-worker` binary.
pub mod tasks {
    use corepool::task::{Registry, Task};
    use serde::{Deserialize, Serialize};

    /// corepool's built-in tasks and these.
    pub fn registry() -> Registry {
        corepool_tutorial::registry().register::<SquarePlus>().register::<FailOn>()
    }

    /// `x * x + offset` for each item: a task corepool itself knows nothing of.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct SquarePlus {
        /// Added to every square.
        pub offset: i64,
    }

    impl Task for SquarePlus {
        const NAME: &'static str = "test-square-plus";
        type Chunk = Vec<i64>;
        type Output = i64;

        fn run(&self, chunk: Vec<i64>) -> Result<Vec<i64>, String> {
            Ok(chunk.into_iter().map(|x| x * x + self.offset).collect())
        }
    }

    /// How [`FailOn`] fails on its chosen item.
    #[derive(Debug, Clone, Copy, Serialize, Deserialize)]
    pub enum Failure {
        /// Returns an error.
        Error,
        /// Panics.
        Panic,
        /// Exits the worker process with code 7.
        Exit,
    }

    /// Returns items unchanged, but fails in the chosen way on item value `bad`.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct FailOn {
        /// The item value to fail on.
        pub bad: i64,
        /// How to fail.
        pub how: Failure,
    }

    impl Task for FailOn {
        const NAME: &'static str = "test-fail-on";
        type Chunk = Vec<i64>;
        type Output = i64;

        fn run(&self, chunk: Vec<i64>) -> Result<Vec<i64>, String> {
            if chunk.contains(&self.bad) {
                match self.how {
                    Failure::Error => return Err(format!("item {} is bad", self.bad)),
                    Failure::Panic => panic!("item {} is bad", self.bad),
                    Failure::Exit => std::process::exit(7),
                }
            }
            Ok(chunk)
        }
    }
}
