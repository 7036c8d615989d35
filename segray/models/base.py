"""The one interface every model implements, LangSAM included.

A model is built once per Ray actor from a `ModelSpec` and then called with batches
of images. It answers with one `Prediction` per image and per *variant*: a trained
UNet has one variant (its own name); LangSAM has one per box-selection rule, all
computed from the same forward pass. Every variant becomes its own result rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class ModelSpec:
    """What an actor needs to build a model: a catalogue name and its parameters.

    `checkpoint` is a directory written by `segray.train` (trained models) or None.
    `device` is "cuda", "cpu" or None for "cuda if available".
    `version` names the exact weights (e.g. "unet@<training run id>"); it fills the rows'
    `model_version` column. `segray.models.selection` sets it for every model it picks.
    `trained_on` is the fingerprint of the dataset it was trained on (None: not trained,
    or not recorded): scoring a dataset no model was trained on uses every image.
    `train_fraction`: the share of the train split it was trained on, when not all of it
    (`train.fractions`); its rows are then `unet[frac=0.25]` (`checkpoint.training_name`).
    `instance`: the name of a further instance of the model with other settings, which
    prefixes its rows instead of the model's name: LangSAM's pairings (`langsam[A+B]/<rule>`).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    device: str | None = None
    version: str | None = None
    trained_on: str | None = None
    train_fraction: float | None = None
    instance: str | None = None

    @property
    def label(self) -> str:
        """What the run calls it: its instance's name, else its model's."""
        return self.instance or self.name


@dataclass
class Prediction:
    """One variant's answer for one image.

    `mask` is a bool array of shape (H, W) at the input image's resolution, or None
    when the model predicted nothing (`status="no_detection"`).
    """

    mask: np.ndarray | None
    status: str = "ok"
    box_score: float | None = None
    mask_score: float | None = None
    num_detections: int | None = None


class Segmenter(Protocol):
    """A model behind the shared actor: `variants` names the rows it yields per image;
    `input_size` says what size the network sees (e.g. "96x96"), for the API's /models."""

    variants: list[str]
    input_size: str

    def predict(self, images: list[np.ndarray]) -> list[dict[str, Prediction]]:
        """Segment RGB uint8 images of shape (H, W, 3); sizes may differ within a batch.

        Returns one dict per image, mapping every name in `variants` to a Prediction.
        """
        ...


@dataclass
class Answer:
    """A model's answer for one image of a batch: its predictions by variant, or the error
    that kept it from predicting; `latency_ms` is the image's share of its batch's time."""

    predictions: dict[str, Prediction] | None
    error: str | None = None
    latency_ms: float | None = None


def predict_each(model: Segmenter, images: list[np.ndarray]) -> list[Answer]:
    """One answer per image. A batch that fails is retried image by image, so one bad image
    cannot take its neighbours down: only that image's answer carries the error. Evaluation's
    pools and the API's replicas both predict through here."""
    try:
        return _predict_timed(model, images)
    except Exception:
        answers = []
        for image in images:
            try:
                answers += _predict_timed(model, [image])
            except Exception as error:
                answers.append(Answer(None, f"{type(error).__name__}: {error}"))
        return answers


def _predict_timed(model: Segmenter, images: list[np.ndarray]) -> list[Answer]:
    started = time.perf_counter()
    predictions = model.predict(images)
    per_image_ms = 1000 * (time.perf_counter() - started) / max(1, len(images))
    return [Answer(prediction, None, per_image_ms) for prediction in predictions]


def cpu_model() -> str:
    """This machine's CPU model name (from /proc/cpuinfo on Linux)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor() or platform.machine())
    except OSError:
        return platform.processor() or platform.machine()


def describe_device(device: str) -> str:
    """What a model runs on, for the rows' `device` column: `GPU: <name>` or
    `CPU: <model> (<n> threads)`. Latency and cost only mean something with it."""
    import torch

    if device.startswith("cuda"):
        return f"GPU: {torch.cuda.get_device_name(torch.device(device))}"
    return f"CPU: {cpu_model()} ({torch.get_num_threads()} threads)"


def is_gpu(description: str | None) -> bool:
    """True for a `describe_device` description of a GPU."""
    return bool(description) and description.startswith("GPU:")


def resolve_device(device: str | None) -> str:
    """"cuda" when asked for or when a GPU is visible and nothing was asked; else "cpu"."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_images(images: list[np.ndarray]) -> list[np.ndarray]:
    """The batch as RGB uint8 arrays (H, W, 3), or ValueError naming the first that is not."""
    out = []
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {i}: expected RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
        out.append(image)
    return out
