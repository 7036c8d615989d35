"""How big each model's pool may grow, what one actor holds, and what Ray Data may use.

Defaults fill the cluster: a pool autoscales from 1 actor up to one actor per GPU share
(`evaluation.gpus_per_actor`) of the cluster's GPUs, or one per node without GPUs (on a
CPU node one actor per model already gets the node's cores as torch threads). The
cluster is read when the stream starts: on an autoscaling cluster whose GPU nodes are not
up yet, `cluster.gpu: true` puts the actors on GPUs and `evaluation.actors` says how far
the pools may grow. While trainings run beside the stream, Ray Data's limits leave their
resources to them.
"""

from __future__ import annotations

from typing import Any

from segray.config import EvalConfig, of_model, use_gpus


def pool_size(config: EvalConfig, model: str, cluster: dict[str, float], nodes: int) -> tuple[int, int]:
    """(min, max) actors of `model`'s pool."""
    given = of_model(config.actors, model, None)
    if given is not None:
        return given
    gpus = cluster.get("GPU", 0)
    return 1, max(1, int(gpus // gpu_share(config, model)) if gpus else nodes)


def gpu_share(config: EvalConfig, model: str) -> float:
    return of_model(config.gpus_per_actor, model, 1.0)


def actor_resources(config: EvalConfig, gpu: bool | None, model: str, cluster: dict[str, float]) -> dict[str, float]:
    """The Ray resources of one actor: its GPU share on a GPU cluster (`gpu`: `cluster.gpu`),
    else fractional CPUs."""
    if use_gpus(gpu, cluster):
        return {"num_gpus": gpu_share(config, model)}
    return {"num_cpus": config.cpus_per_actor}


def pools_fit(config: EvalConfig, gpu: bool | None, models: list[str], cluster: dict[str, float],
              reserve: dict[str, float]) -> bool:
    """Whether every pool's minimum, one decode task and `reserve` (trainings that run
    beside the stream) fit the cluster at once. When they do not, a pool waiting for its
    training would hold what the training needs: the caller trains first instead."""
    need = {"CPU": config.cpus_per_task + reserve.get("CPU", 0.0), "GPU": reserve.get("GPU", 0.0)}
    for model in models:
        low = pool_size(config, model, cluster, 1)[0]
        for name, amount in actor_resources(config, gpu, model, cluster).items():
            need["GPU" if name == "num_gpus" else "CPU"] += low * amount
    return all(need[r] <= cluster.get(r, 0.0) + 1e-9 for r in need)


def data_limits(cluster: dict[str, float], reserve: dict[str, float] | None) -> Any:
    """Ray Data's resource limits: the cluster less what `reserve` keeps for others."""
    from ray.data import ExecutionResources

    if not reserve:
        return ExecutionResources.for_limits()
    return ExecutionResources.for_limits(cpu=max(0.0, cluster.get("CPU", 0.0) - reserve.get("CPU", 0.0)),
                                         gpu=max(0.0, cluster.get("GPU", 0.0) - reserve.get("GPU", 0.0)))
