"""Evaluate models on Ray Data (one actor pool per model) and write the Parquet rows, summary and report.

    python jobs/evaluate.py --preset demo --checkpoints-from runs/demo-train --output runs --run-id demo-eval
    python jobs/evaluate.py --dataset DIR --checkpoint unet=CKPT_DIR --models unet,langsam
    python jobs/evaluate.py --dataset DIR --checkpoint-store STORE_URI --version unet=best
    python jobs/evaluate.py --dataset DIR --mlflow-tracking-uri http://HOST:5000 --version unet=models:/segray-unet@champion

Trained models come from a checkpoint directory (--checkpoint MODEL=DIR), the checkpoint store
(--checkpoint-store URI, with --version MODEL=latest|best|VERSION, latest by default), an MLflow
registered version (--version MODEL=models:/segray-unet/3 or models:/segray-unet@champion, with
--mlflow-tracking-uri), or a training run's training.json (--checkpoints-from), in that order of
precedence (a models:/ version before the store). Every row
names its weights in `model_version`. Writes OUTPUT/RUN_ID/predictions/, OUTPUT/RUN_ID/summary.json
and the report (OUTPUT/RUN_ID/report/) into a new run. Exits 1 when rows are missing, any row
has status error (the run is "partial") or no model could run, 2 on bad arguments, an unusable
dataset/output or a --version that names no version. Ctrl-C or SIGTERM stops it (exit 130
or 143); --resume then evaluates only the (image, model) pairs that have no rows.
"""

from __future__ import annotations

import sys
import time

from segray.cli import add_checkpoint_options, config_from_args, mlflow_tracking, parser, set_up, trained_models_from_args
from segray.errors import CheckpointStoreError, DatasetError, RunError
from segray.models.selection import models_to_evaluate
from segray.pipeline import Run, evaluate_models, print_summary, write_report_logged
from segray.run import enter_stage, open_run, run_uri, stop_on_signals
from segray.tracking import log_finished


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    add_checkpoint_options(p)
    args = p.parse_args(argv)
    set_up(args)
    config = config_from_args(args)
    tracking = mlflow_tracking(args)
    started = time.perf_counter()
    trained = trained_models_from_args(p, args, default_selector="latest")
    try:
        with stop_on_signals(config):
            specs, unavailable = models_to_evaluate(config, trained)
            manifest = open_run(config, args.ray_address)
            summary = evaluate_models(Run(config, manifest, started), specs, unavailable, trained.training)
            print_summary(summary)
            enter_stage(run_uri(config), "report")
            write_report_logged(run_uri(config))
    except (DatasetError, RunError, CheckpointStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log_finished(run_uri(config), *tracking)
    return 0 if summary["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
