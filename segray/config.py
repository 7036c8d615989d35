"""The benchmark's settings as plain values, and the named presets.

`seeds` reproduces the two write-ups: Kaggle data, 256x256 inputs, batch 16, Adam 1e-4,
25 epochs for the UNet and 20 for the ResNet34-UNet, ImageNet encoder. `demo` is the
same pipeline shrunk to run offline on a small CPU machine in a few minutes; `demo-sweep`
is the demo as a label-efficiency and LangSAM sweep.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

KAGGLE_DATASET = "kaggle:tapakah68/segmentation-full-body-mads-dataset"


@dataclass
class TrainConfig:
    image_size: int = 256
    batch_size: int = 16
    lr: float = 1e-4
    epochs: dict[str, int] = field(default_factory=lambda: {"unet": 25, "resnet34_unet": 20})
    num_workers: int = 1  # Ray Train workers; DDP when > 1
    cpus_per_worker: float = 1.0  # also the torch threads of a CPU worker
    use_gpu: bool | None = None  # None: use GPUs when the cluster has any (`use_gpus`)
    amp: bool = True  # torch.autocast + GradScaler, on GPU only
    seed: int = 0  # the run's seed: training's weights, data order and flips, and the report's bootstrap
    # A label-efficiency sweep (--train-fractions): each trainable model also trains on these
    # nested shares of the train split (segray.train.training_rows); None: the whole split only.
    fractions: list[float] | None = None


@dataclass
class EvalConfig:
    """How the evaluation stream runs (`segray.evaluate`). Per-model settings are keyed by
    model name; a model without an entry gets the default named in its comment."""

    batch_size: dict[str, int] = field(default_factory=lambda: {"unet": 16, "resnet34_unet": 16, "langsam": 4})  # else 8
    # Each model's actor pool autoscales between min and max actors; no max: as many as
    # the cluster holds (`segray.evaluate.pools.pool_size`).
    min_actors: dict[str, int] = field(default_factory=dict)  # else 1
    max_actors: dict[str, int] = field(default_factory=dict)
    cpus_per_actor: float = 0.5  # fractional so model actors never starve the decode tasks
    # The GPU share of one actor, on a cluster with GPUs: several actors share a GPU.
    gpus_per_actor: dict[str, float] = field(default_factory=lambda: {"unet": 0.25, "resnet34_unet": 0.25,
                                                                      "langsam": 0.5})  # else 1
    cpus_per_task: float = 0.5  # of each decode and score task
    decode_batch_size: int = 16
    rows_per_block: int = 1024  # manifest rows per Ray block: fewer, larger blocks cost less per image
    # Rows per Parquet file, at least: an interruption loses the rows not yet in a file.
    rows_per_file: int = 5000
    use_gpu: bool | None = None  # model actors on GPU shares; None: when the cluster has GPUs (`use_gpus`)


@dataclass
class BenchmarkConfig:
    dataset: str = KAGGLE_DATASET
    output: str = "runs"
    run_id: str | None = None
    cache_dir: str | None = None
    # The mask value(s) that are the person (`--mask-person-values`); None: the rules of
    # segray.data.decode.decode_mask_noted (a two-valued mask's larger value, else > 127).
    mask_person_values: list[int] | None = None
    overwrite: bool = False
    resume: bool = False  # continue the unfinished run of this id (segray.run.prepare_run_dir)
    models: list[str] = field(default_factory=lambda: ["unet", "resnet34_unet", "langsam"])
    model_params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "unet": {"base_width": 64},
            "resnet34_unet": {"encoder_weights": "imagenet"},
            "langsam": {},
        }
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    "seeds": {},
    "demo": {
        "dataset": "synthetic:240",
        "model_params": {
            "unet": {"base_width": 8},
            "resnet34_unet": {"encoder_weights": "none", "decoder_channels": [64, 32, 16, 16, 8]},
            "langsam": {},
        },
        # Narrow networks at 96 px learn this set in minutes on 2 CPU cores; lr 1e-3 and
        # batch 8 give them enough steps to get there (the seeds' 1e-4 is tuned for 25 GPU epochs).
        "train": {
            "image_size": 96,
            "batch_size": 8,
            "lr": 1e-3,
            "epochs": {"unet": 25, "resnet34_unet": 8},
            "cpus_per_worker": 2,
        },
        "eval": {"batch_size": {"unet": 16, "resnet34_unet": 16, "langsam": 4}},
    },
}
# The demo as a sweep: the UNet on 3 nested shares of the train split, LangSAM over
# 3 prompts x 5 box thresholds; the report answers how much data beats LangSAM. Each share
# trains about as many steps as the whole split, so the UNet gets 12 epochs, and the
# ResNet34-UNet is left out, for the sweep to take minutes on 2 CPU cores. One CPU (and torch
# thread) per training lets each run beside the stream without two trainings' threads
# fighting for the cores (docs/PERFORMANCE.md).
PRESETS["demo-sweep"] = copy.deepcopy(PRESETS["demo"])
PRESETS["demo-sweep"]["models"] = ["unet", "langsam"]
PRESETS["demo-sweep"]["train"].update({"fractions": [0.1, 0.3, 1.0], "cpus_per_worker": 1})
PRESETS["demo-sweep"]["train"]["epochs"]["unet"] = 12
PRESETS["demo-sweep"]["model_params"]["langsam"] = {"prompts": ["human.", "people."],
                                                    "box_thresholds": [0.2, 0.25, 0.35, 0.4]}


def use_gpus(choice: bool | None, cluster: dict[str, float]) -> bool:
    """Whether to ask Ray for GPUs: as `--gpu`/`--no-gpu` said, else when the cluster has GPUs
    now. An autoscaling cluster whose GPU nodes start at zero needs `--gpu`: its GPUs come
    only once something asks for them."""
    return choice if choice is not None else cluster.get("GPU", 0) > 0


def preset(name: str) -> BenchmarkConfig:
    """A fresh config for a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    values = copy.deepcopy(PRESETS[name])
    train = TrainConfig(**values.pop("train", {}))
    evaluation = EvalConfig(**values.pop("eval", {}))
    return BenchmarkConfig(train=train, eval=evaluation, **values)
