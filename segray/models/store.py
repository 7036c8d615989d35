"""The model registry: every trained checkpoint, recorded once, under a registry URI.

Layout under REGISTRY (a local path or `s3://bucket/prefix`):

  <model>/<version>/model.safetensors   the weights, copied from the training checkpoint
  <model>/<version>/segray.json         model name, params, input size, epoch, metrics
  <model>/<version>/record.json         written last: model, version, run_id, created_at (UTC),
                                        config, metrics, dataset (uri, fingerprint), checkpoint_source

A version is the id of the training run that produced it (run ids are unique, see
`segray.benchmark.prepare_run_dir`) and is written once: `record.json` is created
exclusively, so recording an existing version fails instead of replacing it. A version
folder without `record.json` is an interrupted copy: it is invisible and may be redone.
The optimizer state is not copied: the registry serves evaluation, not resuming.

Selectors: `latest` (newest created_at), `best` (highest best_val_iou; validation IoU
is only comparable between versions trained on the same dataset fingerprint), `all`
(every version), or an exact version name.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from segray import storage
from segray.data.manifest import manifest_fingerprint
from segray.models.base import ModelSpec
from segray.models.trained import META_FILE, WEIGHTS_FILE

RECORD_FILE = "record.json"
CHECKPOINT_FILES = (WEIGHTS_FILE, META_FILE)
SELECTORS = ("latest", "best", "all")


class RegistryError(ValueError):
    """A version that cannot be recorded or found; the message says why."""


def record_model(
    registry: str,
    checkpoint: str,
    run_id: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    dataset: dict[str, Any],
) -> dict[str, Any]:
    """Copy a checkpoint into the registry as version `run_id` of its model; returns the record."""
    meta = json.loads(storage.read_bytes(storage.join(checkpoint, META_FILE)))
    model = meta["model"]
    version_uri = storage.join(registry, model, run_id)
    record_uri = storage.join(version_uri, RECORD_FILE)
    if storage.exists(record_uri):
        raise RegistryError(f"{model} version {run_id} is already in {registry}: a version is written once")
    for name in CHECKPOINT_FILES:
        storage.copy_file(storage.join(checkpoint, name), storage.join(version_uri, name))
    record = {
        "model": model,
        "version": run_id,
        "run_id": run_id,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "config": config,
        "metrics": metrics,
        "dataset": dataset,
        "checkpoint_source": checkpoint,
    }
    try:
        storage.write_new(record_uri, json.dumps(record, indent=2, default=str).encode())
    except FileExistsError:
        raise RegistryError(f"{model} version {run_id} was recorded meanwhile in {registry}") from None
    return {**record, "checkpoint": version_uri}


def record_training(
    registry: str, training: dict[str, dict[str, Any]], run_id: str, config: dict[str, Any], dataset: str,
    manifest: pd.DataFrame,
) -> list[dict[str, Any]]:
    """Record the best checkpoint of every model that trained (`segray.benchmark.train_models`'
    result); models that failed to train are skipped."""
    fingerprint = manifest_fingerprint(manifest)
    records = []
    for result in training.values():
        if "checkpoint" not in result:
            continue
        metrics = {k: result[k] for k in ("best_val_iou", "best_epoch", "train_time_s")}
        records.append(record_model(registry, result["checkpoint"], run_id, config, metrics,
                                    {"uri": dataset, "fingerprint": fingerprint, "images": len(manifest)}))
    return records


def list_versions(registry: str, model: str) -> list[dict[str, Any]]:
    """Every recorded version of `model`, oldest first; each record gains `checkpoint` (its folder)."""
    records = []
    for version in storage.list_dirs(storage.join(registry, model)):
        version_uri = storage.join(registry, model, version)
        record_uri = storage.join(version_uri, RECORD_FILE)
        if storage.exists(record_uri):
            records.append({**json.loads(storage.read_bytes(record_uri)), "checkpoint": version_uri})
    return sorted(records, key=lambda r: r["created_at"])


def select_versions(registry: str, model: str, selector: str) -> list[dict[str, Any]]:
    """The records a selector picks: `all`, or the one `latest`, `best` or named version."""
    records = list_versions(registry, model)
    if not records:
        raise RegistryError(f"no version of {model} in {registry}")
    if selector == "all":
        return records
    if selector == "latest":
        return [records[-1]]
    if selector == "best":
        scored = [r for r in records if r.get("metrics", {}).get("best_val_iou") is not None]
        if not scored:
            raise RegistryError(f"no version of {model} in {registry} has a best_val_iou")
        return [max(scored, key=lambda r: r["metrics"]["best_val_iou"])]
    named = [r for r in records if r["version"] == selector]
    if not named:
        versions = ", ".join(r["version"] for r in records)
        raise RegistryError(f"{model} has no version {selector!r} in {registry}; versions: {versions} "
                            f"(or {', '.join(SELECTORS)})")
    return named


def resolve_version(registry: str, model: str, selector: str) -> dict[str, Any]:
    """The one record `latest`, `best` or a version name picks."""
    if selector == "all":
        raise RegistryError("'all' picks several versions; expected latest, best or a version name")
    return select_versions(registry, model, selector)[0]


def version_key(model: str, version: str) -> str:
    """The `model_version` of a trained model's rows: `unet@<registry version>`."""
    return f"{model}@{version}"


def langsam_version(params: dict[str, Any]) -> str:
    """The `model_version` of LangSAM's rows: `langsam@<detector>+<sam>`, the weights as given
    (hub ids or folders). Other parameters (prompt, thresholds) are not part of it."""
    from segray.models.langsam import LangSAMConfig

    config = LangSAMConfig.from_params(params)
    return f"langsam@{config.detector}+{config.sam}"


def spec_for(record: dict[str, Any], params: dict[str, Any] | None = None) -> ModelSpec:
    """The evaluation spec of a registered version; its checkpoint is the registry's copy."""
    return ModelSpec(record["model"], params=params or {}, checkpoint=record["checkpoint"],
                     version=version_key(record["model"], record["version"]))
