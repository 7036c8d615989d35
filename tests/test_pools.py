"""How big each model's pool may grow, what its actors ask Ray for, and whether the trainings
run beside the evaluation stream: pure functions of the config and the cluster's resources
(no Ray), and the options that set them."""

import pytest

from segray.config import Config, EvalConfig
from segray.errors import SettingsError
from segray.evaluate.pools import actor_resources, data_limits, pool_size
from segray.settings import load
from segray.trainings import plan

GPU_NODE = {"CPU": 16.0, "GPU": 4.0}
CPU_NODES = {"CPU": 8.0}


def parse(*argv) -> Config:
    return load("benchmark", list(argv))


def test_pools_fill_the_gpus_by_share_or_take_one_actor_per_node_without_gpus():
    config = EvalConfig()  # unet 0.25 of a GPU per actor, langsam 0.5
    assert pool_size(config, "unet", GPU_NODE, nodes=1) == (1, 16)
    assert pool_size(config, "langsam", GPU_NODE, nodes=1) == (1, 8)
    assert pool_size(config, "unet", CPU_NODES, nodes=3) == (1, 3)
    assert actor_resources(config, None, "langsam", GPU_NODE) == {"num_gpus": 0.5}
    assert actor_resources(config, None, "unet", CPU_NODES) == {"num_cpus": 0.5}


def test_a_pool_size_given_per_model_wins_and_never_goes_below_its_minimum():
    config = parse("--models", "unet,langsam", "--eval-actors", "2-6", "--eval-actors", "langsam=3").evaluation
    assert pool_size(config, "unet", GPU_NODE, nodes=1) == (2, 6)
    assert pool_size(config, "langsam", GPU_NODE, nodes=1) == (3, 3)
    assert pool_size(EvalConfig(actors={"unet": "5"}), "unet", CPU_NODES, nodes=2) == (5, 5)
    for bad in ("0", "3-2", "x", "unet=1-"):
        with pytest.raises(SettingsError, match="evaluation.actors"):
            parse("--eval-actors", bad)


def test_gpu_shares_per_model_from_the_options():
    config = parse("--models", "unet,langsam", "--gpus-per-actor", "0.5", "--gpus-per-actor", "langsam=1").evaluation
    assert actor_resources(config, None, "unet", GPU_NODE) == {"num_gpus": 0.5}
    assert actor_resources(config, None, "langsam", GPU_NODE) == {"num_gpus": 1.0}
    assert pool_size(config, "langsam", GPU_NODE, nodes=1) == (1, 4)


def test_gpu_asks_for_gpus_before_an_autoscaling_cluster_has_any():
    """A cluster whose GPU nodes start at zero shows no GPU when the job starts: --gpu puts
    the pools and the trainings on GPUs all the same, and the pools keep their minimum."""
    head_only = {"CPU": 0.0}
    assert actor_resources(parse().evaluation, None, "unet", head_only) == {"num_cpus": 0.5}
    config = parse("--gpu")
    assert config.cluster.gpu is True
    assert actor_resources(config.evaluation, config.cluster.gpu, "unet", head_only) == {"num_gpus": 0.25}
    assert pool_size(config.evaluation, "unet", head_only, nodes=1) == (1, 1)
    assert plan(config, 2, ["unet", "resnet34_unet"], head_only).overlap is False
    assert actor_resources(parse("--no-gpu").evaluation, False, "unet", GPU_NODE) == {"num_cpus": 0.5}


def test_trainings_run_beside_the_stream_as_many_at_once_as_fit():
    """Each demo training holds 2 CPUs; the stream's pools 0.5 CPU each and a decode task 0.5."""
    config = Config(train={"cpus_per_worker": 2})
    models = ["langsam", "unet", "resnet34_unet"]
    both = plan(config, 2, models, {"CPU": 6.0})
    assert (both.at_once, both.overlap, both.reserve) == (2, True, {"CPU": 4.0, "GPU": 0.0})
    assert (plan(config, 2, models, {"CPU": 4.0}).at_once, plan(config, 2, models, {"CPU": 4.0}).overlap) == (1, True)
    first = plan(config, 2, models, {"CPU": 2.0})  # a training fits alone, not beside the pools
    assert (first.at_once, first.overlap) == (1, False)
    assert plan(config, 0, models, {"CPU": 1.0}).overlap  # nothing to train: the stream alone


def test_ray_data_leaves_the_trainings_their_resources():
    limits = data_limits({"CPU": 16.0, "GPU": 4.0}, {"CPU": 4.0, "GPU": 2.0})
    assert (limits.cpu, limits.gpu) == (12.0, 2.0)
