"""Evaluation on Ray Data as one stream, one row per (image, model variant):

    manifest blocks -> decode (CPU tasks) -> model 1's pool -> model 2's pool -> ...
                    -> score (CPU tasks) -> Parquet

Each image and its mask are read and decoded once, whatever the number of models; each
model's actor pool is a stage of the same stream and adds its predictions to the batch
(`segray.evaluate.stages`), so the score stage writes every model's rows from one pass.
A model may join late: an `AwaitedModel` pool waits for its training to end while the
models before it in the stream already run (`segray.evaluate.awaited`).

The manifest reaches Ray as Arrow blocks of up to `rows_per_block` rows, not as a list of
Python rows built in the driver; Ray Data's backpressure bounds what is in flight.
Every stage reports to the run's timeline (`segray.timeline`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from segray.config import DataConfig, EvalConfig, of_model
from segray.evaluate.awaited import AwaitedModel
from segray.evaluate.pools import actor_resources, data_limits, pool_size
from segray.evaluate.stages import PredictStage, decode_batch, score_batch, todo_column
from segray.models.base import ModelSpec
from segray.models.catalogue import variants_of, version_of
from segray.timeline import start_timeline, stop_timeline

StreamModel = ModelSpec | AwaitedModel


def evaluate(
    manifest: pd.DataFrame,
    models: Sequence[StreamModel],
    config: EvalConfig,
    predictions_uri: str,
    run_id: str,
    manifest_per_spec: Sequence[pd.DataFrame] | None = None,
    data: DataConfig | None = None,
    reserve: dict[str, float] | None = None,
    timeline=None,
    gpu: bool | None = None,
) -> None:
    """Run every model over every manifest row and write the long-format rows as Parquet.
    `data` says how images and masks are read (`mask_person_values`, `max_pixels`; the
    defaults without it).

    `manifest_per_spec`, in the order of `models`, gives each model its own rows instead
    (the incremental re-evaluation computes only the pairs it lacks): the stream carries
    every image any model needs, decoded once, and a model predicts only its own.
    `reserve` (e.g. {"CPU": 2}) is left to work beside the stream: trainings. `timeline`:
    the run's (`segray.timeline.start_timeline`), which the caller keeps; without it,
    evaluate keeps one of its own while it runs. `gpu`: whether the actors hold GPU shares
    (`cluster.gpu`; None: when the cluster has GPUs)."""
    if not models:
        raise ValueError("no models to evaluate")
    own_timeline = timeline is None
    timeline = start_timeline(run_id) if own_timeline else timeline
    try:
        _run_stream(manifest, models, config, predictions_uri, run_id, manifest_per_spec,
                    data or DataConfig(), reserve, timeline, gpu)
    finally:
        if own_timeline:
            stop_timeline(timeline)


def _run_stream(manifest, models, config, predictions_uri, run_id, manifest_per_spec,
                data, reserve, timeline, gpu) -> None:
    import ray
    from ray.data import ActorPoolStrategy

    from segray.evaluate.write import RowsDatasink

    cluster = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    work = work_table(manifest, manifest_per_spec, len(models))
    stream = manifest_blocks(work, config.rows_per_block, cluster.get("CPU", 1.0)).map_batches(
        decode_batch, batch_size=config.decode_batch_size, num_cpus=config.cpus_per_task,
        fn_kwargs={"mask_person_values": data.mask_person_values, "max_pixels": data.max_pixels, "timeline": timeline})
    labels = stage_labels(models)
    for index, model in enumerate(models):
        low, high = pool_size(config, model.name, cluster, nodes)
        stream = stream.map_batches(
            PredictStage,
            fn_constructor_kwargs={"index": index, "spec": model, "variants": variants(model), "label": labels[index],
                                   "cpus_per_actor": config.cpus_per_actor, "models_per_node": len(models),
                                   "timeline": timeline, "drop_image": index == len(models) - 1},
            batch_size=int(of_model(config.batch_size, model.name, 8)),
            compute=ActorPoolStrategy(min_size=low, max_size=high),
            **actor_resources(config, gpu, model.name, cluster),
        )
    stream = stream.map_batches(score_batch, batch_size=config.decode_batch_size, num_cpus=config.cpus_per_task,
                                fn_kwargs={"run_id": run_id, "timeline": timeline,
                                           "models": [(i, variants(m)) for i, m in enumerate(models)]})
    stream.context.execution_options.resource_limits = data_limits(cluster, reserve)
    stream.write_datasink(RowsDatasink(predictions_uri, config.rows_per_file, timeline))


def variants(model: StreamModel) -> list[str]:
    return model.variants if isinstance(model, AwaitedModel) else variants_of(model)


def stage_labels(models: Sequence[StreamModel]) -> list[str]:
    """What the timeline and the console call each model's pool: its name (a LangSAM
    pairing's, `langsam[A+B]`), or, where one model runs in several pools, the training's
    name (before it ends) or the version."""
    names = [m.label if isinstance(m, ModelSpec) else m.name for m in models]
    return [name if names.count(name) == 1 else (version_of(m) if isinstance(m, ModelSpec) else m.training)
            or f"{name}#{i}" for i, (name, m) in enumerate(zip(names, models))]


def work_table(manifest: pd.DataFrame, manifest_per_spec: Sequence[pd.DataFrame] | None, models: int) -> pd.DataFrame:
    """The images of the stream: the manifest, or every image of the per-model tables
    with a `todo` column per model marking its own."""
    if manifest_per_spec is None:
        return manifest
    if len(manifest_per_spec) != models:
        raise ValueError(f"manifest_per_spec has {len(manifest_per_spec)} tables for {models} models")
    wanted = [set(table["image_id"]) for table in manifest_per_spec]
    work = manifest[manifest["image_id"].isin(set().union(*wanted))].copy()
    for index, ids in enumerate(wanted):
        work[todo_column(index)] = work["image_id"].isin(ids)
    return work


def manifest_blocks(table: pd.DataFrame, rows_per_block: int, cpus: float):
    """The manifest as a Ray Dataset of Arrow blocks: at most `rows_per_block` rows each,
    and at least two blocks per CPU when the manifest is small, so decoding runs in parallel."""
    import ray.data

    rows = pa.Table.from_pandas(table.reset_index(drop=True), preserve_index=False)
    size = max(1, min(rows_per_block, -(-len(rows) // max(1, int(2 * cpus)))))
    return ray.data.from_arrow([rows.slice(start, size) for start in range(0, max(len(rows), 1), size)])
