"""What every job does with its settings before it works: read them (`segray.settings`),
check what can be checked without Ray, and set up the process (`set_up`).

A job's `main` calls `job_config` first: a bad setting exits 2 there, before Ray starts.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys

from segray import storage
from segray.config import Config
from segray.errors import SettingsError
from segray.models.mlflow_registry import is_registered
from segray.models.selection import TrainedModels
from segray.redact import redact
from segray.settings import load

EXPERIMENT = "segray"  # the MLflow experiment when neither tracking.experiment nor MLFLOW_EXPERIMENT_NAME names one
# A local Ray's workers run in the job's own environment. Under `uv run`, Ray would otherwise
# build each worker a copy of the project in a new environment: every actor and Ray Train
# worker then took longer to start (docs/PERFORMANCE.md). On a cluster Ray's default stays:
# there `uv run` is how workers on other nodes get the locked environment (k8s/rayjob.yaml).
# Read when Ray is imported.
RAY_WORKER_ENV = {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


def job_config(job: str, argv: list[str] | None = None) -> Config:
    """The job's settings (`segray.settings.load`), with the folders it names made absolute
    and its MLflow tracking checked; a bad setting is the message on stderr and exit 2."""
    try:
        config = load(job, argv)
        mlflow_tracking(config)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    config.data.dataset = absolute_if_here(config.data.dataset)
    config.langsam.detector = absolute_if_here(config.langsam.detector)
    config.langsam.sam = absolute_if_here(config.langsam.sam)
    return config


def set_up(config: Config) -> None:
    """What a job sets up before it imports Ray: the console's log level (`verbose`: INFO),
    the S3 endpoint (`cluster.s3_endpoint_url`), which Ray's workers inherit, and, for a
    local Ray, its workers' Python (`RAY_WORKER_ENV`)."""
    logging.basicConfig(level=logging.INFO if config.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config.cluster.s3_endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = config.cluster.s3_endpoint_url
    if not (config.cluster.ray_address or os.environ.get("RAY_ADDRESS")):
        set_ray_worker_env()


def set_ray_worker_env() -> None:
    """`RAY_WORKER_ENV` in this process's environment, before Ray is imported, for a Ray
    this process starts; a value the user set wins."""
    for name, value in RAY_WORKER_ENV.items():
        os.environ.setdefault(name, value)


def absolute_if_here(value: str) -> str:
    """A relative path that exists here, made absolute; anything else as it is. Ray's workers
    do not run in the job's directory (`ray job submit --working-dir` gives them a copy of
    it, without its ignored files), so a folder named relative to it is not found there."""
    path = os.path.expanduser(value)
    return os.path.abspath(path) if os.path.exists(path) else value


def mlflow_tracking(config: Config) -> tuple[str | None, str]:
    """(tracking URI or None: no tracking, experiment) from the settings, else the environment."""
    uri = config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri and importlib.util.find_spec("mlflow") is None:
        raise SettingsError(f"tracking.uri: MLflow tracking ({redact(uri)}) needs MLflow's client: "
                            "pip install 'segray[mlflow]'")
    return uri, config.tracking.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def trained_models(config: Config, default_selector: str) -> TrainedModels:
    """Where the trained models come from (`segray.models.selection`): the settings'
    `checkpoints` and MLflow. A version that cannot be looked up is a SettingsError."""
    checkpoints = config.checkpoints
    tracking_uri = mlflow_tracking(config)[0]
    stored = [model for model, selector in checkpoints.versions.items() if not is_registered(selector)]
    if stored and not checkpoints.store:
        raise SettingsError(f"checkpoints.versions: {stored[0]}={checkpoints.versions[stored[0]]} needs "
                            "checkpoints.store (a registered version is models:/NAME/VERSION or models:/NAME@ALIAS)")
    if len(stored) < len(checkpoints.versions) and not tracking_uri:
        raise SettingsError("checkpoints.versions: MODEL=models:/... needs tracking.uri (or MLFLOW_TRACKING_URI)")
    training = {}
    if checkpoints.run:
        training = json.loads(storage.read_bytes(storage.join(checkpoints.run, "training.json")))
    return TrainedModels(training=training, checkpoints=dict(checkpoints.dirs), store=checkpoints.store,
                         selectors=dict(checkpoints.versions), default_selector=default_selector,
                         tracking_uri=tracking_uri, cache_dir=config.data.cache_dir)
