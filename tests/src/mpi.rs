//! Running corepool's MPI probe under a real `mpirun`: finding Open MPI, building the probe
//! once (with the `mpi` feature, in a target folder of its own), and running it bounded.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, OnceLock, mpsc},
    time::{Duration, Instant},
};

/// How long one `mpirun` may take before `timeout` ends it (then kills it 5 s later).
pub const MPIRUN_LIMIT_SECS: u32 = 60;

/// Where the probe's build goes, apart from the workspace's own target folder.
fn probe_target_dir() -> PathBuf {
    workspace_root().join("target").join("mpi")
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// Whether `program` is on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Whether MPI tests can run here. Where Open MPI (`mpicc`, `mpirun`) is missing this
/// prints one line and returns false, unless `CI` is set: CI installs it, so there its
/// absence fails the test.
pub fn mpi_available(test: &str) -> bool {
    if on_path("mpicc") && on_path("mpirun") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: mpicc or mpirun is missing, and CI must run the MPI tests (apt-get install libopenmpi-dev openmpi-bin libclang-dev)"
    );
    eprintln!("{test}: skipped, Open MPI is not installed (apt-get install libopenmpi-dev openmpi-bin libclang-dev)");
    false
}

/// The probe binary (the `mpi_probe` example), built on first use.
pub fn probe_binary() -> PathBuf {
    mpi_example("mpi_probe")
}

/// The MPI example `name` of corepool; all of them are built on first use (once for every
/// test of this process).
pub fn mpi_example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            release_build("the MPI examples", &["-p", "corepool", "--features", "mpi", "--examples"]).join("examples")
        })
        .join(name)
}

/// The `corepool` command built with the `mpi` and `test-knobs` features (in the same
/// target folder as the MPI examples), built on first use, with the `mpi-user` program.
pub fn mpi_corepool() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let args = ["-p", "corepool-cli", "-p", "corepool-tests", "--bin", "corepool", "--bin", "mpi-user"];
            let features = ["--features", "corepool-cli/mpi,corepool-cli/test-knobs,corepool-tests/mpi"];
            release_build("corepool with MPI", &[&args[..], &features[..]].concat()).join("corepool")
        })
        .clone()
}

/// The test program `name` (in `tests/src/bin/`) built with MPI, with the same features
/// and in the same target folder as [`mpi_corepool`] (which it builds too), on first use.
pub fn mpi_test_program(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let release = mpi_corepool().with_file_name("");
    if !built.iter().any(|done| done == name) {
        let args =
            ["-p", "corepool-cli", "-p", "corepool-tests", "--bin", "corepool", "--bin", "mpi-user", "--bin", name];
        let features = ["--features", "corepool-cli/mpi,corepool-cli/test-knobs,corepool-tests/mpi"];
        release_build(name, &[&args[..], &features[..]].concat());
        built.push(name.to_owned());
    }
    release.join(name)
}

/// Runs a release `cargo build` with `args` into the MPI tests' own target folder, and
/// returns its `release` folder; fails the test, naming `what`, if the build fails.
fn release_build(what: &str, args: &[&str]) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = probe_target_dir();
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--quiet", "--release", "--target-dir"])
        .arg(&target)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "building {what} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    target.join("release")
}

/// This machine's host name, as MPI names it (`MPI_Get_processor_name`, `hostname`).
pub fn this_host() -> String {
    let mut name = [0u8; 256];
    // SAFETY: the buffer is as long as the length given.
    assert_eq!(unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) }, 0);
    let end = name.iter().position(|&byte| byte == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

/// One MPI job at a time in this process: a 2-core machine runs them in turn, not at once.
pub fn one_job_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `mpirun` bounded by `timeout -k`, run as root if need be, with idle ranks yielding.
pub fn mpirun_command() -> Command {
    let mut command = Command::new("timeout");
    command
        .args(["-k", "5", &MPIRUN_LIMIT_SECS.to_string(), "mpirun", "--oversubscribe", "--allow-run-as-root"])
        .args(["--mca", "mpi_yield_when_idle", "1"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null());
    command
}

/// A running `mpirun`, its output read line by line as it comes.
pub struct Job {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line so far, standard output and error together.
    pub seen: Vec<String>,
}

impl Job {
    /// Starts `command` with its output captured.
    pub fn start(mut command: Command) -> Job {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("mpirun starts");
        let (sender, lines) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        Job { child, lines, seen: Vec::new() }
    }

    /// Waits (at most `limit`) for a line that satisfies `wanted`, and returns it.
    pub fn wait_for_line(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + limit;
        while let Ok(line) = self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
            self.seen.push(line.clone());
            if wanted(&line) {
                return Some(line);
            }
        }
        None
    }

    /// Waits (at most `limit`) for the job to end; kills it if it does not. Returns whether
    /// it succeeded, or `None` if it had to be killed, and collects the rest of its output.
    pub fn finish(&mut self, limit: Duration) -> Option<bool> {
        let end = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting on mpirun") {
                break Some(status.success());
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(line);
        }
        status
    }

    /// Everything the job printed so far.
    pub fn output(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one rank said about itself in the probe's output (`rank R host H pid P`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankLine {
    /// The rank.
    pub rank: usize,
    /// Its host's name.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
}

/// The `rank R host H pid P` lines of the probe's output.
pub fn rank_lines(output: &str) -> Vec<RankLine> {
    output
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            match words[..] {
                ["rank", rank, "host", host, "pid", pid] => {
                    Some(RankLine { rank: rank.parse().ok()?, host: host.to_owned(), pid: pid.parse().ok()? })
                }
                _ => None,
            }
        })
        .collect()
}

/// Live processes whose program is `program` (by `/proc/PID/exe`).
pub fn processes_of(program: &Path) -> Vec<u32> {
    let Ok(wanted) = program.canonicalize() else { return Vec::new() };
    std::fs::read_dir("/proc")
        .expect("/proc is readable")
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_string_lossy().parse().ok()?;
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            (exe == wanted && crate::alive(pid)).then_some(pid)
        })
        .collect()
}

/// Waits (at most `limit`) until no process runs `program`; returns those still running.
pub fn wait_until_gone(program: &Path, limit: Duration) -> Vec<u32> {
    let end = Instant::now() + limit;
    loop {
        let left = processes_of(program);
        if left.is_empty() || Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three hosts made of network namespaces, or `None` after one line saying why not.
pub fn three_hosts(test: &str) -> Option<crate::netns::Hosts> {
    if !mpi_available(test) {
        return None;
    }
    match crate::netns::Hosts::make(3) {
        Ok(hosts) => Some(hosts),
        Err(reason) => {
            eprintln!("{test}: skipped, network namespaces cannot be made here: {reason}");
            None
        }
    }
}
