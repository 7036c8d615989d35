"""Where evaluation spends its time: each stage of the Ray pipeline timed alone, in one process.

Runs the pipeline's own stage functions (`segray.evaluate.stages`: decode_batch -> PredictStage ->
score_batch -> Parquet write) over a generated set, batch by batch, without Ray, and prints
the milliseconds per image of each stage and its share, so the next bottleneck is visible.
The score stage is also split into its parts (resize, metrics, PNG
encode, building the Arrow table). Best of `--repeats` passes per stage.

    python bench/bench_stages.py                                  # unet width 16 at 128 px, 64 images
    python bench/bench_stages.py --model resnet34_unet --image-size 256 --images 256
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from segray.data.decode import encode_mask, resize_mask
from segray.data.manifest import read_folder
from segray.data.synthetic import write_synthetic
from segray.evaluate.stages import PredictStage, decode_batch, score_batch
from segray.metrics import score_masks
from segray.models.base import ModelSpec
from segray.report.provenance import hardware

MODEL_PARAMS = {"unet": {"base_width": 16}, "resnet34_unet": {"encoder_weights": "none"}}


def best_ms(fn, repeats: int) -> float:
    """The fastest of `repeats` calls, in ms (the least disturbed one on a shared machine)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, 1000 * (time.perf_counter() - start))
    return best


def batches_of(table, size: int) -> list[dict[str, np.ndarray]]:
    """Manifest rows as the column batches Ray Data hands to `map_batches`."""
    return [{k: table[k].to_numpy(object)[i : i + size] for k in table.columns} for i in range(0, len(table), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_PARAMS), default="unet")
    parser.add_argument("--image-size", type=int, default=128, help="model input size (default 128)")
    parser.add_argument("--images", type=int, default=64, help="generated 512x384 images (default 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="model batch size (default 16)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per stage, best kept (default 3)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic(Path(tmp) / "set", args.images, seed=0)
        table = read_folder(str(root)).table
        params = {**MODEL_PARAMS[args.model], "image_size": args.image_size}
        spec = ModelSpec(args.model, params=params, device=args.device)
        stage = PredictStage(0, spec, [spec.name], spec.name, cpus_per_actor=args.threads, models_per_node=1)
        inputs = batches_of(table, args.batch_size)

        decoded = [decode_batch(b) for b in inputs]
        predicted = [stage(b) for b in decoded]
        scored = [score_batch(b, "bench", [(0, [spec.name])]) for b in predicted]
        rows = pa.concat_tables(scored)
        out = Path(tmp) / "rows.parquet"
        n = len(table)
        stages = {
            "decode": best_ms(lambda: [decode_batch(b) for b in inputs], args.repeats),
            "model": best_ms(lambda: [stage(b) for b in decoded], args.repeats),
            "score": best_ms(lambda: [score_batch(b, "bench", [(0, [spec.name])]) for b in predicted], args.repeats),
            "write": best_ms(lambda: pq.write_table(rows, out), args.repeats),
        }

        # The score stage's parts, on the same predictions.
        masks = [m for b in predicted for m in b[f"m0:{spec.name}|mask"]]
        truths = [t.astype(bool) for b in predicted for t in b["truth"]]  # decode_batch decoded them
        resized = [resize_mask(m.astype(bool), t.shape) for m, t in zip(masks, truths)]
        row_dicts = rows.to_pylist()
        parts = {
            "resize": best_ms(lambda: [resize_mask(m.astype(bool), t.shape) for m, t in zip(masks, truths)],
                              args.repeats),
            "metrics": best_ms(lambda: [score_masks(p, t) for p, t in zip(resized, truths)], args.repeats),
            "png encode": best_ms(lambda: [encode_mask(p) for p in resized], args.repeats),
            "arrow table": best_ms(lambda: pa.Table.from_pylist(row_dicts, schema=rows.schema), args.repeats),
        }

    hw = hardware()
    total = sum(stages.values())
    print(f"hardware: {hw['cpu']}, {hw['cores']} cores, GPUs: {hw['gpus'] or 'none'}; torch threads {args.threads}")
    print(f"set:      {n} generated 512x384 images; {args.model} {MODEL_PARAMS[args.model]} at {args.image_size} px, "
          f"untrained, batch {args.batch_size}; best of {args.repeats}")
    print(f"{'stage':20s} {'ms/image':>9s} {'share':>6s}")
    for name, ms in stages.items():
        print(f"{name:20s} {ms / n:9.2f} {ms / total:6.0%}")
    print(f"{'total':20s} {total / n:9.2f}   ({1000 * n / total:.1f} images/s in one process)")
    print("score stage, by part:")
    for name, ms in parts.items():
        print(f"  {name:18s} {ms / n:9.2f}")


if __name__ == "__main__":
    main()
