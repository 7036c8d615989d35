"""What every Ray Train worker runs, in the shape of torchvision's segmentation reference:
`train_one_epoch`, `evaluate`, and `train_loop_per_worker`, a short loop over epochs that
reads one typed `LoopConfig`.

With the same seed, data and settings, a CPU run repeats bit for bit (torch's
deterministic algorithms are on); on GPU, kernels without a deterministic implementation
may differ in the last bits, and torch warns where they run.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray.data.collate_fn import NumpyBatchCollateFn

BEST_METRIC = "val_iou"


@dataclass(frozen=True)
class LoopConfig:
    """One training's settings, as every worker reads them."""

    model: str  # the network (`segray.models.networks`)
    name: str  # the training's name (`segray.models.checkpoint.training_name`): unet, unet[frac=0.25]
    epochs: int
    image_size: int
    batch_size: int
    lr: float
    seed: int
    cpus_per_worker: float  # also the torch threads of a CPU worker
    amp: bool  # mixed precision, on GPU only
    params: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None  # names the weights' version
    dataset_fingerprint: str | None = None  # what they were trained on
    train_fraction: float | None = None  # the share of the train split, when not all of it


def seed_of(*parts: int) -> int:
    """A 32-bit seed for one (run seed, worker, epoch): the same parts, the same seed."""
    return int(np.random.SeedSequence(parts).generate_state(1)[0])


class Augment(NumpyBatchCollateFn):
    """The per-epoch half of the article's transform on a cached batch, in the worker:
    image -> normalised float CHW, mask -> float 1HW, both on the worker's device.
    (A collate class: Ray deprecates plain functions as `collate_fn`.)"""

    def __init__(self, transform, device):
        self.transform, self.device = transform, device

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        images, masks = [], []
        for image, mask in zip(batch["image"], batch["mask"]):
            out = self.transform(image=image, mask=mask)
            images.append(out["image"])
            masks.append(out["mask"][None].float())
        return {"image": torch.stack(images).to(self.device), "mask": torch.stack(masks).to(self.device)}


def train_one_epoch(model, criterion, optimizer, scaler, shard, device, batch_size: int, seed: int,
                    use_amp: bool) -> tuple[float, int, int]:
    """One pass over the worker's shard, shuffled and flipped by `seed`: (loss sum, batches, images)."""
    import torch

    from segray.data.transforms import train_augment

    model.train()
    loss_sum, batches, images = 0.0, 0, 0
    for batch in shard.iter_torch_batches(batch_size=batch_size, local_shuffle_buffer_size=4 * batch_size,
                                          local_shuffle_seed=seed, collate_fn=Augment(train_augment(seed), device)):
        optimizer.zero_grad()
        with torch.autocast(device.type, enabled=use_amp):
            loss = criterion(model(batch["image"]), batch["mask"])
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.item()
        batches += 1
        images += len(batch["image"])
    return loss_sum, batches, images


def evaluate(model, shard, device, batch_size: int, use_amp: bool) -> tuple[float, int]:
    """The IoU of every validation image of the worker's shard: (IoU sum, images)."""
    import torch

    from segray.data.transforms import val_augment
    from segray.metrics import iou

    model.eval()
    iou_sum, images = 0.0, 0
    with torch.no_grad():
        for batch in shard.iter_torch_batches(batch_size=batch_size, collate_fn=Augment(val_augment(), device)):
            with torch.autocast(device.type, enabled=use_amp):
                logits = model(batch["image"])
            iou_sum += iou(logits > 0, batch["mask"] > 0.5).sum().item()
            images += len(logits)
    return iou_sum, images


def all_sum(values: list[float], device) -> list[float]:
    """`values` summed over every worker (as they are with one worker)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the article's loop (BCEWithLogits, Adam), DDP via prepare_model;
    each epoch reports its metrics with a checkpoint from rank 0. `config` is a `LoopConfig`'s
    fields."""
    import ray.train
    import ray.train.torch
    import torch

    from segray.timeline import node_id, timeline_of

    cfg = LoopConfig(**config)
    torch.manual_seed(cfg.seed)  # the same initial weights on every worker
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    use_amp = cfg.amp and device.type == "cuda"

    network, optimizer_state, meta = restore_or_build(cfg)
    model = ray.train.torch.prepare_model(network)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    criterion = torch.nn.BCEWithLogitsLoss()
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    rank = ray.train.get_context().get_world_rank()
    train_shard, val_shard = (ray.train.get_dataset_shard(f"{split}_{rank}") for split in ("train", "val"))
    timeline = timeline_of(cfg.run_id) if rank == 0 and cfg.run_id else None  # the driver's console prints it
    for epoch in range(meta["epoch"], cfg.epochs):
        started, wall_started = time.perf_counter(), time.time()
        # Every random draw of an epoch (shuffle, flips, dropout) is seeded by (seed, rank,
        # epoch): a run resumed from a checkpoint redraws exactly what it would have.
        epoch_seed = seed_of(cfg.seed, rank, epoch)
        torch.manual_seed(epoch_seed)
        loss_sum, batches, seen = train_one_epoch(model, criterion, optimizer, scaler, train_shard, device,
                                                  cfg.batch_size, epoch_seed, use_amp)
        iou_sum, images = evaluate(model, val_shard, device, cfg.batch_size, use_amp)
        loss_sum, batches, iou_sum, images, seen = all_sum([loss_sum, batches, iou_sum, images, seen], device)
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(batches, 1), BEST_METRIC: iou_sum / max(images, 1),
                   "epoch_time_s": time.perf_counter() - started}
        report(metrics, network, optimizer, meta if rank == 0 else None)
        if timeline is not None:
            timeline.record.remote(f"train:{cfg.name}", node_id(), int(seen), int(images), wall_started, time.time())
            timeline.epoch.remote(cfg.name, metrics)


def restore_or_build(cfg: LoopConfig) -> tuple[Any, dict[str, Any] | None, dict[str, Any]]:
    """(network, optimizer state, checkpoint metadata): from the latest checkpoint when Ray
    Train restarted the workers, else a new network and metadata at epoch 0."""
    import ray.train

    from segray.models.checkpoint import load_network, load_optimizer_state
    from segray.models.networks import build_network

    resume = ray.train.get_checkpoint()
    if resume is None:
        meta = {"model": cfg.model, "train_fraction": cfg.train_fraction, "params": cfg.params,
                "image_size": cfg.image_size, "run_id": cfg.run_id, "dataset_fingerprint": cfg.dataset_fingerprint,
                "epoch": 0, "history": [], "resumed_from": []}
        return build_network(cfg.model, cfg.params), None, meta
    with resume.as_directory() as directory:
        network, meta = load_network(directory)
        meta["resumed_from"] = [*meta.get("resumed_from", []), meta["epoch"]]
        return network, load_optimizer_state(directory), meta


def report(metrics: dict[str, float], network, optimizer, meta: dict[str, Any] | None) -> None:
    """`ray.train.report` of an epoch, which every worker calls; rank 0 (the one with `meta`)
    attaches the checkpoint: the weights, the optimizer's state and `meta` with this epoch."""
    import ray.train

    from segray.models.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if meta is not None:
            meta.update(epoch=metrics["epoch"], metrics=metrics, history=[*meta["history"], metrics])
            save_checkpoint(directory, network, meta, optimizer)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)
