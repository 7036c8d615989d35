"""Shared fixtures: one local Ray for the whole session, and small generated datasets.

Ray gets more logical CPUs than this machine's cores: model actors holding every CPU
would otherwise starve the decode tasks. `ray.init` costs seconds, so
every test shares one cluster; a second cluster on the host confuses Ray Train.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # as the jobs: segray.cli.RAY_WORKER_ENV

import pytest

from segray.data.synthetic import write_synthetic

DATA = Path(__file__).parent / "data"
JOBS = Path(__file__).parents[1] / "jobs"


def untrained_unet(folder: Path, base_width: int, image_size: int) -> Path:
    """An untrained UNet checkpoint (seeded) in `folder`, for a test that evaluates without
    training: narrow and small to be fast, wide and large to be caught mid-run."""
    import torch

    from segray.models.checkpoint import save_checkpoint
    from segray.models.networks import build_network

    params = {"base_width": base_width, "image_size": image_size}
    torch.manual_seed(0)
    save_checkpoint(str(folder), build_network("unet", params),
                    {"model": "unet", "params": params, "image_size": image_size, "run_id": "elsewhere"})
    return folder


def job(name: str):
    """The `main` of jobs/<name>.py, to run a job in-process on the shared Ray."""
    spec = importlib.util.spec_from_file_location(f"job_{name}", JOBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


class S3Proxy:
    """A loopback TCP relay in front of the S3 server, so that a test can make the endpoint
    go away for real (`cut`: open connections dropped, new ones refused) and come back
    (`restore`) without stopping the shared server. `cut_on(marker)` cuts it at the first
    request whose bytes contain `marker`, e.g. the first write under a given prefix.
    `throttle_on(marker, count, status)` answers that request and the `count - 1` after
    it as a throttled or failing S3 does (503 SlowDown, 500 InternalError), itself."""

    def __init__(self, target_port: int):
        import socket
        import threading

        self.target = ("127.0.0.1", target_port)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cuts = 0  # how many times the endpoint went away
        self._lock = threading.Lock()
        self._listener = None
        self._connections: set = set()
        self._marker: bytes | None = None
        self._throttle: tuple[bytes | None, int, int] = (None, 0, 503)  # marker (None: armed), count, status
        self.throttled = 0  # requests answered by the proxy itself
        self.restore()

    def restore(self) -> None:
        import socket
        import threading

        with self._lock:
            self._marker = None
            self._throttle = (None, 0, 503)
            if self._listener is not None:
                return
            self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: same port again
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def cut(self) -> None:
        import socket

        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
            if listener is not None:
                self.cuts += 1
        for sock in [*connections, *([listener] if listener else [])]:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the threads blocked on it
            except OSError:
                pass
            sock.close()

    def cut_on(self, marker: bytes) -> None:
        self._marker = marker

    def throttle_on(self, marker: bytes, count: int, status: int = 503) -> None:
        self._throttle = (marker, count, status)

    def _throttled(self, data: bytes) -> bytes | None:
        """The answer to give a request that starts in `data` instead of forwarding it, if any."""
        if data.split(b" ", 1)[0] not in (b"GET", b"PUT", b"POST", b"HEAD", b"DELETE"):
            return None  # not the start of a request: the rest of one's body
        with self._lock:
            marker, count, status = self._throttle
            if count == 0 or (marker is not None and marker not in data):
                return None
            self._throttle = (None, count - 1, status)
            self.throttled += 1
        code, reason = ("SlowDown", "Slow Down") if status == 503 else ("InternalError", "Internal Server Error")
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{reason}</Message>'
                "</Error>").encode()
        return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode() + body

    def _accept(self, listener) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            server = socket.create_connection(self.target)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._connections |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source, destination, from_client: bool) -> None:
        try:
            while data := source.recv(65536):
                marker = self._marker
                if from_client and marker is not None and marker in data:
                    self.cut()
                    return
                answer = self._throttled(data) if from_client else None
                if answer is not None:
                    source.sendall(answer)
                    return
                destination.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, destination):
                try:
                    sock.close()
                except OSError:
                    pass
            with self._lock:
                self._connections -= {source, destination}


@pytest.fixture(scope="session")
def s3_server() -> S3Proxy:
    """A real S3 HTTP endpoint on loopback (moto's server, in this process) behind an
    `S3Proxy`, with test credentials. The proxy's URL is set before Ray starts, so that
    Ray's workers inherit it."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = S3Proxy(port)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "segray-test-key",
            "AWS_SECRET_ACCESS_KEY": "segray-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": proxy.url,
        }
    )
    yield proxy
    proxy.cut()
    server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(s3_server) -> str:
    """The S3 endpoint URL (AWS_ENDPOINT_URL)."""
    return s3_server.url


@pytest.fixture
def s3_proxy(s3_server) -> S3Proxy:
    """The proxy in front of the S3 server, for a test that cuts it; restored afterwards."""
    yield s3_server
    s3_server.restore()


@pytest.fixture(scope="session")
def ray_session(s3_endpoint):
    import ray

    ray.init(num_cpus=4, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """48 generated MADS-like images with masks, shared read-only by the tests."""
    return write_synthetic(tmp_path_factory.mktemp("synthetic") / "set", 48, seed=7)


@pytest.fixture
def dataset_copy(synthetic_root, tmp_path) -> Path:
    """A private copy of the first 12 synthetic pairs, for tests that damage files."""
    root = tmp_path / "dataset"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
        for name in sorted(os.listdir(synthetic_root / folder))[:12]:
            shutil.copy(synthetic_root / folder / name, root / folder / name)
    return root


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """Tiny random GroundingDINO and SAM2 folders in the save_pretrained layout."""
    from segray.models.tiny_langsam import save_tiny_langsam

    return save_tiny_langsam(tmp_path_factory.mktemp("langsam"))
