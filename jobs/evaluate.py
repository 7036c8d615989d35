"""Evaluate models on Ray Data (one actor pool per model) and write the Parquet rows, summary and report.

    python jobs/evaluate.py --preset demo --checkpoints-from runs/demo-train --output runs --run-id demo-eval
    python jobs/evaluate.py --dataset DIR --checkpoints.dirs unet=CKPT_DIR --models unet,langsam
    python jobs/evaluate.py --dataset DIR --checkpoints.store STORE_URI --checkpoints.versions unet=best
    python jobs/evaluate.py --dataset DIR --tracking.uri http://HOST:5000 \\
        --checkpoints.versions unet=models:/segray-unet@champion

Trained models come from, in this order of precedence: a checkpoint folder (checkpoints.dirs,
--checkpoints.dirs MODEL=DIR), an MLflow registered version (checkpoints.versions MODEL:
models:/segray-unet/3 or models:/segray-unet@champion, with tracking.uri), the checkpoint
store (checkpoints.store, with checkpoints.versions MODEL: latest, best or a version name;
latest by default), or a training run's training.json (checkpoints.run, --checkpoints-from).
Every row names its weights in `model_version`. Writes OUTPUT/RUN_ID/settings.yaml,
predictions/, summary.json and the report (report/) into a new run. Exits 1 when rows are
missing, any row has status error (the run is "partial") or no model could run, 2 on bad
settings, an unusable dataset or output, or a version that names no version. Ctrl-C or
SIGTERM stops it (exit 130 or 143); output.resume (--resume) then evaluates only the
(image, model) pairs that have no rows.
"""

from __future__ import annotations

import sys
import time

from segray.cli import job_config, mlflow_tracking, set_up, trained_models
from segray.errors import CheckpointStoreError, DatasetError, RunError, SettingsError
from segray.heartbeat import driver_heartbeat
from segray.models.selection import models_to_evaluate
from segray.pipeline import Run, evaluate_models, print_summary, write_report_logged
from segray.run import enter_stage, open_run, run_uri, stop_on_signals
from segray.tracking import log_finished


def main(argv: list[str] | None = None) -> int:
    config = job_config("evaluate", argv)
    set_up(config)
    started = time.perf_counter()
    try:
        with stop_on_signals(config):
            trained = trained_models(config, default_selector="latest")
            specs, unavailable = models_to_evaluate(config, trained)
            manifest = open_run(config, job="evaluate")
            with driver_heartbeat(run_uri(config)):
                summary = evaluate_models(Run(config, manifest, started), specs, unavailable, trained.training)
                print_summary(summary)
                enter_stage(run_uri(config), "report")
                write_report_logged(run_uri(config))
    except (SettingsError, DatasetError, RunError, CheckpointStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log_finished(run_uri(config), *mlflow_tracking(config))
    return 0 if summary["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
