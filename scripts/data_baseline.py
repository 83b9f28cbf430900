#!/usr/bin/env python3
"""The Python baselines of docs/data-at-scale.md, side by side with corepool on one file.

For a CSV file: pandas.read_csv + numpy's count, pyarrow's multi-threaded CSV reader +
numpy's count, and `corepool count`. For a .npy file: numpy.load + numpy's count, and
`corepool count`. Each is timed end to end (reading included) as the best of --runs runs,
and every method's counts are checked against the first one's, value by value.

    pip install numpy pandas pyarrow
    corepool gen --rows 20000000 --cols 5 --output /tmp/m.csv
    python3 scripts/data_baseline.py /tmp/m.csv            # corepool: cargo's newest release build

The count is the tutorial's: for each row, how many values lie in [--min, --max]; a NaN
counts as out of range (numpy's comparisons are False for NaN, and so are corepool's).
"""

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def numpy_count(matrix, low, high):
    """numpy's idiom: two comparisons, an and, and a sum along each row."""
    return ((matrix >= low) & (matrix <= high)).sum(axis=1, dtype=np.uint32)


def with_pandas(path, low, high, header):
    import pandas as pd

    frame = pd.read_csv(path, header=0 if header else None)
    return numpy_count(frame.to_numpy(), low, high)


def with_pyarrow(path, low, high, header):
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(use_threads=True, autogenerate_column_names=not header)
    table = pacsv.read_csv(path, read_options=read)
    matrix = np.column_stack([column.to_numpy() for column in table.columns])
    return numpy_count(matrix, low, high)


def with_numpy_load(path, low, high, header):
    return numpy_count(np.load(path), low, high)


def newest_release_build():
    """cargo's newest release build of corepool (target/release, or target/<target>/release with --target)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found = glob.glob(os.path.join(repo, "target", "*", "release", "corepool"))
    found += glob.glob(os.path.join(repo, "target", "release", "corepool"))
    if not found:
        sys.exit("data_baseline: no release build of corepool: run `cargo build --release` first, or give --corepool")
    return max(found, key=os.path.getmtime)


def with_corepool(binary, workers):
    def run(path, low, high, header):
        with tempfile.TemporaryDirectory() as folder:
            out = os.path.join(folder, "counts.npy")
            command = [binary, "count", "--input", path, "--min", str(low), "--max", str(high),
                       "--output", out, "--quiet"]
            if workers:
                command += ["--workers", str(workers)]
            if header:
                command.append("--header")
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            return np.load(out)

    return run


def with_corepool_report(binary, workers):
    """corepool writing no file: the counts summed up in its JSON report (rows, sum)."""
    import json

    def run(path, low, high, header):
        command = [binary, "count", "--input", path, "--min", str(low), "--max", str(high),
                   "--report", "json", "--quiet"]
        if workers:
            command += ["--workers", str(workers)]
        if header:
            command.append("--header")
        done = subprocess.run(command, check=True, stdout=subprocess.PIPE)
        return json.loads(done.stdout)["result"]

    return run


def best_of(runs, method, *args):
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = method(*args)
        best = min(best, time.perf_counter() - started)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="a .csv or .npy file")
    parser.add_argument("--min", type=float, default=4.0)
    parser.add_argument("--max", type=float, default=8.0)
    parser.add_argument("--header", action="store_true", help="the CSV file's first line is a header")
    parser.add_argument("--runs", type=int, default=3, help="runs of each method; the best counts")
    parser.add_argument("--corepool", default=None,
                        help="the corepool binary (default: the newest target/release/corepool or target/*/release/corepool)")
    parser.add_argument("--workers", type=int, default=0, help="corepool's workers (default: one per CPU)")
    parser.add_argument("--skip", action="append", default=[], help="a method to leave out (pandas, pyarrow, ...)")
    options = parser.parse_args()
    if options.corepool is None:
        options.corepool = newest_release_build()

    low = int(options.min) if options.min.is_integer() else options.min
    high = int(options.max) if options.max.is_integer() else options.max
    if options.file.endswith(".npy"):
        methods = [("numpy.load + numpy count", with_numpy_load)]
    else:
        methods = [("pandas.read_csv + numpy count", with_pandas),
                   ("pyarrow.csv (threads) + numpy count", with_pyarrow)]
    methods.append(("corepool count", with_corepool(options.corepool, options.workers)))
    methods.append(("corepool count, no output file", with_corepool_report(options.corepool, options.workers)))
    methods = [(name, method) for name, method in methods if name.split()[0].split(".")[0] not in options.skip]

    size = os.path.getsize(options.file)
    print(f"{options.file}: {size / 1e6:.1f} MB, counting values in [{low}, {high}], best of {options.runs} runs, "
          f"{os.cpu_count()} CPUs")
    reference = None
    times = {}
    for name, method in methods:
        seconds, counts = best_of(options.runs, method, options.file, low, high, options.header)
        if isinstance(counts, dict):
            # A report: its rows and sum must be the reference's.
            if (counts["rows"], counts["values_in_range"]) != (len(reference), int(reference.sum())):
                print(f"{name}: rows or sum DIFFER from {methods[0][0]}'s", file=sys.stderr)
                sys.exit(1)
            times[name] = seconds
            print(f"  {name:<38} {seconds:8.3f} s   ({counts['rows']} rows, {counts['values_in_range']} values in range)")
            continue
        counts = np.asarray(counts, dtype=np.int64)
        if reference is None:
            reference = counts
        elif not np.array_equal(counts, reference):
            print(f"{name}: counts DIFFER from {methods[0][0]}'s", file=sys.stderr)
            sys.exit(1)
        times[name] = seconds
        print(f"  {name:<38} {seconds:8.3f} s   ({len(counts)} rows, {int(counts.sum())} values in range)")
    for ours in [name for name in times if name.startswith("corepool")]:
        for name, seconds in times.items():
            if not name.startswith("corepool"):
                print(f"  {ours} is {seconds / times[ours]:.1f}x faster than {name}")
    print("  every method's counts agree" if len(times) > 1 else "")


if __name__ == "__main__":
    main()
