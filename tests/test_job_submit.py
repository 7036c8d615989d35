"""`ray job submit` for real: a Ray head on loopback (`ray start --head`) and a second node
beside it (`ray start --address`, its own logical CPUs), the demo benchmark submitted through
the Jobs API with `--working-dir` and a runtime env, exactly as the README tells users to run
it on a cluster; the run's own timeline shows that its work ran on both nodes.

The head is its own cluster, beside the session's: the job's driver joins it by the
RAY_ADDRESS the job supervisor sets, so nothing here touches the shared test cluster. The
head runs under its own temp dir and ports, and is stopped by signalling its processes
(`ray stop` would stop every Ray on the host, the shared test cluster included).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def processes_mentioning(text: str) -> list[int]:
    """PIDs of this host's processes whose command line contains `text`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def node_ports() -> list[str]:
    """Free ports for every port of a Ray node, as `ray start` flags."""
    flags = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
             "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port"]
    return [part for flag in flags for part in (flag, str(free_port()))]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head on loopback with the Jobs API on a free port, and a second node joined to
    it; yields the head's HTTP address."""
    # Each node has its own temp dir, as on separate hosts: nodes that share one also share
    # the runtime env's unpacked working_dir, and the second node's agent unpacking it again
    # pulls the directory out from under the job's driver (its cwd vanishes mid-import).
    temp_dir, node_temp_dir = tmp_path_factory.mktemp("ray-head"), tmp_path_factory.mktemp("ray-node")
    dashboard, gcs = free_port(), free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    common = ["--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    head_command = [str(BIN / "ray"), "start", "--head", *common, "--temp-dir", str(temp_dir), "--port", str(gcs),
                    "--dashboard-port", str(dashboard),
                    "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--num-cpus", "4",
                    "--ray-client-server-port", str(free_port()), *node_ports()]
    node_command = [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{gcs}", *common, "--temp-dir", str(node_temp_dir),
                    "--num-cpus", "2",
                    "--resources", json.dumps({"second_node": 1}), *node_ports()]
    nodes = [subprocess.Popen(head_command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)]
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_jobs_api(address, nodes[0])
        nodes.append(subprocess.Popen(node_command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        wait_for_nodes(address, 2, nodes[1])
        yield address, env
    finally:
        for node in reversed(nodes):
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.kill()
        for pid in processes_mentioning(str(temp_dir)) + processes_mentioning(str(node_temp_dir)):
            try:  # anything the nodes left behind
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_for_jobs_api(address: str, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the Jobs API at {address} did not answer within {timeout} s")


def wait_for_nodes(address: str, count: int, node: subprocess.Popen, timeout: float = 120) -> None:
    """Until the cluster has `count` alive nodes (the dashboard's node summary)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise RuntimeError(f"ray start --address exited with {node.returncode}")
        try:
            with urllib.request.urlopen(f"{address}/nodes?view=summary", timeout=2) as answer:
                summary = json.loads(answer.read())["data"]["summary"]
            if sum(n.get("raylet", {}).get("state") == "ALIVE" for n in summary) >= count:
                return
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(1)
    raise TimeoutError(f"the cluster at {address} did not have {count} nodes within {timeout} s")


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
