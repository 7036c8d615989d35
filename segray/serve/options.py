"""What the API serves and how, from the jobs' settings: `jobs/serve.py`'s, or the `args`
of a Serve config file, which a settings file's keys fill (`serve_settings_from_config`).

The models and their versions come from `segray.models.selection.models_to_evaluate`,
the one place that turns a run or the checkpoint store into models, so the API serves
exactly the weights an evaluation of the same options scores.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from segray import storage
from segray.cli import trained_models
from segray.config import Config, of_model, use_gpus
from segray.errors import CheckpointStoreError, RunError, SettingsError
from segray.models.base import ModelSpec
from segray.models.catalogue import variants_of
from segray.models.selection import models_to_evaluate
from segray.settings import from_mapping

DEFAULT_REPLICAS = (1, 4)  # a model's replicas unless `serve.replicas` says otherwise


@dataclass
class ServeSettings:
    """The application: one deployment per model in `specs`, behind one ingress.
    Per-model settings are keyed by model name (`config.ServeConfig` describes each)."""

    specs: list[ModelSpec]
    unavailable: dict[str, str]  # model -> why it is not served
    default_variants: dict[str, str]
    max_batch_size: dict[str, int]
    batch_wait_ms: float
    replicas: dict[str, tuple[int, int]]  # (min, max)
    cpus_per_replica: float
    gpus_per_replica: dict[str, float]
    use_gpu: bool
    max_pixels: int
    max_bytes: int
    max_ongoing_requests: int
    max_queued_requests: int
    retry_after_s: int
    token_sha256: str | None  # the bearer token's SHA-256: the token itself never enters Serve's config


def serve_settings(config: Config, cluster: dict[str, float] | None = None) -> ServeSettings:
    """The application the settings describe (`models`, `checkpoints`, `serve`). Raises
    RunError when no model can be served, or when one model would be served in several
    versions; CheckpointStoreError when a version selector names no version; SettingsError
    when one cannot be looked up."""
    trained = trained_models(config, default_selector="latest")
    # One deployment per model: LangSAM's own pairing (make another its own to serve it).
    served = config.model_copy(update={"langsam": config.langsam.model_copy(update={"pairings": []})})
    specs, unavailable = models_to_evaluate(served, trained)
    names = [spec.name for spec in specs]
    several = sorted({name for name in names if names.count(name) > 1})
    if several:
        raise RunError(f"the API serves one version per model; {', '.join(several)} matched several "
                       "(checkpoints.versions MODEL: all?): name one, MODEL: VERSION")
    if not specs:
        reasons = "; ".join(f"{model}: {why}" for model, why in unavailable.items())
        raise RunError(f"no model can be served ({reasons})")
    serve, evaluation = config.serve, config.evaluation
    return ServeSettings(
        specs=specs,
        unavailable=unavailable,
        default_variants=default_variants(specs, serve.rank_from or config.checkpoints.run),
        max_batch_size={m: of_model(serve.max_batch_size, m, of_model(evaluation.batch_size, m, 8)) for m in names},
        batch_wait_ms=serve.batch_wait_ms,
        replicas={m: of_model(serve.replicas, m, DEFAULT_REPLICAS) for m in names},
        cpus_per_replica=serve.cpus_per_replica,
        gpus_per_replica={m: of_model(serve.gpus_per_replica, m, of_model(evaluation.gpus_per_actor, m, 1.0))
                          for m in names},
        use_gpu=use_gpus(config.cluster.gpu, cluster or {}),
        max_pixels=config.data.max_pixels,
        max_bytes=serve.max_bytes,
        max_ongoing_requests=serve.max_ongoing_requests,
        max_queued_requests=serve.max_queued_requests,
        retry_after_s=serve.retry_after_s,
        token_sha256=api_token_sha256(serve.api_token_file),
    )


TOKEN_VARIABLE = "SEGRAY_API_TOKEN"


def api_token_sha256(token_file: str | None) -> str | None:
    """The SHA-256 of the API's bearer token: the file's first line, else SEGRAY_API_TOKEN;
    None without either (no token asked). Raises SettingsError for a file that cannot be
    read or is empty."""
    if token_file:
        try:
            token = storage.read_bytes(os.path.expanduser(token_file)).decode().strip()
        except (OSError, UnicodeDecodeError) as error:
            raise SettingsError(f"serve.api_token_file: cannot read {token_file}: {error}") from None
        if not token:
            raise SettingsError(f"serve.api_token_file: {token_file} is empty")
    else:
        token = os.environ.get(TOKEN_VARIABLE, "").strip()
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def default_variants(specs: list[ModelSpec], ranking_run: str | None) -> dict[str, str]:
    """Each model's variant for a request without ?variant=: the one the run's summary.json
    ranks best by mean IoU, else the model's first (LangSAM: langsam/sam_score)."""
    ranked = {}
    if ranking_run and storage.exists(storage.join(ranking_run, "summary.json")):
        ranked = json.loads(storage.read_bytes(storage.join(ranking_run, "summary.json"))).get("models", {})
    chosen = {}
    for spec in specs:
        variants = variants_of(spec)
        scored = [v for v in variants if (ranked.get(v) or {}).get("mean_iou") is not None]
        chosen[spec.name] = max(scored, key=lambda v: ranked[v]["mean_iou"]) if scored else variants[0]
    return chosen


def serve_settings_from_config(args: dict[str, Any]) -> ServeSettings:
    """The application of a Serve config file's `args`: jobs/serve.py's settings, as a
    settings file writes them. A bad one raises SettingsError."""
    config = from_mapping("serve", args, "the Serve config's args")
    try:
        import ray

        cluster = ray.cluster_resources() if ray.is_initialized() else {}
    except Exception:
        cluster = {}
    try:
        return serve_settings(config, cluster)
    except CheckpointStoreError as error:
        raise RunError(str(error)) from error
