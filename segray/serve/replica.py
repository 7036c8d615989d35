"""One model's Serve deployment: builds the model once per replica and answers one image per
call, batching the calls that wait (`@serve.batch`) into one forward pass.

It predicts through `predict_each`, the function evaluation's pools use, with the torch
threads evaluation's pools get (`actor_threads`), and encodes masks with `encode_mask`:
the API's mask for an image is the `mask_png` an evaluation of the same weights stores.
(On a CPU, a ResNet's oneDNN kernels can differ by a few pixels between batch shapes and
thread counts: docs/PERFORMANCE.md, "Serving".)
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import numpy as np
from ray import serve

from segray.data.decode import encode_mask, resize_mask
from segray.evaluate.stages import actor_threads
from segray.models.base import Answer, ModelSpec, describe_device, predict_each
from segray.models.catalogue import build_segmenter, version_of
from segray.schema import OK


class ModelError(RuntimeError):
    """The model failed on an image (the API answers 500 with the message)."""


@serve.deployment
class ModelServer:
    """A model replica. `segment` takes a decoded RGB image and a variant name (or "all")
    and returns the API's answer fields."""

    def __init__(self, spec: ModelSpec, default_variant: str, max_batch_size: int, batch_wait_s: float,
                 cpus_per_replica: float, models_per_node: int):
        import torch

        torch.set_num_threads(actor_threads(cpus_per_replica, models_per_node, torch.cuda.is_available()))
        self.model = build_segmenter(spec)
        self.info = {
            "name": spec.name,
            "model_version": version_of(spec),
            "variants": list(self.model.variants),
            "default_variant": default_variant,
            "input_size": self.model.input_size,
            "device": describe_device(str(getattr(self.model, "device", "cpu"))),
            "max_batch_size": max_batch_size,
        }
        self.predict_batch.set_max_batch_size(max_batch_size)
        self.predict_batch.set_batch_wait_timeout_s(batch_wait_s)

    def describe(self) -> dict[str, Any]:
        return self.info

    async def segment(self, image: np.ndarray, variant: str) -> dict[str, Any]:
        started = time.perf_counter()
        answer, batch_size = await self.predict_batch(image)
        if answer.error is not None:
            raise ModelError(f"{self.info['name']} failed on this image: {answer.error}")
        names = self.model.variants if variant == "all" else [variant]
        shape = image.shape[:2]
        fields = await asyncio.to_thread(lambda: {name: _fields(answer, name, shape) for name in names})
        common = {
            "model": self.info["name"],
            "model_version": self.info["model_version"],
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "latency_ms": round(1000 * (time.perf_counter() - started), 3),
            "batch_size": batch_size,
        }
        if variant == "all":
            return {**common, "variants": fields}
        return {**common, "variant": variant, **fields[variant]}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def predict_batch(self, images: list[np.ndarray]) -> list[tuple[Answer, int]]:
        # The forward pass runs off the event loop, so requests keep queueing meanwhile.
        answers = await asyncio.to_thread(predict_each, self.model, images)
        return [(answer, len(images)) for answer in answers]


def _fields(answer: Answer, variant: str, shape: tuple[int, int]) -> dict[str, Any]:
    """One variant's answer fields; `mask_png` is base64 of the bytes evaluation stores in
    `mask_png` (None unless the status is ok)."""
    prediction = answer.predictions[variant]
    png = None
    if prediction.status == OK:
        mask = prediction.mask if prediction.mask is not None else np.zeros(shape, bool)
        png = base64.b64encode(encode_mask(resize_mask(mask.astype(bool), shape))).decode("ascii")
    return {
        "status": prediction.status,
        "mask_png": png,
        "box_score": prediction.box_score,
        "mask_score": prediction.mask_score,
        "num_detections": prediction.num_detections,
    }
