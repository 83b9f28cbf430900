//! corepool's MPI message layer under a real `mpirun`: the probe exchanges frames between
//! rank 0 and every other rank, and ends in bounded time when a rank stops answering.
//! Skipped (with one line) where Open MPI is not installed, except under CI.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use corepool_tests::{
    mpi::{
        Job, mpi_available, mpi_example, mpirun_command, one_job_at_a_time, probe_binary, rank_lines, three_hosts,
        wait_until_gone,
    },
    netns,
};

#[test]
fn a_default_build_of_the_library_needs_no_mpi() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(corepool_tests::mpi::workspace_root())
        .args(["tree", "-p", "corepool", "-e", "normal", "--prefix", "none"])
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(tree.lines().any(|line| line.starts_with("corepool ")), "{tree}");
    assert!(!tree.lines().any(|line| line.starts_with("mpi")), "a default build pulls in MPI:\n{tree}");
}

/// Runs the probe on `ranks` ranks of this host and checks what it printed.
fn probe_on_one_host(ranks: usize) {
    let _turn = one_job_at_a_time();
    let probe = probe_binary();
    let mut command = mpirun_command();
    command.args(["-np", &ranks.to_string()]).arg(&probe).args(["--sizes", "1,16,64", "--round-trips", "500"]);
    command.args(["--idle", "1"]);
    let mut job = Job::start(command);
    let succeeded = job.finish(Duration::from_secs(90));
    let output = job.output();
    assert_eq!(succeeded, Some(true), "the probe failed:\n{output}");
    let ranks_seen = rank_lines(&output);
    assert_eq!(ranks_seen.iter().map(|r| r.rank).collect::<Vec<_>>(), (0..ranks).collect::<Vec<_>>(), "{output}");
    let pids: HashSet<u32> = ranks_seen.iter().map(|r| r.pid).collect();
    assert_eq!(pids.len(), ranks, "each rank is a process of its own:\n{output}");
    for rank in 1..ranks {
        assert!(output.contains(&format!("round trip rank {rank}: 500 x 64 B")), "{output}");
    }
    for mib in [1, 16, 64] {
        let line = format!("frames {mib} MiB both ways with {} ranks: exact", ranks - 1);
        assert!(output.contains(&line), "missing {line:?}:\n{output}");
    }
    assert!(output.contains(&format!("probe: all {ranks} ranks exact")), "{output}");
    assert_idle_ranks_rest(&output, ranks);
    eprintln!("{output}");
    assert!(wait_until_gone(&probe, Duration::from_secs(10)).is_empty(), "probe processes left behind");
}

/// Checks the probe's `idle` line: no rank, rank 0 included, spins while nothing comes.
fn assert_idle_ranks_rest(output: &str, ranks: usize) {
    let line =
        output.lines().find(|line| line.starts_with("idle ")).unwrap_or_else(|| panic!("no idle line:\n{output}"));
    let shares: Vec<f64> =
        line.split(", ").filter_map(|part| part.rsplit(' ').next()?.strip_suffix('%')?.parse().ok()).collect();
    assert_eq!(shares.len(), ranks, "{line}");
    // A spinning rank shows near 100%; a resting one a few percent, even on a busy host.
    assert!(shares.iter().all(|share| *share < 25.0), "an idle rank used a core: {line}");
}

#[test]
fn three_ranks_exchange_exact_frames_both_ways() {
    if mpi_available("three_ranks_exchange_exact_frames_both_ways") {
        probe_on_one_host(3);
    }
}

#[test]
fn four_ranks_exchange_exact_frames_both_ways() {
    if mpi_available("four_ranks_exchange_exact_frames_both_ways") {
        probe_on_one_host(4);
    }
}

#[test]
fn threads_of_rank_0_each_echo_frames_with_a_worker_through_the_hub() {
    if !mpi_available("threads_of_rank_0_each_echo_frames_with_a_worker_through_the_hub") {
        return;
    }
    let _turn = one_job_at_a_time();
    let echo = mpi_example("mpi_hub_echo");
    let mut command = mpirun_command();
    command.args(["-np", "4"]).arg(&echo);
    let mut job = Job::start(command);
    let succeeded = job.finish(Duration::from_secs(90));
    let output = job.output();
    assert_eq!(succeeded, Some(true), "the hub check failed:\n{output}");
    for rank in 1..4 {
        assert!(output.contains(&format!("hub: rank {rank} echoed 36 frames")), "{output}");
    }
    assert!(output.contains("hub: all ranks exact"), "{output}");
    eprintln!("{output}");
    assert!(wait_until_gone(&echo, Duration::from_secs(10)).is_empty(), "processes left behind");
}

#[test]
fn a_rank_that_stops_answering_ends_the_job_in_bounded_time_naming_it() {
    if !mpi_available("a_rank_that_stops_answering_ends_the_job_in_bounded_time_naming_it") {
        return;
    }
    let _turn = one_job_at_a_time();
    let probe = probe_binary();
    let mut command = mpirun_command();
    command.args(["-np", "3"]).arg(&probe);
    command.args(["--sizes", "1", "--round-trips", "10", "--hold", "40", "--deadline", "2"]);
    let mut job = Job::start(command);
    let holding = job.wait_for_line(Duration::from_secs(30), |line| line.starts_with("holding"));
    assert!(holding.is_some(), "the probe never got to holding:\n{}", job.output());
    let silent = rank_lines(&job.output()).into_iter().find(|r| r.rank == 2).expect("rank 2 said where it runs");
    // A stopped process neither answers nor dies: what a hung rank looks like to rank 0.
    // SAFETY: kill(2) on a pid the probe reported as its own rank.
    assert_eq!(unsafe { libc::kill(silent.pid as i32, libc::SIGSTOP) }, 0);
    let stopped = Instant::now();
    let named = job.wait_for_line(Duration::from_secs(20), |line| line.starts_with("probe: no answer"));
    let waited = stopped.elapsed();
    let named = named.unwrap_or_else(|| panic!("rank 0 never gave up on rank 2:\n{}", job.output()));
    assert!(named.contains(&format!("rank 2 on host {} (pid {})", silent.host, silent.pid)), "{named}");
    assert!(waited < Duration::from_secs(10), "rank 0 took {waited:?} to give up");
    let succeeded = job.finish(Duration::from_secs(30));
    assert_ne!(succeeded, Some(true), "a job with a silent rank must fail:\n{}", job.output());
    // SAFETY: as above; the process may be gone already.
    unsafe { libc::kill(silent.pid as i32, libc::SIGKILL) };
    assert!(wait_until_gone(&probe, Duration::from_secs(10)).is_empty(), "probe processes left behind");
}

#[test]
fn a_killed_rank_ends_the_job_in_bounded_time_naming_it() {
    if !mpi_available("a_killed_rank_ends_the_job_in_bounded_time_naming_it") {
        return;
    }
    let _turn = one_job_at_a_time();
    let probe = probe_binary();
    let mut command = mpirun_command();
    command.args(["-np", "3"]).arg(&probe);
    command.args(["--sizes", "1", "--round-trips", "10", "--hold", "40", "--deadline", "20"]);
    let mut job = Job::start(command);
    let holding = job.wait_for_line(Duration::from_secs(30), |line| line.starts_with("holding"));
    assert!(holding.is_some(), "the probe never got to holding:\n{}", job.output());
    let victim = rank_lines(&job.output()).into_iter().find(|r| r.rank == 2).expect("rank 2 said where it runs");
    // SAFETY: kill(2) on a pid the probe reported as its own rank.
    assert_eq!(unsafe { libc::kill(victim.pid as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let succeeded = job.finish(Duration::from_secs(20));
    let took = killed.elapsed();
    let output = job.output();
    assert_eq!(succeeded, Some(false), "the job must end, and fail, once a rank is killed:\n{output}");
    assert!(took < Duration::from_secs(15), "the job took {took:?} to end");
    assert!(output.contains("rank 2") && output.contains("signal 9"), "mpirun names the rank:\n{output}");
    assert!(wait_until_gone(&probe, Duration::from_secs(10)).is_empty(), "probe processes left behind");
}

#[test]
fn three_hosts_in_network_namespaces_exchange_exact_frames_over_their_private_network() {
    let test = "three_hosts_in_network_namespaces_exchange_exact_frames_over_their_private_network";
    let _turn = one_job_at_a_time();
    let Some(hosts) = three_hosts(test) else { return };
    let tag = hosts.tag().to_owned();
    let probe = probe_binary();
    let before: Vec<(u64, u64)> = (0..3).map(|host| hosts.link_bytes(host)).collect();
    let mut command = hosts.mpirun_command(60);
    command.arg(&probe).args(["--sizes", "1,16", "--round-trips", "200", "--idle", "1"]);
    let mut job = Job::start(command);
    let succeeded = job.finish(Duration::from_secs(90));
    let output = job.output();
    assert_eq!(succeeded, Some(true), "the probe failed across hosts:\n{output}");
    let ranks = rank_lines(&output);
    let places: Vec<(usize, String)> = ranks.iter().map(|r| (r.rank, r.host.clone())).collect();
    let expected: Vec<(usize, String)> = (0..3).map(|rank| (rank, netns::host_name(rank))).collect();
    assert_eq!(places, expected, "one rank on each host, each host its own name:\n{output}");
    for mib in [1, 16] {
        assert!(output.contains(&format!("frames {mib} MiB both ways with 2 ranks: exact")), "{output}");
    }
    assert!(output.contains("probe: all 3 ranks exact"), "{output}");
    assert_idle_ranks_rest(&output, 3);
    eprintln!("{output}");
    // The frames crossed the hosts' own links, the only way out of each host.
    let frame_bytes = 17 << 20;
    for (host, (received_before, sent_before)) in before.iter().enumerate().skip(1) {
        let (received, sent) = hosts.link_bytes(host);
        let (received, sent) = (received - received_before, sent - sent_before);
        assert!(received >= frame_bytes && sent >= frame_bytes, "host {host} moved {received} in, {sent} out");
    }
    for host in 0..3 {
        for address in hosts.addresses(host) {
            let private = address.starts_with("10.213.7.") && address.ends_with("/24");
            let local = address == "127.0.0.1/8" || address == "::1/128" || address.starts_with("fe80:");
            assert!(private || local, "host {host} has address {address}, outside {}", netns::SUBNET);
        }
    }
    assert!(wait_until_gone(&probe, Duration::from_secs(10)).is_empty(), "probe processes left behind");
    drop(hosts);
    assert_eq!(netns::namespaces_tagged(&tag), Vec::<String>::new(), "namespaces left behind");
}

#[test]
fn a_host_cut_off_mid_run_is_named_by_rank_0_within_its_deadline() {
    let test = "a_host_cut_off_mid_run_is_named_by_rank_0_within_its_deadline";
    let _turn = one_job_at_a_time();
    let Some(hosts) = three_hosts(test) else { return };
    let tag = hosts.tag().to_owned();
    let probe = probe_binary();
    let mut command = hosts.mpirun_command(60);
    command.arg(&probe).args(["--sizes", "1", "--round-trips", "10", "--hold", "40", "--deadline", "3"]);
    let mut job = Job::start(command);
    let holding = job.wait_for_line(Duration::from_secs(40), |line| line.starts_with("holding"));
    assert!(holding.is_some(), "the probe never got to holding:\n{}", job.output());
    let rank_0 = rank_lines(&job.output()).into_iter().find(|r| r.rank == 0).expect("rank 0 said where it runs");
    hosts.cut(2).expect("the link goes down");
    let cut = Instant::now();
    let named = job.wait_for_line(Duration::from_secs(20), |line| line.starts_with("probe: no answer"));
    let waited = cut.elapsed();
    let named = named.unwrap_or_else(|| panic!("rank 0 never gave up on the cut host:\n{}", job.output()));
    assert!(named.contains(&format!("rank 2 on host {}", netns::host_name(2))), "{named}");
    assert!(waited < Duration::from_secs(10), "rank 0 took {waited:?} to give up");
    eprintln!("{named} ({waited:?} after the cut)");
    let end = Instant::now() + Duration::from_secs(10);
    while corepool_tests::alive(rank_0.pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!corepool_tests::alive(rank_0.pid), "rank 0 did not end after giving up");
    // mpirun cannot reach the cut host to end its rank; removing the hosts ends it all.
    let ended = job.finish(Duration::from_secs(5));
    eprintln!("mpirun {}", if ended.is_some() { "ended by itself" } else { "was still waiting for the cut host" });
    drop(job);
    drop(hosts);
    assert_eq!(netns::namespaces_tagged(&tag), Vec::<String>::new(), "namespaces left behind");
    assert!(wait_until_gone(&probe, Duration::from_secs(10)).is_empty(), "probe processes left behind");
}
