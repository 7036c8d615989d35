"""jobs/reevaluate.py end to end on the shared local Ray: only new (image, model version)
pairs are computed, a second run computes nothing, a new checkpoint-store version gets every image,
a crashed run's rows are recomputed and never doubled, the lock refuses overlapping runs."""

from __future__ import annotations

import functools
import json
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from segray import storage
from segray.config import EvalConfig, LangSAMConfig
from segray.data.manifest import read_folder
from segray.errors import LockHeld
from segray.evaluate import evaluate
from segray.models.base import ModelSpec
from segray.models.checkpoint import save_checkpoint
from segray.models.langsam import model_version
from segray.models.langsam_rules import VARIANTS
from segray.models.networks import build_network
from segray.models.store import record_model, resolve_version
from segray.reevaluate import LOCK_FILE, acquire_lock, heartbeat, release_lock
from segray.results.read import COMMIT_FILE
from tests.conftest import job
from tests.test_faults import wait_for


def register(store, tmp_path, version: str, seed: int) -> None:
    """A tiny random UNet (32 px) as a checkpoint-store version."""
    torch.manual_seed(seed)
    directory = tmp_path / f"ckpt-{version}"
    save_checkpoint(str(directory), build_network("unet", {"base_width": 4}),
                    {"model": "unet", "params": {"base_width": 4}, "image_size": 32})
    record_model(str(store), str(directory), version, config={}, metrics={"best_val_iou": 0.1},
                 dataset={"uri": "test", "fingerprint": None})


def add_images(source, dataset, names: list[str]) -> None:
    for folder in ("images", "masks"):
        (dataset / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(source / folder / name, dataset / folder / name)


def rows_of(results, run_id: str) -> pd.DataFrame:
    return pq.read_table(results / f"run={run_id}", columns=["image_id", "model", "model_version", "iou"]).to_pandas()


@pytest.fixture
def setup(synthetic_root, tmp_path):
    names = sorted(p.name for p in (synthetic_root / "images").iterdir())
    dataset, results, store = tmp_path / "dataset", tmp_path / "results", tmp_path / "store"
    add_images(synthetic_root, dataset, names[:8])
    register(store, tmp_path, "v1", seed=0)

    def run(run_id: str, *extra: str) -> int:
        return job("reevaluate")(["--preset", "demo", "--dataset", str(dataset), "--results", str(results),
                                  "--checkpoint-store", str(store), "--models", "unet", "--run-id", run_id, *extra])

    return names, dataset, results, store, run


def test_only_new_pairs_are_computed_and_a_rerun_computes_nothing(ray_session, setup, synthetic_root, tmp_path,
                                                                  capsys):
    names, dataset, results, store, run = setup
    assert run("r1") == 0
    first = rows_of(results, "r1")
    assert sorted(first["image_id"]) == names[:8] and set(first["model_version"]) == {"unet@v1"}
    assert json.loads((results / "run=r1" / COMMIT_FILE).read_text())["computed"] == {"unet@v1": 8}

    add_images(synthetic_root, dataset, names[8:12])
    assert run("r2") == 0
    assert "computed unet@v1: 4 new images" in capsys.readouterr().out
    assert sorted(rows_of(results, "r2")["image_id"]) == names[8:12]

    assert run("r3") == 0
    assert "nothing to compute: 12 images x 1 model versions already in" in capsys.readouterr().out
    assert not (results / "run=r3").exists()

    register(store, tmp_path, "v2", seed=1)
    assert run("r4") == 0
    assert "computed unet@v2: 12 new images" in capsys.readouterr().out
    fourth = rows_of(results, "r4")
    assert sorted(fourth["image_id"]) == names[:12] and set(fourth["model_version"]) == {"unet@v2"}

    # Only v1, by name: everything is there already.
    assert run("r5", "--version", "unet=v1") == 0
    assert "nothing to compute: 12 images x 1 model versions" in capsys.readouterr().out
    assert run("r4") == 2  # a run id is written once
    assert "already committed" in capsys.readouterr().err
    assert not (results / LOCK_FILE).exists()  # every run released the lock

    # The trend: one point per run for each series, cumulative over the images scored so far.
    trend = pd.read_csv(results / "report" / "trend.csv")
    v1 = trend[trend["model_version"] == "unet@v1"].set_index("run_id")
    assert list(v1.index) == ["r1", "r2", "r4"] and list(v1["images"]) == [8, 12, 12]
    assert list(v1["new_images"]) == [8, 4, 0]
    every_v1 = pd.concat([first, rows_of(results, "r2")])
    assert v1.at["r2", "mean_iou"] == pytest.approx(every_v1["iou"].mean())
    assert v1.at["r1", "mean_iou"] == pytest.approx(first["iou"].mean())
    v2 = trend[trend["model_version"] == "unet@v2"]
    assert list(v2["run_id"]) == ["r4"] and v2["mean_iou"].iloc[0] == pytest.approx(fourth["iou"].mean())
    for name in ("trend.md", "trend.html", "trend.png"):
        assert (results / "report" / name).stat().st_size > 0


def test_a_crashed_run_is_ignored_and_its_pairs_recomputed_once(ray_session, setup, synthetic_root, capsys):
    names, dataset, results, store, run = setup
    assert run("r1") == 0
    add_images(synthetic_root, dataset, names[8:12])
    # A run that crashed after writing the new pairs' rows but before committing them.
    manifest = read_folder(str(dataset)).table
    record = resolve_version(str(store), "unet", "v1")
    spec = ModelSpec("unet", checkpoint=record["checkpoint"], version="unet@v1")
    evaluate(manifest, [spec], EvalConfig(), str(results / "run=crashed"), "crashed",
             manifest_per_spec=[manifest[manifest["image_id"].isin(names[8:12])]])
    assert len(rows_of(results, "crashed")) == 4

    assert run("r2") == 0
    assert "computed unet@v1: 4 new images" in capsys.readouterr().out
    assert not (results / "run=crashed").exists()
    assert sorted(p.name for p in results.glob("run=*")) == ["run=r1", "run=r2"]
    every = pd.concat([rows_of(results, "r1"), rows_of(results, "r2")])
    assert len(every) == 12 and every["image_id"].nunique() == 12


def test_langsam_is_one_version_with_a_row_per_variant(ray_session, setup, tiny_weights, capsys):
    names, dataset, results, store, run = setup
    detector, sam = tiny_weights
    langsam = ["--langsam-detector", str(detector), "--langsam-sam", str(sam), "--langsam-box-threshold", "0"]
    assert run("r1", "--models", "langsam", *langsam) == 0
    rows = rows_of(results, "r1")
    version = model_version(LangSAMConfig(detector=str(detector), sam=str(sam), box_threshold=0))
    assert set(rows["model_version"]) == {version}
    assert version == f"langsam@{detector}+{sam}?prompt=person.&box=0.0&text=0.25&boxes=8"
    assert rows.groupby("model")["image_id"].nunique().to_dict() == dict.fromkeys(VARIANTS, 8)
    assert run("r2", "--models", "langsam", *langsam) == 0
    assert "nothing to compute: 8 images x 1 model versions" in capsys.readouterr().out


# ----------------------------------------------------------------------------- lock


@pytest.fixture(params=["local", "s3"])
def results_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "results")
    import boto3

    bucket = f"results-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=request.getfixturevalue("s3_endpoint")).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/table"


def test_the_lock_refuses_a_second_run_and_is_released(results_uri):
    acquire_lock(results_uri, "first", stale_after_h=6)
    with pytest.raises(LockHeld, match="held by run first on .* since"):
        acquire_lock(results_uri, "second", stale_after_h=6)
    release_lock(results_uri, "second")  # not the holder: the lock stays
    assert json.loads(storage.read_bytes(storage.join(results_uri, LOCK_FILE)))["run_id"] == "first"
    release_lock(results_uri, "first")
    assert not storage.exists(storage.join(results_uri, LOCK_FILE))
    acquire_lock(results_uri, "second", stale_after_h=6)


def test_a_stale_lock_is_taken_over(results_uri, caplog):
    old = datetime.now(UTC) - timedelta(hours=7)
    stale = {"run_id": "dead", "host": "elsewhere", "started_at": old.isoformat()}  # a lock from before heartbeats
    storage.write_bytes(storage.join(results_uri, LOCK_FILE), json.dumps(stale).encode())
    with pytest.raises(LockHeld, match="held by run dead"):
        acquire_lock(results_uri, "new", stale_after_h=8)
    acquire_lock(results_uri, "new", stale_after_h=6)
    assert "took over the stale lock" in caplog.text
    assert json.loads(storage.read_bytes(storage.join(results_uri, LOCK_FILE)))["run_id"] == "new"


def stale_lock(results_uri: str) -> None:
    old = (datetime.now(UTC) - timedelta(hours=7)).isoformat()
    storage.write_bytes(storage.join(results_uri, LOCK_FILE),
                        json.dumps({"run_id": "dead", "host": "elsewhere", "started_at": old}).encode())


def take_lock(results: str, start: threading.Barrier, name: str) -> str | None:
    """`name` once every racer is ready: its name if it won the lock, None if refused."""
    start.wait()
    try:
        acquire_lock(results, name, stale_after_h=6)
        return name
    except LockHeld as error:
        assert "at the same time" in str(error) or "held by run" in str(error)
        return None


def test_of_runs_racing_over_one_stale_lock_exactly_one_wins_each_time(tmp_path):
    """Eight takers at once, forty times over: each round one holds the lock, the seven
    others are refused naming the race, and the lock on disk is the winner's."""
    results = str(tmp_path / "results")
    for round_ in range(40):
        stale_lock(results)
        with ThreadPoolExecutor(8) as pool:
            racers = [f"r{round_}-{i}" for i in range(8)]
            winners = [w for w in pool.map(functools.partial(take_lock, results, threading.Barrier(8)), racers) if w]
        assert len(winners) == 1, (round_, winners)
        assert json.loads(storage.read_bytes(storage.join(results, LOCK_FILE)))["run_id"] == winners[0]


def test_a_write_over_a_lock_that_changed_since_it_was_read_is_refused(results_uri):
    """The compare-and-swap under the takeover: on S3 a PUT with If-Match on the ETag read."""
    uri = storage.join(results_uri, LOCK_FILE)
    stale_lock(results_uri)
    _, tag = storage.read_tagged(uri)
    acquire_lock(results_uri, "first", stale_after_h=6)  # takes it over: the lock changed
    with pytest.raises(storage.ChangedMeanwhile):
        storage.replace_if(uri, tag, b'{"run_id": "late"}')
    with pytest.raises(storage.ChangedMeanwhile):
        storage.delete_if(uri, tag)
    assert json.loads(storage.read_bytes(uri))["run_id"] == "first"


def test_a_taken_over_runs_heartbeat_and_release_leave_the_new_holders_lock(results_uri):
    uri = storage.join(results_uri, LOCK_FILE)
    acquire_lock(results_uri, "old", stale_after_h=6)
    with heartbeat(results_uri, "old", every_s=0.05):
        storage.write_bytes(uri, json.dumps({"run_id": "new", "host": "h", "started_at": "x"}).encode())
        time.sleep(0.3)  # beats that find the lock another run's stop, and write nothing
        assert json.loads(storage.read_bytes(uri))["run_id"] == "new"
    release_lock(results_uri, "old")
    assert json.loads(storage.read_bytes(uri))["run_id"] == "new"


def test_a_live_run_beats_and_keeps_its_lock_however_long_it_runs(results_uri):
    uri = storage.join(results_uri, LOCK_FILE)
    days_ago = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    acquire_lock(results_uri, "long", stale_after_h=6)
    # A run started two days ago: only its heartbeat says it is alive.
    storage.write_bytes(uri, json.dumps({**json.loads(storage.read_bytes(uri)), "started_at": days_ago,
                                         "heartbeat_at": days_ago}).encode())
    with heartbeat(results_uri, "long", every_s=0.05):
        wait_for("a heartbeat", lambda: json.loads(storage.read_bytes(uri))["heartbeat_at"] != days_ago)
        with pytest.raises(LockHeld, match=r"held by run long .*last heartbeat 0\.0 h ago"):
            acquire_lock(results_uri, "nightly", stale_after_h=6)
    assert json.loads(storage.read_bytes(uri))["started_at"] == days_ago


def test_the_job_exits_3_while_another_run_holds_the_lock(setup, capsys):
    names, dataset, results, store, run = setup
    acquire_lock(str(results), "nightly-1", stale_after_h=6)
    assert run("r1") == 3
    assert "held by run nightly-1" in capsys.readouterr().err
    assert [p.name for p in results.iterdir()] == [LOCK_FILE]


def test_evaluate_loads_a_checkpoint_store_version(ray_session, dataset_copy, tmp_path):
    store, runs = tmp_path / "store", tmp_path / "runs"
    register(store, tmp_path, "v1", seed=0)
    register(store, tmp_path, "v2", seed=1)
    common = ["--preset", "demo", "--dataset", str(dataset_copy), "--output", str(runs), "--models", "unet",
              "--registry", str(store)]  # the old spelling of --checkpoint-store
    assert job("evaluate")([*common, "--run-id", "eval-1", "--version", "unet=v1"]) == 0
    rows = pq.read_table(runs / "eval-1" / "predictions", columns=["image_id", "model_version"]).to_pandas()
    assert len(rows) == 12 and set(rows["model_version"]) == {"unet@v1"}
    assert job("evaluate")([*common, "--run-id", "eval-2", "--version", "unet=nope"]) == 2
    assert not (runs / "eval-2").exists()
