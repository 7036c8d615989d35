"""Evaluate models on Ray Data (one actor pool per model) and write the Parquet rows and summary.

    python jobs/evaluate.py --preset demo --checkpoints-from runs/demo-train --output runs --run-id demo-eval
    python jobs/evaluate.py --dataset DIR --checkpoint unet=CKPT_DIR --models unet,langsam

Trained models come from a training run's training.json (--checkpoints-from), from
checkpoint directories (--checkpoint MODEL=DIR), or from the model registry (--registry URI,
with --version MODEL=latest|best|VERSION, latest by default). Writes OUTPUT/RUN_ID/predictions/ and
OUTPUT/RUN_ID/summary.json into a new run, then the report (OUTPUT/RUN_ID/report/). Exits 1 when rows are missing, any row has
status error (the run is "partial") or no model could run, 2 on bad arguments or an unusable dataset/output.
"""

from __future__ import annotations

import json
import sys
import time

from segray import storage
from segray.benchmark import (
    RunError,
    evaluate_and_summarize,
    model_specs,
    open_run,
    print_summary,
    run_uri,
    write_report_logged,
)
from segray.cli import config_from_args, parser, versions_from_args
from segray.data.manifest import DatasetError
from segray.model_registry import RegistryError, resolve_version, version_key
from segray.models.registry import TRAINABLE


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.split("\n\n")[0])
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoints-from", metavar="RUN_URI",
                   help="a training run (OUTPUT/RUN_ID) whose training.json names each model's best checkpoint")
    g.add_argument("--checkpoint", action="append", metavar="MODEL=DIR", help="a checkpoint directory, repeatable")
    args = p.parse_args(argv)
    config = config_from_args(args)
    started = time.perf_counter()

    training: dict = {}
    if args.checkpoints_from:
        training = json.loads(storage.read_bytes(storage.join(args.checkpoints_from, "training.json")))
    for item in args.checkpoint or []:
        model, _, directory = item.partition("=")
        if not directory:
            p.error(f"--checkpoint expects MODEL=DIR, got {item!r}")
        training[model] = {"model": model, "checkpoint": directory}
    versions = versions_from_args(args)
    if versions and not args.registry:
        p.error("--version needs --registry")
    if args.registry:
        for model in (m for m in config.models if m in TRAINABLE):
            try:
                record = resolve_version(args.registry, model, versions.get(model, "latest"))
            except (RegistryError, OSError) as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            training[model] = {"model": model, "checkpoint": record["checkpoint"],
                               "version": version_key(model, record["version"])}
    try:
        manifest = open_run(config, args.ray_address)
        specs, unavailable = model_specs(config, training)
        summary = evaluate_and_summarize(config, manifest, run_uri(config), specs, unavailable, training, started)
    except (DatasetError, RunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_summary(summary)
    write_report_logged(run_uri(config))
    return 0 if summary["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main())
