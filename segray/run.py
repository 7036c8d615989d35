"""A run's lifecycle: its id, its folder, its manifest and its Ray.

Run layout under `<output>/<run_id>/`:
  run.json            written first: the run id was claimed and the location is writable
  train/<model>/      Ray Train's storage (checkpoints, metrics) per trained model
  training.json       the best checkpoint, version and per-epoch history of each trained model
  predictions/        the long-format Parquet rows (`segray.schema.ROW_SCHEMA`)
  summary.json        written last: a run without it did not finish
  report/             the comparison report (`segray.report`)
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime

from segray import storage
from segray.config import BenchmarkConfig
from segray.data.manifest import DEFAULT_CACHE_DIR, Manifest, build_manifest
from segray.errors import DatasetError, RunError, RunExists

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def run_uri(config: BenchmarkConfig) -> str:
    return storage.join(config.output, config.run_id)


def prepare_run_dir(uri: str, overwrite: bool) -> None:
    """A run id is written once: an existing run is refused, or removed whole with overwrite,
    so rows are never appended twice. Writing `run.json` first proves the location works
    (endpoint, bucket, credentials) before any work starts."""
    try:
        if storage.exists(uri):
            if not overwrite:
                raise RunExists(f"{uri} already exists: choose another --run-id, or pass --overwrite to replace it")
            storage.delete_dir(uri)
        started = {"status": "running", "started_at": datetime.now(UTC).isoformat()}
        storage.write_bytes(storage.join(uri, "run.json"), json.dumps(started).encode())
    except OSError as error:
        raise RunError(f"{uri}: cannot write the run there: {storage.describe(error)}") from error


def run_failed(uri: str, message: str) -> RunError:
    """The error to raise for a run that cannot go on. Its run.json says "failed" when the
    location still takes writes; either way the run has no summary.json, so it is not complete."""
    failed = {"status": "failed", "error": message, "failed_at": datetime.now(UTC).isoformat()}
    try:
        storage.write_bytes(storage.join(uri, "run.json"), json.dumps(failed).encode())
    except OSError as error:
        log.warning("cannot mark %s failed: %s", uri, storage.describe(error))
    return RunError(message)


def start_ray(address: str | None = None) -> None:
    """Join the cluster (`--ray-address`, or RAY_ADDRESS as set by `ray job submit`), or start
    a local Ray with more logical CPUs than cores: on small machines, model actors holding
    every CPU starve the decode tasks forever.

    Unless the job logs at INFO (`-v`), Ray's own output stays out of the console: its
    progress bars, Ray Data's per-dataset lines and the workers' logs (Ray Train's
    controller warns every few seconds of a fit). All of it stays in Ray's session logs."""
    import ray

    if ray.is_initialized():
        return
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    if not verbose:
        quiet_ray_data()
    # Workers read and write S3 too: they need the same endpoint override. cuBLAS needs a
    # fixed workspace to be deterministic (--seed), set before CUDA starts in a worker.
    env_vars = {v: os.environ[v] for v in storage.ENDPOINT_VARIABLES if os.environ.get(v)}
    env_vars["CUBLAS_WORKSPACE_CONFIG"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Ray's own loggers (start-up, packaging the working dir) at its level: INFO only with -v.
    quiet = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    runtime_env = {"env_vars": env_vars}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, runtime_env=runtime_env, **quiet)
    else:
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, runtime_env=runtime_env, **quiet)
    if not verbose:
        print("Ray's own logs are in its session folder on the head node (by default /tmp/ray/session_latest/logs); "
              "-v shows them here", flush=True)


def quiet_ray_data() -> None:
    """No progress bars (the datasets made after this carry the setting to the workers, Ray
    Train's included) and only Ray Data's errors on the console (its warnings include one
    that the progress bars are off); its log file in Ray's session folder keeps the rest."""
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console's; the session file's is not one
            handler.setLevel(logging.ERROR)


def load_manifest(config: BenchmarkConfig) -> Manifest:
    manifest = build_manifest(config.dataset, config.cache_dir or DEFAULT_CACHE_DIR)
    problems = {k: v for k, v in manifest.problems.counts().items() if v}
    if problems:
        log.warning("dataset pairing problems (named in summary.json): %s", problems)
    return manifest


def open_run(config: BenchmarkConfig, ray_address: str | None = None) -> Manifest:
    """Everything that can fail before work starts: claim the run id at a writable location,
    read the dataset into a manifest, join or start Ray. Raises RunError or DatasetError."""
    config.run_id = config.run_id or new_run_id()
    uri = run_uri(config)
    prepare_run_dir(uri, config.overwrite)
    try:
        manifest = load_manifest(config)
    except DatasetError:
        storage.delete_dir(uri)  # nothing was done: give the run id back
        raise
    start_ray(ray_address)
    return manifest
