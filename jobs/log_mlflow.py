"""Log a finished run in MLflow afterwards, from its folder alone (e.g. the tracking server was down).

    python jobs/log_mlflow.py runs/demo --tracking.uri http://127.0.0.1:5000
    python jobs/log_mlflow.py s3://bucket/results/run=20261204-0300 --tracking.experiment nightly

RUN is a run folder (OUTPUT/RUN_ID of benchmark, evaluate or train) or a re-evaluation's
committed partition (RESULTS/run=RUN_ID). It is logged as the job that wrote it would have:
its settings, metrics and report, one child run per trained model with its epoch curve, and
each trained model's best checkpoint registered as a version of segray-MODEL (segray/tracking.py).
A run logged already is not logged again. Exits 1 when the server cannot take it, 2 when
RUN holds no finished run or no tracking server is given.
"""

from __future__ import annotations

import sys

from segray.cli import job_config, mlflow_tracking
from segray.tracking import log_finished


def main(argv: list[str] | None = None) -> int:
    config = job_config("log_mlflow", argv)
    tracking_uri, experiment = mlflow_tracking(config)
    if not tracking_uri:
        print("error: no tracking server: set tracking.uri (--tracking.uri) or MLFLOW_TRACKING_URI",
              file=sys.stderr)
        return 2
    try:
        logged = log_finished(config.tracking.run, tracking_uri, experiment)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if logged else 1


if __name__ == "__main__":
    sys.exit(main())
