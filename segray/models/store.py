"""The checkpoint store: every trained checkpoint, recorded once, under a store URI
(`--checkpoint-store`, formerly `--registry`).

Layout under STORE (a local path or `s3://bucket/prefix`):

  <model>/<version>/model.safetensors   the weights, copied from the training checkpoint
                                        (<model> is the training's name: `unet`, or
                                        `unet[frac=0.25]` for one on a subset of the train split)
  <model>/<version>/segray.json         model name, params, input size, epoch, metrics
  <model>/<version>/record.json         written last: model, train_fraction, version, run_id, created_at (UTC),
                                        config, metrics, dataset (uri, fingerprint), checkpoint_source

A version is the id of the training run that produced it (run ids are unique, see
`segray.run.prepare_run_dir`) and is written once: `record.json` is created
exclusively, so recording an existing version fails instead of replacing it. A version
folder without `record.json` is an interrupted copy: it is invisible and may be redone.
The optimizer state is not copied: the store serves evaluation, not resuming. Rows of a
stored version carry `model_version` `<model>@<version>` (`checkpoint.version_key`).

Selectors: `latest` (newest created_at), `best` (highest best_val_iou; validation IoU
is only comparable between versions trained on the same dataset fingerprint), `all`
(every version), or an exact version name.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from segray import storage
from segray.config import training_name
from segray.errors import CheckpointStoreError
from segray.models.checkpoint import META_FILE, WEIGHTS_FILE, read_meta

RECORD_FILE = "record.json"
CHECKPOINT_FILES = (WEIGHTS_FILE, META_FILE)
SELECTORS = ("latest", "best", "all")


def record_model(
    store: str,
    checkpoint: str,
    run_id: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    dataset: dict[str, Any],
) -> dict[str, Any]:
    """Copy a checkpoint into the store as version `run_id` of its training (the model's
    name, or `unet[frac=0.25]` for a subset's: `checkpoint.training_name`); returns the record."""
    meta = read_meta(checkpoint)
    model = training_name(meta["model"], meta.get("train_fraction"))
    version_uri = storage.join(store, model, run_id)
    record_uri = storage.join(version_uri, RECORD_FILE)
    if storage.exists(record_uri):
        raise CheckpointStoreError(f"{model} version {run_id} is already in {store}: a version is written once")
    for name in CHECKPOINT_FILES:
        storage.copy_file(storage.join(checkpoint, name), storage.join(version_uri, name))
    record = {
        "model": model,
        "train_fraction": meta.get("train_fraction"),
        "version": run_id,
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(),
        "config": config,
        "metrics": metrics,
        "dataset": dataset,
        "checkpoint_source": checkpoint,
    }
    try:
        storage.write_new(record_uri, json.dumps(record, indent=2, default=str).encode())
    except FileExistsError:
        raise CheckpointStoreError(f"{model} version {run_id} was recorded meanwhile in {store}") from None
    return {**record, "checkpoint": version_uri}


def record_training(store: str, training: dict[str, dict[str, Any]], run_id: str, config: dict[str, Any],
                    dataset: dict[str, Any]) -> list[dict[str, Any]]:
    """Record the best checkpoint of every model that trained (`segray.trainings.train_models`'
    result) as version `run_id`; models that failed to train are skipped. `dataset` is the
    run's {uri, fingerprint, images}."""
    records = []
    for result in training.values():
        if "checkpoint" not in result:
            continue
        metrics = {k: result[k] for k in ("best_val_iou", "best_epoch", "train_time_s")}
        records.append(record_model(store, result["checkpoint"], run_id, config, metrics, dataset))
    return records


def list_versions(store: str, model: str) -> list[dict[str, Any]]:
    """Every recorded version of `model`, oldest first; each record gains `checkpoint` (its folder)."""
    records = []
    for version in storage.list_dirs(storage.join(store, model)):
        version_uri = storage.join(store, model, version)
        record_uri = storage.join(version_uri, RECORD_FILE)
        if storage.exists(record_uri):
            records.append({**json.loads(storage.read_bytes(record_uri)), "checkpoint": version_uri})
    return sorted(records, key=lambda r: r["created_at"])


def select_versions(store: str, model: str, selector: str) -> list[dict[str, Any]]:
    """The records a selector picks: `all`, or the one `latest`, `best` or named version
    (a name may be given as the rows' `model_version`, `<model>@<version>`)."""
    selector = selector.removeprefix(f"{model}@")
    records = list_versions(store, model)
    if not records:
        raise CheckpointStoreError(f"no version of {model} in {store}")
    if selector == "all":
        return records
    if selector == "latest":
        return [records[-1]]
    if selector == "best":
        scored = [r for r in records if r.get("metrics", {}).get("best_val_iou") is not None]
        if not scored:
            raise CheckpointStoreError(f"no version of {model} in {store} has a best_val_iou")
        return [max(scored, key=lambda r: r["metrics"]["best_val_iou"])]
    named = [r for r in records if r["version"] == selector]
    if not named:
        versions = ", ".join(r["version"] for r in records)
        raise CheckpointStoreError(f"{model} has no version {selector!r} in {store}; versions: {versions} "
                                   f"(or {', '.join(SELECTORS)})")
    return named


def resolve_version(store: str, model: str, selector: str) -> dict[str, Any]:
    """The one record `latest`, `best` or a version name picks."""
    if selector == "all":
        raise CheckpointStoreError("'all' picks several versions; expected latest, best or a version name")
    return select_versions(store, model, selector)[0]
