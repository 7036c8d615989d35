"""Regenerate a run's comparison report from its directory alone (no Ray, no models).

    python jobs/report.py runs/demo
    python jobs/report.py s3://bucket/runs/demo --split val --gpu-hour-usd 2.0

Writes RUN_URI/report/: report.md, report.html (self-contained) and the figures as PNG.
Exits 1 when the run has no summary.json (it did not finish).
"""

from __future__ import annotations

import argparse
import sys

from segray.errors import IncompleteRun
from segray.report import write_report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_uri", metavar="RUN_URI", help="a run directory: OUTPUT/RUN_ID (local path or s3://)")
    p.add_argument("--split", help="the split to compare the models on: train, val or all (default: the one the "
                   "run scored, in its summary.json)")
    p.add_argument("--gpu-hour-usd", type=float, default=2.0, help="$ per GPU-hour for the cost table (default: 2.0)")
    p.add_argument("--cpu-hour-usd", type=float, help="$ per hour of one CPU evaluation actor, to price models that "
                   "ran on CPUs (default: not priced)")
    p.add_argument("--worst", type=int, default=6, metavar="N", help="images per model in the worst-N gallery")
    args = p.parse_args(argv)
    try:
        written = write_report(args.run_uri, split=args.split, gpu_hour_usd=args.gpu_hour_usd, worst_n=args.worst,
                               cpu_hour_usd=args.cpu_hour_usd)
    except IncompleteRun as error:
        print(f"error: {error}; rerun the benchmark or pick a finished run", file=sys.stderr)
        return 1
    print(f"report written: {written['report.html']}")
    print(f"                {written['report.md']} and {len(written) - 2} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
