"""A run's lifecycle: its id, its folder, its manifest and its Ray.

Run layout under `<output>/<run_id>/`:
  run.json            written first: the run id was claimed and the location is writable;
                      then its status (running, interrupted, failed), stage, attempts, the
                      code's git commit, what a resumed attempt must share with the first
                      (`RESUMED_SETTINGS`), and where else it was recorded (checkpoint_store)
  settings.yaml       the job's effective settings, which `--config` takes back
  train/<training>/   Ray Train's storage (checkpoints, metrics) per training (unet, unet[frac=0.25])
  training.json       the best checkpoint, version and per-epoch history of each trained model
  predictions/        the long-format Parquet rows (`segray.schema.ROW_SCHEMA`)
  summary.json        written last: a run without it did not finish
  report/             the comparison report (`segray.report`)
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from segray import storage
from segray.config import MODEL_SECTIONS, Config
from segray.data.manifest import Manifest, build_manifest
from segray.errors import RunError, RunExists
from segray.heartbeat import RUN_STALE_S, beat_now, live_driver, stop_beating
from segray.settings import dump
from segray.settings.keys import value_at

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
# What the rows of a run depend on: a resumed attempt must have the same as the first.
# How it runs (output, cache, the evaluation's pools and batches) may change between attempts.
RESUMED_SETTINGS = ("data.dataset", "data.mask_person_values", "seed", "models", "train", *MODEL_SECTIONS)
SETTINGS_FILE = "settings.yaml"
SHUTDOWN_WAIT_S = 20  # after an interrupt, how long Ray gets to stop before the process exits
FINISHED = ("complete", "partial")  # the statuses of a run that ended (run.json)
NODE_CHECK_TIMEOUT_S = 60  # how long every node has to say which of the run's paths it sees


def new_run_id() -> str:
    """The UTC time and a random suffix: two runs started in the same second differ."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)


def run_uri(config: Config) -> str:
    return storage.join(config.output.path, config.output.run_id)


def prepare_run_dir(uri: str, overwrite: bool, resume: bool = False,
                    config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """A run id is written once: an existing run is refused, removed whole with overwrite,
    or, with resume, continued when it did not finish, its driver is not alive
    (`heartbeat.live_driver`) and its `RESUMED_SETTINGS` are `config`'s; so rows are never
    appended twice. A new run claims its id by creating `run.json` exclusively (O_EXCL, or a
    conditional PUT on S3): of two jobs given one id, one runs and the other is refused.
    Writing `run.json` first also proves the location works (endpoint, bucket, credentials)
    before any work starts. Returns the run.json of the attempt before (None for a new run)."""
    now = datetime.now(UTC).isoformat()
    settings = {key: value_at(config or {}, key) for key in RESUMED_SETTINGS}
    previous = None
    try:
        if storage.exists(uri) and resume:
            previous = resumable_record(uri, settings)
            record = {**previous, "status": "running", "stage": "start", "attempts": previous.get("attempts", 1) + 1,
                      "resumed_at": now}
            record.pop("error", None)
        else:
            if storage.exists(uri):
                if not overwrite:
                    raise RunExists(f"{uri} already exists: choose another --run-id, pass --resume to continue it "
                                    "or --overwrite to replace it")
                storage.delete_dir(uri)
            record = {"status": "running", "stage": "start", "started_at": now, "attempts": 1, "settings": settings}
            try:
                storage.write_new(storage.join(uri, RUN_FILE), json.dumps(record, indent=2, default=str).encode())
            except FileExistsError:
                raise RunExists(f"{uri} was claimed by another job at the same moment: choose another --run-id") from None
            return None
        write_record(uri, record)
    except OSError as error:
        raise RunError(f"{uri}: cannot write the run there: {storage.describe(error)}") from error
    return previous


def git_sha() -> str | None:
    """The source tree's commit, with "-dirty" when it has local changes; None outside git
    (`ray job submit --working-dir` sends a copy without .git)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def read_record(uri: str) -> dict[str, Any]:
    return json.loads(storage.read_bytes(storage.join(uri, RUN_FILE)))


def write_record(uri: str, record: dict[str, Any]) -> None:
    storage.write_bytes(storage.join(uri, RUN_FILE), json.dumps(record, indent=2, default=str).encode())


def resumable_record(uri: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The run.json of a run that `--resume` may continue, or RunExists saying why not."""
    try:
        record = read_record(uri)
    except (FileNotFoundError, ValueError):  # none, or cut short by a crash before writes were whole
        record = {}
    if has_finished(uri, record):
        raise RunExists(f"{uri} finished: nothing to resume; choose another --run-id or pass --overwrite to run it "
                        "again")
    driver = live_driver(uri) if record.get("status") == "running" else None
    if driver:
        raise RunExists(f"{uri} is still running: its driver on {driver['host']} (pid {driver['pid']}) beat "
                        f"{driver['age_s']:.0f} s ago; stop that job first, or resume once it has been silent "
                        f"for {RUN_STALE_S:.0f} s")
    if "settings" not in record:
        raise RunExists(f"{uri} has no readable run.json with its settings (written since --resume exists): it "
                        "cannot be resumed; pass --overwrite to run it again")
    changed = differences(record["settings"], settings)
    if changed:
        raise RunExists(f"{uri} cannot be resumed with other settings than its first attempt's: "
                        + "; ".join(changed) + " (use those, or --overwrite to run it again)")
    return record


def has_finished(uri: str, record: dict[str, Any]) -> bool:
    """Whether the run ended: its summary.json is written (then its run.json's status), or
    its run.json says so (`jobs/train.py` writes no summary)."""
    return record.get("status") in FINISHED or storage.exists(storage.join(uri, "summary.json"))


def differences(before: Any, after: Any, path: str = "") -> list[str]:
    """`key: before -> after` for every leaf that differs between two JSON-like values."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [line for key in sorted(set(before) | set(after), key=str)
                for line in differences(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))]
    return [] if json.dumps(before, default=str) == json.dumps(after, default=str) else [f"{path}: {before!r} -> {after!r}"]


def enter_stage(uri: str, stage: str) -> None:
    """Record in run.json the stage the run is in: an interrupted run says where it stopped."""
    update_record(uri, stage=stage)


def update_record(uri: str, **fields: Any) -> None:
    """Set `fields` in run.json; a location that stopped taking writes is only logged here
    (the writes that matter fail the run themselves)."""
    try:
        write_record(uri, {**read_record(uri), **fields})
    except (OSError, ValueError) as error:
        log.warning("cannot record %s in %s/%s: %s", sorted(fields), uri, RUN_FILE, error)


def run_failed(uri: str, message: str) -> RunError:
    """The error to raise for a run that cannot go on. Its run.json says "failed" when the
    location still takes writes; either way the run has no summary.json, so it is not complete."""
    try:
        record = read_record(uri)
        write_record(uri, {**record, "status": "failed", "error": message, "failed_at": datetime.now(UTC).isoformat()})
    except (OSError, ValueError) as error:
        log.warning("cannot mark %s failed: %s", uri, error)
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
    job_handler = signal.getsignal(signal.SIGTERM)
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, runtime_env=runtime_env, **quiet)
    else:
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, runtime_env=runtime_env, **quiet)
    if callable(job_handler):  # ray.init puts its own in (sys.exit(15)); the job's (`stop_on_signals`) goes back
        signal.signal(signal.SIGTERM, job_handler)
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


def load_manifest(config: Config) -> Manifest:
    manifest = build_manifest(config.data.dataset, config.data.cache_dir)
    problems = {k: v for k, v in manifest.problems.counts().items() if v}
    if problems:
        log.warning("dataset pairing problems (named in summary.json): %s", problems)
    return manifest


def open_run(config: Config, job: str | None = None) -> Manifest:
    """Everything that can fail before work starts: claim the run id at a writable location
    (or, with `output.resume`, take up the unfinished run), read the dataset into a
    manifest, join or start Ray, and check that every node sees the local paths the run
    reads and writes (`check_nodes_see`). Raises RunError or DatasetError (or Ray's error
    joining the cluster), leaving the run as it was: a new run gives its id back, a refused
    resume keeps its run.json. A resumed run must read the same dataset as before: its
    fingerprint is in run.json. `job`: the job whose settings (`segray.settings.dump`) the
    run's settings.yaml keeps."""
    output = config.output
    output.run_id = output.run_id or new_run_id()
    uri = run_uri(config)
    previous = prepare_run_dir(uri, output.overwrite, output.resume, config.to_dict())
    record = read_record(uri)
    try:
        beat_now(uri)  # the driver is alive: `driver_heartbeat` goes on beating while the job runs
        manifest = load_manifest(config)
        before = record.get("dataset_fingerprint")
        if before and before != manifest.fingerprint:
            raise RunExists(f"{uri} cannot be resumed: its dataset changed since its first attempt (fingerprint "
                            f"{before} -> {manifest.fingerprint}); pass --overwrite to run it again on the new data")
        start_ray(config.cluster.ray_address)
        check_nodes_see({**dataset_probe(manifest.table), "--output": uri})
    except Exception:  # nothing was done
        if previous is None:
            storage.delete_dir(uri)  # give the run id back
        else:
            write_record(uri, previous)
            stop_beating(uri)
        raise
    write_record(uri, {**record, "dataset_fingerprint": manifest.fingerprint, "git_sha": git_sha()})
    if job is not None:
        storage.write_bytes(storage.join(uri, SETTINGS_FILE), dump(config, job).encode())
    return manifest


def check_nodes_see(paths: dict[str, str]) -> None:
    """Raise RunError before any work when a local path the driver sees (named by its option:
    `{"--dataset": a file of it}`) is missing on another node of the cluster, which reads
    and writes it too (Ray runs the tasks on every node). One task pinned to each node alive
    now; S3 paths and a one-node Ray need none."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    local = {option: storage.resolve(path)[1] for option, path in paths.items() if storage.is_local(path)}
    nodes = [node for node in ray.nodes() if node["Alive"]]
    if not local or len(nodes) < 2:
        return
    probe = ray.remote(num_cpus=0, max_retries=0)(missing_paths)
    answers = {f"{node['NodeManagerAddress']} (node {node['NodeID'][:8]})": probe.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(list(local.values()))
        for node in nodes}
    # A node that died a moment ago is still listed alive: check the nodes that answer.
    ready, _ = ray.wait(list(answers.values()), num_returns=len(answers), timeout=NODE_CHECK_TIMEOUT_S)
    missing = {}
    for node, answer in answers.items():
        try:
            if answer in ready:
                missing[node] = ray.get(answer)
        except ray.exceptions.RayError:
            pass
    silent = [node for node in answers if node not in missing]
    if silent:
        log.warning("could not check that %s see %s: no answer within %d s", ", ".join(silent),
                    ", ".join(local.values()), NODE_CHECK_TIMEOUT_S)
    unseen = [f"{option} {path} is not on {', '.join(n for n, paths in missing.items() if path in paths)}"
              for option, path in local.items() if any(path in paths for paths in missing.values())]
    if unseen:
        raise RunError("; ".join(unseen) + ": every node of the cluster reads and writes it, so it must be a folder "
                       "they all share (NFS, EFS, a mounted bucket) or an s3:// URI")


def dataset_probe(table: pd.DataFrame) -> dict[str, str]:
    """What `check_nodes_see` checks of a dataset: its first image (nothing for none)."""
    return {"--dataset": table["image_uri"].iloc[0]} if len(table) else {}


def missing_paths(paths: list[str]) -> list[str]:
    """The `paths` this node does not see (run on each node by `check_nodes_see`)."""
    return [path for path in paths if not os.path.exists(path)]


@contextmanager
def stop_on_signals(config: Config) -> Iterator[None]:
    """While in the block, Ctrl-C (SIGINT) and SIGTERM (what `ray job stop` and Kubernetes
    send) end the job at once, wherever its main thread waits: `mark_interrupted` runs (for
    at most SHUTDOWN_WAIT_S), then the process exits 128 + the signal (130, 143) without
    waiting for its threads, which may be waiting on Ray for hours. Ray ends the job's
    trainers and actor pools with their owner, this process; a `ray.shutdown()` here would
    race those threads, and Ray exits a process with code 1 when a thread calls it after
    shutdown. `--resume` takes the run up again. A second signal while it stops exits at
    once. The previous handlers come back after the block."""
    stopping = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stopping.is_set():
            os._exit(128 + signum)
        stopping.set()
        stopper = threading.Thread(target=mark_interrupted, args=(config, signum), daemon=True)
        stopper.start()
        stopper.join(SHUTDOWN_WAIT_S)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def mark_interrupted(config: Config, signum: int) -> None:
    """run.json says `interrupted`, by which signal and in which stage, and the console why."""
    name = signal.Signals(signum).name
    uri = run_uri(config) if config.output.run_id else None
    try:
        record = read_record(uri) if uri else {}
    except (OSError, ValueError):
        record = {}
    stage = record.get("stage")
    if stage is None:
        print(f"interrupted by {name}; no run.json to mark (the run had not written it yet, or it is unreachable)",
              file=sys.stderr, flush=True)
    elif has_finished(uri, record):  # only what follows the summary was cut short
        print(f"interrupted by {name} in stage {stage}, after {uri} finished: its rows and summary.json are whole; "
              f"redraw its report with: python jobs/report.py {uri}", file=sys.stderr, flush=True)
    else:
        update_record(uri, status="interrupted", interrupted_by=name, interrupted_at=datetime.now(UTC).isoformat())
        print(f"interrupted by {name} in stage {stage}: {uri} is kept; rerun with --resume to finish it",
              file=sys.stderr, flush=True)
