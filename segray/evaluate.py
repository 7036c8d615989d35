"""Evaluation on Ray Data: manifest -> decode (CPU tasks) -> one actor pool per model ->
score (CPU tasks) -> Parquet, one row per (image, model variant).

Each model gets its own branch of the same shape; the branches are unioned and written
together, so all pools run at once. A failure on one image (undecodable file, missing
mask, a model error) becomes that image's row with `status="error"` and the message:
rows in = rows out, always.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from segray import storage
from segray.config import EvalConfig
from segray.data.decode import DecodedPair, PairError, decode_mask, decode_pair, encode_mask, resize_mask
from segray.data.manifest import to_dataset
from segray.metrics import score_masks
from segray.models.base import ModelSpec, Prediction, describe_device
from segray.models.catalogue import build_segmenter, version_of
from segray.schema import ERROR, IMAGE_COLUMNS, METRIC_COLUMNS, OK, ROW_SCHEMA

PASSTHROUGH = [*IMAGE_COLUMNS, "mask_uri"]
EMPTY_IMAGE = np.zeros((0, 0, 3), np.uint8)


def decode_batch(batch: dict[str, np.ndarray], mask_person_values: Sequence[int] | None = None) -> dict[str, Any]:
    """Read and decode each image with its mask (`decode_pair`: the mask exists, decodes
    and has the image's size in one of its orientations). A failure leaves an empty image
    (the model skips it) and the message; a pair carries its orientation and mask note."""
    images, errors, orientations, notes = [], [], [], []
    for uri, mask_uri in zip(batch["image_uri"], batch["mask_uri"]):
        pair = _decode(uri, _present(mask_uri), mask_person_values)
        ok = isinstance(pair, DecodedPair)
        images.append(pair.image if ok else EMPTY_IMAGE)
        errors.append(None if ok else pair)
        orientations.append(pair.orientation if ok else None)
        notes.append(pair.mask_note if ok else None)
    return {**{k: batch[k] for k in PASSTHROUGH}, "image": images, "error": errors,
            "image_orientation": orientations, "mask_note": notes}


def _decode(uri: str, mask_uri: str | None, person_values: Sequence[int] | None) -> DecodedPair | str:
    """The decoded pair, or why it cannot be scored, naming the file. Checked before
    prediction, so every model's row for the image carries the same error (score_batch
    reads the mask again: the masks are small, and the predicted masks need not carry it)."""
    if mask_uri is None:
        return "missing mask: no file in masks/ matches this image"
    where = {"image": uri, "mask": mask_uri}
    data = {}
    for part, part_uri in where.items():
        try:
            data[part] = storage.read_bytes(part_uri)
        except Exception as error:
            return f"{part} {part_uri}: {error}"
    try:
        return decode_pair(data["image"], data["mask"], person_values)
    except PairError as error:
        return f"{error.part} {where[error.part]}: {error}"


class PredictStage:
    """The actor every model shares: builds the model once, predicts batches, and turns
    each image into one row per variant, carrying every other column of the decoded batch
    along. A batch that fails is retried image by image so that one bad image cannot take
    its neighbours' rows down with it."""

    def __init__(self, spec: ModelSpec, torch_threads: int):
        import torch

        torch.set_num_threads(torch_threads)
        self.model = build_segmenter(spec)
        self.device = describe_device(str(getattr(self.model, "device", "cpu")))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        n = len(batch["image_id"])
        results: list[dict[str, Prediction] | None] = [None] * n
        errors: list[str | None] = [_present(e) for e in batch["error"]]
        latency = [None] * n
        todo = [i for i in range(n) if errors[i] is None]
        if todo:
            try:
                self._predict(batch, todo, results, latency)
            except Exception:
                for i in todo:
                    try:
                        self._predict(batch, [i], results, latency)
                    except Exception as error:
                        errors[i] = f"{type(error).__name__}: {error}"

        carried = [k for k in batch if k not in ("image", "error")]
        rows: dict[str, list] = {k: [] for k in [*carried, "model", "status", "error", "latency_ms",
                                                  "box_score", "mask_score", "num_detections", "mask", "device"]}
        for i in range(n):
            for variant in self.model.variants:
                prediction = results[i][variant] if results[i] else None
                for key in carried:
                    rows[key].append(batch[key][i])
                rows["model"].append(variant)
                rows["status"].append(prediction.status if prediction else ERROR)
                rows["error"].append(errors[i])
                rows["latency_ms"].append(latency[i])
                rows["box_score"].append(prediction.box_score if prediction else None)
                rows["mask_score"].append(prediction.mask_score if prediction else None)
                rows["num_detections"].append(prediction.num_detections if prediction else None)
                mask = prediction.mask if prediction else None
                rows["mask"].append(np.zeros((0, 0), np.uint8) if mask is None else mask.astype(np.uint8))
                rows["device"].append(self.device)
        return rows

    def _predict(self, batch, indices, results, latency) -> None:
        started = time.perf_counter()
        predictions = self.model.predict([batch["image"][i] for i in indices])
        per_image_ms = 1000 * (time.perf_counter() - started) / len(indices)
        for i, prediction in zip(indices, predictions):
            results[i], latency[i] = prediction, per_image_ms


def score_batch(batch: dict[str, np.ndarray], run_id: str, model_version: str | None = None,
                mask_person_values: Sequence[int] | None = None) -> pa.Table:
    """The metrics of each prediction against its ground truth; the predicted mask is
    stored as PNG. decode_batch made sure the mask exists and has the size of the image
    the model saw, which is the prediction's. A no-detection is scored as an empty
    prediction; an error row has null metrics and no orientation."""
    rows = []
    truths: dict[str, np.ndarray] = {}  # a model with several variants has one row per variant
    for i in range(len(batch["image_id"])):
        status, error = batch["status"][i], _present(batch["error"][i])
        scores, png = dict.fromkeys(METRIC_COLUMNS), None
        if status != ERROR:
            try:
                mask_uri = batch["mask_uri"][i]
                if mask_uri not in truths:
                    truths[mask_uri] = decode_mask(storage.read_bytes(mask_uri), mask_person_values)
                truth = truths[mask_uri]
                predicted = resize_mask(batch["mask"][i].astype(bool), truth.shape)
                scores = score_masks(predicted, truth)
                png = encode_mask(predicted) if status == OK else None
            except Exception as exc:
                status, error = ERROR, f"mask {batch['mask_uri'][i]}: {exc}"
        rows.append(
            {
                "run_id": run_id,
                "image_id": batch["image_id"][i],
                "split": batch["split"][i],
                "category": batch["category"][i],
                "model": batch["model"][i],
                **scores,
                "status": status,
                "error": _present(error),
                "latency_ms": _present(batch["latency_ms"][i]),
                "box_score": _present(batch["box_score"][i]),
                "mask_score": _present(batch["mask_score"][i]),
                "num_detections": _present(batch["num_detections"][i]),
                "mask_png": png,
                "model_version": model_version,
                "device": batch["device"][i],
                "image_orientation": None if status == ERROR else _present(batch["image_orientation"][i]),
                "mask_note": _present(batch["mask_note"][i]),
            }
        )
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _present(value: Any) -> Any:
    """None for a missing value: a column that was all None arrives as NaN floats."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def actor_threads(config: EvalConfig, models: int, gpus: bool) -> int:
    """Torch threads of each model actor. Without GPUs, this node's cores shared out among
    the model actors that run at once, whatever their (fractional) Ray CPUs: with one torch
    thread each, Ray Data evaluation ran at 0.5x the speed of a plain loop on 2 cores
    (docs/PERFORMANCE.md)."""
    threads = max(1, round(config.cpus_per_actor))
    if gpus:
        return threads
    return max(threads, (os.cpu_count() or 1) // (config.actors * models))


def evaluate(
    manifest: pd.DataFrame,
    specs: list[ModelSpec],
    config: EvalConfig,
    predictions_uri: str,
    run_id: str,
    rows_per_file: int = 5000,
    manifest_per_spec: list[pd.DataFrame] | None = None,
    mask_person_values: Sequence[int] | None = None,
) -> None:
    """Run every model over every manifest row and write the long-format rows as Parquet.
    `mask_person_values` names the mask values that are the person (`decode_mask_noted`).

    `manifest_per_spec`, in the order of `specs`, gives each model its own rows instead
    (the incremental re-evaluation computes only the pairs it lacks). It costs no extra
    decoding: Ray Data runs a shared upstream stage once per branch of a union anyway."""
    import ray
    from ray.data import ActorPoolStrategy

    if not specs:
        raise ValueError("no models to evaluate")
    tables = manifest_per_spec if manifest_per_spec is not None else [manifest] * len(specs)
    if len(tables) != len(specs):
        raise ValueError(f"manifest_per_spec has {len(tables)} tables for {len(specs)} models")
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    torch_threads = actor_threads(config, len(specs), gpus)
    branches = []
    for spec, table in zip(specs, tables):
        decoded = to_dataset(table).map_batches(decode_batch, batch_size=config.decode_batch_size,
                                                fn_kwargs={"mask_person_values": mask_person_values})
        resources = {"num_gpus": config.gpus_per_actor} if gpus else {"num_cpus": config.cpus_per_actor}
        branch = decoded.map_batches(
            PredictStage,
            fn_constructor_kwargs={"spec": spec, "torch_threads": torch_threads},
            batch_size=int(config.batch_size.get(spec.name, 8)),
            compute=ActorPoolStrategy(size=config.actors),
            **resources,
        )
        branches.append(branch.map_batches(score_batch, fn_kwargs={"run_id": run_id, "model_version": version_of(spec),
                                                                   "mask_person_values": mask_person_values}))
    rows = branches[0].union(*branches[1:]) if len(branches) > 1 else branches[0]
    fs, path = storage.resolve(predictions_uri)
    rows.write_parquet(path, filesystem=fs, min_rows_per_file=rows_per_file)
