"""The report's figures as PNG bytes: matplotlib (Agg, imported only when a figure is
drawn) for the plots, numpy/OpenCV for the worst-image galleries."""

from __future__ import annotations

import io
import logging
import os
from typing import Any

import numpy as np
import pandas as pd

from segray import storage
from segray.config import DEFAULT_MAX_PIXELS
from segray.report.analysis import Analysis, worst_images
from segray.report.formats import fmt_minutes
from segray.results.read import read_masks
from segray.results.scoring import in_split, split_label

log = logging.getLogger(__name__)

# The article's show_masks: a magenta fill at alpha 0.6 with a white contour.
MASK_RGB = (1.0, 0.0, 1.0)
MASK_ALPHA = 0.6


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    # Labels are data (categories, prompts, image names): plain text, never math text ($x$).
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def png(fig, tight: bool = True) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight" if tight else None)
    pyplot().close(fig)
    return buffer.getvalue()


def figure_histograms(analysis: Analysis) -> bytes:
    """IoU histogram per model, 25 bins over [0, 1], like the article's notebook."""
    plt = pyplot()
    k = max(1, len(analysis.shown))
    cols = min(k, 3)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False, sharey=True)
    bins = np.linspace(0, 1, 26)
    for ax in axes.flat[k:]:
        ax.axis("off")
    for index, (ax, (j, model)) in enumerate(zip(axes.flat, analysis.columns())):
        counts, _ = np.histogram(analysis.iou[:, j], bins=bins)
        ax.stairs(counts, bins, fill=True, color="tab:blue")  # one patch, not 25: fast for many models
        mean = analysis.per_model[model]["mean_iou"]
        if mean is not None:
            ax.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
            ax.legend(loc="upper left", fontsize=8)
        ax.set_title(model, fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_xlabel("IoU per image")
        if index % cols == 0:
            ax.set_ylabel("images")
    fig.suptitle(f"Distribution of per-image IoU ({split_label(analysis.split)}, {len(analysis.iou)} images per model)",
                 y=1 - 0.2 / (3.0 * rows))
    # fixed margins: tight_layout would draw the whole grid once more (slow with many models)
    height = 3.0 * rows
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.5 / height, top=1 - 0.75 / height, hspace=0.55, wspace=0.15)
    return png(fig, tight=False)


def figure_ecdf(analysis: Analysis) -> bytes:
    """Overlaid ECDFs of per-image IoU: a curve further right and lower is better."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    levels = np.linspace(0, 1, 1001)
    for color, (j, model) in enumerate(analysis.columns()):
        values = np.sort(analysis.iou[:, j])
        if len(values):
            x = np.quantile(values, levels) if len(values) > len(levels) else values
            y = levels if len(values) > len(levels) else np.arange(1, len(values) + 1) / len(values)
            ax.step(x, y, where="post", label=model, color=series_color(color), linestyle=series_style(color))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("IoU per image")
    ax.set_ylabel("share of images with IoU ≤ x")
    ax.set_title(f"Cumulative distribution of IoU ({split_label(analysis.split)}): lower-right is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return png(fig)


def figure_categories(analysis: Analysis) -> bytes:
    """Mean IoU per category and model, as grouped bars."""
    plt = pyplot()
    categories = list(analysis.per_category)
    k = max(1, len(analysis.shown))
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(categories) * max(1, k / 3)), 4.5))
    width = 0.8 / k
    x = np.arange(len(categories))
    for j, model in enumerate(analysis.shown):
        heights = [analysis.per_category[c][model] or 0.0 for c in categories]
        ax.bar(x + (j - (k - 1) / 2) * width, heights, width, label=model, color=series_color(j))
    ax.set_xticks(x, [f"{c}\n({analysis.per_category[c]['images']} images)" for c in categories])
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean IoU")
    ax.set_title(f"Mean IoU per category ({split_label(analysis.split)})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(k, 3), loc="upper center", bbox_to_anchor=(0.5, -0.15))
    return png(fig)


def figure_training(analysis: Analysis) -> bytes | None:
    """Training loss and validation IoU per epoch of each trained model; the best epoch marked."""
    trained = {m: t for m, t in analysis.training.items() if t["history"]}
    if not trained:
        return None
    plt = pyplot()
    fig, (loss_ax, iou_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for j, (model, t) in enumerate(trained.items()):
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(t["history"])]
        label = model + (f" ({fmt_minutes(t['train_time_s'])})" if t.get("train_time_s") else "")
        style = {"marker": "o", "ms": 3, "label": label, "color": series_color(j)}
        loss_ax.plot(epochs, [h.get("train_loss") for h in t["history"]], **style)
        iou_ax.plot(epochs, [h.get("val_iou") for h in t["history"]], **style)
        if t.get("best_epoch") is not None:
            best = next((h for h in t["history"] if h.get("epoch") == t["best_epoch"]), None)
            if best is not None:
                iou_ax.plot([best["epoch"]], [best.get("val_iou")], marker="*", ms=14, color=series_color(j),
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
    return png(fig)


def figure_timeline(analysis: Analysis) -> bytes | None:
    """The run's stages as bars from their first start to their last end, trainings,
    model pools and the data stages each in their own colour: what overlapped what."""
    stages = analysis.timeline
    if not stages:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(stages) + 1.2))
    kinds = ["train", "wait", "model"]
    names = list(stages)
    for y, name in enumerate(names):
        entry = stages[name]
        kind = name.split(":", 1)[0]
        color = series_color(kinds.index(kind)) if kind in kinds else series_color(len(kinds))
        ax.barh(y, max(entry["end"] - entry["start"], 0.1), left=entry["start"], color=color, alpha=0.8)
        ax.text(entry["end"], y, f" {entry['rows_in']} in", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(left=0)
    ax.set_xlabel("seconds from the run's start")
    ax.set_title("run timeline: each stage from its first start to its last end")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return png(fig)


def overlay(image: np.ndarray, mask: np.ndarray | None):
    """The article's show_masks style: magenta fill (alpha 0.6) over the image."""
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


def series_color(j: int) -> str:
    return f"C{j % 10}"


def series_style(j: int) -> str:
    return ["-", "--", ":", "-."][(j // 10) % 4]


def gallery_items(rows: pd.DataFrame, analysis: Analysis, dataset_root: str | None, n: int,
                  max_side: int = 256, mask_person_values: list[int] | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, list[dict[str, Any]]]:
    """The worst-n images of each model with image, ground truth and predicted masks,
    resized so that their longer side is `max_side`. Images and masks are found and
    decoded as the run did: paired by `segray.data.manifest.list_pairs` (subfolders
    too), decoded by `segray.data.decode.decode_pair` with the run's `mask_person_values`
    and `max_pixels`."""
    import cv2

    from segray.data.manifest import list_pairs

    if not dataset_root or n <= 0:
        return {}
    worst = worst_images(analysis, n)
    wanted_pairs = {(m, i) for m, items in worst.items() for i, _ in items}
    wanted_images = sorted({i for _, i in wanted_pairs})
    near = rows[in_split(rows, analysis.split) & np.asarray(rows["image_id"].isin(wanted_images))
                & np.asarray(rows["status"] != "error")]
    keys = zip(near["model"].astype(str), near["image_id"].astype(str))
    selected = near[[k in wanted_pairs for k in keys]]
    masks = read_masks(rows, selected)
    by_key = {(str(m), str(i)): (mask, str(s)) for m, i, s, mask in
              zip(selected["model"], selected["image_id"], selected["status"], masks)}
    try:
        _, mask_paths, _ = list_pairs(dataset_root, dataset_root)
    except OSError as error:
        log.warning("gallery: cannot list the masks of %s: %s", dataset_root, error)
        mask_paths = {}
    cache: dict[str, tuple[np.ndarray, np.ndarray | None] | None] = {}
    out: dict[str, list[dict[str, Any]]] = {}
    for model, items in worst.items():
        out[model] = []
        for image_id, value in items:
            if image_id not in cache:
                mask_path = mask_paths.get(os.path.splitext(image_id)[0])
                mask_uri = storage.join(dataset_root, "masks", mask_path) if mask_path else None
                cache[image_id] = _gallery_pair(storage.join(dataset_root, "images", image_id), mask_uri,
                                                mask_person_values, max_pixels)
            if cache[image_id] is None:
                continue
            image, truth = cache[image_id]
            pred, status = by_key.get((model, image_id), (None, "no_detection"))
            scale = max_side / max(image.shape[:2])  # every tile the same readable size
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
            truth, pred = (_resize(m, size) for m in (truth, pred))
            out[model].append({"image_id": image_id, "iou": value, "image": image, "truth": truth,
                               "pred": pred, "status": status})
    return out


def _gallery_pair(image_uri: str, mask_uri: str | None,
                  person_values: list[int] | None, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The image (in the orientation its mask agrees with) and its mask; the image alone,
    with a warning, when the mask is gone or unusable (the dataset changed since the run);
    None, with a warning, when the image cannot be read."""
    from segray.data.decode import PairError, decode_image, decode_pair

    try:
        image_data = storage.read_bytes(image_uri)
    except OSError as error:
        log.warning("gallery: skipping %s: %s", image_uri, error)
        return None
    try:
        if mask_uri is None:
            raise PairError("mask", "no mask pairs with it")
        pair = decode_pair(image_data, storage.read_bytes(mask_uri), person_values, max_pixels)
        return pair.image, pair.mask
    except (OSError, PairError) as error:  # an OSError here is the mask's read
        if getattr(error, "part", "mask") == "image":
            log.warning("gallery: skipping %s: %s", image_uri, error)
            return None
        log.warning("gallery: no ground truth for %s: %s", image_uri, error)
    return decode_image(image_data, max_pixels), None


def _resize(mask: np.ndarray | None, size: tuple[int, int]) -> np.ndarray | None:
    import cv2

    if mask is None or (mask.shape[1], mask.shape[0]) == size:
        return mask
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
