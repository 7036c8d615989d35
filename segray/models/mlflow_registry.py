"""Trained checkpoints as MLflow registered model versions (`tracking.uri`).

A trained model's best checkpoint is registered as a version of the registered model
`registered_name(training)` (`segray-unet`, `segray-unet-frac-0.25`), whose artifacts are
the checkpoint's `model.safetensors` and `segray.json`. Its tags tie it to segray's names:

  segray.version           the version the run's rows carry (`unet@<run id>`, `checkpoint.version_key`),
                           also the checkpoint store's version name (the part after `@`)
  segray.run_id            the run that trained it
  segray.dataset_fingerprint, segray.best_val_iou
  segray.checkpoint_store  the store it was recorded in, when it was (`--checkpoint-store`)

So a store version is found in MLflow by its `segray.version` tag, and an MLflow version
names its store version. A version selector `models:/segray-unet/3` or
`models:/segray-unet@champion` (`is_registered`) resolves to a checkpoint with
`resolve_registered`.

mlflow is an optional extra (`segray[mlflow]`): it is imported only here and in
`segray.tracking`, inside functions, and only when a tracking URI is given.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from segray import storage
from segray.config import split_training_name, training_name
from segray.errors import CheckpointStoreError
from segray.models.checkpoint import read_meta
from segray.models.store import CHECKPOINT_FILES
from segray.redact import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

MODELS_SCHEME = "models:/"
CHECKPOINT_ARTIFACT = "checkpoint"  # the artifact folder of a trained model's run that holds its checkpoint
PREFIX = "segray-"
TAG = "segray."  # the prefix of segray's own MLflow tags
# The client's own defaults retry a refused request 7 times with backoff, for minutes; a
# benchmark that waits on a dead tracking server is worse than one that says so.
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "60", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                   "MLFLOW_DISABLE_TELEMETRY": "true"}


def mlflow_client(tracking_uri: str) -> MlflowClient:
    """A client of the tracking server (and model registry) at `tracking_uri`, with
    `CLIENT_DEFAULTS` unless the environment sets them."""
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise CheckpointStoreError("tracking.uri needs MLflow's client: pip install 'segray[mlflow]' "
                                   "(or mlflow-skinny)") from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def registered_name(training: str) -> str:
    """The registered model of a training (`checkpoint.training_name`): `segray-unet`, or
    `segray-unet-frac-0.25` for a training on a quarter of the train split."""
    model, fraction = split_training_name(training)
    return PREFIX + model + ("" if fraction is None else f"-frac-{fraction:g}")


def is_registered(selector: str) -> bool:
    """Whether a version selector names an MLflow registered model version (`models:/NAME/VERSION`
    or `models:/NAME@ALIAS`)."""
    return selector.startswith(MODELS_SCHEME)


def resolve_registered(selector: str, expected: str, tracking_uri: str | None, cache_dir: str) -> dict[str, Any]:
    """The checkpoint of the registered model version `selector` names, for training
    `expected` (`unet`, `unet[frac=0.25]`): {checkpoint, version, train_fraction,
    dataset_fingerprint}. `version` is the rows' version the version was registered with
    (its `segray.version` tag), else `models:/NAME/NUMBER`. An artifact store the cluster
    reads (s3://) is used in place; any other (the server's own, `mlflow-artifacts:`) is
    downloaded into CACHE_DIR/mlflow/NAME/VERSION. Raises CheckpointStoreError when there
    is no tracking URI, no such version, or it holds another model."""
    if not tracking_uri:
        raise CheckpointStoreError(f"{selector} needs tracking.uri (--tracking.uri, or MLFLOW_TRACKING_URI)")
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([\w-]+))", selector)
    if not match:
        raise CheckpointStoreError(f"{selector!r} is not a registered model version: expected models:/NAME/VERSION "
                                   "or models:/NAME@ALIAS")
    name, number, alias = match.groups()
    client = mlflow_client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version(name, number) if number else client.get_model_version_by_alias(name, alias)
        location = client.get_run(version.run_id).info.artifact_uri.rstrip("/") + "/" + CHECKPOINT_ARTIFACT
        if not location.startswith("s3://"):
            import mlflow.artifacts

            target = os.path.join(os.path.expanduser(cache_dir), "mlflow", name, version.version)
            location = mlflow.artifacts.download_artifacts(artifact_uri=f"runs:/{version.run_id}/{CHECKPOINT_ARTIFACT}",
                                                           dst_path=target, tracking_uri=tracking_uri)
    except MlflowException as error:
        raise CheckpointStoreError(redact(f"{selector} at {tracking_uri}: {error.message}")) from None
    meta = read_meta(location)
    found = training_name(meta["model"], meta.get("train_fraction"))
    if found != expected:
        raise CheckpointStoreError(f"{selector} is a checkpoint of {found}, not of {expected}")
    # A version registered by hand has no tag: its own number, never an alias, which moves.
    return {"checkpoint": location, "version": version.tags.get(TAG + "version") or f"models:/{name}/{version.version}",
            "train_fraction": meta.get("train_fraction"), "dataset_fingerprint": meta.get("dataset_fingerprint")}


def checkpoint_files(checkpoint: str, folder: str) -> str:
    """Copy a checkpoint's weights and metadata (not its optimizer state) from any URI into
    the local `folder`, to log as the run's CHECKPOINT_ARTIFACT; returns the folder."""
    for file in CHECKPOINT_FILES:
        storage.copy_file(storage.join(checkpoint, file), os.path.join(folder, file))
    return folder
