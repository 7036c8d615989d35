"""The model catalogue: model names -> code. Adding a model is one file, one entry here and
its settings' section in `segray.config.MODEL_SECTIONS` (its name, parameters and defaults).

`SEGMENTERS` maps every model to the class the evaluation actor builds (`cls(spec)`);
the trainable ones (`segray.config.TRAINABLE`) also have a network in `segray.models.networks`. Classes are named as
strings so that an actor imports only its own model. A segmenter class may define, as
classmethods taking the spec: `check_available` (raise in the driver when it cannot be
built), `variants_for` (its row names, without building it) and `version_for` (the
version name of its weights).
"""

from __future__ import annotations

import importlib

from segray.models.base import ModelSpec, Segmenter

SEGMENTERS = {
    "unet": "segray.models.trained:TrainedSegmenter",
    "resnet34_unet": "segray.models.trained:TrainedSegmenter",
    "langsam": "segray.models.langsam:LangSAMSegmenter",
    "sam3": "segray.models.sam3:Sam3Segmenter",
}


def build_segmenter(spec: ModelSpec) -> Segmenter:
    """The model an evaluation actor runs."""
    return _segmenter_class(spec.name)(spec)


def _segmenter_class(name: str) -> type:
    if name not in SEGMENTERS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(SEGMENTERS)}")
    module, cls = SEGMENTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def check_available(spec: ModelSpec) -> None:
    """Fail fast, in the driver, when a model cannot be built (e.g. unreachable weights)."""
    check = getattr(_segmenter_class(spec.name), "check_available", None)
    if check is not None:
        check(spec)


def variants_of(spec: ModelSpec) -> list[str]:
    """The row names a model yields per image, without building it: its own name unless
    the class says otherwise."""
    variants_for = getattr(_segmenter_class(spec.name), "variants_for", None)
    return list(variants_for(spec)) if variants_for else [spec.name]


def version_of(spec: ModelSpec) -> str | None:
    """The `model_version` of a model's rows: the spec's own when its source named it
    (the checkpoint store, a training run), else what the class derives from its weights."""
    if spec.version:
        return spec.version
    version_for = getattr(_segmenter_class(spec.name), "version_for", None)
    return version_for(spec) if version_for else None
