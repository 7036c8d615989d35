"""The whole comparison, stage by stage: data -> train -> evaluate -> summary -> report.

The run's folder and lifecycle are `segray.run`'s; the models to evaluate and their
versions come from `segray.models.selection`; the summary scores rows by the one rule of
`segray.results.scoring`, which the report and the trend share.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from segray import storage
from segray.config import TRAINABLE, Config
from segray.data.manifest import Manifest
from segray.errors import CheckpointStoreError
from segray.evaluate import StreamModel, evaluate, stage_labels, variants
from segray.evaluate.awaited import AwaitedModel, start_gate
from segray.heartbeat import driver_heartbeat
from segray.models.base import ModelSpec
from segray.models.catalogue import variants_of, version_of
from segray.models.checkpoint import version_key
from segray.models.selection import TrainedModels, models_to_evaluate
from segray.models.store import record_training
from segray.report.variants import other_sweep_settings, run_settings
from segray.results.read import read_rows
from segray.results.resume import done_images, pending
from segray.results.scoring import ALL_SPLITS, format_table, model_summary
from segray.run import enter_stage, open_run, read_record, run_failed, run_uri, update_record
from segray.schema import ERROR
from segray.timeline import Progress, start_timeline, stop_timeline, summarize
from segray.trainings import Trainings, plan, trainings_to_run, write_training

log = logging.getLogger(__name__)

AMBIGUOUS_SHOWN = 5  # image ids the console's mask warning names


def record_trained(store: str, config: Config, manifest: Manifest,
                   training: dict[str, dict[str, Any]]) -> bool:
    """Record each trained model's best checkpoint in the checkpoint store, as version
    `config.output.run_id`. False, with the reason logged, when that failed (the run's own
    outputs are unaffected)."""
    try:
        records = record_training(store, training, config.output.run_id, config.to_dict(),
                                  manifest.description(config.data.dataset))
    except (CheckpointStoreError, OSError) as error:
        log.error("recording the trained models in %s failed: %s", store, error)
        return False
    for record in records:
        print(f"recorded {record['model']} version {record['version']} in {store}")
    update_record(run_uri(config), checkpoint_store=store)  # for the run's MLflow versions (segray.tracking)
    return True


@dataclass
class Run:
    """One run as its stages share it: its settings, its dataset, and when it started
    (`time.perf_counter`, which the summary's wall time and timeline count from)."""

    config: Config
    manifest: Manifest
    started: float = field(default_factory=time.perf_counter)

    @property
    def uri(self) -> str:
        return run_uri(self.config)

    @property
    def predictions(self) -> str:
        return storage.join(self.uri, "predictions")


def evaluate_models(run: Run, specs: list[ModelSpec], unavailable: dict[str, str],
                    training: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Evaluate models that need no training here (jobs/evaluate.py) into the run's
    predictions/, then write summary.json (last) and return it. `training`: the
    training.json the trained models came from, if any, for the summary."""
    enter_stage(run.uri, "evaluate")
    timeline = start_timeline(run.config.output.run_id)
    to_do = pending_work(run, specs)
    with Progress(timeline, len(run.manifest.table), stage_labels(specs), run.config.epochs):
        stream_rows(run, specs, to_do, timeline)
    return finish(run, specs, unavailable, training, timeline, to_do)


def stream_rows(run: Run, models: list[StreamModel], to_do: list[pd.DataFrame] | None, timeline,
                reserve: dict[str, float] | None = None) -> None:
    """The evaluation stream (`segray.evaluate.evaluate`) into the run's predictions/: every
    model over every image, or, resuming, each model over its own `to_do` rows (a model
    with none left gets no pool). `reserve`: what trainings beside the stream hold."""
    config = run.config
    streamed = [i for i in range(len(models)) if to_do is None or len(to_do[i])]
    if not streamed:
        return
    try:
        evaluate(run.manifest.table, [models[i] for i in streamed], config.evaluation, run.predictions, config.output.run_id,
                 manifest_per_spec=None if to_do is None else [to_do[i] for i in streamed],
                 data=config.data, reserve=reserve, timeline=timeline)
    except OSError as error:  # the output went away mid-run
        raise run_failed(run.uri, f"{run.predictions}: cannot write the rows there: {describe_cause(error)}") from error


def finish(run: Run, models: list[StreamModel], unavailable: dict[str, str], training: dict[str, dict[str, Any]],
           timeline, to_do: list[pd.DataFrame] | None, reused: list[str] | None = None) -> dict[str, Any]:
    """After the stream: the run's timeline summarized (and the timeline stopped), and
    summary.json written and returned. `to_do` and `reused` say, for a resumed run, which
    rows and trainings it took from its earlier attempt."""
    import ray

    table = run.manifest.table
    specs = [spec for spec in (m.wait() if isinstance(m, AwaitedModel) else m for m in models) if spec is not None]
    expected = len(table) * sum(len(variants_of(spec)) for spec in specs)
    origin = time.time() - (time.perf_counter() - run.started)  # the run's start, on the wall clock the stages use
    stages = summarize(ray.get(timeline.snapshot.remote()), origin)
    stop_timeline(timeline)
    enter_stage(run.uri, "summary")
    resumed = None
    if to_do is not None:
        rows_reused = sum((len(table) - len(rows)) * len(variants(model)) for rows, model in zip(to_do, models))
        resumed = {"attempts": read_record(run.uri).get("attempts", 1), "trainings_reused": sorted(reused or []),
                   "rows_reused": rows_reused}
    return write_summary(run, expected, unavailable, training, scoring_split(specs, run.manifest), stages, resumed)


def pending_work(run: Run, models: list[StreamModel]) -> list[pd.DataFrame] | None:
    """For a resumed run (`output.resume`), per stream model, the manifest rows whose (image,
    model version) pair has no rows yet (`segray.results.resume.done_images`); else None:
    every pair. A model trained in this run has the version `<training name>@<run id>`
    before it finishes."""
    if not run.config.output.resume:
        return None
    versions = [version_of(m) if isinstance(m, ModelSpec) else version_key(m.training, run.config.output.run_id)
                for m in models]
    try:
        done = done_images(run.predictions, {version: variants(m) for version, m in zip(versions, models)})
    except OSError as error:
        raise run_failed(run.uri, f"{run.predictions}: cannot read the rows of the earlier attempt: "
                                  f"{describe_cause(error)}") from error
    table = run.manifest.table
    to_do = pending(table, versions, done)
    for model, version, rows in zip(models, versions, to_do):
        print(f"resume: {stage_labels([model])[0]} ({version}) has rows for {len(table) - len(rows)} of {len(table)} images; "
              f"evaluating {len(rows)}")
    return to_do


def describe_cause(error: OSError) -> str:
    """What went wrong, in one line: a Ray task's error is also of its cause's type, and
    its own message is the remote traceback."""
    return storage.describe(getattr(error, "cause", None) or error)


def scoring_split(specs: list[ModelSpec], manifest: Manifest) -> str:
    """The split a run scores: "val" when a model in it was trained on this very dataset
    (its train split is then seen data), else every image (ALL_SPLITS): a model trained
    elsewhere, or not at all (LangSAM), has seen none of them."""
    return "val" if any(spec.trained_on == manifest.fingerprint for spec in specs) else ALL_SPLITS


def write_summary(run: Run, expected_rows: int, unavailable: dict[str, str], training: dict[str, dict[str, Any]],
                  split: str = "val", timeline: dict[str, Any] | None = None,
                  resumed: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json from the run's rows, as they are (written last: the run is finished),
    scored on `split` (`scoring_split`), with the run's `timeline` (`segray.timeline.summarize`)
    and, for a resumed run, what it reused (`resumed`: attempts, trainings_reused, rows_reused
    and rows_computed)."""
    config, manifest = run.config, run.manifest
    try:
        rows = read_rows(run.predictions)
    except OSError as error:
        raise run_failed(run.uri, f"{run.predictions}: cannot read the rows back: {storage.describe(error)}") from error
    # Rows with status "error", in every split, per model that has any: one makes the run partial.
    counts = rows.loc[rows["status"] == ERROR, "model"].astype(str).value_counts().sort_index()
    errors_by_model = {model: int(n) for model, n in counts.items()}
    failed_training = [m for m, r in training.items() if "error" in r]
    # Masks whose person may be wrong (segray.data.decode.decode_mask_noted): named, not fatal.
    ambiguous = sorted(set(rows.loc[rows["mask_note"].notna(), "image_id"].astype(str)))
    table = manifest.table
    complete = expected_rows > 0 and len(rows) == expected_rows and not errors_by_model and not failed_training
    summary = {
        "run_id": config.output.run_id,
        "status": "complete" if complete else "partial",
        "dataset": config.data.dataset,
        "dataset_root": manifest.root,
        "dataset_fingerprint": manifest.fingerprint,
        "finished_at": datetime.now(UTC).isoformat(),
        "wall_time_s": round(time.perf_counter() - run.started, 1),
        "manifest": {
            "images": len(table),
            "train": int((table["split"] == "train").sum()),
            "val": int((table["split"] == "val").sum()),
            "pairing_problems": manifest.problems.as_dict(),
        },
        "masks": {"ambiguous": {"count": len(ambiguous), "files": ambiguous}},
        "rows": {"expected": expected_rows, "written": len(rows), "errors": sum(errors_by_model.values()),
                 "errors_by_model": errors_by_model},
        "split": split,
        "models": model_summary(rows, split),
        "unavailable": unavailable,
        "training": training,
        "timeline": timeline or {"stages": {}},
        "config": config.to_dict(),
    }
    if resumed is not None:
        summary["resumed"] = {**resumed, "rows_computed": len(rows) - resumed["rows_reused"]}
    storage.write_bytes(storage.join(run.uri, "summary.json"), json.dumps(summary, indent=2, default=str).encode())
    update_record(run.uri, status=summary["status"], finished_at=summary["finished_at"])
    return summary


def run_benchmark(config: Config) -> dict[str, Any]:
    """data -> (train | evaluate) -> summary -> report. Returns the summary (also in summary.json).

    The models that need no training are evaluated while the others train: each trained
    model's pool joins the stream when its training ends (`segray.trainings.plan` says
    whether the cluster holds both; if not, training goes first). With a checkpoint store
    (`checkpoints.store`), each trained model's best checkpoint is recorded there, under the
    version its rows carry, and the returned summary (not the file, written before) says
    whether that worked: `recorded`.
    With `output.resume`, the trainings an earlier attempt finished are reused. The driver
    beats while it works (`segray.heartbeat`), so no other job resumes the run meanwhile."""
    started = time.perf_counter()
    run = Run(config, open_run(config, job="benchmark"), started)
    with driver_heartbeat(run.uri):
        return benchmark(run)


def benchmark(run: Run) -> dict[str, Any]:
    """`run_benchmark`'s work, once the run is open."""
    import ray

    config = run.config
    timeline = start_timeline(config.output.run_id)  # before the trainings, which report their epochs to it
    to_train, reused, failed = trainings_to_run(config, run.uri)
    untrained = [m for m in config.models if m not in TRAINABLE] + list(reused)  # LangSAM, reused trainings
    ready, unavailable = models_to_evaluate(config.model_copy(update={"models": untrained}), TrainedModels(training=reused))
    unavailable.update({name: result["error"] for name, result in failed.items()})
    gate = start_gate()
    models = [*ready, *(AwaitedModel.of(name, gate) for name in to_train)]
    schedule = plan(config, len(to_train), [m.name for m in models], ray.cluster_resources())
    log.info("trainings at once: %d; evaluation %s", schedule.at_once,
             "beside them" if schedule.overlap else "after them (the cluster cannot hold both)")
    trainings = Trainings(config, run.manifest, run.uri, to_train, schedule.at_once, gate, {**failed, **reused}).start()
    if not schedule.overlap:
        enter_stage(run.uri, "train")
        trainings.join()
    enter_stage(run.uri, "train+evaluate" if to_train else "evaluate")
    to_do = pending_work(run, models)
    with Progress(timeline, len(run.manifest.table), stage_labels(models), config.epochs):
        try:
            stream_rows(run, models, to_do, timeline, schedule.reserve)
        finally:
            training = trainings.join()
    try:  # written after the stream, which a failed write must not hide
        write_training(run.uri, training)
    except OSError as error:
        raise run_failed(run.uri, f"{storage.join(run.uri, 'training.json')}: cannot write it: "
                                  f"{describe_cause(error)}") from error
    summary = finish(run, models, {**unavailable, **trainings.unavailable}, training, timeline, to_do, list(reused))
    if config.checkpoints.store:
        enter_stage(run.uri, "checkpoint store")
        summary["recorded"] = record_trained(config.checkpoints.store, config, run.manifest, summary["training"])
    enter_stage(run.uri, "report")
    write_report_logged(run.uri)
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
    swept = other_sweep_settings(summary["models"], run_settings(summary["config"]))
    print(format_table({m: s for m, s in summary["models"].items() if m not in swept}, summary.get("split", "val")))
    if swept:
        print(f"(and {len(swept)} variants of other sweep settings: in summary.json and the report)")
    if summary.get("split") == ALL_SPLITS:
        print("(no model here was trained on this dataset, so every image is unseen and counts)")
    for model, reason in summary["unavailable"].items():
        print(f"{model}: UNAVAILABLE: {reason}")
    ambiguous = summary["masks"]["ambiguous"]
    if ambiguous["count"]:
        shown = ", ".join(ambiguous["files"][:AMBIGUOUS_SHOWN]) + (", ..." if ambiguous["count"] > AMBIGUOUS_SHOWN else "")
        print(f"warning: {ambiguous['count']} of the masks may not mark the person ({shown}): their rows' mask_note says "
              "what was found (summary.json: masks.ambiguous); name the person value(s) with --mask-person-values")
    rows = summary["rows"]
    print(f"rows written {rows['written']} of {rows['expected']}, {rows['errors']} with status error "
          f"(their error column says what and where); status: {summary['status']}")
