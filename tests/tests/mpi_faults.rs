//! A rank lost during a pool run over MPI, under a real `mpirun`: the run ends in bounded
//! time, non-zero, with one line that names the rank, its host and the items it held, puts
//! no output in place, and leaves no process behind. Skipped (with one line) where Open
//! MPI is not installed, except under CI.

use std::{
    ops::Range,
    path::Path,
    time::{Duration, Instant},
};

use corepool_tests::{
    mpi::{
        Job, mpi_available, mpi_corepool, mpirun_command, one_job_at_a_time, processes_of, this_host, three_hosts,
        wait_until_gone,
    },
    netns,
};

/// The MPI rank of process `pid`, from the environment its launcher gave it.
fn rank_of(pid: u32) -> Option<usize> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|&byte| byte == 0)
        .find_map(|var| std::str::from_utf8(var.strip_prefix(b"OMPI_COMM_WORLD_RANK=")?).ok()?.parse().ok())
}

/// Waits (at most `limit`) for the process of `rank` running `program`.
fn wait_for_rank(program: &Path, rank: usize, limit: Duration) -> Option<u32> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        let found = processes_of(program).into_iter().find(|&pid| rank_of(pid) == Some(rank));
        if found.is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The item ranges of a lost rank's line (`... was lost holding items 0..10, 20..30: why`).
fn items_named(line: &str) -> Vec<Range<u64>> {
    let list = line.split_once(" holding items ").or_else(|| line.split_once(" held items "));
    let list = list.map_or("", |(_, rest)| rest);
    let list = list.split_once(": ").map_or(list, |(items, _)| items);
    list.split(", ")
        .filter_map(|range| {
            let (start, end) = range.split_once("..")?;
            Some(start.trim().parse().ok()?..end.trim().parse().ok()?)
        })
        .collect()
}

/// The one line of `output` that names a lost rank; fails the test unless there is
/// exactly one.
fn lost_rank_line(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|line| line.contains(" was lost holding ")).collect();
    assert_eq!(lines.len(), 1, "one line names the lost rank:\n{output}");
    assert!(lines[0].starts_with("corepool: rank "), "{output}");
    lines[0].to_owned()
}

/// A count over MPI started with a test knob, writing to `counts.txt` in a folder of its own.
struct FaultyRun {
    _turn: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    corepool: std::path::PathBuf,
    job: Job,
}

/// Starts `corepool count --transport mpi args --output counts.txt` on 3 ranks, with the
/// test knob `knob` in every rank's environment; `None` (and one line) without Open MPI.
fn start_on_three_ranks(test: &str, (knob, value): (&str, &str), args: &[&str]) -> Option<FaultyRun> {
    if !mpi_available(test) {
        return None;
    }
    let _turn = one_job_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let corepool = mpi_corepool();
    let mut command = mpirun_command();
    command.current_dir(dir.path()).env(knob, value).args(["-np", "3"]).arg(&corepool);
    command.args(["count", "--transport", "mpi"]).args(args).args(["--output", "counts.txt"]);
    let job = Job::start(command);
    Some(FaultyRun { _turn, dir, corepool, job })
}

#[test]
fn a_rank_killed_mid_run_is_named_with_its_host_and_the_items_it_held() {
    let test = "a_rank_killed_mid_run_is_named_with_its_host_and_the_items_it_held";
    // Rank 2 (worker 1) sleeps before each chunk, so that it always holds some.
    let knob = ("COREPOOL_TEST_SLOW_WORKER", "1:20");
    let args = ["--rows", "200000", "--chunk-size", "500", "--repeat", "200"];
    let Some(FaultyRun { _turn, dir, corepool, mut job }) = start_on_three_ranks(test, knob, &args) else { return };
    let rank_2 = wait_for_rank(&corepool, 2, Duration::from_secs(30));
    let rank_2 = rank_2.unwrap_or_else(|| panic!("no rank 2 running:\n{}", job.output()));
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    // SAFETY: sends a signal to a process this test started.
    unsafe { libc::kill(rank_2 as i32, libc::SIGKILL) };
    let succeeded = job.finish(Duration::from_secs(30));
    let waited = killed.elapsed();
    let output = job.output();
    assert_eq!(succeeded, Some(false), "the job must fail, in bounded time:\n{output}");
    assert!(waited < Duration::from_secs(10), "took {waited:?}:\n{output}");
    let line = lost_rank_line(&output);
    let named = format!("corepool: rank 2 on host {} (pid {rank_2}) was lost holding items ", this_host());
    assert!(line.starts_with(&named), "{line}\nnot {named}");
    assert!(!items_named(&line).is_empty(), "{line}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|entry| entry.file_name()).collect();
    assert!(left.is_empty(), "no output, whole or half-written: {left:?}");
    assert!(wait_until_gone(&corepool, Duration::from_secs(10)).is_empty(), "ranks left behind:\n{output}");
}

#[test]
fn a_rank_that_stops_answering_holding_several_chunks_is_named_with_all_of_them() {
    let test = "a_rank_that_stops_answering_holding_several_chunks_is_named_with_all_of_them";
    // The first chunk hangs: its rank was sent its second chunk with it, before any answer.
    let knob = ("COREPOOL_TEST_FAULT", "hang@0");
    let args = ["--rows", "20000", "--chunk-size", "1000", "--task-timeout", "2"];
    let started = Instant::now();
    let Some(FaultyRun { _turn, dir, corepool, mut job }) = start_on_three_ranks(test, knob, &args) else { return };
    let succeeded = job.finish(Duration::from_secs(40));
    let output = job.output();
    assert_eq!(succeeded, Some(false), "the job must fail, in bounded time:\n{output}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}:\n{output}", started.elapsed());
    let line = lost_rank_line(&output);
    assert!(line.contains(&format!(" on host {} (pid ", this_host())), "{line}");
    assert!(line.ends_with(": did not answer within 2s"), "{line}");
    // The chunk it hangs in, and the one sent with it (two in flight per worker).
    let items = items_named(&line);
    assert!(items.iter().any(|range| range.contains(&0)), "{line}");
    assert!(items.iter().map(|range| range.end - range.start).sum::<u64>() >= 2000, "two chunks or more: {line}");
    assert!(!output.contains("workers died"), "{output}");
    assert!(!dir.path().join("counts.txt").exists(), "no output:\n{output}");
    assert!(wait_until_gone(&corepool, Duration::from_secs(10)).is_empty(), "ranks left behind:\n{output}");
}

/// Starts a long count over MPI on the namespace hosts, one rank each, whose rank 2 sleeps
/// before each chunk (so that it always holds some), with `extra` flags; returns the job
/// once rank 2 runs, and rank 2's process id.
fn start_across_hosts(hosts: &netns::Hosts, corepool: &Path, extra: &[&str]) -> (Job, u32) {
    let mut command = hosts.mpirun_command(60);
    command.env("COREPOOL_TEST_SLOW_WORKER", "1:20").args(["-x", "COREPOOL_TEST_SLOW_WORKER"]).arg(corepool);
    command.args(["count", "--transport", "mpi", "--rows", "200000", "--chunk-size", "500", "--repeat", "200"]);
    command.args(extra);
    let job = Job::start(command);
    let rank_2 = wait_for_rank(corepool, 2, Duration::from_secs(30));
    let rank_2 = rank_2.unwrap_or_else(|| panic!("no rank 2 running:\n{}", job.output()));
    (job, rank_2)
}

#[test]
fn a_host_cut_off_mid_run_ends_the_run_naming_its_rank_and_host() {
    let test = "a_host_cut_off_mid_run_ends_the_run_naming_its_rank_and_host";
    let _turn = one_job_at_a_time();
    let Some(hosts) = three_hosts(test) else { return };
    let tag = hosts.tag().to_owned();
    let corepool = mpi_corepool();
    let (mut job, _) = start_across_hosts(&hosts, &corepool, &["--task-timeout", "2"]);
    std::thread::sleep(Duration::from_secs(1));
    hosts.cut(2).expect("the link goes down");
    let cut = Instant::now();
    let named = job.wait_for_line(Duration::from_secs(20), |line| line.contains(" was lost holding "));
    let waited = cut.elapsed();
    let named = named.unwrap_or_else(|| panic!("rank 0 never gave up on the cut host:\n{}", job.output()));
    assert!(named.starts_with(&format!("corepool: rank 2 on host {} ", netns::host_name(2))), "{named}");
    assert!(named.ends_with(": did not answer within 2s"), "{named}");
    assert!(!items_named(&named).is_empty(), "{named}");
    assert!(waited < Duration::from_secs(10), "rank 0 took {waited:?} to give up");
    // mpirun cannot reach the cut host to end its rank; removing the hosts ends it all.
    let _ = job.finish(Duration::from_secs(5));
    drop(job);
    drop(hosts);
    assert_eq!(netns::namespaces_tagged(&tag), Vec::<String>::new(), "namespaces left behind");
    assert!(wait_until_gone(&corepool, Duration::from_secs(10)).is_empty(), "ranks left behind");
}

#[test]
fn a_rank_killed_on_another_host_ends_the_run_saying_what_each_rank_held() {
    let test = "a_rank_killed_on_another_host_ends_the_run_saying_what_each_rank_held";
    let _turn = one_job_at_a_time();
    let Some(hosts) = three_hosts(test) else { return };
    let tag = hosts.tag().to_owned();
    let corepool = mpi_corepool();
    let (mut job, rank_2) = start_across_hosts(&hosts, &corepool, &[]);
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    // SAFETY: sends a signal to a process this test started.
    unsafe { libc::kill(rank_2 as i32, libc::SIGKILL) };
    let succeeded = job.finish(Duration::from_secs(30));
    let waited = killed.elapsed();
    let output = job.output();
    assert_eq!(succeeded, Some(false), "the job must fail, in bounded time:\n{output}");
    assert!(waited < Duration::from_secs(10), "took {waited:?}:\n{output}");
    // Rank 0 cannot see a process of another host: it says what each rank held when the
    // launcher ended the job, and the slow rank 2 always holds some.
    let held = format!("corepool: rank 2 on host {} (pid {rank_2}) held items ", netns::host_name(2));
    let line = output.lines().find(|line| line.starts_with(&held));
    let line = line.unwrap_or_else(|| panic!("no line says what rank 2 held:\n{output}"));
    assert!(!line.contains(" was lost "), "{line}");
    drop(job);
    drop(hosts);
    assert_eq!(netns::namespaces_tagged(&tag), Vec::<String>::new(), "namespaces left behind");
    assert!(wait_until_gone(&corepool, Duration::from_secs(10)).is_empty(), "ranks left behind");
}
