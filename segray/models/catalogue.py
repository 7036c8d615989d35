"""Model names -> code. Adding a model is one file plus one entry here.

`TRAINABLE` maps a trainable model to the module whose `build_network(params)` makes its
torch network; `SEGMENTERS` maps every model to the class the evaluation actor builds
(`cls(spec)`). Modules are named as strings so that an actor imports only its own model
(segmentation_models_pytorch alone takes 10-20 s to import).
"""

from __future__ import annotations

import importlib

from torch import nn

from segray.models.base import ModelSpec, Segmenter

TRAINABLE = {
    "unet": "segray.models.unet",
    "resnet34_unet": "segray.models.resnet_unet",
}

SEGMENTERS = {
    "unet": "segray.models.trained:TrainedSegmenter",
    "resnet34_unet": "segray.models.trained:TrainedSegmenter",
    "langsam": "segray.models.langsam:LangSAMSegmenter",
}


def build_network(name: str, params: dict) -> nn.Module:
    """A fresh torch network for a trainable model."""
    if name not in TRAINABLE:
        raise ValueError(f"unknown trainable model {name!r}; known: {sorted(TRAINABLE)}")
    return importlib.import_module(TRAINABLE[name]).build_network(params)


def check_weights(name: str, params: dict) -> None:
    """Raise, in the driver, when a trainable model's pretrained weights cannot be had.
    A module may define `check_weights(params)`; others need no weights."""
    check = getattr(importlib.import_module(TRAINABLE[name]), "check_weights", None)
    if check is not None:
        check(params)


def build_segmenter(spec: ModelSpec) -> Segmenter:
    """The model an evaluation actor runs."""
    return _segmenter_class(spec.name)(spec)


def _segmenter_class(name: str) -> type:
    if name not in SEGMENTERS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(SEGMENTERS)}")
    module, cls = SEGMENTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def check_available(spec: ModelSpec) -> None:
    """Fail fast, in the driver, when a model cannot be built (e.g. unreachable weights).
    A segmenter class may define `check_available(spec)`; others are assumed buildable."""
    check = getattr(_segmenter_class(spec.name), "check_available", None)
    if check is not None:
        check(spec)


def variants_of(spec: ModelSpec) -> list[str]:
    """The row names a model yields per image, without building it. A segmenter class may
    define `variants_for(spec)`; otherwise the model has one variant, its own name."""
    variants_for = getattr(_segmenter_class(spec.name), "variants_for", None)
    return list(variants_for(spec)) if variants_for else [spec.name]
