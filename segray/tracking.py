"""A finished run in MLflow (`tracking.uri`), logged from its folder alone.

Every job logs its run when it ends (`log_finished`); `jobs/log_mlflow.py RUN` logs one
afterwards, e.g. when the tracking server was down. What one run becomes in the experiment:

  parent run     name "<kind> <run id>", kind: benchmark, evaluate, train or reevaluate
    tags         segray.run_id, segray.kind, segray.finished_at (with the run id: which run
                 this is), segray.status, segray.dataset_fingerprint, segray.run (the run's
                 folder), segray.predictions (its rows, linked, not copied),
                 mlflow.source.git.commit (the code that ran: run.json's git_sha)
    params       the settings, flattened (`unet.epochs`, `langsam.prompt`)
    metrics      per model variant `<variant>/<metric>` (`metric_key`): report/report.json's
                 (`segray.report.analysis.tracked_metrics`), else summary.json's; and the rows'
                 counts; a re-evaluation: per model version, its images and mean IoU
    artifacts    summary.json, training.json, run.json, report/ (or the partition's commit and
                 the trend report)
  child run      one per trained model, name = its training (`unet[frac=0.25]`): its training
                 params, per epoch train_loss, val_iou and epoch_time_s (step = epoch), its
                 best checkpoint as artifact `checkpoint/`, registered as a model version
                 (`segray.models.mlflow_registry`)

A run is logged once: a parent with the same run id and finished_at that is FINISHED means
done; an unfinished one (the server went away while logging) is deleted, with its children
and model versions, and logged again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from segray import storage
from segray.models.checkpoint import version_key
from segray.models.mlflow_registry import (
    CHECKPOINT_ARTIFACT,
    TAG,
    checkpoint_files,
    mlflow_client,
    registered_name,
)
from segray.redact import redact
from segray.report import REPORT_JSON, read_json
from segray.results.read import COMMIT_FILE
from segray.run import RUN_FILE, update_record

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 10  # how long the server has to answer /health before the run is not logged
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value
BATCH_PARAMS, BATCH_METRICS = 100, 1000  # MLflow's limits per log_batch
EPOCH_METRICS = ("train_loss", "val_iou", "epoch_time_s")
TRAINING_PARAMS = ("train_fraction", "train_images", "passes_per_epoch", "best_epoch")
RUN_FILES = ("summary.json", "training.json", RUN_FILE)
MAX_VERSION_IN_KEY = 80  # MLflow keys hold 250 characters, with the variant's name and the metric's


@dataclass
class Logged:
    """What `log_run` did: the parent run's id, the model versions it registered
    (`models:/NAME/VERSION`), whether the run was there already, or the error that stopped it."""

    run_id: str | None = None
    registered: list[str] = field(default_factory=list)
    already: bool = False
    error: str | None = None


def metric_key(name: str) -> str:
    """A model variant's name as MLflow takes it in a metric's key (letters, digits, `_-. /`):
    `unet[frac=0.25]` -> `unet.frac_0.25`, `langsam/union[people.@0.4]` -> `langsam/union.people._at_0.4`."""
    name = name.replace("[", ".").replace("]", "").replace("=", "_").replace("@", "_at_")
    return re.sub(r"[^\w.\- /]", "_", name)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: `{"train": {"lr": 0.001}}` -> `{"train.lr": "0.001"}`;
    lists as JSON, values cut to MLflow's 6,000 characters."""
    if isinstance(value, dict):
        return {key: text for k, v in value.items() for key, text in flatten(v, f"{prefix}{k}.").items()}
    text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return {metric_key(prefix.rstrip(".")): text[:MAX_PARAM_LENGTH]}


def describe_run(uri: str) -> dict[str, Any]:
    """What is logged of the finished run at `uri`: kind, run_id, finished_at, status, tags,
    params, metrics, training (the trained models' results), artifacts ({artifact path:
    URI}), checkpoint_store. Raises ValueError for a folder that holds no finished run."""
    summary, training = read_json(storage.join(uri, "summary.json")), read_json(storage.join(uri, "training.json"))
    record, commit = read_json(storage.join(uri, RUN_FILE)) or {}, read_json(storage.join(uri, COMMIT_FILE))
    report = read_json(storage.join(uri, "report", REPORT_JSON))
    files = {name: storage.join(uri, name) for name in RUN_FILES if storage.exists(storage.join(uri, name))}
    if storage.exists(storage.join(uri, "report", "report.md")):
        files.update(report_files(storage.join(uri, "report")))
    metrics_from = REPORT_JSON if report else None
    if summary is not None:
        metrics_from = metrics_from or "summary.json"  # the report was not drawn: mean IoU and latency only
        per_model = (report or {}).get("models") or {
            model: {k: s[k] for k in ("scored_images", "mean_iou", "mean_iou_detected", "mean_latency_ms")}
            for model, s in summary["models"].items()}
        rows = summary["rows"]
        # a benchmark writes training.json, even when it trained nothing (LangSAM alone)
        run = {"kind": "evaluate" if training is None else "benchmark", "run_id": summary["run_id"],
               "finished_at": summary["finished_at"], "status": summary["status"], "config": summary["config"],
               "fingerprint": summary["dataset_fingerprint"], "training": training or {},
               "metrics": {"rows_expected": rows["expected"], "rows_written": rows["written"],
                           "rows_errors": rows["errors"], "wall_time_s": summary["wall_time_s"]},
               "per_model": per_model, "predictions": storage.join(uri, "predictions")}
    elif commit is not None:  # a re-evaluation's partition: RESULTS/run=<run id>/
        results = uri.rstrip("/").rsplit("/", 1)[0]
        trend = storage.join(results, "report", "trend.csv")
        per_model = latest_trend(trend, commit["run_id"]) if storage.exists(trend) else {}
        metrics_from = "trend.csv" if per_model else None
        files = {COMMIT_FILE: storage.join(uri, COMMIT_FILE)}
        if storage.exists(trend):
            files.update(report_files(storage.join(results, "report")))
        run = {"kind": "reevaluate", "run_id": commit["run_id"], "finished_at": commit["finished_at"],
               "status": "complete", "config": {"versions": commit["versions"], "dataset": commit["dataset"]},
               "fingerprint": (commit.get("dataset") or {}).get("fingerprint"), "training": {},
               "metrics": {"rows_written": commit["rows"], "images": commit["images"],
                           "wall_time_s": commit["wall_time_s"]},
               "per_model": per_model, "predictions": uri}
    elif training is not None and record.get("finished_at"):
        run = {"kind": "train", "run_id": os.path.basename(uri.rstrip("/")), "finished_at": record["finished_at"],
               "status": record.get("status"), "config": record.get("settings") or {},
               "fingerprint": record.get("dataset_fingerprint"), "training": training, "metrics": {},
               "per_model": {}, "predictions": None}
    else:
        raise ValueError(f"{uri} holds no finished run (no summary.json, finished training.json or "
                         f"{COMMIT_FILE}): nothing to log")
    run["git_sha"] = record.get("git_sha") or (commit or {}).get("git_sha")
    run["checkpoint_store"] = record.get("checkpoint_store")
    run["metrics_from"] = metrics_from
    run["artifacts"] = files
    for model, numbers in run.pop("per_model").items():
        run["metrics"].update({f"{metric_key(model)}/{name}": value for name, value in numbers.items()
                               if isinstance(value, int | float)})
    return run


def report_files(folder: str) -> dict[str, str]:
    """{artifact path `report/NAME`: URI} of the files in a report folder."""
    return {f"report/{name}": storage.join(folder, name) for name in storage.list_files(folder)}


def latest_trend(trend_csv: str, run_id: str) -> dict[str, dict[str, float]]:
    """A re-evaluation's points in the trend (`segray.reevaluate.trend`): per `variant@version`
    (`unet@<run id>`: the rows' model_version, whose model part the variant names already),
    its images and mean IoU after that run."""
    points = pd.read_csv(io.BytesIO(storage.read_bytes(trend_csv)))
    mine = points[points["run_id"].astype(str) == run_id]
    return {f"{r.model}@{short_version(str(r.model_version))}": {"images": int(r.images), "mean_iou": float(r.mean_iou)}
            for r in mine.itertuples()}


def short_version(version: str) -> str:
    """The part of a rows' version after `@` (`unet@RUN` -> RUN), or, when it is too long for
    a metric's key (LangSAM's names its weights' folders and settings), `sha-` and 12 hex
    digits of it."""
    label = version.partition("@")[2]
    return label if len(label) <= MAX_VERSION_IN_KEY else "sha-" + hashlib.sha256(label.encode()).hexdigest()[:12]


def server_answers(tracking_uri: str) -> str | None:
    """None when an http(s) tracking server answers /health (or the URI is no server), else why not."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    import requests

    # the client's own TLS settings (a private CA, or none checked)
    verify = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() != "true" and (
        os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True)
    try:
        requests.get(tracking_uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S, verify=verify).raise_for_status()
    except requests.RequestException as error:
        return f"the tracking server does not answer: {error}"
    return None


def log_run(uri: str, tracking_uri: str, experiment: str) -> Logged:
    """Log the finished run at `uri` into `experiment` (module docstring). An unreachable or
    refusing server, or a run folder that cannot be read, is returned as `Logged.error`,
    never raised: the run stands without it. Raises ValueError when `uri` holds no finished run."""
    uri = os.path.abspath(uri) if storage.is_local(uri) else uri  # the tags name it from anywhere
    try:
        run = describe_run(uri)
    except OSError as error:
        return Logged(error=f"cannot read the run at {uri}: {storage.describe(error)}")
    reason = server_answers(tracking_uri)
    if reason:
        return Logged(error=reason)
    logged = Logged()
    client = None
    try:
        client = mlflow_client(tracking_uri)  # checks the URI's scheme
        experiment_id = experiment_id_of(client, experiment)
        identity = {TAG + "run_id": run["run_id"], TAG + "finished_at": run["finished_at"]}
        where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in identity.items())
        earlier = client.search_runs([experiment_id], f"{where} and tags.`{TAG}role` = 'run'")
        done = [r for r in earlier if r.info.status == "FINISHED"]
        if done:
            return Logged(run_id=done[0].info.run_id, already=True)
        forget_attempts(client, experiment_id, where)
        tags = {TAG + "role": "run", TAG + "kind": run["kind"], TAG + "status": run["status"],
                TAG + "dataset_fingerprint": run["fingerprint"], TAG + "run": uri, TAG + "predictions": run["predictions"],
                TAG + "metrics_from": run["metrics_from"], "mlflow.source.git.commit": run["git_sha"]}
        parent = client.create_run(experiment_id, run_name=f"{run['kind']} {run['run_id']}",
                                   tags={**identity, **{k: str(v) for k, v in tags.items() if v is not None}})
        logged.run_id = parent.info.run_id
        log_values(client, logged.run_id, flatten(run["config"]), run["metrics"])
        for name, result in sorted(run["training"].items()):
            if "checkpoint" in result:
                logged.registered.append(log_training(client, experiment_id, parent.info.run_id, identity, name,
                                                      result, run))
        with tempfile.TemporaryDirectory() as folder:
            for path, source in run["artifacts"].items():
                storage.copy_file(source, os.path.join(folder, path))
            client.log_artifacts(logged.run_id, folder)
        client.set_terminated(logged.run_id, "FINISHED")
    # Whatever fails here (the server, its artifact store's S3 client, a bad URI) must not fail
    # the run it reports on: it is said, and jobs/log_mlflow.py logs the run later.
    except Exception as error:
        logged.error = f"{type(error).__name__}: {getattr(error, 'message', None) or error}"
        if logged.run_id:
            try:
                client.set_terminated(logged.run_id, "FAILED")
            except Exception:
                pass  # the server is gone: the next attempt finds this run unfinished and replaces it
    return logged


def experiment_id_of(client: MlflowClient, name: str) -> str:
    """The experiment called `name`, created when there is none (another job may create it meanwhile)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def forget_attempts(client: MlflowClient, experiment_id: str, where: str) -> None:
    """Delete what an unfinished attempt to log this run into this experiment left: its runs
    (parent and children) and the model versions they registered (only theirs: the same run
    logged into another experiment keeps its own)."""
    for attempt in client.search_runs([experiment_id], where):
        for version in client.search_model_versions(f"run_id = '{attempt.info.run_id}'"):
            client.delete_model_version(version.name, version.version)
        client.delete_run(attempt.info.run_id)


def log_values(client: MlflowClient, run_id: str, params: dict[str, str], metrics: dict[str, float | None],
               steps: list[tuple[int, dict[str, float | None]]] | None = None) -> None:
    """Params and metrics (and per-step metrics) in batches within MLflow's limits."""
    from mlflow.entities import Metric, Param

    items = sorted(params.items())
    for start in range(0, len(items), BATCH_PARAMS):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[start:start + BATCH_PARAMS]])
    now = int(time.time() * 1000)
    points = [Metric(k, float(v), now, 0) for k, v in sorted(metrics.items()) if v is not None]
    points += [Metric(k, float(v), now, step) for step, values in steps or [] for k, v in values.items() if v is not None]
    for start in range(0, len(points), BATCH_METRICS):
        client.log_batch(run_id, metrics=points[start:start + BATCH_METRICS])


def log_training(client: MlflowClient, experiment_id: str, parent_id: str, identity: dict[str, str], name: str,
                 result: dict[str, Any], run: dict[str, Any]) -> str:
    """The child run of training `name`: its params, epoch curves and best checkpoint, which
    it registers as a version of `registered_name(name)`; returns `models:/NAME/VERSION`."""
    from mlflow.exceptions import MlflowException

    version = result.get("version") or version_key(name, run["run_id"])
    child = client.create_run(experiment_id, run_name=name, tags={
        **identity, "mlflow.parentRunId": parent_id, TAG + "role": "training", TAG + "version": version})
    history = result.get("history") or []
    log_values(client, child.info.run_id, {k: str(result[k]) for k in TRAINING_PARAMS if result.get(k) is not None},
               {"best_val_iou": result.get("best_val_iou"), "train_time_s": result.get("train_time_s")},
               [(int(h.get("epoch", i)), {k: h.get(k) for k in EPOCH_METRICS}) for i, h in enumerate(history)])
    with tempfile.TemporaryDirectory() as folder:
        client.log_artifacts(child.info.run_id, checkpoint_files(result["checkpoint"], folder), CHECKPOINT_ARTIFACT)
    model = registered_name(name)
    try:
        client.create_registered_model(model, description="segray: the best checkpoint of each training run")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {**identity, TAG + "version": version, TAG + "dataset_fingerprint": str(run["fingerprint"]),
            TAG + "best_val_iou": str(result.get("best_val_iou"))}
    if run["checkpoint_store"]:
        tags[TAG + "checkpoint_store"] = run["checkpoint_store"]
    registered = client.create_model_version(model, source=f"runs:/{child.info.run_id}/{CHECKPOINT_ARTIFACT}",
                                             run_id=child.info.run_id, tags=tags)
    client.set_terminated(child.info.run_id, "FINISHED")
    return f"models:/{model}/{registered.version}"


def log_finished(uri: str, tracking_uri: str | None, experiment: str) -> bool:
    """The jobs' last step: log the run at `uri` when a tracking URI is set, and say what
    happened; also in run.json (`mlflow`). False when it could not be logged (the run's own
    outcome is unaffected); the message says how to log it later."""
    if not tracking_uri:
        return True
    logged = log_run(uri, tracking_uri, experiment)
    shown = redact(tracking_uri)  # its password and tokens masked, on the console and in run.json
    if logged.error:
        print(f"warning: the run was not logged in MLflow ({shown}): {redact(logged.error)}; the run's own outputs "
              f"are unaffected: log it later with: python jobs/log_mlflow.py {uri} --tracking.uri {shown} "
              f"--tracking.experiment {experiment}")
        return False
    said = "was logged already" if logged.already else "logged"
    print(f"mlflow: {said} as run {logged.run_id} in experiment {experiment!r} at {shown}")
    for version in logged.registered:
        print(f"mlflow: registered {version}")
    if not logged.already and storage.exists(storage.join(uri, RUN_FILE)):
        update_record(uri, mlflow={"tracking_uri": shown, "experiment": experiment, "run_id": logged.run_id,
                                   "registered": logged.registered})
    return True
