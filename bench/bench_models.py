"""Images/s of each model alone, in one process, at a given input size and batch size.

Each model is built as an evaluation actor builds it (`segray.models.catalogue.build_segmenter`)
and fed batches of the same generated 512x384 images; the first batch is a warm-up and is
not timed. On a GPU, `nvidia-smi` is sampled every 0.2 s while a model runs and its mean
utilisation is reported. The table is printed, and written as Markdown with `--markdown`.

    python bench/bench_models.py                                       # CPU, small, quick
    python bench/bench_models.py --size 256 --batch 32 --device cuda \
        --langsam-detector weights/tiny/grounding-dino --langsam-sam weights/tiny/sam2 --bf16

The UNet is the article's (width 64) unless `--unet-base-width` says otherwise; the
ResNet34-UNet's encoder is random (`encoder_weights=none`): throughput does not depend on
the weights. LangSAM runs only when its two folders (or hub ids) are given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch

from segray.data.decode import decode_image
from segray.data.synthetic import write_synthetic
from segray.models.base import ModelSpec, describe_device
from segray.models.catalogue import build_segmenter
from segray.report.provenance import hardware


class GpuSampler:
    """Mean GPU utilisation (%) from `nvidia-smi` while the block runs; None without one."""

    def __init__(self, every_s: float = 0.2):
        self.every_s, self.samples = every_s, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi") and torch.cuda.is_available():
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def _sample(self) -> None:
        while not self.stop.wait(self.every_s):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def throughput(spec: ModelSpec, images: list[np.ndarray], batch: int, batches: int) -> dict:
    """Images/s of `spec` over `batches` timed batches (after one warm-up batch)."""
    model = build_segmenter(spec)
    feed = [images[(k * batch + i) % len(images)] for k in range(batches + 1) for i in range(batch)]
    model.predict(feed[:batch])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    with GpuSampler() as gpu:
        started = time.perf_counter()
        for k in range(1, batches + 1):
            model.predict(feed[k * batch:(k + 1) * batch])
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return {"images_s": batches * batch / seconds, "gpu_util": gpu.mean,
            "device": describe_device(str(getattr(model, "device", "cpu")))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96, help="model input size (default 96; the article's is 256)")
    parser.add_argument("--batch", type=int, default=8, help="images per predict call (default 8)")
    parser.add_argument("--batches", type=int, default=4, help="timed batches per model (default 4)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--unet-base-width", type=int, default=64, help="the UNet's first width (default 64, the article's)")
    parser.add_argument("--langsam-detector", help="GroundingDINO folder or hub id (LangSAM is skipped without it)")
    parser.add_argument("--langsam-sam", help="SAM2 folder or hub id")
    parser.add_argument("--bf16", action="store_true", help="LangSAM under bf16 autocast (CUDA only)")
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    args = parser.parse_args()

    params = {"unet": {"base_width": args.unet_base_width, "image_size": args.size},
              "resnet34_unet": {"encoder_weights": "none", "image_size": args.size}}
    if args.langsam_detector and args.langsam_sam:
        params["langsam"] = {"detector": args.langsam_detector, "sam": args.langsam_sam, "bf16": args.bf16}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic(Path(tmp) / "set", 8, seed=0)
        images = [decode_image((root / "images" / name).read_bytes()) for name in sorted(os.listdir(root / "images"))]
    hw = hardware()
    lines = [f"hardware: {hw['cpu']}, {hw['cores']} cores, GPUs: {hw['gpus'] or 'none'}; torch {torch.__version__}",
             f"input {args.size} px (LangSAM: its processors' sizes), batch {args.batch}, {args.batches} timed batches",
             "", "| model | device | images/s | GPU utilisation |", "|---|---|---|---|"]
    for name, model_params in params.items():
        result = throughput(ModelSpec(name, params=model_params, device=args.device), images, args.batch, args.batches)
        util = f"{result['gpu_util']:.0f} %" if result["gpu_util"] is not None else "n/a"
        lines.append(f"| {name} | {result['device']} | {result['images_s']:.1f} | {util} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
