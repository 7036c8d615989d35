"""The benchmark's trainings, run beside its evaluation stream.

`plan` decides from the cluster's resources how many trainings run at once and whether
the evaluation stream can run beside them: it can when every model pool's minimum, a
decode task and the trainings fit the cluster together (a pool waiting for its model
must never hold what that model's training needs). `Trainings` runs them in threads,
each a Ray Train `TorchTrainer`, and opens each trained model's gate when it ends, so
that its pool in the stream starts (`segray.evaluate.awaited`).
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from segray import storage
from segray.config import TRAINABLE, Config, split_training_name, training_name, use_gpus
from segray.data.manifest import Manifest
from segray.evaluate.pools import pools_fit
from segray.models.base import ModelSpec
from segray.models.checkpoint import version_key
from segray.models.networks import check_weights
from segray.models.selection import TrainedModels, models_to_evaluate

log = logging.getLogger(__name__)


@dataclass
class Schedule:
    at_once: int  # trainings that run at the same time
    overlap: bool  # whether evaluation runs beside them
    reserve: dict[str, float] = field(default_factory=dict)  # what the stream leaves to the trainings


def training_resources(config: Config, cluster: dict[str, float]) -> dict[str, float]:
    """What one training holds: its workers' CPUs and GPUs (`train.train_model`'s ScalingConfig)."""
    train = config.train
    use_gpu = use_gpus(config.cluster.gpu, cluster)
    return {"CPU": train.num_workers * train.cpus_per_worker, "GPU": float(train.num_workers) if use_gpu else 0.0}


def plan(config: Config, trainings: int, stream_models: list[str], cluster: dict[str, float]) -> Schedule:
    """As many trainings at once as fit beside the stream's pools; if not even one does,
    the trainings first (as many at once as fit alone) and the stream after them."""
    if not trainings:
        return Schedule(at_once=1, overlap=True)
    one = training_resources(config, cluster)
    for at_once in range(trainings, 0, -1):
        reserve = {name: amount * at_once for name, amount in one.items()}
        if pools_fit(config.evaluation, config.cluster.gpu, stream_models, cluster, reserve):
            return Schedule(at_once, overlap=True, reserve=reserve)
    fits_alone = [k for k in range(trainings, 0, -1)
                  if all(one[name] * k <= cluster.get(name, 0.0) + 1e-9 for name in one)]
    return Schedule(at_once=fits_alone[0] if fits_alone else 1, overlap=False)


def training_names(config: Config, model: str) -> list[str]:
    """The trainings of one model: on the whole train split, or, with `train.fractions`,
    on each fraction of it (`unet[frac=0.25]`; fraction 1 is `unet`), in the order given."""
    names = [training_name(model, fraction) for fraction in config.train.fractions or [None]]
    return list(dict.fromkeys(names))


def trainable_models(config: Config) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The trainings (`training_names`) of the trainable models of `config.models` that can
    train, and an error result for each that cannot (e.g. its encoder's weights are unreachable)."""
    to_train, failed = [], {}
    for model in (m for m in config.models if m in TRAINABLE):
        try:
            check_weights(model, config.params(model))
            to_train += training_names(config, model)
        except Exception as error:
            log.error("cannot train %s: %s", model, error)
            failed.update({name: {"model": model, "error": f"{type(error).__name__}: {error}"}
                           for name in training_names(config, model)})
    return to_train, failed


def finished_trainings(uri: str) -> dict[str, dict[str, Any]]:
    """The trainings an earlier attempt of the run finished (its training.json, written as
    each ended), which a resumed run reuses; a failed one is trained again."""
    path = storage.join(uri, "training.json")
    if not storage.exists(path):
        return {}
    return {name: result for name, result in json.loads(storage.read_bytes(path)).items() if "error" not in result}


def trainings_to_run(config: Config, uri: str) -> tuple[list[str], dict[str, dict], dict[str, dict]]:
    """The trainings to run, by training name; those an earlier attempt finished, which a
    resumed run (`output.resume`) reuses; and an error result for each that cannot run."""
    to_train, failed = trainable_models(config)
    reused = {n: r for n, r in finished_trainings(uri).items() if n in to_train} if config.output.resume else {}
    return [n for n in to_train if n not in reused], reused, failed


class Trainings:
    """Runs the trainings `names` (`training_names`) in threads, `at_once` at a time, into
    `<uri>/train/<name>`; a training whose folder an interrupted attempt left resumes from
    its latest checkpoint (Ray Train restores it from the storage). With a `gate`, each
    training's gate opens with its trained spec (None when it failed) as soon as it ends,
    whatever happens. training.json is rewritten as each ends. `known`: results known
    before (models that cannot train, trainings an earlier attempt finished). `join` waits
    for them and returns every result, by training name."""

    def __init__(self, config: Config, manifest: Manifest, uri: str, names: list[str], at_once: int = 1,
                 gate=None, known: dict[str, dict[str, Any]] | None = None):
        self.config, self.manifest, self.uri, self.names, self.gate = config, manifest, uri, names, gate
        self.results: dict[str, dict[str, Any]] = dict(known or {})
        self.written = threading.Lock()
        self.unavailable: dict[str, str] = {}
        self.specs: dict[str, ModelSpec] = {}
        self.executor = ThreadPoolExecutor(max_workers=max(1, at_once), thread_name_prefix="segray-train")
        self.futures: list = []

    def start(self) -> Trainings:
        # Each fraction's datasets are decoded once, before the trainings that share them.
        fractions = {name: split_training_name(name)[1] for name in self.names}
        datasets = {fraction: self.executor.submit(self._datasets, fraction) for fraction in fractions.values()}
        self.futures = [self.executor.submit(self._train, name, datasets[fractions[name]]) for name in self.names]
        return self

    def join(self) -> dict[str, dict[str, Any]]:
        """Wait for every training; their results (write them with `write_training`)."""
        for future in self.futures:
            future.result()
        self.executor.shutdown()
        return self.results

    def _datasets(self, fraction: float | None) -> dict[str, Any]:
        from segray.train import training_datasets

        config = self.config
        return training_datasets(self.manifest.table, config.train.image_size, config.train.num_workers, config.seed,
                                 config.data.mask_person_values, fraction, config.data.max_pixels)

    def _train(self, name: str, datasets) -> None:
        from segray.train import train_model

        config = self.config
        model = split_training_name(name)[0]
        try:
            log.info("training %s", name)
            result = train_model(name, config, datasets.result(), storage_path=storage.join(self.uri, "train"),
                                 run_id=config.output.run_id, dataset_fingerprint=self.manifest.fingerprint)
            outcome = {**asdict(result), "version": version_key(name, config.output.run_id),
                       "dataset_fingerprint": self.manifest.fingerprint}
        except Exception as error:
            log.exception("training %s failed", name)
            outcome = {"model": model, "error": f"{type(error).__name__}: {error}"}
        spec = None
        try:
            self._record(name, outcome)
            spec = self._spec(name)
        finally:  # whatever happened, the training's pool must not wait for ever
            if self.gate is not None:
                self.gate.open.remote(name, spec)

    def _record(self, name: str, outcome: dict[str, Any]) -> None:
        """Add a training's outcome and write training.json as it stands, so that a resumed
        run reuses the trainings that ended. Under the lock: trainings end in their own
        threads, and the JSON encoder walks the results while it writes."""
        with self.written:
            self.results[name] = outcome
            try:
                write_training(self.uri, self.results)
            except OSError as error:
                log.warning("cannot write %s/training.json: %s", self.uri, storage.describe(error))

    def _spec(self, name: str) -> ModelSpec | None:
        """The trained model as evaluation runs it (`models_to_evaluate`), or None, with the
        reason in `unavailable`."""
        try:
            specs, unavailable = models_to_evaluate(self.config.model_copy(update={"models": [name]}),
                                                    TrainedModels(training={name: self.results.get(name, {})}))
        except Exception as error:
            specs, unavailable = [], {name: f"{type(error).__name__}: {error}"}
        self.unavailable.update(unavailable)
        if specs:
            self.specs[name] = specs[0]
        return specs[0] if specs else None


def train_models(config: Config, manifest: Manifest, uri: str) -> dict[str, dict[str, Any]]:
    """Run every training of the trainable models in `config.models` (as many at once as
    the cluster holds); one that fails is recorded with its error. Each result names its
    version: `<training name>@<run id>`. Writes training.json. A resumed run (`output.resume`) reuses the
    trainings its earlier attempt finished."""
    import ray

    to_train, reused, failed = trainings_to_run(config, uri)
    at_once = plan(config, len(to_train), [], ray.cluster_resources()).at_once
    results = Trainings(config, manifest, uri, to_train, at_once, known={**failed, **reused}).start().join()
    write_training(uri, results)
    return results


def write_training(uri: str, results: dict[str, dict[str, Any]]) -> None:
    """The run's training.json: each trained model's best checkpoint, version and history."""
    storage.write_bytes(storage.join(uri, "training.json"), json.dumps(results, indent=2).encode())
