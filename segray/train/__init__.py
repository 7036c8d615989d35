"""Training of the UNets on Ray Train: a data-parallel (DDP) `TorchTrainer` per training.

Data reaches the workers through Ray Data: every image is decoded and resized once and
cached in the object store, one seeded shard per worker (`segray.train.data`); each
worker runs `segray.train.loop.train_loop_per_worker` over its shard. Each epoch reports
the mean train loss and the validation IoU (all workers combined) with a checkpoint;
evaluation uses the checkpoint with the best validation IoU.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from segray import storage
from segray.config import Config, split_training_name, use_gpus
from segray.train.data import load_resized, passes_per_epoch, training_datasets, training_rows
from segray.train.loop import BEST_METRIC, Augment, LoopConfig, train_loop_per_worker

# How often Ray Train's controller polls its workers (Ray's default is 2 s). A fit's start,
# each epoch's report and a fit's end each wait for a poll: 0.25 s takes about 10 s off a
# fit of a few epochs (docs/PERFORMANCE.md). Set in the driver, which Ray Train passes it on from.
CONTROLLER_POLL_S = "0.25"

__all__ = ["BEST_METRIC", "Augment", "LoopConfig", "TrainResult", "load_resized", "passes_per_epoch", "train_model",
           "training_datasets", "training_rows"]


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


def train_model(name: str, config: Config, datasets: dict[str, Any], storage_path: str, run_id: str | None = None,
                dataset_fingerprint: str | None = None) -> TrainResult:
    """Train the training `name` (a network, or its training on a share of the train split:
    `unet[frac=0.25]`, whose `datasets` hold that subset, repeated: `training_datasets(...,
    fraction)`) with a TorchTrainer into `storage_path/name`, by `config`'s training, the
    network's settings and the run's seed; return its best checkpoint by validation IoU.
    `run_id` and `dataset_fingerprint` are recorded in every checkpoint: they name the
    weights' version and the data they were trained on."""
    import ray
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    from segray.models.checkpoint import read_meta

    train = config.train
    model, fraction = split_training_name(name)
    shards = sorted(shard for shard in datasets if shard.startswith("train_"))
    if len(shards) != train.num_workers:
        raise ValueError(f"the datasets hold {len(shards)} training shards for {train.num_workers} workers: "
                         "cut them with training_datasets(..., num_workers)")
    use_gpu = use_gpus(config.cluster.gpu, ray.cluster_resources())
    loop = LoopConfig(model=model, name=name, epochs=config.epochs(model), image_size=train.image_size,
                      batch_size=train.batch_size, lr=train.lr, seed=config.seed,
                      cpus_per_worker=train.cpus_per_worker, amp=train.amp, params=config.params(model),
                      run_id=run_id, dataset_fingerprint=dataset_fingerprint, train_fraction=fraction)
    fs, path = storage.resolve(storage_path)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=asdict(loop),
        scaling_config=ray.train.ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": train.cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name,
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
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", CONTROLLER_POLL_S)  # the user's own value wins
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
