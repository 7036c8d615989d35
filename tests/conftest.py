"""Shared fixtures: one local Ray for the whole session, and small generated datasets.

Ray gets more logical CPUs than this machine's cores: model actors holding every CPU
would otherwise starve the decode tasks (see FIELD-NOTES). `ray.init` costs seconds, so
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

import pytest

from segray.data.synthetic import write_synthetic

DATA = Path(__file__).parent / "data"
JOBS = Path(__file__).parents[1] / "jobs"


def job(name: str):
    """The `main` of jobs/<name>.py, to run a job in-process on the shared Ray."""
    spec = importlib.util.spec_from_file_location(f"job_{name}", JOBS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3 HTTP endpoint on loopback (moto's server, in this process), with test
    credentials. Set before Ray starts, so that Ray's workers inherit it."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "segray-test-key",
            "AWS_SECRET_ACCESS_KEY": "segray-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_ENDPOINT_URL": url,
        }
    )
    yield url
    server.stop()


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
