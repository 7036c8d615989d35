"""Faults of a multi-node cluster, on a real one on this machine (`tests.cluster`): a local
path that a node cannot see stops the run before any work, and a node lost mid-run costs
no row and no finished epoch.

The head runs no work (0 CPUs, as the head of a large cluster), so the work goes to the
node each test starts; the job's driver runs beside the head, as `ray job submit` would
run it. A node is killed on a real sign of its work: a Ray Train checkpoint registered
while its training worker runs there, Parquet rows written while its model actors run
there. A spare node joins first, as an autoscaler would replace the lost one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segray.results.read import read_rows
from tests.cluster import LocalCluster
from tests.conftest import JOBS, needs_root, untrained_unet
from tests.test_faults import assert_one_row_per_pair, wait_for

JOB_S = 420  # the longest a job here may take, lost node included


@pytest.fixture
def nodes(local_cluster):
    """The session's cluster; the nodes a test adds are stopped after it."""
    yield local_cluster
    local_cluster.stop(keep_head=True)


def start(cluster: LocalCluster, script: str, argv: list[str], log: Path) -> subprocess.Popen:
    """The job as its own process joined to `cluster`, its output going to `log`."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, str(JOBS / script), *argv, "--ray-address", cluster.address],
                                env=cluster.env, stdout=out, stderr=subprocess.STDOUT)


def finish(driver: subprocess.Popen, log: Path) -> str:
    try:
        driver.wait(timeout=JOB_S)
    except subprocess.TimeoutExpired:
        driver.kill()
        raise
    return log.read_text()


@needs_root
@pytest.mark.parametrize("hidden_option", ["--dataset", "--output"])
def test_a_local_path_a_node_cannot_see_stops_the_run_before_any_work(nodes, synthetic_root, tmp_path, hidden_option):
    hidden = tmp_path / "only-on-the-head"
    dataset, output = synthetic_root, tmp_path / "runs"
    if hidden_option == "--dataset":
        dataset = shutil.copytree(synthetic_root, hidden / "set")
    else:
        output = hidden / "runs"
    hidden.mkdir(exist_ok=True)
    nodes.add_node(f"blind{hidden_option}", cpus=2, hidden=hidden)
    log = tmp_path / "benchmark.log"
    driver = start(nodes, "benchmark.py", ["--preset", "demo", "--dataset", str(dataset), "--models", "unet",
                                           "--image-size", "64", "--unet-epochs", "1", "--output", str(output),
                                           "--run-id", "r"], log)
    output_text = finish(driver, log)

    assert driver.returncode == 2, output_text[-3000:]
    seen_path = dataset / "images" if hidden_option == "--dataset" else output / "r"
    assert f"{hidden_option} {seen_path}" in output_text
    assert "is not on 192.0.2.2 (node " in output_text or "is not on 127.0.0.1 (node " in output_text
    assert "a folder they all share (NFS, EFS, a mounted bucket) or an s3:// URI" in output_text
    assert "epoch" not in output_text  # no work started
    assert not (output / "r").exists()  # and the run id is given back


def test_a_node_lost_mid_evaluation_still_writes_every_row_once(nodes, synthetic_root, tmp_path):
    checkpoint = untrained_unet(tmp_path / "unet", base_width=32, image_size=256)  # slow enough to be caught
    doomed = nodes.add_node("eval-doomed", cpus=4)
    run = tmp_path / "runs" / "e"
    log = tmp_path / "evaluate.log"
    driver = start(nodes, "evaluate.py", ["--preset", "demo", "--dataset", str(synthetic_root), "--models", "unet",
                                          "--checkpoint", f"unet={checkpoint}", "--eval-batch-size", "unet=1",
                                          "--rows-per-file", "1", "--output", str(tmp_path / "runs"),
                                          "--run-id", "e"], log)
    wait_for("rows from the doomed node's model actors", lambda: driver.poll() is not None or (
        list((run / "predictions").glob("*.parquet")) and nodes.runs(doomed, b"MapWorker")))
    nodes.add_node("eval-spare", cpus=4)
    assert driver.poll() is None, log.read_text()[-3000:]
    written = len(read_rows(str(run / "predictions")))
    nodes.kill(doomed)
    output = finish(driver, log)

    assert driver.returncode == 0, output[-3000:]
    assert written < 48, "the evaluation ended before the node was lost"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete"
    rows = read_rows(str(run / "predictions"))
    assert_one_row_per_pair(rows, images=48, variants=1)
    assert (rows["status"] == "ok").all(), rows.loc[rows["status"] != "ok", "error"].head().tolist()


def test_a_node_lost_mid_training_restarts_the_workers_from_the_last_checkpoint(nodes, synthetic_root, tmp_path):
    doomed = nodes.add_node("train-doomed", cpus=4)
    run = tmp_path / "runs" / "t"
    log = tmp_path / "benchmark.log"
    epochs = 20  # of about a second each: most of them after the node is lost
    driver = start(nodes, "benchmark.py", ["--preset", "demo", "--dataset", str(synthetic_root), "--models", "unet",
                                           "--image-size", "64", "--unet-epochs", str(epochs),
                                           "--output", str(tmp_path / "runs"), "--run-id", "t"], log)
    # Ray Train writes this once its controller has registered a checkpoint.
    snapshot = run / "train" / "unet" / "checkpoint_manager_snapshot.json"
    wait_for("a checkpoint from the doomed node's training worker", lambda: driver.poll() is not None or (
        snapshot.exists() and nodes.runs(doomed, b"RayTrainWorker")))
    nodes.add_node("train-spare", cpus=4)
    assert driver.poll() is None, log.read_text()[-3000:]
    nodes.kill(doomed)
    output = finish(driver, log)

    assert driver.returncode == 0, output[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete"
    training = summary["training"]["unet"]
    assert training["resumed_from"] and training["resumed_from"][0] >= 1, training  # from a checkpoint
    assert [entry["epoch"] for entry in training["history"]] == list(range(1, epochs + 1))
    assert_one_row_per_pair(read_rows(str(run / "predictions")), images=48, variants=1)
