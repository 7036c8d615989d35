"""Scheduled, incremental re-evaluation: evaluate only the (image, model version) pairs the results table lacks.

    python jobs/reevaluate.py --dataset DIR_OR_S3 --results RESULTS_URI --checkpoints.store STORE_URI
    python jobs/reevaluate.py --preset demo --dataset data/mads --results runs/table --checkpoints.store runs/store \\
        --checkpoints.versions unet=latest --models unet,langsam --langsam.detector DIR --langsam.sam DIR

Model versions: every checkpoint-store version of each trained model in models (or those
checkpoints.versions picks: MODEL=latest|best|all|VERSION), and LangSAM as one version named by
its weights, prompt and thresholds (`langsam@<detector>+<sam>?prompt=...`).
The new rows go to RESULTS/run=RUN_ID/, committed by RESULTS/run=RUN_ID/_COMMITTED.json
written last; RESULTS/report/ gets the trend of mean IoU per model version. A second run
with nothing new computes and writes nothing. Runs must not overlap: RESULTS/_lock.json is
created exclusively and refuses a second run, unless it is older than results.lock_stale_after
hours. See docs/REEVALUATE.md. With tracking.uri, a committed run is logged in MLflow (its
versions' images and mean IoU, the trend report), and a version models:/NAME/N picks a
registered version.

Exit status: 0 every pair is in the table (including "nothing to compute"); 1 a model
could not run, or rows are missing (the partition is left uncommitted and redone next
time); 2 bad settings, an unusable dataset, results table or checkpoint store, a version
that names no version, or a run id already in the table; 3 another run holds the lock.
"""

from __future__ import annotations

import sys

from segray import storage
from segray.cli import job_config, mlflow_tracking, set_up, trained_models
from segray.errors import CheckpointStoreError, DatasetError, LockHeld, RunError, SettingsError
from segray.reevaluate import run_reevaluation
from segray.tracking import log_finished


def main(argv: list[str] | None = None) -> int:
    config = job_config("reevaluate", argv)
    set_up(config)
    results = config.results.uri
    try:
        outcome, unavailable = run_reevaluation(config, trained_models(config, default_selector="all"))
    except LockHeld as error:
        print(f"error: another run is going on: {error}", file=sys.stderr)
        return 3
    except (SettingsError, DatasetError, RunError, CheckpointStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {storage.describe(error)}", file=sys.stderr)
        return 2
    for model, reason in unavailable.items():
        print(f"{model}: UNAVAILABLE: {reason}")
    if not outcome.versions:
        print("error: no model could run", file=sys.stderr)
        return 1
    if not outcome.computed:
        print(f"nothing to compute: {outcome.images} images x {len(outcome.versions)} model versions "
              f"already in {results}")
        return 0 if not unavailable else 1
    for version, images in outcome.computed.items():
        print(f"computed {version}: {images} new images")
    print(f"rows written {outcome.rows_written} of {outcome.rows_expected} to {outcome.partition}: "
          + ("committed" if outcome.committed else "NOT committed, redone next run"))
    if outcome.committed:
        log_finished(outcome.partition, *mlflow_tracking(config))
    return 0 if outcome.committed and not unavailable else 1


if __name__ == "__main__":
    sys.exit(main())
