"""The API end to end: jobs/serve.py on the shared Ray, real Serve, real HTTP on loopback."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import torch

from segray.models.checkpoint import save_checkpoint
from segray.models.networks import build_network
from tests.conftest import HDR_BOMB, JOBS, free_port, job, png_bomb

pytestmark = pytest.mark.slow  # every test here runs a job or a server

MAX_PIXELS = 600_000  # the synthetic images are 512x384 = 196,608 pixels
MAX_BYTES = 2 << 20
TOKEN = "test-token-5f2c"  # the API's bearer token (SEGRAY_API_TOKEN)
QUEUED = 32  # requests that may wait for a deployment: a burst beyond it gets 503
IMAGES = 6  # compared with the evaluation's rows


def write_checkpoints(root: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    networks = {"unet": {"base_width": 4}, "resnet34_unet": {"encoder_weights": "none"}}
    for model, params in networks.items():
        save_checkpoint(str(root / model), build_network(model, params),
                        {"model": model, "params": params, "image_size": 64, "run_id": "served"})
    return {model: root / model for model in networks}


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_weights, tiny_sam3) -> list[str]:
    """The options that name the four models' weights, for jobs/serve.py and jobs/evaluate.py alike."""
    checkpoints = write_checkpoints(tmp_path_factory.mktemp("checkpoints"))
    detector, sam = tiny_weights
    return ["--models", "unet,resnet34_unet,langsam,sam3",
            *(arg for model, path in checkpoints.items() for arg in ("--checkpoint", f"{model}={path}")),
            "--langsam-detector", str(detector), "--langsam-sam", str(sam), "--langsam-box-threshold", "0",
            "--sam3.weights", str(tiny_sam3), "--sam3.threshold", "0.3"]


class Server:
    def __init__(self, process: subprocess.Popen, url: str, log: Path):
        self.process, self.url, self.log = process, url, log

    def post(self, model: str, data: bytes, content_type: str | None = "image/png", token: str | None = TOKEN,
             **params) -> requests.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.post(f"{self.url}/segment/{model}", data=data, headers=headers, params=params, timeout=120)

    def get(self, path: str, token: str | None = TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return requests.get(f"{self.url}{path}", headers=headers, timeout=30)

    def wait_healthy(self, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.process.poll() is None, f"jobs/serve.py exited:\n{self.log.read_text()}"
            try:
                if requests.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet, or routing to a replica that is starting
                pass
            time.sleep(1)
        raise AssertionError(f"not healthy after {timeout}s:\n{self.log.read_text()}")


@pytest.fixture(scope="module")
def server(ray_session, weights, tmp_path_factory) -> Server:
    """jobs/serve.py joined to the shared Ray; stopped with SIGTERM at the end, which must exit 0."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, str(JOBS / "serve.py"), *weights, "--ray-address", ray_session.get_runtime_context().gcs_address,
             "--port", str(port), "--replicas", "1", "--cpus-per-replica", "0.5", "--max-batch-size", "8",
             "--batch-wait-ms", "50", "--max-pixels", str(MAX_PIXELS), "--max-bytes", str(MAX_BYTES),
             "--serve.max-queued-requests", str(QUEUED)],
            stdout=out, stderr=subprocess.STDOUT, cwd=JOBS.parent, env={**os.environ, "SEGRAY_API_TOKEN": TOKEN})
    served = Server(process, f"http://127.0.0.1:{port}", log)
    served.wait_healthy()
    yield served
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, log.read_text()
    from ray import serve

    assert "segray" not in serve.status().applications  # the job took its application down


@pytest.fixture(scope="module")
def images_root(synthetic_root, tmp_path_factory) -> Path:
    """The first 8 synthetic pairs."""
    root = tmp_path_factory.mktemp("few")
    for folder in ("images", "masks"):
        (root / folder).mkdir()
        for path in sorted((synthetic_root / folder).iterdir())[:8]:
            shutil.copy(path, root / folder / path.name)
    return root


@pytest.fixture(scope="module")
def evaluated(ray_session, weights, images_root, tmp_path_factory):
    """jobs/evaluate.py's stored rows for the same weights, one image per forward pass (as the
    API answers a request that waits for no other)."""
    runs = tmp_path_factory.mktemp("runs")
    assert job("evaluate")(["--preset", "demo", "--dataset", str(images_root), "--output", str(runs),
                            "--run-id", "eval", *weights, "--eval-batch-size", "unet=1",
                            "--eval-batch-size", "resnet34_unet=1", "--eval-batch-size", "langsam=1",
                            "--eval-batch-size", "sam3=1"]) == 0
    return pq.read_table(runs / "eval" / "predictions").to_pandas()


def image_bytes(images_root: Path, image_id: str) -> bytes:
    return (images_root / "images" / image_id).read_bytes()


def stored_mask(rows, image_id: str, variant: str) -> str | None:
    row = rows[(rows["image_id"] == image_id) & (rows["model"] == variant)].iloc[0]
    return None if row["mask_png"] is None else base64.b64encode(row["mask_png"]).decode("ascii")


def png(width: int, height: int) -> bytes:
    return cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))[1].tobytes()


def test_each_models_served_mask_is_the_evaluations_stored_mask(server, evaluated, images_root):
    models = server.get("/models").json()
    by_name = {m["name"]: m for m in models["models"]}
    assert set(by_name) == {"unet", "resnet34_unet", "langsam", "sam3"}
    assert by_name["unet"]["model_version"] == "unet@served" and by_name["unet"]["input_size"] == "64x64"
    assert by_name["langsam"]["default_variant"] == "langsam/sam_score"  # no ranking run: the first rule
    assert all(m["device"].startswith("CPU: ") for m in by_name.values())

    image_ids = sorted(evaluated["image_id"].unique())[:IMAGES]
    compared = 0
    for image_id in image_ids:
        data = image_bytes(images_root, image_id)
        for model in ("unet", "resnet34_unet"):
            answer = server.post(model, data)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["model"], body["status"], body["batch_size"]) == (model, "ok", 1)
            assert (body["width"], body["height"]) == (512, 384)
            assert body["model_version"] == evaluated.loc[evaluated["model"] == model, "model_version"].iloc[0]
            assert body["mask_png"] == stored_mask(evaluated, image_id, model), (model, image_id)
            compared += 1
        every = {model: server.post(model, data, variant="all").json() for model in ("langsam", "sam3")}
        for model, answers in every.items():
            assert set(answers["variants"]) == set(by_name[model]["variants"])
            for variant, answer in answers["variants"].items():
                assert answer["mask_png"] == stored_mask(evaluated, image_id, variant), (variant, image_id)
                compared += 1
        default = server.post("langsam", data).json()
        assert default["variant"] == "langsam/sam_score"
        assert default["mask_png"] == every["langsam"]["variants"]["langsam/sam_score"]["mask_png"]
    assert compared == IMAGES * (2 + len(by_name["langsam"]["variants"]) + len(by_name["sam3"]["variants"]))


def test_a_multipart_upload_gets_the_same_answer(server, images_root):
    data = sorted((images_root / "images").iterdir())[0].read_bytes()
    raw = server.post("unet", data).json()
    form = requests.post(f"{server.url}/segment/unet", files={"file": ("a.png", data, "image/png")},
                         headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert form.status_code == 200 and form.json()["mask_png"] == raw["mask_png"]


@pytest.mark.parametrize("request_kind, status, message", [
    ("empty body", 400, "no image"),
    ("not an image", 400, "not an image we can read"),
    ("unknown model", 404, "no model 'mask_rcnn'"),
    ("unknown variant", 400, "no variant 'langsam/best'"),
    ("wrong content type", 415, "Content-Type image/png"),
    ("too many pixels", 413, "data.max_pixels"),
    ("too many bytes", 413, "--max-bytes"),
    ("form without a file", 400, "no file"),
    ("unknown route", 404, "/docs"),
])
def test_bad_input_gets_its_status_and_a_json_error_then_the_server_serves(server, images_root, request_kind,
                                                                          status, message):
    good = next((images_root / "images").iterdir()).read_bytes()
    answer = {
        "empty body": lambda: server.post("unet", b""),
        "not an image": lambda: server.post("unet", b"this is no image " * 10),
        "unknown model": lambda: server.post("mask_rcnn", good),
        "unknown variant": lambda: server.post("langsam", good, variant="langsam/best"),
        "wrong content type": lambda: server.post("unet", good, content_type="text/plain"),
        "too many pixels": lambda: server.post("unet", png(1000, 601)),
        "too many bytes": lambda: server.post("unet", os.urandom(MAX_BYTES + 1)),
        "form without a file": lambda: requests.post(f"{server.url}/segment/unet", data={"x": "1"},
                                                     headers={"Authorization": f"Bearer {TOKEN}"},
                                                     files={"note": (None, "no file")}, timeout=30),
        "unknown route": lambda: server.get("/segmentation"),
    }[request_kind]()
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert server.post("unet", good).status_code == 200


def test_openapi_docs_describe_the_routes(server):
    spec = requests.get(f"{server.url}/openapi.json", timeout=30).json()
    assert {"/healthz", "/models", "/segment/{model}"} <= set(spec["paths"])
    assert "image/png" in spec["paths"]["/segment/{model}"]["post"]["requestBody"]["content"]
    assert requests.get(f"{server.url}/docs", timeout=30).status_code == 200


def test_every_route_but_healthz_asks_for_the_token_before_the_body(server, images_root):
    good = next((images_root / "images").iterdir()).read_bytes()
    for answer in (server.post("unet", good, token=None), server.post("unet", good, token="wrong"),
                   server.get("/models", token=None), server.post("unet", b"", token=None)):
        assert answer.status_code == 401, answer.text
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert "bearer token" in answer.json()["error"]
    assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200  # probes need no token
    assert server.post("unet", good).status_code == 200


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def test_decompression_bombs_are_refused_from_their_header_within_a_small_requests_memory(server, images_root):
    """A 3 KB PNG declaring 1 G pixels is 413; a Radiance HDR (which OpenCV would decode to
    6 GB) is no accepted format, 400. The ingress replica's memory does not grow."""
    (ingress,) = replica_pids("api")
    before = rss_mib(ingress)
    for _ in range(10):
        bomb = server.post("unet", png_bomb())
        assert bomb.status_code == 413 and "32768x32767" in bomb.json()["error"], bomb.text
        hdr = server.post("unet", HDR_BOMB)
        assert hdr.status_code == 400 and "not a PNG, JPEG, WebP, BMP or TIFF" in hdr.json()["error"], hdr.text
    grown = rss_mib(ingress) - before
    assert grown < 64, f"the ingress grew by {grown:.0f} MiB"
    assert server.post("unet", next((images_root / "images").iterdir()).read_bytes()).status_code == 200


def test_a_burst_beyond_the_queues_gets_503_with_retry_after_and_the_server_serves_on(server, images_root):
    image = next((images_root / "images").iterdir()).read_bytes()
    start = threading.Barrier(240)

    def one(_: int) -> requests.Response:
        start.wait()
        return server.post("langsam", image, variant="all")

    with ThreadPoolExecutor(240) as pool:
        answers = list(pool.map(one, range(240)))
    statuses = sorted({answer.status_code for answer in answers})
    assert set(statuses) <= {200, 503}, statuses
    refused = [answer for answer in answers if answer.status_code == 503]
    assert refused, "no request was refused: the queues did not fill"
    assert all(int(answer.headers["Retry-After"]) >= 1 for answer in refused)
    assert server.post("langsam", image).status_code == 200


def load(server: Server, images: dict[str, bytes], clients: int, requests_each: int) -> list[tuple[str, int, dict]]:
    names = sorted(images)

    def client(c: int) -> list[tuple[str, int, dict]]:
        out = []
        for r in range(requests_each):
            image_id = names[(c + r) % len(names)]
            answer = server.post("unet", images[image_id])
            out.append((image_id, answer.status_code, answer.json()))
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [result for results in pool.map(client, range(clients)) for result in results]


def test_32_concurrent_clients_get_correct_masks_from_batches(server, evaluated, images_root):
    image_ids = sorted(evaluated["image_id"].unique())[:8]
    images = {image_id: image_bytes(images_root, image_id) for image_id in image_ids}
    answers = load(server, images, clients=32, requests_each=8)
    assert len(answers) == 256
    assert all(status == 200 for _, status, _ in answers), {s for _, s, _ in answers}
    # The UNet's masks do not depend on the batch they were computed in (docs/PERFORMANCE.md).
    assert all(body["mask_png"] == stored_mask(evaluated, image_id, "unet") for image_id, _, body in answers)
    assert max(body["batch_size"] for _, _, body in answers) > 1


def replica_pids(deployment: str) -> list[int]:
    """The processes of a deployment's replicas, by the title Ray gives them."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, ValueError):
            continue
        if title.startswith(f"ray::ServeReplica:segray:{deployment}"):
            pids.append(int(entry.name))
    return pids


def test_a_killed_replica_is_replaced_and_the_failures_are_counted(server, images_root, capsys):
    images = {p.name: p.read_bytes() for p in sorted((images_root / "images").iterdir())[:4]}
    (pid,) = replica_pids("unet")
    with ThreadPoolExecutor(1) as background:
        during = background.submit(load, server, images, 8, 6)
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        answers = during.result()
    failures = [status for _, status, _ in answers if status != 200]
    with capsys.disabled():
        print(f"\n{len(failures)} of {len(answers)} requests failed while the replica was killed: {failures}")
    assert all(status == 503 for status in failures)  # said plainly, never a dead server
    deadline = time.time() + 120
    while replica_pids("unet") in ([], [pid]) and time.time() < deadline:
        time.sleep(0.5)
    server.wait_healthy()
    after = load(server, images, clients=4, requests_each=5)
    assert [status for _, status, _ in after] == [200] * 20
