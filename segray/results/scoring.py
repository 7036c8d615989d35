"""The one scoring rule: which rows count, and each model's aggregate over them.

The console table, `summary.json`, the report and the re-evaluation trend all score
through `common_rows` and `model_summary`, so they give the same n and mean IoU.

The rule: a model *series* is a (model variant, model version). Every series is scored
on the same images: those where every series has a row and no series' row is an error
(an image one model could not score is left out for all, so differences are paired).
`mean_iou` counts a no-detection as IoU 0 (strict); `mean_iou_detected` leaves no-detections
out, as the article's notebook did (it scored them NaN and took nanmean).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segray.schema import ERROR, NO_DETECTION, OK

SERIES = ["model", "model_version"]
# The split that means every image: what a run scores when no model in it was trained on
# its dataset (every image is then unseen, and the 20 % "val" split would hide 80 % of them).
ALL_SPLITS = "all"


def in_split(rows: pd.DataFrame, split: str | None) -> np.ndarray:
    """A boolean per row: it belongs to `split` (every row for None or ALL_SPLITS)."""
    if split in (None, ALL_SPLITS):
        return np.ones(len(rows), bool)
    return np.asarray(rows["split"] == split)


def split_label(split: str | None) -> str:
    """How texts name a split: "the val split", or "every image"."""
    return "every image" if split in (None, ALL_SPLITS) else f"the {split} split"


def series_codes(rows: pd.DataFrame) -> np.ndarray:
    """An integer per row naming its series (a null model_version is a value of its own)."""
    return rows.groupby(SERIES, observed=True, dropna=False, sort=False).ngroup().to_numpy()


def common_rows(rows: pd.DataFrame, split: str | None = None) -> np.ndarray:
    """A boolean per row: it is scored (see the module docstring). With `split`, only
    rows of that split count, and the series are those with a row in it."""
    inside = in_split(rows, split)
    part = rows[inside]
    if part.empty:
        return inside
    image = part["image_id"].astype("category").cat.codes.to_numpy()
    series = series_codes(part)
    n_images, n_series = image.max() + 1, series.max() + 1
    present = np.zeros((n_images, n_series), bool)
    present[image, series] = True
    failed = np.zeros(n_images, bool)
    failed[image[np.asarray(part["status"] == ERROR)]] = True
    keep_image = present.all(axis=1) & ~failed
    scored = inside.copy()
    scored[inside] = keep_image[image]
    return scored


def model_summary(rows: pd.DataFrame, split: str = "val") -> dict[str, dict]:
    """Per model variant, on `split` (ALL_SPLITS: every row): its version (None unless it
    has exactly one) and the device its actors ran on, its rows, errors and no-detections
    there, and over the common images (`common_rows`) their count, mean IoU (strict and
    the article's) and mean latency."""
    inside = rows[in_split(rows, split)]
    scored = rows[common_rows(rows, split)]
    result = {}
    for model in sorted(inside["model"].astype(str).unique()):
        group = inside[np.asarray(inside["model"] == model)]
        mine = scored[np.asarray(scored["model"] == model)]
        detected = mine[np.asarray(mine["status"] == OK)]
        latency = group["latency_ms"].astype(float)
        versions = group["model_version"].dropna().astype(str).unique()
        devices = sorted(group["device"].dropna().astype(str).unique())
        result[model] = {
            "model_version": str(versions[0]) if len(versions) == 1 else None,
            "device": "; ".join(devices) or None,  # what its latencies were measured on
            "images": int(len(group)),
            "errors": int((group["status"] == ERROR).sum()),
            "no_detection": int((group["status"] == NO_DETECTION).sum()),
            "scored_images": int(len(mine)),
            "mean_iou": float(mine["iou"].mean()) if len(mine) else None,
            "mean_iou_detected": float(detected["iou"].mean()) if len(detected) else None,
            "mean_latency_ms": float(latency.mean()) if latency.notna().any() else None,
        }
    return result


def format_table(per_model: dict[str, dict], split: str = "val") -> str:
    """A plain-text table of `model_summary`'s result."""
    width = max([22, *map(len, per_model)])
    header = f"{'model':<{width}} {'images':>6} {'errors':>6} {'no det':>6} {'scored':>6} {'mean IoU':>9} {'IoU det.':>9}"
    lines = [f"Mean IoU on {split_label(split)} (same images for every model):", header, "-" * len(header)]
    for model, s in per_model.items():
        lines.append(
            f"{model:<{width}} {s['images']:>6} {s['errors']:>6} {s['no_detection']:>6} {s['scored_images']:>6} "
            f"{_fmt(s['mean_iou']):>9} {_fmt(s['mean_iou_detected']):>9}"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"
