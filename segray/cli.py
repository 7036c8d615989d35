"""Command-line options shared by the jobs, mapped onto a `BenchmarkConfig`.

Every option defaults to None ("keep the preset's value"), so `--preset` picks a
consistent starting point and flags override single values.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from segray import storage
from segray.config import PRESETS, BenchmarkConfig, preset
from segray.data.manifest import DEFAULT_CACHE_DIR
from segray.models.checkpoint import split_training_name, training_name
from segray.models.mlflow_registry import is_registered
from segray.models.selection import TrainedModels

SECTIONS = ("run", "training", "langsam", "evaluation")
EXPERIMENT = "segray"  # the MLflow experiment when neither --mlflow-experiment nor MLFLOW_EXPERIMENT_NAME names one


# Ray's workers run in the job's own environment (a local Ray) or in the one the cluster's
# nodes provide (`ray job submit`). Under `uv run`, Ray would otherwise build each worker a
# copy of the project in a new environment, whose imports compile from source: every actor
# and Ray Train worker then took twice as long to start (docs/PERFORMANCE.md). Read when
# Ray is imported.
RAY_WORKER_ENV = {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default when it has one; an option whose default is None or False
    says in its help what applies instead (`[default: ...]`)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help
        return super()._get_help_string(action)


def parser(description: str, sections: tuple[str, ...] = SECTIONS) -> argparse.ArgumentParser:
    """The jobs' options: the models, the cluster and the checkpoint store always; then the
    `sections` a job uses: run (dataset, output, preset, seed), training, langsam, evaluation."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    g = p.add_argument_group("run")
    if "run" in sections:
        add_run_options(g)
    g.add_argument("--models", help="comma-separated models: unet, resnet34_unet, langsam [default: all three]")
    g.add_argument("--s3-endpoint-url", help="S3-compatible endpoint (MinIO, Ceph, R2), e.g. http://host:9000; "
                   "sets AWS_ENDPOINT_URL for this job and its Ray workers [default: AWS_ENDPOINT_URL_S3 or "
                   "AWS_ENDPOINT_URL if set, else AWS]")
    g.add_argument("--ray-address", help="Ray cluster to join [default: RAY_ADDRESS if set (ray job submit "
                   "sets it), else a local Ray]")
    g.add_argument("--checkpoint-store", "--registry", dest="checkpoint_store", metavar="URI",
                   help="checkpoint store (local or s3://; --registry is the old spelling): train and benchmark "
                   "record each trained model's best checkpoint there as version RUN_ID; evaluate, reevaluate "
                   "and serve load versions from it")
    g.add_argument("--version", action="append", metavar="MODEL=SELECTOR",
                   help="the version of a trained model to use, repeatable: with --checkpoint-store latest, "
                   "best, all, or a version name (RUN_ID or the rows' MODEL@RUN_ID); with --mlflow-tracking-uri a "
                   "registered version, models:/segray-unet/3 or models:/segray-unet@champion [default: evaluate "
                   "and serve latest, reevaluate all]")
    add_mlflow_options(g)
    g.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    if "training" in sections:
        add_training_options(p.add_argument_group("training (Ray Train)"))
    if "langsam" in sections:
        add_langsam_options(p.add_argument_group("LangSAM (GroundingDINO + SAM2)"))
    if "evaluation" in sections:
        add_evaluation_options(p.add_argument_group("evaluation (Ray Data)"))
    return p


def add_mlflow_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--mlflow-tracking-uri", metavar="URI",
                   help="an MLflow tracking server (http://host:5000, databricks, ...): benchmark, train, evaluate and "
                   "reevaluate log their finished run there in --mlflow-experiment, and register each model they "
                   "trained as a version of segray-MODEL; --version MODEL=models:/NAME/N or models:/NAME@ALIAS picks "
                   "a registered version (serve too); needs segray[mlflow] [default: MLFLOW_TRACKING_URI if set, "
                   "else no tracking]")
    g.add_argument("--mlflow-experiment", metavar="NAME",
                   help="the MLflow experiment the run is logged in (serve logs nothing) "
                   f"[default: MLFLOW_EXPERIMENT_NAME if set, else {EXPERIMENT}]")


def add_run_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--preset", choices=sorted(PRESETS), default="seeds",
                   help="starting settings: 'seeds' is the real benchmark (Kaggle data, the seeds' recipe); "
                   "'demo' is synthetic data, narrow networks, 96px, few epochs, offline on a CPU; 'demo-sweep' is "
                   "the demo as a sweep: the UNet (12 epochs) on 10%%, 30%% and 100%% of the train split, LangSAM "
                   "over 3 prompts x 5 box thresholds")
    g.add_argument("--dataset", help="dataset source: a folder in MADS layout (images/, masks/, subfolders "
                   "pair by path; PNG, JPEG, WebP, BMP, TIFF; the Kaggle zip's doubled folder works too), "
                   "synthetic:N[:SEED], or kaggle:OWNER/SLUG [default: the preset's]")
    g.add_argument("--mask-person-values", type=person_values, metavar="V[,V...]",
                   help="the mask value(s) that are the person, e.g. 15 for a label map whose class 15 is the person "
                   "(on a colour mask: its brightest channel) [default: a mask of two values: the larger; "
                   "else > 127, and a mask that then has no person is named in summary.json]")
    g.add_argument("--output", help="where runs are written; the run goes to OUTPUT/RUN_ID [default: runs]")
    g.add_argument("--run-id", help="name of this run [default: the UTC time, YYYYmmdd-HHMMSS]")
    g.add_argument("--overwrite", action="store_true", default=None,
                   help="replace an existing run with the same id (otherwise the run refuses to start)")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue the interrupted or crashed run with this --run-id: finished trainings are "
                   "reused, one in progress resumes from its latest checkpoint, and only the (image, model) "
                   "pairs without rows are evaluated; refused if its dataset or settings changed")
    g.add_argument("--cache-dir", help="where generated and downloaded datasets are kept [default: ~/.cache/segray]")
    g.add_argument("--seed", type=int, help="the run's seed: training's initial weights, data order, shards and "
                   "flips, and the report's bootstrap; the same seed, data and settings repeat a CPU run bit for "
                   "bit [default: 0]")


def add_training_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--image-size", type=int, help="square training/inference input size [seeds: 256]")
    g.add_argument("--batch-size", type=int, help="training batch size per worker [seeds: 16]")
    g.add_argument("--lr", type=float, help="Adam learning rate [seeds: 1e-4]")
    g.add_argument("--unet-epochs", type=int, help="epochs for unet [seeds: 25]")
    g.add_argument("--resnet-epochs", type=int, help="epochs for resnet34_unet [seeds: 20]")
    g.add_argument("--num-workers", type=int, help="Ray Train workers per model; DDP (NCCL on GPU, gloo on CPU) "
                   "when > 1 [default: 1]")
    g.add_argument("--cpus-per-worker", type=float, help="CPUs per training worker, also its torch threads on CPU")
    g.add_argument("--gpu", dest="use_gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="train and evaluate on GPUs: one per training worker, a GPU share per model actor "
                   "(--gpus-per-actor) [default: when the cluster has GPUs when the job starts; pass --gpu on an "
                   "autoscaling cluster whose GPU nodes start at zero]")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (torch.autocast + GradScaler) when training on GPU [default: on]")
    g.add_argument("--train-fractions", type=comma_list(fraction), metavar="F[,F...]",
                   help="a label-efficiency sweep: each trainable model trains on each of these shares of the train "
                   "split (0 < F <= 1; 1 is the whole split, the plain model), nested subsets drawn by --seed, each "
                   "evaluated as its own model unet[frac=F]; a subset goes over its images round(1/F) times per "
                   "epoch, so each training takes about as many steps as the whole split's (0.3: 3 passes, 90%%) "
                   "[default: the whole train split only]")
    g.add_argument("--unet-base-width", type=int, help="unet's first-layer width; the seeds' is 64 (64..1024)")
    g.add_argument("--resnet-encoder-weights", help="resnet34_unet encoder init: imagenet (downloads "
                   "smp-hub/resnet34.imagenet), none, or a local .pth/.safetensors ResNet34 state dict")



def add_langsam_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--langsam-detector", help="GroundingDINO: hub id or save_pretrained folder "
                   "[default: IDEA-Research/grounding-dino-base]")
    g.add_argument("--langsam-sam", help="SAM2: hub id or save_pretrained folder [default: facebook/sam2.1-hiera-small]")
    g.add_argument("--langsam-prompt", help="text prompt [default: person.]")
    g.add_argument("--langsam-box-threshold", type=float, help="GroundingDINO box threshold [default: 0.3]")
    g.add_argument("--langsam-prompts", type=comma_list(str), metavar="P[,P...]",
                   help="a sweep: more prompts, each evaluated with --langsam-prompt from one detector forward per "
                   "prompt and batch; each (prompt, threshold, rule) is a variant langsam/RULE[PROMPT@THRESHOLD]")
    g.add_argument("--langsam-box-thresholds", type=comma_list(float), metavar="T[,T...]",
                   help="a sweep: more box thresholds, each evaluated with --langsam-box-threshold from the same "
                   "forwards (each threshold filters the lowest one's boxes)")
    g.add_argument("--langsam-text-threshold", type=float, help="GroundingDINO text threshold [default: 0.25]")
    g.add_argument("--langsam-max-boxes", type=int, help="boxes per image sent to SAM2 [default: 8]")
    g.add_argument("--langsam-bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast for LangSAM on GPU [default: off]")
    g.add_argument("--langsam-backend", choices=["transformers", "lang_sam"],
                   help="transformers (default) or the lang_sam package if installed")



def add_evaluation_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--eval-actors", action="append", metavar="[MODEL=]MIN[-MAX]",
                   help="size of a model's actor pool (of every model's without MODEL=), repeatable: N actors, or "
                   "autoscaling between MIN and MAX [default: from 1 to as many as the cluster holds: one per GPU "
                   "share (--gpus-per-actor), or one per node without GPUs]")
    g.add_argument("--eval-batch-size", action="append", metavar="MODEL=N",
                   help="inference batch size of a model, repeatable [default: unet=16 resnet34_unet=16 langsam=4]")
    g.add_argument("--cpus-per-actor", type=float, help="CPUs per model actor without GPUs [default: 0.5]")
    g.add_argument("--rows-per-file", type=int, help="rows per Parquet file, at least; an interruption loses the "
                   "rows not yet in a file, which --resume evaluates again [default: 5000]")
    g.add_argument("--gpus-per-actor", action="append", metavar="[MODEL=]F",
                   help="GPU share of one model actor when the cluster has GPUs, repeatable "
                   "[default: unet=0.25 resnet34_unet=0.25 langsam=0.5]")


def usage_error(message: str) -> NoReturn:
    """A malformed option: the message, and exit 2, as argparse does for its own."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def comma_list(parse: Callable[[str], Any]) -> Callable[[str], list]:
    """An argparse type: `A,B,C` -> [parse(A), parse(B), parse(C)]."""
    def parse_list(text: str) -> list:
        try:
            return [parse(item.strip()) for item in text.split(",") if item.strip()]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}: {error}") from error
    return parse_list


def model_and_value(item: str) -> tuple[str, str]:
    """`MODEL=VALUE` -> (MODEL, VALUE); MODEL may be a training name, whose `=` is its own
    (`unet[frac=0.25]=latest`). ("", item) when there is no MODEL."""
    match = re.fullmatch(r"([^=\[\]]+(?:\[[^\]]*\])?)=(.*)", item, re.DOTALL)
    return (match[1], match[2]) if match else ("", item)


def per_model(item: str, models: list[str], parse, flag: str, form: str) -> list[tuple[str, Any]]:
    """`MODEL=VALUE` -> [(MODEL, value)]; a bare `VALUE` applies to every model in `models`."""
    model, text = model_and_value(item)
    try:
        value = parse(text)
    except ValueError:
        usage_error(f"{flag} expects {form}, got {item!r}")
    return [(model, value)] if model else [(m, value) for m in models]


def absolute_if_here(value: str) -> str:
    """A relative path that exists here, made absolute; anything else as it is. Ray's workers
    do not run in the job's directory (`uv run` and `ray job submit --working-dir` give them a
    copy of it, without its ignored files), so a folder named relative to it is not found there."""
    path = os.path.expanduser(value)
    return os.path.abspath(path) if os.path.exists(path) else value


def fraction(text: str) -> float:
    """A share of the train split: 0 < F <= 1, as its training's name writes it (`unet[frac=F]`)."""
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(f"{text} is not in (0, 1]")
    if split_training_name(training_name("unet", value))[1] not in (None, value):
        raise ValueError(f"{text} has more digits than a training's name keeps (6 significant)")
    return value


def pool_range(text: str) -> tuple[int, int]:
    """`N` or `MIN-MAX` actors, 1 <= MIN <= MAX."""
    low, dash, high = text.partition("-")
    low = int(low)
    high = int(high) if dash else low  # "2-" is no range
    if not 1 <= low <= high:
        raise ValueError(text)
    return low, high


def person_values(text: str) -> list[int]:
    """`--mask-person-values`: comma-separated mask values, 0 to 65535 (16-bit masks)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(0 <= v <= 65535 for v in values):
        raise argparse.ArgumentTypeError(f"expected V[,V...] with integers 0..65535, got {text!r}")
    return values


LANGSAM_FLAGS = {
    "langsam_detector": "detector",
    "langsam_sam": "sam",
    "langsam_prompt": "prompt",
    "langsam_box_threshold": "box_threshold",
    "langsam_prompts": "prompts",
    "langsam_box_thresholds": "box_thresholds",
    "langsam_text_threshold": "text_threshold",
    "langsam_max_boxes": "max_boxes",
    "langsam_bf16": "bf16",
    "langsam_backend": "backend",
}


def add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    """The options that name trained checkpoints directly (evaluate), besides the store's."""
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoints-from", metavar="RUN_URI",
                   help="a training run (OUTPUT/RUN_ID) whose training.json names each model's best checkpoint")
    g.add_argument("--checkpoint", action="append", metavar="MODEL=DIR", help="a checkpoint directory, repeatable")


def trained_models_from_args(p: argparse.ArgumentParser, args: argparse.Namespace,
                             default_selector: str) -> TrainedModels:
    """Where the trained models come from (`segray.models.selection`), from the options;
    a malformed option is a usage error (exit 2)."""
    selectors = {}
    for item in args.version or []:
        model, selector = model_and_value(item)
        if not model or not selector:
            p.error(f"--version expects MODEL=SELECTOR, got {item!r}")
        selectors[model] = selector
    tracking_uri = mlflow_tracking(args)[0]
    stored = [model for model, selector in selectors.items() if not is_registered(selector)]
    if stored and not args.checkpoint_store:
        p.error(f"--version {stored[0]}={selectors[stored[0]]} needs --checkpoint-store (a registered version is "
                "models:/NAME/VERSION or models:/NAME@ALIAS)")
    if len(stored) < len(selectors) and not tracking_uri:
        p.error("--version MODEL=models:/... needs --mlflow-tracking-uri (or MLFLOW_TRACKING_URI)")
    training = {}
    if getattr(args, "checkpoints_from", None):
        training = json.loads(storage.read_bytes(storage.join(args.checkpoints_from, "training.json")))
    checkpoints = {}
    for item in getattr(args, "checkpoint", None) or []:
        model, directory = model_and_value(item)
        if not model or not directory:
            p.error(f"--checkpoint expects MODEL=DIR, got {item!r}")
        checkpoints[model] = directory
    return TrainedModels(training=training, checkpoints=checkpoints, store=args.checkpoint_store,
                         selectors=selectors, default_selector=default_selector, tracking_uri=tracking_uri,
                         cache_dir=getattr(args, "cache_dir", None) or DEFAULT_CACHE_DIR)


def mlflow_tracking(args: argparse.Namespace) -> tuple[str | None, str]:
    """(tracking URI or None: no tracking, experiment) from the options, else the environment."""
    uri = getattr(args, "mlflow_tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI") or None
    if uri and importlib.util.find_spec("mlflow") is None:
        usage_error(f"MLflow tracking ({uri}) needs MLflow's client: pip install 'segray[mlflow]'")
    return uri, getattr(args, "mlflow_experiment", None) or os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def set_up(args: argparse.Namespace) -> None:
    """What a job sets up before it imports Ray: the console's log level (`-v`: INFO), the S3
    endpoint (`--s3-endpoint-url`), which Ray's workers inherit, and Ray's workers' Python
    (`RAY_WORKER_ENV`)."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.s3_endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint_url
    set_ray_worker_env()


def set_ray_worker_env() -> None:
    """`RAY_WORKER_ENV` in this process's environment, before Ray is imported; a value the
    user set wins."""
    for name, value in RAY_WORKER_ENV.items():
        os.environ.setdefault(name, value)


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """The preset, with every flag that was given applied on top (a job without an option's
    section has none of its flags: the preset's value stays)."""
    given = vars(args).get
    config = preset(given("preset", "seeds"))
    for flag in ("dataset", "mask_person_values", "output", "run_id", "overwrite", "resume", "cache_dir"):
        if given(flag) is not None:
            setattr(config, flag, given(flag))
    config.dataset = absolute_if_here(config.dataset)
    if config.resume and config.overwrite:
        usage_error("--resume and --overwrite exclude each other: continue the run, or replace it")
    if config.resume and not given("run_id"):
        usage_error("--resume needs the --run-id of the run to continue")
    if given("models"):
        config.models = [m.strip() for m in given("models").split(",") if m.strip()]

    train = config.train
    for flag in ("image_size", "batch_size", "lr", "num_workers", "cpus_per_worker", "use_gpu", "amp", "seed"):
        if given(flag) is not None:
            setattr(train, flag, given(flag))
    if given("train_fractions") is not None:
        train.fractions = given("train_fractions")
    if given("unet_epochs") is not None:
        train.epochs["unet"] = given("unet_epochs")
    if given("resnet_epochs") is not None:
        train.epochs["resnet34_unet"] = given("resnet_epochs")

    params = config.model_params
    if given("unet_base_width") is not None:
        params.setdefault("unet", {})["base_width"] = given("unet_base_width")
    if given("resnet_encoder_weights") is not None:
        params.setdefault("resnet34_unet", {})["encoder_weights"] = given("resnet_encoder_weights")
    for flag, key in LANGSAM_FLAGS.items():
        if given(flag) is not None:
            params.setdefault("langsam", {})[key] = given(flag)
    for key in ("detector", "sam"):
        if key in params.get("langsam", {}):
            params["langsam"][key] = absolute_if_here(params["langsam"][key])

    evaluation = config.eval
    evaluation.use_gpu = train.use_gpu
    for flag in ("cpus_per_actor", "rows_per_file"):
        if given(flag) is not None:
            setattr(evaluation, flag, given(flag))
    for item in given("eval_actors") or []:
        for model, (low, high) in per_model(item, config.models, pool_range, "--eval-actors", "[MODEL=]MIN[-MAX]"):
            evaluation.min_actors[model], evaluation.max_actors[model] = low, high
    for item in given("gpus_per_actor") or []:
        for model, share in per_model(item, config.models, float, "--gpus-per-actor", "[MODEL=]F"):
            evaluation.gpus_per_actor[model] = share
    for item in given("eval_batch_size") or []:
        model, size = model_and_value(item)
        if not model or not size.isdigit():
            usage_error(f"--eval-batch-size expects MODEL=N, got {item!r}")
        evaluation.batch_size[model] = int(size)
    # The models' inference input is the training size (stored in checkpoints for trained ones).
    for model in ("unet", "resnet34_unet"):
        params.setdefault(model, {})["image_size"] = train.image_size
    return config
