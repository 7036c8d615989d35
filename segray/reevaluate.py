"""Incremental, idempotent re-evaluation into a results table (see docs/REEVALUATE.md).

Table layout under RESULTS (a local path or `s3://bucket/prefix`):

  run=<run_id>/*.parquet        rows (`segray.evaluate.ROW_SCHEMA`) of the pairs that run computed
  run=<run_id>/_COMMITTED.json  written last: the run's counts; a partition without it is ignored
  _lock.json                    held while a run works (run id, host, started_at)
  report/                       trend.md, trend.html, trend.png, trend.csv

A pair is (image_id, model_version); it is done when a committed partition has rows for
it, whatever their status (an error row is a result: it is not retried every night).
"""

from __future__ import annotations

import html
import json
import logging
import posixpath
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pyarrow.dataset as pads

from segray import storage
from segray.config import BenchmarkConfig, EvalConfig
from segray.models.base import ModelSpec

log = logging.getLogger(__name__)

PARTITION_PREFIX = "run="
COMMIT_FILE = "_COMMITTED.json"
LOCK_FILE = "_lock.json"
REPORT_DIR = "report"


class LockHeld(RuntimeError):
    """Another run holds the results table's lock; the message says who and since when."""


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


def partition_uri(results: str, run_id: str) -> str:
    return storage.join(results, PARTITION_PREFIX + run_id)


def partitions(results: str) -> tuple[list[str], list[str]]:
    """(committed, uncommitted) run ids in the table, each sorted."""
    committed, uncommitted = [], []
    for name in storage.list_dirs(results):
        if name.startswith(PARTITION_PREFIX):
            run_id = name.removeprefix(PARTITION_PREFIX)
            done = storage.exists(storage.join(results, name, COMMIT_FILE))
            (committed if done else uncommitted).append(run_id)
    return committed, uncommitted


def read_results(results: str, columns: list[str]) -> pd.DataFrame:
    """`columns` of every committed partition's rows (pyarrow, column projection: masks
    are never read unless asked for)."""
    committed, _ = partitions(results)
    fs, root = storage.resolve(results)
    files = []
    for run_id in committed:
        names = storage.list_files(partition_uri(results, run_id))
        files += [posixpath.join(root, PARTITION_PREFIX + run_id, n) for n in names if n.endswith(".parquet")]
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return pads.dataset(files, filesystem=fs, format="parquet").to_table(columns=columns).to_pandas()


def done_pairs(results: str) -> dict[str, set[str]]:
    """Per model version, the image ids that already have rows in committed partitions."""
    pairs = read_results(results, ["image_id", "model_version"]).drop_duplicates()
    return {version: set(group["image_id"]) for version, group in pairs.groupby("model_version")}


def pending(manifest: pd.DataFrame, specs: list[ModelSpec], done: dict[str, set[str]]) -> list[pd.DataFrame]:
    """Per spec, the manifest rows whose (image, model version) pair has no rows yet."""
    return [manifest[~manifest["image_id"].isin(done.get(spec.version, set()))] for spec in specs]


# ----------------------------------------------------------------------------- lock


def acquire_lock(results: str, run_id: str, stale_after_h: float) -> dict[str, Any]:
    """Take RESULTS/_lock.json (created exclusively), or raise LockHeld naming the holder.
    A lock older than `stale_after_h` hours is taken over with a warning (its run is
    presumed dead; takeover is a delete then an exclusive create, not one atomic step)."""
    uri = storage.join(results, LOCK_FILE)
    lock = {"run_id": run_id, "host": socket.gethostname(), "started_at": datetime.now(timezone.utc).isoformat()}
    data = json.dumps(lock).encode()
    try:
        storage.write_new(uri, data)
        return lock
    except FileExistsError:
        pass
    holder = json.loads(storage.read_bytes(uri))
    age = datetime.now(timezone.utc) - datetime.fromisoformat(holder["started_at"])
    if age < timedelta(hours=stale_after_h):
        raise LockHeld(f"{uri} is held by run {holder['run_id']} on {holder['host']} since {holder['started_at']} "
                       f"({age.total_seconds() / 3600:.1f} h ago; taken over after {stale_after_h:g} h)")
    log.warning("taking over the stale lock %s of run %s on %s (since %s)", uri, holder["run_id"], holder["host"],
                holder["started_at"])
    storage.delete_file(uri)
    try:
        storage.write_new(uri, data)
    except FileExistsError:
        raise LockHeld(f"{uri} was taken over by another run at the same time") from None
    return lock


def release_lock(results: str, run_id: str) -> None:
    """Remove the lock if this run still holds it (a takeover may have replaced it)."""
    uri = storage.join(results, LOCK_FILE)
    if not storage.exists(uri):
        return
    holder = json.loads(storage.read_bytes(uri))
    if holder.get("run_id") == run_id:
        storage.delete_file(uri)
    else:
        log.warning("%s is now held by run %s; left in place", uri, holder.get("run_id"))


# ----------------------------------------------------------------------------- the run


def model_specs(config: BenchmarkConfig, registry: str | None, versions: dict[str, str]
                ) -> tuple[list[ModelSpec], dict[str, str]]:
    """The model versions to bring up to date, and the models that cannot run with why.
    A trained model contributes the registry versions its selector picks (`all` by
    default); LangSAM contributes one version, named by its weights."""
    from segray.model_registry import RegistryError, langsam_version, select_versions, spec_for
    from segray.models.registry import SEGMENTERS, TRAINABLE, check_available

    specs, unavailable = [], {}
    for model in config.models:
        params = config.model_params.get(model, {})
        if model in TRAINABLE:
            if not registry:
                unavailable[model] = "no --registry to load its versions from"
                continue
            try:
                specs += [spec_for(record, params) for record in select_versions(registry, model,
                                                                                 versions.get(model, "all"))]
            except RegistryError as error:
                unavailable[model] = str(error)
        elif model in SEGMENTERS:
            spec = ModelSpec(model, params=params, version=langsam_version(params))
            try:
                check_available(spec)
                specs.append(spec)
            except Exception as error:
                unavailable[model] = str(error)
        else:
            unavailable[model] = f"unknown model; known: {sorted(SEGMENTERS)}"
    return specs, unavailable


def reevaluate(
    manifest: pd.DataFrame,
    specs: list[ModelSpec],
    results: str,
    config: EvalConfig,
    run_id: str,
    dataset: dict[str, Any],
    ray_address: str | None = None,
) -> Outcome:
    """Evaluate the (image, model version) pairs of `manifest` x `specs` that RESULTS lacks,
    into RESULTS/run=<run_id>/, and commit the partition when every row arrived. Ray is
    joined or started only when there is something to compute. The caller holds the lock
    (`acquire_lock`). Every spec needs a `version`."""
    from segray.benchmark import RunExists, start_ray
    from segray.evaluate import evaluate
    from segray.models.registry import variants_of

    if any(spec.version is None for spec in specs):
        raise ValueError("every model to re-evaluate needs a version (ModelSpec.version)")
    committed, uncommitted = partitions(results)
    if run_id in committed:
        raise RunExists(f"{partition_uri(results, run_id)} is already committed: choose another --run-id")
    for crashed in uncommitted:  # safe: we hold the lock, so no run is writing them
        log.warning("removing the uncommitted partition of run %s (a crashed run); its pairs are recomputed", crashed)
        storage.delete_dir(partition_uri(results, crashed))

    outcome = Outcome(run_id, images=len(manifest), versions=[spec.version for spec in specs])
    todo = [(spec, table) for spec, table in zip(specs, pending(manifest, specs, done_pairs(results))) if len(table)]
    if not todo:
        return outcome
    started = time.perf_counter()
    outcome.partition = partition_uri(results, run_id)
    outcome.computed = {spec.version: len(table) for spec, table in todo}
    outcome.rows_expected = sum(len(table) * len(variants_of(spec)) for spec, table in todo)
    start_ray(ray_address)
    evaluate(manifest, [spec for spec, _ in todo], config, outcome.partition, run_id,
             manifest_per_spec=[table for _, table in todo])

    fs, path = storage.resolve(outcome.partition)
    written = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=["model_version"]).to_pandas()
    outcome.rows_written = len(written)
    if outcome.rows_written != outcome.rows_expected:
        log.error("run %s wrote %d rows of %d: not committed, its pairs will be recomputed", run_id,
                  outcome.rows_written, outcome.rows_expected)
        return outcome
    commit = {
        "run_id": run_id,
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "dataset": dataset,
        "images": len(manifest),
        "computed": outcome.computed,
        "rows": outcome.rows_written,
        "rows_per_version": written["model_version"].value_counts().to_dict(),
    }
    storage.write_bytes(storage.join(outcome.partition, COMMIT_FILE), json.dumps(commit, indent=2).encode())
    outcome.committed = True
    return outcome


def run_reevaluation(config: BenchmarkConfig, results: str, registry: str | None, versions: dict[str, str],
                     stale_after_h: float, ray_address: str | None = None) -> tuple[Outcome, dict[str, str]]:
    """The scheduled job: read the dataset, pick the model versions, take the lock, compute
    the missing pairs, commit, redraw the trend report, release the lock. Returns the
    outcome and the models that could not run. Raises DatasetError, LockHeld, RunExists or OSError."""
    from segray.benchmark import load_manifest, new_run_id
    from segray.data.manifest import manifest_fingerprint

    manifest = load_manifest(config)
    specs, unavailable = model_specs(config, registry, versions)
    run_id = config.run_id or new_run_id()
    dataset = {"uri": config.dataset, "fingerprint": manifest_fingerprint(manifest.table)}
    acquire_lock(results, run_id, stale_after_h)
    try:
        outcome = reevaluate(manifest.table, specs, results, config.eval, run_id, dataset, ray_address)
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
    """Mean IoU per (model variant, model version) after each committed run, cumulative:
    each point is the mean over every image that series had been scored on by the end of
    that run (error rows left out, a no-detection counts as 0). As the dataset grows the
    image sets grow, so two series are compared on the same images only where their
    `images` are equal. All splits count: the split of a growing set is recomputed on
    every run (segray.data.manifest), so a per-split trend would compare moving sets."""
    columns = ["run_id", "finished_at", "model", "model_version", "images", "new_images", "mean_iou"]
    rows = read_results(results, ["run_id", "model", "model_version", "iou", "status"])
    rows = rows[rows["status"] != "error"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    finished = {run_id: json.loads(storage.read_bytes(storage.join(partition_uri(results, run_id), COMMIT_FILE)))
                ["finished_at"] for run_id in rows["run_id"].unique()}
    per_run = rows.groupby(["model", "model_version", "run_id"]).agg(iou_sum=("iou", "sum"), new_images=("iou", "size"))
    runs = sorted(finished, key=finished.get)
    points = []
    for (model, version), group in per_run.groupby(level=[0, 1]):
        group = group.droplevel([0, 1]).reindex(runs, fill_value=0)
        group = group[group["new_images"].cumsum() > 0]  # from the run that first scored the series
        cumulative = group.cumsum()
        for run_id in group.index:
            points.append([run_id, finished[run_id], model, version, int(cumulative.at[run_id, "new_images"]),
                           int(group.at[run_id, "new_images"]),
                           cumulative.at[run_id, "iou_sum"] / cumulative.at[run_id, "new_images"]])
    return pd.DataFrame(points, columns=columns).sort_values(["finished_at", "model", "model_version"], ignore_index=True)


def write_trend_report(results: str) -> dict[str, str]:
    """RESULTS/report/: trend.csv, trend.md, trend.png (a line per series) and trend.html
    (the table and the chart, self-contained). Returns the written URIs by name."""
    from segray.report import HTML_STYLE, _html_img, _html_table, _md_table, _png, _pyplot

    points = trend(results)
    title = f"Mean IoU per model version over time: {results}"
    note = ("Each point: the mean IoU of a model variant and version over every image it had been scored on "
            "by the end of that run (all splits; errors left out; a no-detection counts as 0). Series are "
            "compared on the same images only where their image counts are equal.")
    header = ["run", "finished (UTC)", "model", "model version", "images", "new", "mean IoU"]
    table = [[r.run_id, r.finished_at[:19], r.model, r.model_version, r.images, r.new_images, f"{r.mean_iou:.4f}"]
             for r in points.itertuples()]

    plt = _pyplot()
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
    png = _png(fig)

    markdown = "\n".join([f"# {title}", "", note, "", *_md_table(header, table), "", "![trend](trend.png)", ""])
    page = "\n".join(["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
                      f"<style>{HTML_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<p class='note'>{note}</p>",
                      _html_table(header, table), _html_img("trend", png), "</body></html>"])
    folder = storage.join(results, REPORT_DIR)
    files = {"trend.csv": points.to_csv(index=False).encode(), "trend.md": markdown.encode(),
             "trend.png": png, "trend.html": page.encode()}
    written = {}
    for name, data in files.items():
        written[name] = storage.join(folder, name)
        storage.write_bytes(written[name], data)
    return written
