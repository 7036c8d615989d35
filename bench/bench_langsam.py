"""Batched LangSAM vs the article's loop: images/s of each, same models, same images, one run.

The article called `LangSAM().predict([image], [prompt])` once per image. Here the same
`LangSAMSegmenter` is driven two ways:

  loop     predict([image]) for each image (what the article did);
  batched  predict(images[i:i+B]) (one GroundingDINO and one SAM2 forward per batch).

By default it writes the tiny random models (segray.models.tiny_langsam) to a temp dir
and runs on CPU, which measures the pipeline's overhead, not real model cost. The two
modes alternate pass by pass (loop, batched, loop, ...) so that both see the same machine
load; the best pass of each is kept.

    python bench/bench_langsam.py --threads 1      # tiny random models, CPU (the recorded figure)
    python bench/bench_langsam.py --detector DIR --sam DIR --device cuda --images 64 --batch-size 8

With --prompts and --box-thresholds it measures the sweep instead, batched, three ways
alternating: the default setting alone; the sweep from shared forwards (one detector and
one SAM2 forward per prompt and batch); and each setting run on its own, one after another
(what a sweep without sharing costs). It reports the sweep's cost in single-setting units.

    python bench/bench_langsam.py --threads 1 --prompts "human.,people." --box-thresholds 0.2,0.25,0.35,0.4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segray.config import LangSAMConfig
from segray.models.base import ModelSpec, resolve_device
from segray.models.langsam import LangSAMSegmenter
from segray.models.langsam_rules import RULES
from segray.models.tiny_langsam import save_tiny_langsam
from segray.report.provenance import hardware


def load_images(folder: str | None, n: int, seed: int) -> list[np.ndarray]:
    """`n` images from `folder` (png/jpg, cycled), or random 384x512 RGB ones."""
    if folder:
        from PIL import Image

        files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
        if not files:
            raise SystemExit(f"no .png/.jpg files in {folder}")
        return [np.asarray(Image.open(files[i % len(files)]).convert("RGB")) for i in range(n)]
    rng = np.random.default_rng(seed)
    # Smooth blobs over noise, so the images are not pure noise for the detector.
    images = []
    for _ in range(n):
        low = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = np.kron(low, np.ones((32, 32, 1), np.uint8))
        image = np.clip(image.astype(np.int16) + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
        images.append(image)
    return images


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def pass_rate(fn, images: list[np.ndarray], device: str) -> float:
    """images/s of one pass."""
    sync(device)
    start = time.perf_counter()
    fn(images)
    sync(device)
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", help="GroundingDINO save_pretrained folder or hub id (default: tiny)")
    parser.add_argument("--sam", help="SAM2 save_pretrained folder or hub id (default: tiny)")
    parser.add_argument("--images", type=int, default=32, help="number of images (default 32)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size of the batched run (default 8)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    parser.add_argument("--image-dir", default=None, help="use these .png/.jpg files instead of random images")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per mode, best kept (default 3)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--prompts", help="measure a sweep: more prompts, comma-separated")
    parser.add_argument("--box-thresholds", help="measure a sweep: more box thresholds, comma-separated")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        if args.detector and args.sam:
            detector, sam, label = args.detector, args.sam, "given models"
        elif args.detector or args.sam:
            raise SystemExit("pass both --detector and --sam, or neither (tiny random models)")
        else:
            detector, sam = save_tiny_langsam(tmp)
            label = "tiny random models (pipeline overhead, not real model cost)"

        start = time.perf_counter()
        params = {"detector": str(detector), "sam": str(sam), "bf16": args.bf16}
        spec = ModelSpec("langsam", params=params, device=device)
        model = LangSAMSegmenter(spec)
        load_s = time.perf_counter() - start
        images = load_images(args.image_dir, args.images, seed=0)
        if args.prompts or args.box_thresholds:
            return measure_sweep(model, images, args, device, f"{label}: {detector} + {sam}")

        def loop(imgs: list[np.ndarray]) -> None:
            for image in imgs:
                model.predict([image])

        def batched(imgs: list[np.ndarray]) -> None:
            for i in range(0, len(imgs), args.batch_size):
                model.predict(imgs[i : i + args.batch_size])

        # Warm-up: first calls pay for lazy initialisation (and CUDA kernels/autotuning).
        loop(images[:2])
        batched(images[: args.batch_size])
        # Alternating passes see the same machine load; the best pass of each is kept.
        loop_rate = batch_rate = 0.0
        for _ in range(args.repeats):
            loop_rate = max(loop_rate, pass_rate(loop, images, device))
            batch_rate = max(batch_rate, pass_rate(batched, images, device))

    sizes = sorted({im.shape[:2] for im in images})
    print(f"models:    {label}: {detector} + {sam} (load {load_s:.1f} s)")
    hw = hardware()
    print(f"hardware:  {hw['cpu']}, {hw['cores']} cores, torch threads {torch.get_num_threads()}; "
          f"GPUs: {hw['gpus'] or 'none'}; device: {device}; torch {torch.__version__}")
    print(f"images:    {len(images)} x {sizes if len(sizes) > 1 else sizes[0]}, best of {args.repeats} passes")
    print(f"loop:      {loop_rate:8.2f} images/s   (predict([image]) per image, as the article did)")
    print(f"batched:   {batch_rate:8.2f} images/s   (batch size {args.batch_size})")
    print(f"ratio:     {batch_rate / loop_rate:8.2f} x")


def measure_sweep(model: LangSAMSegmenter, images: list[np.ndarray], args: argparse.Namespace, device: str,
                  label: str) -> None:
    """The default setting alone, the sweep from shared forwards, and every setting on its
    own, batched, alternating pass by pass; best pass of each."""
    single = model.config
    listed = {key: [item for item in (getattr(args, key) or "").split(",") if item]
              for key in ("prompts", "box_thresholds")}
    sweep = LangSAMConfig.model_validate({**single.model_dump(), **listed})
    settings = sweep.settings

    def batched(config: LangSAMConfig, imgs: list[np.ndarray]) -> None:
        model.config = config
        for i in range(0, len(imgs), args.batch_size):
            model.predict(imgs[i : i + args.batch_size])

    def each_alone(imgs: list[np.ndarray]) -> None:
        for setting in settings:
            batched(single.model_copy(update={"prompt": setting.prompt, "box_threshold": setting.box_threshold}), imgs)

    batched(sweep, images[: args.batch_size])  # warm-up
    rates = {"single": 0.0, "sweep": 0.0, "each alone": 0.0}
    runs = {"single": lambda imgs: batched(single, imgs), "sweep": lambda imgs: batched(sweep, imgs),
            "each alone": each_alone}
    for _ in range(args.repeats):
        for name, run in runs.items():
            rates[name] = max(rates[name], pass_rate(run, images, device))
    prompts = len(dict.fromkeys(s.prompt for s in settings))
    hw = hardware()
    print(f"models:    {label}")
    print(f"hardware:  {hw['cpu']}, {hw['cores']} cores, torch threads {torch.get_num_threads()}; "
          f"GPUs: {hw['gpus'] or 'none'}; device: {device}; torch {torch.__version__}")
    print(f"sweep:     {len(settings)} settings ({prompts} prompts x {len(settings) // prompts} thresholds) x "
          f"{len(RULES)} rules; {len(images)} images, batch {args.batch_size}, best of {args.repeats} passes")
    for name, rate in rates.items():
        print(f"{name + ':':11s}{rate:8.2f} images/s   cost {rates['single'] / rate:6.2f} x one setting")
    print(f"sharing:   the sweep is {rates['sweep'] / rates['each alone']:.2f} x faster than each setting alone")


if __name__ == "__main__":
    main()
