"""A multi-node Ray cluster on this machine, for the tests that need one: a head on loopback
(`ray start --head`, the Jobs API on a free port) and nodes joined to it (`ray start
--address`), each with its own logical CPUs, ports and temp dir, as on separate hosts.

Nodes that share a temp dir also share the runtime env's unpacked working_dir, and a second
node's agent unpacking it again pulls the directory out from under a job's driver. A node
can be started in its own mount namespace with a folder hidden (an empty tmpfs over it), as
a folder that only the head's host has; and killed whole (every process of its tree, as
when a host goes away). Nothing here touches the shared test cluster: its processes are
stopped by signals (`ray stop` would stop every Ray on the host).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.conftest import free_port

BIN = Path(sys.executable).parent


def node_ports() -> list[str]:
    """Free ports for every port of a Ray node, as `ray start` flags."""
    flags = ["--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--metrics-export-port",
             "--runtime-env-agent-port", "--node-manager-port", "--object-manager-port"]
    return [part for flag in flags for part in (flag, str(free_port()))]


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        found.append(queue.pop())
        queue.extend(children.get(found[-1], []))
    return found


def command_line(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


class LocalCluster:
    """A Ray head (`cpus` logical CPUs; 0: it runs no work, as the head of a large cluster);
    `add_node` joins nodes, `kill` takes one away, `stop` ends them all. Their temp dirs are
    under a short folder of /tmp: Ray's socket paths there must fit AF_UNIX's 107 bytes."""

    def __init__(self, cpus: int = 4):
        self.root = Path(tempfile.mkdtemp(prefix="segray-ray-"))
        self.dashboard, self.gcs = free_port(), free_port()
        self.http = f"http://127.0.0.1:{self.dashboard}"
        self.address = f"127.0.0.1:{self.gcs}"
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled"}
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: list[subprocess.Popen] = []
        head = self._start("head", ["--head", "--port", str(self.gcs), "--dashboard-port", str(self.dashboard),
                                    "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
                                    "--ray-client-server-port", str(free_port()), "--num-cpus", str(cpus)])
        self.wait_for_jobs_api(head)
        self.wait_until_alive("head", head)

    def _start(self, name: str, flags: list[str], prefix: list[str] | None = None) -> subprocess.Popen:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True)
        command = [*(prefix or []), str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1",
                   "--disable-usage-stats", "--temp-dir", str(temp_dir), *node_ports(), *flags]
        with (self.root / f"{name}.log").open("w") as log:
            node = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.nodes.append(node)
        return node

    def add_node(self, name: str, cpus: int = 2, hidden: Path | None = None) -> subprocess.Popen:
        """Join a node with `cpus` logical CPUs, once it is alive. With `hidden`, the node
        runs in its own mount namespace where that folder is an empty tmpfs."""
        prefix = None
        if hidden is not None:
            prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                      'mount -t tmpfs -o size=1m segray-hidden "$0" && exec "$@"', str(hidden)]
        node = self._start(name, ["--address", self.address, "--num-cpus", str(cpus)], prefix)
        self.wait_until_alive(name, node)
        return node

    def kill(self, node: subprocess.Popen) -> None:
        """SIGKILL every process of the node at once, as when its host goes away."""
        for pid in descendants(node.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.wait(timeout=30)

    def runs(self, node: subprocess.Popen, title: bytes) -> bool:
        """True while a process of `node` has `title` in its command line (Ray titles a worker
        by what it runs: `ray::RayTrainWorker...`, `ray::MapWorker(...)`)."""
        return any(title in command_line(pid) for pid in descendants(node.pid))

    def stop(self, keep_head: bool = False) -> None:
        """Stop the nodes, the head too unless `keep_head`: killed whole, as `kill` does (a
        `ray start --block` given SIGTERM took up to 30 s to stop its processes). With the head
        kept, until it has seen them go: a node it still lists as alive would be given work."""
        for node in reversed(self.nodes[1:] if keep_head else self.nodes):
            if node.poll() is None:
                self.kill(node)
        self.nodes = self.nodes[:1] if keep_head else []
        if keep_head:
            deadline = time.monotonic() + 120
            while self.alive_workers() and time.monotonic() < deadline:
                time.sleep(0.5)
            return
        leftover = str(self.root).encode()
        for entry in Path("/proc").iterdir():  # anything the nodes left behind
            if entry.name.isdigit() and leftover in command_line(int(entry.name)):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_for_jobs_api(self, head: subprocess.Popen, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if head.poll() is not None:
                raise RuntimeError(f"ray start --head exited with {head.returncode}: {self.log('head')}")
            try:
                with urllib.request.urlopen(f"{self.http}/api/version", timeout=2):
                    return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"the Jobs API at {self.http} did not answer within {timeout} s")

    def log(self, name: str) -> str:
        """The end of node `name`'s `ray start` output."""
        return (self.root / f"{name}.log").read_text()[-2000:]

    def alive(self, name: str) -> bool:
        """Whether the node `name` is alive, by the dashboard's node summary (False while it
        does not answer)."""
        try:
            with urllib.request.urlopen(f"{self.http}/nodes?view=summary", timeout=2) as answer:
                summary = json.loads(answer.read())["data"]["summary"]
        except (OSError, KeyError, ValueError):
            return False
        raylets = [n.get("raylet", {}) for n in summary]
        return any(r.get("tempDir") == str(self.root / name) and r.get("state") == "ALIVE" for r in raylets)

    def alive_workers(self) -> list[str]:
        """The temp dirs of the nodes other than the head that the head lists as alive."""
        try:
            with urllib.request.urlopen(f"{self.http}/nodes?view=summary", timeout=2) as answer:
                summary = json.loads(answer.read())["data"]["summary"]
        except (OSError, KeyError, ValueError):
            return []
        raylets = [n.get("raylet", {}) for n in summary]
        return [r["tempDir"] for r in raylets if r.get("state") == "ALIVE" and r.get("tempDir") != str(self.root / "head")]

    def wait_until_alive(self, name: str, node: subprocess.Popen, timeout: float = 120) -> None:
        """Until the node `name` is alive; fails if its `ray start` exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.poll() is not None:
                raise RuntimeError(f"ray start of node {name} exited with {node.returncode}: {self.log(name)}")
            if self.alive(name):
                return
            time.sleep(1)
        raise TimeoutError(f"node {name} of the cluster at {self.http} was not alive within {timeout} s")
