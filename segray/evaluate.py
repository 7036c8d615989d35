"""Evaluation on Ray Data: manifest -> decode (CPU tasks) -> one actor pool per model ->
score (CPU tasks) -> Parquet, one row per (image, model variant).

Each model gets its own branch of the same shape; the branches are unioned and written
together, so all pools run at once. A failure on one image (undecodable file, missing
mask, a model error) becomes that image's row with `status="error"` and the message:
rows in = rows out, always.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from segray import storage
from segray.config import EvalConfig
from segray.data.manifest import to_dataset
from segray.data.decode import decode_image, decode_mask, encode_mask, resize_mask
from segray.metrics import METRIC_COLUMNS, score_masks
from segray.models.base import ModelSpec, Prediction

# The long-format table: one row per (run, image, model variant).
ROW_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("image_id", pa.string()),
        ("split", pa.string()),
        ("category", pa.string()),
        ("model", pa.string()),
        ("iou", pa.float64()),  # null when status is "error"; this and the metrics below: segray.metrics
        ("dice", pa.float64()),
        ("precision", pa.float64()),
        ("recall", pa.float64()),
        ("boundary_iou", pa.float64()),
        ("pred_area", pa.int64()),  # predicted pixels, at the ground truth's resolution
        ("true_area", pa.int64()),  # ground-truth pixels
        ("intersection", pa.int64()),  # pixels in both (pooled IoU = sum of these / sum of unions)
        ("union", pa.int64()),
        ("empty", pa.bool_()),  # the ground truth has no pixel
        ("status", pa.string()),  # "ok" | "no_detection" | "error"
        ("error", pa.string()),
        ("latency_ms", pa.float64()),  # the model call's wall time shared out over its batch
        ("box_score", pa.float64()),
        ("mask_score", pa.float64()),
        ("num_detections", pa.int64()),
        ("mask_png", pa.binary()),  # the predicted mask, 0/255, at the ground truth's resolution
    ]
)
PASSTHROUGH = ["image_id", "mask_uri", "split", "category"]
EMPTY_IMAGE = np.zeros((0, 0, 3), np.uint8)


def decode_batch(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Read and decode each image; a failure leaves an empty image and the message."""
    images, errors = [], []
    for uri in batch["image_uri"]:
        try:
            images.append(decode_image(storage.read_bytes(uri)))
            errors.append(None)
        except Exception as error:
            images.append(EMPTY_IMAGE)
            errors.append(f"image {uri}: {error}")
    return {**{k: batch[k] for k in PASSTHROUGH}, "image": images, "error": errors}


class PredictStage:
    """The actor every model shares: builds the model once, predicts batches, and turns
    each image into one row per variant. A batch that fails is retried image by image
    so that one bad image cannot take its neighbours' rows down with it."""

    def __init__(self, spec: ModelSpec, torch_threads: int):
        import torch

        from segray.models.registry import build_segmenter

        torch.set_num_threads(torch_threads)
        self.model = build_segmenter(spec)

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

        rows: dict[str, list] = {k: [] for k in [*PASSTHROUGH, "model", "status", "error", "latency_ms",
                                                  "box_score", "mask_score", "num_detections", "mask"]}
        for i in range(n):
            for variant in self.model.variants:
                prediction = results[i][variant] if results[i] else None
                for key in PASSTHROUGH:
                    rows[key].append(batch[key][i])
                rows["model"].append(variant)
                rows["status"].append(prediction.status if prediction else "error")
                rows["error"].append(errors[i])
                rows["latency_ms"].append(latency[i])
                rows["box_score"].append(prediction.box_score if prediction else None)
                rows["mask_score"].append(prediction.mask_score if prediction else None)
                rows["num_detections"].append(prediction.num_detections if prediction else None)
                mask = prediction.mask if prediction else None
                rows["mask"].append(np.zeros((0, 0), np.uint8) if mask is None else mask.astype(np.uint8))
        return rows

    def _predict(self, batch, indices, results, latency) -> None:
        started = time.perf_counter()
        predictions = self.model.predict([batch["image"][i] for i in indices])
        per_image_ms = 1000 * (time.perf_counter() - started) / len(indices)
        for i, prediction in zip(indices, predictions):
            results[i], latency[i] = prediction, per_image_ms


def score_batch(batch: dict[str, np.ndarray], run_id: str) -> pa.Table:
    """The metrics of each prediction against its ground truth, the predicted mask resized
    (nearest) to the ground truth's resolution first; the mask is stored as PNG. A
    no-detection is scored as an empty prediction; an error row has null metrics."""
    rows = []
    truths: dict[str, np.ndarray] = {}  # a model with several variants has one row per variant
    for i in range(len(batch["image_id"])):
        status, error = batch["status"][i], _present(batch["error"][i])
        scores, png = dict.fromkeys(METRIC_COLUMNS), None
        if status != "error":
            try:
                mask_uri = _present(batch["mask_uri"][i])
                if mask_uri is None:
                    raise ValueError("missing mask: no file in masks/ matches this image")
                if mask_uri not in truths:
                    truths[mask_uri] = decode_mask(storage.read_bytes(mask_uri))
                truth = truths[mask_uri]
                predicted = resize_mask(batch["mask"][i].astype(bool), truth.shape)
                scores = score_masks(predicted, truth)
                png = encode_mask(predicted) if status == "ok" else None
            except Exception as exc:
                status, error = "error", f"mask {batch['mask_uri'][i]}: {exc}"
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
            }
        )
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _present(value: Any) -> Any:
    """None for a missing value: a column that was all None arrives as NaN floats."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def evaluate(
    manifest: pd.DataFrame,
    specs: list[ModelSpec],
    config: EvalConfig,
    predictions_uri: str,
    run_id: str,
    rows_per_file: int = 5000,
) -> None:
    """Run every model over every manifest row and write the long-format rows as Parquet."""
    import ray
    from ray.data import ActorPoolStrategy

    if not specs:
        raise ValueError("no models to evaluate")
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    decoded = to_dataset(manifest).map_batches(decode_batch, batch_size=config.decode_batch_size)
    branches = []
    for spec in specs:
        resources = {"num_gpus": config.gpus_per_actor} if gpus else {"num_cpus": config.cpus_per_actor}
        branch = decoded.map_batches(
            PredictStage,
            fn_constructor_kwargs={"spec": spec, "torch_threads": max(1, round(config.cpus_per_actor))},
            batch_size=int(config.batch_size.get(spec.name, 8)),
            compute=ActorPoolStrategy(size=config.actors),
            **resources,
        )
        branches.append(branch.map_batches(score_batch, fn_kwargs={"run_id": run_id}))
    rows = branches[0].union(*branches[1:]) if len(branches) > 1 else branches[0]
    fs, path = storage.resolve(predictions_uri)
    rows.write_parquet(path, filesystem=fs, min_rows_per_file=rows_per_file)
