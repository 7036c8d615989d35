"""Serve the benchmark's models as an HTTP API on Ray Serve, until Ctrl-C or SIGTERM.

    python jobs/serve.py --checkpoints-from runs/demo --models unet,resnet34_unet
    python jobs/serve.py --checkpoint-store s3://bucket/store --version resnet34_unet=best --host 0.0.0.0
    python jobs/serve.py --mlflow-tracking-uri http://HOST:5000 --version unet=models:/segray-unet@champion --models unet
    curl -s -H 'Content-Type: image/png' --data-binary @image.png localhost:8000/segment/unet

The models and versions are chosen as jobs/evaluate.py chooses them from the same options,
so the API's mask for an image is the mask_png an evaluation of those weights stores.
Routes: GET /healthz, GET /models, POST /segment/{model}[?variant=V|all]; docs at /docs.
Joins the cluster of --ray-address or RAY_ADDRESS, else starts a local Ray. Exits 0 after a
clean shutdown, 2 on bad arguments or when no model can be served.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from segray.cli import set_up
from segray.errors import CheckpointStoreError, RunError
from segray.serve.options import serve_parser, serve_settings


def main(argv: list[str] | None = None) -> int:
    p = serve_parser(__doc__.split("\n\n")[0])
    args = p.parse_args(argv)
    set_up(args)
    import ray
    from ray import serve

    from segray.run import start_ray
    from segray.serve.app import APP_NAME, application

    try:
        start_ray(args.ray_address)
        settings = serve_settings(p, args, ray.cluster_resources())
    except (RunError, CheckpointStoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(application(settings), name=APP_NAME, route_prefix="/")
    served = ", ".join(f"{spec.name} ({spec.version})" for spec in settings.specs)
    print(f"serving {served} at http://{args.host}:{args.port} (docs: /docs); Ctrl-C stops", flush=True)
    for model, why in settings.unavailable.items():
        print(f"not served: {model}: {why}", flush=True)
    while not stop.wait(1):
        pass
    print("stopping", flush=True)
    if args.ray_address or os.environ.get("RAY_ADDRESS"):
        serve.delete(APP_NAME)  # a shared cluster's other Serve applications keep running
    else:
        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
