"""The report's statistics: a pure function of the prediction rows (and training.json)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from segray.metrics import pooled_iou
from segray.models.base import is_gpu
from segray.results.scoring import common_rows, in_split, model_summary
from segray.schema import OK

CATEGORIES = ("HipHop", "Jazz", "Kata", "Sports", "Taichi")


def bootstrap_means(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Means of `values` (n, k) over `resamples` bootstrap resamples of its n rows:
    (resamples, k). Every column sees the same resamples (paired). Vectorised: each
    resample is a vector of counts, and the means are one matrix product."""
    values = np.asarray(values, np.float64)
    n = len(values)
    if n == 0:
        return np.full((resamples, values.shape[1]), np.nan)
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, values.shape[1]))
    chunk = max(1, min(resamples, (1 << 22) // n))
    counts = np.empty((chunk, n))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        picks = rng.integers(0, n, size=(size, n))
        for k in range(size):  # row by row: each row's counts stay in cache
            counts[k] = np.bincount(picks[k], minlength=n)
        out[start : start + size] = counts[:size] @ values / n
    return out


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    low, high = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)], axis=0)
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value; zero differences are dropped, and all zero
    (the models agree on every image) gives 1.0."""
    from scipy.stats import wilcoxon

    differences = np.asarray(differences, np.float64)
    if not np.any(differences != 0):
        return 1.0
    return float(wilcoxon(differences, zero_method="wilcox").pvalue)


@dataclass
class Analysis:
    """Everything the report shows, computed from the rows and the run's JSON."""

    split: str
    models: list[str]
    image_ids: np.ndarray  # the common images, in the order of the matrices' rows
    categories: np.ndarray
    iou: np.ndarray  # (images, models), strict IoU
    per_model: dict[str, dict[str, Any]]
    pairs: list[dict[str, Any]]
    per_category: dict[str, dict[str, float | None]]
    latency: dict[str, dict[str, Any]]
    training: dict[str, dict[str, Any]]
    excluded_images: int
    shown: list[str] = field(default_factory=list)  # the models the tables, pairs and figures show
    settings: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # model -> why it did not run
    timeline: dict[str, dict[str, Any]] = field(default_factory=dict)  # summary.json's timeline stages

    def columns(self) -> list[tuple[int, str]]:
        """(column of `iou`, model) of each shown model."""
        return [(self.models.index(model), model) for model in self.shown]


def analyze(
    rows: pd.DataFrame,
    split: str = "val",
    training: dict[str, Any] | None = None,
    gpu_hour_usd: float = 2.0,
    resamples: int = 2000,
    seed: int = 0,
    cpu_hour_usd: float | None = None,
    hidden: Collection[str] = (),
) -> Analysis:
    """The report's numbers from the prediction rows (a pure function). Which images count,
    and each model's n and mean IoU, are `segray.results.scoring`'s, as in summary.json.
    Cost is priced by the device the latencies were measured on: GPU-hours at
    `gpu_hour_usd`, CPU actor-hours at `cpu_hour_usd` (not priced when None). `hidden`
    models (a sweep's other settings) count in the statistics but are left out of
    `shown`: the per-model tables, the pairs and the figures."""
    rows = rows[in_split(rows, split)]
    model_code, models = _codes(rows["model"])
    keep = common_rows(rows)
    kept, kept_model = rows[keep], model_code[keep]
    image_code, image_ids = _codes(kept["image_id"])  # every common image has a row per model

    def matrix(column: str) -> np.ndarray:
        m = np.full((len(image_ids), len(models)), np.nan)
        m[image_code, kept_model] = np.asarray(kept[column], np.float64)
        return m

    iou_m = matrix("iou")
    detected = np.zeros_like(iou_m, bool)
    detected[image_code, kept_model] = np.asarray(kept["status"] == OK)
    other = {c: matrix(c) for c in ("dice", "boundary_iou", "precision", "recall", "intersection", "union")}
    categories = np.full(len(iou_m), "", object)
    categories[image_code] = np.asarray(kept["category"].astype(str), object)

    boot = bootstrap_means(iou_m, resamples, seed)
    scored = model_summary(rows, split)
    per_model = {}
    for j, model in enumerate(models):
        values = iou_m[:, j]
        per_model[model] = scored[model] | {
            "mean_iou_ci": percentile_ci(boot[:, j]) if len(values) else (None, None),
            "median_iou": float(np.median(values)) if len(values) else None,
            "pooled_iou": pooled_iou(other["intersection"][:, j], other["union"][:, j]) if len(values) else None,
            "mean_dice": mean_of(other["dice"][:, j]),
            "mean_boundary_iou": mean_of(other["boundary_iou"][:, j]),
            "mean_precision": mean_of(other["precision"][:, j]),
            "mean_recall": mean_of(other["recall"][:, j]),
        }

    shown = [j for j, model in enumerate(models) if model not in hidden]
    pairs = []
    for i, a in enumerate(shown):
        for b in shown[i + 1:]:
            diff = iou_m[:, a] - iou_m[:, b]
            pairs.append(
                {
                    "a": models[a],
                    "b": models[b],
                    "images": int(len(diff)),
                    "mean_diff": mean_of(diff),
                    "ci": percentile_ci(boot[:, a] - boot[:, b]) if len(diff) else (None, None),
                    "win_rate": float((diff > 0).mean()) if len(diff) else None,
                    "tie_rate": float((diff == 0).mean()) if len(diff) else None,
                    "loss_rate": float((diff < 0).mean()) if len(diff) else None,
                    "wilcoxon_p": wilcoxon_p(diff) if len(diff) else None,
                }
            )

    present_categories = sorted(set(categories), key=lambda c: (c not in CATEGORIES, c))
    per_category = {}
    for category in present_categories:
        inside = categories == category
        per_category[category] = {"images": int(inside.sum())} | {
            model: mean_of(iou_m[inside, j]) for j, model in enumerate(models)
        }

    latency_ms = np.asarray(kept["latency_ms"], np.float64)
    latency = {}
    for j, model in enumerate(models):
        values = latency_ms[kept_model == j]
        values = values[~np.isnan(values)]
        mean = float(values.mean()) if len(values) else None
        device = per_model[model]["device"]
        hour_usd = gpu_hour_usd if is_gpu(device) else cpu_hour_usd
        latency[model] = {
            "device": device,
            "images": int(len(values)),
            "p50_ms": float(np.percentile(values, 50)) if len(values) else None,
            "p95_ms": float(np.percentile(values, 95)) if len(values) else None,
            "mean_ms": mean,
            "images_per_s": 1000.0 / mean if mean else None,
            "usd_per_1000": mean * hour_usd / 3600.0 if mean is not None and hour_usd is not None else None,
        }

    return Analysis(
        split=split,
        models=models,
        image_ids=np.asarray(image_ids),
        categories=categories,
        iou=iou_m,
        per_model=per_model,
        pairs=pairs,
        per_category=per_category,
        latency=latency,
        training=training_table(training or {}),
        excluded_images=int(rows["image_id"].nunique()) - len(image_ids),
        shown=[models[j] for j in shown],
        settings={"gpu_hour_usd": gpu_hour_usd, "cpu_hour_usd": cpu_hour_usd, "resamples": resamples, "seed": seed},
    )


def tracked_metrics(analysis: Analysis) -> dict[str, dict[str, float | int | None]]:
    """Per model variant (every one, shown or not), the numbers an experiment tracker keeps
    (`segray.tracking`): mean IoU strict and over detections only, its 95% CI, median and pooled IoU,
    Dice, boundary IoU, latency p50/p95, images/s and $ per 1,000 images."""
    metrics = {}
    for model in analysis.models:
        scores, latency = analysis.per_model[model], analysis.latency[model]
        low, high = scores["mean_iou_ci"]
        metrics[model] = {
            "scored_images": scores["scored_images"],
            "mean_iou": scores["mean_iou"],
            "mean_iou_detected": scores["mean_iou_detected"],
            "mean_iou_ci_low": low,
            "mean_iou_ci_high": high,
            "median_iou": scores["median_iou"],
            "pooled_iou": scores["pooled_iou"],
            "mean_dice": scores["mean_dice"],
            "mean_boundary_iou": scores["mean_boundary_iou"],
            "latency_p50_ms": latency["p50_ms"],
            "latency_p95_ms": latency["p95_ms"],
            "images_per_s": latency["images_per_s"],
            "usd_per_1000": latency["usd_per_1000"],
        }
    return metrics


def training_table(training: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per trained model, from training.json: history, time to train, best epoch, or its error."""
    table = {}
    for model, result in sorted(training.items()):
        if not isinstance(result, dict):
            continue
        history = result.get("history") or []
        table[model] = {
            "error": result.get("error"),
            "epochs": len(history),
            "best_epoch": result.get("best_epoch"),
            "best_val_iou": result.get("best_val_iou"),
            "train_time_s": result.get("train_time_s"),
            "train_images": result.get("train_images"),
            "checkpoint": result.get("checkpoint"),
            "history": history,
        }
    return table


def worst_images(analysis: Analysis, n: int) -> dict[str, list[tuple[str, float]]]:
    """Per model, its n lowest-IoU common images (ties by image id)."""
    worst = {}
    for j, model in analysis.columns():
        order = np.lexsort((analysis.image_ids, analysis.iou[:, j]))[:n]
        worst[model] = [(str(analysis.image_ids[i]), float(analysis.iou[i, j])) for i in order]
    return worst


def _codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a column's values and the sorted distinct values they index
    (a missing value gets code -1)."""
    categorical = column.astype("category").cat.remove_unused_categories()
    categorical = categorical.cat.reorder_categories(sorted(categorical.cat.categories, key=str))
    return categorical.cat.codes.to_numpy(np.int64), [str(c) for c in categorical.cat.categories]


def mean_of(values: np.ndarray) -> float | None:
    """The mean of the values that are not NaN; None when there are none."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None
