"""What the API serves and how, from the same options as the jobs: `jobs/serve.py`'s
command line, or the `args` of a Serve config file (`serve_settings_from_config`).

The models and their versions come from `segray.models.selection.models_to_evaluate`,
the one place that turns a run or the checkpoint store into models, so the API serves
exactly the weights an evaluation of the same options scores.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import Any

from segray import storage
from segray.cli import (
    add_checkpoint_options,
    config_from_args,
    parser,
    per_model,
    pool_range,
    trained_models_from_args,
)
from segray.config import use_gpus
from segray.errors import CheckpointStoreError, RunError
from segray.models.base import ModelSpec
from segray.models.catalogue import variants_of
from segray.models.selection import models_to_evaluate

DEFAULT_REPLICAS = (1, 4)
DEFAULT_MAX_PIXELS = 40_000_000  # an 8000x5000 photo
DEFAULT_MAX_BYTES = 32 << 20


@dataclass
class ServeSettings:
    """The application: one deployment per model in `specs`, behind one ingress.
    Per-model settings are keyed by model name."""

    specs: list[ModelSpec]
    unavailable: dict[str, str] = field(default_factory=dict)  # model -> why it is not served
    default_variants: dict[str, str] = field(default_factory=dict)
    max_batch_size: dict[str, int] = field(default_factory=dict)
    batch_wait_ms: float = 10.0
    replicas: dict[str, tuple[int, int]] = field(default_factory=dict)  # (min, max); else DEFAULT_REPLICAS
    cpus_per_replica: float = 1.0
    gpus_per_replica: dict[str, float] = field(default_factory=dict)
    use_gpu: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int = DEFAULT_MAX_BYTES


def serve_parser(description: str) -> argparse.ArgumentParser:
    """jobs/serve.py's options; a Serve config file's `args` take the same names."""
    p = parser(description, sections=("langsam",))
    add_checkpoint_options(p)
    g = p.add_argument_group("serving (Ray Serve)")
    g.add_argument("--host", default="127.0.0.1", help="address the HTTP server listens on (0.0.0.0: every interface)")
    g.add_argument("--port", type=int, default=8000, help="HTTP port")
    g.add_argument("--rank-from", metavar="RUN_URI",
                   help="a finished run whose summary.json ranks each model's variants: a request without "
                   "?variant= gets the best one [default: --checkpoints-from's run; without a ranking: the "
                   "first variant, langsam/sam_score for LangSAM]")
    g.add_argument("--max-batch-size", action="append", metavar="[MODEL=]N",
                   help="largest batch a replica forms from waiting requests (@serve.batch), repeatable "
                   "[default: evaluation's batch sizes, unet=16 resnet34_unet=16 langsam=4]")
    g.add_argument("--batch-wait-ms", type=float, default=10.0,
                   help="how long a replica waits for more requests before it runs a batch that is not full")
    g.add_argument("--replicas", action="append", metavar="[MODEL=]MIN[-MAX]",
                   help="replicas of a model (of every model without MODEL=), repeatable: N, or autoscaling "
                   f"between MIN and MAX on the requests waiting [default: {DEFAULT_REPLICAS[0]}-{DEFAULT_REPLICAS[1]}]")
    g.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs of one model replica")
    g.add_argument("--gpus-per-replica", action="append", metavar="[MODEL=]F",
                   help="GPU share of one model replica when GPUs are used, repeatable "
                   "[default: evaluation's, unet=0.25 resnet34_unet=0.25 langsam=0.5]")
    g.add_argument("--gpu", dest="use_gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="run the replicas on GPUs [default: when the cluster has GPUs when the job starts]")
    g.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="largest image (width x height) the API takes; a larger one gets 413")
    g.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help="largest request body the API takes; a larger one gets 413")
    return p


def argv_from_config(args: dict[str, Any]) -> list[str]:
    """A Serve config file's `args` as jobs/serve.py's command line: `checkpoints_from: X`
    is `--checkpoints-from X`, a list repeats its option, `true` is a bare flag."""
    argv = []
    for key, value in args.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            for item in value:
                argv += [flag, str(item)]
        elif isinstance(value, dict):
            for model, item in value.items():
                argv += [flag, f"{model}={item}"]
        else:
            argv += [flag, str(value)]
    return argv


def serve_settings(p: argparse.ArgumentParser, args: argparse.Namespace,
                   cluster: dict[str, float] | None = None) -> ServeSettings:
    """The application the options describe. Raises RunError when no model can be served,
    or when one model would be served in several versions; CheckpointStoreError when a
    --version names no version."""
    config = config_from_args(args)
    trained = trained_models_from_args(p, args, default_selector="latest")
    specs, unavailable = models_to_evaluate(config, trained)
    names = [spec.name for spec in specs]
    several = sorted({name for name in names if names.count(name) > 1})
    if several:
        raise RunError(f"the API serves one version per model; {', '.join(several)} matched several "
                       "(--version MODEL=all?): name one with --version MODEL=VERSION")
    if not specs:
        reasons = "; ".join(f"{model}: {why}" for model, why in unavailable.items())
        raise RunError(f"no model can be served ({reasons})")
    models = [spec.name for spec in specs]
    settings = ServeSettings(
        specs=specs,
        unavailable=unavailable,
        default_variants=default_variants(specs, args.rank_from or args.checkpoints_from),
        max_batch_size={model: int(config.eval.batch_size.get(model, 8)) for model in models},
        batch_wait_ms=args.batch_wait_ms,
        cpus_per_replica=args.cpus_per_replica,
        gpus_per_replica={model: config.eval.gpus_per_actor.get(model, 1.0) for model in models},
        use_gpu=use_gpus(args.use_gpu, cluster or {}),
        max_pixels=args.max_pixels,
        max_bytes=args.max_bytes,
    )
    for item in args.max_batch_size or []:
        settings.max_batch_size.update(per_model(item, models, positive, "--max-batch-size", "[MODEL=]N"))
    for item in args.replicas or []:
        settings.replicas.update(per_model(item, models, pool_range, "--replicas", "[MODEL=]MIN[-MAX]"))
    for item in args.gpus_per_replica or []:
        settings.gpus_per_replica.update(per_model(item, models, float, "--gpus-per-replica", "[MODEL=]F"))
    return settings


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


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
    """The settings of a Serve config file's `args` (or `serve run ... key=value`)."""
    p = serve_parser("segray API")
    try:
        parsed = p.parse_args(argv_from_config(args))
    except SystemExit as exit_:
        raise ValueError(f"bad segray serve args {args}: see python jobs/serve.py --help") from exit_
    try:
        import ray

        cluster = ray.cluster_resources() if ray.is_initialized() else {}
    except Exception:
        cluster = {}
    try:
        return serve_settings(p, parsed, cluster)
    except CheckpointStoreError as error:
        raise RunError(str(error)) from error
