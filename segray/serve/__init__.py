"""The benchmark's models as an HTTP API on Ray Serve: one deployment per model (batching
the requests that wait, autoscaling between a minimum and a maximum of replicas) behind a
FastAPI ingress (`segray.serve.app`). `jobs/serve.py` runs it; `serve deploy
jobs/serve_config.yaml` deploys it on a cluster through `segray.serve.app:build_app`.
"""
