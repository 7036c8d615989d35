"""A Ray Train epoch vs a plain PyTorch training epoch: seconds per epoch of each, one run.

Both sides train the same network from the same seed with the same settings: the cached
images (decoded and resized once by `segray.train.load_resized`), BCEWithLogits, Adam,
batch size, the per-epoch flip + normalise (`segray.train.Augment` with
`train_augment`), torch threads = CPUs per worker, and a validation IoU pass each epoch.

  plain  a loop in this process over the cached arrays, shuffled each epoch;
  ray    `segray.train.train_model` (TorchTrainer, 1 worker) on a local Ray started by
         this script (`ray.init(num_cpus=4)`), a checkpoint per epoch; once per
         controller poll interval of `--poll-s` (segray's 0.25 s and Ray's default, 2 s).

The epoch time is what each loop measures around one epoch (train + validation); for Ray it
is the `epoch_time_s` its worker reports. Ray Train's fixed cost (starting the controller
and the worker, the first epoch's Ray Data warm-up aside, and the per-epoch checkpoint) is
the run's wall time minus its epochs, reported apart. Runs alternate (plain, ray at each
poll interval, plain, ...) and the best epoch of each side after the first is compared (the
first epoch pays for warm-ups on both sides).

    python bench/bench_train.py                                  # unet width 8 at 96 px, 64 images
    python bench/bench_train.py --images 240 --epochs 4 --model resnet34_unet
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

import numpy as np
import torch

from segray.config import Config
from segray.data.manifest import read_folder
from segray.data.synthetic import write_synthetic
from segray.data.transforms import train_augment, val_augment
from segray.metrics import iou
from segray.models.networks import build_network
from segray.report.provenance import hardware
from segray.train import CONTROLLER_POLL_S, Augment, load_resized, train_model, training_datasets

MODEL_PARAMS = {
    "unet": {"base_width": 8},
    "resnet34_unet": {"encoder_weights": "none", "decoder_channels": [64, 32, 16, 16, 8]},
}


def cached_arrays(manifest, split: str, size: int) -> dict[str, np.ndarray]:
    rows = manifest[manifest["split"] == split]
    return load_resized({"image_uri": rows["image_uri"].to_numpy(), "mask_uri": rows["mask_uri"].to_numpy()}, size)


def plain_epochs(model: str, train: dict, val: dict, settings: Config, epochs: int) -> list[float]:
    """The article's loop without Ray, on the cached arrays: seconds per epoch (train + validation)."""
    config = settings.train
    torch.manual_seed(settings.seed)
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    network = build_network(model, settings.params(model))
    optimizer = torch.optim.Adam(network.parameters(), lr=config.lr)
    criterion = torch.nn.BCEWithLogitsLoss()
    to_train = Augment(train_augment(), "cpu")
    to_val = Augment(val_augment(), "cpu")
    rng = np.random.default_rng(settings.seed)
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        network.train()
        order = rng.permutation(len(train["image"]))
        for i in range(0, len(order), config.batch_size):
            batch = to_train({k: v[order[i : i + config.batch_size]] for k, v in train.items()})
            optimizer.zero_grad()
            loss = criterion(network(batch["image"]), batch["mask"])
            loss.backward()
            optimizer.step()
            loss.item()
        network.eval()
        with torch.no_grad():
            for i in range(0, len(val["image"]), config.batch_size):
                batch = to_val({k: v[i : i + config.batch_size] for k, v in val.items()})
                iou(network(batch["image"]) > 0, batch["mask"] > 0.5).sum().item()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_PARAMS), default="unet")
    parser.add_argument("--images", type=int, default=64, help="generated images, 80%% train (default 64)")
    parser.add_argument("--image-size", type=int, default=96, help="training size (default 96, the demo's)")
    parser.add_argument("--batch-size", type=int, default=8, help="default 8, the demo's")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, at least 2 (default 3)")
    parser.add_argument("--cpus-per-worker", type=float, default=2, help="also the torch threads (default 2)")
    parser.add_argument("--num-cpus", type=int, default=4, help="ray.init(num_cpus=...) (default 4, as the tests)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating (default 2)")
    parser.add_argument("--poll-s", default=f"{CONTROLLER_POLL_S},2", metavar="S[,S...]",
                        help="Ray Train controller poll intervals to run side by side (default: segray's, then Ray's)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is a warm-up")

    import ray

    params = MODEL_PARAMS[args.model]
    config = Config(train={"image_size": args.image_size, "batch_size": args.batch_size, "lr": 1e-3,
                           "cpus_per_worker": args.cpus_per_worker},
                    cluster={"gpu": False}, **{args.model: {**params, "epochs": args.epochs}})
    with tempfile.TemporaryDirectory() as tmp:
        manifest = read_folder(str(write_synthetic(Path(tmp) / "set", args.images, seed=0))).table
        train, val = (cached_arrays(manifest, split, args.image_size) for split in ("train", "val"))
        started = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False)
        ray_start_s = time.perf_counter() - started
        datasets = training_datasets(manifest, args.image_size)
        polls = args.poll_s.split(",")
        plain_runs, ray_runs = [], {poll: [] for poll in polls}
        for repeat in range(args.repeats):
            plain_runs.append(plain_epochs(args.model, train, val, config, args.epochs))
            for poll in polls:
                os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = poll  # read by each fit's controller
                result = train_model(args.model, config, datasets, str(Path(tmp) / f"bench-{repeat}-poll-{poll}"))
                epochs = [entry["epoch_time_s"] for entry in result.history]
                ray_runs[poll].append((epochs, result.train_time_s - sum(epochs)))
        ray.shutdown()

    plain_epoch = min(t for run in plain_runs for t in run[1:])
    hw = hardware()
    print(f"hardware: {hw['cpu']}, {hw['cores']} cores, GPUs: {hw['gpus'] or 'none'}; torch {torch.__version__}, "
          f"ray {ray.__version__}")
    print(f"work:     {args.model} {params} at {args.image_size} px; {len(train['image'])} train + "
          f"{len(val['image'])} val images; batch {args.batch_size}; {args.epochs} epochs x {args.repeats} runs "
          "per side")
    print(f"setup:    torch threads {max(1, int(args.cpus_per_worker))}; ray num_cpus={args.num_cpus}, 1 worker "
          f"with {args.cpus_per_worker} CPU")
    print(f"ray.init: {ray_start_s:8.1f} s (not in the figures below)")
    for i, plain in enumerate(plain_runs):
        print(f"run {i}:    plain epochs {', '.join(f'{t:.2f}' for t in plain)} s")
        for poll in polls:
            epochs, fixed = ray_runs[poll][i]
            print(f"          ray (poll {poll} s) epochs {', '.join(f'{t:.2f}' for t in epochs)} s, fixed {fixed:.1f} s")
    print(f"plain:    {plain_epoch:8.2f} s per epoch (best after the first)")
    for poll in polls:
        ray_epoch = min(t for epochs, _ in ray_runs[poll] for t in epochs[1:])
        print(f"ray, poll {poll} s: {ray_epoch:.2f} s per epoch (best after the first), {plain_epoch / ray_epoch:.2f}x "
              f"plain; fixed per fit: {min(fixed for _, fixed in ray_runs[poll]):.1f} s (best), "
              f"{max(fixed for _, fixed in ray_runs[poll]):.1f} s (worst)")


if __name__ == "__main__":
    main()
