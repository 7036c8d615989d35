"""Shared fixtures: one local Ray for the whole session, and small generated datasets.

Ray gets more logical CPUs than this machine's cores: model actors holding every CPU
would otherwise starve the decode tasks. `ray.init` costs seconds, so
every test shares one cluster; a second cluster on the host confuses Ray Train.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import struct
import zlib
from dataclasses import dataclass
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


# A test that needs one of these set-ups is slow itself (`pytest_collection_modifyitems`).
SLOW_FIXTURES = {"shared_run", "s3_run", "local_cluster", "mlflow_server"}
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it mounts a file system or a mount namespace")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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

    def __init__(self, target_port: int, port: int):
        import threading

        self.target, self.port = ("127.0.0.1", target_port), port
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
        import threading

        with self._lock:
            self._marker = None
            self._throttle = (None, 0, 503)
            if self._listener is not None:
                return
            self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: same port again
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def cut(self) -> None:

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


def png_bomb(width: int = 32768, height: int = 32767) -> bytes:
    """A valid PNG a few KB long whose header declares `width` x `height` 8-bit gray pixels
    (32768 x 32767: 1 GiB once decoded, 3 GiB as RGB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 64, 9)  # the first rows; a decoder would allocate them all
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# A Radiance HDR file OpenCV decodes (Pillow does not), declaring 16000 x 32768 float pixels (6 GB).
HDR_BOMB = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 16000 +X 32768\n" + b"\x02\x02\x80\x00" * 4096


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The S3 endpoint every process of the session sees: the proxy's port is chosen now, before
# Ray starts (its workers inherit the environment), and the server behind it starts only
# when a test asks for it (`s3_server`).
S3_PROXY_PORT = free_port()
os.environ.update({
    "AWS_ACCESS_KEY_ID": "segray-test-key",
    "AWS_SECRET_ACCESS_KEY": "segray-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PROXY_PORT}",
})


@pytest.fixture(scope="session")
def s3_server() -> S3Proxy:
    """A real S3 HTTP endpoint on loopback (moto's server, in this process) behind an
    `S3Proxy` on the session's S3 port (AWS_ENDPOINT_URL), with test credentials."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = S3Proxy(port, S3_PROXY_PORT)
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
def ray_session():
    import ray

    ray.init(num_cpus=4, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def local_cluster():
    """A multi-node Ray cluster of its own (`tests.cluster.LocalCluster`), beside the session's
    Ray: a head with no CPUs, to which each test adds the nodes it needs and takes away."""
    from tests.cluster import LocalCluster

    cluster = LocalCluster(cpus=0)
    yield cluster
    cluster.stop()


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
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    """Every tiny random foundation model (segray.models.tiny_langsam.WRITERS), save_pretrained folders by name."""
    from segray.models.tiny_langsam import save_tiny_weights

    return save_tiny_weights(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_weights(tiny_folders) -> tuple[Path, Path]:
    """LangSAM's tiny (detector, sam) folders."""
    return tiny_folders["grounding-dino"], tiny_folders["sam2"]


@pytest.fixture(scope="session")
def tiny_sam3(tiny_folders) -> Path:
    return tiny_folders["sam3"]


def langsam_options(tiny_weights) -> list[str]:
    """The options that run LangSAM on the tiny weights, keeping every box (threshold 0)."""
    detector, sam = tiny_weights
    return ["--langsam-detector", str(detector), "--langsam-sam", str(sam), "--langsam-box-threshold", "0"]


@dataclass
class SharedRun:
    """The session's benchmark (`shared_run`): `out` holds the run `out/RUN_ID`, its
    checkpoint store `out/store` and the dataset cache `out/cache`; `argv` ran it."""

    out: Path
    argv: list[str]
    status: int
    run_id: str = "shared"

    @property
    def run(self) -> Path:
        return self.out / self.run_id

    def read(self, name: str) -> dict:
        return json.loads((self.run / name).read_text())

    def dataset_options(self) -> list[str]:
        """The options that name its dataset again (for another job on the same images)."""
        return ["--dataset", SHARED_DATASET, "--cache-dir", str(self.out / "cache")]


SHARED_DATASET = "synthetic:20"
SHARED_LANGSAM_SWEEP = ["--langsam-prompts", "human.", "--langsam-box-thresholds", "0.999"]


@pytest.fixture(scope="session")
def shared_run(ray_session, tiny_weights, tmp_path_factory) -> SharedRun:
    """One tiny benchmark, run once for every test that reads a finished run: the demo preset
    on 20 generated images at 64 px; both networks, each on the whole train split and on half
    of it (`--train-fractions 0.5,1`: four Ray Train fits, one CPU each, so that the stream's
    five pools run beside them), the UNet for 2 epochs, the ResNet34-UNet for 1; tiny LangSAM
    over 2 prompts x 2 box thresholds; every training recorded in a checkpoint store. Tests
    must not change it: they write their own runs beside it, under other ids."""
    out = tmp_path_factory.mktemp("shared")
    argv = ["--preset", "demo", "--dataset", SHARED_DATASET, "--cache-dir", str(out / "cache"), "--output", str(out),
            "--run-id", "shared", "--image-size", "64", "--models", "unet,resnet34_unet,langsam",
            "--unet-epochs", "2", "--resnet-epochs", "1", "--train-fractions", "0.5,1", "--cpus-per-worker", "1",
            *langsam_options(tiny_weights), *SHARED_LANGSAM_SWEEP, "--checkpoint-store", str(out / "store")]
    return SharedRun(out, argv, job("benchmark")(argv))


@dataclass
class S3Run:
    """The session's benchmark on S3 (`s3_run`) and the local evaluation of its checkpoint."""

    bucket: str
    local_data: Path  # the same 12 images as s3://BUCKET/mads
    local_runs: Path  # where the local evaluation wrote its run, `local`
    secrets: list[str]  # planted in the environment while both ran
    said: dict[str, str]  # what they printed (stdout, stderr) and logged (log records, at INFO)
    status: tuple[int, int]  # the two jobs' exit codes

    @property
    def run(self) -> str:
        return f"s3://{self.bucket}/runs/s3"


@pytest.fixture(scope="session")
def s3_run(ray_session, s3_endpoint, synthetic_root, tiny_weights, tmp_path_factory) -> S3Run:
    """A benchmark whose data and output are both on S3 (the UNet, 1 epoch at 64 px, and tiny
    LangSAM, on 12 images), then jobs/evaluate.py of its checkpoint on a local copy of the
    data, into a local folder. Canary secrets (AWS, Kaggle, Hugging Face) are in the
    environment and a password is in the tracking URI while they run, and everything they
    print or log is kept, for the secret scan."""
    import contextlib
    import io
    import logging

    import boto3
    import pyarrow.fs as pafs

    from segray import storage

    root = tmp_path_factory.mktemp("s3-run")
    data = root / "mads"
    for folder in ("images", "masks"):
        (data / folder).mkdir(parents=True)
        for name in sorted(os.listdir(synthetic_root / folder))[:12]:
            shutil.copy(synthetic_root / folder / name, data / folder / name)
    bucket = "segray-s3-run"
    boto3.client("s3").create_bucket(Bucket=bucket)
    fs, path = storage.resolve(f"s3://{bucket}/mads")
    pafs.copy_files(str(data), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)

    # The moto endpoint accepts any secret; the Ray workers keep the session's.
    secrets = [os.environ["AWS_SECRET_ACCESS_KEY"], "CANARY-aws-secret-4d1f", "CANARY-aws-session-8b2e",
               "CANARY-kaggle-key-51c7", "CANARY-kaggle-token-93aa", "CANARY-hf-token-2b7e", "CANARY-mlflow-pass-77c1"]
    # A tracking server's password in its URI; nothing listens there, so logging fails with a warning.
    tracking = f"http://segray:{secrets[6]}@127.0.0.1:{free_port()}"
    out, err, records = io.StringIO(), io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(records)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    common = ["--preset", "demo", "--models", "unet,langsam", *langsam_options(tiny_weights), "-v",
              "--tracking.uri", tracking]
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for name, value in (("AWS_SECRET_ACCESS_KEY", secrets[1]), ("AWS_SESSION_TOKEN", secrets[2]),
                            ("KAGGLE_USERNAME", "segray-canary"), ("KAGGLE_KEY", secrets[3]),
                            ("KAGGLE_API_TOKEN", secrets[4]), ("HF_TOKEN", secrets[5])):
            env.setenv(name, value)
        root_logger = logging.getLogger()
        level = root_logger.level
        root_logger.addHandler(handler)
        root_logger.setLevel(logging.INFO)
        try:
            status = (job("benchmark")([*common, "--dataset", f"s3://{bucket}/mads", "--output", f"s3://{bucket}/runs",
                                        "--run-id", "s3", "--unet-epochs", "1", "--image-size", "64"]),
                      job("evaluate")([*common, "--dataset", str(data), "--output", str(root / "runs"),
                                       "--run-id", "local", "--checkpoints-from", f"s3://{bucket}/runs/s3"]))
        finally:
            root_logger.removeHandler(handler)
            root_logger.setLevel(level)
    said = {"stdout": out.getvalue(), "stderr": err.getvalue(), "log records": records.getvalue()}
    return S3Run(bucket, data, root / "runs", secrets, said, status)
