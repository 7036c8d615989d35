"""Training of the UNets on Ray Train: data-parallel (DDP) `TorchTrainer`, one run per model.

Data reaches the workers through Ray Data: every image is decoded and resized once and
cached in the object store, one seeded shard per worker (`training_datasets`);
`get_dataset_shard(...).iter_torch_batches` feeds each worker its shard, shuffled with a
seed, and its `collate_fn` applies the random flip and normalisation every epoch. With the
same `seed`, data and settings, a CPU run repeats bit for bit (torch's deterministic
algorithms are on); on GPU, cuDNN/cuBLAS kernels without a deterministic implementation
(atomics in some convolution backward passes) may differ in the last bits, and torch warns
where they run.
Each epoch reports the mean train loss and the validation IoU (all workers combined)
with a checkpoint from rank 0; evaluation uses the checkpoint with the best validation
IoU (`Result.get_best_checkpoint(metric="val_iou", mode="max")`).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from ray.data.collate_fn import NumpyBatchCollateFn

from segray import storage
from segray.config import TrainConfig, use_gpus
from segray.data.decode import decode_pair, resize_pair
from segray.data.manifest import to_dataset

log = logging.getLogger(__name__)

BEST_METRIC = "val_iou"


@dataclass
class TrainResult:
    model: str
    checkpoint: str  # the best checkpoint's directory (URI)
    best_epoch: int
    best_val_iou: float
    history: list[dict[str, float]]  # one entry per epoch: epoch, train_loss, val_iou, epoch_time_s
    train_time_s: float
    # After a worker failure, Ray Train restarts the workers (FailureConfig) and training
    # resumes from the latest checkpoint: the epoch of that checkpoint, once per resume.
    # Checkpoints are per epoch, so each resume redoes the one epoch that was in progress.
    # A failure before the first checkpoint starts over from scratch and is not recorded.
    resumed_from: list[int]
    epochs_redone: int
    train_images: int  # the images it trained on: the train split, or its subset
    train_fraction: float | None = None  # the subset's share of the train split (--train-fractions)
    passes_per_epoch: int = 1  # passes over a subset per epoch, so every fraction trains as many steps


def load_resized(batch: dict[str, np.ndarray], size: int,
                 mask_person_values: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Decode (`decode_pair`, as evaluation does) and resize image/mask pairs once. Pairs
    that fail to load, or whose mask's size is not the image's in either orientation, are
    left out of training (evaluation reports them per image), with a warning naming them;
    a mask with a note is used, with a warning."""
    images, masks = [], []
    for image_uri, mask_uri in zip(batch["image_uri"], batch["mask_uri"]):
        try:
            pair = decode_pair(storage.read_bytes(image_uri), storage.read_bytes(mask_uri), mask_person_values)
        except Exception as error:
            log.warning("training skips %s: %s", image_uri, error)
            continue
        if pair.mask_note:
            log.warning("training uses %s with mask %s: %s", image_uri, mask_uri, pair.mask_note)
        image, mask = resize_pair(pair.image, pair.mask.astype(np.uint8), size)
        images.append(image)
        masks.append(mask)
    return {
        "image": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        "mask": np.stack(masks) if masks else np.zeros((0, size, size), np.uint8),
    }


def training_rows(manifest: pd.DataFrame, seed: int = 0, fraction: float | None = None) -> dict[str, pd.DataFrame]:
    """The train and val rows (images with a mask), each in one seeded order. With a
    `fraction`, the train rows are the first round(fraction x n) of that order (at least
    one): the subsets of one seed are nested, each smaller one inside the larger ones, and
    the same on every rerun. Every fraction validates on the same val rows."""
    labelled = manifest[manifest["mask_uri"].notna()]
    shuffled = labelled.iloc[np.random.default_rng(seed).permutation(len(labelled))]
    rows = {split: shuffled[shuffled["split"] == split] for split in ("train", "val")}
    if fraction is not None and fraction < 1:
        rows["train"] = rows["train"].iloc[:max(1, round(fraction * len(rows["train"])))]
    return rows


def passes_per_epoch(fraction: float | None) -> int:
    """How many times an epoch goes over a training subset: about 1/fraction, so that a
    subset trains for as many steps, and validates as often, as the whole train split
    (a subset must not lose for having trained less, nor cost more validations)."""
    return 1 if fraction is None or fraction >= 1 else max(1, round(1 / fraction))


def training_datasets(manifest: pd.DataFrame, image_size: int, num_workers: int = 1, seed: int = 0,
                      mask_person_values: Sequence[int] | None = None,
                      fraction: float | None = None) -> dict[str, Any]:
    """The train and val sets (`training_rows`: with a `fraction`, its subset of the train
    split, `passes_per_epoch(fraction)` times over) as one shard per training worker
    (`train_<rank>`, `val_<rank>`), decoded and resized once and cached in the object
    store; augmentation happens per epoch in the workers (`Augment`).

    The shards are cut here, by a seeded permutation, rather than by Ray Data's
    streaming_split, which gives no ordering guarantee: so the same seed gives every
    worker the same images in the same order, run after run. Each worker then shuffles
    its shard every epoch with a seeded local shuffle."""
    datasets = {}
    for split, labelled in training_rows(manifest, seed, fraction).items():
        rows = labelled[["image_uri", "mask_uri"]]
        if len(rows) < num_workers:
            raise ValueError(f"{len(rows)} {split} images with masks to train on, fewer than the {num_workers} workers")
        for rank, shard in enumerate(np.array_split(np.arange(len(rows)), num_workers)):
            dataset = to_dataset(rows.iloc[shard]).map_batches(
                load_resized, fn_kwargs={"size": image_size, "mask_person_values": mask_person_values})
            dataset.context.execution_options.preserve_order = True  # blocks in manifest order, every run
            dataset = dataset.materialize()
            passes = passes_per_epoch(fraction) if split == "train" else 1
            # A subset's epoch is its cached blocks `passes` times over (the local shuffle mixes
            # within a pass), so one iterator per epoch: starting one per pass cost ~1 s each.
            datasets[f"{split}_{rank}"] = dataset.union(*[dataset] * (passes - 1)) if passes > 1 else dataset
    return datasets


def seed_of(*parts: int) -> int:
    """A 32-bit seed for one (run seed, worker, epoch): the same parts, the same seed."""
    return int(np.random.SeedSequence(parts).generate_state(1)[0])


class Augment(NumpyBatchCollateFn):
    """The per-epoch half of the seeds' transform on a cached batch, in the worker:
    image -> normalised float CHW, mask -> float 1HW, both on the worker's device.
    (A collate class: Ray deprecates plain functions as `collate_fn` since 2.47.)"""

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


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the seeds' loop (BCEWithLogits, Adam), DDP via prepare_model."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from segray.data.transforms import train_augment, val_augment
    from segray.metrics import iou
    from segray.models.checkpoint import load_network, load_optimizer_state, save_checkpoint
    from segray.models.networks import build_network
    from segray.timeline import node_id, timeline_of

    torch.manual_seed(config["seed"])  # the same initial weights on every worker
    # Bit-for-bit repeatable on CPU; on GPU, ops without a deterministic kernel only warn.
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    use_amp = config["amp"] and device.type == "cuda"

    start_epoch, history, resumed_from, optimizer_state = 0, [], [], None
    resume = ray.train.get_checkpoint()
    if resume:
        with resume.as_directory() as directory:
            network, meta = load_network(directory)
            start_epoch, history = meta["epoch"], meta["history"]
            resumed_from = [*meta.get("resumed_from", []), start_epoch]
            optimizer_state = load_optimizer_state(directory)
    else:
        network = build_network(config["model"], config["params"])
    model = ray.train.torch.prepare_model(network)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    criterion = torch.nn.BCEWithLogitsLoss()
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    context = ray.train.get_context()
    rank = context.get_world_rank()
    val_transform = val_augment()
    train_shard = ray.train.get_dataset_shard(f"train_{rank}")
    val_shard = ray.train.get_dataset_shard(f"val_{rank}")

    def all_sum(values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(tensor)
        return tensor.tolist()

    # Rank 0 reports each epoch to the run's timeline: the driver's console prints it.
    timeline = timeline_of(config["run_id"]) if rank == 0 and config["run_id"] else None
    for epoch in range(start_epoch, config["epochs"]):
        started, wall_started = time.perf_counter(), time.time()
        # Every random draw of an epoch (shuffle, flips, dropout) is seeded by (seed, rank,
        # epoch): a run resumed from a checkpoint redraws exactly what it would have.
        epoch_seed = seed_of(config["seed"], rank, epoch)
        torch.manual_seed(epoch_seed)
        model.train()
        loss_sum, batches, seen = 0.0, 0, 0
        for batch in train_shard.iter_torch_batches(
            batch_size=config["batch_size"],
            local_shuffle_buffer_size=4 * config["batch_size"],
            local_shuffle_seed=epoch_seed,
            collate_fn=Augment(train_augment(seed=epoch_seed), device),
        ):
            optimizer.zero_grad()
            with torch.autocast(device.type, enabled=use_amp):
                loss = criterion(model(batch["image"]), batch["mask"])
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.item()
            batches += 1
            seen += len(batch["image"])

        model.eval()
        iou_sum, images = 0.0, 0
        with torch.no_grad():
            for batch in val_shard.iter_torch_batches(
                batch_size=config["batch_size"],
                collate_fn=Augment(val_transform, device),
            ):
                with torch.autocast(device.type, enabled=use_amp):
                    logits = model(batch["image"])
                iou_sum += iou(logits > 0, batch["mask"] > 0.5).sum().item()
                images += len(logits)
        loss_sum, batches, iou_sum, images, seen = all_sum([loss_sum, batches, iou_sum, images, seen])
        metrics = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(batches, 1),
            BEST_METRIC: iou_sum / max(images, 1),
            "epoch_time_s": time.perf_counter() - started,
        }
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = None
            if rank == 0:
                history.append(metrics)
                meta = {
                    "model": config["model"],
                    "train_fraction": config["train_fraction"],
                    "params": config["params"],
                    "image_size": config["image_size"],
                    "run_id": config["run_id"],  # names the weights' version
                    "dataset_fingerprint": config["dataset_fingerprint"],  # what they were trained on
                    "epoch": epoch + 1,
                    "metrics": metrics,
                    "history": history,  # Result.metrics_dataframe only covers kept checkpoints
                    "resumed_from": resumed_from,
                }
                save_checkpoint(directory, network, meta, optimizer)
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)
        if timeline is not None:
            timeline.record.remote(f"train:{config['name']}", node_id(), int(seen), int(images), wall_started, time.time())
            timeline.epoch.remote(config["name"], metrics)


def train_model(
    model: str,
    params: dict[str, Any],
    datasets: dict[str, Any],
    config: TrainConfig,
    storage_path: str,
    run_name: str,
    run_id: str | None = None,
    dataset_fingerprint: str | None = None,
    fraction: float | None = None,
) -> TrainResult:
    """Train one model with a TorchTrainer and return its best checkpoint by validation IoU.
    `run_id` and `dataset_fingerprint` are recorded in every checkpoint: they name the
    weights' version and the data they were trained on. `fraction`: the datasets hold that
    subset of the train split, repeated (`training_datasets(..., fraction)`); the
    checkpoints record it."""
    import ray
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    from segray.models.checkpoint import read_meta

    if config.num_workers < 1:
        # Ray Train's local mode (0 workers) keeps no checkpoints, and evaluation needs them.
        raise ValueError(f"num_workers must be >= 1, got {config.num_workers}")
    shards = sorted(name for name in datasets if name.startswith("train_"))
    if len(shards) != config.num_workers:
        raise ValueError(f"the datasets hold {len(shards)} training shards for {config.num_workers} workers: "
                         "cut them with training_datasets(..., num_workers)")
    use_gpu = use_gpus(config.use_gpu, ray.cluster_resources())
    loop_config = {
        "model": model,
        "name": run_name,
        "train_fraction": fraction,
        "params": params,
        "epochs": config.epochs[model],
        "run_id": run_id,
        "dataset_fingerprint": dataset_fingerprint,
        **{k: v for k, v in asdict(config).items() if k != "epochs"},
    }
    fs, path = storage.resolve(storage_path)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=path,
            storage_filesystem=fs,
            # Ray always keeps the latest checkpoint too, so resuming after a failure works.
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=BEST_METRIC, checkpoint_score_order="max"
            ),
            failure_config=ray.train.FailureConfig(max_failures=2),
        ),
        datasets=datasets,
        # Each worker reads its own shards (training_datasets cuts them, seeded), in order.
        dataset_config=ray.train.DataConfig(datasets_to_split=[],
                                            execution_options=ExecutionOptions(preserve_order=True)),
    )
    started = time.perf_counter()
    result = trainer.fit()
    elapsed = time.perf_counter() - started
    best = result.get_best_checkpoint(metric=BEST_METRIC, mode="max")
    best_meta = read_meta(_uri(best.path, storage_path))
    latest_meta = read_meta(_uri(result.checkpoint.path, storage_path))
    return TrainResult(
        model=model,
        checkpoint=_uri(best.path, storage_path),
        best_epoch=int(best_meta["epoch"]),
        best_val_iou=float(best_meta["metrics"][BEST_METRIC]),
        history=latest_meta["history"],
        train_time_s=elapsed,
        resumed_from=latest_meta.get("resumed_from", []),
        epochs_redone=len(latest_meta.get("resumed_from", [])),
        train_images=sum(datasets[shard].count() for shard in shards) // passes_per_epoch(fraction),  # repeated
        train_fraction=fraction,
        passes_per_epoch=passes_per_epoch(fraction),
    )


def _uri(path: str, storage_path: str) -> str:
    """pyarrow paths carry no scheme: put the storage URI's back on for remote storage."""
    return path if storage.is_local(storage_path) else storage_path.split("://")[0] + "://" + path
