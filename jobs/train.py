"""Train the UNets only, with Ray Train (DDP across workers), on a dataset's train split.

    python jobs/train.py --preset demo --output runs --run-id demo-train

Writes OUTPUT/RUN_ID/train/<training>/ (checkpoints, one per epoch, best by validation IoU
kept) and OUTPUT/RUN_ID/training.json, which jobs/evaluate.py --checkpoints-from reads.
With checkpoints.store (--checkpoints.store), each trained model's best checkpoint is also
recorded in the checkpoint store as version RUN_ID (segray/models/store.py); a failure to
record exits 1.
Exits 1 when a model failed to train, 2 on bad settings or an unusable dataset or output.
Ctrl-C or SIGTERM stops it (exit 130 or 143); --resume then reuses the trainings that
finished and resumes the others from their latest checkpoints. A run that ended has its
status in run.json (complete, or partial when a model failed or was not recorded) and
nothing to resume. With tracking.uri, the run is logged in MLflow and each trained
model registered as a version of segray-MODEL (see jobs/benchmark.py).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from segray.cli import job_config, mlflow_tracking, set_up
from segray.errors import DatasetError, RunError
from segray.heartbeat import driver_heartbeat
from segray.pipeline import record_trained
from segray.run import enter_stage, open_run, run_uri, stop_on_signals, update_record
from segray.tracking import log_finished
from segray.trainings import train_models


def main(argv: list[str] | None = None) -> int:
    config = job_config("train", argv)
    set_up(config)
    store = config.checkpoints.store
    try:
        with stop_on_signals(config):
            manifest = open_run(config, job="train")
            enter_stage(run_uri(config), "train")
            with driver_heartbeat(run_uri(config)):
                results = train_models(config, manifest, run_uri(config))
                recorded = record_trained(store, config, manifest, results) if store else True
            failed = any("error" in r for r in results.values()) or not recorded
            update_record(run_uri(config), status="partial" if failed else "complete",
                          finished_at=datetime.now(UTC).isoformat())
    except (DatasetError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for model, result in results.items():
        if "error" in result:
            print(f"{model}: FAILED: {result['error']}")
        else:
            print(f"{model}: best val IoU {result['best_val_iou']:.4f} at epoch {result['best_epoch']}, "
                  f"{result['train_time_s']:.0f} s; checkpoint {result['checkpoint']}")
    log_finished(run_uri(config), *mlflow_tracking(config))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
