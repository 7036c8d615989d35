"""The whole comparison on Ray: data -> train (Ray Train) -> evaluate (Ray Data) -> summary.

    python jobs/benchmark.py --preset demo --output runs --run-id demo     # offline, CPU, minutes
    ray job submit --working-dir . -- python jobs/benchmark.py             # the article's recipe on a cluster
    python jobs/benchmark.py --config my-settings.yaml --langsam.prompt human.

Settings: --preset, then --config files, then the options (--help lists them; every one
is a key of docs/CONFIGURATION.md). Writes OUTPUT/RUN_ID/{settings.yaml, train/,
training.json, predictions/*.parquet, summary.json, report/} and prints mean IoU per model
on the validation split. With checkpoints.store, each trained model's best checkpoint is
recorded there as version RUN_ID, the version its rows carry. Exits 1 when a model failed
to train, rows are missing, any row has status error (the run is "partial") or recording in
the checkpoint store failed, 2 on bad settings or an unusable dataset or output. A model
that cannot run for lack of weights (LangSAM offline) is reported as unavailable and does
not fail the run. Ctrl-C or SIGTERM stops the run (exit 130 or 143; run.json says
"interrupted"); output.resume then finishes it. With tracking.uri, the finished run is
logged in MLflow and each trained model registered there; a server that cannot take it is
a warning, not a failure: jobs/log_mlflow.py logs the run later.
"""

from __future__ import annotations

import sys

from segray.cli import job_config, mlflow_tracking, set_up
from segray.errors import DatasetError, RunError
from segray.pipeline import print_summary, run_benchmark
from segray.run import run_uri, stop_on_signals
from segray.tracking import log_finished


def main(argv: list[str] | None = None) -> int:
    config = job_config("benchmark", argv)
    set_up(config)
    try:
        with stop_on_signals(config):
            summary = run_benchmark(config)
    except (DatasetError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_summary(summary)
    print(f"run written to {run_uri(config)}")
    log_finished(run_uri(config), *mlflow_tracking(config))
    return 0 if summary["status"] == "complete" and summary.get("recorded", True) else 1


if __name__ == "__main__":
    sys.exit(main())
