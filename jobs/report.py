"""Regenerate a run's comparison report from its directory alone (no Ray, no models).

    python jobs/report.py runs/demo
    python jobs/report.py s3://bucket/runs/demo --report.split val --report.gpu-hour-usd 2.0

Writes RUN/report/: report.md, report.html (self-contained) and the figures as PNG.
Exits 1 when the run has no summary.json (it did not finish), 2 on bad settings.
"""

from __future__ import annotations

import sys

from segray.cli import job_config
from segray.errors import IncompleteRun
from segray.report import write_report


def main(argv: list[str] | None = None) -> int:
    report = job_config("report", argv).report
    try:
        written = write_report(report.run, split=report.split, gpu_hour_usd=report.gpu_hour_usd, worst_n=report.worst,
                               cpu_hour_usd=report.cpu_hour_usd)
    except IncompleteRun as error:
        print(f"error: {error}; rerun the benchmark or pick a finished run", file=sys.stderr)
        return 1
    print(f"report written: {written['report.html']}")
    print(f"                {written['report.md']} and {len(written) - 2} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
