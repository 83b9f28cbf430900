#!/usr/bin/env python3
"""The tutorial's Python methods and numpy's one-liner on the matrix `corepool gen` wrote.

    corepool gen --rows 200000 --output m.npy
    corepool count --rows 200000 --mode serial --output counts.txt --report-file r.json -q
    scripts/python_baseline.py --npy m.npy --counts counts.txt --checksum fnv1a64:... --runs 5

Counts, for each row, the values in [4, 8], as the tutorial "Parallel processing in Python"
does: a serial loop over `arr.tolist()`, then `multiprocessing.Pool` (`apply`, `map`,
`starmap`, `imap`, `imap_unordered`, `apply_async` with a callback collecting (i, count) and
then sorting, `map_async`, `starmap_async`), `concurrent.futures.ProcessPoolExecutor.map`, and
numpy's `((a >= 4) & (a <= 8)).sum(axis=1)`. `imap`, `imap_unordered` and the executor get
Pool.map's default chunk size (about 4 chunks a worker, as corepool uses by default) instead of
their own default of 1, which would make them 10-25x slower. Each pool timing includes starting the pool and
stopping it (`close()` and `join()`), like the tutorial; making the matrix and `tolist()` are
not timed, and numpy's figure is the one-liner alone, on the array already loaded.

`Pool.apply` (one blocking round trip a row) is timed on the first --apply-slice rows and
extrapolated to the whole matrix (or --per-row-rows rows): pool start + loop time x rows /
slice + pool stop; the report says so. `apply_async` runs on the first --per-row-rows rows
(default: all).

Every method's counts are compared with numpy's; numpy's with corepool's counts file
(`--counts`, one count a line) and report checksum (`--checksum`, FNV-1a 64 over the counts as
u32 little-endian; computed here in pure Python up to --checksum-max-rows rows). Prints one
JSON document; exits 1 if any comparison fails.
"""

import argparse
import concurrent.futures
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

import numpy as np

MINIMUM, MAXIMUM = 4, 8
ALL_METHODS = ["serial", "apply", "map", "starmap", "imap", "imap_unordered", "apply_async",
               "map_async", "starmap_async", "executor_map", "numpy"]


# The tutorial's functions (top level, so that the pool can pickle them).
def howmany_within_range(row, minimum, maximum):
    """Returns how many numbers lie within `maximum` and `minimum` in a given `row`"""
    count = 0
    for n in row:
        if minimum <= n <= maximum:
            count = count + 1
    return count


def howmany_within_range_rowonly(row, minimum=MINIMUM, maximum=MAXIMUM):
    count = 0
    for n in row:
        if minimum <= n <= maximum:
            count = count + 1
    return count


def howmany_within_range2(i, row, minimum, maximum):
    """Returns how many numbers lie within `maximum` and `minimum` in a given `row`, with its index"""
    count = 0
    for n in row:
        if minimum <= n <= maximum:
            count = count + 1
    return (i, count)


def howmany_within_range_indexed(item):
    """For imap_unordered: (i, row) in, (i, count) out, so that the rows can be put back in order."""
    i, row = item
    return (i, howmany_within_range_rowonly(row))


def python_chunksize(rows, workers):
    """Pool.map's default chunk size: about 4 chunks a worker."""
    chunksize, extra = divmod(rows, workers * 4)
    return chunksize + 1 if extra else chunksize


def run_serial(data, workers):
    results = []
    for row in data:
        results.append(howmany_within_range(row, minimum=MINIMUM, maximum=MAXIMUM))
    return results


def run_map(data, workers):
    pool = mp.Pool(workers)
    results = pool.map(howmany_within_range_rowonly, [row for row in data])
    pool.close()
    pool.join()
    return results


def run_starmap(data, workers):
    pool = mp.Pool(workers)
    results = pool.starmap(howmany_within_range, [(row, MINIMUM, MAXIMUM) for row in data])
    pool.close()
    pool.join()
    return results


def run_imap(data, workers):
    pool = mp.Pool(workers)
    results = list(pool.imap(howmany_within_range_rowonly, data, chunksize=python_chunksize(len(data), workers)))
    pool.close()
    pool.join()
    return results


def run_imap_unordered(data, workers):
    pool = mp.Pool(workers)
    results = [0] * len(data)
    for i, count in pool.imap_unordered(howmany_within_range_indexed, enumerate(data),
                                         chunksize=python_chunksize(len(data), workers)):
        results[i] = count
    pool.close()
    pool.join()
    return results


def run_apply_async(data, workers):
    pool = mp.Pool(workers)
    results = []

    def collect_result(result):
        results.append(result)

    for i, row in enumerate(data):
        pool.apply_async(howmany_within_range2, args=(i, row, MINIMUM, MAXIMUM), callback=collect_result)
    pool.close()
    pool.join()
    results.sort(key=lambda x: x[0])
    return [r for i, r in results]


def run_map_async(data, workers):
    pool = mp.Pool(workers)
    results = pool.map_async(howmany_within_range_rowonly, [row for row in data]).get()
    pool.close()
    pool.join()
    return results


def run_starmap_async(data, workers):
    pool = mp.Pool(workers)
    results = pool.starmap_async(howmany_within_range2, [(i, row, MINIMUM, MAXIMUM) for i, row in enumerate(data)]).get()
    pool.close()
    pool.join()
    return [r for i, r in results]


def run_executor_map(data, workers):
    with concurrent.futures.ProcessPoolExecutor(workers) as executor:
        return list(executor.map(howmany_within_range_rowonly, data,
                                 chunksize=python_chunksize(len(data), workers)))


RUNNERS = {
    "serial": (run_serial, "for row in data: results.append(howmany_within_range(row, 4, 8))"),
    "map": (run_map, "Pool(n).map(howmany_within_range_rowonly, rows); close(); join()"),
    "starmap": (run_starmap, "Pool(n).starmap(howmany_within_range, [(row, 4, 8) ...])"),
    "imap": (run_imap, "list(Pool(n).imap(howmany_within_range_rowonly, rows, chunksize=Pool.map's))"),
    "imap_unordered": (run_imap_unordered,
                       "Pool(n).imap_unordered over (i, row), chunksize=Pool.map's, put back by i"),
    "apply_async": (run_apply_async,
                    "Pool(n).apply_async per row with a callback collecting (i, count), then sort"),
    "map_async": (run_map_async, "Pool(n).map_async(howmany_within_range_rowonly, rows).get()"),
    "starmap_async": (run_starmap_async, "Pool(n).starmap_async(howmany_within_range2, [(i, row, 4, 8) ...]).get()"),
    "executor_map": (run_executor_map,
                     "ProcessPoolExecutor(n).map(howmany_within_range_rowonly, rows, chunksize=Pool.map's)"),
}


def summary(samples):
    return {"runs": len(samples), "median_s": statistics.median(samples), "min_s": min(samples),
            "max_s": max(samples), "samples_s": samples}


def time_apply(data, workers, rows, runs):
    """Pool.apply on `data` (a slice), extrapolated to `rows`."""
    samples, measured, counts = [], [], None
    for _ in range(runs):
        start = time.perf_counter()
        pool = mp.Pool(workers)
        started = time.perf_counter()
        counts = [pool.apply(howmany_within_range, args=(row, MINIMUM, MAXIMUM)) for row in data]
        looped = time.perf_counter()
        pool.close()
        pool.join()
        stopped = time.perf_counter()
        loop = looped - started
        measured.append(stopped - start)
        samples.append((started - start) + loop * rows / len(data) + (stopped - looped))
    return samples, measured, counts


def fnv1a64(counts):
    h = 0xCBF29CE484222325
    for byte in np.asarray(counts, dtype="<u4").tobytes():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"fnv1a64:{h:016x}"


def read_counts(path):
    with open(path, "rb") as file:
        text = file.read()
    return np.array(text.split(), dtype=np.int64)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--npy", required=True, help="the matrix, from `corepool gen --output FILE.npy` (int64)")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="pool processes (default: all CPUs)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each method (median, min, max)")
    parser.add_argument("--methods", default="all",
                        help=f"comma-separated, from {', '.join(ALL_METHODS)}; or all (default)")
    parser.add_argument("--apply-slice", type=int, default=2000, help="rows Pool.apply is timed on")
    parser.add_argument("--per-row-rows", type=int, default=0,
                        help="rows apply_async runs on and Pool.apply is extrapolated to (default 0: all)")
    parser.add_argument("--counts", help="corepool's counts for the same matrix (`count --output`)")
    parser.add_argument("--checksum", help="corepool's report checksum for the same matrix")
    parser.add_argument("--checksum-max-rows", type=int, default=2_000_000,
                        help="compute the checksum in pure Python up to this many rows")
    args = parser.parse_args()
    methods = ALL_METHODS if args.methods == "all" else args.methods.split(",")
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        parser.error(f"unknown methods: {', '.join(unknown)}")

    array = np.load(args.npy)
    rows, cols = array.shape
    report = {
        "python": platform.python_version(), "numpy": np.__version__,
        "start_method": mp.get_start_method(), "npy": args.npy, "rows": rows, "cols": cols,
        "workers": args.workers, "min": MINIMUM, "max": MAXIMUM, "methods": {}, "checks": [],
    }
    ok = True

    # numpy first: its counts are the reference every method is compared with.
    reference = ((array >= MINIMUM) & (array <= MAXIMUM)).sum(axis=1)
    if "numpy" in methods:
        samples = []
        for _ in range(args.runs):
            start = time.perf_counter()
            counts = ((array >= MINIMUM) & (array <= MAXIMUM)).sum(axis=1)
            samples.append(time.perf_counter() - start)
        report["methods"]["numpy"] = {"rows": rows, "timing": summary(samples),
                                      "how": "((a >= 4) & (a <= 8)).sum(axis=1) on the loaded int64 array",
                                      "agrees": bool(np.array_equal(counts, reference))}
    if args.counts:
        theirs = read_counts(args.counts)
        same = theirs.shape == reference.shape and bool(np.array_equal(theirs, reference))
        report["checks"].append({"what": f"numpy's counts == corepool's counts file {args.counts}, row by row",
                                 "ok": same})
        ok &= same
    if args.checksum:
        if rows <= args.checksum_max_rows:
            mine = fnv1a64(reference)
            same = mine == args.checksum
            report["checks"].append({"what": "FNV-1a 64 of numpy's counts == corepool's report checksum",
                                     "numpy": mine, "corepool": args.checksum, "ok": same})
            ok &= same
        else:
            report["checks"].append({"what": f"checksum not computed in pure Python over {rows} rows "
                                             "(the counts file is compared instead)", "ok": None})

    pool_methods = [m for m in methods if m != "numpy"]
    data = array.tolist() if pool_methods else []
    for method in pool_methods:
        if method == "apply":
            part = data[:args.apply_slice]
            target = min(args.per_row_rows or rows, rows)
            samples, measured, counts = time_apply(part, args.workers, target, args.runs)
            agrees = counts == reference[:len(part)].tolist()
            report["methods"]["apply"] = {
                "rows": target, "timing": summary(samples), "measured_rows": len(part),
                "measured": summary(measured), "extrapolated": True,
                "how": f"[pool.apply(howmany_within_range, (row, 4, 8)) for row in data]: timed on the first "
                       f"{len(part)} rows, extrapolated to {target} (pool start + loop x {target}/{len(part)} + stop)",
                "agrees": agrees}
            ok &= agrees
            print(f"python_baseline: apply (on {len(part)} rows, extrapolated) {statistics.median(samples):.3f} s",
                  file=sys.stderr)
            continue
        part = data[:args.per_row_rows] if method == "apply_async" and args.per_row_rows else data
        run, how = RUNNERS[method]
        samples, counts = [], None
        for _ in range(args.runs):
            start = time.perf_counter()
            counts = run(part, args.workers)
            samples.append(time.perf_counter() - start)
        agrees = list(counts) == reference[:len(part)].tolist()
        ok &= agrees
        report["methods"][method] = {"rows": len(part), "timing": summary(samples), "how": how, "agrees": agrees}
        print(f"python_baseline: {method} on {len(part)} rows {statistics.median(samples):.3f} s", file=sys.stderr)

    report["ok"] = bool(ok)
    print(json.dumps(report, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
