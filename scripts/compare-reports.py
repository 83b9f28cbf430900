#!/usr/bin/env python3
"""Compares `corepool count --report json` reports, one line each (schema: docs/report-schema.md).

    for mode in map imap imap-unordered; do
        corepool count --mode $mode --repeat 5 --report-file report-$mode.json --quiet > /dev/null
    done
    scripts/compare-reports.py report-*.json

Exits 1 if reports of the same matrix and bounds disagree on the checksum.
"""

import json
import statistics
import sys


def main(paths):
    if not paths:
        sys.exit(__doc__)
    width = max(len("report"), *(len(path) for path in paths))
    print(f"{'report':<{width}} {'mode':<15} {'workers':>7} {'chunk':>8} {'repeat':>6} {'median s':>9} "
          f"{'distrib %':>9} {'rows min/max':>12}  checksum")
    checksums = {}
    for path in paths:
        with open(path) as file:
            report = json.load(file)
        if report.get("version") != 1:
            sys.exit(f"{path}: report version {report.get('version')}, this script reads version 1")
        p, t = report["parameters"], report["timings"]
        median = statistics.median(r["wall_s"] for r in report["repetitions"])
        jobs = t["distribution_s"] + t["compute_s"] + t["gathering_s"]
        distribution = 100 * t["distribution_s"] / jobs if jobs else 0.0
        balance = report["balance"]["rows_ratio"] if report["balance"] else 1.0
        checksum = report["result"]["checksum"]
        print(f"{path:<{width}} {p['mode']:<15} {p['workers']:>7} {p['chunk_size'] or '-':>8} {p['repeat']:>6} "
              f"{median:>9.4f} {distribution:>9.1f} {balance:>12.2f}  {checksum}")
        key = json.dumps([p["rows"], p["cols"], p["min"], p["max"], p["input"]], sort_keys=True)
        checksums.setdefault(key, set()).add(checksum)
    if any(len(found) > 1 for found in checksums.values()):
        sys.exit("reports of the same matrix disagree on the checksum")


if __name__ == "__main__":
    main(sys.argv[1:])
