"""Fault injection on the shared local Ray: processes are killed with SIGKILL and the S3
endpoint goes away for real (the proxy in front of it is cut), mid-run.

Each fault waits for a real signal before it strikes (a Parquet file written, a checkpoint
folder, an actor created, the first request for the rows), never for a fixed time.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import boto3
import pytest

from segray import storage
from segray.config import Config, EvalConfig
from segray.data.manifest import build_manifest
from segray.models.base import ModelSpec
from segray.results.read import read_rows
from tests.conftest import JOBS, job

pytestmark = pytest.mark.slow  # every test here runs a job or a server

WAIT_S = 120  # a signal that has not come by then will not come: fail instead of hanging


def wait_for(what: str, condition):
    """Poll `condition` until it returns something truthy, and return that."""
    deadline = time.monotonic() + WAIT_S
    while not (found := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {WAIT_S} s")
        time.sleep(0.1)
    return found


def actors(class_part: str, states=("ALIVE",)) -> list[dict]:
    """The actors whose class name contains `class_part` (Ray Data names its pool actors
    after the operator, e.g. MapWorker(MapBatches(PredictStage))), read from the GCS: the
    public state API needs the dashboard, which the test cluster does not start."""
    try:
        from ray._private.state import actors as actor_table
    except ImportError as error:
        pytest.fail(f"Ray moved its private actor table (ray._private.state.actors), which these tests read: {error}")

    return [a for a in actor_table().values() if class_part in a["ActorClassName"] and a["State"] in states]


def assert_one_row_per_pair(rows, images: int, variants: int) -> None:
    assert len(rows) == images * variants
    assert rows.groupby(["image_id", "model"]).size().eq(1).all()
    assert rows["image_id"].nunique() == images and rows["model"].nunique() == variants


def test_a_killed_evaluation_actor_is_restarted_and_every_row_is_written_once(ray_session, synthetic_root, tmp_path):
    from segray.evaluate import evaluate

    manifest = build_manifest(str(synthetic_root)).table
    # An untrained UNet at 256 px: slow enough on a CPU that the kill lands with batches left.
    spec = ModelSpec("unet", params={"base_width": 16, "image_size": 256})
    predictions = tmp_path / "predictions"
    killed = {}

    def kill_after_first_file():
        files = wait_for("Parquet file", lambda: predictions.is_dir() and os.listdir(predictions))
        (actor,) = wait_for("PredictStage actor", lambda: actors("PredictStage"))
        killed.update(actor_id=actor["ActorID"], files_before=len(files))
        os.kill(actor["Pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_file, daemon=True)
    killer.start()
    # One row per file, so that files appear while the run goes on.
    evaluate(manifest, [spec], EvalConfig(batch_size={"unet": 2}, rows_per_file=1), str(predictions), "faults")
    killer.join()

    assert 0 < killed["files_before"] < len(manifest)  # the actor was killed mid-run
    (actor,) = [a for a in actors("PredictStage", ("ALIVE", "DEAD")) if a["ActorID"] == killed["actor_id"]]
    assert actor["NumRestarts"] >= 1  # and Ray Data restarted it
    rows = read_rows(str(predictions))
    assert_one_row_per_pair(rows, images=len(manifest), variants=1)
    assert rows["status"].eq("ok").all()


def test_a_killed_training_worker_resumes_from_the_last_checkpoint(ray_session, synthetic_root, tmp_path):
    from segray.train import train_model, training_datasets

    manifest = build_manifest(str(synthetic_root)).table
    datasets = training_datasets(manifest, image_size=64)
    config = Config(train={"image_size": 64, "batch_size": 4, "cpus_per_worker": 1}, unet={"epochs": 3, "base_width": 16})
    run_dir = tmp_path / "train" / "unet"
    killed = {}

    def kill_after_first_checkpoint():
        # Ray Train writes this once the controller has registered a checkpoint: a restart resumes from it.
        wait_for("registered checkpoint", lambda: (run_dir / "checkpoint_manager_snapshot.json").exists())
        (worker,) = wait_for("training worker", lambda: actors("RayTrainWorker"))
        killed["pid"] = worker["Pid"]
        os.kill(worker["Pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    # Wide enough that an epoch lasts seconds on a CPU: the kill lands inside the next one.
    result = train_model("unet", config, datasets, str(tmp_path / "train"))
    killer.join()

    assert "pid" in killed
    assert [row["epoch"] for row in result.history] == [1, 2, 3]  # every epoch, each once
    assert result.epochs_redone >= 1 and result.epochs_redone == len(result.resumed_from)
    assert all(1 <= epoch < 3 for epoch in result.resumed_from)  # resumed from a checkpoint, before the end


def langsam_argv(tiny_weights, dataset, output, run_id) -> list[str]:
    detector, sam = tiny_weights
    return ["--preset", "demo", "--models", "langsam", "--dataset", str(dataset), "--output", str(output),
            "--run-id", run_id, "--langsam-detector", str(detector), "--langsam-sam", str(sam),
            "--langsam-box-threshold", "0"]


def test_a_crashed_run_is_refused_until_overwritten_then_written_once(ray_session, dataset_copy, tiny_weights,
                                                                      tmp_path, capsys):
    from segray.models.langsam_rules import VARIANTS

    argv = langsam_argv(tiny_weights, dataset_copy, tmp_path, "crashed")
    address = ray_session.get_runtime_context().gcs_address
    driver = subprocess.Popen([sys.executable, str(JOBS / "benchmark.py"), *argv, "--ray-address", address],
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The driver's model actor exists only once the run is claimed and evaluating: crash it then.
        ours = ray_session.get_runtime_context().get_job_id()
        wait_for("model actor", lambda: driver.poll() is not None or [
            a for a in actors("PredictStage", ("PENDING_CREATION", "ALIVE")) if a["JobID"] != ours])
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait()
    assert driver.returncode == -signal.SIGKILL
    run = tmp_path / "crashed"
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    assert not (run / "summary.json").exists()  # crashed before it finished

    assert job("benchmark")(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert not (run / "summary.json").exists()

    assert job("benchmark")([*argv, "--overwrite"]) == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "complete"
    assert_one_row_per_pair(read_rows(str(run / "predictions")), images=12, variants=len(VARIANTS))


def test_s3_going_away_mid_write_fails_clearly_and_a_rerun_writes_once(ray_session, s3_proxy, dataset_copy,
                                                                       tiny_weights, monkeypatch, capsys):
    from ray.data import DataContext

    from segray.models.langsam_rules import VARIANTS

    boto3.client("s3").create_bucket(Bucket="segray-faults")
    run = "s3://segray-faults/runs/away"
    argv = langsam_argv(tiny_weights, dataset_copy, "s3://segray-faults/runs", "away")
    # Ray Data retries S3 network errors for minutes, to ride out short outages; this one is for good.
    monkeypatch.setattr(DataContext.get_current(), "retried_io_errors", [])
    cuts = s3_proxy.cuts
    s3_proxy.cut_on(b".parquet")  # the first request that writes rows, once every image is scored

    assert job("benchmark")(argv) == 2
    assert s3_proxy.cuts == cuts + 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {run}/predictions: cannot write the rows there:")
    assert "NETWORK_CONNECTION" in error  # the cause: the endpoint could not be reached

    s3_proxy.restore()
    assert storage.exists(f"{run}/run.json") and not storage.exists(f"{run}/summary.json")

    assert job("benchmark")([*argv, "--overwrite"]) == 0
    assert json.loads(storage.read_bytes(f"{run}/summary.json"))["status"] == "complete"
    assert_one_row_per_pair(read_rows(f"{run}/predictions"), images=12, variants=len(VARIANTS))


@pytest.mark.parametrize("status", [503, 500])
def test_a_burst_of_s3_throttling_or_errors_mid_run_is_retried_and_every_row_written_once(
        ray_session, s3_proxy, dataset_copy, tiny_weights, monkeypatch, status):
    from ray.data import DataContext

    from segray.models.langsam_rules import VARIANTS

    bucket = f"segray-throttled-{status}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    argv = langsam_argv(tiny_weights, dataset_copy, f"s3://{bucket}/runs", "burst")
    monkeypatch.setattr(DataContext.get_current(), "retried_io_errors", [])  # the S3 client's own retries alone
    burst = storage.S3_ATTEMPTS - 1  # the first request that writes rows and the ones after it
    before = s3_proxy.throttled
    s3_proxy.throttle_on(b".parquet", count=burst, status=status)

    assert job("benchmark")(argv) == 0
    assert s3_proxy.throttled - before == burst
    assert json.loads(storage.read_bytes(f"s3://{bucket}/runs/burst/summary.json"))["status"] == "complete"
    assert_one_row_per_pair(read_rows(f"s3://{bucket}/runs/burst/predictions"), images=12, variants=len(VARIANTS))


def test_throttling_longer_than_the_retry_budget_fails_clearly(ray_session, s3_proxy, dataset_copy, tiny_weights,
                                                               monkeypatch, capsys):
    from ray.data import DataContext

    boto3.client("s3").create_bucket(Bucket="segray-throttled-long")
    run = "s3://segray-throttled-long/runs/long"
    argv = langsam_argv(tiny_weights, dataset_copy, "s3://segray-throttled-long/runs", "long")
    monkeypatch.setattr(DataContext.get_current(), "retried_io_errors", [])
    s3_proxy.throttle_on(b".parquet", count=10 * storage.S3_ATTEMPTS)

    assert job("benchmark")(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {run}/predictions: cannot write the rows there:")
    assert "SLOW_DOWN" in error, error
    s3_proxy.restore()
    assert not storage.exists(f"{run}/summary.json")
