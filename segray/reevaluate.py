"""Incremental, idempotent re-evaluation into a results table (see docs/REEVALUATE.md).

Table layout under RESULTS (a local path or `s3://bucket/prefix`):

  run=<run_id>/*.parquet        rows (`segray.schema.ROW_SCHEMA`) of the pairs that run computed
  run=<run_id>/_COMMITTED.json  written last: the run's counts, dataset and model versions;
                                a partition without it is ignored (`segray.results.read`)
  _lock.json                    held while a run works (run id, host, started_at, heartbeat_at)
  report/                       trend.md, trend.html, trend.png, trend.csv

A pair is (image_id, model_version); it is done when a committed partition has rows for
it, whatever their status (an error row is a result: it is not retried every night).
"""

from __future__ import annotations

import html
import json
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from segray import storage
from segray.config import Config, DataConfig, EvalConfig
from segray.errors import LockHeld, RunExists
from segray.heartbeat import periodically
from segray.models.base import ModelSpec
from segray.models.catalogue import variants_of, version_of
from segray.models.selection import TrainedModels, models_to_evaluate
from segray.results.read import COMMIT_FILE, committed_files, partition_uri, partitions, read_rows
from segray.results.resume import pending
from segray.results.scoring import SERIES, common_rows
from segray.run import check_nodes_see, dataset_probe, git_sha, load_manifest, new_run_id, start_ray
from segray.schema import PAIR_COLUMNS

log = logging.getLogger(__name__)

LOCK_FILE = "_lock.json"
HEARTBEAT_S = 60.0  # how often a live run refreshes its lock's heartbeat_at
REPORT_DIR = "report"


@dataclass
class Outcome:
    """What one re-evaluation did. `computed` maps a model version to the images it
    evaluated; empty when there was nothing to compute."""

    run_id: str
    images: int
    versions: list[str]
    computed: dict[str, int] = field(default_factory=dict)
    rows_expected: int = 0
    rows_written: int = 0
    committed: bool = False
    partition: str | None = None


def done_pairs(results: str) -> dict[str, set[str]]:
    """Per model version, the image ids that already have rows in committed partitions."""
    pairs = read_rows(committed_files(results), PAIR_COLUMNS).drop_duplicates()
    return {str(version): set(group["image_id"].astype(str))
            for version, group in pairs.groupby("model_version", observed=True)}


# ----------------------------------------------------------------------------- lock


def acquire_lock(results: str, run_id: str, stale_after_h: float) -> dict[str, Any]:
    """Take RESULTS/_lock.json (created exclusively), or raise LockHeld naming the holder.
    A lock whose last heartbeat (`heartbeat`; its start for a lock without one) is older
    than `stale_after_h` hours is taken over with a warning: its run is presumed dead, as a
    live one beats every HEARTBEAT_S. The takeover is a compare-and-swap of the very lock
    that was read (`storage.replace_if`), so of several runs taking over one stale lock at
    once exactly one wins; the others are told who did."""
    uri = storage.join(results, LOCK_FILE)
    now = datetime.now(UTC).isoformat()
    lock = {"run_id": run_id, "host": socket.gethostname(), "started_at": now, "heartbeat_at": now}
    data = json.dumps(lock).encode()
    try:
        storage.write_new(uri, data)
        return lock
    except FileExistsError:
        pass
    try:
        held, tag = storage.read_tagged(uri)
    except FileNotFoundError:  # released between the two steps: try once more, as new
        return _won(uri, data, lock)
    holder = json.loads(held)
    silent = datetime.now(UTC) - datetime.fromisoformat(holder.get("heartbeat_at", holder["started_at"]))
    if silent < timedelta(hours=stale_after_h):
        raise LockHeld(f"{uri} is held by run {holder['run_id']} on {holder['host']} since {holder['started_at']} "
                       f"(last heartbeat {silent.total_seconds() / 3600:.1f} h ago; taken over after "
                       f"{stale_after_h:g} h without one)")
    try:
        storage.replace_if(uri, tag, data)
    except storage.ChangedMeanwhile:
        raise LockHeld(f"{uri} was taken over by another run at the same time") from None
    log.warning("took over the stale lock %s of run %s on %s (since %s, silent for %.1f h)", uri, holder["run_id"],
                holder["host"], holder["started_at"], silent.total_seconds() / 3600)
    return lock


def _won(uri: str, data: bytes, lock: dict[str, Any]) -> dict[str, Any]:
    try:
        storage.write_new(uri, data)
    except FileExistsError:
        raise LockHeld(f"{uri} was taken by another run at the same time") from None
    return lock


def _mine(uri: str, run_id: str) -> tuple[dict[str, Any], str] | None:
    """The lock and its tag while `run_id` holds it; None (logged) when another run does."""
    held, tag = storage.read_tagged(uri)
    holder = json.loads(held)
    if holder.get("run_id") != run_id:
        log.warning("%s is now held by run %s, not %s", uri, holder.get("run_id"), run_id)
        return None
    return holder, tag


@contextmanager
def heartbeat(results: str, run_id: str, every_s: float = HEARTBEAT_S) -> Iterator[None]:
    """While in the block, the lock's `heartbeat_at` is refreshed every `every_s` seconds,
    so that a long, live run is never taken for a dead one. Each beat is a compare-and-swap:
    it never writes over a lock another run took. A beat that cannot be written is logged;
    one that finds the lock held by another run stops."""
    uri = storage.join(results, LOCK_FILE)

    def beat() -> bool:
        try:
            mine = _mine(uri, run_id)
            if mine is None:
                return False
            holder, tag = mine
            storage.replace_if(uri, tag, json.dumps({**holder, "heartbeat_at": datetime.now(UTC).isoformat()}).encode())
        except storage.ChangedMeanwhile:
            log.warning("%s changed during run %s's heartbeat: it stops", uri, run_id)
            return False
        except (OSError, ValueError) as error:
            log.warning("cannot refresh the heartbeat of %s: %s", uri, error)
        return True

    with periodically(beat, every_s, "segray-lock-heartbeat"):
        yield


def release_lock(results: str, run_id: str) -> None:
    """Remove the lock if this run still holds it: a conditional delete of the lock as read,
    so a takeover in between is left in place."""
    uri = storage.join(results, LOCK_FILE)
    try:
        mine = _mine(uri, run_id)
        if mine is not None:
            storage.delete_if(uri, mine[1])
    except FileNotFoundError:
        return
    except storage.ChangedMeanwhile:
        log.warning("%s was taken over while run %s released it; left in place", uri, run_id)


# ----------------------------------------------------------------------------- the run


def reevaluate(
    manifest: pd.DataFrame,
    specs: list[ModelSpec],
    results: str,
    config: EvalConfig,
    run_id: str,
    dataset: dict[str, Any],
    ray_address: str | None = None,
    data: DataConfig | None = None,
    gpu: bool | None = None,
) -> Outcome:
    """Evaluate the (image, model version) pairs of `manifest` x `specs` that RESULTS lacks,
    into RESULTS/run=<run_id>/, and commit the partition when every row arrived. Ray is
    joined or started only when there is something to compute; every node must see the local
    dataset and RESULTS (`check_nodes_see`). The caller holds the lock
    (`acquire_lock`). Every spec needs a version (`version_of`). `data` and `gpu`: as
    `segray.evaluate.evaluate`'s."""
    from segray.evaluate import evaluate

    if any(version_of(spec) is None for spec in specs):
        raise ValueError("every model to re-evaluate needs a version (segray.models.catalogue.version_of)")
    committed, uncommitted = partitions(results)
    if run_id in committed:
        raise RunExists(f"{partition_uri(results, run_id)} is already committed: choose another --run-id")
    for crashed in uncommitted:  # safe: we hold the lock, so no run is writing them
        log.warning("removing the uncommitted partition of run %s (a crashed run); its pairs are recomputed", crashed)
        storage.delete_dir(partition_uri(results, crashed))

    outcome = Outcome(run_id, images=len(manifest), versions=[version_of(spec) for spec in specs])
    tables = pending(manifest, [version_of(spec) for spec in specs], done_pairs(results))
    todo = [(spec, table) for spec, table in zip(specs, tables) if len(table)]
    if not todo:
        return outcome
    started = time.perf_counter()
    outcome.partition = partition_uri(results, run_id)
    outcome.computed = {version_of(spec): len(table) for spec, table in todo}
    outcome.rows_expected = sum(len(table) * len(variants_of(spec)) for spec, table in todo)
    start_ray(ray_address)
    check_nodes_see({**dataset_probe(manifest), "RESULTS": results})
    evaluate(manifest, [spec for spec, _ in todo], config, outcome.partition, run_id,
             manifest_per_spec=[table for _, table in todo], data=data, gpu=gpu)

    written = read_rows(outcome.partition, ["model_version"])
    outcome.rows_written = len(written)
    if outcome.rows_written != outcome.rows_expected:
        log.error("run %s wrote %d rows of %d: not committed, its pairs will be recomputed", run_id,
                  outcome.rows_written, outcome.rows_expected)
        return outcome
    commit = {
        "run_id": run_id,
        "finished_at": datetime.now(UTC).isoformat(),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "dataset": dataset,
        "images": len(manifest),
        "versions": outcome.versions,  # every version brought up to date: the trend compares these
        "git_sha": git_sha(),
        "computed": outcome.computed,
        "rows": outcome.rows_written,
        "rows_per_version": {str(k): int(v) for k, v in written["model_version"].value_counts().items()},
    }
    storage.write_bytes(storage.join(outcome.partition, COMMIT_FILE), json.dumps(commit, indent=2).encode())
    outcome.committed = True
    return outcome


def run_reevaluation(config: Config, trained: TrainedModels) -> tuple[Outcome, dict[str, str]]:
    """The scheduled job: read the dataset, pick the model versions from `trained` (the
    checkpoint store's every version unless its selectors say otherwise), take the lock, compute the missing
    pairs into the results table (`results.uri`), commit, redraw the trend report, release
    the lock (taken over after `results.lock_stale_after` hours). Returns the outcome and the
    models that could not run. Raises DatasetError, LockHeld, RunError (RunExists; a node
    that cannot see the dataset or RESULTS), CheckpointStoreError or OSError."""
    manifest = load_manifest(config)
    specs, unavailable = models_to_evaluate(config, trained)
    run_id = config.output.run_id or new_run_id()
    dataset = manifest.description(config.data.dataset)
    results = config.results.uri
    acquire_lock(results, run_id, config.results.lock_stale_after)
    try:
        with heartbeat(results, run_id):
            outcome = reevaluate(manifest.table, specs, results, config.evaluation, run_id, dataset,
                                 config.cluster.ray_address, config.data, config.cluster.gpu)
            if outcome.committed:
                try:
                    print(f"report: {write_trend_report(results)['trend.html']}")
                except Exception:  # the report is derived from the table: the next run redraws it
                    log.exception("writing the trend report of %s failed", results)
    finally:
        release_lock(results, run_id)
    return outcome, unavailable


# ----------------------------------------------------------------------------- trend report


def trend(results: str) -> pd.DataFrame:
    """Mean IoU per series (model variant, model version) after each committed run, over
    the rows the table holds by the end of that run. Each run's points are the versions
    that run brought up to date (its commit's `versions`), scored by the one rule of
    `segray.results.scoring`: on the images every one of those series has a row for, and
    none has an error. All splits count: the split of a growing set is recomputed on
    every run (segray.data.manifest), so a per-split trend would compare moving sets."""
    columns = ["run_id", "finished_at", "model", "model_version", "images", "new_images", "mean_iou"]
    committed, _ = partitions(results)
    commits = {run_id: json.loads(storage.read_bytes(storage.join(partition_uri(results, run_id), COMMIT_FILE)))
               for run_id in committed}
    rows = read_rows(committed_files(results), ["run_id", "image_id", "model", "model_version", "iou", "status"])
    if rows.empty:
        return pd.DataFrame(columns=columns)
    runs = sorted(commits, key=lambda r: commits[r]["finished_at"])
    run_index = rows["run_id"].astype(str).map({run: i for i, run in enumerate(runs)}).to_numpy()
    points = []
    for i, run in enumerate(runs):
        mine = run_index == i
        # Commits from before `versions` was recorded: the versions that run computed.
        versions = commits[run].get("versions") or rows.loc[mine, "model_version"].astype(str).unique()
        upto = (run_index <= i) & rows["model_version"].astype(str).isin(versions).to_numpy()
        scored = rows[upto]
        keep = common_rows(scored)
        new = mine[upto][keep]
        scored = scored[keep]
        for (model, version), group in scored.groupby(SERIES, observed=True):
            new_rows = int(new[np.asarray((scored["model"] == model) & (scored["model_version"] == version))].sum())
            points.append([run, commits[run]["finished_at"], str(model), str(version), len(group), new_rows,
                           float(group["iou"].mean())])
    return pd.DataFrame(points, columns=columns).sort_values(["finished_at", "model", "model_version"], ignore_index=True)


def write_trend_report(results: str) -> dict[str, str]:
    """RESULTS/report/: trend.csv, trend.md, trend.png (a line per series) and trend.html
    (the table and the chart, self-contained). Returns the written URIs by name."""
    from segray.report.figures import png, pyplot
    from segray.report.render import HTML_STYLE, html_img, html_table, md_table

    points = trend(results)
    title = f"Mean IoU per model version over time: {results}"
    note = ("Each point: the mean IoU of a model variant and version after that run, on the images every "
            "version that run brought up to date was scored on, with no error on any of them (all splits; "
            "a no-detection counts as 0). A run's points compare its versions on the same images.")
    header = ["run", "finished (UTC)", "model", "model version", "images", "new", "mean IoU"]
    table = [[r.run_id, r.finished_at[:19], r.model, r.model_version, r.images, r.new_images, f"{r.mean_iou:.4f}"]
             for r in points.itertuples()]

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for (model, version), series in points.groupby(["model", "model_version"], sort=True):
        ax.plot(pd.to_datetime(series["finished_at"]), series["mean_iou"], marker="o", label=f"{model} [{version}]")
    ax.set_xlabel("run finished (UTC)")
    ax.set_ylabel("mean IoU (cumulative)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if len(points):
        ax.legend(fontsize="small", loc="best")
    fig.autofmt_xdate()
    chart = png(fig)

    markdown = "\n".join([f"# {title}", "", note, "", *md_table(header, table), "", "![trend](trend.png)", ""])
    page = "\n".join(["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
                      f"<title>{html.escape(title)}</title>", f"<style>{HTML_STYLE}</style></head><body>",
                      f"<h1>{html.escape(title)}</h1>", f"<p class='note'>{note}</p>",
                      html_table(header, table), html_img("trend", chart), "</body></html>"])
    folder = storage.join(results, REPORT_DIR)
    files = {"trend.csv": points.to_csv(index=False).encode(), "trend.md": markdown.encode(),
             "trend.png": chart, "trend.html": page.encode()}
    written = {}
    for name, data in files.items():
        written[name] = storage.join(folder, name)
        storage.write_bytes(written[name], data)
    return written
