"""How big each model's pool may grow, what one actor holds, and what Ray Data may use.

Defaults fill the cluster: a pool autoscales from `min_actors` (1) up to one actor per
GPU share (`gpus_per_actor`) of the cluster's GPUs, or one per node without GPUs (on a
CPU node one actor per model already gets the node's cores as torch threads). The
cluster is read when the stream starts: on an autoscaling cluster whose GPU nodes are not
up yet, `--gpu` puts the actors on GPUs and `--eval-actors MIN-MAX` says how far the
pools may grow. While trainings run beside the stream, Ray Data's limits leave their
resources to them.
"""

from __future__ import annotations

from typing import Any

from segray.config import EvalConfig, use_gpus


def pool_size(config: EvalConfig, model: str, cluster: dict[str, float], nodes: int) -> tuple[int, int]:
    """(min, max) actors of `model`'s pool."""
    low = config.min_actors.get(model, 1)
    if model in config.max_actors:
        return low, max(low, config.max_actors[model])
    gpus = cluster.get("GPU", 0)
    fill = int(gpus // gpu_share(config, model)) if gpus else nodes
    return low, max(low, fill)


def gpu_share(config: EvalConfig, model: str) -> float:
    return config.gpus_per_actor.get(model, 1.0)


def actor_resources(config: EvalConfig, model: str, cluster: dict[str, float]) -> dict[str, float]:
    """The Ray resources of one actor: its GPU share on a GPU cluster, else fractional CPUs."""
    if use_gpus(config.use_gpu, cluster):
        return {"num_gpus": gpu_share(config, model)}
    return {"num_cpus": config.cpus_per_actor}


def pools_fit(config: EvalConfig, models: list[str], cluster: dict[str, float], reserve: dict[str, float]) -> bool:
    """Whether every pool's minimum, one decode task and `reserve` (trainings that run
    beside the stream) fit the cluster at once. When they do not, a pool waiting for its
    training would hold what the training needs: the caller trains first instead."""
    need = {"CPU": config.cpus_per_task + reserve.get("CPU", 0.0), "GPU": reserve.get("GPU", 0.0)}
    for model in models:
        low = config.min_actors.get(model, 1)
        for name, amount in actor_resources(config, model, cluster).items():
            need["GPU" if name == "num_gpus" else "CPU"] += low * amount
    return all(need[r] <= cluster.get(r, 0.0) + 1e-9 for r in need)


def data_limits(cluster: dict[str, float], reserve: dict[str, float] | None) -> Any:
    """Ray Data's resource limits: the cluster less what `reserve` keeps for others."""
    from ray.data import ExecutionResources

    if not reserve:
        return ExecutionResources.for_limits()
    return ExecutionResources.for_limits(cpu=max(0.0, cluster.get("CPU", 0.0) - reserve.get("CPU", 0.0)),
                                         gpu=max(0.0, cluster.get("GPU", 0.0) - reserve.get("GPU", 0.0)))
