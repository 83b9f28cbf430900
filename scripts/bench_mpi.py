"""scripts/bench's MPI section: the pool over MPI next to the local transport, in the same run.

On one host, `mpirun -np 3` (rank 0 the coordinator, 2 worker ranks, shared memory) against
`corepool count --workers 2` on Unix sockets, round after round so that both see the same
load; then, as root where `ip netns` works, the same over TCP across three network-namespace
hosts. The figure compared is the pool's own time (the report's distribution + compute +
gathering); the pool's start (MPI_Init and the ranks' hellos under MPI) and mpirun's launch
and end (its wall time less the program's own) are reported apart. Also the CPU of a rank
left idle during a pool run. Skipped, with one line, where mpirun or the feature build is
unavailable.
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import sys
import time
from pathlib import Path

RANKS = 3  # rank 0 and 2 worker ranks, against 2 local workers
MPIRUN_LIMIT = 120
NETNS_PREFIX = "cpbench-"
NETNS_SUBNET = "10.213.9.0/24"
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def netns_address(index):
    return f"10.213.9.{index + 1}"


def build(repo, no_build, log):
    """The corepool command built with the `mpi` feature (in a target folder of its own, so
    that the ordinary build stays as it is), or (None, why not)."""
    # Two levels down, out of the reach of scripts/bench's search for its own builds
    # (target/*/release) with --no-build.
    target = repo / "target" / "bench" / "mpi"
    binary = target / "release" / "corepool"
    if no_build:
        return (binary, None) if binary.exists() else (None, f"--no-build and no MPI build at {binary}")
    log("bench: building corepool with MPI (cargo build --release -p corepool-cli --features mpi) ...")
    done = subprocess.run(["cargo", "build", "--release", "-p", "corepool-cli", "--features", "mpi",
                           "--target-dir", str(target)], cwd=repo, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return None, f"the build with the mpi feature failed ({last}; Open MPI and libclang are needed: see docs/mpi.md)"
    return binary, None


def read_report(path):
    report = json.loads(Path(path).read_text())
    t = report["timings"]
    return {"job_s": t["distribution_s"] + t["compute_s"] + t["gathering_s"], "startup_s": t["startup_s"],
            "shutdown_s": t["shutdown_s"], "total_s": t["total_s"], "load_s": t["load_s"],
            "checksum": report["result"]["checksum"]}


def timed(cmd, report, env=None):
    """Runs `cmd` (which writes `report`) and returns the report's figures, with `launch_s`:
    the wall time less the program's own (the matrix made and the pool run)."""
    began = time.monotonic()
    done = subprocess.run([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=env)
    wall = time.monotonic() - began
    if done.returncode != 0 or not Path(report).exists():
        raise RuntimeError(f"{' '.join(map(str, cmd[:6]))} ... failed (exit {done.returncode}): "
                           + (done.stderr.strip().splitlines() or ["no message"])[-1])
    figures = read_report(report)
    Path(report).unlink()
    figures["launch_s"] = max(0.0, wall - figures["total_s"] - figures["load_s"])
    return figures


def mpirun_one_host(binary, ranks, args):
    return (["timeout", "-k", "5", MPIRUN_LIMIT, "mpirun", "--oversubscribe", "--mca", "mpi_yield_when_idle", "1",
             "-np", ranks, binary, "count", "--transport", "mpi"] + args)


def cpu_ticks(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def rank_of(pid):
    try:
        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if item.startswith(b"OMPI_COMM_WORLD_RANK="):
                return int(item.split(b"=", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def idle_rank_cpu(binary, env, log, repeat):
    """4 ranks on this host; each repetition of a 2,000,000-row count is cut in 2 chunks, so
    ranks 1 and 2 work and rank 3 waits through the whole run. Each rank's CPU is sampled
    from /proc from 1 s after start (the matrix made, MPI_Init done) to its last sample
    before the end."""
    log("bench: MPI, CPU of an idle rank during a pool run (4 ranks, rank 3 given no chunk) ...")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = mpirun_one_host(binary, 4, ["--rows", 2_000_000, "--chunk-size", 1_000_000, "--repeat", repeat,
                                          "-q", "-o", os.devnull])
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, cwd=tmp)
        first, last, began = {}, {}, time.monotonic()
        hz = os.sysconf("SC_CLK_TCK")
        while proc.poll() is None:
            now = time.monotonic()
            pids = subprocess.run(["pgrep", "-f", f"^{binary} count --transport mpi"], stdout=subprocess.PIPE,
                                  text=True).stdout.split()
            for pid in pids:
                rank, ticks = rank_of(pid), cpu_ticks(pid)
                if rank is None or ticks is None:
                    continue
                if now - began >= 1.0:
                    first.setdefault(rank, (now, ticks))
                    last[rank] = (now, ticks)
            time.sleep(0.05)
    cpu = {}
    for rank, (t0, c0) in first.items():
        t1, c1 = last[rank]
        if t1 - t0 >= 0.5:
            cpu[rank] = ((c1 - c0) / hz / (t1 - t0), t1 - t0)
    return cpu


def netns_unavailable():
    if os.geteuid() != 0:
        return "not root"
    for program in ("ip", "unshare"):
        if not shutil.which(program):
            return f"`{program}` is missing"
    probe = f"{NETNS_PREFIX}probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], stderr=subprocess.DEVNULL)
    return None


class NamespaceHosts:
    """Three hosts made of network namespaces, as tests/src/netns.rs makes them: veth pairs
    into a bridge in a namespace of its own, addresses on a private /24, and an rsh agent
    script that runs `ip netns exec` (with its own host name) in place of ssh. Removed on
    exit, whatever happens."""

    def __init__(self, count, folder):
        self.count, self.folder = count, Path(folder)
        self.tag = f"{NETNS_PREFIX}{os.getpid()}"
        self.names = [f"{self.tag}-h{i}" for i in range(count)] + [f"{self.tag}-br"]

    def ip(self, *args):
        subprocess.run(["ip", *map(str, args)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self):
        bridge = self.names[-1]
        try:
            self.ip("netns", "add", bridge)
            self.ip("-n", bridge, "link", "add", "br0", "type", "bridge")
            self.ip("-n", bridge, "link", "set", "br0", "up")
            for index in range(self.count):
                host = self.names[index]
                self.ip("netns", "add", host)
                self.ip("-n", bridge, "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0",
                        "netns", host)
                self.ip("-n", bridge, "link", "set", f"v{index}", "master", "br0", "up")
                self.ip("-n", host, "addr", "add", f"{netns_address(index)}/24", "dev", "eth0")
                self.ip("-n", host, "link", "set", "eth0", "up")
                self.ip("-n", host, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        (self.folder / "hosts").write_text("".join(f"{netns_address(i)} slots=1\n" for i in range(self.count)))
        cases = "".join(f"    {netns_address(i)}) ns={self.names[i]}; name=node{i} ;;\n" for i in range(self.count))
        agent = self.folder / "netns-rsh"
        agent.write_text("#!/bin/sh\nwhile [ \"${1#-}\" != \"$1\" ]; do shift; done\ncase \"$1\" in\n" + cases
                         + "    *) echo \"no such host: $1\" >&2; exit 255 ;;\nesac\nshift\n"
                         "exec ip netns exec \"$ns\" unshare --uts sh -c \"hostname $name && $*\"\n")
        agent.chmod(0o755)
        return self

    def remove(self):
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __exit__(self, *_):
        self.remove()

    def mpirun(self, binary, args):
        return (["ip", "netns", "exec", self.names[0], "unshare", "--uts", "sh", "-c", "hostname node0 && exec \"$@\"",
                 "sh", "timeout", "-k", "5", MPIRUN_LIMIT, "mpirun", "--allow-run-as-root",
                 "--hostfile", self.folder / "hosts", "--mca", "plm_rsh_agent", self.folder / "netns-rsh",
                 "--mca", "plm_rsh_no_tree_spawn", "1", "--mca", "btl", "tcp,self",
                 "--mca", "btl_tcp_if_include", NETNS_SUBNET, "--mca", "oob_tcp_if_include", NETNS_SUBNET,
                 "--mca", "mpi_yield_when_idle", "1", "-np", self.count, binary, "count", "--transport", "mpi"]
                + args)


def med(samples, key):
    return statistics.median(s[key] for s in samples)


def measure(repo, raw, quick, runs, no_build, log, fmt_s, fmt_rows):
    """The MPI section of results.md, as a list of lines (one line when skipped)."""
    md = ["## MPI: the pool across ranks, next to the local transport", ""]
    if not shutil.which("mpirun"):
        return md + ["Skipped: `mpirun` is not installed (Open MPI: see docs/mpi.md)."], []
    binary, why = build(repo, no_build, log)
    if binary is None:
        return md + [f"Skipped: {why}."], []
    env = dict(os.environ, **ROOT_ENV)
    load_before = os.getloadavg()
    sizes = [200_000] if quick else [200_000, 20_000_000]
    per_row = 2_000 if quick else 20_000
    plan = [(rows, mode) for rows in sizes for mode in ["map", "imap", "imap-unordered", "starmap-async"]]
    plan += [(per_row, "apply"), (per_row, "apply-async")]
    samples = {(rows, mode, t): [] for rows, mode in plan for t in ("mpi", "local")}
    checks = []
    folder = raw / "mpi"
    folder.mkdir(parents=True, exist_ok=True)
    report = folder / "report.json"
    log(f"bench: MPI on one host ({RANKS} ranks) and the local transport (2 workers), {runs} rounds of "
        f"{len(plan)} configurations each ...")
    try:
        for _ in range(runs):
            for rows, mode in plan:
                args = ["--rows", rows, "--mode", mode, "-q", "--report-file", report]
                samples[(rows, mode, "mpi")].append(timed(mpirun_one_host(binary, RANKS, args), report, env))
                samples[(rows, mode, "local")].append(timed([binary, "count", "--workers", RANKS - 1] + args, report))
        idle = idle_rank_cpu(binary, env, log, 60 if quick else 150)
    except RuntimeError as error:
        return md + [f"Skipped: {error}."], []
    load_after = os.getloadavg()
    (folder / "samples.json").write_text(json.dumps({f"{r}-{m}-{t}": s for (r, m, t), s in samples.items()},
                                                    indent=2))
    md.append(f"One host, `mpirun --oversubscribe --mca mpi_yield_when_idle 1 -np {RANKS}` (2 worker ranks, "
              f"shared memory) against `--workers 2` on Unix sockets, interleaved, medians of {runs} runs; load "
              f"average {load_before[0]:.2f} before, {load_after[0]:.2f} after. *Job* is the pool's own time "
              "(distribution + compute + gathering); *start* is the pool's start (under MPI: MPI_Init and the "
              "ranks' hellos); *launch* is mpirun's start and end (wall time less the program's own).")
    md += ["", "| rows | mode | MPI job | local job | MPI / local | MPI start | local start | launch (mpirun) |",
           "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for rows, mode in plan:
        mpi, local = samples[(rows, mode, "mpi")], samples[(rows, mode, "local")]
        ratio = med(mpi, "job_s") / med(local, "job_s")
        md.append(f"| {fmt_rows(rows)} | {mode} | {fmt_s(med(mpi, 'job_s'))} | {fmt_s(med(local, 'job_s'))} | "
                  f"{ratio:.2f}x | {fmt_s(med(mpi, 'startup_s'))} | {fmt_s(med(local, 'startup_s'))} | "
                  f"{fmt_s(med(mpi, 'launch_s'))} |")
        sums = {s["checksum"] for s in mpi + local}
        checks.append((f"MPI at {fmt_rows(rows)} rows, {mode}: the same counts as the local transport "
                       f"({', '.join(sorted(sums))})", len(sums) == 1))
    for rows in sizes:
        if rows >= 20_000_000:
            worst = max(med(samples[(rows, m, 'mpi')], "job_s") / med(samples[(rows, m, 'local')], "job_s")
                        for r, m in plan if r == rows)
            md += ["", f"Target: MPI within 1.5x of the local transport at {fmt_rows(rows)} rows: worst mode "
                   f"{worst:.2f}x, {'✅ pass' if worst <= 1.5 else '❌ fail'}."]
    if idle:
        md += ["", "CPU of each rank during a pool run of 4 ranks in which rank 3 gets no chunk (from /proc, "
               "after MPI_Init): " + ", ".join(f"rank {r} {share * 100:.1f}% of a core over {span:.1f} s"
                                                for r, (share, span) in sorted(idle.items())) + "."]
    md.append("")
    if quick:
        md.append("Three namespace hosts over TCP: skipped (--quick).")
    else:
        md += netns_section(binary, runs, log, fmt_s, fmt_rows, folder, checks)
    return md, checks


def netns_section(binary, runs, log, fmt_s, fmt_rows, folder, checks):
    why = netns_unavailable()
    if why:
        return [f"Three namespace hosts over TCP: skipped ({why}; they need root, `ip netns` and `unshare`)."]
    log("bench: MPI across three network-namespace hosts (TCP) ...")
    rows_list = [200_000, 20_000_000]
    got = {rows: [] for rows in rows_list}
    # A bench ended by SIGTERM still removes its namespaces (the `with` below).
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with tempfile.TemporaryDirectory() as tmp, NamespaceHosts(3, tmp) as hosts:
            report = Path(tmp) / "report.json"
            for _ in range(runs):
                for rows in rows_list:
                    args = ["--rows", rows, "--mode", "map", "-q", "--report-file", report]
                    got[rows].append(timed(hosts.mpirun(binary, args), report))
    except (RuntimeError, subprocess.CalledProcessError) as error:
        return [f"Three namespace hosts over TCP: failed ({error})."]
    finally:
        signal.signal(signal.SIGTERM, previous)
    (folder / "netns-samples.json").write_text(json.dumps(got, indent=2))
    lines = [f"Three namespace hosts (one rank each, so 2 workers; TCP over veth links), `map`, medians of {runs} "
             "runs:", "", "| rows | job | start | launch (mpirun) |", "|---:|---:|---:|---:|"]
    for rows in rows_list:
        lines.append(f"| {fmt_rows(rows)} | {fmt_s(med(got[rows], 'job_s'))} | {fmt_s(med(got[rows], 'startup_s'))} "
                     f"| {fmt_s(med(got[rows], 'launch_s'))} |")
        sums = {s["checksum"] for s in got[rows]}
        checks.append((f"MPI across namespace hosts at {fmt_rows(rows)} rows: one checksum ({', '.join(sums)})",
                       len(sums) == 1))
    return lines
