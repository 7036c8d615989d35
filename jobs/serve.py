"""Serve the benchmark's models as an HTTP API on Ray Serve, until Ctrl-C or SIGTERM.

    python jobs/serve.py --checkpoints-from runs/demo --models unet,resnet34_unet
    python jobs/serve.py --checkpoints.store s3://bucket/store --checkpoints.versions resnet34_unet=best --serve.host 0.0.0.0
    python jobs/serve.py --tracking.uri http://HOST:5000 --checkpoints.versions unet=models:/segray-unet@champion --models unet
    curl -s -H 'Content-Type: image/png' --data-binary @image.png localhost:8000/segment/unet

The models and versions are chosen as jobs/evaluate.py chooses them from the same settings,
so the API's mask for an image is the mask_png an evaluation of those weights stores. A
Serve config file (jobs/serve_config.yaml) gives the same settings as its `args`.
Routes: GET /healthz, GET /models, POST /segment/{model}[?variant=V|all]; docs at /docs.
Joins the cluster of cluster.ray_address or RAY_ADDRESS, else starts a local Ray. Exits 0
after a clean shutdown, 2 on bad settings or when no model can be served. With
serve.api_token_file (or SEGRAY_API_TOKEN) every route but /healthz asks for that bearer
token; without, whoever reaches the port may call the API (serve.host is 127.0.0.1 unless
set).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from segray.cli import job_config, set_up
from segray.errors import CheckpointStoreError, RunError, SettingsError
from segray.serve.options import serve_settings


def main(argv: list[str] | None = None) -> int:
    config = job_config("serve", argv)
    set_up(config)
    import ray
    from ray import serve

    from segray.run import start_ray
    from segray.serve.app import APP_NAME, application

    try:
        start_ray(config.cluster.ray_address)
        settings = serve_settings(config, ray.cluster_resources())
    except (SettingsError, RunError, CheckpointStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    host, port = config.serve.host, config.serve.port
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": config.serve.request_timeout_s})
    serve.run(application(settings), name=APP_NAME, route_prefix="/")
    served = ", ".join(f"{spec.name} ({spec.version})" for spec in settings.specs)
    print(f"serving {served} at http://{host}:{port} (docs: /docs); Ctrl-C stops", flush=True)
    for model, why in settings.unavailable.items():
        print(f"not served: {model}: {why}", flush=True)
    while not stop.wait(1):
        pass
    print("stopping", flush=True)
    if config.cluster.ray_address or os.environ.get("RAY_ADDRESS"):
        serve.delete(APP_NAME)  # a shared cluster's other Serve applications keep running
    else:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
