"""Which models to evaluate, and the exact weights and version of each: the one place
that turns a config plus a source of trained models into `ModelSpec`s. Benchmark,
evaluate and re-evaluate (and the jobs built on them) all call `models_to_evaluate`.

A trained model's checkpoints come from, in this order of precedence:
  1. a checkpoint folder given for it (`--checkpoint MODEL=DIR`);
  2. an MLflow registered model version (`--version MODEL=models:/segray-unet/3` or
     `models:/segray-unet@champion`, with `tracking.uri`: `segray.models.mlflow_registry`);
  3. the checkpoint store (`--checkpoint-store URI`), by selector (`--version MODEL=SELECTOR`:
     latest, best, all or a version name; the default selector is the job's);
  4. a training run's results (this run's training, or `--checkpoints-from RUN`'s training.json).
Every spec carries its `model_version`: the store's or the training run's name for it, or
what the weights say of themselves (`segray.models.catalogue.version_of`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from segray.config import DEFAULT_CACHE_DIR, TRAINABLE, Config, model_of, pairing_name, split_pairing
from segray.errors import CheckpointStoreError
from segray.models.base import ModelSpec
from segray.models.catalogue import check_available, version_of
from segray.models.checkpoint import read_meta, version_key
from segray.models.mlflow_registry import is_registered, resolve_registered
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
    tracking_uri: str | None = None  # the MLflow server that `models:/` selectors name versions of
    cache_dir: str = DEFAULT_CACHE_DIR  # where a registered version's checkpoint is downloaded


def models_to_evaluate(config: Config, trained: TrainedModels) -> tuple[list[ModelSpec], dict[str, str]]:
    """The specs to evaluate, each with its version, and the models that cannot run with
    the reason why. A name in `config.models` is a model or a training name
    (`unet[frac=0.25]`, `checkpoint.training_name`), looked up as itself in every source;
    `langsam` brings its pairings (`langsam[A+B]`).
    Raises CheckpointStoreError when a selector the user gave matches nothing (a model
    merely absent from the store is reported as unavailable)."""
    specs, unavailable = [], {}
    for name, params in _names_and_params(config):
        model = model_of(name)  # a valid name: Config checks every name in models
        try:
            found = (_trained_specs(name, model, params, trained) if model in TRAINABLE
                     else [ModelSpec(model, params, instance=name if name != model else None)])
            for spec in found:
                check_available(spec)
                spec.version = version_of(spec)
        except CheckpointStoreError as error:
            if name in trained.selectors:
                raise
            unavailable[name] = str(error)
            continue
        except Exception as error:
            log.warning("%s is unavailable: %s", name, error)
            unavailable[name] = str(error)
            continue
        if not found:
            unavailable[name] = trained.training.get(name, {}).get("error") or (
                "not trained here and no checkpoint given for it (--checkpoint-store URI; evaluate also takes "
                "--checkpoint MODEL=DIR and --checkpoints-from RUN)")
            continue
        specs += found
    return specs, unavailable


def _names_and_params(config: Config) -> list[tuple[str, dict[str, Any]]]:
    """Each model, training or LangSAM pairing (`langsam[A+B]`) to evaluate, with its parameters."""
    named = []
    for name in config.models:
        named.append((name, config.params(name)))
        if name == "langsam":
            named += [(pairing_name(*split_pairing(pairing)), config.langsam.pairing(pairing).model_dump())
                      for pairing in config.langsam.pairings]
    return named


def _trained_specs(name: str, model: str, params: dict[str, Any], trained: TrainedModels) -> list[ModelSpec]:
    """The specs of training `name` (of network `model`), from the first source that has it."""
    if name in trained.checkpoints:
        checkpoint = trained.checkpoints[name]
        meta = read_meta(checkpoint)
        return [ModelSpec(model, params=params, checkpoint=checkpoint, trained_on=meta.get("dataset_fingerprint"),
                          train_fraction=meta.get("train_fraction"))]
    if is_registered(trained.selectors.get(name, "")):
        found = resolve_registered(trained.selectors[name], name, trained.tracking_uri, trained.cache_dir)
        return [ModelSpec(model, params=params, checkpoint=found["checkpoint"], version=found["version"],
                          trained_on=found["dataset_fingerprint"], train_fraction=found["train_fraction"])]
    if trained.store:
        selector = trained.selectors.get(name, trained.default_selector)
        return [ModelSpec(model, params=params, checkpoint=record["checkpoint"],
                          version=version_key(name, record["version"]),
                          trained_on=(record.get("dataset") or {}).get("fingerprint"),
                          train_fraction=record.get("train_fraction"))
                for record in select_versions(trained.store, name, selector)]
    result = trained.training.get(name, {})
    if "checkpoint" not in result:
        return []
    return [ModelSpec(model, params=params, checkpoint=result["checkpoint"], version=result.get("version"),
                      trained_on=result.get("dataset_fingerprint"), train_fraction=result.get("train_fraction"))]
