"""Ray Data evaluation vs a plain single-process PyTorch loop: images/s of each, one run.

Both sides do the same work on the same rows, with the same untrained models and batch
sizes: decode each image and its mask once, predict with every model, score each model's
prediction against the mask (metrics + PNG of the predicted mask), write the rows as Parquet.

  plain  a torch DataLoader (num_workers=0) over the manifest rows, batches decoded by
         `segray.evaluate.stages.decode_batch`, then one `PredictStage` per model and
         `score_batch` in this process, and one `pyarrow.parquet.write_table`;
  ray    `segray.evaluate.evaluate` on a local Ray started by this script
         (`ray.init(num_cpus=4)`, as the tests do): the one stream, Parquet write included.

Passes alternate (plain, ray, plain, ray, ...) so that both see the same machine load;
the best pass of each is kept. Ray's startup (`ray.init`) is timed and reported apart;
each Ray pass still pays for starting its model actors (fresh processes importing torch).
`--rows` cycles the generated images to make a longer run without generating more.
LangSAM runs with tiny random weights (`segray.models.tiny_langsam`): its cost, not its accuracy.

    python bench/bench_eval.py --rows 1024                        # the three models (figure a)
    python bench/bench_eval.py --models unet                      # one model, 256 rows
    python bench/bench_eval.py --models resnet34_unet --image-size 256
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # as the jobs: segray.cli.RAY_WORKER_ENV

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from segray.config import EvalConfig
from segray.data.manifest import read_folder
from segray.data.synthetic import write_synthetic
from segray.evaluate import evaluate
from segray.evaluate.stages import PredictStage, actor_threads, decode_batch, score_batch
from segray.models.base import ModelSpec
from segray.models.catalogue import variants_of
from segray.report.provenance import hardware
from segray.timeline import stage_lines, start_timeline, stop_timeline, summarize

MODEL_PARAMS = {"unet": {"base_width": 16}, "resnet34_unet": {"encoder_weights": "none"}, "langsam": {}}


def manifest_rows(root: Path, rows: int) -> pd.DataFrame:
    """`rows` manifest rows cycling over the generated files, each with its own image_id."""
    table = read_folder(str(root)).table
    cycled = table.iloc[[i % len(table) for i in range(rows)]].reset_index(drop=True)
    cycled["image_id"] = [f"{i:06d}_{name}" for i, name in enumerate(cycled["image_id"])]
    return cycled


def plain_loop(manifest: pd.DataFrame, specs: list[ModelSpec], batch_size: int, threads: int, out: Path) -> None:
    """The same stages without Ray: DataLoader -> decode -> each model -> score -> one Parquet file."""
    records = manifest.to_dict("records")
    loader = torch.utils.data.DataLoader(
        records,
        batch_size=batch_size,
        num_workers=0,
        collate_fn=lambda rows: decode_batch({k: [r[k] for r in rows] for k in manifest.columns}),
    )
    stages = [PredictStage(i, spec, variants_of(spec), spec.name, cpus_per_actor=threads, models_per_node=1)
              for i, spec in enumerate(specs)]
    models = [(i, variants_of(spec)) for i, spec in enumerate(specs)]
    tables = []
    for batch in loader:
        for stage in stages:
            batch = stage(batch)
        tables.append(score_batch(batch, "bench", models))
    pq.write_table(pa.concat_tables(tables), out)


def ray_pipeline(manifest: pd.DataFrame, specs: list[ModelSpec], config: EvalConfig, out: Path) -> list[str]:
    """The stream; returns its timeline's line per stage (busy time per model: where the time went)."""
    import ray

    timeline = start_timeline(f"bench-{out.name}")
    started = time.time()
    evaluate(manifest, specs, config, str(out), "bench", timeline=timeline)
    lines = stage_lines(summarize(ray.get(timeline.snapshot.remote()), started))
    stop_timeline(timeline)
    written, expected = pq.read_table(out).num_rows, len(manifest) * sum(len(variants_of(s)) for s in specs)
    if written != expected:
        raise SystemExit(f"ray wrote {written} rows, expected {expected}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="unet,resnet34_unet,langsam",
                        help="comma-separated models, one stream (default: all three)")
    parser.add_argument("--image-size", type=int, default=128, help="UNets' input size (default 128)")
    parser.add_argument("--images", type=int, default=32, help="distinct generated 512x384 images (default 32)")
    parser.add_argument("--rows", type=int, default=256, help="rows evaluated, cycling the images (default 256)")
    parser.add_argument("--batch-size", type=int, default=16, help="every model's batch size, both sides (default 16)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch threads of the plain loop (default: torch's, one per core)")
    parser.add_argument("--cpus-per-actor", type=float, default=EvalConfig().cpus_per_actor,
                        help="Ray CPUs of each model actor (default: EvalConfig's)")
    parser.add_argument("--max-actors", type=int, help="each pool's maximum actors (default: EvalConfig's, as many as fit)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--num-cpus", type=int, default=4, help="ray.init(num_cpus=...) (default 4, as the tests)")
    parser.add_argument("--repeats", type=int, default=2, help="passes per side, alternating, best kept (default 2)")
    args = parser.parse_args()

    import ray

    from segray.models.tiny_langsam import save_tiny_langsam

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    config = EvalConfig(batch_size=dict.fromkeys(names, args.batch_size), cpus_per_actor=args.cpus_per_actor,
                        decode_batch_size=args.batch_size,
                        actors=dict.fromkeys(names, f"1-{args.max_actors}") if args.max_actors else {})
    with tempfile.TemporaryDirectory() as tmp:
        detector, sam = save_tiny_langsam(Path(tmp) / "tiny")
        params = {"unet": {**MODEL_PARAMS["unet"], "image_size": args.image_size},
                  "resnet34_unet": {**MODEL_PARAMS["resnet34_unet"], "image_size": args.image_size},
                  "langsam": {"detector": str(detector), "sam": str(sam), "box_threshold": 0.0}}
        specs = [ModelSpec(name, params=params[name], device=args.device) for name in names]
        manifest = manifest_rows(write_synthetic(Path(tmp) / "set", args.images, seed=0), args.rows)
        started = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)
        ray_start_s = time.perf_counter() - started
        plain_times, ray_times, stages = [], [], []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            plain_loop(manifest, specs, args.batch_size, args.threads, Path(tmp) / f"plain-{repeat}.parquet")
            plain_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            stages.append(ray_pipeline(manifest, specs, config, Path(tmp) / f"ray-{repeat}"))
            ray_times.append(time.perf_counter() - started)
        ray.shutdown()

    n = len(manifest)
    plain_rate, ray_rate = n / min(plain_times), n / min(ray_times)
    hw = hardware()
    print(f"hardware: {hw['cpu']}, {hw['cores']} cores, GPUs: {hw['gpus'] or 'none'}; torch {torch.__version__}, "
          f"ray {ray.__version__}")
    print(f"work:     {n} images ({args.images} generated 512x384 images, cycled) through {', '.join(names)} "
          f"(untrained; UNets at {args.image_size} px; LangSAM tiny); batch {args.batch_size}")
    threads = actor_threads(config.cpus_per_actor, len(names), gpu=torch.cuda.is_available())
    print(f"setup:    plain torch threads {args.threads}; ray num_cpus={args.num_cpus}, a pool per model with "
          f"{args.cpus_per_actor} CPU per actor ({threads} torch threads); best of {args.repeats}")
    print(f"ray.init: {ray_start_s:8.1f} s (not in the figures below)")
    print(f"plain:    {plain_rate:8.1f} images/s   (passes {', '.join(f'{t:.1f}' for t in plain_times)} s)")
    print(f"ray:      {ray_rate:8.1f} images/s   (passes {', '.join(f'{t:.1f}' for t in ray_times)} s)")
    print(f"ratio:    {ray_rate / plain_rate:8.2f} x   (ray / plain; target >= 0.9)")
    print("stages of the best ray pass (seconds from its start):")
    for line in stages[ray_times.index(min(ray_times))]:
        print("  " + line)


if __name__ == "__main__":
    main()
