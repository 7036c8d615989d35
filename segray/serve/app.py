"""The Serve application: a deployment per model behind the FastAPI ingress (`segray.serve.api`)."""

from __future__ import annotations

from typing import Any

from ray.serve import Application
from ray.serve.config import BackpressureConfig

from segray.models.catalogue import variants_of
from segray.serve.api import Api
from segray.serve.options import ServeSettings, serve_settings_from_config
from segray.serve.replica import ModelServer

APP_NAME = "segray"


def application(settings: ServeSettings) -> Application:
    """The Serve application of `settings`."""
    # A full queue answers 503 with Retry-After at once, instead of holding the request.
    backpressure = BackpressureConfig(status_code=503, retry_after_s=settings.retry_after_s)
    servers = {}
    for spec in settings.specs:
        model = spec.name
        batch = settings.max_batch_size[model]
        servers[model] = ModelServer.options(
            name=model,
            max_ongoing_requests=2 * batch,
            max_queued_requests=settings.max_queued_requests,
            backpressure_config=backpressure,
            ray_actor_options={"num_cpus": settings.cpus_per_replica,
                               "num_gpus": settings.gpus_per_replica[model] if settings.use_gpu else 0},
            **_replicas(settings.replicas[model], target=batch),
        ).bind(spec, settings.default_variants[model], batch, settings.batch_wait_ms / 1000,
               settings.cpus_per_replica, len(settings.specs))
    most = max(high for _, high in settings.replicas.values())
    return Api.options(
        name="api",
        max_ongoing_requests=settings.max_ongoing_requests,  # enough to fill the models' batches
        max_queued_requests=settings.max_queued_requests,
        backpressure_config=backpressure,
        ray_actor_options={"num_cpus": settings.cpus_per_replica},
        **_replicas((1, most), target=64),
    ).bind(servers, {spec.name: variants_of(spec) for spec in settings.specs}, settings.default_variants,
           settings.unavailable, settings.max_pixels, settings.max_bytes, settings.token_sha256,
           settings.retry_after_s)


def _replicas(bounds: tuple[int, int], target: int) -> dict[str, Any]:
    """A fixed number of replicas, or autoscaling on `target` requests waiting per replica."""
    low, high = bounds
    if low == high:
        return {"num_replicas": low}
    return {"autoscaling_config": {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": target}}


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder (`import_path: segray.serve.app:build_app`): `args` are
    jobs/serve.py's settings as a settings file writes them, e.g.
    {"checkpoints": {"run": "s3://b/runs/x"}, "models": ["unet"]}."""
    return application(serve_settings_from_config(args))
