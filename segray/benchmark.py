"""The whole comparison, stage by stage: data -> train -> evaluate -> summary.

Run layout under `<output>/<run_id>/`:
  run.json            written first: the run id was claimed and the location is writable
  train/<model>/      Ray Train's storage (checkpoints, metrics) per trained model
  training.json       the best checkpoint and per-epoch history of each trained model
  predictions/        the long-format Parquet rows (`segray.evaluate.ROW_SCHEMA`)
  summary.json        written last: a run without it did not finish
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from segray import storage
from segray.config import BenchmarkConfig
from segray.data.manifest import DEFAULT_CACHE_DIR, DatasetError, Manifest, build_manifest
from segray.models.base import ModelSpec
from segray.models.registry import SEGMENTERS, TRAINABLE, check_available, check_weights
from segray.summary import format_table, read_rows, summarize

log = logging.getLogger(__name__)


class RunError(Exception):
    """The run cannot start at its output location; the message names the URI and why."""


class RunExists(RunError):
    """The run id is taken and --overwrite was not given."""


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


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
        started = {"status": "running", "started_at": datetime.now(timezone.utc).isoformat()}
        storage.write_bytes(storage.join(uri, "run.json"), json.dumps(started).encode())
    except OSError as error:
        raise RunError(f"{uri}: cannot write the run there: {storage.describe(error)}") from error


def start_ray(address: str | None = None) -> None:
    """Join the cluster (`--ray-address`, or RAY_ADDRESS as set by `ray job submit`), or start
    a local Ray with more logical CPUs than cores: on small machines, model actors holding
    every CPU starve the decode tasks forever."""
    import ray

    if ray.is_initialized():
        return
    # Workers read and write S3 too: they need the same endpoint override.
    env_vars = {v: os.environ[v] for v in storage.ENDPOINT_VARIABLES if os.environ.get(v)}
    runtime_env = {"env_vars": env_vars} if env_vars else None
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, runtime_env=runtime_env)


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


def train_models(config: BenchmarkConfig, manifest: Manifest, uri: str) -> dict[str, dict[str, Any]]:
    """Train every trainable model in `config.models`; a model that fails is recorded with its error."""
    from segray.train import train_model, training_datasets

    results: dict[str, dict[str, Any]] = {}
    to_train = []
    for model in (m for m in config.models if m in TRAINABLE):
        try:
            check_weights(model, config.model_params.get(model, {}))
            to_train.append(model)
        except Exception as error:
            log.error("cannot train %s: %s", model, error)
            results[model] = {"model": model, "error": f"{type(error).__name__}: {error}"}
    datasets = training_datasets(manifest.table, config.train.image_size) if to_train else {}
    for model in to_train:
        log.info("training %s", model)
        try:
            result = train_model(
                model,
                config.model_params.get(model, {}),
                datasets,
                config.train,
                storage_path=storage.join(uri, "train"),
                run_name=model,
            )
            results[model] = asdict(result)
        except Exception as error:
            log.exception("training %s failed", model)
            results[model] = {"model": model, "error": f"{type(error).__name__}: {error}"}
    storage.write_bytes(storage.join(uri, "training.json"), json.dumps(results, indent=2).encode())
    return results


def model_specs(config: BenchmarkConfig, training: dict[str, dict[str, Any]]) -> tuple[list[ModelSpec], dict[str, str]]:
    """The models to evaluate, and those that cannot run with the reason why."""
    specs, unavailable = [], {}
    for model in config.models:
        if model not in SEGMENTERS:
            unavailable[model] = f"unknown model; known: {sorted(SEGMENTERS)}"
            continue
        checkpoint = None
        if model in TRAINABLE:
            if "checkpoint" not in training.get(model, {}):
                unavailable[model] = training.get(model, {}).get("error", "not trained")
                continue
            checkpoint = training[model]["checkpoint"]
        spec = ModelSpec(model, params=config.model_params.get(model, {}), checkpoint=checkpoint)
        try:
            check_available(spec)
        except Exception as error:
            log.warning("%s is unavailable: %s", model, error)
            unavailable[model] = str(error)
            continue
        specs.append(spec)
    return specs, unavailable


def evaluate_and_summarize(
    config: BenchmarkConfig,
    manifest: Manifest,
    uri: str,
    specs: list[ModelSpec],
    unavailable: dict[str, str],
    training: dict[str, dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    """Evaluate `specs`, then write summary.json (last) and return it."""
    from segray.evaluate import evaluate
    from segray.models.registry import variants_of

    predictions = storage.join(uri, "predictions")
    if specs:
        evaluate(manifest.table, specs, config.eval, predictions, config.run_id)
        rows = read_rows(predictions)
    else:
        rows = None
    expected = len(manifest.table) * sum(len(variants_of(spec)) for spec in specs)
    written = 0 if rows is None else len(rows)
    failed_training = [m for m, r in training.items() if "error" in r]
    table = manifest.table
    summary = {
        "run_id": config.run_id,
        "status": "complete" if specs and written == expected and not failed_training else "partial",
        "dataset": config.dataset,
        "dataset_root": manifest.root,
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "manifest": {
            "images": len(table),
            "train": int((table["split"] == "train").sum()),
            "val": int((table["split"] == "val").sum()),
            "pairing_problems": manifest.problems.as_dict(),
        },
        "rows": {"expected": expected, "written": written},
        "models": summarize(rows) if rows is not None else {},
        "unavailable": unavailable,
        "training": training,
        "config": config.to_dict(),
    }
    storage.write_bytes(storage.join(uri, "summary.json"), json.dumps(summary, indent=2, default=str).encode())
    return summary


def run_benchmark(config: BenchmarkConfig, ray_address: str | None = None) -> dict[str, Any]:
    """data -> train -> evaluate -> summary -> report. Returns the summary (also in summary.json)."""
    started = time.perf_counter()
    manifest = open_run(config, ray_address)
    uri = run_uri(config)
    training = train_models(config, manifest, uri)
    specs, unavailable = model_specs(config, training)
    summary = evaluate_and_summarize(config, manifest, uri, specs, unavailable, training, started)
    write_report_logged(uri)
    return summary


def write_report_logged(uri: str) -> None:
    """The report is derived from the finished run (jobs/report.py can redo it), so a
    failure to draw it is logged and does not fail the run."""
    from segray.report import write_report

    try:
        paths = write_report(uri)
        print(f"report: {paths['report.html']}")
    except Exception:
        log.exception("writing the report of %s failed; retry with: python jobs/report.py %s", uri, uri)


def print_summary(summary: dict[str, Any]) -> None:
    print(format_table(summary["models"]))
    for model, reason in summary["unavailable"].items():
        print(f"{model}: UNAVAILABLE: {reason}")
    print(f"rows written {summary['rows']['written']} of {summary['rows']['expected']}; status: {summary['status']}")
