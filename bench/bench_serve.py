"""The API's images/s and latency (p50/p95) at 1, 8 and 32 concurrent clients, beside a direct
loop over the same images in one process, side by side in one run.

    python bench/bench_serve.py                          # UNet, demo size, CPU
    python bench/bench_serve.py --size 256 --unet-base-width 64 --requests 256 --markdown serve.md

The direct loop is what a hand-written server does per request: decode the image bytes,
predict that one image, encode the mask as PNG (`plain loop`); `batched loop` predicts 16 at
a time, the best a single process can do without an API. The API runs as `jobs/serve.py`
would run it (one UNet replica on a local Ray, requests batched by `@serve.batch`), and the
clients are threads of this process posting the PNG files over HTTP on loopback: on a
small machine they take CPU from the server, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # as the jobs: segray.cli.RAY_WORKER_ENV

import requests
import torch

from segray.data.decode import decode_image, encode_mask
from segray.data.synthetic import write_synthetic
from segray.models.base import ModelSpec
from segray.models.catalogue import build_segmenter
from segray.models.checkpoint import save_checkpoint
from segray.models.networks import build_network
from segray.report.provenance import hardware


def loop(spec: ModelSpec, files: list[bytes], requests_total: int, batch: int) -> dict:
    """Images/s of decode, predict and encode in this process, `batch` images per predict."""
    model = build_segmenter(spec)
    model.predict([decode_image(files[0])])
    started = time.perf_counter()
    for start in range(0, requests_total, batch):
        chunk = [files[(start + i) % len(files)] for i in range(min(batch, requests_total - start))]
        for prediction in model.predict([decode_image(data) for data in chunk]):
            encode_mask(prediction["unet"].mask)
    return {"images_s": requests_total / (time.perf_counter() - started)}


def served(url: str, files: list[bytes], requests_total: int, clients: int) -> dict:
    """Images/s and client-side latency of `requests_total` posts from `clients` threads."""

    def client(c: int) -> list[tuple[float, int]]:
        session, out = requests.Session(), []
        for r in range(c, requests_total, clients):
            sent = time.perf_counter()
            answer = session.post(f"{url}/segment/unet", data=files[r % len(files)],
                                  headers={"Content-Type": "image/png"}, timeout=300)
            answer.raise_for_status()
            out.append((1000 * (time.perf_counter() - sent), answer.json()["batch_size"]))
        return out

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = [item for part in pool.map(client, range(clients)) for item in part]
    seconds = time.perf_counter() - started
    latencies = sorted(ms for ms, _ in results)
    return {"images_s": requests_total / seconds, "p50": statistics.median(latencies),
            "p95": latencies[int(0.95 * (len(latencies) - 1))],
            "mean_batch": statistics.mean(size for _, size in results)}


def start_api(checkpoint: str, max_batch: int, wait_ms: float) -> str:
    from ray import serve

    from segray.run import start_ray
    from segray.serve.app import APP_NAME, application
    from segray.serve.options import serve_settings
    from segray.settings import load

    start_ray()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = load("serve", ["--models", "unet", "--checkpoint", f"unet={checkpoint}", "--replicas", "1",
                            "--max-batch-size", str(max_batch), "--batch-wait-ms", str(wait_ms)])
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(application(serve_settings(config, {})), name=APP_NAME, route_prefix="/")
    return f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96, help="the UNet's input size (default 96, the demo's)")
    parser.add_argument("--unet-base-width", type=int, default=8, help="the UNet's first width (default 8, the demo's)")
    parser.add_argument("--requests", type=int, default=128, help="timed requests per setting (default 128)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="the replica's batch limit (default 16)")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0, help="the replica's batch wait (default 10)")
    parser.add_argument("--markdown", help="also write the table to this Markdown file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = write_synthetic(Path(tmp) / "set", 32, seed=0)
        files = [(root / "images" / name).read_bytes() for name in sorted(os.listdir(root / "images"))]
        checkpoint = str(Path(tmp) / "unet")
        params = {"base_width": args.unet_base_width}
        save_checkpoint(checkpoint, build_network("unet", params),
                        {"model": "unet", "params": params, "image_size": args.size, "run_id": "bench"})
        spec = ModelSpec("unet", checkpoint=checkpoint)
        rows = [("plain loop (1 image per predict)", loop(spec, files, args.requests, 1)),
                (f"batched loop ({args.max_batch_size} per predict)",
                 loop(spec, files, args.requests, args.max_batch_size))]
        url = start_api(checkpoint, args.max_batch_size, args.batch_wait_ms)
        served(url, files, 16, 8)  # warm-up
        for clients in (1, 8, 32):
            rows.append((f"API, {clients} client{'s' * (clients > 1)}", served(url, files, args.requests, clients)))
    plain = rows[0][1]["images_s"]
    hw = hardware()
    lines = [f"hardware: {hw['cpu']}, {hw['cores']} cores, GPUs: {hw['gpus'] or 'none'}; torch {torch.__version__}, "
             f"{torch.get_num_threads()} torch threads in the loops",
             f"UNet width {args.unet_base_width} at {args.size} px on 512x384 PNGs; {args.requests} requests per row; "
             f"replica: max batch {args.max_batch_size}, wait {args.batch_wait_ms:g} ms",
             "", "| setting | images/s | x plain loop | p50 ms | p95 ms | mean batch |", "|---|---|---|---|---|---|"]
    for name, r in rows:
        cells = [f"{r['images_s']:.1f}", f"{r['images_s'] / plain:.2f}x"]
        cells += [f"{r[k]:.0f}" if k in r else "–" for k in ("p50", "p95")]
        cells.append(f"{r['mean_batch']:.1f}" if "mean_batch" in r else "–")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")


if __name__ == "__main__":
    main()
