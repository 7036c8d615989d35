"""The comparison report: a pure function of a finished run's directory.

Inputs (all through `segray.storage`, so a run on s3:// works the same):
  predictions/    the Parquet rows (`segray.evaluate.ROW_SCHEMA`); `mask_png` is read only
                  for the rows shown in the worst-N galleries
  summary.json    config, dataset_root, training results (a run without it is incomplete)
  training.json   per trained model: history, train_time_s, best_epoch, checkpoint

Outputs, in RUN_URI/report/: report.md, a self-contained report.html (figures embedded as
base64 PNG), and the figures as PNG files.

Statistics, on one split (validation by default), every model on the same images (those
where no model's row is an error, and every model has a row):
  - strict mean IoU (a no-detection is scored against an empty prediction: IoU 0 on a
    non-empty ground truth), the seeds' mean IoU (no-detections left out), median and
    pooled IoU (sum of intersections / sum of unions), mean Dice, boundary IoU,
    precision and recall;
  - a 95% percentile bootstrap CI of the strict mean IoU (2000 resamples of the images,
    fixed seed); the same resamples serve every model, so pair differences are paired;
  - per pair of models: mean IoU difference with its bootstrap CI, win/tie/loss rates and
    the Wilcoxon signed-rank p-value (zero differences dropped; all zero -> p = 1);
  - latency p50/p95 per image, throughput and cost per 1,000 images at $/GPU-hour.

No Ray, and no torch: `import segray.report` stays light; matplotlib is imported (Agg)
only when figures are drawn.
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.metadata
import io
import json
import logging
import os
import platform
import posixpath
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from segray import storage

log = logging.getLogger(__name__)

CATEGORIES = ("HipHop", "Jazz", "Kata", "Sports", "Taichi")
ROW_COLUMNS = ["image_id", "split", "category", "model", "status", "latency_ms", "iou", "dice", "precision",
               "recall", "boundary_iou", "intersection", "union"]
PACKAGES = ["torch", "ray", "transformers", "segmentation_models_pytorch", "numpy", "pyarrow", "scipy", "matplotlib"]
CHECKPOINT_WEIGHTS = "model.safetensors"
# The seeds' show_masks: a magenta fill at alpha 0.6 with a white contour.
MASK_RGB = (1.0, 0.0, 1.0)
MASK_ALPHA = 0.6


class IncompleteRun(FileNotFoundError):
    """The run directory has no summary.json: the run did not finish."""


# ----------------------------------------------------------------------------- reading


def read_prediction_rows(predictions_uri: str) -> pd.DataFrame:
    """Every prediction row but the mask bytes, with `_file`/`_row` (its Parquet file and
    row in that file) so that `read_masks` can fetch a few masks later. Columns a run
    from before a metric existed lacks come back as NaN."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    fs, path = storage.resolve(predictions_uri)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    present = [c for c in ROW_COLUMNS if c in dataset.schema.names]
    fragments = list(dataset.get_fragments())
    tables = []
    for number, fragment in enumerate(fragments):
        table = fragment.to_table(columns=present, schema=dataset.schema)
        table = table.append_column("_file", pa.array(np.full(len(table), number, np.int32)))
        tables.append(table.append_column("_row", pa.array(np.arange(len(table), dtype=np.int64))))
    if not tables:
        return pd.DataFrame(columns=[*ROW_COLUMNS, "_file", "_row"])
    # one conversion for all files: categoricals share one dictionary (~3x faster than per file)
    rows = pa.concat_tables(tables).to_pandas(strings_to_categorical=True)
    for column in ROW_COLUMNS:
        if column not in rows:
            rows[column] = np.nan
    for column in ("image_id", "split", "category", "model", "status"):
        if rows[column].dtype != "category":
            rows[column] = rows[column].astype("category")
    # strings only: pandas deep-copies attrs into every derived frame
    rows.attrs["files"] = [storage.join(predictions_uri, posixpath.relpath(f.path, path)) for f in fragments]
    return rows


def read_masks(rows: pd.DataFrame, wanted: pd.DataFrame) -> list[np.ndarray | None]:
    """The predicted masks (bool) of the `wanted` rows (a subset of `rows`, with `_file`
    and `_row`), reading only the row groups that hold them. None for a row without a
    mask (a no-detection)."""
    import pyarrow.parquet as pq

    from segray.data.decode import decode_mask

    files = rows.attrs.get("files", [])
    out: list[np.ndarray | None] = [None] * len(wanted)
    for file_number, group in wanted.reset_index(drop=True).groupby("_file"):
        fs, path = storage.resolve(files[int(file_number)])
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
            cache: dict[int, Any] = {}
            for position, row in zip(group.index, group["_row"]):
                g = int(np.searchsorted(starts, row, side="right") - 1)
                if g not in cache:
                    cache[g] = parquet.read_row_group(g, columns=["mask_png"]).column("mask_png")
                png = cache[g][int(row - starts[g])].as_py()
                out[position] = decode_mask(png) if png else None
    return out


def read_json(uri: str) -> dict[str, Any] | None:
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


# ----------------------------------------------------------------------------- statistics


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
    settings: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # model -> why it did not run


def analyze(
    rows: pd.DataFrame,
    split: str = "val",
    training: dict[str, Any] | None = None,
    gpu_hour_usd: float = 2.0,
    resamples: int = 2000,
    seed: int = 0,
) -> Analysis:
    """The report's numbers from the prediction rows (a pure function)."""
    from segray.metrics import pooled_iou

    rows = rows[np.asarray(rows["split"] == split)]
    model_code, models = _codes(rows["model"])
    image_codes, image_ids = _codes(rows["image_id"])
    n_images, n_models = len(image_ids), len(models)
    status = np.full(len(rows), "ok", object)
    for value in ("error", "no_detection"):
        status[np.asarray(rows["status"] == value)] = value
    # A common image: every model has a row for it, and none of them is an error.
    present = np.zeros((n_images, n_models), bool)
    present[image_codes, model_code] = True
    failed = np.zeros(n_images, bool)
    failed[image_codes[status == "error"]] = True
    common = present.all(axis=1) & ~failed
    keep = common[image_codes] & (status != "error")
    position = np.cumsum(common) - 1  # image code -> row of the matrices

    def matrix(column: str) -> np.ndarray:
        m = np.full((int(common.sum()), n_models), np.nan)
        m[position[image_codes[keep]], model_code[keep]] = np.asarray(rows[column], np.float64)[keep]
        return m

    iou_m = matrix("iou")
    detected = np.zeros_like(iou_m, bool)
    detected[position[image_codes[keep]], model_code[keep]] = status[keep] == "ok"
    other = {c: matrix(c) for c in ("dice", "boundary_iou", "precision", "recall", "intersection", "union")}
    categories = np.full(len(iou_m), "", object)
    category_code, category_names = _codes(rows["category"])
    categories[position[image_codes[keep]]] = np.asarray([*category_names, ""], object)[category_code[keep]]

    boot = bootstrap_means(iou_m, resamples, seed)
    per_model = {}
    for j, model in enumerate(models):
        mine = model_code == j
        values = iou_m[:, j]
        per_model[model] = {
            "rows": int(mine.sum()),
            "errors": int((status[mine] == "error").sum()),
            "no_detection": int((status[mine] == "no_detection").sum()),
            "scored_images": int(len(values)),
            "no_detection_scored": int((~detected[:, j]).sum()),
            "mean_iou": _mean(values),
            "mean_iou_ci": percentile_ci(boot[:, j]) if len(values) else (None, None),
            "mean_iou_seeds": _mean(values[detected[:, j]]),
            "median_iou": float(np.median(values)) if len(values) else None,
            "pooled_iou": pooled_iou(other["intersection"][:, j], other["union"][:, j]) if len(values) else None,
            "mean_dice": _mean(other["dice"][:, j]),
            "mean_boundary_iou": _mean(other["boundary_iou"][:, j]),
            "mean_precision": _mean(other["precision"][:, j]),
            "mean_recall": _mean(other["recall"][:, j]),
        }

    pairs = []
    for a in range(n_models):
        for b in range(a + 1, n_models):
            diff = iou_m[:, a] - iou_m[:, b]
            pairs.append(
                {
                    "a": models[a],
                    "b": models[b],
                    "images": int(len(diff)),
                    "mean_diff": _mean(diff),
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
            model: _mean(iou_m[inside, j]) for j, model in enumerate(models)
        }

    latency_ms = np.asarray(rows["latency_ms"], np.float64)
    latency = {}
    for j, model in enumerate(models):
        values = latency_ms[(model_code == j) & keep]
        values = values[~np.isnan(values)]
        mean = float(values.mean()) if len(values) else None
        latency[model] = {
            "images": int(len(values)),
            "p50_ms": float(np.percentile(values, 50)) if len(values) else None,
            "p95_ms": float(np.percentile(values, 95)) if len(values) else None,
            "mean_ms": mean,
            "images_per_s": 1000.0 / mean if mean else None,
            "usd_per_1000": mean * gpu_hour_usd / 3600.0 if mean is not None else None,
        }

    return Analysis(
        split=split,
        models=models,
        image_ids=np.asarray(image_ids)[common],
        categories=categories,
        iou=iou_m,
        per_model=per_model,
        pairs=pairs,
        per_category=per_category,
        latency=latency,
        training=training_table(training or {}),
        excluded_images=int((~common).sum()),
        settings={"gpu_hour_usd": gpu_hour_usd, "resamples": resamples, "seed": seed},
    )


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
            "checkpoint": result.get("checkpoint"),
            "history": history,
        }
    return table


def worst_images(analysis: Analysis, n: int) -> dict[str, list[tuple[str, float]]]:
    """Per model, its n lowest-IoU common images (ties by image id)."""
    worst = {}
    for j, model in enumerate(analysis.models):
        order = np.lexsort((analysis.image_ids, analysis.iou[:, j]))[:n]
        worst[model] = [(str(analysis.image_ids[i]), float(analysis.iou[i, j])) for i in order]
    return worst


def _codes(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a column's values and the sorted distinct values they index
    (a missing value gets code -1)."""
    categorical = column.astype("category").cat.remove_unused_categories()
    categorical = categorical.cat.reorder_categories(sorted(categorical.cat.categories, key=str))
    return categorical.cat.codes.to_numpy(np.int64), [str(c) for c in categorical.cat.categories]


def _mean(values: np.ndarray) -> float | None:
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None


# ----------------------------------------------------------------------------- reproducibility


def reproducibility(summary: dict[str, Any], training: dict[str, Any], image_ids: np.ndarray) -> dict[str, Any]:
    """What is needed to reproduce or compare this run."""
    return {
        "run_id": summary.get("run_id"),
        "run_finished_at": summary.get("finished_at"),
        "run_wall_time_s": summary.get("wall_time_s"),
        "report_generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": summary.get("dataset"),
        "dataset_root": summary.get("dataset_root"),
        "dataset_fingerprint": dataset_fingerprint(image_ids),
        "dataset_images": int(len(image_ids)),
        "git_sha": git_sha(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "checkpoints": checkpoint_hashes(training),
        "report_hardware": hardware(),  # the machine that wrote this report; the run records none
        "config": summary.get("config"),
    }


def dataset_fingerprint(image_ids) -> str:
    """sha256 of the sorted, distinct image ids, one per line."""
    ids = sorted({str(i) for i in image_ids})
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def package_versions(names: list[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions, read from package metadata (nothing is imported)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha() -> str | None:
    """The source tree's commit, with "-dirty" when it has local changes; None outside git."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def checkpoint_hashes(training: dict[str, Any]) -> dict[str, str | None]:
    """sha256 of each trained checkpoint's weights file (None when it cannot be read)."""
    hashes = {}
    for model, result in sorted(training.items()):
        checkpoint = result.get("checkpoint") if isinstance(result, dict) else None
        if not checkpoint:
            continue
        try:
            fs, path = storage.resolve(storage.join(checkpoint, CHECKPOINT_WEIGHTS))
            digest = hashlib.sha256()
            with fs.open_input_stream(path) as f:
                while block := f.read(1 << 22):
                    digest.update(block)
            hashes[model] = digest.hexdigest()
        except OSError:
            hashes[model] = None
    return hashes


def hardware() -> dict[str, Any]:
    """The machine writing the report (not necessarily the one that ran the benchmark)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpus = []
    torch = sys.modules.get("torch")  # only if something else already paid for the import
    if torch is not None and torch.cuda.is_available():
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        root = "/proc/driver/nvidia/gpus"
        for bus in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            try:
                with open(os.path.join(root, bus, "information")) as f:
                    gpus += [line.split(":", 1)[1].strip() for line in f if line.startswith("Model:")]
            except OSError:
                pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "platform": platform.platform()}


# ----------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, tight: bool = True) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight" if tight else None)
    _pyplot().close(fig)
    return buffer.getvalue()


def figure_histograms(analysis: Analysis) -> bytes:
    """IoU histogram per model, 25 bins over [0, 1], like the seeds' notebook."""
    plt = _pyplot()
    k = max(1, len(analysis.models))
    cols = min(k, 3)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharey=True)
    bins = np.linspace(0, 1, 26)
    for ax in axes.flat[k:]:
        ax.axis("off")
    for ax, (j, model) in zip(axes.flat, enumerate(analysis.models)):
        counts, _ = np.histogram(analysis.iou[:, j], bins=bins)
        ax.stairs(counts, bins, fill=True, color="tab:blue")  # one patch, not 25: fast for many models
        mean = analysis.per_model[model]["mean_iou"]
        if mean is not None:
            ax.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
            ax.legend(loc="upper left", fontsize=8)
        ax.set_title(model, fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_xlabel("IoU per image")
        if j % cols == 0:
            ax.set_ylabel("images")
    fig.suptitle(f"Distribution of per-image IoU ({analysis.split} split, {len(analysis.iou)} images per model)",
                 y=1 - 0.2 / (3.0 * rows))
    # fixed margins: tight_layout would draw the whole grid once more (slow with many models)
    height = 3.0 * rows
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.5 / height, top=1 - 0.75 / height, hspace=0.55, wspace=0.15)
    return _png(fig, tight=False)


def figure_ecdf(analysis: Analysis) -> bytes:
    """Overlaid ECDFs of per-image IoU: a curve further right and lower is better."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    levels = np.linspace(0, 1, 1001)
    for j, model in enumerate(analysis.models):
        values = np.sort(analysis.iou[:, j])
        if len(values):
            x = np.quantile(values, levels) if len(values) > len(levels) else values
            y = levels if len(values) > len(levels) else np.arange(1, len(values) + 1) / len(values)
            ax.step(x, y, where="post", label=model, color=_color(j), linestyle=_style(j))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("IoU per image")
    ax.set_ylabel("share of images with IoU ≤ x")
    ax.set_title(f"Cumulative distribution of IoU ({analysis.split} split): lower-right is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def figure_categories(analysis: Analysis) -> bytes:
    """Mean IoU per category and model, as grouped bars."""
    plt = _pyplot()
    categories = list(analysis.per_category)
    k = max(1, len(analysis.models))
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(categories) * max(1, k / 3)), 4.5))
    width = 0.8 / k
    x = np.arange(len(categories))
    for j, model in enumerate(analysis.models):
        heights = [analysis.per_category[c][model] or 0.0 for c in categories]
        ax.bar(x + (j - (k - 1) / 2) * width, heights, width, label=model, color=_color(j))
    ax.set_xticks(x, [f"{c}\n({analysis.per_category[c]['images']} images)" for c in categories])
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean IoU")
    ax.set_title(f"Mean IoU per category ({analysis.split} split)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(k, 3), loc="upper center", bbox_to_anchor=(0.5, -0.15))
    return _png(fig)


def figure_training(analysis: Analysis) -> bytes | None:
    """Training loss and validation IoU per epoch of each trained model; the best epoch marked."""
    trained = {m: t for m, t in analysis.training.items() if t["history"]}
    if not trained:
        return None
    plt = _pyplot()
    fig, (loss_ax, iou_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for j, (model, t) in enumerate(trained.items()):
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(t["history"])]
        label = model + (f" ({t['train_time_s'] / 60:.1f} min)" if t.get("train_time_s") else "")
        style = {"marker": "o", "ms": 3, "label": label, "color": _color(j)}
        loss_ax.plot(epochs, [h.get("train_loss") for h in t["history"]], **style)
        iou_ax.plot(epochs, [h.get("val_iou") for h in t["history"]], **style)
        if t.get("best_epoch") is not None:
            best = next((h for h in t["history"] if h.get("epoch") == t["best_epoch"]), None)
            if best is not None:
                iou_ax.plot([best["epoch"]], [best.get("val_iou")], marker="*", ms=14, color=_color(j),
                            markeredgecolor="black")
    loss_ax.set_title("training loss per epoch")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("train loss")
    iou_ax.set_title("validation IoU per epoch (★ = checkpoint used)")
    iou_ax.set_xlabel("epoch")
    iou_ax.set_ylabel("validation IoU")
    from matplotlib.ticker import MaxNLocator

    for ax in (loss_ax, iou_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def overlay(image: np.ndarray, mask: np.ndarray | None):
    """The seeds' show_masks style: magenta fill (alpha 0.6) over the image."""
    out = image.astype(np.float32) / 255.0
    if mask is not None and mask.any():
        out[mask] = (1 - MASK_ALPHA) * out[mask] + MASK_ALPHA * np.asarray(MASK_RGB, np.float32)
    return out


def figure_gallery(model: str, items: list[dict[str, Any]]) -> bytes:
    """One column per image (worst first): the image, the ground truth, the prediction,
    composed with numpy/OpenCV (no matplotlib: ~50x faster, which matters with many models)."""
    import cv2

    n = max(1, len(items))
    tile_h = max((item["image"].shape[0] for item in items), default=64)
    tile_w = max((item["image"].shape[1] for item in items), default=64)
    gap, label_h, head_h = 8, 22, 34
    grid = np.full((head_h + 3 * (tile_h + label_h), n * (tile_w + gap) + gap, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def text(string: str, x_center: float, y: int, scale: float = 0.42, thickness: int = 1) -> None:
        (w, _), _ = cv2.getTextSize(string, font, scale, thickness)
        cv2.putText(grid, string, (int(x_center - w / 2), y), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)

    text(f"{model}: the {len(items)} lowest-IoU images (magenta fill, white contour = mask)", grid.shape[1] / 2, 24,
         0.6, 1)
    for c, item in enumerate(items):
        image, x = item["image"], gap + c * (tile_w + gap)
        label = "no detection" if item["status"] == "no_detection" else "prediction"
        fits = tile_w // 7  # characters that fit over a tile
        name = item["image_id"] if len(item["image_id"]) <= fits else "..." + item["image_id"][-(fits - 3):]
        for r, (mask, caption) in enumerate(((None, name), (item["truth"], "ground truth"),
                                             (item["pred"], f"{label}: IoU {item['iou']:.3f}"))):
            tile = (overlay(image, mask) * 255).round().astype(np.uint8)
            if mask is not None and mask.any():
                contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(tile, contours, -1, (255, 255, 255), 1)
            y = head_h + r * (tile_h + label_h) + label_h
            grid[y : y + image.shape[0], x : x + image.shape[1]] = tile
            text(caption, x + image.shape[1] / 2, y - 6)
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("cannot encode the gallery as PNG")
    return png.tobytes()


def _wrap(text: str, width: int = 28) -> str:
    return "\n".join(text[i : i + width] for i in range(0, len(text), width))


def _color(j: int) -> str:
    return f"C{j % 10}"


def _style(j: int) -> str:
    return ["-", "--", ":", "-."][(j // 10) % 4]


def gallery_items(rows: pd.DataFrame, analysis: Analysis, dataset_root: str | None, n: int,
                  max_side: int = 256) -> dict[str, list[dict[str, Any]]]:
    """The worst-n images of each model with image, ground truth and predicted masks,
    resized so that their longer side is `max_side`."""
    import cv2

    from segray.data.decode import decode_image, decode_mask

    if not dataset_root or n <= 0:
        return {}
    worst = worst_images(analysis, n)
    wanted_pairs = {(m, i) for m, items in worst.items() for i, _ in items}
    wanted_images = sorted({i for _, i in wanted_pairs})
    near = rows[np.asarray((rows["split"] == analysis.split) & rows["image_id"].isin(wanted_images))
                & np.asarray(rows["status"] != "error")]
    keys = zip(near["model"].astype(str), near["image_id"].astype(str))
    selected = near[[k in wanted_pairs for k in keys]]
    masks = read_masks(rows, selected)
    by_key = {(str(m), str(i)): (mask, str(s)) for m, i, s, mask in
              zip(selected["model"], selected["image_id"], selected["status"], masks)}
    mask_names = _mask_names(dataset_root)
    cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    out: dict[str, list[dict[str, Any]]] = {}
    for model, items in worst.items():
        out[model] = []
        for image_id, value in items:
            if image_id not in cache:
                try:
                    image = decode_image(storage.read_bytes(storage.join(dataset_root, "images", image_id)))
                except (OSError, ValueError) as error:
                    log.warning("gallery: skipping %s: %s", image_id, error)
                    continue
                truth = None
                name = mask_names.get(image_id) or mask_names.get(os.path.splitext(image_id)[0])
                try:
                    if name:
                        truth = decode_mask(storage.read_bytes(storage.join(dataset_root, "masks", name)))
                except (OSError, ValueError) as error:
                    log.warning("gallery: no ground truth for %s: %s", image_id, error)
                cache[image_id] = (image, truth)
            image, truth = cache[image_id]
            pred, status = by_key.get((model, image_id), (None, "no_detection"))
            scale = max_side / max(image.shape[:2])  # every tile the same readable size
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
            truth, pred = (_resize(m, size) for m in (truth, pred))
            out[model].append({"image_id": image_id, "iou": value, "image": image, "truth": truth,
                               "pred": pred, "status": status})
    return out


def _resize(mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    import cv2

    if mask is None or (mask.shape[1], mask.shape[0]) == size:
        return mask
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)


def _mask_names(dataset_root: str) -> dict[str, str]:
    """Mask file names by full name and by stem (a mask may have another extension)."""
    try:
        names = storage.list_files(storage.join(dataset_root, "masks"))
    except OSError:
        return {}
    table = {}
    for name in names:
        table.setdefault(os.path.splitext(name)[0], name)
        table[name] = name
    return table


# ----------------------------------------------------------------------------- rendering


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "< 1e-300" if value == 0 else (f"{value:.2e}" if value < 1e-3 else f"{value:.3f}")


def _ci(ci: tuple[float | None, float | None]) -> str:
    return "–" if ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def tables(analysis: Analysis) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The report's tables as (header, rows) of strings."""
    s = analysis.settings
    out = {}
    out["models"] = (
        ["model", "rows", "errors", "no detection", "scored images", "mean IoU (strict)", "95% CI",
         "mean IoU (seeds)", "median IoU", "pooled IoU", "Dice", "boundary IoU", "precision", "recall"],
        [[m, _f(p["rows"]), _f(p["errors"]), _f(p["no_detection"]), _f(p["scored_images"]), _f(p["mean_iou"]),
          _ci(p["mean_iou_ci"]), _f(p["mean_iou_seeds"]), _f(p["median_iou"]), _f(p["pooled_iou"]),
          _f(p["mean_dice"]), _f(p["mean_boundary_iou"]), _f(p["mean_precision"]), _f(p["mean_recall"])]
         for m, p in sorted(analysis.per_model.items(), key=lambda kv: -(kv[1]["mean_iou"] or -1))],
    )
    cats = list(analysis.per_category)
    out["categories"] = (
        ["model", *[f"{c} ({analysis.per_category[c]['images']})" for c in cats]],
        [[m, *[_f(analysis.per_category[c][m]) for c in cats]] for m in analysis.models],
    )
    out["pairs"] = (
        ["A", "B", "images", "mean IoU A − B", "95% CI", "A wins", "ties", "B wins", "Wilcoxon p"],
        [[p["a"], p["b"], _f(p["images"]), _f(p["mean_diff"], 4), _ci(p["ci"]), _pct(p["win_rate"]),
          _pct(p["tie_rate"]), _pct(p["loss_rate"]), _p(p["wilcoxon_p"])] for p in analysis.pairs],
    )
    out["cost"] = (
        ["model", "images timed", "latency p50 (ms)", "latency p95 (ms)", "images/s per GPU",
         f"$ per 1,000 images at ${s['gpu_hour_usd']:g}/GPU-hour"],
        [[m, _f(v["images"]), _f(v["p50_ms"], 1), _f(v["p95_ms"], 1), _f(v["images_per_s"], 1),
          _f(v["usd_per_1000"], 4)] for m, v in analysis.latency.items()],
    )
    out["training"] = (
        ["model", "epochs", "best epoch", "best val IoU", "time to train", "checkpoint / error"],
        [[m, _f(t["epochs"]), _f(t["best_epoch"]), _f(t["best_val_iou"]),
          (f"{t['train_time_s'] / 60:.1f} min" if t.get("train_time_s") is not None else "–"),
          t["error"] or t["checkpoint"] or "–"] for m, t in analysis.training.items()],
    )
    return out


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


NOTES = {
    "models": (
        "Every model is scored on the same {n} images of the {split} split: those where no model's row "
        "is an error ({excluded} left out). *Strict* mean IoU scores a no-detection against an empty "
        "prediction (IoU 0); the *seeds'* mean leaves no-detections out, as the seeds' notebook did. "
        "*Pooled* IoU is the sum of intersections over the sum of unions (large masks weigh more). "
        "The 95% CI is a percentile bootstrap of the strict mean ({resamples} resamples of the images, seed {seed}). "
        "Boundary IoU (Cheng et al. 2021) compares only bands of width 2% of the image diagonal along the mask "
        "edges. A metric whose denominator is empty counts as 1 (e.g. precision when nothing is predicted)."
    ),
    "pairs": (
        "Paired comparisons on the same images: A − B is the mean per-image IoU difference (positive: A better), "
        "its CI a paired bootstrap; *A wins* is the share of images where A's IoU is higher. The Wilcoxon "
        "signed-rank test drops ties; p = 1 when the two models agree on every image."
    ),
    "cost": (
        "Latency is the model call's wall time per image (batch time / batch size) on one accelerator, "
        "decode and scoring excluded. Throughput = 1000 / mean latency (ms); cost per 1,000 images = "
        "1,000 × mean latency (s) × $/GPU-hour / 3600. LangSAM variants share one inference, so they share "
        "its latency."
    ),
}


# The report's sections, in order: heading, table key, figures shown under the table.
SECTIONS = [
    ("Accuracy per model", "models", ["histograms", "ecdf"]),
    ("Per category (mean strict IoU)", "categories", ["categories"]),
    ("Pairwise comparisons", "pairs", []),
    ("Speed and cost", "cost", []),
    ("Training", "training", ["training"]),
]


def render_markdown(analysis: Analysis, repro: dict[str, Any], figures: dict[str, str], title: str) -> str:
    t = tables(analysis)
    notes = _notes(analysis)
    lines = [f"# {title}", "", _headline(analysis), ""]
    for heading, key, figs in SECTIONS:
        lines += [f"## {heading}", ""]
        if key in notes:
            lines += [notes[key], ""]
        lines += _md_table(*t[key]) + [""]
        for name in figs:
            if name in figures:
                lines += [f"![{name}]({figures[name]})", ""]
    galleries = [n for n in figures if n.startswith("worst_")]
    if galleries:
        lines += ["## Worst images per model", ""]
        lines += [f"![{n}]({figures[n]})" for n in galleries] + [""]
    lines += ["## Reproducibility", "", "```json", json.dumps(repro, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def _notes(analysis: Analysis) -> dict[str, str]:
    s = analysis.settings
    return {k: v.format(n=len(analysis.iou), split=analysis.split, excluded=analysis.excluded_images,
                        resamples=s["resamples"], seed=s["seed"]) for k, v in NOTES.items()}


def _headline(analysis: Analysis) -> str:
    # A model that could not run is named first: it is never silently absent.
    missing = "".join(
        f"**{model} was not evaluated**: {reason.strip().splitlines()[0]} "
        for model, reason in analysis.unavailable.items()
    )
    return missing + _ranking(analysis)


def _ranking(analysis: Analysis) -> str:
    ranked = sorted(analysis.per_model.items(), key=lambda kv: -(kv[1]["mean_iou"] or -1))
    if not ranked or ranked[0][1]["mean_iou"] is None:
        return f"No model was scored on the {analysis.split} split."
    best, stats = ranked[0]
    text = (f"On the {analysis.split} split ({len(analysis.iou)} images), the best mean IoU is **{best}**: "
            f"{stats['mean_iou']:.3f} (95% CI {_ci(stats['mean_iou_ci'])}).")
    if len(ranked) > 1:
        second = ranked[1][0]
        pair = next(p for p in analysis.pairs if {p["a"], p["b"]} == {best, second})
        sign = 1 if pair["a"] == best else -1
        low, high = (sign * pair["ci"][0], sign * pair["ci"][1]) if sign == 1 else (-pair["ci"][1], -pair["ci"][0])
        verdict = "a difference the bootstrap CI separates from zero" if low > 0 else "not separable from zero"
        text += (f" Next is {second}: {best} is ahead by {sign * pair['mean_diff']:.3f} IoU "
                 f"(95% CI [{low:.3f}, {high:.3f}], {verdict}).")
    return text


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    return ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(esc, r)) + " |" for r in rows
    ]


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2) { text-align: left; }
img { max-width: 100%; display: block; margin: 1em 0; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; max-width: 60em; }
"""


def render_html(analysis: Analysis, repro: dict[str, Any], pngs: dict[str, bytes], title: str) -> str:
    t = tables(analysis)
    notes = _notes(analysis)
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             f"<style>{HTML_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p>{_bold_html(_headline(analysis))}</p>"]
    for heading, key, figs in SECTIONS:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if key in notes:
            parts.append(f"<p class='note'>{_bold_html(notes[key])}</p>")
        parts.append(_html_table(*t[key]))
        parts += [_html_img(name, pngs[name]) for name in figs if name in pngs]
    galleries = [n for n in pngs if n.startswith("worst_")]
    if galleries:
        parts.append("<h2>Worst images per model</h2>")
        parts += [_html_img(n, pngs[n]) for n in galleries]
    parts += ["<h2>Reproducibility</h2>", f"<pre>{html.escape(json.dumps(repro, indent=2, default=str))}</pre>",
              "</body></html>"]
    return "\n".join(parts)


def _bold_html(text: str) -> str:
    """The markdown emphasis the notes use, as HTML: **bold** and *italic*."""
    pieces = html.escape(text).split("**")
    text = "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(pieces))
    pieces = text.split("*")
    return "".join(f"<i>{p}</i>" if i % 2 else p for i, p in enumerate(pieces))


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_img(name: str, png: bytes) -> str:
    return f"<img alt='{html.escape(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


# ----------------------------------------------------------------------------- entry point


def figure_name(model: str) -> str:
    """A file-name-safe form of a model variant (`langsam/sam_score` -> `langsam-sam_score`)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in model)


def write_report(
    run_uri: str,
    split: str = "val",
    gpu_hour_usd: float = 2.0,
    worst_n: int = 6,
    resamples: int = 2000,
    seed: int = 0,
    timings: dict[str, float] | None = None,
) -> dict[str, str]:
    """Write RUN_URI/report/ (report.md, report.html, figures) from the run directory alone;
    return {name: URI} of the files written. Raises IncompleteRun without summary.json.
    `timings`, if given, receives seconds per stage."""
    clock = time.perf_counter()
    timings = timings if timings is not None else {}

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    summary = read_json(storage.join(run_uri, "summary.json"))
    if summary is None:
        raise IncompleteRun(f"incomplete run: {storage.join(run_uri, 'summary.json')} does not exist")
    training = read_json(storage.join(run_uri, "training.json")) or summary.get("training") or {}
    predictions = storage.join(run_uri, "predictions")
    rows = read_prediction_rows(predictions) if storage.exists(predictions) else pd.DataFrame(
        columns=[*ROW_COLUMNS, "_file", "_row"])
    lap("read")
    analysis = analyze(rows, split, training, gpu_hour_usd, resamples, seed)
    analysis.unavailable = summary.get("unavailable") or {}
    lap("statistics")
    ids = rows["image_id"]
    repro = reproducibility(summary, training, ids.cat.categories if ids.dtype == "category" else ids.unique())
    lap("reproducibility")

    pngs: dict[str, bytes] = {}
    if analysis.models:
        pngs["histograms"] = figure_histograms(analysis)
        pngs["ecdf"] = figure_ecdf(analysis)
        if analysis.per_category:
            pngs["categories"] = figure_categories(analysis)
    curves = figure_training(analysis)
    if curves is not None:
        pngs["training"] = curves
    lap("figures")
    for model, items in gallery_items(rows, analysis, summary.get("dataset_root"), worst_n).items():
        if items:
            pngs[f"worst_{figure_name(model)}"] = figure_gallery(model, items)
    lap("galleries")

    out = storage.join(run_uri, "report")
    written = {}
    for name, png in pngs.items():
        uri = storage.join(out, f"{name}.png")
        storage.write_bytes(uri, png)
        written[name] = uri
    title = f"segray report: run {summary.get('run_id', posixpath.basename(run_uri.rstrip('/')))}"
    markdown = render_markdown(analysis, repro, {name: f"{name}.png" for name in pngs}, title)
    storage.write_bytes(storage.join(out, "report.md"), markdown.encode())
    written["report.md"] = storage.join(out, "report.md")
    page = render_html(analysis, repro, pngs, title)
    storage.write_bytes(storage.join(out, "report.html"), page.encode())
    written["report.html"] = storage.join(out, "report.html")
    lap("write")
    return written
