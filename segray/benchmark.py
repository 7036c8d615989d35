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


def run_failed(uri: str, message: str) -> RunError:
    """The error to raise for a run that cannot go on. Its run.json says "failed" when the
    location still takes writes; either way the run has no summary.json, so it is not complete."""
    failed = {"status": "failed", "error": message, "failed_at": datetime.now(timezone.utc).isoformat()}
    try:
        storage.write_bytes(storage.join(uri, "run.json"), json.dumps(failed).encode())
    except OSError as error:
        log.warning("cannot mark %s failed: %s", uri, storage.describe(error))
    return RunError(message)


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
        spec = ModelSpec(model, params=config.model_params.get(model, {}), checkpoint=checkpoint,
                         version=training.get(model, {}).get("version"))
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
        try:
            evaluate(manifest.table, specs, config.eval, predictions, config.run_id)
            rows = read_rows(predictions)
        except OSError as error:  # the output went away mid-run
            # A Ray task's error is also of its cause's type; its own message is the remote traceback.
            cause = getattr(error, "cause", None) or error
            raise run_failed(uri, f"{predictions}: cannot write the rows there: {storage.describe(cause)}") from error
    else:
        rows = None
    expected = len(manifest.table) * sum(len(variants_of(spec)) for spec in specs)
    written = 0 if rows is None else len(rows)
    # Rows with status "error", in every split, per model that has any: one makes the run partial.
    errors_by_model = {}
    if rows is not None:
        counts = rows.loc[rows["status"] == "error", "model"].value_counts().sort_index()
        errors_by_model = {model: int(n) for model, n in counts.items()}
    failed_training = [m for m, r in training.items() if "error" in r]
    table = manifest.table
    summary = {
        "run_id": config.run_id,
        "status": "complete" if specs and written == expected and not errors_by_model and not failed_training
        else "partial",
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
        "rows": {"expected": expected, "written": written, "errors": sum(errors_by_model.values()),
                 "errors_by_model": errors_by_model},
        "models": summarize(rows) if rows is not None else {},
        "unavailable": unavailable,
        "training": training,
        "config": config.to_dict(),
    }
    storage.write_bytes(storage.join(uri, "summary.json"), json.dumps(summary, indent=2, default=str).encode())
    return summary


def register_trained(registry: str, config: BenchmarkConfig, manifest: Manifest,
                     training: dict[str, dict[str, Any]]) -> bool:
    """Record each trained model's best checkpoint in the registry, as version `config.run_id`.
    False, with the reason logged, when that failed (the run's own outputs are unaffected)."""
    from segray.model_registry import RegistryError, record_training

    try:
        records = record_training(registry, training, config.run_id, config.to_dict(), config.dataset, manifest.table)
    except (RegistryError, OSError) as error:
        log.error("recording the trained models in %s failed: %s", registry, error)
        return False
    for record in records:
        print(f"registered {record['model']} version {record['version']} in {registry}")
    return True


def run_benchmark(config: BenchmarkConfig, ray_address: str | None = None, registry: str | None = None) -> dict[str, Any]:
    """data -> train -> evaluate -> summary -> report. Returns the summary (also in summary.json).
    With `registry`, each trained model's best checkpoint is recorded there after training."""
    started = time.perf_counter()
    manifest = open_run(config, ray_address)
    uri = run_uri(config)
    training = train_models(config, manifest, uri)
    if registry:
        register_trained(registry, config, manifest, training)
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
    rows = summary["rows"]
    print(f"rows written {rows['written']} of {rows['expected']}, {rows['errors']} with status error "
          f"(their error column says what and where); status: {summary['status']}")
