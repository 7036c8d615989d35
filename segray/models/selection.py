"""Which models to evaluate, and the exact weights and version of each: the one place
that turns a config plus a source of trained models into `ModelSpec`s. Benchmark,
evaluate and re-evaluate (and the jobs built on them) all call `models_to_evaluate`.

A trained model's checkpoints come from, in this order of precedence:
  1. a checkpoint folder given for it (`--checkpoint MODEL=DIR`);
  2. the checkpoint store (`--checkpoint-store URI`), by selector (`--version MODEL=SELECTOR`:
     latest, best, all or a version name; the default selector is the job's);
  3. a training run's results (this run's training, or `--checkpoints-from RUN`'s training.json).
Every spec carries its `model_version`: the store's or the training run's name for it, or
what the weights say of themselves (`segray.models.catalogue.version_of`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from segray.config import BenchmarkConfig
from segray.errors import CheckpointStoreError
from segray.models.base import ModelSpec
from segray.models.catalogue import SEGMENTERS, TRAINABLE, check_available, version_of
from segray.models.checkpoint import read_meta, version_key
from segray.models.store import select_versions

log = logging.getLogger(__name__)


@dataclass
class TrainedModels:
    """Where trained models come from (see the module docstring)."""

    training: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> training result or {"error": ...}
    checkpoints: dict[str, str] = field(default_factory=dict)  # model -> checkpoint folder
    store: str | None = None
    selectors: dict[str, str] = field(default_factory=dict)  # model -> selector given by the user
    default_selector: str = "latest"


def models_to_evaluate(config: BenchmarkConfig, trained: TrainedModels) -> tuple[list[ModelSpec], dict[str, str]]:
    """The specs to evaluate, each with its version, and the models that cannot run with
    the reason why. Raises CheckpointStoreError when a selector the user gave matches
    nothing (a model merely absent from the store is reported as unavailable)."""
    specs, unavailable = [], {}
    for model in config.models:
        params = config.model_params.get(model, {})
        if model not in SEGMENTERS:
            unavailable[model] = f"unknown model; known: {sorted(SEGMENTERS)}"
            continue
        try:
            found = _trained_specs(model, params, trained) if model in TRAINABLE else [ModelSpec(model, params)]
            for spec in found:
                check_available(spec)
                spec.version = version_of(spec)
        except CheckpointStoreError as error:
            if model in trained.selectors:
                raise
            unavailable[model] = str(error)
            continue
        except Exception as error:
            log.warning("%s is unavailable: %s", model, error)
            unavailable[model] = str(error)
            continue
        if not found:
            unavailable[model] = trained.training.get(model, {}).get("error") or (
                "not trained here and no checkpoint given for it (--checkpoint-store URI; evaluate also takes "
                "--checkpoint MODEL=DIR and --checkpoints-from RUN)")
            continue
        specs += found
    return specs, unavailable


def _trained_specs(model: str, params: dict[str, Any], trained: TrainedModels) -> list[ModelSpec]:
    if model in trained.checkpoints:
        checkpoint = trained.checkpoints[model]
        return [ModelSpec(model, params=params, checkpoint=checkpoint,
                          trained_on=read_meta(checkpoint).get("dataset_fingerprint"))]
    if trained.store:
        selector = trained.selectors.get(model, trained.default_selector)
        return [ModelSpec(model, params=params, checkpoint=record["checkpoint"],
                          version=version_key(model, record["version"]),
                          trained_on=(record.get("dataset") or {}).get("fingerprint"))
                for record in select_versions(trained.store, model, selector)]
    result = trained.training.get(model, {})
    if "checkpoint" not in result:
        return []
    return [ModelSpec(model, params=params, checkpoint=result["checkpoint"], version=result.get("version"),
                      trained_on=result.get("dataset_fingerprint"))]
