"""The one scoring rule: which rows count, and each model's aggregate over them.

The console table, `summary.json`, the report and the re-evaluation trend all score
through `common_rows` and `model_summary`, so they give the same n and mean IoU.

The rule: a model *series* is a (model variant, model version). Every series is scored
on the same images: those where every series has a row and no series' row is an error
(an image one model could not score is left out for all, so differences are paired).
`mean_iou` counts a no-detection as IoU 0 (strict); `mean_iou_seeds` leaves no-detections
out, as the seeds' notebook did (it scored them NaN and took nanmean).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from segray.schema import ERROR, NO_DETECTION, OK

SERIES = ["model", "model_version"]


def series_codes(rows: pd.DataFrame) -> np.ndarray:
    """An integer per row naming its series (a null model_version is a value of its own)."""
    return rows.groupby(SERIES, observed=True, dropna=False, sort=False).ngroup().to_numpy()


def common_rows(rows: pd.DataFrame, split: str | None = None) -> np.ndarray:
    """A boolean per row: it is scored (see the module docstring). With `split`, only
    rows of that split count, and the series are those with a row in it."""
    inside = np.ones(len(rows), bool) if split is None else np.asarray(rows["split"] == split)
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
    """Per model variant, on `split`: its version (None unless it has exactly one), its
    rows, errors and no-detections there, and over the common images (`common_rows`)
    their count, mean IoU (strict and the seeds') and mean latency."""
    in_split = rows[np.asarray(rows["split"] == split)]
    scored = rows[common_rows(rows, split)]
    result = {}
    for model in sorted(in_split["model"].astype(str).unique()):
        group = in_split[np.asarray(in_split["model"] == model)]
        mine = scored[np.asarray(scored["model"] == model)]
        detected = mine[np.asarray(mine["status"] == OK)]
        latency = group["latency_ms"].astype(float)
        versions = group["model_version"].dropna().astype(str).unique()
        result[model] = {
            "model_version": str(versions[0]) if len(versions) == 1 else None,
            "images": int(len(group)),
            "errors": int((group["status"] == ERROR).sum()),
            "no_detection": int((group["status"] == NO_DETECTION).sum()),
            "scored_images": int(len(mine)),
            "mean_iou": float(mine["iou"].mean()) if len(mine) else None,
            "mean_iou_seeds": float(detected["iou"].mean()) if len(detected) else None,
            "mean_latency_ms": float(latency.mean()) if latency.notna().any() else None,
        }
    return result


def format_table(per_model: dict[str, dict], split: str = "val") -> str:
    """A plain-text table of `model_summary`'s result."""
    header = f"{'model':<22} {'images':>6} {'errors':>6} {'no det':>6} {'scored':>6} {'mean IoU':>9} {'seeds IoU':>9}"
    lines = [f"Mean IoU on the {split} split (same images for every model):", header, "-" * len(header)]
    for model, s in per_model.items():
        lines.append(
            f"{model:<22} {s['images']:>6} {s['errors']:>6} {s['no_detection']:>6} {s['scored_images']:>6} "
            f"{_fmt(s['mean_iou']):>9} {_fmt(s['mean_iou_seeds']):>9}"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"
