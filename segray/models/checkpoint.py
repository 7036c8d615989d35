"""Checkpoints of the networks we train, and the version name of their weights.

A checkpoint is a directory (local or on S3): `model.safetensors` (weights), `segray.json`
(model name, params, input size, epoch, metrics, the training run's id) and, for resuming,
`optimizer.pt` (loaded with `weights_only=True`). Nothing in it is unpickled as code.

torch is imported only by the functions that need it: the report and the checkpoint
store read metadata and hashes without it.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import TYPE_CHECKING, Any

from segray import storage
from segray.config import training_name
from segray.models.networks import build_network

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS_FILE = "model.safetensors"
META_FILE = "segray.json"
OPTIMIZER_FILE = "optimizer.pt"


def save_checkpoint(
    directory: str,
    network: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write a checkpoint directory. `meta` holds at least `model`, `params`, `image_size`,
    and `run_id` (the training run: it names the weights' version); `train_fraction` for a
    training on a subset of the train split."""
    import torch
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(state, os.path.join(directory, WEIGHTS_FILE))
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), os.path.join(directory, OPTIMIZER_FILE))


def read_meta(checkpoint: str) -> dict[str, Any]:
    """A checkpoint's `segray.json` (any URI)."""
    return json.loads(storage.read_bytes(storage.join(checkpoint, META_FILE)))


def load_network(directory: str, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a local checkpoint directory describes and load its weights."""
    from safetensors.torch import load_file

    for name in (WEIGHTS_FILE, META_FILE):
        if not os.path.isfile(os.path.join(directory, name)):
            # Weights are read from safetensors only: a pickle (.bin, .pt) could run code.
            raise FileNotFoundError(
                f"{directory} is not a segray checkpoint: {name} is missing (weights are read from "
                f"{WEIGHTS_FILE} only, never from pickle files such as .bin or .pt)"
            )
    meta = read_meta(directory)
    # The checkpoint holds every weight: never fetch pretrained encoder weights again.
    network = build_network(meta["model"], {**meta["params"], "encoder_weights": None})
    network.load_state_dict(load_file(os.path.join(directory, WEIGHTS_FILE), device=device))
    return network.to(device), meta


def load_optimizer_state(directory: str) -> dict[str, Any] | None:
    import torch

    path = os.path.join(directory, OPTIMIZER_FILE)
    return torch.load(path, map_location="cpu", weights_only=True) if os.path.exists(path) else None


def weights_sha256(checkpoint: str) -> str:
    """sha256 of a checkpoint's weights file (any URI), read in 4 MiB blocks."""
    fs, path = storage.resolve(storage.join(checkpoint, WEIGHTS_FILE))
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def version_key(name: str, version: str) -> str:
    """The `model_version` of a trained model's rows: `<training name>@<version>`, e.g.
    `unet@<run id>` or `unet[frac=0.25]@<run id>`, where the version is the training run's
    id (also its name in the checkpoint store)."""
    return f"{name}@{version}"


def checkpoint_version(checkpoint: str) -> str:
    """The version of a checkpoint's weights: `<training name>@<training run id>` from its
    metadata, or, for a checkpoint that names no run, `<training name>@sha256:<first 12 hex
    digits of its weights>`."""
    meta = read_meta(checkpoint)
    name = training_name(meta["model"], meta.get("train_fraction"))
    if meta.get("run_id"):
        return version_key(name, meta["run_id"])
    return version_key(name, "sha256:" + weights_sha256(checkpoint)[:12])
