"""The evaluation stream's stages, as plain functions and one actor class.

    decode_batch   (CPU task)   read and decode each image and its mask, once
    PredictStage   (one pool per model, chained)   add that model's columns to the batch
    score_batch    (CPU task)   one row per (image, model variant): metrics, mask PNG

A model's columns in the batch are named `<key>|<field>` (per model: error, latency_ms,
device, version) and `<key>:<variant>|<field>` (per variant: status, scores, mask), where
`<key>` is `m<index>` of the model in the stream (`model_key`): two versions of one
model are two models here. A model's `todo` column, when there is one, marks the images
it is to predict (the incremental re-evaluation's work lists); a row is written only for
the images a model was to predict.

A failure on one image (undecodable file, missing mask, a model error) becomes that
image's row with `status="error"` and the message: rows in = rows out, always.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from segray import storage
from segray.config import DEFAULT_MAX_PIXELS
from segray.data.decode import DecodedPair, PairError, decode_pair, encode_mask, resize_mask
from segray.metrics import score_masks
from segray.models.base import ModelSpec, Prediction, describe_device, predict_each
from segray.models.catalogue import build_segmenter, version_of
from segray.schema import ERROR, IMAGE_COLUMNS, METRIC_COLUMNS, OK, ROW_SCHEMA
from segray.timeline import node_id, timed

PASSTHROUGH = [*IMAGE_COLUMNS, "mask_uri"]
EMPTY_IMAGE = np.zeros((0, 0, 3), np.uint8)
EMPTY_MASK = np.zeros((0, 0), np.uint8)
VARIANT_FIELDS = ("status", "box_score", "mask_score", "num_detections", "mask")


def model_key(index: int) -> str:
    """The prefix of the columns of the `index`-th model of the stream."""
    return f"m{index}"


def todo_column(index: int) -> str:
    return f"{model_key(index)}|todo"


def decode_batch(batch: dict[str, np.ndarray], mask_person_values: Sequence[int] | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, timeline=None) -> dict[str, Any]:
    """Read and decode each image with its mask (`decode_pair`: the mask exists, decodes
    and has the image's size in one of its orientations; neither is over `max_pixels`),
    once for every model. A failure
    leaves an empty image (the models skip it) and the message naming the file; a pair
    carries its ground-truth mask, orientation and mask note."""
    return timed("decode", timeline, lambda b: _decode_batch(b, mask_person_values, max_pixels), batch,
                 len(batch["image_id"]), lambda out: sum(e is None for e in out["error"]))


def _decode_batch(batch: dict[str, np.ndarray], person_values: Sequence[int] | None,
                  max_pixels: int) -> dict[str, Any]:
    images, truths, errors, orientations, notes = [], [], [], [], []
    for uri, mask_uri in zip(batch["image_uri"], batch["mask_uri"]):
        pair = _decode(uri, _present(mask_uri), person_values, max_pixels)
        ok = isinstance(pair, DecodedPair)
        images.append(pair.image if ok else EMPTY_IMAGE)
        truths.append(pair.mask.astype(np.uint8) if ok else EMPTY_MASK)
        errors.append(None if ok else pair)
        orientations.append(pair.orientation if ok else None)
        notes.append(pair.mask_note if ok else None)
    carried = {k: v for k, v in batch.items() if k.endswith("|todo") or k in PASSTHROUGH}
    return {**carried, "image": images, "truth": truths, "error": errors, "image_orientation": orientations,
            "mask_note": notes}


def _decode(uri: str, mask_uri: str | None, person_values: Sequence[int] | None,
            max_pixels: int) -> DecodedPair | str:
    """The decoded pair, or why it cannot be scored, naming the file."""
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
        return decode_pair(data["image"], data["mask"], person_values, max_pixels)
    except PairError as error:
        return f"{error.part} {where[error.part]}: {error}"


def actor_threads(cpus_per_actor: float, models: int, gpu: bool) -> int:
    """Torch threads of a model actor. Without a GPU, this node's cores shared out among
    the models' actors, whatever their (fractional) Ray CPUs: with one torch thread each,
    Ray Data evaluation ran at 0.5x the speed of a plain loop on 2 cores (docs/PERFORMANCE.md)."""
    threads = max(1, round(cpus_per_actor))
    return threads if gpu else max(threads, (os.cpu_count() or 1) // max(1, models))


class PredictStage:
    """One model's pool in the stream: builds the model once, predicts the images it is to
    predict, and adds its columns to the batch (module docstring). A batch that fails is
    retried image by image, so one bad image cannot take its neighbours' rows down.

    `spec` is the model, or an `AwaitedModel` whose spec arrives when its training ends:
    the actor then waits for it at its first batch (meanwhile the batches queue in front
    of it, bounded by Ray Data's backpressure), and a model whose training failed adds
    no rows. `drop_image`: the last pool of the stream frees the decoded images."""

    def __init__(self, index: int, spec: Any, variants: list[str], label: str, cpus_per_actor: float,
                 models_per_node: int, timeline=None, drop_image: bool = False):
        self.index, self.spec, self.variants, self.label = index, spec, variants, label
        self.cpus_per_actor, self.models_per_node = cpus_per_actor, models_per_node
        self.timeline, self.drop_image = timeline, drop_image
        self.model, self.version, self.device = None, None, None
        if isinstance(spec, ModelSpec):
            self._build(spec)

    def _build(self, spec: ModelSpec | None) -> None:
        import torch

        self.spec, self.model = spec, None
        if spec is None:  # its training failed: the pool passes batches on
            return
        gpu = torch.cuda.is_available()
        torch.set_num_threads(actor_threads(self.cpus_per_actor, self.models_per_node, gpu))
        self.model = build_segmenter(spec)
        self.version = version_of(spec)
        self.device = describe_device(str(getattr(self.model, "device", "cpu")))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        if not isinstance(self.spec, ModelSpec | None):
            started = time.time()
            self._build(self.spec.wait())
            if self.timeline is not None:
                self.timeline.record.remote(f"wait:{self.label}", node_id(), 0, 0, started, time.time())
        n = len(batch["image_id"])
        todo = np.asarray(batch.get(todo_column(self.index), np.ones(n, bool)), bool)
        to_predict = [i for i in range(n) if todo[i] and self.model is not None and _present(batch["error"][i]) is None]
        out = timed(f"model:{self.label}", self.timeline, lambda b: self._columns(b, todo, to_predict), batch,
                    len(to_predict), lambda _: len(to_predict))
        if self.drop_image:
            out.pop("image")
        return out

    def _columns(self, batch: dict[str, np.ndarray], todo: np.ndarray, to_predict: list[int]) -> dict[str, Any]:
        n = len(batch["image_id"])
        results: list[dict[str, Prediction] | None] = [None] * n
        errors: list[str | None] = [None] * n
        latency: list[float | None] = [None] * n
        for i, answer in zip(to_predict, predict_each(self.model, [batch["image"][i] for i in to_predict])):
            results[i], errors[i], latency[i] = answer.predictions, answer.error, answer.latency_ms
        key = model_key(self.index)
        # A row is written where the status is set: every image the model was to predict.
        written = [bool(todo[i]) and self.model is not None for i in range(n)]
        out = dict(batch)
        out[f"{key}|error"] = errors
        out[f"{key}|latency_ms"] = latency
        out[f"{key}|device"] = [self.device] * n
        out[f"{key}|version"] = [self.version] * n
        for variant in self.variants:
            got = [(results[i] or {}).get(variant) for i in range(n)]
            prefix = f"{key}:{variant}|"
            out[prefix + "status"] = [(p.status if p else ERROR) if written[i] else None for i, p in enumerate(got)]
            out[prefix + "box_score"] = [p.box_score if p else None for p in got]
            out[prefix + "mask_score"] = [p.mask_score if p else None for p in got]
            out[prefix + "num_detections"] = [p.num_detections if p else None for p in got]
            out[prefix + "mask"] = [EMPTY_MASK if p is None or p.mask is None else p.mask.astype(np.uint8) for p in got]
        return out


def score_batch(batch: dict[str, np.ndarray], run_id: str, models: Sequence[tuple[int, Sequence[str]]],
                timeline=None) -> pa.Table:
    """The rows of a batch: for each image and each (model index, variants) in `models`,
    one row per variant the model was to predict, scored against the ground truth that
    decode_batch decoded. A no-detection is scored as an empty prediction; an error row
    has null metrics and no orientation; the predicted mask is stored as PNG."""
    return timed("score", timeline, lambda b: _score_batch(b, run_id, models), batch,
                 len(batch["image_id"]), lambda table: table.num_rows)


def _score_batch(batch: dict[str, np.ndarray], run_id: str, models: Sequence[tuple[int, Sequence[str]]]) -> pa.Table:
    rows = []
    for i in range(len(batch["image_id"])):
        decode_error = _present(batch["error"][i])
        for index, variants in models:
            key = model_key(index)
            for variant in variants:
                prefix = f"{key}:{variant}|"
                status = _present(batch[prefix + "status"][i])
                if status is None:  # not this model's to predict
                    continue
                error = decode_error or _present(batch[f"{key}|error"][i])
                scores, png = dict.fromkeys(METRIC_COLUMNS), None
                if status != ERROR:
                    try:
                        truth = batch["truth"][i].astype(bool)
                        predicted = resize_mask(batch[prefix + "mask"][i].astype(bool), truth.shape)
                        scores = score_masks(predicted, truth)
                        png = encode_mask(predicted) if status == OK else None
                    except Exception as exc:  # one odd prediction must not take the batch's rows down
                        scores, status, error = dict.fromkeys(METRIC_COLUMNS), ERROR, f"scoring {variant}: {exc}"
                rows.append({
                    "run_id": run_id,
                    "image_id": batch["image_id"][i],
                    "split": batch["split"][i],
                    "category": batch["category"][i],
                    "model": variant,
                    **scores,
                    "status": status,
                    "error": error,
                    "latency_ms": _present(batch[f"{key}|latency_ms"][i]),
                    "box_score": _present(batch[prefix + "box_score"][i]),
                    "mask_score": _present(batch[prefix + "mask_score"][i]),
                    "num_detections": _present(batch[prefix + "num_detections"][i]),
                    "mask_png": png,
                    "model_version": _present(batch[f"{key}|version"][i]),
                    "device": _present(batch[f"{key}|device"][i]),
                    "image_orientation": None if status == ERROR else _present(batch["image_orientation"][i]),
                    "mask_note": _present(batch["mask_note"][i]),
                })
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _present(value: Any) -> Any:
    """None for a missing value: a column that was all None arrives as NaN floats."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value
