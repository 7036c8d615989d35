"""Checkpoints of the networks we train, and the segmenter that runs them.

A checkpoint is a directory: `model.safetensors` (weights), `segray.json` (model name,
params, input size, epoch, metrics) and, for resuming, `optimizer.pt` (loaded with
`weights_only=True`). Nothing in it is unpickled as code.
"""

from __future__ import annotations

import json
import os
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from segray import storage
from segray.data.transforms import inference
from segray.models.base import ModelSpec, Prediction, resolve_device
from segray.models.registry import build_network

WEIGHTS_FILE = "model.safetensors"
META_FILE = "segray.json"
OPTIMIZER_FILE = "optimizer.pt"


def save_checkpoint(
    directory: str,
    network: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write a checkpoint directory. `meta` holds at least `model`, `params`, `image_size`."""
    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(state, os.path.join(directory, WEIGHTS_FILE))
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), os.path.join(directory, OPTIMIZER_FILE))


def read_meta(directory: str) -> dict[str, Any]:
    with open(os.path.join(directory, META_FILE)) as f:
        return json.load(f)


def load_network(directory: str, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint describes and load its weights."""
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
    path = os.path.join(directory, OPTIMIZER_FILE)
    return torch.load(path, map_location="cpu", weights_only=True) if os.path.exists(path) else None


class TrainedSegmenter:
    """Runs a trained network: the seeds' validation transform, sigmoid > 0.5, and the
    probability map resized back to each image's own resolution before thresholding.

    Without a checkpoint it builds the network untrained (random weights), which is the
    baseline that training has to beat.
    """

    def __init__(self, spec: ModelSpec):
        self.device = resolve_device(spec.device)
        if spec.checkpoint:
            self.network, meta = load_network(storage.local_copy(spec.checkpoint), self.device)
            self.image_size = int(meta["image_size"])
        else:
            self.network = build_network(spec.name, {**spec.params, "encoder_weights": None}).to(self.device)
            self.image_size = int(spec.params.get("image_size", 256))
        # channels_last: oneDNN's (and cuDNN's) faster convolution layout; on this project's
        # CPU it made a UNet's forward 1.5x and a ResNet34-UNet's 1.14x faster (docs/PERFORMANCE.md).
        self.network.to(memory_format=torch.channels_last).eval()
        self.transform = inference(self.image_size)
        self.variants = [spec.name]

    @torch.inference_mode()
    def predict(self, images: list[np.ndarray]) -> list[dict[str, Prediction]]:
        batch = torch.stack([self.transform(image=image)["image"] for image in images])
        batch = batch.to(self.device, memory_format=torch.channels_last)
        probabilities = torch.sigmoid(self.network(batch))[:, 0].float().cpu().numpy()
        results = []
        for image, probability in zip(images, probabilities):
            height, width = image.shape[:2]
            full = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR)
            results.append({self.variants[0]: Prediction(mask=full > 0.5)})
        return results

