"""How long the comparison report takes on a large run: 10 models x 100,000 images.

Writes a synthetic run directory (default: a temp dir) once: predictions/ as Parquet with
`segray.schema.ROW_SCHEMA` (1,000,000 rows, every row's `mask_png` filled with a real
PNG mask, so the file is as heavy as a real one; only the gallery's rows are read back),
summary.json, training.json, and a small dataset_root holding the images the worst-N
galleries show. Then times `segray.report.write_report` on it and prints the time per
stage and the hardware.

    python bench/bench_report.py                      # 10 models x 100,000 images, 20% in val
    python bench/bench_report.py --val-fraction 1.0   # every image in the compared split
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from segray.data.decode import encode_mask
from segray.schema import ROW_SCHEMA

CATEGORIES = ["HipHop", "Jazz", "Kata", "Sports", "Taichi"]
GALLERY_IMAGES = 64  # the hardest images: every model's worst ones are among them


def person_mask(rng: np.random.Generator, shape=(96, 128)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cy, cx = shape[0] // 2 + rng.integers(-8, 8), shape[1] // 2 + rng.integers(-20, 20)
    cv2.ellipse(mask, (int(cx), int(cy)), (int(rng.integers(8, 20)), int(rng.integers(25, 40))),
                float(rng.uniform(-20, 20)), 0, 360, 1, -1)
    cv2.circle(mask, (int(cx), int(cy - 38)), int(rng.integers(5, 9)), 1, -1)
    return mask.astype(bool)


def write_run(root: Path, models: int, images: int, val_fraction: float, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    run, dataset = root / "run", root / "dataset"
    (run / "predictions").mkdir(parents=True)
    (dataset / "images").mkdir(parents=True)
    (dataset / "masks").mkdir()
    ids = np.array([f"{CATEGORIES[i % 5]}_{CATEGORIES[i % 5]}{i % 3 + 1}_C{i % 3}_{i:06d}.png" for i in range(images)])
    split = np.where(rng.random(images) < val_fraction, "val", "train")
    split[:GALLERY_IMAGES] = "val"
    category = np.array(CATEGORIES)[np.arange(images) % 5]
    for i in range(GALLERY_IMAGES):
        truth = person_mask(rng)
        image = (rng.random((*truth.shape, 3)) * 90).astype(np.uint8)
        image[truth] = (190, 140, 110)
        cv2.imwrite(str(dataset / "images" / ids[i]), image[..., ::-1])  # RGB -> OpenCV's BGR
        cv2.imwrite(str(dataset / "masks" / ids[i]), truth.astype(np.uint8) * 255)
    pngs = [encode_mask(person_mask(rng)) for _ in range(200)]
    names = [f"model_{m:02d}" if m else "langsam/sam_score" for m in range(models)]
    files = 0
    for m, name in enumerate(names):
        quality = rng.uniform(0.6, 0.9)
        iou = np.clip(rng.normal(quality, 0.1, images), 0.05, 1)
        iou[:GALLERY_IMAGES] = rng.uniform(0, 0.05, GALLERY_IMAGES)  # the worst images have files to show
        status = np.where(rng.random(images) < 0.002, "error", "ok").astype(object)
        status[:GALLERY_IMAGES] = np.where((rng.random(GALLERY_IMAGES) < 0.1) & (m == 0), "no_detection", "ok")
        iou = np.where(status == "no_detection", 0.0, iou)
        union = rng.integers(2000, 6000, images)
        intersection = np.round(iou * union).astype(np.int64)
        true_area = intersection + rng.integers(0, 500, images)
        valid = status != "error"
        nulls = lambda a, valid=valid: pa.array(a, mask=~valid)  # noqa: E731
        png = pa.array([pngs[k] if s == "ok" else None for k, s in zip(rng.integers(0, len(pngs), images), status)],
                       pa.binary())
        table = pa.table(
            {
                "run_id": pa.array(["bench"] * images), "image_id": pa.array(ids), "split": pa.array(split),
                "category": pa.array(category), "model": pa.array([name] * images),
                "iou": nulls(iou), "dice": nulls(2 * iou / (1 + iou)), "precision": nulls(np.clip(iou + 0.05, 0, 1)),
                "recall": nulls(np.clip(iou + 0.03, 0, 1)), "boundary_iou": nulls(iou * 0.6),
                "pred_area": nulls(union - true_area + intersection), "true_area": nulls(true_area),
                "intersection": nulls(intersection), "union": nulls(union), "empty": nulls(np.zeros(images, bool)),
                "status": pa.array(status),
                "error": pa.array([("RuntimeError: x" if s == "error" else None) for s in status]),
                "latency_ms": pa.array(rng.gamma(4, 5 * (m + 1), images)), "box_score": pa.nulls(images, pa.float64()),
                "mask_score": pa.nulls(images, pa.float64()), "num_detections": pa.nulls(images, pa.int64()),
                "mask_png": png, "model_version": pa.array([f"{name}@bench"] * images),
                "device": pa.array(["GPU: bench"] * images),
            },
            schema=ROW_SCHEMA,
        )
        for start in range(0, images, 50_000):  # files of 50,000 rows, as Ray's writer makes a few sizeable ones
            pq.write_table(table.slice(start, 50_000), run / "predictions" / f"part-{files:04d}.parquet",
                           row_group_size=10_000, use_dictionary=["run_id", "split", "category", "model", "status"])
            files += 1
    history = [{"epoch": e, "train_loss": 0.5 / e, "val_iou": 0.9 - 0.3 / e, "epoch_time_s": 30.0}
               for e in range(1, 26)]
    training = {n: {"model": n, "checkpoint": str(run / "train" / n), "best_epoch": 25, "best_val_iou": 0.89,
                    "history": history, "train_time_s": 750.0} for n in names[1:3]}
    for n in names[1:3]:
        (run / "train" / n).mkdir(parents=True)
        (run / "train" / n / "model.safetensors").write_bytes(os.urandom(1 << 20))
    (run / "training.json").write_text(json.dumps(training))
    summary = {"run_id": "bench", "dataset": "bench", "dataset_root": str(dataset), "finished_at": "now",
               "training": training, "config": {"models": names}}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of images in the compared split")
    p.add_argument("--dir", help="where to write the synthetic run (default: a temp dir, kept for reuse with --reuse)")
    p.add_argument("--reuse", action="store_true", help="time an already written --dir without rewriting it")
    args = p.parse_args()

    root = Path(args.dir or tempfile.mkdtemp(prefix="segray-bench-report-"))
    if not args.reuse:
        started = time.perf_counter()
        run = write_run(root, args.models, args.images, args.val_fraction)
        size = sum(f.stat().st_size for f in (run / "predictions").iterdir())
        print(f"wrote {args.models} x {args.images:,} rows ({size / 1e6:.0f} MB Parquet) in "
              f"{time.perf_counter() - started:.1f} s to {run}")
    run = root / "run"

    started = time.perf_counter()
    import matplotlib  # noqa: F401  (imported by the figures anyway; timed separately below)
    import scipy.stats  # noqa: F401

    from segray.report import write_report  # noqa: E402 (the import is part of the cost)
    from segray.report.provenance import hardware

    imports = time.perf_counter() - started
    timings: dict[str, float] = {}
    started = time.perf_counter()
    written = write_report(str(run), timings=timings)
    elapsed = time.perf_counter() - started
    hw = hardware()
    print(f"report: {len(written)} files in {run / 'report'}")
    print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    compared = "" if args.reuse else f", {args.val_fraction:.0%} of them in the compared split"
    print(f"write_report: {elapsed:.2f} s (+ {imports:.2f} s of imports: pandas, scipy, matplotlib) "
          f"for {args.models} models x {args.images:,} images{compared}")
    print(f"hardware: {hw['cpu']}, {hw['cores']} cores, GPUs: {hw['gpus'] or 'none'}")


if __name__ == "__main__":
    main()
