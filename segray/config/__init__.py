"""Every setting of every job, as one typed schema: the one home of their names, types,
allowed values, defaults and descriptions.

The jobs read their settings from a preset (`segray.presets`), settings files and the
command line (`segray.settings`); each job takes the part of `Config` it uses. The
descriptions here are the jobs' `--help` and the settings reference (docs/CONFIGURATION.md).
Defaults are the article's recipe: the `article` preset is `Config()` itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from segray.config.base import Section
from segray.config.models import MODEL_SECTIONS, TRAINABLE, LangSAMConfig, ResNet34UNetConfig, Sam3Config, UNetConfig
from segray.config.names import (
    DEFAULT_BOX_THRESHOLD,
    DEFAULT_PROMPT,
    EVERY_MODEL,
    Setting,
    model_of,
    normalize_prompt,
    of_model,
    pairing_name,
    split_pairing,
    split_training_name,
    training_name,
    variant_name,
    variant_parts,
)
from segray.config.values import Fraction, PoolRange, RunId, Share, check_fraction
from segray.presets import PRESETS
from segray.redact import redacted

__all__ = ["DEFAULT_BOX_THRESHOLD", "DEFAULT_PROMPT", "EVERY_MODEL", "MODEL_SECTIONS", "TRAINABLE", "LangSAMConfig",
           "ResNet34UNetConfig", "Sam3Config", "Section", "Setting", "UNetConfig", "model_of", "normalize_prompt",
           "of_model", "pairing_name", "split_pairing", "split_training_name",
           "training_name", "variant_name", "variant_parts"]

KAGGLE_DATASET = "kaggle:tapakah68/segmentation-full-body-mads-dataset"
DEFAULT_CACHE_DIR = "~/.cache/segray"
DEFAULT_MAX_PIXELS = 100_000_000  # one image's or mask's pixel budget (`data.max_pixels`): a 100 MP photo


def _model_name(name: str) -> str:
    """A model of the catalogue (`MODEL_SECTIONS`), or a training of a trainable one."""
    model, fraction = split_training_name(name)
    if model not in MODEL_SECTIONS:
        raise ValueError(f"{name!r} is not a model: expected one of {', '.join(MODEL_SECTIONS)}, or a training of "
                         "one, MODEL[frac=F]")
    if fraction is not None:
        if model not in TRAINABLE:
            raise ValueError(f"{model} is not trained, so it has no training on a share of a train split")
        check_fraction(fraction)
    return name


def _model_key(name: str) -> str:
    return name if name == EVERY_MODEL else _model_name(name)


ModelName = Annotated[str, AfterValidator(_model_name)]
ModelKey = Annotated[str, AfterValidator(_model_key)]  # a model, a training, or every model (`*`)


# --------------------------------------------------------------------------- sections


class DataConfig(Section):
    """data: where the images and masks come from"""

    dataset: str = Field(KAGGLE_DATASET, description="a folder in MADS layout (images/ and masks/, subfolders pair "
                         "by path; PNG, JPEG, WebP, BMP, TIFF), s3://BUCKET/PREFIX, synthetic:N[:SEED], or "
                         "kaggle:OWNER/SLUG")
    cache_dir: str = Field(DEFAULT_CACHE_DIR, description="where generated and downloaded datasets are kept")
    mask_person_values: list[Annotated[int, Field(ge=0, le=65535)]] | None = Field(
        None, description="the mask value(s) that are the person, e.g. [15] for a label map whose class 15 is the "
        "person; null: a mask of two values, the larger; else > 127")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="the pixel budget (width x height) of every image "
                            "and mask any job decodes, read from the file's header before decoding: over it, an "
                            "evaluation row is an error, training leaves the pair out, the API answers 413")


class OutputConfig(Section):
    """output: where the run is written"""

    path: str = Field("runs", description="where runs are written: a folder or s3://BUCKET/PREFIX; the run goes to "
                      "PATH/RUN_ID")
    run_id: RunId | None = Field(None, description="the run's name, one folder name of "
                               "letters, digits, '.', '_' and '-' (not . or ..); null: the UTC time and a random "
                               "suffix, YYYYmmdd-HHMMSS-xxxxxxxx")
    overwrite: bool = Field(False, description="replace an existing run of this id (else the job refuses to start)")
    resume: bool = Field(False, description="continue the interrupted run of this id: finished trainings are reused "
                         "and only the (image, model) pairs without rows are evaluated")

    @model_validator(mode="after")
    def _resume_or_overwrite(self) -> OutputConfig:
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run, or replace it")
        if self.resume and not self.run_id:
            raise ValueError("resume needs the run_id of the run to continue")
        return self


class ClusterConfig(Section):
    """cluster: where the work runs"""

    ray_address: str | None = Field(None, description="the Ray cluster to join; null: RAY_ADDRESS if set (ray job "
                                    "submit sets it), else a local Ray")
    s3_endpoint_url: str | None = Field(None, description="an S3-compatible endpoint (MinIO, Ceph, R2), e.g. "
                                        "http://host:9000, for this job and its Ray workers; null: AWS_ENDPOINT_URL "
                                        "if set, else AWS")
    gpu: bool | None = Field(None, description="train and evaluate on GPUs; null: when the cluster has GPUs when "
                             "the job starts (say true on an autoscaling cluster whose GPU nodes start at zero)")


class TrainConfig(Section):
    """training: Ray Train, for the networks we train"""

    image_size: int = Field(256, ge=16, description="square input size of training and of the trained networks")
    batch_size: int = Field(16, ge=1, description="training batch size per worker")
    lr: float = Field(1e-4, gt=0, description="Adam's learning rate")
    num_workers: int = Field(1, ge=1, description="Ray Train workers per training; DDP (NCCL on GPUs, gloo on CPUs) "
                             "when more than one")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs of one training worker, also its torch threads on a CPU")
    amp: bool = Field(True, description="mixed precision (autocast and GradScaler) when training on GPUs")
    fractions: list[Fraction] | None = Field(
        None, description="a label-efficiency sweep: each network also trains on these nested shares of the train "
        "split (0 < F <= 1), each its own model `unet[frac=F]`, going over its images round(1/F) times per epoch; "
        "null: the whole split only")


class EvalConfig(Section):
    """evaluation: Ray Data, one stream and a pool of actors per model"""

    batch_size: dict[ModelKey, Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: {"unet": 16, "resnet34_unet": 16, "langsam": 4, "sam3": 4},
        description="inference batch size per model (else 8)")
    actors: dict[ModelKey, PoolRange] = Field(
        default_factory=dict, description="a model's pool: N actors, or autoscaling between MIN and MAX (MIN-MAX); "
        "else from 1 to as many as the cluster holds: one per GPU share, or one per node without GPUs")
    cpus_per_actor: float = Field(0.5, gt=0, description="CPUs of one model actor without GPUs (fractional, so that "
                                  "model actors never starve the decode tasks)")
    gpus_per_actor: dict[ModelKey, Share] = Field(
        default_factory=lambda: {"unet": 0.25, "resnet34_unet": 0.25, "langsam": 0.5, "sam3": 0.5},
        description="the GPU share of one model actor on a cluster with GPUs (else 1)")
    cpus_per_task: float = Field(0.5, gt=0, description="CPUs of each decode and score task")
    decode_batch_size: int = Field(16, ge=1, description="images per decode and score task")
    rows_per_block: int = Field(1024, ge=1, description="manifest rows per Ray block")
    rows_per_file: int = Field(5000, ge=1, description="rows per Parquet file, at least: an interruption loses the "
                               "rows not yet in a file, which a resumed run evaluates again")


class TrackingConfig(Section):
    """tracking: MLflow"""

    uri: str | None = Field(None, description="an MLflow tracking server (http://host:5000, databricks, ...): the "
                            "finished run is logged there and each trained model registered as a version of "
                            "segray-MODEL; needs segray[mlflow]; null: MLFLOW_TRACKING_URI if set, else no tracking")
    experiment: str | None = Field(None, description="the MLflow experiment; null: MLFLOW_EXPERIMENT_NAME if set, "
                                   "else segray")
    run: str | None = Field(None, description="a finished run's folder (OUTPUT/RUN_ID, or a results table's "
                            "RESULTS/run=RUN_ID) to log afterwards, required by jobs/log_mlflow.py")


class CheckpointsConfig(Section):
    """checkpoints: where trained models are recorded and found"""

    store: str | None = Field(None, description="the checkpoint store (a folder or s3://): training records each "
                              "trained model's best checkpoint there as version RUN_ID; evaluation, re-evaluation and "
                              "serving load versions from it")
    versions: dict[ModelName, str] = Field(
        default_factory=dict, description="the version of a trained model to use: with a store, latest, best, all or a "
        "version name (RUN_ID, or the rows' MODEL@RUN_ID); with MLflow tracking, models:/NAME/N or models:/NAME@ALIAS; "
        "else the job's default (latest; all for a re-evaluation)")
    run: str | None = Field(None, description="a training run (OUTPUT/RUN_ID) whose training.json names each model's "
                            "best checkpoint")
    dirs: dict[ModelName, str] = Field(default_factory=dict, description="a checkpoint folder per model")


# --------------------------------------------------------------------------- jobs' own


class ResultsConfig(Section):
    """results: the re-evaluation's results table"""

    uri: str | None = Field(None, description="the results table (a folder or s3://), required")
    lock_stale_after: float = Field(6.0, gt=0, description="hours after which another run's lock is taken over (its "
                                    "run is presumed dead)")


class ServeConfig(Section):
    """serve: the HTTP API on Ray Serve"""

    host: str = Field("127.0.0.1", description="the address the HTTP server listens on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=1, le=65535, description="the HTTP port")
    rank_from: str | None = Field(None, description="a finished run whose summary.json ranks each model's variants: "
                                  "a request without ?variant= gets the best one; null: the checkpoints' run, else "
                                  "the first variant")
    max_batch_size: dict[ModelKey, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="the largest batch a replica forms from waiting requests; else the "
        "evaluation's batch size")
    batch_wait_ms: float = Field(10.0, ge=0, description="how long a replica waits for more requests before it runs a "
                                 "batch that is not full")
    replicas: dict[ModelKey, PoolRange] = Field(default_factory=dict, description="a model's replicas: N, or autoscaling "
                                           "between MIN and MAX on the requests waiting; else 1-4")
    cpus_per_replica: float = Field(1.0, gt=0, description="CPUs of one model replica")
    gpus_per_replica: dict[ModelKey, Share] = Field(default_factory=dict, description="the GPU share of one model replica "
                                               "on GPUs; else the evaluation's")
    max_bytes: int = Field(32 << 20, ge=1, description="the largest request body the API takes; a larger one is "
                           "answered 413")
    max_ongoing_requests: int = Field(64, ge=1, description="requests one API replica works on at once; the others "
                                      "wait in its queue")
    max_queued_requests: int = Field(128, ge=1, description="requests that may wait for a deployment (the API, each "
                                     "model); beyond that the answer is 503 with Retry-After")
    retry_after_s: int = Field(2, ge=1, description="the Retry-After of a 503 for a full queue, in seconds")
    request_timeout_s: float = Field(60.0, gt=0, description="a request not answered in this many seconds gets 408")
    api_token_file: str | None = Field(None, description="a file holding the bearer token every request but /healthz "
                                       "must carry (Authorization: Bearer TOKEN), else 401; null: SEGRAY_API_TOKEN "
                                       "if set, else none: whoever reaches the port may call the API")


class ReportConfig(Section):
    """report: the comparison report of a finished run"""

    run: str | None = Field(None, description="the run (OUTPUT/RUN_ID, a folder or s3://), required")
    split: Literal["train", "val", "all"] | None = Field(None, description="the split to compare the models on; null: "
                                                        "the one the run scored")
    gpu_hour_usd: float = Field(2.0, ge=0, description="$ per GPU-hour for the cost table")
    cpu_hour_usd: float | None = Field(None, ge=0, description="$ per hour of one CPU evaluation actor, to price "
                                       "models that ran on CPUs; null: not priced")
    worst: int = Field(6, ge=0, description="images per model in the worst-N gallery")


# --------------------------------------------------------------------------- the whole


class Config(Section):
    """Every setting. A job reads the part it uses (`segray.settings.JOBS`)."""

    preset: str = Field("article", description=f"the starting settings: {', '.join(PRESETS)} (segray.presets)")
    seed: int = Field(0, description="the run's seed: training's initial weights, data order and flips, and the "
                      "report's bootstrap; the same seed, data and settings repeat a CPU run bit for bit")
    models: list[ModelName] = Field(default_factory=lambda: ["unet", "resnet34_unet", "langsam", "sam3"],
                                    description="the models to compare, and trainings by name (unet[frac=0.25])")
    verbose: bool = Field(False, description="log at INFO on the console, Ray's own output included")
    data: DataConfig = Field(default_factory=DataConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    unet: UNetConfig = Field(default_factory=UNetConfig)
    resnet34_unet: ResNet34UNetConfig = Field(default_factory=ResNet34UNetConfig)
    langsam: LangSAMConfig = Field(default_factory=LangSAMConfig)
    sam3: Sam3Config = Field(default_factory=Sam3Config)
    evaluation: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    checkpoints: CheckpointsConfig = Field(default_factory=CheckpointsConfig)
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    def selected(self) -> set[str]:
        """The models this run compares (a training's network among them)."""
        return {model_of(name) for name in self.models}

    def params(self, name: str) -> dict[str, Any]:
        """The parameters of a model or training (`unet[frac=0.25]`) as its code takes them: a
        network's own (and its input size, the training's), LangSAM's whole section."""
        model = model_of(name)
        section = getattr(self, model)
        if model in TRAINABLE:
            return {**section.network(), "image_size": self.train.image_size}
        return section.model_dump()

    def epochs(self, model: str) -> int:
        return getattr(self, model_of(model)).epochs

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON values, every URI's password and tokens masked (`segray.redact`):
        what run.json, summary.json and MLflow keep."""
        return redacted(self.model_dump(mode="json"))


def use_gpus(choice: bool | None, cluster: dict[str, float]) -> bool:
    """Whether to ask Ray for GPUs: as `cluster.gpu` says, else when the cluster has GPUs
    now. An autoscaling cluster whose GPU nodes start at zero needs `gpu: true`: its GPUs
    come only once something asks for them."""
    return choice if choice is not None else cluster.get("GPU", 0) > 0
