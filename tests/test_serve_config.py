"""The API's settings and deployment files, checked offline: jobs/serve_config.yaml and
k8s/rayservice.yaml, whose `args` are jobs/serve.py's settings, and which models, versions
and variants the settings serve."""

from __future__ import annotations

import importlib
import json

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from segray.errors import RunError, SettingsError
from segray.models.base import ModelSpec
from segray.serve.options import default_variants, serve_settings
from segray.settings import from_mapping, load
from tests.test_checkpoint_store import record
from tests.test_cluster_config import IMAGE, ROOT, containers, locked_ray_version
from tests.test_serve import write_checkpoints

SERVE_CONFIG = ROOT / "jobs" / "serve_config.yaml"
RAYSERVICE = ROOT / "k8s" / "rayservice.yaml"


def test_serve_config_is_a_valid_serve_deploy_config_of_the_app_builder():
    config = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    (app,) = config.applications
    module, _, name = app.import_path.partition(":")
    assert callable(getattr(importlib.import_module(module), name))
    assert app.runtime_env["working_dir"].endswith(".zip")
    assert app.runtime_env["py_executable"].startswith("uv run --locked")
    config = from_mapping("serve", app.args, "args")
    assert config.checkpoints.store.startswith("s3://") and config.cluster.gpu is True
    assert config.checkpoints.versions == {"unet": "best", "resnet34_unet": "best"}
    assert config.serve.replicas["unet"] == (1, 4)


def test_rayservice_serves_the_config_files_application_on_a_ray_260_cluster():
    manifest = yaml.safe_load(RAYSERVICE.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    spec = manifest["spec"]
    served = yaml.safe_load(spec["serveConfigV2"])
    ServeDeploySchema.model_validate(served)
    assert served["applications"] == yaml.safe_load(SERVE_CONFIG.read_text())["applications"]
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] == locked_ray_version()
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in containers(group):
            assert IMAGE.match(container["image"])["version"] == cluster["rayVersion"]
            assert 8000 in {p["containerPort"] for p in container.get("ports", [])}  # every node's proxy
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_a_request_without_variant_gets_the_variant_the_run_ranks_best(tmp_path):
    specs = [ModelSpec("langsam"), ModelSpec("unet")]
    assert default_variants(specs, None) == {"langsam": "langsam/sam_score", "unet": "unet"}
    (tmp_path / "summary.json").write_text(json.dumps({"models": {
        "langsam/sam_score": {"mean_iou": 0.80}, "langsam/union": {"mean_iou": 0.88},
        "langsam/largest_box": {"mean_iou": None}, "unet": {"mean_iou": 0.91}}}))
    assert default_variants(specs, str(tmp_path)) == {"langsam": "langsam/union", "unet": "unet"}


def settings_of(argv: list[str]):
    return serve_settings(load("serve", argv), {})


def test_settings_serve_what_can_be_served_and_say_why_not_the_rest(tmp_path):
    checkpoints = write_checkpoints(tmp_path)
    settings = settings_of(["--checkpoint", f"unet={checkpoints['unet']}", "--models", "unet,langsam",
                            "--langsam-detector", str(tmp_path / "missing"), "--langsam-sam", str(tmp_path / "missing"),
                            "--max-batch-size", "unet=3", "--replicas", "2"])
    assert [spec.name for spec in settings.specs] == ["unet"]
    assert settings.specs[0].version == "unet@served"
    assert "langsam.detector" in settings.unavailable["langsam"]
    assert settings.max_batch_size == {"unet": 3} and settings.replicas == {"unet": (2, 2)}
    assert settings.use_gpu is False  # no GPU in the cluster


def test_settings_refuse_nothing_to_serve_and_several_versions_of_one_model(tmp_path):
    with pytest.raises(RunError, match="no model can be served"):
        settings_of(["--models", "langsam", "--langsam-detector", str(tmp_path), "--langsam-sam", str(tmp_path)])
    checkpoints = write_checkpoints(tmp_path / "checkpoints")
    store = str(tmp_path / "store")
    for version in ("a", "b"):
        record(store, checkpoints["unet"], version, 0.5)
    with pytest.raises(RunError, match="one version per model; unet"):
        settings_of(["--models", "unet", "--checkpoint-store", store, "--version", "unet=all"])
    assert settings_of(["--models", "unet", "--checkpoint-store", store]).specs[0].version == "unet@b"
    with pytest.raises(SettingsError, match="serve.replicas"):
        settings_of(["--models", "unet", "--checkpoint-store", store, "--replicas", "unet=3-1"])
