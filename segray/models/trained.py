"""The segmenter that runs a network we trained (`segray.models.checkpoint`)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from segray import storage
from segray.config import training_name
from segray.data.transforms import inference
from segray.models.base import ModelSpec, Prediction, resolve_device
from segray.models.checkpoint import checkpoint_version, load_network
from segray.models.networks import build_network


class TrainedSegmenter:
    """Runs a trained network: the article's validation transform, sigmoid > 0.5, and the
    probability map resized back to each image's own resolution before thresholding.

    Without a checkpoint it builds the network untrained (random weights), which is the
    baseline that training has to beat.
    """

    def __init__(self, spec: ModelSpec):
        self.device = resolve_device(spec.device)
        if spec.checkpoint:
            with storage.local_copy(spec.checkpoint) as folder:
                self.network, meta = load_network(folder, self.device)
            self.image_size = int(meta["image_size"])
        else:
            self.network = build_network(spec.name, {**spec.params, "encoder_weights": None}).to(self.device)
            self.image_size = int(spec.params.get("image_size", 256))
        # channels_last: oneDNN's (and cuDNN's) faster convolution layout; on this project's
        # CPU it made a UNet's forward 1.5x and a ResNet34-UNet's 1.14x faster (docs/PERFORMANCE.md).
        self.network.to(memory_format=torch.channels_last).eval()
        self.transform = inference(self.image_size)
        self.variants = self.variants_for(spec)
        self.input_size = f"{self.image_size}x{self.image_size}"

    @classmethod
    def variants_for(cls, spec: ModelSpec) -> list[str]:
        """Its rows' name: the training's (`unet`, or `unet[frac=0.25]` for a subset's)."""
        return [training_name(spec.name, spec.train_fraction)]

    @classmethod
    def version_for(cls, spec: ModelSpec) -> str | None:
        """The weights' version (segray.models.catalogue asks): the checkpoint's own, or
        None for an untrained network."""
        return checkpoint_version(spec.checkpoint) if spec.checkpoint else None

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
