"""A million images through the evaluation stream: driver memory, time to the first row, Ray's cost per image.

    uv run python bench/bench_million.py                   # 1,000,000 rows
    uv run python bench/bench_million.py --images 100000   # smaller

The manifest has `--images` rows cycling over `--files` real PNG pairs (small, 64x48, so
that decoding is cheap and what is measured is the stream's own cost), each row under its
own image id, as a dataset of that many images would be. It goes through
`segray.evaluate.evaluate` (manifest blocks -> decode -> model pool -> score -> Parquet)
on a local Ray with a narrow untrained UNet (width 4, 32 px), in this process, while a
thread samples every 0.5 s the RSS of this process (the driver) and of its whole process
tree (the Ray processes), and watches the output folder for its first Parquet file.

Printed: the driver's peak RSS (target < 2 GiB), seconds from the start of `evaluate` to
the first Parquet file (target < 60 s; a file holds at least `--rows-per-file` rows),
images/s, and the per-image cost of the stream against the same stages in a plain loop
in this process over `--plain-rows` rows (decode, predict, score; no Ray).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # as the jobs: segray.cli.RAY_WORKER_ENV
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
from bench_reevaluate import Sampler

from segray.config import EvalConfig
from segray.evaluate import evaluate
from segray.evaluate.stages import PredictStage, decode_batch, score_batch
from segray.models.base import ModelSpec
from segray.report.provenance import hardware

SPEC = ModelSpec("unet", params={"base_width": 4, "image_size": 32})


def write_pairs(root: Path, files: int) -> list[tuple[str, str]]:
    """`files` small image/mask PNG pairs: a noisy background and a bright ellipse, the person."""
    rng = np.random.default_rng(0)
    pairs = []
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(files):
        image = rng.integers(0, 120, (48, 64, 3), dtype=np.uint8)
        mask = np.zeros((48, 64), np.uint8)
        cv2.ellipse(mask, (int(rng.integers(20, 44)), 24), (8, 18), 0, 0, 360, 255, -1)
        image[mask > 0] = (200, 170, 150)
        name = f"p{i:04d}.png"
        cv2.imwrite(str(root / "images" / name), image)
        cv2.imwrite(str(root / "masks" / name), mask)
        pairs.append((str(root / "images" / name), str(root / "masks" / name)))
    return pairs


def manifest(pairs: list[tuple[str, str]], rows: int) -> pd.DataFrame:
    """`rows` manifest rows cycling over `pairs`, each under its own image id."""
    index = np.arange(rows) % len(pairs)
    images, masks = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    return pd.DataFrame({"image_id": [f"{i:07d}.png" for i in range(rows)], "image_uri": images[index],
                         "mask_uri": masks[index], "split": "val", "category": "HipHop"})


def plain_seconds_per_image(table: pd.DataFrame, batch: int) -> float:
    """The same stages in this process, no Ray: decode, predict, score, per image."""
    stage = PredictStage(0, SPEC, ["unet"], "unet", cpus_per_actor=os.cpu_count() or 1, models_per_node=1)
    columns = {k: table[k].to_numpy() for k in table.columns}
    started = time.perf_counter()
    for start in range(0, len(table), batch):
        part = {k: v[start:start + batch] for k, v in columns.items()}
        score_batch(stage(decode_batch(part)), "bench", [(0, ["unet"])])
    return (time.perf_counter() - started) / len(table)


def first_file_watch(folder: Path, started: float, found: dict) -> threading.Thread:
    def watch() -> None:
        while "s" not in found:
            if folder.exists() and any(name.endswith(".parquet") for name in os.listdir(folder)):
                found["s"] = time.perf_counter() - started
            time.sleep(0.2)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1_000_000, help="manifest rows (default 1,000,000)")
    parser.add_argument("--files", type=int, default=300, help="real PNG pairs the rows cycle over (default 300)")
    parser.add_argument("--rows-per-file", type=int, default=5000, help="rows per Parquet file (default 5000)")
    parser.add_argument("--plain-rows", type=int, default=2048, help="rows of the plain loop (default 2048)")
    parser.add_argument("--num-cpus", type=int, default=4, help="ray.init(num_cpus=...) (default 4, as the tests)")
    args = parser.parse_args()

    import ray

    config = EvalConfig(batch_size={"unet": 64}, decode_batch_size=64, rows_per_file=args.rows_per_file)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs = write_pairs(tmp / "set", args.files)
        plain = plain_seconds_per_image(manifest(pairs, args.plain_rows), config.decode_batch_size)
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)
        sampler = Sampler(os.getpid())
        sampler.start()
        started = time.perf_counter()
        table = manifest(pairs, args.images)
        built_s = time.perf_counter() - started
        found: dict = {}
        watcher = first_file_watch(tmp / "predictions", started, found)
        evaluate(table, [SPEC], config, str(tmp / "predictions"), "bench")
        wall = time.perf_counter() - started
        found.setdefault("s", None)
        watcher.join()
        sampler.stopped.set()
        sampler.join()
        written = pads.dataset(str(tmp / "predictions"), format="parquet").count_rows()
        ray.shutdown()

    hw = hardware()
    driver_peak = max(sampler.peak_driver_rss_kb, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024
    first = f"{found['s']:.1f} s" if found["s"] is not None else "never"
    print(f"hardware: {hw['cpu']}, {hw['cores']} cores, GPUs: {hw['gpus'] or 'none'}; ray {ray.__version__}")
    print(f"work:     {args.images:,} rows over {args.files} real 64x48 PNG pairs; untrained unet width 4 at 32 px; "
          f"ray num_cpus={args.num_cpus}; {args.rows_per_file} rows per Parquet file")
    print(f"rows:     {written:,} written for {args.images:,} images")
    print(f"driver:   peak RSS {driver_peak:,.0f} MiB (target < 2048); manifest built in {built_s:.1f} s")
    print(f"tree:     peak RSS {sampler.peak_rss_kb / 1024:,.0f} MiB, PSS {sampler.peak_pss_kb / 1024:,.0f} MiB")
    print(f"first:    Parquet file after {first} (target < 60 s)")
    print(f"speed:    {args.images / wall:,.0f} images/s, {1000 * wall / args.images:.2f} ms per image in all "
          f"({wall:.0f} s); plain loop {1000 * plain:.2f} ms per image; stream / plain = {wall / args.images / plain:.2f}")
    if written != args.images:
        raise SystemExit(f"{written} rows written for {args.images} images")


if __name__ == "__main__":
    main()
