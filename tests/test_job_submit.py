"""`ray job submit` for real: a Ray head on loopback (`ray start --head`) and a second node
beside it (`ray start --address`, its own logical CPUs), the demo benchmark submitted through
the Jobs API with `--working-dir` and a runtime env, exactly as the README tells users to run
it on a cluster; the run's own timeline shows that its work ran on both nodes.

The cluster (`tests.cluster.LocalCluster`, the session's `local_cluster`) is its own,
beside the session's Ray: the job's driver joins it by the RAY_ADDRESS the job supervisor sets.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cluster import BIN

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def ray_head(local_cluster):
    """The session's Ray head on loopback with the Jobs API, and two nodes joined to it for
    the work; yields the head's HTTP address and the environment to submit with."""
    try:
        local_cluster.add_node("first", cpus=4)
        local_cluster.add_node("second", cpus=2)
        yield local_cluster.http, local_cluster.env
    finally:
        local_cluster.stop(keep_head=True)


def submit(address: str, env: dict, job_args: list[str]) -> subprocess.CompletedProcess:
    """`ray job submit` from the repository root, waiting for the job like a user would."""
    runtime_env = {"env_vars": {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}}
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
               "--runtime-env-json", json.dumps(runtime_env), "--", "python", "jobs/benchmark.py", *job_args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)


def test_submitted_demo_benchmark_writes_its_run(ray_head, tmp_path):
    address, env = ray_head
    result = submit(address, env, [
        "--preset", "demo", "--dataset", "synthetic:16", "--cache-dir", str(tmp_path / "cache"),
        "--output", str(tmp_path / "runs"), "--run-id", "submitted", "--models", "unet",
        "--image-size", "64", "--unet-epochs", "1",
    ])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "succeeded" in output
    # The console a person reads: a line per epoch and per stage, none of Ray's own chatter.
    assert "unet epoch 1/1: train loss" in output and "decode: 16 in, 16 out" in output
    noise = ["Starting execution of Dataset", "PlacementGroupCleaner", "Connecting to existing Ray cluster", "Progress bars"]
    assert [line for line in noise if line in output] == []

    run = tmp_path / "runs" / "submitted"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["rows"]["written"] == summary["rows"]["expected"] == 16
    assert summary["training"]["unet"]["history"][0]["epoch"] == 1
    rows = pq.read_table(run / "predictions").to_pandas()
    assert sorted(rows["image_id"]) == sorted(os.listdir(tmp_path / "cache" / "synthetic-16-0" / "images"))
    assert rows.groupby(["image_id", "model"]).size().eq(1).all()
    # Both nodes worked: Ray Data spreads the decode and score tasks over the cluster.
    stages = summary["timeline"]["stages"]
    assert len({node for stage in stages.values() for node in stage["nodes"]}) == 2, stages
    assert (run / "report" / "report.html").exists()


def test_a_failing_job_fails_the_submit_with_the_reason(ray_head, tmp_path):
    address, env = ray_head
    result = submit(address, env, ["--preset", "demo", "--dataset", str(tmp_path / "nowhere"),
                                   "--output", str(tmp_path / "runs")])
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "exit code 2" in output
    assert "no dataset found" in output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
